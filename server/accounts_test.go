package server_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/server/servertest"
	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// These tests drive a real server over HTTP on every storage engine, with
// mautrix-go where a client library would be used and plain net/http where
// the raw status, headers or UIA body matter.

const acctPW = "correct horse battery"

// acctClient returns a mautrix client for the bundle, signed in with token.
func acctClient(t *testing.T, b *servertest.Bundle, token string) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(b.URL, "", token)
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// acctRegister creates an account through the dummy UIA flow, as a client does.
func acctRegister(t *testing.T, b *servertest.Bundle, user string) *mautrix.RespRegister {
	t.Helper()
	resp, err := acctClient(t, b, "").RegisterDummy(t.Context(), &mautrix.ReqRegister[any]{Username: user, Password: acctPW})
	if err != nil {
		t.Fatalf("register %s: %v", user, err)
	}
	return resp
}

// acctLogin signs in with the m.id.user identifier.
func acctLogin(t *testing.T, b *servertest.Bundle, user, password, deviceID string) *mautrix.RespLogin {
	t.Helper()
	resp, err := acctClient(t, b, "").Login(t.Context(), &mautrix.ReqLogin{
		Type:       mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: user},
		Password:   password, DeviceID: id.DeviceID(deviceID),
	})
	if err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	return resp
}

// acctReply is a raw HTTP answer.
type acctReply struct {
	status int
	header http.Header
	body   map[string]any
}

func (r acctReply) errcode() string { s, _ := r.body["errcode"].(string); return s }

// acctDo sends a raw request; body may be a string (sent as is) or a value to
// encode as JSON.
func acctDo(t *testing.T, b *servertest.Bundle, method, path, token string, body any) acctReply {
	t.Helper()
	var rd io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(v)
	default:
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, b.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := acctReply{status: res.StatusCode, header: res.Header, body: map[string]any{}}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out.body); err != nil {
			t.Fatalf("%s %s: answer is not a JSON object: %q", method, path, raw)
		}
	}
	return out
}

func (r acctReply) want(t *testing.T, status int, errcode string) {
	t.Helper()
	if r.status != status || r.errcode() != errcode {
		t.Fatalf("got %d %q (%v), want %d %q", r.status, r.errcode(), r.body, status, errcode)
	}
}

// acctWantErr checks a mautrix error's status and errcode.
func acctWantErr(t *testing.T, err error, status int, errcode string) {
	t.Helper()
	var he mautrix.HTTPError
	if !errors.As(err, &he) || he.Response == nil {
		t.Fatalf("got %v, want HTTP %d %s", err, status, errcode)
	}
	code := ""
	if he.RespError != nil {
		code = he.RespError.ErrCode
	}
	if he.Response.StatusCode != status || code != errcode {
		t.Fatalf("got HTTP %d %s (%v), want %d %s", he.Response.StatusCode, code, err, status, errcode)
	}
}

func acctPasswordAuth(user, password, session string) map[string]any {
	a := map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": user}, "password": password}
	if session != "" {
		a["session"] = session
	}
	return a
}

// acctUIA sends body without auth, expects the 401 challenge, then sends it
// again with auth (built from the session) and returns that answer.
func acctUIA(t *testing.T, b *servertest.Bundle, method, path, token string, body map[string]any, auth func(session string) map[string]any) acctReply {
	t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	first := acctDo(t, b, method, path, token, body)
	if first.status != http.StatusUnauthorized || first.body["session"] == nil || first.body["flows"] == nil {
		t.Fatalf("%s %s without auth: got %d %v, want the 401 UIA challenge", method, path, first.status, first.body)
	}
	next := map[string]any{}
	for k, v := range body {
		next[k] = v
	}
	next["auth"] = auth(first.body["session"].(string))
	return acctDo(t, b, method, path, token, next)
}

