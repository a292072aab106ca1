package oauth_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"hearth/server/secret"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// TestOAuthClientRegistration: the spec's client metadata rules, each
// broken once, and the registrations that must pass.
func TestOAuthClientRegistration(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := start(t, e)
		endpoint := metadata(t, b.URL)["registration_endpoint"].(string)
		edit := func(base map[string]any, k string, v any) map[string]any {
			out := map[string]any{}
			for key, val := range base {
				out[key] = val
			}
			if v == nil {
				delete(out, k)
			} else {
				out[k] = v
			}
			return out
		}
		web := map[string]any{"client_name": "Web", "client_uri": "https://example.com/", "application_type": "web",
			"redirect_uris": []string{"https://app.example.com/callback"}, "token_endpoint_auth_method": "none",
			"response_types": []string{"code"}, "grant_types": []string{"authorization_code", "refresh_token"}}
		native := nativeApp()
		bad := []struct {
			name string
			md   map[string]any
			want string
		}{
			{"no client_uri", edit(web, "client_uri", nil), "invalid_client_metadata"},
			{"http client_uri", edit(web, "client_uri", "http://example.com/"), "invalid_client_metadata"},
			{"client_uri with credentials", edit(web, "client_uri", "https://user:pw@example.com/"), "invalid_client_metadata"},
			{"logo on another host", edit(web, "logo_uri", "https://cdn.other.com/logo.png"), "invalid_client_metadata"},
			{"http tos_uri", edit(web, "tos_uri", "http://example.com/tos"), "invalid_client_metadata"},
			{"unknown application_type", edit(web, "application_type", "desktop"), "invalid_client_metadata"},
			{"client secret auth", edit(web, "token_endpoint_auth_method", "client_secret_basic"), "invalid_client_metadata"},
			{"no redirect_uris", edit(web, "redirect_uris", nil), "invalid_redirect_uri"},
			{"web: http redirect", edit(web, "redirect_uris", []string{"http://example.com/callback"}), "invalid_redirect_uri"},
			{"web: localhost", edit(web, "redirect_uris", []string{"http://localhost/"}), "invalid_redirect_uri"},
			{"web: fragment", edit(web, "redirect_uris", []string{"https://example.com/callback#frag"}), "invalid_redirect_uri"},
			{"web: another host", edit(web, "redirect_uris", []string{"https://app.com/callback"}), "invalid_redirect_uri"},
			{"web: lookalike host", edit(web, "redirect_uris", []string{"https://evilexample.com/callback"}), "invalid_redirect_uri"},
			{"web: custom scheme", edit(web, "redirect_uris", []string{"com.example.app:/callback"}), "invalid_redirect_uri"},
			{"native: scheme not reversed host", edit(native, "redirect_uris", []string{"example:/callback"}), "invalid_redirect_uri"},
			{"native: scheme with authority", edit(native, "redirect_uris", []string{"org.example.app://callback"}), "invalid_redirect_uri"},
			{"native: https localhost", edit(native, "redirect_uris", []string{"https://localhost/callback"}), "invalid_redirect_uri"},
			{"native: loopback with port", edit(native, "redirect_uris", []string{"http://localhost:1234/callback"}), "invalid_redirect_uri"},
			{"native: http on a real host", edit(native, "redirect_uris", []string{"http://app.example.org/callback"}), "invalid_redirect_uri"},
		}
		for _, tc := range bad {
			status, body := registerClient(t, endpoint, tc.md)
			if status != http.StatusBadRequest || body["error"] != tc.want {
				t.Errorf("%s: %d %v, want 400 %s", tc.name, status, body, tc.want)
			}
		}

		// The spec's valid examples pass; unknown grant types are dropped
		// from the answer; the answer carries the client ID.
		good := []map[string]any{
			web,
			edit(web, "redirect_uris", []string{"https://example.com/callback", "https://example.com:5173/?query=value"}),
			edit(edit(native, "client_uri", "https://example.org/"), "redirect_uris", []string{"org.example.app:/callback", "org.example:/", "org.example:callback",
				"http://localhost/callback", "http://127.0.0.1/callback", "http://[::1]/callback"}),
			edit(native, "redirect_uris", []string{"https://app.example.org/claimed"}),
			edit(web, "application_type", nil),
		}
		for i, md := range good {
			status, body := registerClient(t, endpoint, md)
			if status != http.StatusCreated || body["client_id"] == "" || body["client_uri"] != md["client_uri"] {
				t.Errorf("good #%d: %d %v, want 201 with a client_id", i, status, body)
			}
			if g, _ := json.Marshal(body["grant_types"]); strings.Contains(string(g), "token-exchange") {
				t.Errorf("good #%d: grant types %s keep one the server does not support", i, g)
			}
		}
		// Identical metadata shares a client; different metadata does not.
		_, one := registerClient(t, endpoint, web)
		_, two := registerClient(t, endpoint, web)
		_, three := registerClient(t, endpoint, edit(web, "client_name", "Web 2"))
		if one["client_id"] != two["client_id"] || one["client_id"] == three["client_id"] {
			t.Errorf("client IDs %v %v %v: identical metadata should share one, different metadata not", one["client_id"], two["client_id"], three["client_id"])
		}
		// Not JSON.
		resp, err := http.Post(endpoint, "application/json", strings.NewReader("{nope"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("malformed body: %d, want 400", resp.StatusCode)
		}
	})
}

