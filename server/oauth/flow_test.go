package oauth_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"maunium.net/go/mautrix"

	"hearth/config"
	"hearth/server"
	"hearth/server/oauth"
	"hearth/server/secret"
	"hearth/server/servertest"
	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

const password = "correct horse battery staple"

// start runs Hearth with the OAuth 2.0 API on, as a new config has it.
func start(t *testing.T, e storagetest.Engine, opts ...servertest.Option) *servertest.Bundle {
	t.Helper()
	opts = append([]servertest.Option{func(c *config.Config) { c.OAuth.Enabled = true }}, opts...)
	return servertest.StartWith(t, e, func(d *server.Deps) { d.OAuth = oauth.Hook(nil) }, opts...)
}

// seedUser creates an account straight in the store.
func seedUser(t *testing.T, st *storage.Store, localpart string) string {
	t.Helper()
	hash, err := secret.HashPassword(password, 4)
	if err != nil {
		t.Fatal(err)
	}
	id := "@" + localpart + ":hearth.test"
	if err := st.CreateUser(context.Background(), &storage.User{UserID: id, Localpart: localpart, PasswordHash: hash, DisplayName: localpart}); err != nil {
		t.Fatal(err)
	}
	return id
}

// metadata fetches GET /_matrix/client/v1/auth_metadata.
func metadata(t *testing.T, base string) map[string]any {
	t.Helper()
	resp, err := http.Get(base + "/_matrix/client/v1/auth_metadata")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("auth_metadata: %d", resp.StatusCode)
	}
	md := map[string]any{}
	if err := json.NewDecoder(resp.Body).Decode(&md); err != nil {
		t.Fatal(err)
	}
	return md
}

// registerClient does dynamic client registration and returns the status
// and body.
func registerClient(t *testing.T, endpoint string, md map[string]any) (int, map[string]any) {
	t.Helper()
	raw, _ := json.Marshal(md)
	resp, err := http.Post(endpoint, "application/json", strings.NewReader(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("registration answer is not JSON: %v", err)
	}
	return resp.StatusCode, out
}

// nativeApp is the client metadata of a native app with a loopback and a
// private-use redirect URI, as Element X registers.
func nativeApp() map[string]any {
	return map[string]any{
		"client_name": "Test App", "client_uri": "https://app.example.org/",
		"redirect_uris":              []string{"http://127.0.0.1/callback", "org.example.app:/callback"},
		"application_type":           "native",
		"token_endpoint_auth_method": "none",
		"response_types":             []string{"code"},
		"grant_types":                []string{"authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:token-exchange"},
	}
}

// app is a registered client driven through golang.org/x/oauth2.
type app struct {
	md       map[string]any
	conf     *oauth2.Config
	revoke   string
	deviceID string
}

func newApp(t *testing.T, b *servertest.Bundle, redirect string) *app {
	t.Helper()
	md := metadata(t, b.URL)
	status, reg := registerClient(t, md["registration_endpoint"].(string), nativeApp())
	if status != http.StatusCreated {
		t.Fatalf("registration: %d %v", status, reg)
	}
	device := secret.FromAlphabet("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", 12)
	return &app{md: md, revoke: md["revocation_endpoint"].(string), deviceID: device, conf: &oauth2.Config{
		ClientID: reg["client_id"].(string),
		Endpoint: oauth2.Endpoint{AuthURL: md["authorization_endpoint"].(string), TokenURL: md["token_endpoint"].(string),
			AuthStyle: oauth2.AuthStyleInParams},
		RedirectURL: redirect,
		Scopes:      []string{"urn:matrix:client:api:*", "urn:matrix:client:device:" + device},
	}}
}

// browser is a cookie-keeping user agent that follows redirects on the
// server and stops at the app's redirect URI.
type browser struct {
	t    *testing.T
	c    *http.Client
	base string
	last string // the last page's body
	// pageURL is the last page's address, for relative form actions.
	pageURL *url.URL
}

func newBrowser(t *testing.T, base string) *browser {
	jar, _ := cookiejar.New(nil)
	b := &browser{t: t, base: base}
	b.c = &http.Client{Jar: jar, Timeout: 30 * time.Second, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if !strings.HasPrefix(req.URL.String(), base) {
			return http.ErrUseLastResponse // the app's redirect URI: stop, as an OS would hand it to the app
		}
		return nil
	}}
	return b
}

// do makes a request and returns the final response's status and
// location (for a redirect out of the server); the body is kept in last.
func (b *browser) do(method, u string, form url.Values) (int, *url.URL) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	b.last = string(raw)
	var loc *url.URL
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		loc, _ = resp.Location()
	}
	b.pageURL = resp.Request.URL
	return resp.StatusCode, loc
}

var actionRe = regexp.MustCompile(`<form method="post" action="([^"]+)"`)
var hiddenRe = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)"`)

