package server_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/server/servertest"
	"hearth/server/storage"
	"hearth/server/storage/storagetest"
	"hearth/server/timeline"
)

// roomUser is a registered user with a client.
type roomUser struct {
	id  id.UserID
	tok string
	cli *mautrix.Client
}

func newRoomUser(t *testing.T, b *servertest.Bundle, name string) roomUser {
	t.Helper()
	r := acctRegister(t, b, name)
	return roomUser{id: r.UserID, tok: r.AccessToken, cli: acctClient(t, b, r.AccessToken)}
}

func esc(s string) string { return url.PathEscape(s) }

func TestRoomLifecycle(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob, carol := newRoomUser(t, b, "alice"), newRoomUser(t, b, "bob"), newRoomUser(t, b, "carol")

		created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Lounge", Topic: "chat", Preset: "private_chat", RoomAliasName: "lounge"})
		if err != nil {
			t.Fatalf("createRoom: %v", err)
		}
		room := created.RoomID
		if !strings.HasPrefix(string(room), "!") {
			t.Fatalf("room id %q", room)
		}
		var name event.RoomNameEventContent
		if err := alice.cli.StateEvent(ctx, room, event.StateRoomName, "", &name); err != nil || name.Name != "Lounge" {
			t.Fatalf("name state: %+v %v", name, err)
		}

		// Bob is not in the room: sending is refused, and so is joining an
		// invite-only room uninvited.
		_, err = bob.cli.SendText(ctx, room, "hi")
		acctWantErr(t, err, 403, "M_FORBIDDEN")
		_, err = bob.cli.JoinRoomByID(ctx, room)
		acctWantErr(t, err, 403, "M_FORBIDDEN")

		// A non-member cannot invite.
		_, err = carol.cli.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.id})
		acctWantErr(t, err, 403, "M_FORBIDDEN")

		if _, err := alice.cli.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.id}); err != nil {
			t.Fatalf("invite: %v", err)
		}
		if _, err := bob.cli.JoinRoom(ctx, "#lounge:hearth.test", nil); err != nil {
			t.Fatalf("join by alias: %v", err)
		}
		sent, err := bob.cli.SendText(ctx, room, "hello")
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		evt, err := alice.cli.GetEvent(ctx, room, sent.EventID)
		if err != nil || evt.Content.Raw["body"] != "hello" || evt.Sender != bob.id {
			t.Fatalf("get event: %+v %v", evt, err)
		}

		// Transaction IDs are idempotent per device.
		r1 := acctDo(t, b, "PUT", "/_matrix/client/v3/rooms/"+esc(string(room))+"/send/m.room.message/txn-1", bob.tok, map[string]any{"msgtype": "m.text", "body": "once"})
		r2 := acctDo(t, b, "PUT", "/_matrix/client/v3/rooms/"+esc(string(room))+"/send/m.room.message/txn-1", bob.tok, map[string]any{"msgtype": "m.text", "body": "once"})
		if r1.status != 200 || r1.body["event_id"] == nil || r1.body["event_id"] != r2.body["event_id"] {
			t.Fatalf("txn idempotence: %v / %v", r1.body, r2.body)
		}
		// The same transaction ID in another room is another transaction.
		other, err := bob.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		r3 := acctDo(t, b, "PUT", "/_matrix/client/v3/rooms/"+esc(string(other.RoomID))+"/send/m.room.message/txn-1", bob.tok, map[string]any{"msgtype": "m.text", "body": "once"})
		if r3.status != 200 || r3.body["event_id"] == r1.body["event_id"] {
			t.Fatalf("txn ID reused across rooms returned the first room's event: %v", r3.body)
		}

		// Bob raising his own power level is refused and changes nothing.
		var pl event.PowerLevelsEventContent
		if err := bob.cli.StateEvent(ctx, room, event.StatePowerLevels, "", &pl); err != nil {
			t.Fatal(err)
		}
		before := pl.GetUserLevel(bob.id)
		pl.SetUserLevel(bob.id, 100)
		_, err = bob.cli.SendStateEvent(ctx, room, event.StatePowerLevels, "", &pl)
		acctWantErr(t, err, 403, "M_FORBIDDEN")
		var after event.PowerLevelsEventContent
		if err := alice.cli.StateEvent(ctx, room, event.StatePowerLevels, "", &after); err != nil || after.GetUserLevel(bob.id) != before {
			t.Fatalf("power levels changed after refusal: %v %v", after.GetUserLevel(bob.id), err)
		}

		// Members and joined members.
		jm, err := alice.cli.JoinedMembers(ctx, room)
		if err != nil || len(jm.Joined) != 2 {
			t.Fatalf("joined members: %+v %v", jm, err)
		}
		m := acctDo(t, b, "GET", "/_matrix/client/v3/rooms/"+esc(string(room))+"/members?membership=join", alice.tok, nil)
		if chunk, _ := m.body["chunk"].([]any); m.status != 200 || len(chunk) != 2 {
			t.Fatalf("members: %d %v", m.status, m.body)
		}

		// A ban sticks: the banned user cannot re-join, and state stays.
		if _, err := alice.cli.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: bob.id, Reason: "spam"}); err != nil {
			t.Fatalf("ban: %v", err)
		}
		_, err = bob.cli.JoinRoomByID(ctx, room)
		acctWantErr(t, err, 403, "M_FORBIDDEN")
		if mem := acctDo(t, b, "GET", "/_matrix/client/v3/rooms/"+esc(string(room))+"/state/m.room.member/"+esc(string(bob.id)), alice.tok, nil); mem.body["membership"] != "ban" {
			t.Fatalf("membership after refused re-join: %v", mem.body)
		}
		if _, err := alice.cli.UnbanUser(ctx, room, &mautrix.ReqUnbanUser{UserID: bob.id}); err != nil {
			t.Fatalf("unban: %v", err)
		}

		// Redaction strips content and links the redaction.
		msg, _ := alice.cli.SendText(ctx, room, "oops")
		if _, err := alice.cli.RedactEvent(ctx, room, msg.EventID, mautrix.ReqRedact{Reason: "typo"}); err != nil {
			t.Fatalf("redact: %v", err)
		}
		red := acctDo(t, b, "GET", "/_matrix/client/v3/rooms/"+esc(string(room))+"/event/"+esc(string(msg.EventID)), alice.tok, nil)
		content, _ := red.body["content"].(map[string]any)
		unsigned, _ := red.body["unsigned"].(map[string]any)
		if len(content) != 0 || unsigned["redacted_because"] == nil {
			t.Fatalf("redacted event: %v", red.body)
		}

		// Oversized events are refused with 413.
		big := strings.Repeat("x", 70000)
		_, err = alice.cli.SendText(ctx, room, big)
		acctWantErr(t, err, 413, "M_TOO_LARGE")

		// Leave, then forget.
		if _, err := alice.cli.LeaveRoom(ctx, room); err != nil {
			t.Fatalf("leave: %v", err)
		}
		if _, err := alice.cli.ForgetRoom(ctx, room); err != nil {
			t.Fatalf("forget: %v", err)
		}
		jr, err := alice.cli.JoinedRooms(ctx)
		if err != nil || len(jr.JoinedRooms) != 0 {
			t.Fatalf("joined rooms after leave: %+v %v", jr, err)
		}
	})
}