func TestAccountRegisterLoginWhoami(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e, func(c *config.Config) { c.PublicBaseURL = "https://matrix.hearth.test/" })
		ctx := t.Context()
		reg := acctRegister(t, b, "Alice")
		if reg.UserID != "@alice:hearth.test" || reg.AccessToken == "" || reg.DeviceID == "" {
			t.Fatalf("register: %+v", reg)
		}
		who, err := acctClient(t, b, reg.AccessToken).Whoami(ctx)
		if err != nil || who.UserID != reg.UserID || who.DeviceID != reg.DeviceID {
			t.Fatalf("whoami: %+v %v", who, err)
		}
		raw := acctDo(t, b, "GET", "/_matrix/client/v3/account/whoami", reg.AccessToken, nil)
		if raw.body["is_guest"] != false {
			t.Fatalf("whoami is_guest: %v", raw.body)
		}

		flows, err := acctClient(t, b, "").GetLoginFlows(ctx)
		if err != nil || len(flows.Flows) != 1 || flows.Flows[0].Type != mautrix.AuthTypePassword {
			t.Fatalf("login flows: %+v %v", flows, err)
		}
		// Both identifier forms, case-insensitively, as Synapse matches.
		for _, user := range []string{"alice", "ALICE", "@Alice:hearth.test"} {
			l := acctLogin(t, b, user, acctPW, "")
			if l.UserID != reg.UserID || l.DeviceID == reg.DeviceID {
				t.Fatalf("login as %s: %+v", user, l)
			}
			if l.WellKnown == nil || l.WellKnown.Homeserver.BaseURL != "https://matrix.hearth.test" {
				t.Fatalf("login well_known: %+v", l.WellKnown)
			}
		}
		// The legacy top-level user field.
		legacy := acctDo(t, b, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": acctPW})
		if legacy.status != 200 || legacy.body["user_id"] != reg.UserID.String() || legacy.body["home_server"] != "hearth.test" {
			t.Fatalf("legacy login: %d %v", legacy.status, legacy.body)
		}
		// Another server's user is not ours to sign in.
		acctDo(t, b, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
			"identifier": map[string]any{"type": "m.id.user", "user": "@alice:elsewhere.test"}, "password": acctPW}).want(t, 403, "M_FORBIDDEN")

		// Logging in again with a device ID revokes that device's old token.
		first := acctLogin(t, b, "alice", acctPW, "KEEPME")
		second := acctLogin(t, b, "alice", acctPW, "KEEPME")
		if second.DeviceID != "KEEPME" {
			t.Fatalf("device id not kept: %s", second.DeviceID)
		}
		_, err = acctClient(t, b, first.AccessToken).Whoami(ctx)
		acctWantErr(t, err, 401, "M_UNKNOWN_TOKEN")
		if _, err := acctClient(t, b, second.AccessToken).Whoami(ctx); err != nil {
			t.Fatalf("new token on reused device: %v", err)
		}

		// A bcrypt hash written by Synapse ("$2b$") verifies.
		u, err := b.Store.UserByID(ctx, reg.UserID.String())
		if err != nil || !strings.HasPrefix(u.PasswordHash, "$2") {
			t.Fatalf("stored hash: %q %v", u.PasswordHash, err)
		}
		if err := b.Store.SetPasswordHash(ctx, reg.UserID.String(), "$2b$"+u.PasswordHash[4:]); err != nil {
			t.Fatal(err)
		}
		acctLogin(t, b, "alice", acctPW, "")

		// Without a username the server picks the next number.
		gen := acctDo(t, b, "POST", "/_matrix/client/v3/register", "", map[string]any{"password": acctPW, "auth": map[string]any{"type": "m.login.dummy"}})
		gen2 := acctDo(t, b, "POST", "/_matrix/client/v3/register", "", map[string]any{"password": acctPW, "auth": map[string]any{"type": "m.login.dummy"}})
		if gen.body["user_id"] != "@1:hearth.test" || gen2.body["user_id"] != "@2:hearth.test" {
			t.Fatalf("generated IDs: %v %v", gen.body, gen2.body)
		}
		// inhibit_login creates the account without a session.
		inh := acctDo(t, b, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "quiet", "password": acctPW,
			"inhibit_login": true, "auth": map[string]any{"type": "m.login.dummy"}})
		if inh.status != 200 || inh.body["user_id"] != "@quiet:hearth.test" || inh.body["access_token"] != nil {
			t.Fatalf("inhibit_login: %d %v", inh.status, inh.body)
		}
		// refresh_token and device_id on registration.
		rr := acctDo(t, b, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "fresh", "password": acctPW,
			"device_id": "MYDEVICE", "refresh_token": true, "auth": map[string]any{"type": "m.login.dummy"}})
		if rr.status != 200 || rr.body["device_id"] != "MYDEVICE" || rr.body["refresh_token"] == nil || rr.body["expires_in_ms"] != float64(300_000) {
			t.Fatalf("register with refresh_token: %d %v", rr.status, rr.body)
		}
		// /register/available
		if _, err := acctClient(t, b, "").RegisterAvailable(ctx, "newname"); err != nil {
			t.Fatalf("available: %v", err)
		}
		_, err = acctClient(t, b, "").RegisterAvailable(ctx, "alice")
		acctWantErr(t, err, 400, "M_USER_IN_USE")
		_, err = acctClient(t, b, "").RegisterAvailable(ctx, "al ice")
		acctWantErr(t, err, 400, "M_INVALID_USERNAME")
	})
}

