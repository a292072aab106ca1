package server_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"hearth/config"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

func TestWellKnownSupport(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		// Unconfigured: 404, as the spec has it for a server with nothing to say.
		plain := servertest.Start(t, e)
		acctDo(t, plain, "GET", "/.well-known/matrix/support", "", nil).want(t, 404, "M_NOT_FOUND")

		b := servertest.Start(t, e, func(c *config.Config) {
			c.WellKnownSupport = config.WellKnownSupport{
				Contacts: []config.SupportContact{
					{MatrixID: "@admin:hearth.test", EmailAddress: "admin@hearth.test", Role: "m.role.admin"},
					{EmailAddress: "security@hearth.test", Role: "m.role.security"},
				},
				SupportPage: "https://hearth.test/help",
			}
		})
		r := acctDo(t, b, "GET", "/.well-known/matrix/support", "", nil)
		r.want(t, 200, "")
		contacts, _ := r.body["contacts"].([]any)
		if len(contacts) != 2 || r.body["support_page"] != "https://hearth.test/help" {
			t.Fatalf("support: %v", r.body)
		}
		first, second := contacts[0].(map[string]any), contacts[1].(map[string]any)
		if first["matrix_id"] != "@admin:hearth.test" || first["email_address"] != "admin@hearth.test" || first["role"] != "m.role.admin" {
			t.Fatalf("first contact: %v", first)
		}
		if _, ok := second["matrix_id"]; ok || second["role"] != "m.role.security" {
			t.Fatalf("second contact: %v", second)
		}
		if r.header.Get("Access-Control-Allow-Origin") != "*" {
			t.Fatalf("no CORS header: browsers' clients read this file too")
		}
	})
}

func TestThirdPartyLookups(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice := newRoomUser(t, b, "alice")
		// mautrix-go has no calls for these: plain HTTP.
		if r := acctDo(t, b, "GET", "/_matrix/client/v3/thirdparty/protocols", alice.tok, nil); r.status != 200 || len(r.body) != 0 {
			t.Fatalf("protocols: %d %v", r.status, r.body)
		}
		acctDo(t, b, "GET", "/_matrix/client/v3/thirdparty/protocol/irc", alice.tok, nil).want(t, 404, "M_NOT_FOUND")
		for _, path := range []string{"/thirdparty/location?alias=%23a%3Ahearth.test", "/thirdparty/location/irc?channel=x",
			"/thirdparty/user?userid=%40a%3Ahearth.test", "/thirdparty/user/irc?nick=x"} {
			req, err := http.NewRequestWithContext(t.Context(), "GET", b.URL+"/_matrix/client/v3"+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+alice.tok)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != 200 || strings.TrimSpace(string(body)) != "[]" {
				t.Fatalf("%s: %d %s", path, res.StatusCode, body)
			}
		}
		acctDo(t, b, "GET", "/_matrix/client/v3/thirdparty/protocols", "", nil).want(t, 401, "M_MISSING_TOKEN")
	})
}