func TestRoomErrors(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice := newRoomUser(t, b, "alice")
		acctDo(t, b, "POST", "/_matrix/client/v3/createRoom", alice.tok, map[string]any{"room_version": "99"}).want(t, 400, "M_UNSUPPORTED_ROOM_VERSION")
		acctDo(t, b, "POST", "/_matrix/client/v3/createRoom", alice.tok, map[string]any{"initial_state": []any{map[string]any{"type": "m.room.topic", "state_key": 5, "content": map[string]any{}}}}).want(t, 400, "M_BAD_JSON")
		acctDo(t, b, "POST", "/_matrix/client/v3/createRoom", alice.tok, `{"name": `).want(t, 400, "M_NOT_JSON")
		acctDo(t, b, "PUT", "/_matrix/client/v3/rooms/%21nope%3Ahearth.test/send/m.room.message/1", alice.tok, map[string]any{"body": "x"}).want(t, 404, "M_NOT_FOUND")
		acctDo(t, b, "POST", "/_matrix/client/v3/join/%23missing%3Ahearth.test", alice.tok, map[string]any{}).want(t, 404, "M_NOT_FOUND")
		r := acctDo(t, b, "POST", "/_matrix/client/v3/createRoom", alice.tok, map[string]any{"room_alias_name": "dup"})
		if r.status != 200 {
			t.Fatalf("createRoom: %v", r.body)
		}
		acctDo(t, b, "POST", "/_matrix/client/v3/createRoom", alice.tok, map[string]any{"room_alias_name": "dup"}).want(t, 400, "M_ROOM_IN_USE")
		room := esc(r.body["room_id"].(string))
		acctDo(t, b, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/1", alice.tok, `[1,2]`).want(t, 400, "M_BAD_JSON")
		acctDo(t, b, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/2", alice.tok, `{"body": 9007199254740992}`).want(t, 400, "M_BAD_JSON")
		acctDo(t, b, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/3", alice.tok, `{"body": 1.5}`).want(t, 400, "M_BAD_JSON")
		acctDo(t, b, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/4", alice.tok, `{"body": NaN}`).want(t, 400, "M_NOT_JSON")
		acctDo(t, b, "PUT", "/_matrix/client/v3/rooms/"+room+"/state/m.room.canonical_alias", alice.tok, map[string]any{"alias": "#other:hearth.test"}).want(t, 400, "M_BAD_ALIAS")
		acctDo(t, b, "PUT", "/_matrix/client/v3/rooms/"+room+"/state/"+strings.Repeat("t", 256), alice.tok, map[string]any{}).want(t, 400, "M_BAD_JSON")
		acctDo(t, b, "GET", "/_matrix/client/v3/rooms/"+room+"/state/m.room.topic", alice.tok, nil).want(t, 404, "M_NOT_FOUND")
	})
}

// TestEveryRoomVersion creates a room of each version 1-12 and runs a
// join, a message, a state change and a redaction through it.
func TestEveryRoomVersion(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob := newRoomUser(t, b, "alice"), newRoomUser(t, b, "bob")
		for v := 1; v <= 12; v++ {
			created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomVersion: id.RoomVersion(fmt.Sprint(v)), Preset: "public_chat"})
			if err != nil {
				t.Fatalf("v%d createRoom: %v", v, err)
			}
			room := created.RoomID
			if _, err := bob.cli.JoinRoomByID(ctx, room); err != nil {
				t.Fatalf("v%d join: %v", v, err)
			}
			msg, err := bob.cli.SendText(ctx, room, "hi")
			if err != nil {
				t.Fatalf("v%d send: %v", v, err)
			}
			if _, err := alice.cli.SendStateEvent(ctx, room, event.StateTopic, "", map[string]string{"topic": "v" + fmt.Sprint(v)}); err != nil {
				t.Fatalf("v%d topic: %v", v, err)
			}
			if _, err := alice.cli.RedactEvent(ctx, room, msg.EventID); err != nil {
				t.Fatalf("v%d redact: %v", v, err)
			}
			var create map[string]any
			if err := bob.cli.StateEvent(ctx, room, event.StateCreate, "", &create); err != nil || create["room_version"] != fmt.Sprint(v) {
				t.Fatalf("v%d create content %v %v", v, create, err)
			}
		}
		if r := acctDo(t, b, "GET", "/_matrix/client/v3/joined_rooms", bob.tok, nil); len(r.body["joined_rooms"].([]any)) != 12 || r.status != http.StatusOK {
			t.Fatalf("joined rooms: %v", r.body)
		}
	})
}

