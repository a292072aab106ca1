package oauth_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"hearth/server/secret"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// authURL builds an authorisation URL by hand, for requests
// golang.org/x/oauth2 would not make.
func (a *app) authURL(params map[string]string) string {
	q := url.Values{"response_type": {"code"}, "client_id": {a.conf.ClientID}, "redirect_uri": {a.conf.RedirectURL},
		"scope": {strings.Join(a.conf.Scopes, " ")}, "state": {"st8"}}
	for k, v := range params {
		if v == "" {
			q.Del(k)
		} else {
			q.Set(k, v)
		}
	}
	return a.conf.Endpoint.AuthURL + "?" + q.Encode()
}

// S256 challenge of a fixed verifier, for hand-built URLs.
var challenge = oauth2.S256ChallengeFromVerifier(strings.Repeat("v", 43))

// TestOAuthAuthorizeErrors: requests the server must refuse at the
// authorisation endpoint. A bad redirect URI or client is answered in the
// browser, never by redirecting (an open redirect otherwise); other faults
// go back to the app as error= with its state.
func TestOAuthAuthorizeErrors(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := start(t, e)
		seedUser(t, b.Store, "alice")
		a := newApp(t, b, "http://127.0.0.1:5000/callback")
		pkce := map[string]string{"code_challenge": challenge, "code_challenge_method": "S256"}
		with := func(extra map[string]string) map[string]string {
			out := map[string]string{}
			for k, v := range pkce {
				out[k] = v
			}
			for k, v := range extra {
				out[k] = v
			}
			return out
		}

		br := newBrowser(t, b.URL)
		for name, params := range map[string]map[string]string{
			"unregistered redirect":             with(map[string]string{"redirect_uri": "https://evil.example/cb"}),
			"unregistered private-use redirect": with(map[string]string{"redirect_uri": "org.evil:/cb"}),
			"loopback on another path":          with(map[string]string{"redirect_uri": "http://127.0.0.1:5000/other"}),
			"unknown client":                    with(map[string]string{"client_id": "NOSUCHCLIENT"}),
		} {
			status, loc := br.do("GET", a.authURL(params), nil)
			if status != http.StatusBadRequest || loc != nil {
				t.Errorf("%s: %d, redirect %v; want 400 and no redirect", name, status, loc)
			}
		}

		device := "urn:matrix:client:device:" + a.deviceID
		for name, tc := range map[string]struct {
			params map[string]string
			want   string
		}{
			"no PKCE":             {map[string]string{}, "invalid_request"},
			"plain PKCE":          {map[string]string{"code_challenge": "x" + strings.Repeat("a", 43), "code_challenge_method": "plain"}, "invalid_request"},
			"no device scope":     {with(map[string]string{"scope": "urn:matrix:client:api:*"}), "invalid_scope"},
			"two device scopes":   {with(map[string]string{"scope": "urn:matrix:client:api:* " + device + " urn:matrix:client:device:OTHERDEVICE"}), "invalid_scope"},
			"no API scope":        {with(map[string]string{"scope": device}), "invalid_scope"},
			"bad device ID":       {with(map[string]string{"scope": "urn:matrix:client:api:* urn:matrix:client:device:a\\b"}), "invalid_scope"},
			"token response type": {with(map[string]string{"response_type": "token"}), "unauthorized_client"},
		} {
			_, loc := br.do("GET", a.authURL(tc.params), nil)
			if loc == nil || loc.Host != "127.0.0.1:5000" {
				t.Errorf("%s: redirect %v, want the app's redirect URI with an error\n%s", name, loc, br.last)
				continue
			}
			if got := loc.Query().Get("error"); got != tc.want || loc.Query().Get("state") != "st8" {
				t.Errorf("%s: error=%q state=%q, want error=%s with the state", name, got, loc.Query().Get("state"), tc.want)
			}
		}

		// The user cancels at the consent page: access_denied.
		status, _ := br.do("GET", a.authURL(pkce), nil)
		if status != 200 {
			t.Fatalf("authorize: %d", status)
		}
		br.submit(url.Values{"username": {"alice"}, "password": {password}})
		_, loc := br.submit(url.Values{"action": {"deny"}})
		if loc == nil || loc.Query().Get("error") != "access_denied" || loc.Query().Get("state") != "st8" {
			t.Fatalf("cancel: redirect %v, want error=access_denied with the state", loc)
		}
	})
}

