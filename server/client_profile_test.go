package server_test

import (
	"net/http"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

func TestProfileFieldsAPI(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob := newRoomUser(t, b, "alice"), newRoomUser(t, b, "bob")
		alice.cli.UserID = alice.id // mautrix's own-profile calls need it
		if err := alice.cli.SetDisplayName(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		field := func(u id.UserID, key string) string {
			return "/_matrix/client/v3/profile/" + esc(string(u)) + "/" + key
		}

		// The spec's m.tz and custom fields of any JSON type, with mautrix.
		if err := alice.cli.SetProfileField(ctx, "m.tz", "Europe/London"); err != nil {
			t.Fatalf("set m.tz: %v", err)
		}
		if err := alice.cli.SetProfileField(ctx, "org.example.job", map[string]any{"title": "baker", "since": 2020}); err != nil {
			t.Fatalf("set object field: %v", err)
		}
		var tz map[string]string
		if err := bob.cli.GetProfileField(ctx, alice.id, "m.tz", &tz); err != nil || tz["m.tz"] != "Europe/London" {
			t.Fatalf("get m.tz: %v %v", tz, err)
		}
		p, err := bob.cli.GetProfile(ctx, alice.id)
		if err != nil || p.DisplayName != "alice" || p.Extra["m.tz"] != "Europe/London" {
			t.Fatalf("whole profile: %+v %v", p, err)
		}
		if job, _ := p.Extra["org.example.job"].(map[string]any); job["title"] != "baker" {
			t.Fatalf("object field in the profile: %+v", p.Extra)
		}
		// null is a value, kept as such.
		acctDo(t, b, "PUT", field(alice.id, "org.example.nothing"), alice.tok, `{"org.example.nothing": null}`).want(t, 200, "")
		if r := acctDo(t, b, "GET", field(alice.id, "org.example.nothing"), "", nil); r.status != 200 || r.body["org.example.nothing"] != nil {
			t.Fatalf("null field: %d %v", r.status, r.body)
		} else if _, ok := r.body["org.example.nothing"]; !ok {
			t.Fatalf("null field missing: %v", r.body)
		}

		// Errors: the spec's codes.
		acctDo(t, b, "PUT", field(alice.id, "m.tz"), alice.tok, map[string]any{"m.tz": "Mars/Olympus_Mons"}).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "PUT", field(alice.id, "m.tz"), alice.tok, map[string]any{"m.tz": 3}).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "PUT", field(alice.id, "m.tz"), alice.tok, map[string]any{"m.tz": "Local"}).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "PUT", field(alice.id, "org.example.job"), alice.tok, map[string]any{"other": 1}).want(t, 400, "M_MISSING_PARAM")
		acctDo(t, b, "PUT", field(alice.id, "org.example.job"), alice.tok, "{not json").want(t, 400, "M_NOT_JSON")
		acctDo(t, b, "PUT", field(alice.id, "Org.Example"), alice.tok, map[string]any{"Org.Example": 1}).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "PUT", field(alice.id, "nodot"), alice.tok, map[string]any{"nodot": 1}).want(t, 400, "M_INVALID_PARAM")
		long := "org.example." + strings.Repeat("k", 250)
		acctDo(t, b, "PUT", field(alice.id, long), alice.tok, map[string]any{long: 1}).want(t, 400, "M_KEY_TOO_LARGE")
		acctDo(t, b, "GET", field(alice.id, "Bad%20Key"), "", nil).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "PUT", field(alice.id, "org.example.job"), bob.tok, map[string]any{"org.example.job": 1}).want(t, 403, "M_FORBIDDEN")
		acctDo(t, b, "DELETE", field(alice.id, "org.example.job"), bob.tok, nil).want(t, 403, "M_FORBIDDEN")
		acctDo(t, b, "PUT", field(alice.id, "org.example.job"), "", map[string]any{"org.example.job": 1}).want(t, 401, "M_MISSING_TOKEN")
		acctDo(t, b, "GET", field(alice.id, "org.example.unset"), "", nil).want(t, 404, "M_NOT_FOUND")
		acctDo(t, b, "GET", field("@nobody:hearth.test", "m.tz"), "", nil).want(t, 404, "M_NOT_FOUND")

		// 64 KiB for the whole profile.
		big := strings.Repeat("x", 40_000)
		acctDo(t, b, "PUT", field(alice.id, "org.example.a"), alice.tok, map[string]any{"org.example.a": big}).want(t, 200, "")
		acctDo(t, b, "PUT", field(alice.id, "org.example.b"), alice.tok, map[string]any{"org.example.b": big}).want(t, 400, "M_PROFILE_TOO_LARGE")

		// Deleting: gone afterwards, and deleting again is no error.
		if err := alice.cli.DeleteProfileField(ctx, "org.example.a"); err != nil {
			t.Fatal(err)
		}
		acctDo(t, b, "GET", field(alice.id, "org.example.a"), "", nil).want(t, 404, "M_NOT_FOUND")
		acctDo(t, b, "DELETE", field(alice.id, "org.example.a"), alice.tok, nil).want(t, 200, "")

		// displayname keeps its rules and reaches the user's rooms, through
		// the generic endpoints too; custom fields do not.
		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		member := func() map[string]any {
			var c map[string]any
			if err := alice.cli.StateEvent(ctx, room.RoomID, event.StateMember, string(alice.id), &c); err != nil {
				t.Fatal(err)
			}
			return c
		}
		if err := alice.cli.SetDisplayName(ctx, "Alice"); err != nil {
			t.Fatal(err)
		}
		if c := member(); c["displayname"] != "Alice" || c["m.tz"] != nil {
			t.Fatalf("member after setting the name: %v", c)
		}
		acctDo(t, b, "PUT", field(alice.id, "displayname"), alice.tok, map[string]any{"displayname": strings.Repeat("n", 300)}).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "DELETE", field(alice.id, "displayname"), alice.tok, nil).want(t, 200, "")
		if c := member(); c["displayname"] != nil {
			t.Fatalf("member after deleting the name: %v", c)
		}
		if r := acctDo(t, b, "GET", field(alice.id, "displayname"), "", nil); r.status != 200 || len(r.body) != 0 {
			t.Fatalf("unset display name: %d %v", r.status, r.body)
		}
		// A name that would take the profile past 64 KiB is refused too.
		acctDo(t, b, "PUT", field(alice.id, "org.example.a"), alice.tok, map[string]any{"org.example.a": strings.Repeat("y", 65_400)}).want(t, 200, "")
		acctDo(t, b, "PUT", field(alice.id, "displayname"), alice.tok, map[string]any{"displayname": strings.Repeat("n", 200)}).want(t, 400, "M_PROFILE_TOO_LARGE")

		caps := acctDo(t, b, "GET", "/_matrix/client/v3/capabilities", alice.tok, nil).body["capabilities"].(map[string]any)
		if c, _ := caps["m.profile_fields"].(map[string]any); c["enabled"] != true {
			t.Fatalf("capabilities: %v", caps)
		}
	})
}

