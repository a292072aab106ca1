package oauth_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"maunium.net/go/mautrix"

	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// TestOAuthAwareSSO: for clients that know only the legacy API (spec
// "OAuth 2.0 aware clients"), /login offers m.login.sso with
// oauth_aware_preferred; its redirect goes through the OAuth pages and
// returns a one-time login token, which logs in with m.login.token.
func TestOAuthAwareSSO(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := start(t, e)
		alice := seedUser(t, b.Store, "alice")
		ctx := context.Background()
		cli, _ := mautrix.NewClient(b.URL, "", "")
		flows, err := cli.GetLoginFlows(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var sso, token, pw bool
		for _, f := range flows.Flows {
			switch f.Type {
			case mautrix.AuthTypeSSO:
				sso = true
			case mautrix.AuthTypeToken:
				token = true
			case mautrix.AuthTypePassword:
				pw = true
			}
		}
		raw := getJSON(t, b.URL+"/_matrix/client/v3/login")
		if !sso || !token || !pw || !strings.Contains(raw, `"oauth_aware_preferred":true`) {
			t.Fatalf("login flows %s: want m.login.sso (oauth_aware_preferred), m.login.token and m.login.password", raw)
		}

		br := newBrowser(t, b.URL)
		start := b.URL + "/_matrix/client/v3/login/sso/redirect?" + url.Values{"redirectUrl": {"https://client.example/after?x=1"}, "action": {"login"}}.Encode()
		status, _ := br.do("GET", start, nil)
		if status != 200 || !strings.Contains(br.last, "Sign in") {
			t.Fatalf("SSO redirect: %d, want the sign-in page\n%s", status, br.last)
		}
		if status, _ = br.submit(url.Values{"username": {"alice"}, "password": {password}}); status != 200 || !strings.Contains(br.last, "client.example") {
			t.Fatalf("after sign-in: %d, want the confirmation naming client.example\n%s", status, br.last)
		}
		_, loc := br.submit(url.Values{})
		if loc == nil || loc.Host != "client.example" || loc.Query().Get("x") != "1" || loc.Query().Get("loginToken") == "" {
			t.Fatalf("confirmation redirected to %v, want client.example with a loginToken", loc)
		}
		resp, err := cli.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypeToken, Token: loc.Query().Get("loginToken"), InitialDeviceDisplayName: "legacy client"})
		if err != nil || resp.UserID.String() != alice {
			t.Fatalf("token login: %+v %v", resp, err)
		}
		if _, err := cli.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypeToken, Token: loc.Query().Get("loginToken")}); err == nil {
			t.Fatal("the login token worked twice")
		}
		// A forged confirmation sends no token.
		br.do("GET", start, nil)
		if st, loc := br.do("POST", b.URL+"/_hearth/oauth/sso", url.Values{"redirectUrl": {"https://evil.example/"}, "csrf": {"forged"}}); st != http.StatusForbidden || loc != nil {
			t.Fatalf("forged SSO confirmation: %d %v, want 403", st, loc)
		}
		// action=register goes to registration.
		br2 := newBrowser(t, b.URL)
		br2.do("GET", b.URL+"/_matrix/client/v3/login/sso/redirect?"+url.Values{"redirectUrl": {"https://client.example/"}, "action": {"register"}}.Encode(), nil)
		if !strings.Contains(br2.last, "Create an account") {
			t.Fatalf("action=register: want the registration page\n%s", br2.last)
		}
		if status, _ := br2.submit(url.Values{"username": {"newbie"}, "password": {password}, "password2": {password}}); status != 200 || !strings.Contains(br2.last, "Continue to your app?") {
			t.Fatalf("registration then SSO confirmation: %d\n%s", status, br2.last)
		}

		// Without OAuth, no SSO.
		off := servertest.Start(t, e)
		offCli, _ := mautrix.NewClient(off.URL, "", "")
		if _, err := offCli.MakeRequest(ctx, http.MethodGet, off.URL+"/_matrix/client/v3/login/sso/redirect?redirectUrl=https://x.example/", nil, nil); err == nil {
			t.Fatal("SSO redirect served with OAuth off")
		}
		if raw := getJSON(t, off.URL+"/_matrix/client/v3/login"); strings.Contains(raw, "m.login.sso") || strings.Contains(raw, "m.login.token") {
			t.Fatalf("login flows with OAuth off: %s", raw)
		}
	})
}

func getJSON(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}