// login runs the whole flow for username and returns the app and token.
func login(t *testing.T, b *servertest.Bundle, br *browser, username string) (*app, *oauth2.Token) {
	t.Helper()
	a := newApp(t, b, "http://127.0.0.1:5000/callback")
	verifier := oauth2.GenerateVerifier()
	state := secret.Token("")
	status, loc := br.do("GET", a.conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)), nil)
	switch {
	case loc != nil:
	case status == 200 && strings.Contains(br.last, "Allow access?"):
		loc = br.consent()
	default:
		loc = br.authorize(a.conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)), username)
	}
	tok, err := a.conf.Exchange(context.Background(), codeFrom(t, loc, state), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	return a, tok
}

// TestOAuthSessionsAreOrdinary: a session from the OAuth 2.0 API is seen
// and ended like any other: the admin API lists its device, /logout ends
// it (and its refresh token), and deactivation ends every session and the browser's sign-in.
func TestOAuthSessionsAreOrdinary(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := start(t, e)
		alice := seedUser(t, b.Store, "alice")
		ctx := context.Background()
		admin, err := mautrix.NewClient(b.URL, "", "")
		if err != nil {
			t.Fatal(err)
		}
		reg, err := admin.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "root", Password: password})
		if err != nil {
			t.Fatal(err)
		}
		admin.AccessToken = reg.AccessToken
		if err := b.Store.SetAdmin(ctx, "@root:hearth.test", true); err != nil {
			t.Fatal(err)
		}
		br := newBrowser(t, b.URL)
		a, tok := login(t, b, br, "alice")

		// The admin API lists the device.
		var devs struct {
			Devices []struct {
				DeviceID    string `json:"device_id"`
				DisplayName string `json:"display_name"`
			} `json:"devices"`
		}
		_, err = admin.MakeRequest(ctx, http.MethodGet, b.URL+"/_synapse/admin/v2/users/"+url.PathEscape(alice)+"/devices", nil, &devs)
		if err != nil {
			t.Fatal(err)
		}
		if len(devs.Devices) != 1 || devs.Devices[0].DeviceID != a.deviceID {
			t.Fatalf("admin API devices %+v, want the OAuth session's %s", devs.Devices, a.deviceID)
		}

		// /logout with the OAuth token ends the session, refresh token too.
		cli, _ := mautrix.NewClient(b.URL, "", tok.AccessToken)
		if _, err := cli.Logout(ctx); err != nil {
			t.Fatal(err)
		}
		tok.Expiry = time.Now().Add(-time.Minute)
		if _, err := a.conf.TokenSource(ctx, tok).Token(); oauthErrorCode(err) != "invalid_grant" {
			t.Fatalf("refresh after /logout: %v, want invalid_grant", err)
		}

		// Deactivation by an admin: every session ends, refresh included,
		// and the browser is signed out of the pages.
		a, tok = login(t, b, br, "alice")
		if _, err := admin.MakeRequest(ctx, http.MethodPost, b.URL+"/_synapse/admin/v1/deactivate/"+url.PathEscape(alice), map[string]any{}, nil); err != nil {
			t.Fatal(err)
		}
		if _, c := whoami(t, b, tok.AccessToken); c != "M_UNKNOWN_TOKEN" {
			t.Fatalf("token after deactivation: %q, want M_UNKNOWN_TOKEN", c)
		}
		tok.Expiry = time.Now().Add(-time.Minute)
		if _, err := a.conf.TokenSource(ctx, tok).Token(); oauthErrorCode(err) != "invalid_grant" {
			t.Fatalf("refresh after deactivation: %v, want invalid_grant", err)
		}
		status, _ := br.do("GET", b.URL+"/_hearth/oauth/account", nil)
		if status != 200 || !strings.Contains(br.last, "Sign in") {
			t.Fatalf("account page after deactivation: %d, want the sign-in page\n%s", status, br.last)
		}
	})
}

