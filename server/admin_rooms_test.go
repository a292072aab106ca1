package server_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/synapseadmin"

	"hearth/config"
	"hearth/server/servertest"
	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// roomsUser is a logged-in mautrix client for a seeded user.
func roomsUser(t *testing.T, b *servertest.Bundle, localpart string, admin bool) *mautrix.Client {
	t.Helper()
	tok := seedUser(t, b.Store, localpart, localpart+"pw", admin)
	cli, err := mautrix.NewClient(b.URL, id.UserID("@"+localpart+":hearth.test"), tok)
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

func mustCreateRoom(t *testing.T, cli *mautrix.Client, req *mautrix.ReqCreateRoom) id.RoomID {
	t.Helper()
	resp, err := cli.CreateRoom(context.Background(), req)
	if err != nil {
		t.Fatalf("create room: %v", err)
	}
	return resp.RoomID
}

func mustSend(t *testing.T, cli *mautrix.Client, roomID id.RoomID, text string) id.EventID {
	t.Helper()
	resp, err := cli.SendText(context.Background(), roomID, text)
	if err != nil {
		t.Fatalf("send %q: %v", text, err)
	}
	return resp.EventID
}

// roomRowsLeft counts, straight from the database, every row that still
// mentions the room: in each table with a room_id column (found from the
// schema, so a table added later is checked too), plus the rows keyed by
// the room's event IDs and state groups. Only the block and the record of
// the deletion may stay.
func roomRowsLeft(t *testing.T, e storagetest.Engine, roomID string, eventIDs []string, groups []int64) map[string]int {
	t.Helper()
	var db *sql.DB
	var err error
	var tablesQ string
	if e.Options.Postgres != "" {
		db, err = sql.Open("pgx", e.Options.Postgres)
		tablesQ = `SELECT table_name FROM information_schema.columns WHERE column_name = 'room_id' AND table_schema = current_schema()`
	} else {
		db, err = sql.Open("sqlite", "file:"+e.Options.SQLitePath)
		tablesQ = `SELECT m.name FROM sqlite_master m JOIN pragma_table_info(m.name) p WHERE m.type = 'table' AND p.name = 'room_id'`
	}
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(tablesQ)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, name)
	}
	rows.Close()
	if len(tables) < 10 {
		t.Fatalf("found only %d tables with a room_id column: %v", len(tables), tables)
	}
	left := map[string]int{}
	count := func(label, q string, args ...any) {
		var n int
		if err := db.QueryRow(q, args...).Scan(&n); err != nil {
			t.Fatalf("%s: %v", label, err)
		}
		if n > 0 {
			left[label] += n
		}
	}
	for _, tb := range tables {
		if tb == "blocked_rooms" || tb == "room_deletes" {
			continue
		}
		count(tb, `SELECT COUNT(*) FROM `+tb+` WHERE room_id = $1`, roomID)
	}
	for _, ev := range eventIDs {
		count("events", `SELECT COUNT(*) FROM events WHERE event_id = $1`, ev)
		count("event_edges", `SELECT COUNT(*) FROM event_edges WHERE prev_event_id = $1`, ev)
	}
	// Rows keyed by their event's stream position, left without it.
	for _, tb := range []string{"event_edges", "event_txn_ids"} {
		count(tb, `SELECT COUNT(*) FROM `+tb+` t WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.stream_ordering = t.stream_ordering)`)
	}
	for _, g := range groups {
		count("state_group_entries", `SELECT COUNT(*) FROM state_group_entries WHERE group_id = $1`, g)
	}
	return left
}

// roomFootprint lists the room's event IDs and state groups before a purge.
func roomFootprint(t *testing.T, st *storage.Store, roomID string) ([]string, []int64) {
	t.Helper()
	evs, err := st.RoomEvents(context.Background(), roomID, 0, 1<<62, 10000, false)
	if err != nil || len(evs) == 0 {
		t.Fatalf("room events: %d %v", len(evs), err)
	}
	var ids []string
	var groups []int64
	for _, e := range evs {
		ids = append(ids, e.EventID)
		if e.StateGroup != 0 && !slices.Contains(groups, e.StateGroup) {
			groups = append(groups, e.StateGroup)
		}
	}
	return ids, groups
}

