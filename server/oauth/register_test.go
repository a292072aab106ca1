package oauth_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"
	"maunium.net/go/mautrix"

	"hearth/config"
	"hearth/server"
	"hearth/server/servertest"
	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// TestOAuthRegistration: prompt=create shows the registration page; with
// registration_requires_token a wrong token creates nothing and a valid
// one creates the account, spends a use, and leads on to consent.
func TestOAuthRegistration(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := start(t, e, func(c *config.Config) {
			c.RegistrationRequiresToken = true
			c.EnableRegistrationWithoutVerification = false
		})
		ctx := context.Background()
		uses := 1
		if err := b.Store.CreateRegistrationToken(ctx, &storage.RegistrationToken{Token: "letmein", UsesAllowed: &uses}); err != nil {
			t.Fatal(err)
		}
		a := newApp(t, b, "http://127.0.0.1:5000/callback")
		verifier := oauth2.GenerateVerifier()
		authURL := a.conf.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("prompt", "create"))
		br := newBrowser(t, b.URL)
		status, _ := br.do("GET", authURL, nil)
		if status != 200 || !strings.Contains(br.last, "Create an account") || !strings.Contains(br.last, `name="token"`) {
			t.Fatalf("prompt=create: %d, want the registration page with a token field\n%s", status, br.last)
		}
		form := url.Values{"username": {"bob"}, "password": {password}, "password2": {password}, "token": {"wrong"}}
		if status, _ := br.submit(form); status != http.StatusUnauthorized || !strings.Contains(br.last, "registration token is not valid") {
			t.Fatalf("wrong token: %d\n%s", status, br.last)
		}
		if taken, _ := b.Store.LocalpartTaken(ctx, "bob"); taken {
			t.Fatal("an account was created with a wrong token")
		}
		form.Set("password2", "different")
		form.Set("token", "letmein")
		if status, _ := br.submit(form); status != http.StatusBadRequest || !strings.Contains(br.last, "passwords differ") {
			t.Fatalf("mismatched passwords: %d", status)
		}
		form.Set("password2", password)
		if status, _ := br.submit(form); status != 200 || !strings.Contains(br.last, "Allow access?") {
			t.Fatalf("registration: %d, want the consent page\n%s", status, br.last)
		}
		tok, err := a.conf.Exchange(ctx, codeFrom(t, br.consent(), "st"), oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatal(err)
		}
		if who, c := whoami(t, b, tok.AccessToken); c != "" || who.UserID.String() != "@bob:hearth.test" {
			t.Fatalf("whoami %+v %s", who, c)
		}
		rt, err := b.Store.RegistrationTokenByID(ctx, "letmein")
		if err != nil || rt.Completed != 1 || rt.Pending != 0 {
			t.Fatalf("token after registration: %+v %v, want one completed use", rt, err)
		}
		// The token is used up: the next registration is refused.
		br2 := newBrowser(t, b.URL)
		br2.do("GET", b.URL+server.OAuthPath+"/register", nil)
		if status, _ := br2.submit(url.Values{"username": {"carol"}, "password": {password}, "password2": {password}, "token": {"letmein"}}); status != http.StatusUnauthorized {
			t.Fatalf("used-up token: %d, want 401", status)
		}
		// The new account also signs in with its password.
		cli, _ := mautrix.NewClient(b.URL, "", "")
		if _, err := cli.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "bob"}, Password: password}); err != nil {
			t.Fatalf("password login of the new account: %v", err)
		}
	})
}

// TestOAuthRegistrationClosed: with registration off, prompt=create shows
// the sign-in page without a link to register, and the registration page
// refuses.
func TestOAuthRegistrationClosed(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := start(t, e, func(c *config.Config) { c.EnableRegistration = false })
		a := newApp(t, b, "http://127.0.0.1:5000/callback")
		br := newBrowser(t, b.URL)
		status, _ := br.do("GET", a.conf.AuthCodeURL("st", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()), oauth2.SetAuthURLParam("prompt", "create")), nil)
		if status != 200 || !strings.Contains(br.last, "Sign in") || strings.Contains(br.last, "create-account") {
			t.Fatalf("prompt=create with registration closed: %d\n%s", status, br.last)
		}
		if status, _ := br.do("GET", b.URL+server.OAuthPath+"/register", nil); status != http.StatusForbidden {
			t.Fatalf("registration page: %d, want 403", status)
		}
	})
}

// TestOAuthRegistrationNeedsEmail: with registrations_require_3pid the
// registration page, which cannot prove an address, creates no account.
func TestOAuthRegistrationNeedsEmail(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := start(t, e, func(c *config.Config) {
			c.Email = &config.Email{NotifFrom: "noreply@hearth.test"}
			c.PublicBaseURL = "https://matrix.hearth.test/"
			c.RegistrationsRequire3PID = []string{"email"}
			c.EnableRegistrationWithoutVerification = false
			c.Defaults()
		})
		br := newBrowser(t, b.URL)
		br.do("GET", b.URL+server.OAuthPath+"/register", nil)
		if status, _ := br.submit(url.Values{"username": {"dan"}, "password": {password}, "password2": {password}}); status != http.StatusForbidden ||
			!strings.Contains(br.last, "email address") {
			t.Fatalf("registration without email: %d\n%s", status, br.last)
		}
		if taken, _ := b.Store.LocalpartTaken(context.Background(), "dan"); taken {
			t.Fatal("an account was created without an email address")
		}
	})
}

// TestAuthMetadataOff: without the oauth section the API is not there:
// auth_metadata answers 404 M_UNRECOGNIZED (which tells clients to use
// the legacy API) and nothing is served under /_hearth/oauth.
func TestAuthMetadataOff(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		for _, path := range []string{"/_matrix/client/v1/auth_metadata", "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata", server.OAuthPath + "/oauth2/registration"} {
			cli, _ := mautrix.NewClient(b.URL, "", "")
			_, err := cli.MakeRequest(context.Background(), http.MethodGet, b.URL+path, nil, nil)
			if !errors.Is(err, mautrix.MUnrecognized) {
				t.Errorf("%s with OAuth off: %v, want 404 M_UNRECOGNIZED", path, err)
			}
		}
		// On, the unstable path answers too.
		on := start(t, e)
		if md := metadata(t, on.URL); md["issuer"] == nil {
			t.Fatal("no issuer")
		}
		resp, err := http.Get(on.URL + "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("unstable auth_metadata: %d", resp.StatusCode)
		}
		// Web clients call the endpoints cross-origin: one CORS answer each.
		md := metadata(t, on.URL)
		for _, ep := range []string{"token_endpoint", "registration_endpoint", "revocation_endpoint"} {
			req, _ := http.NewRequest(http.MethodPost, md[ep].(string), strings.NewReader("grant_type=refresh_token&refresh_token=x&client_id=y"))
			req.Header.Set("Origin", "https://app.example.com")
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.Header.Values("Access-Control-Allow-Origin"); len(got) != 1 {
				t.Errorf("%s: Access-Control-Allow-Origin %q, want exactly one", ep, got)
			}
		}
	})
}
