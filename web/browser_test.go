package web_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"hearth/server/secret"
	"hearth/server/storage"
	"hearth/server/storage/storagetest"
	"hearth/web/browsertest"
)

// browserMu runs one Chromium at a time: the engines' subtests run in
// parallel, and two browsers on a small shared machine only slow both.
var browserMu sync.Mutex

// newChromium starts the headless Chromium of the real-browser tests
// (web/browsertest), or skips when it is not installed.
func newChromium(t *testing.T) context.Context { return browsertest.Start(t, 1280, 900) }

// step bounds one browser interaction.
const step = 30 * time.Second

func text(t *testing.T, ctx context.Context, sel string) string {
	return browsertest.Text(t, ctx, sel)
}

func run(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, step)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// script runs JavaScript in the page for its effect.
func script(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Evaluate[any](expr)(ctx, tg)
		return err
	})
}

// screenshot navigates and captures the full page as PNG.
func screenshot(t *testing.T, ctx context.Context, url string) []byte {
	t.Helper()
	run(t, ctx, "open "+url, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(`main h1`)))
	ctx, cancel := context.WithTimeout(ctx, step)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", url, err)
	}
	return png
}

// waitText polls until the element's text contains want: after a click the
// old page may still be showing, and the search form submits itself as you
// type.
func waitText(t *testing.T, ctx context.Context, sel, want string) {
	t.Helper()
	var got string
	for deadline := time.Now().Add(step); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		got, _ = chromedp.Run(ctx, chromedp.Evaluate[string](`(document.querySelector(`+strconvQuote(sel)+`)||{}).textContent||""`))
		if strings.Contains(got, want) {
			return
		}
	}
	t.Fatalf("%s: text %q, want %q", sel, got, want)
}

func strconvQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `\'`) + "'" }

// signInAs fills and submits the sign-in form the way a person would.
func signInAs(t *testing.T, ctx context.Context, dashURL, user, password string) {
	t.Helper()
	run(t, ctx, "sign in as "+user,
		chromedp.Navigate(dashURL+"/login"),
		chromedp.WaitVisible(chromedp.CSS(`input[name=username]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=username]`), user),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), password),
		chromedp.Click(chromedp.CSS(`form button[type=submit].primary`)),
	)
}