func TestAdminRoomsNonAdmin(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		userTok := seedUser(t, b.Store, "mallory", "mallorypw", false)
		base := b.URL + "/_synapse/admin"
		room := esc("!r:hearth.test")
		for _, ep := range []struct{ method, path string }{
			{"GET", "/v1/rooms"}, {"GET", "/v1/rooms/" + room}, {"DELETE", "/v1/rooms/" + room},
			{"GET", "/v1/rooms/" + room + "/members"}, {"GET", "/v1/rooms/" + room + "/state"},
			{"GET", "/v1/rooms/" + room + "/messages"}, {"GET", "/v1/rooms/" + room + "/context/$e"},
			{"GET", "/v1/rooms/" + room + "/timestamp_to_event?ts=0"}, {"GET", "/v1/rooms/" + room + "/block"},
			{"PUT", "/v1/rooms/" + room + "/block"}, {"GET", "/v1/rooms/" + room + "/forward_extremities"},
			{"DELETE", "/v1/rooms/" + room + "/forward_extremities"}, {"POST", "/v1/rooms/" + room + "/make_room_admin"},
			{"POST", "/v1/join/" + room}, {"GET", "/v1/users/@mallory:hearth.test/joined_rooms"},
			{"GET", "/v1/users/@mallory:hearth.test/memberships"}, {"DELETE", "/v2/rooms/" + room},
			{"GET", "/v2/rooms/" + room + "/delete_status"}, {"GET", "/v2/rooms/delete_status/abc"},
			{"GET", "/v1/event_reports"}, {"GET", "/v1/event_reports/1"}, {"DELETE", "/v1/event_reports/1"},
			{"POST", "/v1/send_server_notice"}, {"PUT", "/v1/send_server_notice/txn1"},
			{"GET", "/v1/federation/destinations"}, {"GET", "/v1/federation/destinations/example.org"},
			{"GET", "/v1/federation/destinations/example.org/rooms"},
			{"POST", "/v1/federation/destinations/example.org/reset_connection"},
		} {
			status, body := call(t, ep.method, base+ep.path, userTok, map[string]any{})
			if status != 403 || body["errcode"] != "M_FORBIDDEN" {
				t.Errorf("%s %s as non-admin: %d %v, want 403 M_FORBIDDEN", ep.method, ep.path, status, body)
			}
		}
	})
}