func TestAccountPasswordChange(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		reg := acctRegister(t, b, "alice")
		other := acctLogin(t, b, "alice", acctPW, "OTHER")
		const newPW = "a much better passphrase"

		// Wrong current password: the 401 challenge with errcode.
		r := acctUIA(t, b, "POST", "/_matrix/client/v3/account/password", reg.AccessToken, map[string]any{"new_password": newPW},
			func(s string) map[string]any { return acctPasswordAuth("alice", "wrong", s) })
		if r.status != 401 || r.errcode() != "M_FORBIDDEN" || r.body["flows"] == nil {
			t.Fatalf("wrong password stage: %d %v", r.status, r.body)
		}
		r = acctUIA(t, b, "POST", "/_matrix/client/v3/account/password", reg.AccessToken, map[string]any{"new_password": newPW},
			func(s string) map[string]any { return acctPasswordAuth("alice", acctPW, s) })
		r.want(t, 200, "")

		// The other device is gone, the caller's stays.
		_, err := acctClient(t, b, other.AccessToken).Whoami(ctx)
		acctWantErr(t, err, 401, "M_UNKNOWN_TOKEN")
		if _, err := acctClient(t, b, reg.AccessToken).Whoami(ctx); err != nil {
			t.Fatalf("caller's token after password change: %v", err)
		}
		devs, err := acctClient(t, b, reg.AccessToken).GetDevicesInfo(ctx)
		if err != nil || len(devs.Devices) != 1 || devs.Devices[0].DeviceID != reg.DeviceID {
			t.Fatalf("devices after password change: %+v %v", devs, err)
		}
		// Old password refused, new one accepted.
		_, err = acctClient(t, b, "").Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: acctPW})
		acctWantErr(t, err, 403, "M_FORBIDDEN")
		kept := acctLogin(t, b, "alice", newPW, "")

		// logout_devices: false keeps the other sessions; no access token:
		// the password stage alone identifies the user.
		r = acctUIA(t, b, "POST", "/_matrix/client/v3/account/password", "", map[string]any{"new_password": acctPW, "logout_devices": false},
			func(s string) map[string]any { return acctPasswordAuth("@alice:hearth.test", newPW, s) })
		r.want(t, 200, "")
		if _, err := acctClient(t, b, kept.AccessToken).Whoami(ctx); err != nil {
			t.Fatalf("logout_devices false revoked a token: %v", err)
		}
		acctLogin(t, b, "alice", acctPW, "")
	})
}

func TestAccountDevices(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		reg := acctRegister(t, b, "alice")
		phone := acctLogin(t, b, "alice", acctPW, "PHONE")
		bob := acctRegister(t, b, "bob")
		cli := acctClient(t, b, reg.AccessToken)

		devs, err := cli.GetDevicesInfo(ctx)
		if err != nil || len(devs.Devices) != 2 {
			t.Fatalf("devices: %+v %v", devs, err)
		}
		if err := cli.SetDeviceInfo(ctx, "PHONE", &mautrix.ReqDeviceInfo{DisplayName: "Alice's phone"}); err != nil {
			t.Fatal(err)
		}
		d, err := cli.GetDeviceInfo(ctx, "PHONE")
		if err != nil || d.DisplayName != "Alice's phone" {
			t.Fatalf("renamed device: %+v %v", d, err)
		}
		// Another user's device and an unknown one are both not found.
		_, err = cli.GetDeviceInfo(ctx, bob.DeviceID)
		acctWantErr(t, err, 404, "M_NOT_FOUND")
		err = cli.SetDeviceInfo(ctx, "NOSUCH", &mautrix.ReqDeviceInfo{DisplayName: "x"})
		acctWantErr(t, err, 404, "M_NOT_FOUND")
		acctDo(t, b, "PUT", "/_matrix/client/v3/devices/PHONE", reg.AccessToken, map[string]any{"display_name": strings.Repeat("x", 101)}).want(t, 400, "M_INVALID_PARAM")

		// DELETE needs the password: a bare request is the challenge.
		err = cli.DeleteDevice(ctx, "PHONE", &mautrix.ReqDeleteDevice[any]{})
		acctWantErr(t, err, 401, "")
		// Bob's password proves Bob, not Alice: refused outright.
		r := acctUIA(t, b, "DELETE", "/_matrix/client/v3/devices/PHONE", reg.AccessToken, nil,
			func(s string) map[string]any { return acctPasswordAuth("bob", acctPW, s) })
		r.want(t, 403, "M_FORBIDDEN")
		r = acctUIA(t, b, "DELETE", "/_matrix/client/v3/devices/PHONE", reg.AccessToken, nil,
			func(s string) map[string]any { return acctPasswordAuth("alice", acctPW, s) })
		r.want(t, 200, "")
		_, err = acctClient(t, b, phone.AccessToken).Whoami(ctx)
		acctWantErr(t, err, 401, "M_UNKNOWN_TOKEN")
		_, err = cli.GetDeviceInfo(ctx, "PHONE")
		acctWantErr(t, err, 404, "M_NOT_FOUND")

		// delete_devices through mautrix: the session from the challenge,
		// then the password; unknown IDs are ignored.
		l1, l2 := acctLogin(t, b, "alice", acctPW, "L1"), acctLogin(t, b, "alice", acctPW, "L2")
		req := &mautrix.ReqDeleteDevices[any]{Devices: []id.DeviceID{"L1", "L2", "UNKNOWN"}}
		err = cli.DeleteDevices(ctx, req)
		var he mautrix.HTTPError
		if !errors.As(err, &he) || he.Response.StatusCode != 401 {
			t.Fatalf("delete_devices without auth: %v", err)
		}
		session := acctDo(t, b, "POST", "/_matrix/client/v3/delete_devices", reg.AccessToken, map[string]any{"devices": []string{"L1", "L2", "UNKNOWN"}}).body["session"].(string)
		req.Auth = acctPasswordAuth("alice", acctPW, session)
		if err := cli.DeleteDevices(ctx, req); err != nil {
			t.Fatalf("delete_devices: %v", err)
		}
		for _, tok := range []string{l1.AccessToken, l2.AccessToken} {
			_, err = acctClient(t, b, tok).Whoami(ctx)
			acctWantErr(t, err, 401, "M_UNKNOWN_TOKEN")
		}
		devs, err = cli.GetDevicesInfo(ctx)
		if err != nil || len(devs.Devices) != 1 || devs.Devices[0].DeviceID != id.DeviceID(reg.DeviceID) {
			t.Fatalf("devices left: %+v %v", devs, err)
		}
		acctDo(t, b, "POST", "/_matrix/client/v3/delete_devices", reg.AccessToken, map[string]any{}).want(t, 400, "M_MISSING_PARAM")
	})
}

