package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/synapseadmin"

	"hearth/server/secret"
	"hearth/server/servertest"
	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// seedUser creates an account and a logged-in device straight in the store,
// returning its access token: admin API tests need an admin before any
// admin exists.
func seedUser(t *testing.T, st *storage.Store, localpart, password string, admin bool) string {
	t.Helper()
	ctx := context.Background()
	hash, err := secret.HashPassword(password, 4)
	if err != nil {
		t.Fatal(err)
	}
	userID := "@" + localpart + ":hearth.test"
	if err := st.CreateUser(ctx, &storage.User{UserID: userID, Localpart: localpart, PasswordHash: hash, IsAdmin: admin}); err != nil {
		t.Fatal(err)
	}
	tok := secret.Token("syt_")
	if err := st.CreateLogin(ctx, storage.NewLogin{UserID: userID, DeviceID: "SEEDDEV", AccessToken: tok, IP: "127.0.0.1", UserAgent: "seed"}); err != nil {
		t.Fatal(err)
	}
	return tok
}

// call sends a JSON request and decodes the JSON answer.
func call(t *testing.T, method, url, token string, body any) (int, map[string]any) {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, url, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func adminClient(t *testing.T, url, token string) *synapseadmin.Client {
	t.Helper()
	cli, err := mautrix.NewClient(url, "", token)
	if err != nil {
		t.Fatal(err)
	}
	return &synapseadmin.Client{Client: cli}
}

func TestAdminUsersAPI(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := context.Background()
		adminTok := seedUser(t, b.Store, "root", "rootpw", true)
		userTok := seedUser(t, b.Store, "mallory", "mallorypw", false)
		adm := adminClient(t, b.URL, adminTok)
		base := b.URL + "/_synapse/admin"

		// Non-admins get 403 M_FORBIDDEN on every admin endpoint.
		for _, ep := range []struct{ method, path string }{
			{"GET", "/v1/server_version"}, {"GET", "/v2/users"}, {"GET", "/v2/users/@root:hearth.test"},
			{"PUT", "/v2/users/@x:hearth.test"}, {"POST", "/v1/deactivate/@root:hearth.test"},
			{"POST", "/v1/reset_password/@root:hearth.test"}, {"GET", "/v1/whois/@root:hearth.test"},
			{"POST", "/v1/users/@root:hearth.test/login"}, {"GET", "/v1/registration_tokens"},
			{"POST", "/v1/registration_tokens/new"}, {"GET", "/v2/users/@root:hearth.test/devices"},
		} {
			status, body := call(t, ep.method, base+ep.path, userTok, map[string]any{})
			if status != 403 || body["errcode"] != "M_FORBIDDEN" {
				t.Errorf("%s %s as non-admin: %d %v, want 403 M_FORBIDDEN", ep.method, ep.path, status, body)
			}
		}
		if status, body := call(t, "GET", base+"/v2/users", "", nil); status != 401 || body["errcode"] != "M_MISSING_TOKEN" {
			t.Errorf("no token: %d %v", status, body)
		}

		status, body := call(t, "GET", base+"/v1/server_version", adminTok, nil)
		if status != 200 || body["server_version"] == "" {
			t.Fatalf("server_version: %d %v", status, body)
		}

		// Create a user through the synapseadmin client, then find it.
		bob := id.UserID("@bob:hearth.test")
		if err := adm.CreateOrModifyAccount(ctx, bob, synapseadmin.ReqCreateOrModifyAccount{Password: "bobpw", Displayname: "Bob B"}); err != nil {
			t.Fatalf("create bob: %v", err)
		}
		info, err := adm.GetUserInfo(ctx, bob)
		if err != nil || info.DisplayName != "Bob B" || info.Admin || info.Deactivated {
			t.Fatalf("bob info: %+v %v", info, err)
		}
		if u, err := b.Store.UserByID(ctx, string(bob)); err != nil || !secret.CheckPassword(u.PasswordHash, "bobpw") {
			t.Fatalf("bob's password not stored as bcrypt: %v", err)
		}
		status, body = call(t, "GET", base+"/v2/users?name=bob&limit=10", adminTok, nil)
		users, _ := body["users"].([]any)
		if status != 200 || body["total"] != float64(1) || len(users) != 1 || users[0].(map[string]any)["name"] != string(bob) {
			t.Fatalf("list name=bob: %d %v", status, body)
		}
		status, body = call(t, "GET", base+"/v2/users?limit=1&order_by=name", adminTok, nil)
		if status != 200 || body["total"] != float64(3) || body["next_token"] != "1" {
			t.Fatalf("paged list: %d %v", status, body)
		}
		if status, body = call(t, "GET", base+"/v2/users?order_by=password", adminTok, nil); status != 400 || body["errcode"] != "M_INVALID_PARAM" {
			t.Fatalf("bad order_by: %d %v", status, body)
		}
		if status, body = call(t, "GET", base+"/v2/users/@bob:elsewhere.test", adminTok, nil); status != 400 {
			t.Fatalf("remote user: %d %v", status, body)
		}
		if status, body = call(t, "GET", base+"/v2/users/@nobody:hearth.test", adminTok, nil); status != 404 || body["errcode"] != "M_NOT_FOUND" {
			t.Fatalf("unknown user: %d %v", status, body)
		}

		// Admin flag, shadow ban, rate-limit override.
		yes := true
		if err := adm.CreateOrModifyAccount(ctx, bob, synapseadmin.ReqCreateOrModifyAccount{Admin: &yes}); err != nil {
			t.Fatal(err)
		}
		if status, body = call(t, "GET", base+"/v1/users/@bob:hearth.test/admin", adminTok, nil); body["admin"] != true {
			t.Fatalf("admin flag: %d %v", status, body)
		}
		if status, body = call(t, "PUT", base+"/v1/users/@root:hearth.test/admin", adminTok, map[string]bool{"admin": false}); status != 400 {
			t.Fatalf("self-demotion allowed: %d %v", status, body)
		}
		if status, _ = call(t, "POST", base+"/v1/users/@bob:hearth.test/shadow_ban", adminTok, nil); status != 200 {
			t.Fatalf("shadow ban: %d", status)
		}
		if u, _ := b.Store.UserByID(ctx, string(bob)); !u.ShadowBanned {
			t.Fatal("shadow ban not stored")
		}
		if err := adm.SetUserRatelimit(ctx, bob, synapseadmin.ReqSetRatelimit{MessagesPerSecond: 0, BurstCount: 0}); err != nil {
			t.Fatal(err)
		}
		if rl, err := adm.GetUserRatelimit(ctx, bob); err != nil || rl.MessagesPerSecond != 0 {
			t.Fatalf("rate limit: %+v %v", rl, err)
		}
		if status, body = call(t, "GET", base+"/v1/users/@bob:hearth.test/override_ratelimit", adminTok, nil); status != 200 || body["burst_count"] != float64(0) {
			t.Fatalf("override get: %d %v", status, body)
		}
		if err := adm.DeleteUserRatelimit(ctx, bob); err != nil {
			t.Fatal(err)
		}
		if status, body = call(t, "GET", base+"/v1/users/@bob:hearth.test/override_ratelimit", adminTok, nil); len(body) != 0 {
			t.Fatalf("override after delete: %d %v", status, body)
		}

		// Login as user, devices, whois.
		status, body = call(t, "POST", base+"/v1/users/@bob:hearth.test/login", adminTok, map[string]any{})
		puppetTok, _ := body["access_token"].(string)
		if status != 200 || puppetTok == "" {
			t.Fatalf("login as user: %d %v", status, body)
		}
		if status, body = call(t, "POST", base+"/v1/users/@root:hearth.test/login", adminTok, map[string]any{}); status != 400 {
			t.Fatalf("login as self: %d %v", status, body)
		}
		if se, err := b.Store.SessionByToken(ctx, puppetTok); err != nil || se.UserID != string(bob) || se.PuppetBy != "@root:hearth.test" {
			t.Fatalf("puppet session: %+v %v", se, err)
		}
		if status, _ = call(t, "POST", base+"/v2/users/@bob:hearth.test/devices", adminTok, map[string]string{"device_id": "BOBDEV"}); status != 201 {
			t.Fatalf("create device: %d", status)
		}
		if status, _ = call(t, "PUT", base+"/v2/users/@bob:hearth.test/devices/BOBDEV", adminTok, map[string]string{"display_name": "laptop"}); status != 200 {
			t.Fatalf("rename device: %d", status)
		}
		devs, err := adm.ListDevices(ctx, bob)
		if err != nil || devs.Total != 1 || devs.Devices[0].DisplayName != "laptop" {
			t.Fatalf("devices: %+v %v", devs, err)
		}
		if status, body = call(t, "GET", base+"/v2/users/@bob:hearth.test/devices/NOPE", adminTok, nil); status != 404 {
			t.Fatalf("missing device: %d %v", status, body)
		}
		if status, _ = call(t, "POST", base+"/v2/users/@bob:hearth.test/delete_devices", adminTok, map[string]any{"devices": []string{"BOBDEV"}}); status != 200 {
			t.Fatalf("delete devices: %d", status)
		}
		if devs, _ := adm.ListDevices(ctx, bob); devs.Total != 0 {
			t.Fatalf("device survived delete: %+v", devs)
		}
		status, body = call(t, "GET", base+"/v1/whois/@mallory:hearth.test", adminTok, nil)
		if d, _ := body["devices"].(map[string]any); status != 200 || d["SEEDDEV"] == nil {
			t.Fatalf("whois: %d %v", status, body)
		}

		// Reset password revokes tokens; deactivation with erase.
		if err := adm.ResetPassword(ctx, synapseadmin.ReqResetPassword{UserID: "@mallory:hearth.test", NewPassword: "new", LogoutDevices: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Store.SessionByToken(ctx, userTok); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("token survived password reset: %v", err)
		}
		if err := adm.DeactivateAccount(ctx, bob, synapseadmin.ReqDeleteUser{Erase: true}); err != nil {
			t.Fatal(err)
		}
		info, err = adm.GetUserInfo(ctx, bob)
		if err != nil || !info.Deactivated || !info.Erased {
			t.Fatalf("after deactivate: %+v %v", info, err)
		}
		if status, body = call(t, "GET", base+"/v2/users", adminTok, nil); status != 200 || body["total"] != float64(2) {
			t.Fatalf("v2 list hides deactivated by default: %d %v", status, body)
		}
		if status, body = call(t, "GET", base+"/v3/users", adminTok, nil); status != 200 || body["total"] != float64(3) {
			t.Fatalf("v3 list shows all by default: %d %v", status, body)
		}
		if _, err := adm.UsernameAvailable(ctx, "bob"); err == nil {
			t.Fatal("deactivated name reported available")
		}
		if _, err := adm.UsernameAvailable(ctx, "carol"); err != nil {
			t.Fatalf("carol: %v", err)
		}
	})
}