func TestAdminRoomsAPI(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := context.Background()
		root := roomsUser(t, b, "root", true)
		alice := roomsUser(t, b, "alice", false)
		bob := roomsUser(t, b, "bob", false)
		carol := roomsUser(t, b, "carol", false)
		adm := adminClient(t, b.URL, root.AccessToken)
		base := b.URL + "/_synapse/admin"
		tok := root.AccessToken

		coffee := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Name: "Coffee", Topic: "Beans", RoomAliasName: "coffee",
			Preset: "public_chat", Visibility: "public"})
		if _, err := bob.JoinRoom(ctx, string(coffee), nil); err != nil {
			t.Fatal(err)
		}
		var sent []id.EventID
		for i := range 3 {
			sent = append(sent, mustSend(t, alice, coffee, fmt.Sprintf("message %d", i)))
		}
		secret := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Name: "Aardvark", Preset: "private_chat",
			InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{Raw: map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}}})
		closed := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})

		// The list: order, direction, search, paging.
		list, err := adm.ListRooms(ctx, synapseadmin.ReqListRoom{})
		if err != nil || list.TotalRooms != 3 || len(list.Rooms) != 3 {
			t.Fatalf("list: %+v %v", list, err)
		}
		if list.Rooms[0].RoomID != secret || list.Rooms[1].RoomID != coffee || list.Rooms[2].RoomID != closed {
			t.Errorf("default order (name, unnamed last): %v %v %v", list.Rooms[0].Name, list.Rooms[1].Name, list.Rooms[2].Name)
		}
		c := list.Rooms[1]
		if c.Name != "Coffee" || c.CanonicalAlias != "#coffee:hearth.test" || c.JoinedMembers != 2 || c.JoinedLocalMembers != 2 ||
			!c.Public || c.JoinRules != "public" || c.Creator != alice.UserID || !c.Federatable || c.StateEvents < 6 || c.Encryption != "" {
			t.Errorf("coffee entry: %+v", c)
		}
		if list.Rooms[0].Encryption != "m.megolm.v1.aes-sha2" || list.Rooms[0].Public || list.Rooms[0].JoinRules != "invite" {
			t.Errorf("secret entry: %+v", list.Rooms[0])
		}
		if l, _ := adm.ListRooms(ctx, synapseadmin.ReqListRoom{Direction: mautrix.DirectionBackward}); len(l.Rooms) != 3 || l.Rooms[0].RoomID != closed {
			t.Errorf("dir=b: %+v", l.Rooms)
		}
		if l, _ := adm.ListRooms(ctx, synapseadmin.ReqListRoom{OrderBy: "joined_members"}); len(l.Rooms) != 3 || l.Rooms[0].RoomID != coffee {
			t.Errorf("joined_members (largest first): %+v", l.Rooms)
		}
		for term, want := range map[string]int{"COFF": 1, "#coffee": 1, strings.TrimPrefix(string(closed), "!")[:8]: 1, "nothing": 0} {
			if l, err := adm.ListRooms(ctx, synapseadmin.ReqListRoom{SearchTerm: term}); err != nil || l.TotalRooms != want || len(l.Rooms) != want {
				t.Errorf("search %q: %d rooms, want %d (%v)", term, l.TotalRooms, want, err)
			}
		}
		status, body := call(t, "GET", base+"/v1/rooms?limit=1&from=1", tok, nil)
		if status != 200 || body["offset"] != float64(1) || body["total_rooms"] != float64(3) || body["next_batch"] != float64(2) || body["prev_batch"] != float64(0) {
			t.Errorf("paging: %d %v", status, body)
		}
		for _, q := range []string{"order_by=password", "dir=x", "from=-1", "search_term="} {
			if status, body = call(t, "GET", base+"/v1/rooms?"+q, tok, nil); status != 400 || body["errcode"] != "M_INVALID_PARAM" {
				t.Errorf("%s: %d %v", q, status, body)
			}
		}
		for _, ob := range []string{"canonical_alias", "joined_local_members", "version", "creator", "encryption", "federatable",
			"public", "join_rules", "guest_access", "history_visibility", "state_events", "name"} {
			if l, err := adm.ListRooms(ctx, synapseadmin.ReqListRoom{OrderBy: ob}); err != nil || len(l.Rooms) != 3 {
				t.Errorf("order_by=%s: %v", ob, err)
			}
		}

		// Details, members, state.
		status, body = call(t, "GET", base+"/v1/rooms/"+esc(string(coffee)), tok, nil)
		if status != 200 || body["name"] != "Coffee" || body["topic"] != "Beans" || body["joined_members"] != float64(2) ||
			body["forgotten"] != false || body["avatar"] != nil || body["room_type"] != nil || body["joined_local_devices"] != float64(2) {
			t.Errorf("details: %d %v", status, body)
		}
		if status, body = call(t, "GET", base+"/v1/rooms/"+esc("!nope:hearth.test"), tok, nil); status != 404 || body["errcode"] != "M_NOT_FOUND" {
			t.Errorf("unknown room: %d %v", status, body)
		}
		members, err := adm.RoomMembers(ctx, coffee)
		if err != nil || members.Total != 2 || !slices.Equal(members.Members, []id.UserID{alice.UserID, bob.UserID}) {
			t.Errorf("members: %+v %v", members, err)
		}
		status, body = call(t, "GET", base+"/v1/rooms/"+esc(string(coffee))+"/state", tok, nil)
		state, _ := body["state"].([]any)
		if status != 200 || len(state) < 6 || state[0].(map[string]any)["type"] != "m.room.canonical_alias" {
			t.Errorf("state: %d %v", status, body)
		}

		// History as admin, without being in the room.
		msgs, err := adm.RoomMessages(ctx, coffee, "", "", mautrix.DirectionBackward, nil, 2)
		if err != nil || len(msgs.Chunk) != 2 || msgs.Chunk[0].ID != sent[2] || msgs.Chunk[1].ID != sent[1] || msgs.End == "" {
			t.Fatalf("messages: %+v %v", msgs, err)
		}
		more, err := adm.RoomMessages(ctx, coffee, msgs.End, "", mautrix.DirectionBackward, &mautrix.FilterPart{Types: []event.Type{event.EventMessage}}, 10)
		if err != nil || len(more.Chunk) != 1 || more.Chunk[0].ID != sent[0] {
			t.Errorf("messages page 2 (filtered): %+v %v", more, err)
		}
		status, body = call(t, "GET", base+"/v1/rooms/"+esc(string(coffee))+"/context/"+esc(string(sent[1]))+"?limit=2", tok, nil)
		if ev, _ := body["event"].(map[string]any); status != 200 || ev["event_id"] != string(sent[1]) ||
			len(body["events_before"].([]any)) != 1 || len(body["events_after"].([]any)) != 1 {
			t.Errorf("context: %d %v", status, body)
		}
		if status, body = call(t, "GET", base+"/v1/rooms/"+esc(string(coffee))+"/context/"+esc("$missing"), tok, nil); status != 404 {
			t.Errorf("context of a missing event: %d %v", status, body)
		}
		status, body = call(t, "GET", base+"/v1/rooms/"+esc(string(coffee))+"/timestamp_to_event?ts=0&dir=f", tok, nil)
		if create, _ := b.Store.CurrentStateEvent(ctx, string(coffee), "m.room.create", ""); status != 200 || body["event_id"] != create.EventID {
			t.Errorf("timestamp_to_event: %d %v", status, body)
		}
		if status, _ = call(t, "GET", base+"/v1/rooms/"+esc(string(coffee))+"/timestamp_to_event?ts=0&dir=b", tok, nil); status != 404 {
			t.Errorf("timestamp_to_event before everything: %d", status)
		}

		// Forward extremities.
		status, body = call(t, "GET", base+"/v1/rooms/"+esc(string(coffee))+"/forward_extremities", tok, nil)
		if res, _ := body["results"].([]any); status != 200 || body["count"] != float64(1) || len(res) != 1 || res[0].(map[string]any)["event_id"] != string(sent[2]) {
			t.Errorf("forward extremities: %d %v", status, body)
		}
		if status, body = call(t, "DELETE", base+"/v1/rooms/"+esc(string(coffee))+"/forward_extremities", tok, nil); status != 200 || body["deleted"] != float64(0) {
			t.Errorf("delete forward extremities: %d %v", status, body)
		}

		// A user's rooms.
		status, body = call(t, "GET", base+"/v1/users/"+esc(string(bob.UserID))+"/joined_rooms", tok, nil)
		if jr, _ := body["joined_rooms"].([]any); status != 200 || body["total"] != float64(1) || len(jr) != 1 || jr[0] != string(coffee) {
			t.Errorf("joined_rooms: %d %v", status, body)
		}
		status, body = call(t, "GET", base+"/v1/users/"+esc(string(alice.UserID))+"/memberships", tok, nil)
		if ms, _ := body["memberships"].(map[string]any); status != 200 || len(ms) != 3 || ms[string(secret)] != "join" {
			t.Errorf("memberships: %d %v", status, body)
		}

		// Blocking refuses joins and sends until unblocked.
		if bs, err := adm.GetRoomBlockStatus(ctx, coffee); err != nil || bs.Block {
			t.Fatalf("block status: %+v %v", bs, err)
		}
		if err := adm.BlockRoom(ctx, coffee, synapseadmin.ReqBlockRoom{Block: true}); err != nil {
			t.Fatal(err)
		}
		if bs, _ := adm.GetRoomBlockStatus(ctx, coffee); !bs.Block || bs.UserID != root.UserID {
			t.Errorf("blocked status: %+v", bs)
		}
		if _, err := bob.SendText(ctx, coffee, "still here?"); !errorIs(err, mautrix.MForbidden) {
			t.Errorf("send to a blocked room: %v", err)
		}
		if _, err := carol.JoinRoom(ctx, string(coffee), nil); !errorIs(err, mautrix.MForbidden) {
			t.Errorf("join a blocked room: %v", err)
		}
		if status, body = call(t, "PUT", base+"/v1/rooms/"+esc(string(coffee))+"/block", tok, map[string]any{}); status != 400 {
			t.Errorf("block without a value: %d %v", status, body)
		}
		if err := adm.BlockRoom(ctx, coffee, synapseadmin.ReqBlockRoom{Block: false}); err != nil {
			t.Fatal(err)
		}
		mustSend(t, bob, coffee, "back")
		if err := adm.BlockRoom(ctx, "!elsewhere:remote.test", synapseadmin.ReqBlockRoom{Block: true}); err != nil {
			t.Fatalf("block an unknown room: %v", err)
		}
		if bs, _ := adm.GetRoomBlockStatus(ctx, "!elsewhere:remote.test"); !bs.Block {
			t.Error("unknown room not blocked")
		}

		// make_room_admin: root is not in the private room; it is invited by
		// alice, joins, and gets the highest level (alice, a v12 creator, has
		// unlimited power, so that is 100).
		if err := adm.MakeRoomAdmin(ctx, string(secret), synapseadmin.ReqMakeRoomAdmin{UserID: root.UserID}); err != nil {
			t.Fatalf("make_room_admin: %v", err)
		}
		if m, _ := b.Store.Membership(ctx, string(secret), string(root.UserID)); m != "join" {
			t.Errorf("root's membership after make_room_admin: %q", m)
		}
		var pl event.PowerLevelsEventContent
		if err := root.StateEvent(ctx, secret, event.StatePowerLevels, "", &pl); err != nil || pl.GetUserLevel(root.UserID) != 100 {
			t.Errorf("root's level %d (%v)", pl.GetUserLevel(root.UserID), err)
		}
		if err := adm.MakeRoomAdmin(ctx, "#coffee:hearth.test", synapseadmin.ReqMakeRoomAdmin{UserID: carol.UserID}); err != nil {
			t.Fatalf("make_room_admin by alias: %v", err)
		}
		if m, _ := b.Store.Membership(ctx, string(coffee), string(carol.UserID)); m != "join" {
			t.Errorf("carol's membership after make_room_admin: %q", m)
		}
		if status, body = call(t, "POST", base+"/v1/rooms/"+esc("!nope:hearth.test")+"/make_room_admin", tok, map[string]any{}); status != 404 {
			t.Errorf("make_room_admin in an unknown room: %d %v", status, body)
		}

		// Force-join: into a private room only where the admin can invite.
		dave := roomsUser(t, b, "dave", false)
		if err := adm.JoinUserToRoom(ctx, secret, synapseadmin.ReqJoinUserToRoom{UserID: dave.UserID}); err != nil {
			t.Fatalf("force join where the admin can invite: %v", err)
		}
		if m, _ := b.Store.Membership(ctx, string(secret), string(dave.UserID)); m != "join" {
			t.Errorf("dave's membership: %q", m)
		}
		if err := adm.JoinUserToRoom(ctx, closed, synapseadmin.ReqJoinUserToRoom{UserID: dave.UserID}); !errorIs(err, mautrix.MForbidden) {
			t.Errorf("force join into a closed room: %v", err)
		}
		status, body = call(t, "POST", base+"/v1/join/"+esc("#coffee:hearth.test"), tok, map[string]any{"user_id": "@dave:hearth.test"})
		if status != 200 || body["room_id"] != string(coffee) {
			t.Errorf("force join by alias: %d %v", status, body)
		}
		if status, body = call(t, "POST", base+"/v1/join/"+esc(string(coffee)), tok, map[string]any{"user_id": "@x:remote.test"}); status != 400 {
			t.Errorf("force join of a remote user: %d %v", status, body)
		}

		// Synchronous delete with block: everyone local leaves, the alias
		// goes, the room is purged and stays blocked.
		evIDs, groups := roomFootprint(t, b.Store, string(coffee))
		res, err := adm.DeleteRoomSync(ctx, coffee, synapseadmin.ReqDeleteRoom{Block: true})
		if err != nil {
			t.Fatalf("delete: %v", err)
		}
		slices.Sort(res.KickedUsers)
		if !slices.Equal(res.KickedUsers, []id.UserID{alice.UserID, bob.UserID, carol.UserID, dave.UserID}) ||
			!slices.Equal(res.LocalAliases, []id.RoomAlias{"#coffee:hearth.test"}) || len(res.FailedToKickUsers) != 0 {
			t.Errorf("delete result: %+v", res)
		}
		if left := roomRowsLeft(t, e, string(coffee), evIDs, groups); len(left) != 0 {
			t.Errorf("rows left after purge: %v", left)
		}
		if status, _ = call(t, "GET", base+"/v1/rooms/"+esc(string(coffee)), tok, nil); status != 404 {
			t.Errorf("deleted room still listed: %d", status)
		}
		if bs, _ := adm.GetRoomBlockStatus(ctx, coffee); !bs.Block {
			t.Error("deleted room not blocked")
		}
		if _, _, err := b.Store.AliasRoom(ctx, "#coffee:hearth.test"); err == nil {
			t.Error("alias survived")
		}
		if jr, _ := bob.JoinedRooms(ctx); len(jr.JoinedRooms) != 0 {
			t.Errorf("bob still in %v", jr.JoinedRooms)
		}
		if l, _ := adm.ListRooms(ctx, synapseadmin.ReqListRoom{}); l.TotalRooms != 2 {
			t.Errorf("rooms after delete: %d", l.TotalRooms)
		}
		// The other rooms are untouched.
		if evs, _ := b.Store.RoomEvents(ctx, string(secret), 0, 1<<62, 100, false); len(evs) < 5 {
			t.Errorf("secret room lost events: %d", len(evs))
		}
		if status, body = call(t, "DELETE", base+"/v1/rooms/"+esc("!nope:hearth.test"), tok, map[string]any{}); status != 404 {
			t.Errorf("delete unknown room: %d %v", status, body)
		}
	})
}