func TestAccountLogout(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		reg := acctRegister(t, b, "alice")
		a, c := acctLogin(t, b, "alice", acctPW, "A"), acctLogin(t, b, "alice", acctPW, "C")

		if _, err := acctClient(t, b, a.AccessToken).Logout(ctx); err != nil {
			t.Fatal(err)
		}
		_, err := acctClient(t, b, a.AccessToken).Whoami(ctx)
		acctWantErr(t, err, 401, "M_UNKNOWN_TOKEN")
		// Logout deletes the device too.
		if _, err := b.Store.Device(ctx, reg.UserID.String(), "A"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("device after logout: %v", err)
		}
		if _, err := acctClient(t, b, c.AccessToken).Whoami(ctx); err != nil {
			t.Fatalf("other device after logout: %v", err)
		}

		if _, err := acctClient(t, b, c.AccessToken).LogoutAll(ctx); err != nil {
			t.Fatal(err)
		}
		for _, tok := range []string{reg.AccessToken, c.AccessToken} {
			_, err := acctClient(t, b, tok).Whoami(ctx)
			acctWantErr(t, err, 401, "M_UNKNOWN_TOKEN")
		}
		if ds, err := b.Store.Devices(ctx, reg.UserID.String()); err != nil || len(ds) != 0 {
			t.Fatalf("devices after logout/all: %v %v", ds, err)
		}
	})
}

func TestAccountRefresh(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e, func(c *config.Config) {
			c.RefreshableAccessTokenLifetime = config.Duration(1500 * time.Millisecond)
		})
		ctx := t.Context()
		acctRegister(t, b, "alice")
		l, err := acctClient(t, b, "").Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: acctPW, RefreshToken: true})
		if err != nil || l.RefreshToken == "" || l.ExpiresInMS != 1500 {
			t.Fatalf("refreshable login: %+v %v", l, err)
		}
		r := acctDo(t, b, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": l.RefreshToken})
		r.want(t, 200, "")
		next, _ := r.body["access_token"].(string)
		if next == "" || r.body["refresh_token"] == nil || r.body["expires_in_ms"] != float64(1500) {
			t.Fatalf("refresh answer: %v", r.body)
		}
		_, err = acctClient(t, b, l.AccessToken).Whoami(ctx)
		acctWantErr(t, err, 401, "M_UNKNOWN_TOKEN")
		if _, err := acctClient(t, b, next).Whoami(ctx); err != nil {
			t.Fatalf("refreshed token: %v", err)
		}
		// A refresh token is single-use.
		acctDo(t, b, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": l.RefreshToken}).want(t, 401, "M_UNKNOWN_TOKEN")
		acctDo(t, b, "POST", "/_matrix/client/v3/refresh", "", map[string]any{}).want(t, 400, "M_MISSING_PARAM")

		// Once the access token expires: soft logout, then refresh works.
		time.Sleep(1600 * time.Millisecond)
		exp := acctDo(t, b, "GET", "/_matrix/client/v3/account/whoami", next, nil)
		exp.want(t, 401, "M_UNKNOWN_TOKEN")
		if exp.body["soft_logout"] != true {
			t.Fatalf("expired token: %v", exp.body)
		}
		acctDo(t, b, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": r.body["refresh_token"]}).want(t, 200, "")
	})
}

