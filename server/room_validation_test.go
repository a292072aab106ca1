package server_test

import (
	"net/http"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// Content no sender could ever send is 400, not 403: a v12 power levels
// event listing a creator, a second m.room.create, additional_creators
// that are not user IDs by the grammar (Synapse answers so, and
// Complement's v12 tests expect it).
func TestInvalidContentIsBadRequest(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice := newRoomUser(t, b, "alice")
		created, err := alice.cli.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{RoomVersion: "12", Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := esc(string(created.RoomID))
		acctDo(t, b, "PUT", "/_matrix/client/v3/rooms/"+room+"/state/m.room.power_levels/", alice.tok,
			map[string]any{"users": map[string]int{string(alice.id): 100}}).want(t, http.StatusBadRequest, "M_BAD_JSON")
		acctDo(t, b, "PUT", "/_matrix/client/v3/rooms/"+room+"/state/m.room.power_levels/", alice.tok,
			map[string]any{"users": map[string]any{"@bob:example.org": "fifty"}}).want(t, http.StatusBadRequest, "M_BAD_JSON")
		for _, v := range []string{"11", "12"} {
			r, err := alice.cli.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{RoomVersion: id.RoomVersion(v)})
			if err != nil {
				t.Fatal(err)
			}
			res := acctDo(t, b, "PUT", "/_matrix/client/v3/rooms/"+esc(string(r.RoomID))+"/state/m.room.create/", alice.tok,
				map[string]any{"room_version": v, "entropy": 100})
			if res.status != http.StatusBadRequest {
				t.Errorf("a second m.room.create in a v%s room: %d %v, want 400", v, res.status, res.body)
			}
		}
		// Still a permission matter: a power levels change by a user
		// without the power is 403.
		bob := newRoomUser(t, b, "bob")
		if _, err := bob.cli.JoinRoomByID(t.Context(), created.RoomID); err != nil {
			t.Fatal(err)
		}
		acctDo(t, b, "PUT", "/_matrix/client/v3/rooms/"+room+"/state/m.room.power_levels/", bob.tok,
			map[string]any{"users": map[string]int{string(bob.id): 100}}).want(t, http.StatusForbidden, "M_FORBIDDEN")

		for _, ac := range [][]any{{"@invalid:dom$ain$.com"}, {"@foo:example.com", "not-a-user-id"}, {"@foo:example.com:99999999"}} {
			res := acctDo(t, b, "POST", "/_matrix/client/v3/createRoom", alice.tok, map[string]any{
				"room_version": "12", "creation_content": map[string]any{"additional_creators": ac}})
			if res.status != http.StatusBadRequest {
				t.Errorf("additional_creators %v: %d %v, want 400", ac, res.status, res.body)
			}
		}
		acctDo(t, b, "POST", "/_matrix/client/v3/createRoom", alice.tok, map[string]any{
			"room_version": "12", "creation_content": map[string]any{"additional_creators": []string{"@foo:example.com", "@bar:[::1]:8448"}}}).
			want(t, http.StatusOK, "")
	})
}

// join_authorised_via_users_server is the server's to set: a client's is
// dropped (an event carrying one its server never signed is refused by
// every other server).
func TestClientCannotSetAuthorisingUser(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice := newRoomUser(t, b, "alice")
		created, err := alice.cli.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		res := acctDo(t, b, "PUT", "/_matrix/client/v3/rooms/"+esc(string(created.RoomID))+"/state/m.room.member/"+esc(string(alice.id)), alice.tok,
			map[string]any{"membership": "join", "displayname": "Alice", "join_authorised_via_users_server": "unused"})
		res.want(t, http.StatusOK, "")
		ev, err := b.Store.EventByID(t.Context(), res.body["event_id"].(string))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(ev.JSON), "join_authorised_via_users_server") || !strings.Contains(string(ev.JSON), `"Alice"`) {
			t.Errorf("the membership event kept the client's authorising user: %s", ev.JSON)
		}
	})
}

// A redaction of an event this server does not have still goes to the
// room (for the servers that have the event), from a user who may redact
// anyone's events.
func TestRedactUnknownEvent(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob := newRoomUser(t, b, "alice"), newRoomUser(t, b, "bob")
		created, err := alice.cli.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.JoinRoomByID(t.Context(), created.RoomID); err != nil {
			t.Fatal(err)
		}
		room := esc(string(created.RoomID))
		unknown := esc("$notherethisevent:elsewhere.example")
		res := acctDo(t, b, "PUT", "/_matrix/client/v3/rooms/"+room+"/redact/"+unknown+"/t1", alice.tok, map[string]any{"reason": "spam"})
		res.want(t, http.StatusOK, "")
		ev, err := b.Store.EventByID(t.Context(), res.body["event_id"].(string))
		if err != nil || ev.Type != "m.room.redaction" || !strings.Contains(string(ev.JSON), "$notherethisevent:elsewhere.example") {
			t.Fatalf("the redaction: %+v %v", ev, err)
		}
		// Bob cannot redact others' events, and whose this is is unknown.
		acctDo(t, b, "PUT", "/_matrix/client/v3/rooms/"+room+"/redact/"+unknown+"/t2", bob.tok, map[string]any{}).
			want(t, http.StatusForbidden, "M_FORBIDDEN")
	})
}

// A path parameter that unescapes to invalid UTF-8 (an event type, a
// state key, a transaction ID) is the client's error, 400, and no event
// is made of it.
func TestInvalidUTF8PathIsBadRequest(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice := newRoomUser(t, b, "alice")
		created, err := alice.cli.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := "/_matrix/client/v3/rooms/" + esc(string(created.RoomID))
		for _, path := range []string{"/state/m.room.topic/bad%FFkey", "/state/bad%FFtype/", "/send/bad%FFtype/t1", "/send/m.room.message/bad%FFtxn"} {
			acctDo(t, b, "PUT", room+path, alice.tok, map[string]any{"topic": "x", "body": "x", "msgtype": "m.text"}).
				want(t, http.StatusBadRequest, "M_INVALID_PARAM")
		}
	})
}