// TestOAuthTokenErrors: the code exchange refuses a wrong PKCE verifier, a
// reused code and a mismatched redirect URI; a code that met a wrong
// verifier is spent.
func TestOAuthTokenErrors(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := start(t, e)
		seedUser(t, b.Store, "alice")
		ctx := context.Background()
		a := newApp(t, b, "http://127.0.0.1:5000/callback")
		br := newBrowser(t, b.URL)
		code := func() (string, string) {
			verifier := oauth2.GenerateVerifier()
			state := secret.Token("")
			status, loc := br.do("GET", a.conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)), nil)
			if status == 200 && strings.Contains(br.last, "Sign in") {
				br.submit(url.Values{"username": {"alice"}, "password": {password}})
				loc = br.consent()
			} else if loc == nil {
				loc = br.consent()
			}
			return codeFrom(t, loc, state), verifier
		}

		c, verifier := code()
		if _, err := a.conf.Exchange(ctx, c, oauth2.VerifierOption(oauth2.GenerateVerifier())); oauthErrorCode(err) != "invalid_grant" {
			t.Fatalf("wrong verifier: %v, want invalid_grant", err)
		}
		if _, err := a.conf.Exchange(ctx, c, oauth2.VerifierOption(verifier)); oauthErrorCode(err) != "invalid_grant" {
			t.Fatalf("the right verifier after a wrong one: %v, want invalid_grant (the code is spent)", err)
		}

		c, _ = code()
		if _, err := a.conf.Exchange(ctx, c); oauthErrorCode(err) != "invalid_grant" && oauthErrorCode(err) != "invalid_request" {
			t.Fatalf("no verifier: %v, want invalid_grant or invalid_request", err)
		}

		c, verifier = code()
		other := *a.conf
		other.RedirectURL = "org.example.app:/callback"
		if _, err := other.Exchange(ctx, c, oauth2.VerifierOption(verifier)); oauthErrorCode(err) != "invalid_grant" {
			t.Fatalf("another redirect_uri: %v, want invalid_grant", err)
		}

		c, verifier = code()
		if _, err := a.conf.Exchange(ctx, c, oauth2.VerifierOption(verifier)); err != nil {
			t.Fatalf("exchange: %v", err)
		}
		if _, err := a.conf.Exchange(ctx, c, oauth2.VerifierOption(verifier)); oauthErrorCode(err) != "invalid_grant" {
			t.Fatalf("reused code: %v, want invalid_grant", err)
		}

		// A refresh token of another client is refused.
		c, verifier = code()
		tok, err := a.conf.Exchange(ctx, c, oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatal(err)
		}
		md := nativeApp()
		md["client_name"] = "Another App"
		_, reg := registerClient(t, a.md["registration_endpoint"].(string), md)
		other2 := *a.conf
		other2.ClientID = reg["client_id"].(string)
		if other2.ClientID == a.conf.ClientID {
			t.Fatal("different metadata, same client ID")
		}
		tok.Expiry = time.Now().Add(-time.Minute)
		if _, err := other2.TokenSource(ctx, tok).Token(); oauthErrorCode(err) != "invalid_grant" {
			t.Fatalf("another client's refresh token: %v, want invalid_grant", err)
		}
		if _, err := a.conf.TokenSource(ctx, tok).Token(); err != nil {
			t.Fatalf("the refresh token still works for its own client: %v", err)
		}
	})
}

// TestOAuthPageCSRF: the pages' forms are refused without their token.
func TestOAuthPageCSRF(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := start(t, e)
		seedUser(t, b.Store, "alice")
		a := newApp(t, b, "http://127.0.0.1:5000/callback")
		br := newBrowser(t, b.URL)
		status, _ := br.do("GET", a.authURL(map[string]string{"code_challenge": challenge, "code_challenge_method": "S256"}), nil)
		if status != 200 {
			t.Fatal(status)
		}
		loginURL := br.pageURL.String()
		if st, _ := br.do("POST", loginURL, url.Values{"username": {"alice"}, "password": {password}}); st != http.StatusForbidden {
			t.Fatalf("sign-in without the form token: %d, want 403", st)
		}
		if st, _ := br.do("POST", loginURL, url.Values{"username": {"alice"}, "password": {password}, "csrf": {"forged"}}); st != http.StatusForbidden {
			t.Fatalf("sign-in with a forged form token: %d, want 403", st)
		}
		br.do("GET", loginURL, nil)
		br.submit(url.Values{"username": {"alice"}, "password": {password}})
		consentURL := br.pageURL.String()
		if st, loc := br.do("POST", consentURL, url.Values{"action": {"allow"}, "csrf": {"forged"}}); st != http.StatusForbidden || loc != nil {
			t.Fatalf("consent with a forged form token: %d %v, want 403", st, loc)
		}
		// A wrong password shows the form again, with no session.
		br2 := newBrowser(t, b.URL)
		br2.do("GET", loginURL, nil)
		if st, _ := br2.submit(url.Values{"username": {"alice"}, "password": {"wrong"}}); st != http.StatusForbidden || !strings.Contains(br2.last, "Wrong username or password") {
			t.Fatalf("wrong password: %d\n%s", st, br2.last)
		}
	})
}

var _ = servertest.Option(nil)