// submit posts the page's first POST form (not the header's sign-out)
// with its hidden fields and fields.
func (b *browser) submit(fields url.Values) (int, *url.URL) {
	b.t.Helper()
	loc := actionRe.FindStringSubmatchIndex(b.last)
	if loc == nil {
		b.t.Fatalf("no form on the page:\n%s", b.last)
	}
	form := b.last[loc[0]:]
	if end := strings.Index(form, "</form>"); end >= 0 {
		form = form[:end]
	}
	for _, m := range hiddenRe.FindAllStringSubmatch(form, -1) {
		if fields.Get(m[1]) == "" {
			fields.Set(m[1], html.UnescapeString(m[2]))
		}
	}
	action := html.UnescapeString(b.last[loc[2]:loc[3]])
	p, q, _ := strings.Cut(action, "?")
	target := b.pageURL.ResolveReference(&url.URL{Path: p, RawQuery: q})
	return b.do("POST", target.String(), fields)
}

// authorize runs the browser part: the authorisation URL, sign-in,
// consent; it returns the redirect to the app.
func (b *browser) authorize(authURL, username string) *url.URL {
	b.t.Helper()
	status, loc := b.do("GET", authURL, nil)
	if loc != nil {
		return loc // already signed in and... never without consent
	}
	if status != 200 || !strings.Contains(b.last, "Sign in") {
		b.t.Fatalf("authorisation did not show the sign-in page: %d\n%s", status, b.last)
	}
	if status, _ = b.submit(url.Values{"username": {username}, "password": {password}}); status != 200 || !strings.Contains(b.last, "Allow access?") {
		b.t.Fatalf("sign-in did not lead to consent: %d\n%s", status, b.last)
	}
	return b.consent()
}

func (b *browser) consent() *url.URL {
	b.t.Helper()
	status, loc := b.submit(url.Values{"action": {"allow"}})
	if loc == nil {
		b.t.Fatalf("consent did not redirect to the app: %d\n%s", status, b.last)
	}
	return loc
}

// codeFrom reads the code from the app's redirect, checking state.
func codeFrom(t *testing.T, loc *url.URL, state string) string {
	t.Helper()
	q := loc.Query()
	if loc.Fragment != "" {
		q, _ = url.ParseQuery(loc.Fragment)
	}
	if q.Get("state") != state {
		t.Fatalf("state %q, want %q (redirect %s)", q.Get("state"), state, loc)
	}
	if q.Get("code") == "" {
		t.Fatalf("no code in redirect %s", loc)
	}
	return q.Get("code")
}

// matrixErr asks whoami with tok and returns the errcode ("" on success).
func whoami(t *testing.T, b *servertest.Bundle, tok string) (*mautrix.RespWhoami, string) {
	t.Helper()
	cli, err := mautrix.NewClient(b.URL, "", tok)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Whoami(context.Background())
	var he mautrix.HTTPError
	if errors.As(err, &he) && he.RespError != nil {
		return nil, he.RespError.ErrCode
	}
	if err != nil {
		t.Fatal(err)
	}
	return resp, ""
}

func oauthErrorCode(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return re.ErrorCode
	}
	return fmt.Sprint(err)
}