// errorIs reports whether err is a Matrix error with the code of want.
func errorIs(err error, want mautrix.RespError) bool {
	var re mautrix.HTTPError
	if err == nil {
		return false
	}
	if h, ok := err.(mautrix.HTTPError); ok {
		re = h
	} else {
		return strings.Contains(err.Error(), want.ErrCode)
	}
	return re.RespError != nil && re.RespError.ErrCode == want.ErrCode
}

// waitDelete polls a deletion until it finishes.
func waitDelete(t *testing.T, adm *synapseadmin.Client, deleteID string) synapseadmin.RespDeleteRoomStatus {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := adm.DeleteRoomStatus(context.Background(), deleteID)
		if err == nil && (st.Status == "complete" || st.Status == "failed") {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("delete %s did not finish: %+v %v", deleteID, st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAdminRoomDeleteAsync(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := context.Background()
		root := roomsUser(t, b, "root", true)
		alice := roomsUser(t, b, "alice", false)
		bob := roomsUser(t, b, "bob", false)
		base := b.URL + "/_synapse/admin"
		adm := adminClient(t, b.URL, root.AccessToken)

		room := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Name: "Doomed", Preset: "public_chat", RoomAliasName: "doomed"})
		if _, err := bob.JoinRoom(ctx, string(room), nil); err != nil {
			t.Fatal(err)
		}
		mustSend(t, bob, room, "hello")
		evIDs, groups := roomFootprint(t, b.Store, string(room))

		// Move the members to a new room, as Synapse's new_room_user_id.
		resp, err := adm.DeleteRoom(ctx, room, synapseadmin.ReqDeleteRoom{NewRoomUserID: root.UserID, Message: "moved", RoomName: "Elsewhere"})
		if err != nil || resp.DeleteID == "" {
			t.Fatalf("v2 delete: %+v %v", resp, err)
		}
		st := waitDelete(t, adm, resp.DeleteID)
		if st.Status != "complete" || st.ShutdownRoom.NewRoomID == "" || len(st.ShutdownRoom.KickedUsers) != 2 {
			t.Fatalf("status: %+v", st)
		}
		if left := roomRowsLeft(t, e, string(room), evIDs, groups); len(left) != 0 {
			t.Errorf("rows left after async purge: %v", left)
		}
		newRoom := st.ShutdownRoom.NewRoomID
		if m, _ := b.Store.Membership(ctx, string(newRoom), string(bob.UserID)); m != "join" {
			t.Errorf("bob was not moved to the new room: %q", m)
		}
		if msgs, err := adm.RoomMessages(ctx, newRoom, "", "", mautrix.DirectionBackward, &mautrix.FilterPart{Types: []event.Type{event.EventMessage}}, 5); err != nil ||
			len(msgs.Chunk) != 1 || msgs.Chunk[0].Content.Raw["body"] != "moved" {
			t.Errorf("new room message: %+v %v", msgs, err)
		}
		if ri, err := adm.RoomInfo(ctx, newRoom); err != nil || ri.Name != "Elsewhere" {
			t.Errorf("new room: %+v %v", ri, err)
		}
		status, body := call(t, "GET", base+"/v2/rooms/"+esc(string(room))+"/delete_status", root.AccessToken, nil)
		if res, _ := body["results"].([]any); status != 200 || len(res) != 1 || res[0].(map[string]any)["delete_id"] != resp.DeleteID ||
			res[0].(map[string]any)["status"] != "complete" {
			t.Errorf("status by room: %d %v", status, body)
		}
		if status, _ = call(t, "GET", base+"/v2/rooms/delete_status/nope", root.AccessToken, nil); status != 404 {
			t.Errorf("unknown delete id: %d", status)
		}
		if status, _ = call(t, "GET", base+"/v2/rooms/"+esc("!nope:hearth.test")+"/delete_status", root.AccessToken, nil); status != 404 {
			t.Errorf("room never deleted: %d", status)
		}
		if status, body = call(t, "DELETE", base+"/v2/rooms/"+esc("!nope:hearth.test"), root.AccessToken, map[string]any{}); status != 404 {
			t.Errorf("v2 delete of an unknown room: %d %v", status, body)
		}

		// A deletion interrupted by a restart (recorded as purging, room
		// still there) is resumed by the next process.
		crashed := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Name: "Crashed", Preset: "public_chat"})
		mustSend(t, alice, crashed, "before the crash")
		cIDs, cGroups := roomFootprint(t, b.Store, string(crashed))
		if err := b.Store.CreateRoomDelete(ctx, &storage.RoomDelete{DeleteID: "resumeme", RoomID: string(crashed), Status: storage.DeletePurging,
			Params: []byte(`{"block":true,"hearth_actor":{"UserID":"@root:hearth.test","Via":"api"}}`)}); err != nil {
			t.Fatal(err)
		}
		// And one started just before a restart finishes either way.
		racing := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Name: "Racing", Preset: "public_chat"})
		rIDs, rGroups := roomFootprint(t, b.Store, string(racing))
		raceResp, err := adm.DeleteRoom(ctx, racing, synapseadmin.ReqDeleteRoom{})
		if err != nil {
			t.Fatal(err)
		}
		b.Restart(t)
		adm = adminClient(t, b.URL, root.AccessToken)
		if st := waitDelete(t, adm, "resumeme"); st.Status != "complete" || len(st.ShutdownRoom.KickedUsers) != 1 {
			t.Errorf("resumed deletion: %+v", st)
		}
		if left := roomRowsLeft(t, e, string(crashed), cIDs, cGroups); len(left) != 0 {
			t.Errorf("rows left after resumed purge: %v", left)
		}
		if bs, _ := adm.GetRoomBlockStatus(ctx, crashed); !bs.Block {
			t.Error("resumed deletion did not block")
		}
		if st := waitDelete(t, adm, raceResp.DeleteID); st.Status != "complete" {
			t.Errorf("deletion across a restart: %+v", st)
		}
		if left := roomRowsLeft(t, e, string(racing), rIDs, rGroups); len(left) != 0 {
			t.Errorf("rows left after a deletion across a restart: %v", left)
		}
		// A finished status survives restarts.
		b.Restart(t)
		adm = adminClient(t, b.URL, root.AccessToken)
		if st, err := adm.DeleteRoomStatus(ctx, resp.DeleteID); err != nil || st.Status != "complete" || st.ShutdownRoom.NewRoomID != newRoom {
			t.Errorf("status after restart: %+v %v", st, err)
		}
	})
}

