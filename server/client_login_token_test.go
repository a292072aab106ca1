package server_test

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"hearth/config"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

const getTokenPath = "/_matrix/client/v1/login/get_token"

// loginFlows returns GET /login's flows by type.
func loginFlows(t *testing.T, b *servertest.Bundle) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, f := range acctDo(t, b, "GET", "/_matrix/client/v3/login", "", nil).body["flows"].([]any) {
		m := f.(map[string]any)
		out[m["type"].(string)] = m
	}
	return out
}

// getLoginToken asks for a login token with the password stage done.
func getLoginToken(t *testing.T, b *servertest.Bundle, u roomUser) string {
	t.Helper()
	r := acctDo(t, b, "POST", getTokenPath, u.tok, map[string]any{})
	r.want(t, 401, "")
	session := r.body["session"].(string)
	r = acctDo(t, b, "POST", getTokenPath, u.tok, map[string]any{"auth": acctPasswordAuth(u.id.Localpart(), acctPW, session)})
	r.want(t, 200, "")
	tok, _ := r.body["login_token"].(string)
	if tok == "" {
		t.Fatalf("no login_token: %v", r.body)
	}
	return tok
}

// tokenLogin logs in with an m.login.token token.
func tokenLogin(b *servertest.Bundle, token string) (*mautrix.RespLogin, error) {
	cli, _ := mautrix.NewClient(b.URL, "", "")
	return cli.Login(context.Background(), &mautrix.ReqLogin{Type: mautrix.AuthTypeToken, Token: token, InitialDeviceDisplayName: "new phone"})
}

func TestLoginTokenDisabled(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice := newRoomUser(t, b, "alice")
		if _, ok := loginFlows(t, b)["m.login.token"]; ok {
			t.Fatal("m.login.token offered while login_via_existing_session is off")
		}
		// Off, the endpoint does not exist, for anyone.
		acctDo(t, b, "POST", getTokenPath, alice.tok, map[string]any{}).want(t, 404, "M_UNRECOGNIZED")
		acctDo(t, b, "POST", getTokenPath, "", map[string]any{}).want(t, 404, "M_UNRECOGNIZED")
		acctDo(t, b, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.token", "token": "x"}).want(t, 400, "M_UNKNOWN")
		caps, err := alice.cli.Capabilities(t.Context())
		if err != nil || caps.GetLoginToken == nil || caps.GetLoginToken.IsEnabled() {
			t.Fatalf("capability: %+v %v", caps.GetLoginToken, err)
		}
	})
}

func TestLoginToken(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e, func(c *config.Config) { c.LoginViaExistingSession.Enabled = true })
		alice, bob := newRoomUser(t, b, "alice"), newRoomUser(t, b, "bob")
		if f := loginFlows(t, b)["m.login.token"]; f == nil || f["get_login_token"] != true {
			t.Fatalf("flows: %v", loginFlows(t, b))
		}
		if _, ok := loginFlows(t, b)["m.login.password"]; !ok {
			t.Fatal("password login no longer offered")
		}
		caps, err := alice.cli.Capabilities(t.Context())
		if err != nil || !caps.GetLoginToken.IsEnabled() {
			t.Fatalf("capability: %+v %v", caps.GetLoginToken, err)
		}

		// UIA first: the password, every time; a wrong one fails the stage.
		acctDo(t, b, "POST", getTokenPath, "", map[string]any{}).want(t, 401, "M_MISSING_TOKEN")
		r := acctDo(t, b, "POST", getTokenPath, alice.tok, map[string]any{})
		r.want(t, 401, "")
		session := r.body["session"].(string)
		acctDo(t, b, "POST", getTokenPath, alice.tok, map[string]any{"auth": acctPasswordAuth("alice", "wrong", session)}).want(t, 401, "M_FORBIDDEN")
		r = acctDo(t, b, "POST", getTokenPath, alice.tok, map[string]any{"auth": acctPasswordAuth("alice", acctPW, session)})
		r.want(t, 200, "")
		tok := r.body["login_token"].(string)
		if r.body["expires_in_ms"] != float64(5*time.Minute/time.Millisecond) {
			t.Fatalf("expires_in_ms: %v", r.body)
		}
		// One a minute per user, counted once UIA is done.
		r = acctDo(t, b, "POST", getTokenPath, alice.tok, map[string]any{})
		r = acctDo(t, b, "POST", getTokenPath, alice.tok, map[string]any{"auth": acctPasswordAuth("alice", acctPW, r.body["session"].(string))})
		r.want(t, 429, "M_LIMIT_EXCEEDED")
		if r.header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
		bobTok := getLoginToken(t, b, bob)

		// Tokens are stored: they survive a restart.
		b.Restart(t)
		login, err := tokenLogin(b, tok)
		if err != nil || login.UserID != alice.id || login.AccessToken == "" {
			t.Fatalf("token login: %+v %v", login, err)
		}
		who, err := acctClient(t, b, login.AccessToken).Whoami(t.Context())
		if err != nil || who.UserID != alice.id || who.DeviceID != login.DeviceID {
			t.Fatalf("whoami with the new session: %+v %v", who, err)
		}
		// Single use.
		_, err = tokenLogin(b, tok)
		acctWantErr(t, err, 403, "M_FORBIDDEN")
		_, err = tokenLogin(b, "syl_never_issued")
		acctWantErr(t, err, 403, "M_FORBIDDEN")
		acctDo(t, b, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.token"}).want(t, 400, "M_MISSING_PARAM")

		// A deactivated account's tokens go with it.
		if err := b.Store.DeactivateUser(t.Context(), string(bob.id), false); err != nil {
			t.Fatal(err)
		}
		_, err = tokenLogin(b, bobTok)
		acctWantErr(t, err, 403, "M_FORBIDDEN")
	})
}

func TestLoginTokenExpiryWithoutUIA(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e, func(c *config.Config) {
			no := false
			c.LoginViaExistingSession = config.LoginViaExistingSession{Enabled: true, RequireUIAuth: &no,
				TokenTimeout: config.Duration(300 * time.Millisecond)}
		})
		alice, bob := newRoomUser(t, b, "alice"), newRoomUser(t, b, "bob")
		// Without require_ui_auth the token comes at once.
		r := acctDo(t, b, "POST", getTokenPath, alice.tok, map[string]any{})
		r.want(t, 200, "")
		if r.body["expires_in_ms"] != 300.0 {
			t.Fatalf("expires_in_ms: %v", r.body)
		}
		time.Sleep(400 * time.Millisecond)
		_, err := tokenLogin(b, r.body["login_token"].(string))
		acctWantErr(t, err, 403, "M_FORBIDDEN")

		r = acctDo(t, b, "POST", getTokenPath, bob.tok, map[string]any{})
		r.want(t, 200, "")
		if login, err := tokenLogin(b, r.body["login_token"].(string)); err != nil || login.UserID != bob.id {
			t.Fatalf("login within the timeout: %+v %v", login, err)
		}
	})
}