func TestThreePIDWithoutEmail(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice := newRoomUser(t, b, "alice")
		if r := acctDo(t, b, "GET", "/_matrix/client/v3/account/3pid", alice.tok, nil); r.status != 200 || len(r.body["threepids"].([]any)) != 0 {
			t.Fatalf("3pids: %d %v", r.status, r.body)
		}
		v3 := "/_matrix/client/v3"
		emailReq := map[string]any{"client_secret": "s3cret", "email": "alice@example.org", "send_attempt": 1}
		phoneReq := map[string]any{"client_secret": "s3cret", "country": "GB", "phone_number": "07700900000", "send_attempt": 1}

		// Validation cannot start: adding is unsupported, registering and
		// resetting passwords by 3PID denied.
		acctDo(t, b, "POST", v3+"/account/3pid/email/requestToken", alice.tok, emailReq).want(t, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED")
		acctDo(t, b, "POST", v3+"/account/3pid/msisdn/requestToken", alice.tok, phoneReq).want(t, 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED")
		acctDo(t, b, "POST", v3+"/account/3pid/email/requestToken", alice.tok, "{bad").want(t, 400, "M_NOT_JSON")
		acctDo(t, b, "POST", v3+"/account/3pid/email/requestToken", "", emailReq).want(t, 401, "M_MISSING_TOKEN")
		for _, p := range []string{"/register/email/requestToken", "/account/password/email/requestToken"} {
			acctDo(t, b, "POST", v3+p, "", emailReq).want(t, 403, "M_THREEPID_DENIED")
		}
		for _, p := range []string{"/register/msisdn/requestToken", "/account/password/msisdn/requestToken"} {
			acctDo(t, b, "POST", v3+p, "", phoneReq).want(t, 403, "M_THREEPID_DENIED")
		}

		// Adding: the input is checked, then no validated session exists.
		acctDo(t, b, "POST", v3+"/account/3pid", alice.tok, map[string]any{}).want(t, 400, "M_MISSING_PARAM")
		acctDo(t, b, "POST", v3+"/account/3pid", alice.tok, map[string]any{"three_pid_creds": map[string]any{"sid": "1", "client_secret": "bad secret!"}}).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "POST", v3+"/account/3pid", alice.tok, map[string]any{"three_pid_creds": map[string]any{"sid": "1", "client_secret": "ok",
			"id_server": "id.example.org", "id_access_token": "x"}}).want(t, 403, "M_THREEPID_AUTH_FAILED")
		acctDo(t, b, "POST", v3+"/account/3pid/add", alice.tok, map[string]any{"sid": "1"}).want(t, 400, "M_MISSING_PARAM")
		r := acctDo(t, b, "POST", v3+"/account/3pid/add", alice.tok, map[string]any{"sid": "1", "client_secret": "ok"})
		r.want(t, 401, "")
		acctDo(t, b, "POST", v3+"/account/3pid/add", alice.tok, map[string]any{"sid": "1", "client_secret": "ok",
			"auth": acctPasswordAuth("alice", acctPW, r.body["session"].(string))}).want(t, 400, "M_THREEPID_AUTH_FAILED")
		acctDo(t, b, "POST", v3+"/account/3pid/bind", alice.tok, map[string]any{"sid": "1", "client_secret": "ok",
			"id_server": "id.example.org", "id_access_token": "x"}).want(t, 400, "M_SERVER_NOT_TRUSTED")
		acctDo(t, b, "POST", v3+"/account/3pid/bind", alice.tok, map[string]any{"sid": "1", "client_secret": "ok"}).want(t, 400, "M_MISSING_PARAM")

		// Removing what is not there succeeds, with no identity server to unbind from.
		for _, p := range []string{"/account/3pid/delete", "/account/3pid/unbind"} {
			r := acctDo(t, b, "POST", v3+p, alice.tok, map[string]any{"medium": "email", "address": "alice@example.org"})
			if r.status != 200 || r.body["id_server_unbind_result"] != "no-support" {
				t.Fatalf("%s: %d %v", p, r.status, r.body)
			}
			acctDo(t, b, "POST", v3+p, alice.tok, map[string]any{"medium": "pigeon", "address": "x"}).want(t, 400, "M_INVALID_PARAM")
			acctDo(t, b, "POST", v3+p, alice.tok, map[string]any{"medium": "email"}).want(t, 400, "M_MISSING_PARAM")
		}
		caps := acctDo(t, b, "GET", v3+"/capabilities", alice.tok, nil).body["capabilities"].(map[string]any)
		if c, _ := caps["m.3pid_changes"].(map[string]any); c["enabled"] != false {
			t.Fatalf("m.3pid_changes: %v", caps)
		}
	})
}

// TestWellKnownServer: serve_server_wellknown delegates federation to
// public_baseurl's host on 443, with Cache-Control; off, the file is 404.
func TestWellKnownServer(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		plain := servertest.Start(t, e)
		acctDo(t, plain, "GET", "/.well-known/matrix/server", "", nil).want(t, 404, "M_NOT_FOUND")

		b := servertest.Start(t, e, func(c *config.Config) {
			c.ServeServerWellKnown = true
			c.PublicBaseURL = "https://matrix.hearth.test/"
		})
		r := acctDo(t, b, "GET", "/.well-known/matrix/server", "", nil)
		r.want(t, 200, "")
		if r.body["m.server"] != "matrix.hearth.test:443" {
			t.Fatalf("m.server %v", r.body)
		}
		if cc := r.header.Get("Cache-Control"); !strings.Contains(cc, "max-age=86400") {
			t.Fatalf("Cache-Control %q", cc)
		}
		if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("Content-Type %q", ct)
		}
		c := servertest.Start(t, e, func(c *config.Config) {
			c.ServeServerWellKnown = true
			c.PublicBaseURL = "https://hearth.test:8443"
		})
		if r := acctDo(t, c, "GET", "/.well-known/matrix/server", "", nil); r.body["m.server"] != "hearth.test:8443" {
			t.Fatalf("explicit port: %v", r.body)
		}
	})
}
