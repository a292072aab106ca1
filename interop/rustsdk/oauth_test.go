package rustsdk_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/server"
	"hearth/server/oauth"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
	"hearth/web/browsertest"
)

// startOAuth runs Hearth with the OAuth 2.0 API on, as new configs have
// it.
func startOAuth(t *testing.T, e storagetest.Engine) *servertest.Bundle {
	return servertest.StartWith(t, e, func(d *server.Deps) { d.OAuth = oauth.Hook(nil) },
		func(c *config.Config) { c.OAuth.Enabled = true })
}

// browserMu runs one Chromium at a time (the engines' subtests run in
// parallel on a small machine).
var browserMu sync.Mutex

// newChromium starts the headless Chromium of the real-browser tests
// (web/browsertest), or skips when it is not installed.
func newChromium(t *testing.T) context.Context { return browsertest.Start(t, 412, 915) }

func browse(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
}

func textOf(t *testing.T, ctx context.Context, sel string) string {
	return browsertest.Text(t, ctx, sel)
}

// signIn fills Hearth's sign-in page as alice and waits for the consent
// page.
func signIn(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	browse(t, ctx, "open "+url, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(`input[name=username]`)))
	browse(t, ctx, "sign in",
		chromedp.SendKeys(chromedp.CSS(`input[name=username]`), "alice"),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), password),
		chromedp.Click(chromedp.CSS(`form button[type=submit].primary`)),
		chromedp.WaitVisible(chromedp.CSS(`#allow`)))
}

// TestRustSDKOAuthLogin: the SDK signs in through the OAuth 2.0 API
// (client.oauth()): it registers itself, builds the authorisation URL
// with PKCE and a loopback redirect on a port of the moment, and waits on
// that port; headless Chromium signs in on Hearth's page and allows; the
// SDK finishes the login, syncs, refreshes its token and sends a message.
func TestRustSDKOAuthLogin(t *testing.T) {
	bin := binary(t)
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := startOAuth(t, e)
		alice := register(t, b, "alice")
		ctx := t.Context()
		r, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Notes"})
		if err != nil {
			t.Fatal(err)
		}
		browserMu.Lock()
		defer browserMu.Unlock()
		bctx := newChromium(t)
		var out struct {
			UserID    id.UserID   `json:"user_id"`
			DeviceID  id.DeviceID `json:"device_id"`
			ClientID  string      `json:"client_id"`
			Refreshed bool        `json:"refreshed"`
			EventID   id.EventID  `json:"event_id"`
		}
		const body = "signed in through the browser"
		runInteractive(t, bin, &out, func(line map[string]string) {
			signIn(t, bctx, line["authorize"])
			if got := textOf(t, bctx, "#client-name"); got != "Hearth rust-sdk interop" {
				t.Errorf("consent page names %q, want the SDK's client_name", got)
			}
			browse(t, bctx, "allow", chromedp.Click(chromedp.CSS(`#allow`)), chromedp.WaitVisible(chromedp.CSS(`#done`)))
		}, "oauth", b.URL, string(r.RoomID), body)

		if out.UserID != alice.UserID || out.DeviceID == "" || out.DeviceID == alice.DeviceID || out.ClientID == "" {
			t.Fatalf("OAuth session %+v, want a new device of %s", out, alice.UserID)
		}
		if !out.Refreshed {
			t.Fatal("the access token did not change on refresh")
		}
		// An ordinary session: Alice's device list has it under the app's name.
		devs, err := alice.GetDevicesInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, d := range devs.Devices {
			if d.DeviceID == out.DeviceID {
				found = d.DisplayName == "Hearth rust-sdk interop"
				if !found {
					t.Fatalf("device %s is named %q", d.DeviceID, d.DisplayName)
				}
			}
		}
		if !found {
			t.Fatalf("device %s is not in Alice's devices %+v", out.DeviceID, devs.Devices)
		}
		evt, err := alice.GetEvent(ctx, r.RoomID, out.EventID)
		if err != nil {
			t.Fatal(err)
		}
		if evt.Sender != alice.UserID || evt.Content.Raw["body"] != body {
			t.Fatalf("sent event %s %v", evt.Sender, evt.Content.Raw)
		}
	})
}

// TestRustSDKQRLogin: Element X's "Sign in with QR code" (MSC4108)
// between two SDK clients. The signed-in device (password, cross-signing
// bootstrapped) makes a rendezvous session on Hearth and shows the QR
// code; the new device scans it, both set up the secure channel through
// the session, the check code goes across, and the new device asks for
// the device authorisation grant. The signed-in device opens the
// verification URI, where headless Chromium signs in and allows; the new
// device gets its tokens, then the private cross-signing keys over the
// channel, and signs its own device.
func TestRustSDKQRLogin(t *testing.T) {
	bin := binary(t)
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := startOAuth(t, e)
		alice := register(t, b, "alice")
		ctx := t.Context()
		browserMu.Lock()
		defer browserMu.Unlock()
		bctx := newChromium(t)
		var out struct {
			UserID           id.UserID   `json:"user_id"`
			DeviceID         id.DeviceID `json:"device_id"`
			ExistingDeviceID id.DeviceID `json:"existing_device_id"`
			UserCode         string      `json:"user_code"`
			CrossSigned      bool        `json:"cross_signed"`
		}
		var consentText string
		runInteractive(t, bin, &out, func(line map[string]string) {
			signIn(t, bctx, line["verification_uri"])
			consentText = textOf(t, bctx, "main")
			browse(t, bctx, "allow", chromedp.Click(chromedp.CSS(`#allow`)), chromedp.WaitVisible(chromedp.CSS(`#message`)))
		}, "qr", b.URL, "alice", password)

		if out.UserID != alice.UserID || out.DeviceID == "" || out.DeviceID == out.ExistingDeviceID {
			t.Fatalf("QR login result %+v", out)
		}
		if out.UserCode == "" || !strings.Contains(consentText, string(out.DeviceID)) {
			t.Fatalf("the consent page did not show the new device %s (user code %q):\n%s", out.DeviceID, out.UserCode, consentText)
		}
		if !out.CrossSigned {
			t.Fatal("the existing device does not see the new one cross-signed")
		}
		// On the server: the device exists, and its keys carry a signature
		// by Alice's self-signing key besides its own.
		devs, err := alice.GetDevicesInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, d := range devs.Devices {
			found = found || d.DeviceID == out.DeviceID
		}
		if !found {
			t.Fatalf("device %s is not in Alice's devices", out.DeviceID)
		}
		keys, err := alice.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.UserID: nil}})
		if err != nil {
			t.Fatal(err)
		}
		dk, ok := keys.DeviceKeys[alice.UserID][out.DeviceID]
		if !ok {
			t.Fatalf("no keys for %s", out.DeviceID)
		}
		ssk := keys.SelfSigningKeys[alice.UserID]
		if len(ssk.Keys) == 0 {
			t.Fatal("Alice has no self-signing key")
		}
		var sskID id.KeyID
		for k := range ssk.Keys {
			sskID = k
		}
		if _, ok := dk.Signatures[alice.UserID][sskID]; !ok {
			t.Fatalf("device %s keys signed by %v, want %s", out.DeviceID, dk.Signatures[alice.UserID], sskID)
		}
	})
}