// TestBrowser drives the dashboard in headless Chromium: sign in, create a
// user, find it, deactivate it through the confirmation page, change the
// cache factor; a form without its CSRF token is refused; a non-admin
// cannot sign in.
func TestBrowser(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		d := start(t, e)
		seed(t, d.Store, "root", "rootpassword", true)
		seed(t, d.Store, "mallory", "mallorypassword", false)
		browserMu.Lock()
		defer browserMu.Unlock()
		ctx := newChromium(t)

		signInAs(t, ctx, d.URL, "root", "rootpassword")
		waitText(t, ctx, "main h1", "Overview")

		// Create a user.
		run(t, ctx, "create user",
			chromedp.Navigate(d.URL+"/users"),
			chromedp.WaitVisible(chromedp.CSS(`#create input[name=username]`)),
			chromedp.SendKeys(chromedp.CSS(`#create input[name=username]`), "carol"),
			chromedp.SendKeys(chromedp.CSS(`#create input[name=displayname]`), "Carol Danvers"),
			chromedp.SendKeys(chromedp.CSS(`#create input[name=password]`), "carolpassword"),
			chromedp.Click(chromedp.CSS(`#create button[type=submit]`)),
		)
		waitText(t, ctx, "p.flash", "Created @carol:hearth.test")

		// Find it with the search box. Seed more users so the search has
		// something to leave out; typing submits the form by itself (the
		// progressive enhancement), the button does without JavaScript.
		seed(t, d.Store, "dave", "davepassword", false)
		run(t, ctx, "search",
			chromedp.Navigate(d.URL+"/users"),
			chromedp.WaitVisible(chromedp.CSS(`input[name=q]`)),
			chromedp.SendKeys(chromedp.CSS(`input[name=q]`), "danvers"),
		)
		waitText(t, ctx, "main p.muted", "1–1 of 1 users")
		run(t, ctx, "search result", chromedp.WaitVisible(chromedp.CSS(`table.list tbody a[href$="@carol:hearth.test"]`)))

		// Deactivate it, through the confirmation page.
		run(t, ctx, "open user",
			chromedp.Click(chromedp.CSS(`table.list tbody a[href$="@carol:hearth.test"]`)),
			chromedp.WaitVisible(chromedp.CSS(`.danger-zone button.danger`)),
			chromedp.Click(chromedp.CSS(`.danger-zone button.danger`)),
			chromedp.WaitVisible(chromedp.CSS(`#confirm`)),
		)
		waitText(t, ctx, "main h1", "Deactivate @carol:hearth.test?")
		if u, _ := d.Store.UserByID(context.Background(), "@carol:hearth.test"); u.Deactivated {
			t.Fatal("deactivated before the confirmation was accepted")
		}
		run(t, ctx, "confirm", chromedp.Click(chromedp.CSS(`#confirm`)))
		waitText(t, ctx, "p.flash", "Deactivated @carol:hearth.test")
		if u, _ := d.Store.UserByID(context.Background(), "@carol:hearth.test"); !u.Deactivated {
			t.Fatal("carol is not deactivated")
		}

		// Change the global cache factor and see the capacities follow.
		run(t, ctx, "caches page", chromedp.Navigate(d.URL+"/caches"), chromedp.WaitVisible(chromedp.CSS(`#global-factor`)))
		if c := text(t, ctx, "#cache-users .capacity"); c != "20,000" {
			t.Fatalf("users cache capacity at factor 1: %q", c)
		}
		run(t, ctx, "set factor",
			chromedp.SetValue(chromedp.CSS(`#global-factor`), "0.25"),
			chromedp.Submit(chromedp.CSS(`#global-factor`)),
		)
		waitText(t, ctx, "p.flash", "Global cache factor set to 0.25")
		if c := text(t, ctx, "#cache-users .capacity"); c != "5,000" {
			t.Fatalf("users cache capacity at factor 0.25: %q", c)
		}
		if v, err := chromedp.Run(ctx, chromedp.Value(chromedp.CSS(`#global-factor`))); err != nil || v != "0.25" {
			t.Fatalf("factor field shows %q", v)
		}

		// Find a room on the rooms page and delete it through the
		// confirmation; the progress page follows the deletion to the end.
		roomID := createRoomAs(t, d, "@dave:hearth.test", `{"name": "Basement band", "room_alias_name": "band", "preset": "public_chat"}`)
		createRoomAs(t, d, "@dave:hearth.test", `{"name": "Attic choir"}`)
		run(t, ctx, "rooms page",
			chromedp.Navigate(d.URL+"/"),
			chromedp.WaitVisible(chromedp.CSS(`nav.nav a[href$="/rooms"]`)),
			chromedp.Click(chromedp.CSS(`nav.nav a[href$="/rooms"]`)),
			chromedp.WaitVisible(chromedp.CSS(`input[name=q]`)),
		)
		waitText(t, ctx, "#rooms-showing", "1–2 of 2 rooms")
		run(t, ctx, "search rooms", chromedp.SendKeys(chromedp.CSS(`input[name=q]`), "basement"))
		waitText(t, ctx, "#rooms-showing", "1–1 of 1 rooms")
		waitText(t, ctx, "#rooms tbody", "#band:hearth.test")
		run(t, ctx, "open room",
			chromedp.Click(chromedp.CSS(`#rooms tbody a`)),
			chromedp.WaitVisible(chromedp.CSS(`#delete`)),
		)
		waitText(t, ctx, "main h1", "Basement band")
		waitText(t, ctx, "#members", "@dave:hearth.test")
		waitText(t, ctx, "#servers", "hearth.test")
		run(t, ctx, "delete room", chromedp.Click(chromedp.CSS(`#delete`)), chromedp.WaitVisible(chromedp.CSS(`#confirm`)))
		waitText(t, ctx, "main h1", "Delete "+roomID+"?")
		if _, err := d.Store.RoomByID(context.Background(), roomID); err != nil {
			t.Fatalf("room gone before the confirmation was accepted: %v", err)
		}
		run(t, ctx, "confirm delete", chromedp.Click(chromedp.CSS(`#confirm`)))
		waitText(t, ctx, "#delete-status", "complete")
		waitText(t, ctx, "main", "@dave:hearth.test")
		if _, err := d.Store.RoomByID(context.Background(), roomID); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("room still stored after the deletion: %v", err)
		}
		run(t, ctx, "rooms after delete", chromedp.Navigate(d.URL+"/rooms"), chromedp.WaitVisible(chromedp.CSS(`#rooms`)))
		waitText(t, ctx, "#rooms-showing", "1–1 of 1 rooms")
		waitText(t, ctx, "#rooms tbody", "Attic choir")

		// A form posted without its CSRF token is refused.
		run(t, ctx, "post without token",
			chromedp.Navigate(d.URL+"/users"),
			chromedp.WaitVisible(chromedp.CSS(`#create input[name=username]`)),
			script(`document.querySelector('#create input[name=csrf]').remove()`),
			chromedp.SendKeys(chromedp.CSS(`#create input[name=username]`), "eve"),
			chromedp.SendKeys(chromedp.CSS(`#create input[name=password]`), "evepassword"),
			chromedp.Click(chromedp.CSS(`#create button[type=submit]`)),
		)
		waitText(t, ctx, "main h1", "Forbidden")
		waitText(t, ctx, "main p", "not accepted")
		if _, err := d.Store.UserByID(context.Background(), "@eve:hearth.test"); err == nil {
			t.Fatal("a form without its token created a user")
		}

		// Sign out; a non-admin cannot sign in.
		run(t, ctx, "sign out", chromedp.Navigate(d.URL+"/"), chromedp.WaitVisible(chromedp.CSS(`form.signout button`)),
			chromedp.Click(chromedp.CSS(`form.signout button`)), chromedp.WaitVisible(chromedp.CSS(`input[name=username]`)))
		signInAs(t, ctx, d.URL, "mallory", "mallorypassword")
		waitText(t, ctx, "p.flash.error", "Only server admins")
		run(t, ctx, "overview after refusal", chromedp.Navigate(d.URL+"/"), chromedp.WaitVisible(chromedp.CSS(`input[name=username]`)))
		waitText(t, ctx, "main h1", "Sign in")
	})
}