func TestRoomUnsignedMembershipAndIdempotentJoin(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob := newRoomUser(t, b, "alice"), newRoomUser(t, b, "bob")
		created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		if _, err := bob.cli.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.SendText(ctx, room, "hi"); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		members := acctDo(t, b, "GET", "/_matrix/client/v3/rooms/"+esc(string(room))+"/members", alice.tok, nil)
		if chunk, _ := members.body["chunk"].([]any); len(chunk) != 2 {
			t.Fatalf("members: %v", members.body)
		}
		// A second join with nothing changed made no second member event.
		msgs := acctDo(t, b, "GET", "/_matrix/client/v3/rooms/"+esc(string(room))+"/messages?dir=b&limit=50", bob.tok, nil)
		joins := 0
		chunk := msgs.body["chunk"].([]any)
		want := "leave" // Bob's membership at each event, oldest first
		for i := len(chunk) - 1; i >= 0; i-- {
			ev := chunk[i].(map[string]any)
			if ev["type"] == "m.room.member" && ev["state_key"] == string(bob.id) {
				joins++
				want = "join"
			}
			if got := ev["unsigned"].(map[string]any)["membership"]; got != want {
				t.Errorf("%s %v: unsigned.membership %v, want %s", ev["type"], ev["state_key"], got, want)
			}
		}
		if joins != 1 {
			t.Fatalf("bob has %d join events, want 1", joins)
		}
	})
}

// TestVersionsAndCapabilities checks what the server advertises: spec
// versions up to v1.11 (authenticated media, which Element only uses when
// v1.11 is listed) and the room versions 1-12 with 12 the default.
func TestVersionsAndCapabilities(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice := newRoomUser(t, b, "alice")
		v, err := alice.cli.Versions(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if !v.ContainsGreaterOrEqual(mautrix.SpecV111) {
			t.Fatalf("versions %v do not include v1.11", v.Versions)
		}
		caps, err := alice.cli.Capabilities(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if caps.RoomVersions == nil || caps.RoomVersions.Default != "11" || len(caps.RoomVersions.Available) != 12 {
			t.Fatalf("room versions capability: %+v", caps.RoomVersions)
		}
	})
}

