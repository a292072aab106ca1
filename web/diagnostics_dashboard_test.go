package web_test

import (
	"context"
	"encoding/json"
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

// diagDash is a federating Hearth (a) whose dashboard is tested, its TLS
// certificate served from files, and a second Hearth (b) to test
// federation with. Both are named by loopback address and port, so every
// check runs on the test's CA and loopback, no DNS involved.
type diagDash struct {
	a, b     *servertest.Bundle
	url      string
	rootTok  string
	aliceTok string
}

func startDiagDash(t *testing.T, e storagetest.Engine) *diagDash {
	t.Helper()
	fed := servertest.NewFederation(t)
	d := &diagDash{a: fed.Start(t, e), b: fed.Start(t, e)}
	// The certificate files a TLS listener of a would serve.
	certFile, keyFile := fed.WriteCertificate(t, t.TempDir())
	tlsCfg := *d.a.Cfg
	tlsCfg.Listeners = []config.Listener{{Port: 8448, Type: "http", TLS: true}}
	tlsCfg.TLSCertificatePath, tlsCfg.TLSPrivateKeyPath = certFile, keyFile
	m, err := certs.New(&tlsCfg, d.a.Store.CertCache(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(web.New(web.Deps{Server: d.a.Server, Certs: m}).Standalone())
	t.Cleanup(hs.Close)
	d.url = hs.URL + web.Path
	d.rootTok = seedOn(t, d.a, "root", "rootpassword", true)
	d.aliceTok = seedOn(t, d.a, "alice", "alicepassword", false)
	return d
}

// TestDiagnosticsPages walks the Diagnostics and Federation tester pages
// over HTTP: the certificate table, the doctor (form token required), a
// federation test of the other server, and the tester's JSON for admins.
func TestDiagnosticsPages(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		d := startDiagDash(t, e)
		br := newBrowser(t, d.url)
		if status, _ := br.signIn("@root:"+d.a.Cfg.ServerName, "rootpassword"); status != http.StatusSeeOther {
			t.Fatalf("sign in: %d", status)
		}
		_, page, _ := br.do("GET", "/diagnostics", nil)
		if !strings.Contains(page, "Hearth test federation CA") || !strings.Contains(page, "127.0.0.1") || !strings.Contains(page, `id="run-doctor"`) {
			t.Fatalf("certificates on the diagnostics page:\n%s", page)
		}
		if status, _, _ := br.do("POST", "/diagnostics", url.Values{}); status != http.StatusForbidden {
			t.Fatalf("doctor without the form token: %d", status)
		}
		status, page, _ := br.do("POST", "/diagnostics", url.Values{"csrf": {br.csrfOf("/diagnostics")}})
		if status != http.StatusOK || !strings.Contains(page, `id="doctor-verdict"`) || strings.Contains(page, `class="finding fail"`) ||
			!strings.Contains(page, "proxy.uri") || !strings.Contains(page, "keys.own") {
			t.Fatalf("doctor: %d\n%s", status, page)
		}

		status, page, _ = br.do("POST", "/federation-test", url.Values{"csrf": {br.csrfOf("/federation-test")}, "server_name": {d.b.Cfg.ServerName}})
		if status != http.StatusOK || !strings.Contains(page, "Federation with "+d.b.Cfg.ServerName+" works.") || !strings.Contains(page, `id="connections"`) ||
			!strings.Contains(page, "accepted a request signed by") {
			t.Fatalf("federation tester: %d\n%s", status, page)
		}

		api := func(tok, query string) (int, map[string]any) {
			req, _ := http.NewRequest("GET", d.url+"/api/federation-test"+query, nil)
			if tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			out := map[string]any{}
			json.NewDecoder(resp.Body).Decode(&out)
			return resp.StatusCode, out
		}
		q := "?server_name=" + url.QueryEscape(d.b.Cfg.ServerName)
		if status, out := api(d.rootTok, q); status != 200 || out["FederationOK"] != true || out["ConnectionReports"] == nil || out["WellKnownResult"] == nil {
			t.Fatalf("API: %d %v", status, out)
		}
		if status, out := api("", q); status != 401 || out["errcode"] != "M_MISSING_TOKEN" {
			t.Fatalf("API without a token: %d %v", status, out)
		}
		if status, out := api(d.aliceTok, q); status != 403 || out["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("API as a non-admin: %d %v", status, out)
		}
		if status, out := api(d.rootTok, ""); status != 400 || out["errcode"] != "M_MISSING_PARAM" {
			t.Fatalf("API without server_name: %d %v", status, out)
		}
	})
}

// TestDiagnosticsBrowser drives both pages in headless Chromium: test
// federation with the other server, run the doctor; with
// HEARTH_SCREENSHOTS set, it writes the pages' screenshots.
func TestDiagnosticsBrowser(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		d := startDiagDash(t, e)
		browserMu.Lock()
		defer browserMu.Unlock()
		ctx := newChromium(t)
		signInAs(t, ctx, d.url, "@root:"+d.a.Cfg.ServerName, "rootpassword")
		waitText(t, ctx, "main h1", "Overview")

		run(t, ctx, "federation tester",
			chromedp.Navigate(d.url+"/federation-test"),
			chromedp.WaitVisible(chromedp.CSS(`input[name=server_name]`)),
			chromedp.SendKeys(chromedp.CSS(`input[name=server_name]`), d.b.Cfg.ServerName),
			chromedp.Click(chromedp.CSS(`#run-fedtest`)),
		)
		waitText(t, ctx, "#fedtest-verdict", "Federation with "+d.b.Cfg.ServerName+" works.")
		fedPNG := shot(t, ctx)

		run(t, ctx, "diagnostics",
			chromedp.Navigate(d.url+"/diagnostics"),
			chromedp.WaitVisible(chromedp.CSS(`#run-doctor`)),
			chromedp.Click(chromedp.CSS(`#run-doctor`)),
		)
		waitText(t, ctx, "#doctor-verdict", "Federation works")
		diagPNG := shot(t, ctx)

		if out := os.Getenv("HEARTH_SCREENSHOTS"); out != "" && e.Name == "sqlite" {
			for name, png := range map[string][]byte{"diagnostics.png": diagPNG, "federation-tester.png": fedPNG} {
				if err := os.WriteFile(filepath.Join(out, name), png, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}

// shot captures the current page.
func shot(t *testing.T, ctx context.Context) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, step)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	return png
}
