package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"maunium.net/go/mautrix"

	"hearth/web/browsertest"
)

// newChromium starts the headless Chromium of the real-browser tests
// (web/browsertest), or skips when it is not installed.
func newChromium(t *testing.T) context.Context { return browsertest.Start(t, 0, 0) }

func browse(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func evalString(t *testing.T, ctx context.Context, expr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return s
}

var setupLinkRe = regexp.MustCompile(`no admin yet.* url="?([^"\s]+)`)

// TestFirstRunSetup starts a fresh server with `hearth serve`, takes the
// setup link it prints, and walks it in Chromium: the form creates the
// first admin and signs it in, then the server name, certificates and
// checks steps (the doctor and the federation tester, run from the page)
// end at the dashboard. Then the link is dead,
// its token file is gone, and the admin signs in to Matrix too. A wrong
// token never shows the form.
func TestFirstRunSetup(t *testing.T) {
	ctx := newChromium(t)
	path := generated(t)
	s := serve(t, path)
	link := s.waitLog(t, setupLinkRe)
	if !strings.Contains(link, "/_hearth/setup?token=") {
		t.Fatalf("setup link %q", link)
	}
	tokenFile := filepath.Join(filepath.Dir(path), "setup-token")
	if raw, err := os.ReadFile(tokenFile); err != nil || !strings.Contains(link, strings.TrimSpace(string(raw))) {
		t.Fatalf("token file %q (%v) does not hold the link's token", raw, err)
	}
	// A restart before setup prints the same link: it is valid until used.
	s.stop(t)
	s = serve(t, path)
	again := s.waitLog(t, setupLinkRe)
	token := func(l string) string { return l[strings.Index(l, "token="):] }
	if token(again) != token(link) {
		t.Errorf("after a restart the link changed: %s, was %s", again, link)
	}
	link = again
	base := link[:strings.Index(link, "/_hearth/")]
	if resp, err := http.Get(base + "/_hearth/setup?token=wrong"); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("wrong token: %v %v", resp, err)
	}

	browse(t, ctx, "open the setup link",
		chromedp.Navigate(link),
		chromedp.WaitVisible(chromedp.CSS(`input[name=username]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=username]`), "root"),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), "root has a long password"),
		chromedp.SendKeys(chromedp.CSS(`input[name=password2]`), "root has a long password"),
		chromedp.Click(chromedp.CSS(`form button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`#server-name`)),
	)
	// Step 1: the server name, signed in already.
	if who := evalString(t, ctx, `document.querySelector(".who").textContent`); who != "@root:example.org" {
		t.Errorf("signed in as %q", who)
	}
	if flash := evalString(t, ctx, `(document.querySelector(".flash")||{}).textContent||""`); !strings.Contains(flash, "first server admin") {
		t.Errorf("flash %q", flash)
	}
	if name := evalString(t, ctx, `document.querySelector("#server-name").textContent`); name != "example.org" {
		t.Errorf("server name step shows %q", name)
	}
	if text := evalString(t, ctx, `document.querySelector("#setup-name").textContent`); !strings.Contains(text, "cannot change once users exist") || !strings.Contains(text, path) {
		t.Errorf("server name step: %q", text)
	}
	// Step 2: certificates. This server has no TLS listener.
	browse(t, ctx, "certificates step",
		chromedp.Click(chromedp.CSS(`#setup-next`)),
		chromedp.WaitVisible(chromedp.CSS(`#cert-mode`)),
	)
	if text := evalString(t, ctx, `document.querySelector("main").textContent`); !strings.Contains(text, "No listener serves TLS") ||
		!strings.Contains(text, "acme:") || !strings.Contains(text, "tls_certificate_path:") {
		t.Errorf("certificates step: %q", text)
	}
	// Step 3: the doctor and the federation tester. Nothing can reach
	// example.org from here, so they report failures, and say so.
	browse(t, ctx, "checks step",
		chromedp.Click(chromedp.CSS(`#setup-next`)),
		chromedp.WaitVisible(chromedp.CSS(`#run-checks`)),
	)
	ctxChecks, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := chromedp.Do(ctxChecks, chromedp.Click(chromedp.CSS(`#run-checks`)), chromedp.WaitVisible(chromedp.CSS(`#fedtest-verdict`))); err != nil {
		t.Fatalf("run the checks: %v", err)
	}
	if v := evalString(t, ctx, `document.querySelector("#doctor-verdict").textContent`); !strings.Contains(v, "found") {
		t.Errorf("doctor verdict %q, want the problems it found", v)
	}
	if v := evalString(t, ctx, `document.querySelector("#fedtest-verdict").textContent`); !strings.Contains(v, "example.org") {
		t.Errorf("federation tester verdict %q", v)
	}
	if n := evalString(t, ctx, `String(document.querySelectorAll(".finding.fail").length)`); n == "0" {
		t.Error("no failed finding shown for an unreachable server name")
	}
	// Finish: the dashboard's overview.
	browse(t, ctx, "finish",
		chromedp.Click(chromedp.CSS(`#setup-finish`)),
		chromedp.WaitVisible(chromedp.CSS(`.stats, main h1`)),
	)
	if h1 := evalString(t, ctx, `document.querySelector("main h1").textContent`); !strings.Contains(h1, "Overview") {
		t.Errorf("finished on %q, want the dashboard's overview", h1)
	}
	if loc := evalString(t, ctx, `location.pathname`); loc != "/_hearth/admin/" {
		t.Errorf("location %s", loc)
	}
	// Signed in: another dashboard page opens without the sign-in form.
	browse(t, ctx, "open users", chromedp.Navigate(base+"/_hearth/admin/users"), chromedp.WaitVisible(chromedp.CSS(`.who`)))

	// The link is spent.
	if resp, err := http.Get(link); err != nil || resp.StatusCode != http.StatusGone {
		t.Errorf("used link: %v %v", resp, err)
	}
	if _, err := os.Stat(tokenFile); !os.IsNotExist(err) {
		t.Errorf("token file still there: %v", err)
	}
	cli, _ := mautrix.NewClient(s.url, "", "")
	if _, err := cli.Login(t.Context(), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, StoreCredentials: true,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "root"}, Password: "root has a long password"}); err != nil {
		t.Errorf("the new admin cannot sign in to Matrix: %v", err)
	}
	// A restart with an admin prints no link.
	s.stop(t)
	s = serve(t, path)
	time.Sleep(200 * time.Millisecond)
	if setupLinkRe.MatchString(s.logged()) {
		t.Error("a server with an admin printed a setup link")
	}
}
