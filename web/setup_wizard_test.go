package web_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"hearth/appliance/certs"
	"hearth/config"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
	"hearth/web"
)

// setupFed is a federating Hearth with no admin yet, its setup token,
// and a dashboard whose certificate manager serves files from the test CA.
type setupFed struct {
	hs          *httptest.Server
	token, name string
	certFile    string
}

func startSetupFed(t *testing.T, e storagetest.Engine) *setupFed {
	t.Helper()
	fed := servertest.NewFederation(t)
	a := fed.Start(t, e)
	certFile, keyFile := fed.WriteCertificate(t, t.TempDir())
	tlsCfg := *a.Cfg
	tlsCfg.Listeners = []config.Listener{{Port: 8448, Type: "http", TLS: true}}
	tlsCfg.TLSCertificatePath, tlsCfg.TLSPrivateKeyPath = certFile, keyFile
	m, err := certs.New(&tlsCfg, a.Store.CertCache(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(web.New(web.Deps{Server: a.Server, Certs: m}).Standalone())
	t.Cleanup(hs.Close)
	tok, err := web.PrepareSetup(context.Background(), a.Cfg, a.Store)
	if err != nil {
		t.Fatal(err)
	}
	return &setupFed{hs: hs, token: tok, name: a.Cfg.ServerName, certFile: certFile}
}

// TestSetupWalkThrough: once the setup link has made the first admin, the
// setup goes on as dashboard pages: the server name, the certificates as
// the certificate manager sees them (here from files) with the config
// keys, then the doctor and the federation tester on this server's own
// name. Every step needs the admin's session, and running the checks the
// form token. The server federates on loopback with the test CA, so every
// check passes.
func TestSetupWalkThrough(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		sf := startSetupFed(t, e)
		hs, tok, name, certFile := sf.hs, sf.token, sf.name, sf.certFile

		// A stranger gets no step: the sign-in form, or 403 for the checks.
		stranger := newBrowser(t, hs.URL)
		for _, p := range []string{"/setup/name", "/setup/certificates", "/setup/checks"} {
			if status, _, resp := stranger.do("GET", web.Path+p, nil); status != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), web.Path+"/login") {
				t.Errorf("%s without a session: %d %s", p, status, resp.Header.Get("Location"))
			}
		}
		if status, _, _ := stranger.do("POST", web.Path+"/setup/checks", url.Values{}); status != http.StatusForbidden {
			t.Errorf("checks without a session: %d", status)
		}

		br := newBrowser(t, hs.URL)
		status, _, resp := br.do("POST", web.SetupPath, url.Values{"token": {tok}, "username": {"root"}, "password": {"rootpassword"}, "password2": {"rootpassword"}})
		if status != http.StatusSeeOther || resp.Header.Get("Location") != web.Path+"/setup/name" {
			t.Fatalf("setup: %d %s", status, resp.Header.Get("Location"))
		}

		status, page, _ := br.do("GET", web.Path+"/setup/name", nil)
		for _, want := range []string{`id="server-name">` + name + `<`, "first server admin", "1 account", "server_name", `href="/_hearth/admin/setup/certificates"`} {
			if status != http.StatusOK || !strings.Contains(page, want) {
				t.Fatalf("name step lacks %q: %d\n%s", want, status, page)
			}
		}

		status, page, _ = br.do("GET", web.Path+"/setup/certificates", nil)
		for _, want := range []string{"Certificate files: <code class=\"break\">" + certFile, "Hearth test federation CA",
			"acme:\n  enabled: true", "tls_certificate_path:", `href="/_hearth/admin/setup/checks"`} {
			if status != http.StatusOK || !strings.Contains(page, want) {
				t.Fatalf("certificates step lacks %q: %d\n%s", want, status, page)
			}
		}

		status, page, _ = br.do("GET", web.Path+"/setup/checks", nil)
		if status != http.StatusOK || !strings.Contains(page, `id="run-checks"`) || strings.Contains(page, `id="doctor-verdict"`) ||
			!strings.Contains(page, `id="setup-finish" href="/_hearth/admin/"`) {
			t.Fatalf("checks step: %d\n%s", status, page)
		}
		if status, _, _ := br.do("POST", web.Path+"/setup/checks", url.Values{"csrf": {"forged"}}); status != http.StatusForbidden {
			t.Fatalf("checks with a wrong form token: %d", status)
		}
		status, page, _ = br.do("POST", web.Path+"/setup/checks", url.Values{"csrf": {br.csrfOf(web.Path + "/setup/checks")}})
		if status != http.StatusOK || !strings.Contains(page, `id="doctor-verdict"`) || strings.Contains(page, `class="finding fail"`) ||
			!strings.Contains(page, "keys.own") || !strings.Contains(page, "proxy.uri") {
			t.Fatalf("doctor: %d\n%s", status, page)
		}
		if !strings.Contains(page, `id="fedtest-verdict" class="flash">Federation with `+name+` works.`) || !strings.Contains(page, `id="connections"`) {
			t.Fatalf("federation tester on %s:\n%s", name, page)
		}
		// The run is in the audit log, as the Diagnostics page's runs are.
		if status, page, _ := br.do("GET", web.Path+"/audit", nil); status != http.StatusOK || !strings.Contains(page, "diagnostics.run") {
			t.Errorf("audit: %d", status)
		}
	})
}