func TestAdminRegistrationTokens(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		adminTok := seedUser(t, b.Store, "root", "rootpw", true)
		base := b.URL + "/_synapse/admin/v1/registration_tokens"

		status, body := call(t, "POST", base+"/new", adminTok, map[string]any{"token": "abc_DEF-1.~", "uses_allowed": 1})
		if status != 200 || body["token"] != "abc_DEF-1.~" || body["uses_allowed"] != float64(1) || body["pending"] != float64(0) {
			t.Fatalf("create: %d %v", status, body)
		}
		if status, body = call(t, "POST", base+"/new", adminTok, map[string]any{"token": "abc_DEF-1.~"}); status != 400 {
			t.Fatalf("duplicate: %d %v", status, body)
		}
		// uses_allowed past 2^31-1 does not fit PostgreSQL's integer
		// column (it answered 500 there, and SQLite stored it).
		for _, bad := range []map[string]any{{"token": "has space"}, {"length": 0}, {"length": 65}, {"uses_allowed": -1}, {"expiry_time": 1},
			{"uses_allowed": int64(1) << 31}} {
			if status, body = call(t, "POST", base+"/new", adminTok, bad); status != 400 || body["errcode"] != "M_INVALID_PARAM" {
				t.Errorf("create %v: %d %v, want 400 M_INVALID_PARAM", bad, status, body)
			}
		}
		status, body = call(t, "POST", base+"/new", adminTok, map[string]any{"length": 24})
		if tok, _ := body["token"].(string); status != 200 || len(tok) != 24 {
			t.Fatalf("generated: %d %v", status, body)
		}
		if status, body = call(t, "PUT", base+"/abc_DEF-1.~", adminTok, map[string]any{"uses_allowed": int64(1) << 31}); status != 400 || body["errcode"] != "M_INVALID_PARAM" {
			t.Errorf("update to 2^31 uses: %d %v, want 400 M_INVALID_PARAM", status, body)
		}
		if status, body = call(t, "PUT", base+"/abc_DEF-1.~", adminTok, map[string]any{"uses_allowed": 1<<31 - 1}); status != 200 || body["uses_allowed"] != float64(1<<31-1) {
			t.Errorf("update to 2^31-1 uses: %d %v", status, body)
		}
		status, body = call(t, "PUT", base+"/abc_DEF-1.~", adminTok, map[string]any{"uses_allowed": nil})
		if status != 200 || body["uses_allowed"] != nil {
			t.Fatalf("clear uses_allowed: %d %v", status, body)
		}
		status, body = call(t, "GET", base, adminTok, nil)
		if list, _ := body["registration_tokens"].([]any); status != 200 || len(list) != 2 {
			t.Fatalf("list: %d %v", status, body)
		}
		if status, _ = call(t, "DELETE", base+"/abc_DEF-1.~", adminTok, nil); status != 200 {
			t.Fatalf("delete: %d", status)
		}
		if status, body = call(t, "GET", base+"/abc_DEF-1.~", adminTok, nil); status != 404 || body["errcode"] != "M_NOT_FOUND" {
			t.Fatalf("deleted token: %d %v", status, body)
		}
	})
}
