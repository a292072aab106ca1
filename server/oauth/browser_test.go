package oauth_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/oauth2"

	"hearth/server/secret"
	"hearth/server/storage/storagetest"
	"hearth/web/browsertest"
)

// browserMu runs one Chromium at a time (the engines' subtests run in
// parallel on a small machine).
var browserMu sync.Mutex

// newChromium starts the headless Chromium of the real-browser tests
// (web/browsertest), or skips when it is not installed.
func newChromium(t *testing.T) context.Context { return browsertest.Start(t, 412, 915) }

func run(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func textOf(t *testing.T, ctx context.Context, sel string) string {
	return browsertest.Text(t, ctx, sel)
}

// saveScreenshot writes the page to $HEARTH_SCREENSHOTS/name when set.
func saveScreenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("HEARTH_SCREENSHOTS")
	if dir == "" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestOAuthBrowser signs in through the pages in headless Chromium, the
// way Element X's system browser does: the authorisation URL, the sign-in
// form, the consent page, and the redirect to a native app's loopback
// listener (any port), whose code the app exchanges for a working token.
func TestOAuthBrowser(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := start(t, e)
		alice := seedUser(t, b.Store, "alice")
		a := newApp(t, b, "")

		// The app's loopback listener, as a native app opens one.
		codes := make(chan string, 1)
		appSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/callback" {
				select {
				case codes <- r.URL.Query().Get("code") + " " + r.URL.Query().Get("state"):
				default:
				}
			}
			_, _ = w.Write([]byte("<html><body><p id=done>Signed in; you can close this window.</p></body></html>"))
		}))
		t.Cleanup(appSrv.Close)
		a.conf.RedirectURL = appSrv.URL + "/callback"

		browserMu.Lock()
		defer browserMu.Unlock()
		ctx := newChromium(t)
		verifier := oauth2.GenerateVerifier()
		state := secret.Token("")
		run(t, ctx, "open the authorisation URL",
			chromedp.Navigate(a.conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier))),
			chromedp.WaitVisible(chromedp.CSS(`input[name=username]`)))
		if got := textOf(t, ctx, "main h1"); got != "Sign in" {
			t.Fatalf("first page %q, want the sign-in page", got)
		}
		if got := textOf(t, ctx, "main section p"); !strings.Contains(got, "Test App") {
			t.Errorf("sign-in page says %q, want it to name the app", got)
		}
		saveScreenshot(t, ctx, "oauth-login.png")
		run(t, ctx, "sign in",
			chromedp.SendKeys(chromedp.CSS(`input[name=username]`), "alice"),
			chromedp.SendKeys(chromedp.CSS(`input[name=password]`), password),
			chromedp.Click(chromedp.CSS(`form button[type=submit].primary`)),
			chromedp.WaitVisible(chromedp.CSS(`#allow`)))
		if got := textOf(t, ctx, "#client-name"); got != "Test App" {
			t.Errorf("consent names %q, want Test App", got)
		}
		if got := textOf(t, ctx, "main"); !strings.Contains(got, a.deviceID) || !strings.Contains(got, alice) {
			t.Errorf("consent page does not show the session %s and the account %s:\n%s", a.deviceID, alice, got)
		}
		saveScreenshot(t, ctx, "oauth-consent.png")
		run(t, ctx, "allow", chromedp.Click(chromedp.CSS(`#allow`)), chromedp.WaitVisible(chromedp.CSS(`#done`)))

		var got string
		select {
		case got = <-codes:
		case <-time.After(10 * time.Second):
			t.Fatal("the app's loopback listener got no code")
		}
		code, gotState, _ := strings.Cut(got, " ")
		if gotState != state {
			t.Fatalf("state %q, want %q", gotState, state)
		}
		tok, err := a.conf.Exchange(context.Background(), code, oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatalf("exchange: %v", err)
		}
		if who, c := whoami(t, b, tok.AccessToken); c != "" || who.UserID.String() != alice || who.DeviceID.String() != a.deviceID {
			t.Fatalf("whoami %+v %q", who, c)
		}

		// The account page lists the session under the app's name, and
		// ending it there signs the app out.
		run(t, ctx, "open the account page",
			chromedp.Navigate(a.md["account_management_uri"].(string)+"?action=org.matrix.device_delete&device_id="+a.deviceID),
			chromedp.WaitVisible(chromedp.CSS(`#session-`+a.deviceID)))
		if row := textOf(t, ctx, `#session-`+a.deviceID); !strings.Contains(row, "Test App") {
			t.Errorf("session row %q, want the app's name", row)
		}
		saveScreenshot(t, ctx, "oauth-account.png")
		run(t, ctx, "end the session",
			chromedp.Click(chromedp.CSS(`#session-`+a.deviceID+` button`)),
			chromedp.WaitVisible(chromedp.CSS(`p.flash`)))
		if _, c := whoami(t, b, tok.AccessToken); c != "M_UNKNOWN_TOKEN" {
			t.Fatalf("token after ending the session on the account page: %q, want M_UNKNOWN_TOKEN", c)
		}
	})
}
