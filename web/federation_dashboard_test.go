package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"hearth/server/secret"
	"hearth/server/servertest"
	"hearth/server/storage"
	"hearth/server/storage/storagetest"
	"hearth/web"
)

// The federation pages on real destinations: two Hearths on loopback share
// a room, so the first (whose dashboard is tested) sends to the second;
// then the second stops answering.

// fedDash is a federating Hearth with its dashboard, and a second Hearth
// that shares a room with it.
type fedDash struct {
	a, b     *servertest.Bundle
	url      string // a's dashboard root
	dest     string // b's server name: a's destination
	roomID   string
	aliceTok string
}

// seedOn creates an account on bundle b with a logged-in device and returns
// its access token.
func seedOn(t *testing.T, b *servertest.Bundle, localpart, password string, admin bool) string {
	t.Helper()
	hash, err := secret.HashPassword(password, 4)
	if err != nil {
		t.Fatal(err)
	}
	userID := "@" + localpart + ":" + b.Cfg.ServerName
	if err := b.Store.CreateUser(context.Background(), &storage.User{UserID: userID, Localpart: localpart, PasswordHash: hash, IsAdmin: admin}); err != nil {
		t.Fatal(err)
	}
	tok := secret.Token("syt_")
	if err := b.Store.CreateLogin(context.Background(), storage.NewLogin{UserID: userID, DeviceID: secret.DeviceID(), AccessToken: tok}); err != nil {
		t.Fatal(err)
	}
	return tok
}

// clientCall calls the client API of b and decodes the answer.
func clientCall(t *testing.T, b *servertest.Bundle, tok, method, path string, body any) map[string]any {
	t.Helper()
	raw, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, b.URL+path, bytes.NewReader(raw))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %d %v", method, path, resp.StatusCode, out)
	}
	return out
}

// waitDest polls a's record of its destination until ok accepts it.
func (f *fedDash) waitDest(t *testing.T, what string, ok func(*storage.DestinationStatus) bool) *storage.DestinationStatus {
	t.Helper()
	var d *storage.DestinationStatus
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if d, err = f.a.Store.DestinationStatusByName(context.Background(), f.dest); err == nil && ok(d) {
			return d
		}
	}
	t.Fatalf("destination never %s: %+v %v", what, d, err)
	return nil
}

// startFedDash: alice on a makes a room, bob on b joins it, alice says
// something, and a delivers it to b.
func startFedDash(t *testing.T, e storagetest.Engine) *fedDash {
	t.Helper()
	fed := servertest.NewFederation(t)
	f := &fedDash{a: fed.Start(t, e), b: fed.Start(t, e)}
	f.dest = f.b.Cfg.ServerName
	hs := httptest.NewServer(web.New(web.Deps{Server: f.a.Server}).Standalone())
	t.Cleanup(hs.Close)
	f.url = hs.URL + web.Path
	seedOn(t, f.a, "root", "rootpassword", true)
	f.aliceTok = seedOn(t, f.a, "alice", "alicepassword", false)
	bobTok := seedOn(t, f.b, "bob", "bobpassword", false)
	created := clientCall(t, f.a, f.aliceTok, "POST", "/_matrix/client/v3/createRoom",
		map[string]any{"name": "Porch", "preset": "public_chat", "room_alias_name": "porch"})
	f.roomID = created["room_id"].(string)
	clientCall(t, f.b, bobTok, "POST", "/_matrix/client/v3/join/"+url.PathEscape("#porch:"+f.a.Cfg.ServerName), map[string]any{})
	f.say(t, "before")
	f.waitDest(t, "delivered to", func(d *storage.DestinationStatus) bool { return d.LastSuccessTS > 0 && !d.Behind() })
	return f
}

func (f *fedDash) say(t *testing.T, body string) {
	t.Helper()
	clientCall(t, f.a, f.aliceTok, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(f.roomID)+"/send/m.room.message/"+secret.Token("t"),
		map[string]any{"msgtype": "m.text", "body": body})
}