// revoke posts to the revocation endpoint.
func (a *app) revokeToken(t *testing.T, token, hint string) int {
	t.Helper()
	form := url.Values{"token": {token}, "client_id": {a.conf.ClientID}}
	if hint != "" {
		form.Set("token_type_hint", hint)
	}
	resp, err := http.PostForm(a.revoke, form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestOAuthFlow is the whole life of a session: discovery, registration,
// the authorisation code grant with PKCE through the pages, the token
// used on the client API, refresh (the old pair dead, the old refresh
// token single-use), and revocation (M_UNKNOWN_TOKEN after).
func TestOAuthFlow(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := start(t, e)
		alice := seedUser(t, b.Store, "alice")
		ctx := context.Background()

		md := metadata(t, b.URL)
		for _, k := range []string{"issuer", "authorization_endpoint", "token_endpoint", "revocation_endpoint", "registration_endpoint", "account_management_uri"} {
			if s, _ := md[k].(string); !strings.HasPrefix(s, b.URL) {
				t.Errorf("metadata %s = %v, want a URL on %s", k, md[k], b.URL)
			}
		}
		for k, want := range map[string]string{"response_types_supported": "code", "grant_types_supported": "refresh_token",
			"response_modes_supported": "fragment", "code_challenge_methods_supported": "S256", "prompt_values_supported": "create",
			"account_management_actions_supported": "org.matrix.device_delete"} {
			if !strings.Contains(fmt.Sprint(md[k]), want) {
				t.Errorf("metadata %s = %v, want it to include %s", k, md[k], want)
			}
		}

		// A loopback redirect registered without a port; the app listens
		// on one it picked (RFC 8252), which must be accepted.
		a := newApp(t, b, "http://127.0.0.1:43117/callback")
		verifier := oauth2.GenerateVerifier()
		state := secret.Token("")
		br := newBrowser(t, b.URL)
		loc := br.authorize(a.conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)), "alice")
		if loc.Host != "127.0.0.1:43117" || loc.Path != "/callback" {
			t.Fatalf("redirected to %s, want the app's loopback redirect", loc)
		}
		code := codeFrom(t, loc, state)
		tok, err := a.conf.Exchange(ctx, code, oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatalf("exchange: %v", err)
		}
		if tok.RefreshToken == "" || tok.Expiry.IsZero() || tok.TokenType != "Bearer" {
			t.Fatalf("token response %+v: want a refresh token, an expiry and type Bearer", tok)
		}
		if sc, _ := tok.Extra("scope").(string); !strings.Contains(sc, "urn:matrix:client:device:"+a.deviceID) {
			t.Errorf("token scope %q does not echo the device scope", sc)
		}

		// An ordinary session: whoami names the user and the device the
		// scope allocated; /devices lists it under the client's name.
		who, code2 := whoami(t, b, tok.AccessToken)
		if code2 != "" || who.UserID.String() != alice || who.DeviceID.String() != a.deviceID {
			t.Fatalf("whoami = %+v %s, want %s device %s", who, code2, alice, a.deviceID)
		}
		dev, err := b.Store.Device(ctx, alice, a.deviceID)
		if err != nil || dev.DisplayName != "Test App" {
			t.Fatalf("device %+v %v: want the client's name", dev, err)
		}

		// The code works once.
		if _, err := a.conf.Exchange(ctx, code, oauth2.VerifierOption(verifier)); oauthErrorCode(err) != "invalid_grant" {
			t.Fatalf("reused code: %v, want invalid_grant", err)
		}

		// Refresh: a new pair; the old access token stops working, and
		// the old refresh token cannot be used again.
		tok.Expiry = time.Now().Add(-time.Minute)
		next, err := a.conf.TokenSource(ctx, tok).Token()
		if err != nil {
			t.Fatalf("refresh: %v", err)
		}
		if next.AccessToken == tok.AccessToken || next.RefreshToken == "" || next.RefreshToken == tok.RefreshToken {
			t.Fatalf("refresh gave %+v, want a new pair", next)
		}
		if _, c := whoami(t, b, tok.AccessToken); c != "M_UNKNOWN_TOKEN" {
			t.Fatalf("old access token after refresh: %q, want M_UNKNOWN_TOKEN", c)
		}
		if who, c := whoami(t, b, next.AccessToken); c != "" || who.DeviceID.String() != a.deviceID {
			t.Fatalf("refreshed token: %+v %q", who, c)
		}
		if _, err := a.conf.TokenSource(ctx, tok).Token(); oauthErrorCode(err) != "invalid_grant" {
			t.Fatalf("reused refresh token: %v, want invalid_grant", err)
		}

		// Revocation ends the session: the token is unknown, the device
		// gone, the refresh token dead; revoking again is still 200.
		if st := a.revokeToken(t, next.AccessToken, "access_token"); st != 200 {
			t.Fatalf("revoke: %d", st)
		}
		if _, c := whoami(t, b, next.AccessToken); c != "M_UNKNOWN_TOKEN" {
			t.Fatalf("revoked token: %q, want M_UNKNOWN_TOKEN", c)
		}
		if _, err := b.Store.Device(ctx, alice, a.deviceID); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("device after revocation: %v, want it gone", err)
		}
		next.Expiry = time.Now().Add(-time.Minute)
		if _, err := a.conf.TokenSource(ctx, next).Token(); oauthErrorCode(err) != "invalid_grant" {
			t.Fatalf("refresh after revocation: %v, want invalid_grant", err)
		}
		if st := a.revokeToken(t, next.AccessToken, ""); st != 200 {
			t.Fatalf("revoking a revoked token: %d, want 200", st)
		}

		// The browser is still signed in: a second authorisation goes
		// straight to consent; this time with the private-use redirect
		// and the fragment response mode.
		a2 := newApp(t, b, "org.example.app:/callback")
		verifier = oauth2.GenerateVerifier()
		status, _ := br.do("GET", a2.conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("response_mode", "fragment")), nil)
		if status != 200 || !strings.Contains(br.last, "Allow access?") {
			t.Fatalf("signed-in browser: %d, want the consent page\n%s", status, br.last)
		}
		loc = br.consent()
		if loc.Scheme != "org.example.app" || loc.RawQuery != "" || loc.Fragment == "" {
			t.Fatalf("redirect %s: want org.example.app: with the answer in the fragment", loc)
		}
		tok2, err := a2.conf.Exchange(ctx, codeFrom(t, loc, state), oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatalf("second exchange: %v", err)
		}
		// Revoking by refresh token ends the session too.
		if st := a2.revokeToken(t, tok2.RefreshToken, "refresh_token"); st != 200 {
			t.Fatalf("revoke by refresh token: %d", st)
		}
		if _, c := whoami(t, b, tok2.AccessToken); c != "M_UNKNOWN_TOKEN" {
			t.Fatalf("access token after its refresh token was revoked: %q, want M_UNKNOWN_TOKEN", c)
		}
	})
}