// TestSetupBrowser walks the whole setup in headless Chromium on a
// federating server: every check passes, and Finish opens the overview.
// With HEARTH_SCREENSHOTS set it writes the steps' screenshots.
func TestSetupBrowser(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		sf := startSetupFed(t, e)
		browserMu.Lock()
		defer browserMu.Unlock()
		ctx := newChromium(t)
		run(t, ctx, "setup form",
			chromedp.Navigate(sf.hs.URL+web.SetupPath+"?token="+sf.token),
			chromedp.WaitVisible(chromedp.CSS(`input[name=username]`)),
			chromedp.SendKeys(chromedp.CSS(`input[name=username]`), "root"),
			chromedp.SendKeys(chromedp.CSS(`input[name=password]`), "rootpassword"),
			chromedp.SendKeys(chromedp.CSS(`input[name=password2]`), "rootpassword"),
			chromedp.Click(chromedp.CSS(`form button[type=submit]`)),
			chromedp.WaitVisible(chromedp.CSS(`#server-name`)),
		)
		waitText(t, ctx, "#server-name", sf.name)
		namePNG := shot(t, ctx)
		run(t, ctx, "certificates", chromedp.Click(chromedp.CSS(`#setup-next`)), chromedp.WaitVisible(chromedp.CSS(`#cert-mode`)))
		waitText(t, ctx, "#cert-mode", "Certificate files")
		certsPNG := shot(t, ctx)
		run(t, ctx, "checks", chromedp.Click(chromedp.CSS(`#setup-next`)), chromedp.WaitVisible(chromedp.CSS(`#run-checks`)))
		run(t, ctx, "run the checks", chromedp.Click(chromedp.CSS(`#run-checks`)), chromedp.WaitVisible(chromedp.CSS(`#fedtest-verdict`)))
		waitText(t, ctx, "#fedtest-verdict", "Federation with "+sf.name+" works.")
		if v := text(t, ctx, "#doctor-verdict"); strings.Contains(v, "found") {
			t.Errorf("doctor: %s", v)
		}
		checksPNG := shot(t, ctx)
		run(t, ctx, "finish", chromedp.Click(chromedp.CSS(`#setup-finish`)), chromedp.WaitVisible(chromedp.CSS(`.who`)))
		waitText(t, ctx, "main h1", "Overview")

		if out := os.Getenv("HEARTH_SCREENSHOTS"); out != "" && e.Name == "sqlite" {
			for name, png := range map[string][]byte{"setup-name.png": namePNG, "setup-certificates.png": certsPNG, "setup-checks.png": checksPNG} {
				if err := os.WriteFile(filepath.Join(out, name), png, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}