// TestEmptyFeatureEndpoints: what Element asks for at start-up and in its
// settings answers with the spec's empty shapes, behind authentication.
func TestEmptyFeatureEndpoints(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice := newRoomUser(t, b, "alice")
		for path, key := range map[string]string{"/account/3pid": "threepids", "/pushers": "pushers"} {
			r := acctDo(t, b, "GET", "/_matrix/client/v3"+path, alice.tok, nil)
			if list, ok := r.body[key].([]any); r.status != 200 || !ok || len(list) != 0 {
				t.Errorf("%s: %d %v", path, r.status, r.body)
			}
			acctDo(t, b, "GET", "/_matrix/client/v3"+path, "", nil).want(t, 401, "M_MISSING_TOKEN")
		}
		for _, path := range []string{"/thirdparty/protocols", "/voip/turnServer"} {
			if r := acctDo(t, b, "GET", "/_matrix/client/v3"+path, alice.tok, nil); r.status != 200 || len(r.body) != 0 {
				t.Errorf("%s: %d %v", path, r.status, r.body)
			}
		}
	})
}

// TestCreatorJoinCarriesProfile: a new account's display name is its
// localpart (as in Synapse), and the creator's join in createRoom carries
// the display name and avatar, as every join does.
func TestCreatorJoinCarriesProfile(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice := newSyncUser(t, b, "alice")
		name, err := alice.cli.GetDisplayName(ctx, alice.id)
		if err != nil || name.DisplayName != "alice" {
			t.Fatalf("a new account's display name: %+v %v", name, err)
		}
		if err := alice.cli.SetAvatarURL(ctx, id.MustParseContentURI("mxc://hearth.test/avatar")); err != nil {
			t.Fatal(err)
		}
		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		var m event.MemberEventContent
		if err := alice.cli.StateEvent(ctx, room.RoomID, event.StateMember, string(alice.id), &m); err != nil {
			t.Fatal(err)
		}
		if m.Membership != event.MembershipJoin || m.Displayname != "alice" || m.AvatarURL != "mxc://hearth.test/avatar" {
			t.Errorf("the creator's join: %+v", m)
		}
	})
}

// TestConcurrentSendsAndTxnIDs: many clients sending into one room at once,
// with requests that repeat each other's transaction IDs, get one event
// per transaction and lose none of the others' messages (sends are
// pipelined through the store's group commit: a repeated transaction ID
// must never fail the messages queued after it).
func TestConcurrentSendsAndTxnIDs(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob := newRoomUser(t, b, "alice"), newRoomUser(t, b, "bob")
		created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		if _, err := bob.cli.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		const repeaters, txns, others = 4, 20, 40
		var mu sync.Mutex
		byTxn := map[string]map[string]bool{}
		var wg sync.WaitGroup
		for range repeaters {
			wg.Go(func() {
				for i := range txns {
					txn := fmt.Sprintf("txn-%d", i)
					r := acctDo(t, b, "PUT", "/_matrix/client/v3/rooms/"+esc(string(room))+"/send/m.room.message/"+txn, bob.tok,
						map[string]any{"msgtype": "m.text", "body": txn})
					id, _ := r.body["event_id"].(string)
					if r.status != 200 || id == "" {
						t.Errorf("bob's %s: %d %v", txn, r.status, r.body)
						return
					}
					mu.Lock()
					if byTxn[txn] == nil {
						byTxn[txn] = map[string]bool{}
					}
					byTxn[txn][id] = true
					mu.Unlock()
				}
			})
		}
		wg.Go(func() {
			for i := range others {
				if _, err := alice.cli.SendText(ctx, room, fmt.Sprintf("alice %d", i)); err != nil {
					t.Errorf("alice's message %d: %v", i, err)
					return
				}
			}
		})
		wg.Wait()
		if t.Failed() {
			return
		}
		for txn, ids := range byTxn {
			if len(ids) != 1 {
				t.Fatalf("%s answered %d event IDs", txn, len(ids))
			}
		}
		msgs := acctDo(t, b, "GET", "/_matrix/client/v3/rooms/"+esc(string(room))+"/messages?dir=b&limit=1000", alice.tok, nil)
		count := map[string]int{}
		for _, ev := range msgs.body["chunk"].([]any) {
			ev := ev.(map[string]any)
			if ev["type"] == "m.room.message" {
				count[ev["sender"].(string)]++
			}
		}
		if count[string(bob.id)] != txns || count[string(alice.id)] != others {
			t.Fatalf("the room holds %d of bob's messages (want %d) and %d of alice's (want %d)",
				count[string(bob.id)], txns, count[string(alice.id)], others)
		}
	})
}