// TestFederationPages walks the federation pages over HTTP: a healthy
// server, then the same server failing and behind; "retry now" needs the
// form token, retries at once and is audited.
func TestFederationPages(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		f := startFedDash(t, e)
		b := newBrowser(t, f.url)
		if status, _ := b.signIn("root", "rootpassword"); status != http.StatusSeeOther {
			t.Fatalf("sign in: %d", status)
		}
		path := "/federation/" + url.PathEscape(f.dest)

		status, page, _ := b.do("GET", "/federation", nil)
		if status != 200 || !strings.Contains(page, "<code>"+f.dest+"</code>") || !strings.Contains(page, ">healthy<") ||
			!strings.Contains(page, "1–1 of 1 servers") || strings.Contains(page, "/retry") || !strings.Contains(page, `href="/_hearth/admin/federation" class="active"`) {
			t.Fatalf("federation page, healthy:\n%s", page)
		}
		status, page, _ = b.do("GET", path, nil)
		if status != 200 || !strings.Contains(page, "Porch") || !strings.Contains(page, "1 joined") || !strings.Contains(page, ">delivered<") ||
			!strings.Contains(page, "up to date") || strings.Contains(page, `id="retry"`) {
			t.Fatalf("destination page, healthy:\n%s", page)
		}
		if status, _, _ = b.do("GET", "/federation/nowhere.test", nil); status != http.StatusNotFound {
			t.Errorf("unknown destination: %d", status)
		}
		// Nothing to retry on a healthy server: said, not done.
		tok := b.csrfOf(path)
		status, _, resp := b.do("POST", path+"/retry", url.Values{"csrf": {tok}, "back": {path}})
		if status != http.StatusSeeOther || resp.Header.Get("Location") != web.Path+path {
			t.Fatalf("retry of a healthy server: %d %q", status, resp.Header.Get("Location"))
		}
		if _, page, _ = b.do("GET", path, nil); !strings.Contains(page, "is not backing off") {
			t.Errorf("no explanation after retrying a healthy server:\n%s", page)
		}

		// b stops answering; a's next delivery fails and backs off.
		f.b.FedHTTP.Close()
		f.say(t, "during the outage")
		failed := f.waitDest(t, "failing", func(d *storage.DestinationStatus) bool { return d.FailureTS != 0 && d.RetryIntervalMS > 0 })
		_, page, _ = b.do("GET", "/federation", nil)
		for _, want := range []string{`class="badge bad">failing<`, "next retry in", "1 event in 1 room", `action="/_hearth/admin` + path + `/retry"`} {
			if !strings.Contains(page, want) {
				t.Errorf("federation page, failing, lacks %s:\n%s", want, page)
			}
		}
		_, page, _ = b.do("GET", path, nil)
		for _, want := range []string{`id="retry"`, ">waiting<", `id="last-error"`, "Failing since"} {
			if !strings.Contains(page, want) {
				t.Errorf("destination page, failing, lacks %s:\n%s", want, page)
			}
		}

		// Retry now: refused without the form token, then done at once.
		if status, _, _ = b.do("POST", path+"/retry", url.Values{"back": {path}}); status != http.StatusForbidden {
			t.Fatalf("retry without token: %d", status)
		}
		if d, _ := f.a.Store.DestinationStatusByName(context.Background(), f.dest); d.RetryLastTS != failed.RetryLastTS {
			t.Fatal("a retry without the form token reset the back-off")
		}
		tok = b.csrfOf("/federation")
		if status, _, _ = b.do("POST", path+"/retry", url.Values{"csrf": {tok}, "back": {"/federation"}}); status != http.StatusSeeOther {
			t.Fatalf("retry: %d", status)
		}
		retried := f.waitDest(t, "retried", func(d *storage.DestinationStatus) bool { return d.RetryLastTS > failed.RetryLastTS })
		if retried.RetryLastTS >= failed.RetryLastTS+failed.RetryIntervalMS || retried.FailureTS != failed.FailureTS {
			t.Errorf("retry waited for the back-off: %+v, before %+v", retried, failed)
		}
		if _, page, _ = b.do("GET", "/federation", nil); !strings.Contains(page, "Retrying "+f.dest+" now.") {
			t.Errorf("no flash after the retry:\n%s", page)
		}
		if _, page, _ = b.do("GET", "/audit", nil); !strings.Contains(page, "federation.reset_connection") || !strings.Contains(page, f.dest) {
			t.Errorf("retry not audited:\n%s", page)
		}
	})
}

// TestFederationBrowser follows a failing server in Chromium, from the
// navigation to its page and "retry now", and on a phone-sized screen.
// With HEARTH_SCREENSHOTS set it writes federation.png and
// destination-phone.png there.
func TestFederationBrowser(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		f := startFedDash(t, e)
		f.b.FedHTTP.Close()
		f.say(t, "during the outage")
		f.waitDest(t, "failing", func(d *storage.DestinationStatus) bool { return d.FailureTS != 0 && d.RetryIntervalMS > 0 })
		browserMu.Lock()
		defer browserMu.Unlock()
		ctx := newChromium(t)
		signInAs(t, ctx, f.url, "root", "rootpassword")
		waitText(t, ctx, "main h1", "Overview")
		run(t, ctx, "federation page",
			chromedp.Click(chromedp.CSS(`nav.nav a[href$="/federation"]`)),
			chromedp.WaitVisible(chromedp.CSS(`#destinations`)),
		)
		waitText(t, ctx, "#destinations tbody", "failing")
		waitText(t, ctx, "#destinations tbody", "1 event in 1 room")
		shots := os.Getenv("HEARTH_SCREENSHOTS")
		if shots != "" && e.Name == "sqlite" {
			run(t, ctx, "desktop size", chromedp.EmulateViewport(1200, 900))
			if err := os.WriteFile(filepath.Join(shots, "federation.png"), screenshot(t, ctx, f.url+"/federation"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		run(t, ctx, "phone size", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)))
		run(t, ctx, "open destination",
			chromedp.Click(chromedp.CSS(`#destinations tbody a`)),
			chromedp.WaitVisible(chromedp.CSS(`#retry`)),
		)
		waitText(t, ctx, "#destination-rooms", "Porch")
		waitText(t, ctx, "#destination-health", "next retry in")
		// On a phone the table stacks: each cell carries its label.
		if w, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`document.documentElement.scrollWidth`)); err != nil || w > 390 {
			t.Errorf("destination page is %v px wide on a 390 px phone (%v)", w, err)
		}
		if shots != "" && e.Name == "sqlite" {
			if err := os.WriteFile(filepath.Join(shots, "destination-phone.png"), screenshot(t, ctx, f.url+"/federation/"+url.PathEscape(f.dest)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		run(t, ctx, "retry now", chromedp.Click(chromedp.CSS(`#retry`)))
		waitText(t, ctx, "p.flash", "Retrying "+f.dest+" now.")
	})
}
