package server_test

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"hearth/server"
	"hearth/server/rooms"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
	"hearth/server/timeline"
)

// A NUL character is refused where the server reads a string (an ID, a
// name, a reason) and kept where it only carries content: event content
// may hold one (it is valid JSON, and other servers' events do), and it
// comes back as it was sent, on both engines. A lone surrogate is no
// character at all: refused everywhere.
func TestNULInContent(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice := newRoomUser(t, b, "alice")
		// createRoom's name is a field the server reads; the name event's
		// content is carried.
		acctDo(t, b, "POST", "/_matrix/client/v3/createRoom", alice.tok, `{"name":"a\u0000b"}`).want(t, http.StatusBadRequest, "M_BAD_JSON")
		room, err := alice.cli.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		rid := url.PathEscape(string(room.RoomID))
		acctDo(t, b, "PUT", "/_matrix/client/v3/rooms/"+rid+"/state/m.room.name/", alice.tok, `{"name":"a\u0000b"}`).want(t, http.StatusOK, "")
		res := acctDo(t, b, "PUT", "/_matrix/client/v3/rooms/"+rid+"/send/m.room.message/t1", alice.tok, `{"msgtype":"m.text","body":"a\u0000b"}`)
		res.want(t, http.StatusOK, "")
		ev := acctDo(t, b, "GET", "/_matrix/client/v3/rooms/"+rid+"/event/"+url.PathEscape(res.body["event_id"].(string)), alice.tok, nil)
		ev.want(t, http.StatusOK, "")
		if body := ev.body["content"].(map[string]any)["body"]; body != "a\x00b" {
			t.Errorf("the message's body came back as %q", body)
		}
		name := acctDo(t, b, "GET", "/_matrix/client/v3/rooms/"+rid+"/state/m.room.name/", alice.tok, nil)
		if name.body["name"] != "a\x00b" {
			t.Errorf("the room's name came back as %q", name.body["name"])
		}

		acctDo(t, b, "PUT", "/_matrix/client/v3/profile/"+url.PathEscape(string(alice.id))+"/displayname", alice.tok, `{"displayname":"a\u0000b"}`).
			want(t, http.StatusBadRequest, "M_BAD_JSON")
		acctDo(t, b, "POST", "/_matrix/client/v3/rooms/"+rid+"/invite", alice.tok, `{"user_id":"@bob\u0000:hearth.test"}`).
			want(t, http.StatusBadRequest, "M_BAD_JSON")
		acctDo(t, b, "GET", "/_matrix/client/v3/devices/a%00b", alice.tok, nil).want(t, http.StatusBadRequest, "M_INVALID_PARAM")
		// Query parameters too (PostgreSQL answered these 500), and text
		// that is not UTF-8 the same; UTF-8 beyond ASCII is a token like any.
		for _, q := range []string{"token=a%00b", "token=a%FFb", "x=1&token=ok&a%00=1"} {
			acctDo(t, b, "GET", "/_matrix/client/v1/register/m.login.registration_token/validity?"+q, "", nil).want(t, http.StatusBadRequest, "M_INVALID_PARAM")
		}
		if v := acctDo(t, b, "GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=%C3%A9", "", nil); v.status != http.StatusOK || v.body["valid"] != false {
			t.Errorf("a token that is no token: %d %v", v.status, v.body)
		}
		acctDo(t, b, "PUT", "/_matrix/client/v3/rooms/"+rid+"/send/m.room.message/t2", alice.tok, `{"msgtype":"m.text","body":"\ud800"}`).
			want(t, http.StatusBadRequest, "M_NOT_JSON")
		acctDo(t, b, "POST", "/_matrix/client/v3/rooms/"+rid+"/join", alice.tok, `{"org.example":"\udc00"}`).
			want(t, http.StatusBadRequest, "M_NOT_JSON")
		// An escaped backslash before "u0000" is no NUL: the text \u0000.
		acctDo(t, b, "PUT", "/_matrix/client/v3/profile/"+url.PathEscape(string(alice.id))+"/displayname", alice.tok, `{"displayname":"a\\u0000b"}`).
			want(t, http.StatusOK, "")
	})
}