func TestAccountDeactivate(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		reg := acctRegister(t, b, "alice")
		r := acctUIA(t, b, "POST", "/_matrix/client/v3/account/deactivate", reg.AccessToken, map[string]any{"erase": true},
			func(s string) map[string]any { return acctPasswordAuth("alice", acctPW, s) })
		r.want(t, 200, "")
		if r.body["id_server_unbind_result"] != "no-support" {
			t.Fatalf("deactivate answer: %v", r.body)
		}
		_, err := acctClient(t, b, reg.AccessToken).Whoami(ctx)
		acctWantErr(t, err, 401, "M_UNKNOWN_TOKEN")
		_, err = acctClient(t, b, "").Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: acctPW})
		acctWantErr(t, err, 403, "M_USER_DEACTIVATED")
		u, err := b.Store.UserByID(ctx, reg.UserID.String())
		if err != nil || !u.Deactivated || !u.Erased {
			t.Fatalf("user after deactivate: %+v %v", u, err)
		}
		// The name is never given out again.
		_, err = acctClient(t, b, "").RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "alice", Password: acctPW})
		acctWantErr(t, err, 400, "M_USER_IN_USE")
	})
}

func TestAccountRegistrationTokens(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e, func(c *config.Config) { c.RegistrationRequiresToken = true })
		ctx := t.Context()
		one := 1
		if err := b.Store.CreateRegistrationToken(ctx, &storage.RegistrationToken{Token: "abc.DEF-1", UsesAllowed: &one}); err != nil {
			t.Fatal(err)
		}
		validity := func(tok string) any {
			r := acctDo(t, b, "GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token="+tok, "", nil)
			r.want(t, 200, "")
			return r.body["valid"]
		}
		if validity("abc.DEF-1") != true || validity("nope") != false {
			t.Fatal("validity before use")
		}
		// mautrix's dummy registration finds no dummy flow here.
		if _, err := acctClient(t, b, "").RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "alice", Password: acctPW}); err == nil {
			t.Fatal("dummy registration succeeded on a token-only server")
		}
		body := map[string]any{"username": "alice", "password": acctPW}
		first := acctDo(t, b, "POST", "/_matrix/client/v3/register", "", body)
		first.want(t, 401, "")
		flows, _ := json.Marshal(first.body["flows"])
		if string(flows) != `[{"stages":["m.login.registration_token"]}]` {
			t.Fatalf("flows: %s", flows)
		}
		session := first.body["session"].(string)
		body["auth"] = map[string]any{"type": "m.login.registration_token", "token": "wrong", "session": session}
		acctDo(t, b, "POST", "/_matrix/client/v3/register", "", body).want(t, 401, "M_UNAUTHORIZED")
		body["auth"] = map[string]any{"type": "m.login.registration_token", "token": "abc.DEF-1", "session": session}
		ok := acctDo(t, b, "POST", "/_matrix/client/v3/register", "", body)
		ok.want(t, 200, "")
		if ok.body["user_id"] != "@alice:hearth.test" {
			t.Fatalf("registered: %v", ok.body)
		}
		tok, err := b.Store.RegistrationTokenByID(ctx, "abc.DEF-1")
		if err != nil || tok.Completed != 1 || tok.Pending != 0 {
			t.Fatalf("token after use: %+v %v", tok, err)
		}
		if validity("abc.DEF-1") != false {
			t.Fatal("used-up token still valid")
		}
		// The single use is spent.
		r := acctUIA(t, b, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "bob", "password": acctPW},
			func(s string) map[string]any {
				return map[string]any{"type": "m.login.registration_token", "token": "abc.DEF-1", "session": s}
			})
		r.want(t, 401, "M_UNAUTHORIZED")
	})
}