func TestEventReports(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := context.Background()
		root := roomsUser(t, b, "root", true)
		alice := roomsUser(t, b, "alice", false)
		bob := roomsUser(t, b, "bob", false)
		tok := root.AccessToken
		base := b.URL + "/_synapse/admin/v1/event_reports"

		room := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Name: "Reports", Preset: "public_chat", RoomAliasName: "reports"})
		ev := mustSend(t, alice, room, "objectionable")
		report := func(cli *mautrix.Client, roomID id.RoomID, eventID string, body map[string]any) (int, map[string]any) {
			return call(t, "POST", b.URL+"/_matrix/client/v3/rooms/"+esc(string(roomID))+"/report/"+esc(eventID), cli.AccessToken, body)
		}
		// Bob is not in the room and it is not world-readable: the event is
		// as good as missing for him.
		if status, body := report(bob, room, string(ev), map[string]any{"reason": "x"}); status != 404 || body["errcode"] != "M_NOT_FOUND" {
			t.Errorf("report by an outsider: %d %v", status, body)
		}
		if _, err := bob.JoinRoom(ctx, string(room), nil); err != nil {
			t.Fatal(err)
		}
		if status, body := report(bob, room, "$missing", map[string]any{"reason": "x"}); status != 404 {
			t.Errorf("report of a missing event: %d %v", status, body)
		}
		if status, body := report(bob, room, string(ev), map[string]any{"score": 5}); status != 400 {
			t.Errorf("score out of range: %d %v", status, body)
		}
		if status, body := report(bob, room, string(ev), map[string]any{"reason": "spam", "score": -100}); status != 200 {
			t.Fatalf("report: %d %v", status, body)
		}
		if status, body := report(alice, room, string(ev), map[string]any{}); status != 200 {
			t.Fatalf("report without reason: %d %v", status, body)
		}
		if status, body := call(t, "POST", b.URL+"/_matrix/client/v3/rooms/"+esc(string(room))+"/report", bob.AccessToken, map[string]any{"reason": "bad room"}); status != 200 {
			t.Errorf("room report: %d %v", status, body)
		}
		if status, _ := call(t, "POST", b.URL+"/_matrix/client/v3/rooms/"+esc("!nope:hearth.test")+"/report", bob.AccessToken, map[string]any{"reason": "x"}); status != 404 {
			t.Errorf("report of an unknown room: %d", status)
		}
		if status, body := call(t, "POST", b.URL+"/_matrix/client/v3/users/"+esc("@alice:hearth.test")+"/report", bob.AccessToken, map[string]any{"reason": "rude"}); status != 200 {
			t.Errorf("user report: %d %v", status, body)
		}
		if status, _ := call(t, "POST", b.URL+"/_matrix/client/v3/users/"+esc("@ghost:hearth.test")+"/report", bob.AccessToken, map[string]any{"reason": "x"}); status != 404 {
			t.Errorf("report of an unknown user: %d", status)
		}
		if rooms, users, err := b.Store.CountReports(ctx); err != nil || rooms != 1 || users != 1 {
			t.Errorf("room/user reports stored: %d %d %v", rooms, users, err)
		}

		// The admin side: newest first, filters, details, delete.
		status, body := call(t, "GET", base, tok, nil)
		reps, _ := body["event_reports"].([]any)
		if status != 200 || body["total"] != float64(2) || len(reps) != 2 {
			t.Fatalf("list: %d %v", status, body)
		}
		first := reps[1].(map[string]any) // dir=b: bob's, the older, is second
		if first["user_id"] != string(bob.UserID) || first["reason"] != "spam" || first["score"] != float64(-100) ||
			first["room_id"] != string(room) || first["name"] != "Reports" || first["sender"] != string(alice.UserID) ||
			first["canonical_alias"] != "#reports:hearth.test" || first["event_id"] != string(ev) {
			t.Errorf("report entry: %v", first)
		}
		if reps[0].(map[string]any)["reason"] != nil {
			t.Errorf("report without reason: %v", reps[0])
		}
		if status, body = call(t, "GET", base+"?dir=f&limit=1", tok, nil); body["next_token"] != float64(1) ||
			body["event_reports"].([]any)[0].(map[string]any)["user_id"] != string(bob.UserID) {
			t.Errorf("dir=f limit=1: %d %v", status, body)
		}
		if status, body = call(t, "GET", base+"?user_id=bob", tok, nil); body["total"] != float64(1) {
			t.Errorf("user_id filter: %d %v", status, body)
		}
		if status, body = call(t, "GET", base+"?room_id="+esc("!nope"), tok, nil); body["total"] != float64(0) {
			t.Errorf("room_id filter: %d %v", status, body)
		}
		reportID := fmt.Sprint(first["id"])
		status, body = call(t, "GET", base+"/"+reportID, tok, nil)
		if ej, _ := body["event_json"].(map[string]any); status != 200 || ej["event_id"] != nil && ej["type"] != "m.room.message" || ej["sender"] != string(alice.UserID) {
			t.Errorf("report details: %d %v", status, body)
		}
		if status, _ = call(t, "GET", base+"/abc", tok, nil); status != 400 {
			t.Errorf("bad report id: %d", status)
		}
		if status, _ = call(t, "DELETE", base+"/"+reportID, tok, nil); status != 200 {
			t.Errorf("delete report: %d", status)
		}
		if status, body = call(t, "GET", base+"/"+reportID, tok, nil); status != 404 || body["errcode"] != "M_NOT_FOUND" {
			t.Errorf("deleted report: %d %v", status, body)
		}
		if status, _ = call(t, "DELETE", base+"/"+reportID, tok, nil); status != 404 {
			t.Errorf("delete twice: %d", status)
		}
	})
}