// Another server's events may carry NUL characters in their content,
// which both engines store and serve (the room's name, topic, members'
// names, relations, a message's body); an event whose type, state key,
// sender or room ID has one is malformed, refused when parsed, as on
// both engines alike: PostgreSQL could not store it.
func TestNULInReceivedEvents(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		errs := &servertest.ErrorLog{}
		b := servertest.StartWith(t, e, func(d *server.Deps) { d.Log = slog.New(errs) })
		f := newFed(t, b, "r2.test")
		ctx := t.Context()
		alice := newSyncUser(t, b, "alice")
		bob := "@bob:r2.test"
		created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11",
			PowerLevelOverride: plOverride(map[string]any{string(alice.id): 100, bob: 100})})
		if err != nil {
			t.Fatal(err)
		}
		roomID := string(created.RoomID)
		rv := f.version(roomID)
		bb := f.builderOnHead("r2.test", roomID)
		nul := "a\x00b"
		// As a transaction's PDUs come: parsed from their JSON.
		receiveAs := func(want timeline.Status, ev *rooms.Event) {
			t.Helper()
			pe, err := rooms.ParseEvent(rv, ev.JSON())
			if err != nil {
				t.Fatalf("%s: %v", ev.JSON(), err)
			}
			f.mustReceive("r2.test", timeline.Live, want, pe)
		}
		receive := func(ev *rooms.Event) { t.Helper(); receiveAs(timeline.Accepted, ev) }
		receive(f.add(bb, "m.room.member", sp(bob), bob, map[string]any{"membership": "join", "displayname": nul}))
		for _, c := range []struct {
			typ     string
			sk      *string
			content map[string]any
		}{
			{"m.room.name", sp(""), map[string]any{"name": nul}},
			{"m.room.topic", sp(""), map[string]any{"topic": nul}},
			{"m.room.avatar", sp(""), map[string]any{"url": "mxc://r2.test/" + nul}},
			{"m.room.canonical_alias", sp(""), map[string]any{"alias": "#" + nul + ":r2.test", "alt_aliases": []string{nul}}},
			{"m.room.join_rules", sp(""), map[string]any{"join_rule": "public", "allow": []any{map[string]any{"type": nul, "room_id": nul}}}},
			{"m.room.history_visibility", sp(""), map[string]any{"history_visibility": nul}},
			{"m.room.server_acl", sp(""), map[string]any{"allow": []string{"*", nul}, "deny": []string{nul}}},
			{"m.space.child", sp("!x:r2.test"), map[string]any{"via": []string{nul}, "order": nul}},
			{"m.room.member", sp(bob), map[string]any{"membership": "join", "displayname": nul, "avatar_url": nul}},
			{"m.room.message", nil, map[string]any{"msgtype": nul, "body": nul, "format": nul, "formatted_body": nul}},
			{"m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "x", "m.relates_to": map[string]any{"rel_type": nul, "event_id": "$" + nul}}},
			{"m.reaction", nil, map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": "$x", "key": nul}}},
			{"m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "x", "m.mentions": map[string]any{"user_ids": []string{nul, string(alice.id)}}}},
		} {
			receive(f.add(bb, c.typ, c.sk, bob, c.content))
		}
		// A membership no auth rule knows: rejected, and stored so.
		forged, err := rooms.BuildEvent(rv, rooms.EventTemplate{RoomID: roomID, Type: "m.room.member", StateKey: sp(bob), Sender: bob,
			Content: map[string]any{"membership": "join\x00"}, PrevEvents: bb.Extremities, Depth: bb.Depth + 1, OriginServerTS: f.now(),
			AuthEvents: rooms.SelectAuthEvents(rooms.AuthEventKeys(rv, "m.room.member", sp(bob), bob, nil), bb.State)}, f.keys["r2.test"])
		if err != nil {
			t.Fatal(err)
		}
		receiveAs(timeline.Rejected, forged)
		resp := doSync(t, alice, "", "", 0)
		jr, ok := resp.Rooms.Join[id.RoomID(roomID)]
		if !ok {
			t.Fatal("the room is not in alice's sync")
		}
		if jr.Summary.Heroes == nil && len(jr.Timeline.Events) == 0 {
			t.Fatal("an empty room in alice's sync")
		}
		acctDo(t, b, "GET", "/_matrix/client/v3/publicRooms", alice.tok, nil).want(t, http.StatusOK, "")
		acctDo(t, b, "POST", "/_matrix/client/v3/search", alice.tok, map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x"}}}).want(t, http.StatusOK, "")
		name := acctDo(t, b, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.name/", alice.tok, nil)
		if name.body["name"] != nul {
			t.Errorf("the room's name came back as %q", name.body["name"])
		}

		// The same event with a NUL character in each of its IDs: a
		// remote server signs what it likes, so the JSON is edited.
		ev := f.add(bb, "org.example.x", sp("k"), bob, map[string]any{})
		for _, field := range []string{"type", "state_key", "sender", "room_id"} {
			var m map[string]any
			if err := json.Unmarshal(ev.JSON(), &m); err != nil {
				t.Fatal(err)
			}
			m[field] = m[field].(string) + "\x00"
			raw, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := rooms.ParseEvent(rv, raw); !errors.Is(err, rooms.ErrBadEvent) {
				t.Errorf("an event with a NUL character in its %s: %v, want a malformed event", field, err)
			}
		}
		time.Sleep(500 * time.Millisecond) // for what runs after a commit: search, push
		for _, l := range errs.Lines() {
			t.Errorf("logged: %s", l)
		}
	})
}

// Headers may carry any byte but NUL. A User-Agent that is not UTF-8
// (PostgreSQL refused to store it, and the sign-in with it failed) is
// recorded with its bad bytes replaced, and a long one cut; an upload's
// Content-Type that is not UTF-8 is refused; a file name cut to 255
// bytes is cut between characters.
func TestHostileHeaders(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		errs := &servertest.ErrorLog{}
		b := servertest.StartWith(t, e, func(d *server.Deps) { d.Log = slog.New(errs) })
		alice := newRoomUser(t, b, "alice")
		if err := b.Store.SetAdmin(t.Context(), string(alice.id), true); err != nil {
			t.Fatal(err)
		}
		do := func(method, path, token, body string, hdr map[string]string) (int, string) {
			t.Helper()
			req, err := http.NewRequestWithContext(t.Context(), method, b.URL+path, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			for k, v := range hdr {
				req.Header.Set(k, v)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			raw, _ := io.ReadAll(res.Body)
			return res.StatusCode, string(raw)
		}

		status, raw := do("POST", "/_matrix/client/v3/login", "", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"`+acctPW+`","device_id":"ODDUA"}`,
			map[string]string{"User-Agent": "a\xff\xfeb"})
		if status != http.StatusOK {
			t.Fatalf("sign in with a User-Agent that is not UTF-8: %d %s", status, raw)
		}
		devs := acctDo(t, b, "GET", "/_synapse/admin/v2/users/"+esc(string(alice.id))+"/devices", alice.tok, nil)
		devs.want(t, http.StatusOK, "")
		found := false
		for _, d := range devs.body["devices"].([]any) {
			if d := d.(map[string]any); d["device_id"] == "ODDUA" {
				found = true
				if d["last_seen_user_agent"] != "a\uFFFDb" { // one replacement for the run
					t.Errorf("the device's User-Agent: %q", d["last_seen_user_agent"])
				}
			}
		}
		if !found {
			t.Fatal("the new device is not listed")
		}
		if status, raw := do("GET", "/_matrix/client/v3/account/whoami", alice.tok, "", map[string]string{"User-Agent": strings.Repeat("é", 30000)}); status != http.StatusOK {
			t.Errorf("a 60 KB User-Agent: %d %s", status, raw)
		}

		if status, raw := do("POST", "/_matrix/media/v3/upload", alice.tok, "hello", map[string]string{"Content-Type": "text/\xff"}); status != http.StatusBadRequest || !strings.Contains(raw, "M_INVALID_PARAM") {
			t.Errorf("an upload whose Content-Type is not UTF-8: %d %s", status, raw)
		}
		status, raw = do("POST", "/_matrix/media/v3/upload?filename="+strings.Repeat("%C3%A9", 200), alice.tok, "hello", map[string]string{"Content-Type": "text/plain"})
		if status != http.StatusOK {
			t.Fatalf("an upload with a 400-byte name: %d %s", status, raw)
		}
		var up struct {
			ContentURI string `json:"content_uri"`
		}
		if err := json.Unmarshal([]byte(raw), &up); err != nil {
			t.Fatal(err)
		}
		mediaID := up.ContentURI[strings.LastIndex(up.ContentURI, "/")+1:]
		info := acctDo(t, b, "GET", "/_synapse/admin/v1/media/hearth.test/"+mediaID, alice.tok, nil)
		info.want(t, http.StatusOK, "")
		mi, _ := info.body["media_info"].(map[string]any)
		if name, _ := mi["upload_name"].(string); name != strings.Repeat("é", 127) {
			t.Errorf("the upload's name, cut: %q (%d bytes)", name, len(name))
		}
		time.Sleep(200 * time.Millisecond)
		for _, l := range errs.Lines() {
			t.Errorf("logged: %s", l)
		}
	})
}