func TestAccountUIASessions(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		reg := acctRegister(t, b, "alice")
		acctLogin(t, b, "alice", acctPW, "X")
		acctLogin(t, b, "alice", acctPW, "Y")

		// The challenge: flows, params, session, and no errcode.
		first := acctDo(t, b, "POST", "/_matrix/client/v3/delete_devices", reg.AccessToken, map[string]any{"devices": []string{"X"}})
		first.want(t, 401, "")
		session, _ := first.body["session"].(string)
		flows, _ := json.Marshal(first.body["flows"])
		if session == "" || string(flows) != `[{"stages":["m.login.password"]}]` || first.body["params"] == nil {
			t.Fatalf("challenge: %v", first.body)
		}
		if _, _, err := b.Store.UIASession(ctx, session); err != nil {
			t.Fatalf("session not in the database: %v", err)
		}
		// The session is bound to its operation: other devices, or another
		// endpoint, are refused.
		acctDo(t, b, "POST", "/_matrix/client/v3/delete_devices", reg.AccessToken, map[string]any{"devices": []string{"Y"},
			"auth": acctPasswordAuth("alice", acctPW, session)}).want(t, 403, "M_FORBIDDEN")
		acctDo(t, b, "POST", "/_matrix/client/v3/account/deactivate", reg.AccessToken, map[string]any{
			"auth": acctPasswordAuth("alice", acctPW, session)}).want(t, 403, "M_FORBIDDEN")
		acctDo(t, b, "POST", "/_matrix/client/v3/delete_devices", reg.AccessToken, map[string]any{"devices": []string{"X"},
			"auth": acctPasswordAuth("alice", acctPW, "no-such-session")}).want(t, 400, "M_UNKNOWN")
		// A failed stage: 401 with errcode and the same session.
		bad := acctDo(t, b, "POST", "/_matrix/client/v3/delete_devices", reg.AccessToken, map[string]any{"devices": []string{"X"},
			"auth": acctPasswordAuth("alice", "wrong", session)})
		bad.want(t, 401, "M_FORBIDDEN")
		if bad.body["session"] != session || bad.body["flows"] == nil {
			t.Fatalf("failed stage: %v", bad.body)
		}
		// Only auth: the bound body (device X) is what gets done.
		acctDo(t, b, "POST", "/_matrix/client/v3/delete_devices", reg.AccessToken, map[string]any{
			"auth": acctPasswordAuth("alice", acctPW, session)}).want(t, 200, "")
		if _, err := b.Store.Device(ctx, reg.UserID.String(), "X"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("device X: %v", err)
		}
		if _, err := b.Store.Device(ctx, reg.UserID.String(), "Y"); err != nil {
			t.Fatalf("device Y: %v", err)
		}

		// Registration: a stage out of order is refused within the 401.
		r := acctDo(t, b, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "carol", "password": acctPW,
			"auth": map[string]any{"type": "m.login.password"}})
		r.want(t, 401, "M_FORBIDDEN")
		// Element's way: probe with {}, then send the body with auth.
		probe := acctDo(t, b, "POST", "/_matrix/client/v3/register", "", map[string]any{})
		probe.want(t, 401, "")
		done := acctDo(t, b, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "carol", "password": acctPW,
			"initial_device_display_name": "Carol's laptop", "auth": map[string]any{"type": "m.login.dummy", "session": probe.body["session"]}})
		done.want(t, 200, "")
		d, err := b.Store.Device(ctx, "@carol:hearth.test", done.body["device_id"].(string))
		if err != nil || d.DisplayName != "Carol's laptop" {
			t.Fatalf("carol's device: %+v %v", d, err)
		}
		// The session is used up.
		acctDo(t, b, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "dave", "password": acctPW,
			"auth": map[string]any{"type": "m.login.dummy", "session": probe.body["session"]}}).want(t, 400, "M_UNKNOWN")
		// Password first, then auth only: the bound username and password are used.
		s2 := acctDo(t, b, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "erin", "password": acctPW})
		s2.want(t, 401, "")
		acctDo(t, b, "POST", "/_matrix/client/v3/register", "", map[string]any{
			"auth": map[string]any{"type": "m.login.dummy", "session": s2.body["session"]}}).want(t, 200, "")
		acctLogin(t, b, "erin", acctPW, "")
	})
}

func TestAccountRateLimits(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		slow := config.RateLimit{PerSecond: 0.01, BurstCount: 2}
		loginBody := func(user, password string) map[string]any {
			return map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": user}, "password": password}
		}
		wantLimited := func(t *testing.T, r acctReply) {
			t.Helper()
			r.want(t, 429, "M_LIMIT_EXCEEDED")
			ms, _ := r.body["retry_after_ms"].(float64)
			secs, err := strconv.Atoi(r.header.Get("Retry-After"))
			// 0.01/s: the next token is ~100 s away.
			if ms < 50_000 || ms > 100_000 || err != nil || secs != int((int64(ms)+999)/1000) {
				t.Fatalf("retry_after_ms %v, Retry-After %q", r.body["retry_after_ms"], r.header.Get("Retry-After"))
			}
		}

		t.Run("address", func(t *testing.T) {
			b := servertest.Start(t, e, func(c *config.Config) { c.RCLogin.Address = slow })
			acctRegister(t, b, "ann")
			for i := 0; i < 2; i++ {
				acctDo(t, b, "POST", "/_matrix/client/v3/login", "", loginBody("ann", acctPW)).want(t, 200, "")
			}
			wantLimited(t, acctDo(t, b, "POST", "/_matrix/client/v3/login", "", loginBody("ann", acctPW)))
		})
		t.Run("account", func(t *testing.T) {
			b := servertest.Start(t, e, func(c *config.Config) { c.RCLogin.Account = slow })
			acctRegister(t, b, "amy")
			acctRegister(t, b, "ben")
			for i := 0; i < 2; i++ {
				acctDo(t, b, "POST", "/_matrix/client/v3/login", "", loginBody("amy", acctPW)).want(t, 200, "")
			}
			wantLimited(t, acctDo(t, b, "POST", "/_matrix/client/v3/login", "", loginBody("@amy:hearth.test", acctPW)))
			// Another account is not affected.
			acctDo(t, b, "POST", "/_matrix/client/v3/login", "", loginBody("ben", acctPW)).want(t, 200, "")
		})
		t.Run("failed_attempts", func(t *testing.T) {
			b := servertest.Start(t, e, func(c *config.Config) { c.RCLogin.FailedAttempts = slow })
			acctRegister(t, b, "fay")
			// Successes cost nothing.
			for i := 0; i < 3; i++ {
				acctDo(t, b, "POST", "/_matrix/client/v3/login", "", loginBody("fay", acctPW)).want(t, 200, "")
			}
			for i := 0; i < 2; i++ {
				acctDo(t, b, "POST", "/_matrix/client/v3/login", "", loginBody("fay", "wrong")).want(t, 403, "M_FORBIDDEN")
			}
			// Now even the right password waits, at /login and at a UIA
			// password stage alike.
			wantLimited(t, acctDo(t, b, "POST", "/_matrix/client/v3/login", "", loginBody("fay", acctPW)))
			wantLimited(t, acctUIA(t, b, "POST", "/_matrix/client/v3/account/password", "", map[string]any{"new_password": "another long one"},
				func(s string) map[string]any { return acctPasswordAuth("fay", acctPW, s) }))
		})
		t.Run("registration", func(t *testing.T) {
			b := servertest.Start(t, e, func(c *config.Config) { c.RCRegistration = slow })
			// UIA round trips are free; each account created costs one.
			acctRegister(t, b, "rae")
			acctRegister(t, b, "rob")
			wantLimited(t, acctDo(t, b, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "ric", "password": acctPW}))
		})
	})
}