func TestServerNotices(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e, func(c *config.Config) {
			c.ServerNotices = config.ServerNotices{SystemMXIDLocalpart: "notices", SystemMXIDDisplayName: "Hearth notices", RoomName: "Notices"}
		})
		ctx := context.Background()
		root := roomsUser(t, b, "root", true)
		alice := roomsUser(t, b, "alice", false)
		base := b.URL + "/_synapse/admin/v1/send_server_notice"
		notice := map[string]any{"user_id": "@alice:hearth.test", "content": map[string]any{"msgtype": "m.text", "body": "maintenance tonight"}}

		status, body := call(t, "POST", base, root.AccessToken, notice)
		first, _ := body["event_id"].(string)
		if status != 200 || first == "" {
			t.Fatalf("send: %d %v", status, body)
		}
		roomID, err := b.Store.ServerNoticeRoom(ctx, "@alice:hearth.test")
		if err != nil {
			t.Fatal(err)
		}
		if m, _ := b.Store.Membership(ctx, roomID, "@alice:hearth.test"); m != "invite" {
			t.Errorf("alice's membership: %q", m)
		}
		tags, err := alice.GetTags(ctx, id.RoomID(roomID))
		if err != nil || !hasTag(tags.Tags, "m.server_notice") {
			t.Errorf("tags: %+v %v", tags, err)
		}
		if u, err := b.Store.UserByID(ctx, "@notices:hearth.test"); err != nil || u.DisplayName != "Hearth notices" {
			t.Errorf("system user: %+v %v", u, err)
		}
		if ri, err := adminClient(t, b.URL, root.AccessToken).RoomInfo(ctx, id.RoomID(roomID)); err != nil || ri.Name != "Notices" {
			t.Errorf("room: %+v %v", ri, err)
		}
		// The invite cannot be rejected; once joined, the room can be left.
		if _, err := alice.LeaveRoom(ctx, id.RoomID(roomID)); err == nil || !strings.Contains(err.Error(), "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM") {
			t.Errorf("reject notice invite: %v", err)
		}
		if _, err := alice.JoinRoom(ctx, roomID, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.SendText(ctx, id.RoomID(roomID), "reply"); err == nil {
			t.Error("user could write in the notices room")
		}
		if _, err := alice.LeaveRoom(ctx, id.RoomID(roomID)); err != nil {
			t.Fatalf("leave after joining: %v", err)
		}
		// The next notice invites her back into the same room.
		status, body = call(t, "PUT", base+"/txn1", root.AccessToken, notice)
		second, _ := body["event_id"].(string)
		if status != 200 || second == "" || second == first {
			t.Fatalf("second notice: %d %v", status, body)
		}
		if again, _ := b.Store.ServerNoticeRoom(ctx, "@alice:hearth.test"); again != roomID {
			t.Errorf("new notices room %s, want %s", again, roomID)
		}
		if m, _ := b.Store.Membership(ctx, roomID, "@alice:hearth.test"); m != "invite" {
			t.Errorf("alice's membership after the second notice: %q", m)
		}
		// PUT with the same transaction ID is idempotent.
		if status, body = call(t, "PUT", base+"/txn1", root.AccessToken, notice); status != 200 || body["event_id"] != second {
			t.Errorf("repeated PUT: %d %v, want %s", status, body, second)
		}
		msgs, err := adminClient(t, b.URL, root.AccessToken).RoomMessages(ctx, id.RoomID(roomID), "", "", mautrix.DirectionBackward,
			&mautrix.FilterPart{Types: []event.Type{event.EventMessage}}, 10)
		if err != nil || len(msgs.Chunk) != 2 {
			t.Errorf("notices in the room: %d %v", len(msgs.Chunk), err)
		}
		for _, bad := range []struct {
			body   map[string]any
			status int
		}{
			{map[string]any{"user_id": "@ghost:hearth.test", "content": map[string]any{"body": "x"}}, 404},
			{map[string]any{"user_id": "@x:remote.test", "content": map[string]any{"body": "x"}}, 400},
			{map[string]any{"user_id": "@alice:hearth.test"}, 400},
			{map[string]any{"content": map[string]any{"body": "x"}}, 400},
		} {
			if status, body = call(t, "POST", base, root.AccessToken, bad.body); status != bad.status {
				t.Errorf("%v: %d %v, want %d", bad.body, status, body, bad.status)
			}
		}
	})
	// Without server_notices configured, the endpoint says so.
	b := servertest.Start(t, storagetest.Engine{Name: "sqlite", Options: storage.Options{SQLitePath: t.TempDir() + "/h.db"}})
	tok := seedUser(t, b.Store, "root", "rootpw", true)
	seedUser(t, b.Store, "alice", "alicepw", false)
	status, body := call(t, "POST", b.URL+"/_synapse/admin/v1/send_server_notice", tok,
		map[string]any{"user_id": "@alice:hearth.test", "content": map[string]any{"body": "x"}})
	if status != 400 || !strings.Contains(fmt.Sprint(body["error"]), "not enabled") {
		t.Errorf("notices off: %d %v", status, body)
	}
}

func hasTag(tags map[event.RoomTag]event.TagMetadata, tag event.RoomTag) bool {
	_, ok := tags[tag]
	return ok
}