// createRoomAs creates a room through the client API as a seeded user.
func createRoomAs(t *testing.T, d *dash, userID, body string) string {
	t.Helper()
	tok := secret.Token("syt_")
	if err := d.Store.CreateLogin(context.Background(), storage.NewLogin{UserID: userID, DeviceID: secret.DeviceID(), AccessToken: tok}); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", d.Bundle.URL+"/_matrix/client/v3/createRoom", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		RoomID string `json:"room_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.RoomID == "" {
		t.Fatalf("createRoom: %d %v", resp.StatusCode, err)
	}
	return out.RoomID
}

// TestScreenshots writes docs/screenshots/*.png from a real run when
// HEARTH_SCREENSHOTS names the output directory; it lets the memory
// sampler run for a minute first so the chart has real data.
func TestScreenshots(t *testing.T) {
	out := os.Getenv("HEARTH_SCREENSHOTS")
	if out == "" {
		t.Skip("set HEARTH_SCREENSHOTS=<dir> to write dashboard screenshots")
	}
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		if e.Name != "sqlite" {
			t.Skip("screenshots are taken once, on SQLite")
		}
		d, dash := startWithSampler(t, e, 2*time.Second)
		seed(t, d.Store, "root", "rootpassword", true)
		for _, u := range []string{"alice", "bob", "carol", "dave", "erin"} {
			seed(t, d.Store, u, u+"password", false)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go dash.Run(ctx)
		// Real traffic so the caches have real hit rates: signed-in
		// clients call whoami, which looks up the token and the user.
		var tokens []string
		for _, u := range []string{"alice", "bob", "carol"} {
			tok := secret.Token("syt_")
			if err := d.Store.CreateLogin(ctx, storage.NewLogin{UserID: "@" + u + ":hearth.test", DeviceID: "PHONE", AccessToken: tok,
				DeviceDisplayName: "Element on " + u + "'s phone", IP: "192.0.2.7", UserAgent: "Element/1.11"}); err != nil {
				t.Fatal(err)
			}
			tokens = append(tokens, tok)
		}
		call := func(method, path, tok, body string) string {
			req, _ := http.NewRequest(method, d.Bundle.URL+path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return ""
			}
			defer resp.Body.Close()
			var out struct {
				RoomID string `json:"room_id"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&out)
			return out.RoomID
		}
		// alice's room gets a message every half second, so events per
		// second and the event count are real too.
		room := call("POST", "/_matrix/client/v3/createRoom", tokens[0], `{"name": "Book club"}`)
		deadline := time.Now().Add(70 * time.Second)
		for i := 0; time.Now().Before(deadline); i++ {
			call("GET", "/_matrix/client/v3/account/whoami", tokens[i%len(tokens)], "")
			if room != "" && i%12 == 0 {
				call("PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/t"+strconv.Itoa(i), tokens[0], `{"msgtype": "m.text", "body": "hello"}`)
			}
			time.Sleep(40 * time.Millisecond)
		}
		browserMu.Lock()
		defer browserMu.Unlock()
		bctx := newChromium(t)
		signInAs(t, bctx, d.URL, "root", "rootpassword")
		waitText(t, bctx, "main h1", "Overview")
		run(t, bctx, "desktop size", chromedp.EmulateViewport(1200, 900))
		shots := []struct{ name, path string }{{"overview", "/"}, {"caches", "/caches"}, {"users", "/users"}, {"user", "/users/@alice:hearth.test"},
			{"rooms", "/rooms"}, {"room", "/rooms/" + url.PathEscape(room)}}
		for _, s := range shots {
			png := screenshot(t, bctx, d.URL+s.path)
			if err := os.WriteFile(filepath.Join(out, s.name+".png"), png, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		// A phone-sized view of the user list.
		run(t, bctx, "phone size", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)))
		png := screenshot(t, bctx, d.URL+"/users")
		if err := os.WriteFile(filepath.Join(out, "users-phone.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	})
}