// TestTxnCheckedMark: a send that looked its transaction ID up in the
// store before taking the room's lock (timeline.NewEvent.TxnChecked) is
// still refused when a write of that ID ended after its look-up began, and
// a send that did not look is checked against the store.
func TestTxnCheckedMark(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice := newRoomUser(t, b, "alice")
		created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := string(created.RoomID)
		tl := b.Server.Timeline()
		ev := func(txn string, mark timeline.TxnMark) timeline.NewEvent {
			return timeline.NewEvent{Type: "m.room.message", Sender: string(alice.id),
				Content: map[string]any{"msgtype": "m.text", "body": txn}, DeviceID: "DEV", TxnID: txn, TxnScope: "scope",
				TxnChecked: mark}
		}
		send := func(txn string, mark timeline.TxnMark) error {
			_, err := tl.Send(ctx, room, ev(txn, mark))
			return err
		}
		// The mark of a look-up that found nothing, as a handler takes it.
		_, stale, err := tl.EventIDByTxn(ctx, string(alice.id), "DEV", "scope", "t1")
		if !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("look-up before the first send: %v, want ErrNotFound", err)
		}
		if err := send("t1", stale); err != nil {
			t.Fatalf("first send: %v", err)
		}
		// As if this send's look-up had run before the first one ended.
		// Refused before it is queued, it leaves the message before it in
		// the same batch alone (refused by the store, it would fail the
		// whole batch).
		out, err := tl.Send(ctx, room, ev("other", timeline.TxnMark{}), ev("t1", stale))
		if !errors.Is(err, storage.ErrConflict) || len(out) != 1 {
			t.Fatalf("repeat with a mark from before the first ended: %d events, %v; want 1 event and ErrConflict", len(out), err)
		}
		if err := send("t1", timeline.TxnMark{}); !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("repeat without a mark: %v, want ErrConflict", err)
		}
		// Another ID is not held up by t1's end.
		if err := send("t2", stale); err != nil {
			t.Fatalf("t2: %v", err)
		}
	})
}

// TestTxnFilter: the client transaction ID filter (timeline/txnfilter.go)
// knows the IDs stored before the server started and those stored since,
// so a repeated ID always finds its event, and an ID never used is
// answered without the store.
func TestTxnFilter(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice := newRoomUser(t, b, "alice")
		created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := string(created.RoomID)
		who, err := alice.cli.Whoami(ctx)
		if err != nil {
			t.Fatal(err)
		}
		send := func(txn string) string {
			t.Helper()
			resp, err := alice.cli.SendMessageEvent(ctx, created.RoomID, event.EventMessage,
				map[string]any{"msgtype": "m.text", "body": txn}, mautrix.ReqSendEvent{TransactionID: txn})
			if err != nil {
				t.Fatalf("send %s: %v", txn, err)
			}
			return string(resp.EventID)
		}
		loaded := func() *timeline.Timeline {
			t.Helper()
			tl := b.Server.Timeline()
			deadline := time.Now().Add(10 * time.Second)
			for !tl.TxnFilterLoaded() {
				if time.Now().After(deadline) {
					t.Fatal("the transaction ID filter was not loaded within 10 s")
				}
				time.Sleep(5 * time.Millisecond)
			}
			return tl
		}
		lookUp := func(tl *timeline.Timeline, txn string) (string, error) {
			id, _, err := tl.EventIDByTxn(ctx, string(alice.id), who.DeviceID.String(), "send "+room, txn)
			return id, err
		}
		before := send("before-restart")
		b.Restart(t)
		tl := loaded()
		if id, err := lookUp(tl, "before-restart"); err != nil || id != before {
			t.Fatalf("an ID stored before the start: %q, %v; want %s", id, err, before)
		}
		if again := send("before-restart"); again != before {
			t.Fatalf("the repeated send answered %s, want %s", again, before)
		}
		after := send("after-load")
		if id, err := lookUp(tl, "after-load"); err != nil || id != after {
			t.Fatalf("an ID stored after the load: %q, %v; want %s", id, err, after)
		}
		if _, err := lookUp(tl, "never-used"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("an ID never used: %v, want ErrNotFound", err)
		}
	})
}