// TestErrors is the error table: each wrong request and the standard error
// it must get.
func TestAccountErrors(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e, func(c *config.Config) {
			c.PasswordConfig.Policy = config.PasswordPolicy{Enabled: true, MinimumLength: 8}
		})
		reg := acctRegister(t, b, "alice")
		dummy := map[string]any{"type": "m.login.dummy"}
		tests := []struct {
			name, method, path, token string
			body                      any
			status                    int
			errcode                   string
		}{
			{"malformed JSON", "POST", "/_matrix/client/v3/login", "", `{"type": "m.login.password",`, 400, "M_NOT_JSON"},
			{"not an object", "POST", "/_matrix/client/v3/register", "", `["alice"]`, 400, "M_BAD_JSON"},
			{"missing password", "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "alice"}, 400, "M_MISSING_PARAM"},
			{"missing acctLogin type", "POST", "/_matrix/client/v3/login", "", map[string]any{"user": "alice", "password": acctPW}, 400, "M_MISSING_PARAM"},
			{"wrong field type", "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": 7}, 400, "M_BAD_JSON"},
			{"register without password", "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "nopw", "auth": dummy}, 400, "M_MISSING_PARAM"},
			{"taken name", "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "alice", "password": acctPW}, 400, "M_USER_IN_USE"},
			{"taken name, other case", "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "ALICE", "password": acctPW}, 400, "M_USER_IN_USE"},
			{"invalid name", "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "al!ce", "password": acctPW}, 400, "M_INVALID_USERNAME"},
			{"name too long", "POST", "/_matrix/client/v3/register", "", map[string]any{"username": strings.Repeat("a", 250), "password": acctPW}, 400, "M_INVALID_USERNAME"},
			{"numeric name", "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "12345", "password": acctPW}, 400, "M_INVALID_USERNAME"},
			{"weak password", "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "bob", "password": "short"}, 400, "M_WEAK_PASSWORD"},
			{"guest registration", "POST", "/_matrix/client/v3/register?kind=guest", "", map[string]any{}, 403, "M_GUEST_ACCESS_FORBIDDEN"},
			{"wrong password", "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "nope"}, 403, "M_FORBIDDEN"},
			{"unknown user", "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "nobody", "password": acctPW}, 403, "M_FORBIDDEN"},
			{"unknown acctLogin type", "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.magic"}, 400, "M_UNKNOWN"},
			{"third-party identifier", "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
				"identifier": map[string]any{"type": "m.id.thirdparty", "medium": "email", "address": "a@b.c"}, "password": acctPW}, 403, "M_FORBIDDEN"},
			{"unknown token", "GET", "/_matrix/client/v3/account/whoami", "syt_nosuchtoken", nil, 401, "M_UNKNOWN_TOKEN"},
			{"missing token", "GET", "/_matrix/client/v3/devices", "", nil, 401, "M_MISSING_TOKEN"},
			{"bad token on password change", "POST", "/_matrix/client/v3/account/password", "syt_nosuchtoken", map[string]any{"new_password": acctPW}, 401, "M_UNKNOWN_TOKEN"},
			{"unknown endpoint", "GET", "/_matrix/client/v3/no/such/endpoint", "", nil, 404, "M_UNRECOGNIZED"},
			{"unknown device", "GET", "/_matrix/client/v3/devices/NOPE", reg.AccessToken, nil, 404, "M_NOT_FOUND"},
			{"delete unknown device", "DELETE", "/_matrix/client/v3/devices/NOPE", reg.AccessToken, nil, 404, "M_NOT_FOUND"},
			{"password change without new_password", "POST", "/_matrix/client/v3/account/password", reg.AccessToken, map[string]any{}, 400, "M_MISSING_PARAM"},
			{"validity without token", "GET", "/_matrix/client/v1/register/m.login.registration_token/validity", "", nil, 400, "M_MISSING_PARAM"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				acctDo(t, b, tc.method, tc.path, tc.token, tc.body).want(t, tc.status, tc.errcode)
			})
		}

		t.Run("CORS pre-flight", func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), "OPTIONS", b.URL+"/_matrix/client/v3/login", nil)
			req.Header.Set("Origin", "https://app.element.io")
			req.Header.Set("Access-Control-Request-Method", "POST")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			h := res.Header
			if res.StatusCode >= 300 || h.Get("Access-Control-Allow-Origin") != "*" ||
				!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") ||
				!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") {
				t.Fatalf("pre-flight: %d %v", res.StatusCode, h)
			}
		})
	})
}