// TestOAuthRefreshRetry: a client whose refresh response was lost can
// present the same refresh token again (spec: "it MUST ensure that the
// client is able to retry the refresh request"); the unused pair of the
// first attempt dies, and once the new pair is used the old refresh token
// is unknown.
func TestOAuthRefreshRetry(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := start(t, e)
		seedUser(t, b.Store, "alice")
		ctx := context.Background()
		a, tok := login(t, b, newBrowser(t, b.URL), "alice")
		tok.Expiry = time.Now().Add(-time.Minute)
		lost, err := a.conf.TokenSource(ctx, tok).Token()
		if err != nil {
			t.Fatal(err)
		}
		retried, err := a.conf.TokenSource(ctx, tok).Token()
		if err != nil {
			t.Fatalf("retrying a refresh whose answer was lost: %v", err)
		}
		if retried.AccessToken == lost.AccessToken || retried.RefreshToken == lost.RefreshToken {
			t.Fatal("the retry returned the same pair")
		}
		if _, c := whoami(t, b, lost.AccessToken); c != "M_UNKNOWN_TOKEN" {
			t.Fatalf("the lost pair's access token: %q, want M_UNKNOWN_TOKEN", c)
		}
		lost.Expiry = time.Now().Add(-time.Minute)
		if _, err := a.conf.TokenSource(ctx, lost).Token(); oauthErrorCode(err) != "invalid_grant" {
			t.Fatalf("the lost pair's refresh token: %v, want invalid_grant", err)
		}
		if _, c := whoami(t, b, retried.AccessToken); c != "" {
			t.Fatalf("the retried pair: %q", c)
		}
		// Used: the original refresh token is retired.
		if _, err := a.conf.TokenSource(ctx, tok).Token(); oauthErrorCode(err) != "invalid_grant" {
			t.Fatalf("the original refresh token after the new pair was used: %v, want invalid_grant", err)
		}
		retried.Expiry = time.Now().Add(-time.Minute)
		if _, err := a.conf.TokenSource(ctx, retried).Token(); err != nil {
			t.Fatalf("refreshing the live pair: %v", err)
		}
	})
}

// TestOAuthAccountPage: the account management URL's actions: the
// profile (display name, propagated like PUT /displayname), ending a
// session, and deactivation behind the password.
func TestOAuthAccountPage(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := start(t, e)
		alice := seedUser(t, b.Store, "alice")
		ctx := context.Background()
		br := newBrowser(t, b.URL)
		a, tok := login(t, b, br, "alice")
		account := a.md["account_management_uri"].(string)

		status, _ := br.do("GET", account+"?action=org.matrix.profile", nil)
		if status != 200 || !strings.Contains(br.last, alice) || !strings.Contains(br.last, "session-"+a.deviceID) {
			t.Fatalf("account page: %d\n%s", status, br.last)
		}
		csrf := hiddenRe.FindStringSubmatch(br.last)[2]
		post := func(path string, fields url.Values) {
			t.Helper()
			fields.Set("csrf", csrf)
			br.do("POST", b.URL+"/_hearth/oauth/account"+path, fields)
		}
		post("/profile", url.Values{"displayname": {"Alice Liddell"}})
		if !strings.Contains(br.last, "display name has been changed") {
			t.Fatalf("profile change: %s", br.last)
		}
		cli, _ := mautrix.NewClient(b.URL, id.UserID(alice), tok.AccessToken)
		if p, err := cli.GetProfile(ctx, cli.UserID); err != nil || p.DisplayName != "Alice Liddell" {
			t.Fatalf("profile after the page changed it: %+v %v", p, err)
		}
		post("/profile", url.Values{"displayname": {strings.Repeat("x", 300)}})
		if !strings.Contains(br.last, "longer than") {
			t.Fatalf("too long a display name was not refused:\n%s", br.last)
		}

		// A forged form token changes nothing.
		br.do("POST", b.URL+"/_hearth/oauth/account/sessions/end", url.Values{"device_id": {a.deviceID}, "csrf": {"forged"}})
		if _, c := whoami(t, b, tok.AccessToken); c != "" {
			t.Fatalf("a forged end-session request ended the session: %q", c)
		}
		post("/sessions/end", url.Values{"device_id": {a.deviceID}})
		if _, c := whoami(t, b, tok.AccessToken); c != "M_UNKNOWN_TOKEN" {
			t.Fatalf("ended session: %q, want M_UNKNOWN_TOKEN", c)
		}

		// Deactivation needs the password.
		_, tok = login(t, b, br, "alice")
		post("/deactivate", url.Values{"password": {"wrong"}})
		if !strings.Contains(br.last, "wrong password") {
			t.Fatalf("deactivation with a wrong password:\n%s", br.last)
		}
		if u, _ := b.Store.UserByID(ctx, alice); u.Deactivated {
			t.Fatal("deactivated with a wrong password")
		}
		post("/deactivate", url.Values{"password": {password}})
		if !strings.Contains(br.last, "has been deactivated") {
			t.Fatalf("deactivation: %s", br.last)
		}
		if u, _ := b.Store.UserByID(ctx, alice); !u.Deactivated {
			t.Fatal("not deactivated")
		}
		if _, c := whoami(t, b, tok.AccessToken); c != "M_UNKNOWN_TOKEN" {
			t.Fatalf("token after deactivation: %q", c)
		}
	})
}