func TestFederationProfileQueryFields(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		key := originKey(t)
		knowKey(t, b.Store, key)
		alice := newRoomUser(t, b, "alice")
		alice.cli.UserID = alice.id
		if err := alice.cli.SetDisplayName(t.Context(), "alice"); err != nil {
			t.Fatal(err)
		}
		if err := alice.cli.SetProfileField(t.Context(), "m.tz", "Asia/Tokyo"); err != nil {
			t.Fatal(err)
		}
		query := func(q string) (int, map[string]any) {
			target := "/_matrix/federation/v1/query/profile?user_id=%40alice%3Ahearth.test" + q
			return fedRequest{key: key, origin: "origin.test", destination: "hearth.test",
				signMethod: http.MethodGet, signTarget: target, method: http.MethodGet, target: target}.send(t, b.URL)
		}
		if status, body := query(""); status != 200 || body["displayname"] != "alice" || body["m.tz"] != "Asia/Tokyo" {
			t.Fatalf("whole profile: %d %v", status, body)
		}
		if status, body := query("&field=m.tz"); status != 200 || len(body) != 1 || body["m.tz"] != "Asia/Tokyo" {
			t.Fatalf("one field: %d %v", status, body)
		}
		if status, body := query("&field=displayname"); status != 200 || len(body) != 1 || body["displayname"] != "alice" {
			t.Fatalf("displayname: %d %v", status, body)
		}
		if status, body := query("&field=org.example.unset"); status != 404 || body["errcode"] != "M_NOT_FOUND" {
			t.Fatalf("unset field: %d %v", status, body)
		}
		if status, body := query("&field=Not%20A%20Key"); status != 400 || body["errcode"] != "M_INVALID_PARAM" {
			t.Fatalf("bad field: %d %v", status, body)
		}
	})
}

// TestFederationProfileFields reads a custom field of another server's user
// through the client API.
func TestFederationProfileFields(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		a := fed.Start(t, e)
		b := fed.Start(t, e)
		ctx := t.Context()
		alice, bob := newRoomUser(t, a, "alice"), newRoomUser(t, b, "bob")
		bob.cli.UserID = bob.id
		if err := bob.cli.SetDisplayName(ctx, "bob"); err != nil {
			t.Fatal(err)
		}
		if err := bob.cli.SetProfileField(ctx, "m.tz", "America/Denver"); err != nil {
			t.Fatal(err)
		}
		var tz map[string]string
		if err := alice.cli.GetProfileField(ctx, bob.id, "m.tz", &tz); err != nil || tz["m.tz"] != "America/Denver" {
			t.Fatalf("remote field: %v %v", tz, err)
		}
		p, err := alice.cli.GetProfile(ctx, bob.id)
		if err != nil || p.Extra["m.tz"] != "America/Denver" || p.DisplayName != "bob" {
			t.Fatalf("remote profile: %+v %v", p, err)
		}
		acctDo(t, a, "GET", "/_matrix/client/v3/profile/"+esc(string(bob.id))+"/org.example.unset", alice.tok, nil).want(t, 404, "M_NOT_FOUND")
	})
}