func TestAccountRegistrationDisabled(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e, func(c *config.Config) {
			c.EnableRegistration = false
			no := false
			c.PasswordConfig.Enabled = &no
		})
		acctDo(t, b, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "alice", "password": acctPW}).want(t, 403, "M_FORBIDDEN")
		acctDo(t, b, "GET", "/_matrix/client/v3/register/available?username=alice", "", nil).want(t, 403, "M_FORBIDDEN")
		acctDo(t, b, "GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=x", "", nil).want(t, 403, "M_FORBIDDEN")
		// With password acctLogin off, /login offers nothing and refuses it.
		flows := acctDo(t, b, "GET", "/_matrix/client/v3/login", "", nil)
		if f, _ := flows.body["flows"].([]any); flows.status != 200 || len(f) != 0 {
			t.Fatalf("flows: %v", flows.body)
		}
		acctDo(t, b, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": acctPW}).want(t, 400, "M_UNKNOWN")
	})
}

// TestDeviceNotificationSettingsGoWithTheDevice (MSC3890): a device's
// local notification settings, in account data named after it, are
// deleted with the device.
func TestDeviceNotificationSettingsGoWithTheDevice(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		reg := acctRegister(t, b, "alice")
		two := acctLogin(t, b, "alice", acctPW, "TWO")
		typ := "org.matrix.msc3890.local_notification_settings.TWO"
		path := "/_matrix/client/v3/user/" + esc(string(reg.UserID)) + "/account_data/" + typ
		acctDo(t, b, "PUT", path, reg.AccessToken, map[string]any{"is_silenced": true}).want(t, 200, "")
		other := "/_matrix/client/v3/user/" + esc(string(reg.UserID)) + "/account_data/org.matrix.msc3890.local_notification_settings." + string(reg.DeviceID)
		acctDo(t, b, "PUT", other, reg.AccessToken, map[string]any{"is_silenced": false}).want(t, 200, "")
		acctDo(t, b, "GET", path, reg.AccessToken, nil).want(t, 200, "")
		acctDo(t, b, "POST", "/_matrix/client/v3/logout", two.AccessToken, map[string]any{}).want(t, 200, "")
		acctDo(t, b, "GET", path, reg.AccessToken, nil).want(t, 404, "M_NOT_FOUND")
		acctDo(t, b, "GET", other, reg.AccessToken, nil).want(t, 200, "")
	})
}

// TestAccountRefreshRetry: /refresh may be retried with the same refresh
// token until the new pair is used (spec: "Refreshing access tokens": the
// old refresh token stays valid until the new access token or refresh
// token is used); the unused pair is replaced.
func TestAccountRefreshRetry(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		acctRegister(t, b, "alice")
		l, err := acctClient(t, b, "").Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: acctPW, RefreshToken: true})
		if err != nil {
			t.Fatal(err)
		}
		first := acctDo(t, b, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": l.RefreshToken})
		first.want(t, 200, "")
		second := acctDo(t, b, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": l.RefreshToken})
		second.want(t, 200, "")
		_, err = acctClient(t, b, first.body["access_token"].(string)).Whoami(ctx)
		acctWantErr(t, err, 401, "M_UNKNOWN_TOKEN")
		acctDo(t, b, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": first.body["refresh_token"]}).want(t, 401, "M_UNKNOWN_TOKEN")
		if _, err := acctClient(t, b, second.body["access_token"].(string)).Whoami(ctx); err != nil {
			t.Fatalf("the retried pair: %v", err)
		}
		acctDo(t, b, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": l.RefreshToken}).want(t, 401, "M_UNKNOWN_TOKEN")
		acctDo(t, b, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": second.body["refresh_token"]}).want(t, 200, "")

		// Using the new refresh token (without the access token) retires
		// the old one too.
		third := acctDo(t, b, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": second.body["refresh_token"]})
		third.want(t, 200, "")
		fourth := acctDo(t, b, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": third.body["refresh_token"]})
		fourth.want(t, 200, "")
		acctDo(t, b, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": second.body["refresh_token"]}).want(t, 401, "M_UNKNOWN_TOKEN")
	})
}
