package server_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// Simplified sliding sync (MSC4186) over HTTP with mautrix-go's client, on
// every storage engine: lists, ranges and filters, room fields,
// required_state, connections and positions, long polling, extensions.

type ssResp struct {
	TxnID string `json:"txn_id"`
	Pos   string `json:"pos"`
	Lists map[string]struct {
		Count int `json:"count"`
		Ops   []struct {
			Op      string   `json:"op"`
			Range   []int    `json:"range"`
			RoomIDs []string `json:"room_ids"`
		} `json:"ops"`
	} `json:"lists"`
	Rooms      map[string]*ssRoom         `json:"rooms"`
	Extensions map[string]json.RawMessage `json:"extensions"`
}

type ssRoom struct {
	Name   string `json:"name"`
	Avatar string `json:"avatar"`
	Heroes []struct {
		UserID      string `json:"user_id"`
		DisplayName string `json:"displayname"`
	} `json:"heroes"`
	Initial           bool           `json:"initial"`
	IsDM              bool           `json:"is_dm"`
	InviteState       []*event.Event `json:"invite_state"`
	RequiredState     []*event.Event `json:"required_state"`
	Timeline          []*event.Event `json:"timeline"`
	Limited           *bool          `json:"limited"`
	PrevBatch         string         `json:"prev_batch"`
	NumLive           *int           `json:"num_live"`
	JoinedCount       *int           `json:"joined_count"`
	InvitedCount      *int           `json:"invited_count"`
	NotificationCount *int           `json:"notification_count"`
	HighlightCount    *int           `json:"highlight_count"`
	BumpStamp         *int64         `json:"bump_stamp"`
}

// ssSync runs one sliding sync request; pos "" starts a connection.
func ssSync(t *testing.T, u roomUser, pos string, timeoutMS int, body any) *ssResp {
	t.Helper()
	resp, err := ssTry(t, u, pos, timeoutMS, body)
	if err != nil {
		t.Fatalf("sliding sync as %s (pos %q): %v", u.id, pos, err)
	}
	return resp
}

func ssTry(t *testing.T, u roomUser, pos string, timeoutMS int, body any) (*ssResp, error) {
	t.Helper()
	q := map[string]string{"timeout": strconv.Itoa(timeoutMS)}
	if pos != "" {
		q["pos"] = pos
	}
	url := u.cli.BuildURLWithQuery(mautrix.ClientURLPath{"unstable", "org.matrix.simplified_msc3575", "sync"}, q)
	var resp ssResp
	_, err := u.cli.MakeRequest(t.Context(), http.MethodPost, url, body, &resp)
	return &resp, err
}

// listOrder is the room IDs of a list's first op.
func listOrder(t *testing.T, r *ssResp, list string) []string {
	t.Helper()
	l, ok := r.Lists[list]
	if !ok {
		t.Fatalf("response has no list %q: %+v", list, r.Lists)
	}
	if len(l.Ops) == 0 {
		return nil
	}
	return l.Ops[0].RoomIDs
}

func namedRoom(t *testing.T, u roomUser, name string, extra ...func(*mautrix.ReqCreateRoom)) id.RoomID {
	t.Helper()
	req := &mautrix.ReqCreateRoom{Preset: "public_chat", Name: name}
	for _, f := range extra {
		f(req)
	}
	created, err := u.cli.CreateRoom(t.Context(), req)
	if err != nil {
		t.Fatalf("createRoom %q: %v", name, err)
	}
	return created.RoomID
}

func join(t *testing.T, u roomUser, room id.RoomID) {
	t.Helper()
	if _, err := u.cli.JoinRoomByID(t.Context(), room); err != nil {
		t.Fatalf("%s join %s: %v", u.id, room, err)
	}
}

func TestSlidingSyncListsAndRoomFields(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		// Three rooms Bob created and Alice joined, bumped in the order
		// one, two, three; and a DM without a name.
		one, two, three := namedRoom(t, bob, "One"), namedRoom(t, bob, "Two"), namedRoom(t, bob, "Three")
		for _, r := range []id.RoomID{one, two, three} {
			join(t, alice, r)
		}
		dm := namedRoom(t, bob, "", func(r *mautrix.ReqCreateRoom) {
			r.Preset = "trusted_private_chat"
			r.Invite = []id.UserID{alice.id}
			r.IsDirect = true
		})
		join(t, alice, dm)
		if err := alice.cli.SetAccountData(t.Context(), "m.direct", map[string][]id.RoomID{string(bob.id): {dm}}); err != nil {
			t.Fatal(err)
		}
		// An avatar for room one, an invite for Carol to room two.
		if _, err := bob.cli.SendStateEvent(t.Context(), one, event.StateRoomAvatar, "", map[string]string{"url": "mxc://hearth.test/avatar"}); err != nil {
			t.Fatal(err)
		}
		carol := newSyncUser(t, b, "carol")
		if _, err := bob.cli.InviteUser(t.Context(), two, &mautrix.ReqInviteUser{UserID: carol.id}); err != nil {
			t.Fatal(err)
		}
		send(t, bob, one, "first")
		send(t, bob, two, "second")
		send(t, bob, three, "third")
		// A mention of Alice: a highlight.
		if _, err := bob.cli.SendMessageEvent(t.Context(), three, event.EventMessage, map[string]any{
			"msgtype": "m.text", "body": "alice: are you there?", "m.mentions": map[string]any{"user_ids": []id.UserID{alice.id}},
		}); err != nil {
			t.Fatal(err)
		}

		body := map[string]any{
			"lists": map[string]any{"all": map[string]any{
				"ranges":         [][]int{{0, 2}},
				"timeline_limit": 1,
				"required_state": [][]string{{"m.room.name", ""}, {"m.room.member", "$ME"}, {"m.room.create", "*"}},
			}},
		}
		body["txn_id"] = "t1"
		first := ssSync(t, alice, "", 0, body)
		if first.Pos == "" || first.TxnID != "t1" {
			t.Fatalf("pos %q txn_id %q", first.Pos, first.TxnID)
		}
		delete(body, "txn_id")
		if got := first.Lists["all"].Count; got != 4 {
			t.Fatalf("count %d, want 4", got)
		}
		want := []string{string(three), string(two), string(one)}
		if got := listOrder(t, first, "all"); !slices.Equal(got, want) {
			t.Fatalf("order %v, want %v (by recency)", got, want)
		}
		if first.Rooms[string(dm)] != nil {
			t.Fatal("the DM is out of range but was sent")
		}
		r3 := first.Rooms[string(three)]
		if r3 == nil || r3.Name != "Three" || !r3.Initial || r3.IsDM {
			t.Fatalf("room three: %+v", r3)
		}
		if len(r3.Timeline) != 1 || bodies(r3.Timeline)[0] != "alice: are you there?" || r3.Limited == nil || !*r3.Limited {
			t.Fatalf("timeline_limit 1: %+v limited %v", bodies(r3.Timeline), r3.Limited)
		}
		if r3.PrevBatch == "" || r3.NumLive == nil || *r3.NumLive != 0 {
			t.Fatalf("prev_batch %q num_live %v", r3.PrevBatch, r3.NumLive)
		}
		// prev_batch pages back from the timeline with /messages.
		older, err := alice.cli.Messages(t.Context(), three, r3.PrevBatch, "", mautrix.DirectionBackward, nil, 10)
		if err != nil {
			t.Fatal(err)
		}
		if got := bodies(older.Chunk); len(got) == 0 || got[0] != "third" {
			t.Fatalf("back-paginated %v, want third first", got)
		}
		if *r3.JoinedCount != 2 || *r3.InvitedCount != 0 {
			t.Fatalf("counts joined %d invited %d", *r3.JoinedCount, *r3.InvitedCount)
		}
		if *r3.NotificationCount != 2 || *r3.HighlightCount != 1 {
			t.Fatalf("notification %d highlight %d, want 2 and 1", *r3.NotificationCount, *r3.HighlightCount)
		}
		var keys []string
		for _, ev := range r3.RequiredState {
			keys = append(keys, ev.Type.Type+"|"+*ev.StateKey)
		}
		slices.Sort(keys)
		if wantKeys := []string{"m.room.create|", "m.room.member|" + string(alice.id), "m.room.name|"}; !slices.Equal(keys, wantKeys) {
			t.Fatalf("required_state %v, want %v", keys, wantKeys)
		}
		if r1, r2 := first.Rooms[string(one)], first.Rooms[string(two)]; r1.Avatar != "mxc://hearth.test/avatar" || r2.Avatar != "" || *r2.InvitedCount != 1 || *r2.JoinedCount != 2 {
			t.Fatalf("avatar %q, room two invited %d joined %d", r1.Avatar, *r2.InvitedCount, *r2.JoinedCount)
		}
		if r3.BumpStamp == nil || first.Rooms[string(two)].BumpStamp == nil || *r3.BumpStamp <= *first.Rooms[string(two)].BumpStamp {
			t.Fatal("bump stamps do not follow recency")
		}

		// The DM, through a wider range: heroes instead of a name, is_dm.
		body["lists"].(map[string]any)["all"].(map[string]any)["ranges"] = [][]int{{0, 3}}
		wide := ssSync(t, alice, first.Pos, 0, body)
		d := wide.Rooms[string(dm)]
		if d == nil || d.Name != "" || !d.IsDM || len(d.Heroes) != 1 || d.Heroes[0].UserID != string(bob.id) || d.Heroes[0].DisplayName != "bob" {
			t.Fatalf("DM entry: %+v", d)
		}
		if len(wide.Rooms) != 1 {
			t.Fatalf("rooms already sent came again: %v", mapKeysOf(wide.Rooms))
		}

		// Bob writes in room one: it moves to the top, and only it comes,
		// with the new event, live.
		bump := send(t, bob, one, "bump")
		inc := ssSync(t, alice, wide.Pos, 0, body)
		if got := listOrder(t, inc, "all"); len(got) != 4 || got[0] != string(one) || got[1] != string(three) {
			t.Fatalf("after the bump: %v", got)
		}
		r1 := inc.Rooms[string(one)]
		if r1 == nil || r1.Initial || len(r1.Timeline) != 1 || r1.Timeline[0].ID != bump || *r1.NumLive != 1 || *r1.Limited {
			t.Fatalf("room one after the bump: %+v", r1)
		}
		if len(inc.Rooms) != 1 {
			t.Fatalf("unchanged rooms came again: %v", mapKeysOf(inc.Rooms))
		}
		if *r1.BumpStamp <= *r3.BumpStamp {
			t.Fatal("bump stamp did not grow")
		}
		// A state event that is not a bump type (a topic) does not move a
		// room; the room comes (it changed) with the same bump stamp.
		if _, err := bob.cli.SendStateEvent(t.Context(), two, event.StateTopic, "", map[string]string{"topic": "t"}); err != nil {
			t.Fatal(err)
		}
		inc2 := ssSync(t, alice, inc.Pos, 0, body)
		if r2 := inc2.Rooms[string(two)]; r2 == nil || *r2.BumpStamp != *first.Rooms[string(two)].BumpStamp {
			t.Fatalf("room two after a topic: %+v", r2)
		}
		// Every list comes each time, as in Synapse.
		if got := listOrder(t, inc2, "all"); len(got) != 4 || got[0] != string(one) {
			t.Fatalf("list after a topic: %v", got)
		}

		// Alice leaves room two: it comes once more with her leave, then
		// drops out of the list.
		if _, err := alice.cli.LeaveRoom(t.Context(), two); err != nil {
			t.Fatal(err)
		}
		left := ssSync(t, alice, inc2.Pos, 0, body)
		lr := left.Rooms[string(two)]
		if lr == nil || len(lr.Timeline) != 1 || lr.Timeline[0].Type != event.StateMember || lr.Timeline[0].Content.Raw["membership"] != "leave" {
			t.Fatalf("the leave: %+v", lr)
		}
		gone := ssSync(t, alice, left.Pos, 0, body)
		if c := gone.Lists["all"].Count; c != 3 || slices.Contains(listOrder(t, gone, "all"), string(two)) {
			t.Fatalf("after the leave: count %d, rooms %v", c, listOrder(t, gone, "all"))
		}

		// Alice reads room three: it comes again with its counts at zero,
		// and its place in the list unchanged.
		last := r3.Timeline[len(r3.Timeline)-1].ID
		if err := alice.cli.SendReceipt(t.Context(), three, last, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		read := ssSync(t, alice, gone.Pos, 0, body)
		if r := read.Rooms[string(three)]; r == nil || *r.NotificationCount != 0 || *r.HighlightCount != 0 || len(r.Timeline) != 0 {
			t.Fatalf("after reading: %+v", r)
		}
		if got := listOrder(t, read, "all"); len(got) != 3 || got[0] != string(one) || got[1] != string(three) {
			t.Fatalf("a receipt moved the list: %v", got)
		}
	})
}

func mapKeysOf[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestSlidingSyncUnknownPos(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice := newSyncUser(t, b, "alice")
		namedRoom(t, alice, "R")
		body := map[string]any{"conn_id": "main", "lists": map[string]any{"l": map[string]any{"ranges": [][]int{{0, 9}}, "timeline_limit": 1}}}
		_, err := ssTry(t, alice, "nonsense", 0, body)
		acctWantErr(t, err, 400, "M_UNKNOWN_POS")
		first := ssSync(t, alice, "", 0, body)
		// A pos belongs to its connection.
		other := map[string]any{"conn_id": "other", "lists": body["lists"]}
		_, err = ssTry(t, alice, first.Pos, 0, other)
		acctWantErr(t, err, 400, "M_UNKNOWN_POS")
		// The same pos may be retried (a lost response); once the next
		// one is used, the older ones are gone.
		lost := ssSync(t, alice, first.Pos, 0, body)
		retried := ssSync(t, alice, first.Pos, 0, body)
		third := ssSync(t, alice, retried.Pos, 0, body)
		for _, gone := range []string{first.Pos, lost.Pos} {
			_, err = ssTry(t, alice, gone, 0, body)
			acctWantErr(t, err, 400, "M_UNKNOWN_POS")
		}
		// Connections live in memory: after a restart the client starts over.
		b.Restart(t)
		_, err = ssTry(t, alice, third.Pos, 0, body)
		acctWantErr(t, err, 400, "M_UNKNOWN_POS")

		// Bad requests.
		for _, bad := range []any{
			map[string]any{"lists": map[string]any{"l": map[string]any{"ranges": [][]int{{5, 1}}}}},
			map[string]any{"lists": map[string]any{"l": map[string]any{"ranges": [][]int{{-1, 1}}}}},
			map[string]any{"lists": map[string]any{"l": map[string]any{"timeline_limit": -1}}},
			map[string]any{"room_subscriptions": map[string]any{"!a:b": map[string]any{"required_state": [][]string{{"m.room.name"}}}}},
		} {
			_, err := ssTry(t, alice, "", 0, bad)
			acctWantErr(t, err, 400, "M_INVALID_PARAM")
		}
		_, err = ssTry(t, alice, "", -1, body)
		acctWantErr(t, err, 400, "M_INVALID_PARAM")
	})
}

func TestSlidingSyncLongPoll(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		room := sharedRoom(t, alice, bob)
		body := map[string]any{"lists": map[string]any{"l": map[string]any{"ranges": [][]int{{0, 9}}, "timeline_limit": 5}}}
		first := ssSync(t, bob, "", 0, body)

		// Nothing new: a short poll times out with nothing.
		start := time.Now()
		idle := ssSync(t, bob, first.Pos, 300, body)
		if time.Since(start) < 250*time.Millisecond || len(idle.Rooms) != 0 || idle.Lists["l"].Count != 1 || idle.Pos == "" {
			t.Fatalf("idle poll returned after %v: %+v", time.Since(start), idle)
		}
		// A parked poll wakes for Alice's message.
		done := make(chan *ssResp, 1)
		go func() {
			r, _ := ssTry(t, bob, idle.Pos, 30000, body)
			done <- r
		}()
		waitParked(t, b, 1)
		ev := send(t, alice, room, "wake up")
		select {
		case r := <-done:
			if r == nil || r.Rooms[string(room)] == nil || r.Rooms[string(room)].Timeline[0].ID != ev {
				t.Fatalf("woken poll: %+v", r)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the long poll did not wake")
		}
	})
}

func TestSlidingSyncRequiredStateAndLazyMembers(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob, carol, dave := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob"), newSyncUser(t, b, "carol"), newSyncUser(t, b, "dave")
		room := sharedRoom(t, alice, bob, carol, dave)
		send(t, bob, room, "b1")
		send(t, carol, room, "c1")
		sub := func(rs [][]string, limit int) map[string]any {
			return map[string]any{"room_subscriptions": map[string]any{string(room): map[string]any{"required_state": rs, "timeline_limit": limit}}}
		}
		members := func(r *ssRoom) []string { return memberKeys(r.RequiredState) }

		// $LAZY: the members of the timeline's senders, not the others.
		lazy := sub([][]string{{"m.room.member", "$LAZY"}}, 2)
		first := ssSync(t, dave, "", 0, lazy)
		if got, want := members(first.Rooms[string(room)]), sorted(string(bob.id), string(carol.id)); !slices.Equal(got, want) {
			t.Fatalf("lazy members %v, want %v", got, want)
		}
		// Bob again: already sent on this connection, so not resent;
		// Alice is new.
		send(t, bob, room, "b2")
		send(t, alice, room, "a1")
		inc := ssSync(t, dave, first.Pos, 0, lazy)
		if got, want := members(inc.Rooms[string(room)]), []string{string(alice.id)}; !slices.Equal(got, want) {
			t.Fatalf("incremental lazy members %v, want %v", got, want)
		}

		// Wildcards: every member, every state event, every key of a type
		// for any type.
		all := ssSync(t, dave, "", 0, sub([][]string{{"m.room.member", "*"}}, 0))
		if got := members(all.Rooms[string(room)]); len(got) != 4 {
			t.Fatalf("m.room.member * gave %v", got)
		}
		everything := ssSync(t, dave, "", 0, sub([][]string{{"*", "*"}}, 0))
		if r := everything.Rooms[string(room)]; hasType(r.RequiredState, "m.room.create") == nil || hasType(r.RequiredState, "m.room.join_rules") == nil || len(members(r)) != 4 {
			t.Fatalf("* * lacks state: %d events", len(r.RequiredState))
		}
		byKey := ssSync(t, dave, "", 0, sub([][]string{{"*", string(bob.id)}}, 0))
		if got := members(byKey.Rooms[string(room)]); !slices.Equal(got, []string{string(bob.id)}) {
			t.Fatalf("* with a state key gave %v", got)
		}
		// A wider required_state on the same connection sends the state
		// again; a state change matching it comes incrementally.
		narrow := ssSync(t, dave, "", 0, sub([][]string{{"m.room.name", ""}}, 0))
		wider := ssSync(t, dave, narrow.Pos, 0, sub([][]string{{"m.room.name", ""}, {"m.room.topic", ""}, {"m.room.join_rules", ""}}, 0))
		if r := wider.Rooms[string(room)]; r == nil || hasType(r.RequiredState, "m.room.join_rules") == nil || r.Initial {
			t.Fatalf("wider required_state: %+v", r)
		}
		if _, err := alice.cli.SendStateEvent(t.Context(), room, event.StateTopic, "", map[string]string{"topic": "news"}); err != nil {
			t.Fatal(err)
		}
		topic := ssSync(t, dave, wider.Pos, 0, sub([][]string{{"m.room.name", ""}, {"m.room.topic", ""}, {"m.room.join_rules", ""}}, 0))
		if r := topic.Rooms[string(room)]; r == nil || len(r.RequiredState) != 1 || r.RequiredState[0].Type != event.StateTopic {
			t.Fatalf("topic change: %+v", r)
		}
		// A subscription to a room the user is not in shows nothing.
		outsider := newSyncUser(t, b, "eve")
		if r := ssSync(t, outsider, "", 0, sub([][]string{{"*", "*"}}, 5)); len(r.Rooms) != 0 {
			t.Fatalf("outsider got %v", mapKeysOf(r.Rooms))
		}
	})
}

func sorted(s ...string) []string { slices.Sort(s); return s }

func TestSlidingSyncFilters(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		plain := namedRoom(t, alice, "plain")
		enc := namedRoom(t, alice, "enc", func(r *mautrix.ReqCreateRoom) {
			r.InitialState = []*event.Event{{Type: event.StateEncryption, StateKey: ptr(""), Content: event.Content{Raw: map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}}
		})
		space := namedRoom(t, alice, "space", func(r *mautrix.ReqCreateRoom) { r.CreationContent = map[string]any{"type": "m.space"} })
		if _, err := alice.cli.SendStateEvent(t.Context(), space, event.StateSpaceChild, string(plain), map[string]any{"via": []string{"hearth.test"}}); err != nil {
			t.Fatal(err)
		}
		dm := namedRoom(t, alice, "dm")
		if err := alice.cli.SetAccountData(t.Context(), "m.direct", map[string][]id.RoomID{string(bob.id): {dm}}); err != nil {
			t.Fatal(err)
		}
		if err := alice.cli.AddTag(t.Context(), enc, "m.favourite", 0.5); err != nil {
			t.Fatal(err)
		}
		invited := namedRoom(t, bob, "invite", func(r *mautrix.ReqCreateRoom) { r.Preset = "private_chat"; r.Invite = []id.UserID{alice.id} })

		list := func(f map[string]any) []string {
			body := map[string]any{"lists": map[string]any{"l": map[string]any{"ranges": [][]int{{0, 20}}, "timeline_limit": 0, "filters": f}}}
			r := ssSync(t, alice, "", 0, body)
			return sorted(listOrder(t, r, "l")...)
		}
		ids := func(rs ...id.RoomID) []string {
			var out []string
			for _, r := range rs {
				out = append(out, string(r))
			}
			return sorted(out...)
		}
		for _, tc := range []struct {
			name string
			f    map[string]any
			want []string
		}{
			{"none", nil, ids(plain, enc, space, dm, invited)},
			{"is_dm", map[string]any{"is_dm": true}, ids(dm)},
			{"not is_dm", map[string]any{"is_dm": false}, ids(plain, enc, space, invited)},
			{"is_encrypted", map[string]any{"is_encrypted": true}, ids(enc)},
			{"is_invite", map[string]any{"is_invite": true}, ids(invited)},
			{"not is_invite", map[string]any{"is_invite": false}, ids(plain, enc, space, dm)},
			{"room_types space", map[string]any{"room_types": []any{"m.space"}}, ids(space)},
			{"room_types null", map[string]any{"room_types": []any{nil}, "is_invite": false}, ids(plain, enc, dm)},
			{"not_room_types space", map[string]any{"not_room_types": []any{"m.space"}}, ids(plain, enc, dm, invited)},
			{"spaces", map[string]any{"spaces": []string{string(space)}}, ids(plain)},
			{"tags", map[string]any{"tags": []string{"m.favourite"}}, ids(enc)},
			{"not_tags", map[string]any{"not_tags": []string{"m.favourite"}}, ids(plain, space, dm, invited)},
		} {
			if got := list(tc.f); !slices.Equal(got, tc.want) {
				t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
			}
		}

		// The invite: stripped state, no timeline.
		r := ssSync(t, alice, "", 0, map[string]any{"lists": map[string]any{"l": map[string]any{"ranges": [][]int{{0, 0}}, "timeline_limit": 5, "filters": map[string]any{"is_invite": true}}}})
		inv := r.Rooms[string(invited)]
		if inv == nil || len(inv.InviteState) == 0 || inv.Name != "invite" || len(inv.Timeline) != 0 || hasType(inv.InviteState, "m.room.member") == nil {
			t.Fatalf("invite entry: %+v", inv)
		}
		// Accepting it: the room comes again in full, with its timeline.
		join(t, alice, invited)
		all := map[string]any{"lists": map[string]any{"l": map[string]any{"ranges": [][]int{{0, 0}}, "timeline_limit": 5}}}
		joined := ssSync(t, alice, r.Pos, 0, all)
		if j := joined.Rooms[string(invited)]; j == nil || !j.Initial || len(j.InviteState) != 0 || len(j.Timeline) == 0 || *j.JoinedCount != 2 {
			t.Fatalf("after joining: %+v", j)
		}

		// A direct invite is a DM before m.direct names it.
		direct := namedRoom(t, bob, "", func(r *mautrix.ReqCreateRoom) {
			r.Preset = "trusted_private_chat"
			r.Invite = []id.UserID{alice.id}
			r.IsDirect = true
		})
		if got := list(map[string]any{"is_dm": true, "is_invite": true}); !slices.Equal(got, ids(direct)) {
			t.Fatalf("direct invites: %v, want %v", got, ids(direct))
		}
	})
}

func TestSlidingSyncExtensions(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		who, err := alice.cli.Whoami(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		alice.cli.DeviceID = who.DeviceID
		if who, err = bob.cli.Whoami(t.Context()); err != nil {
			t.Fatal(err)
		}
		bob.cli.DeviceID = who.DeviceID
		room := sharedRoom(t, alice, bob)
		ev := send(t, bob, room, "read me")
		if err := alice.cli.SetRoomAccountData(t.Context(), room, "org.example.room", map[string]any{"n": 1}); err != nil {
			t.Fatal(err)
		}
		if err := alice.cli.SetAccountData(t.Context(), "org.example.global", map[string]any{"n": 1}); err != nil {
			t.Fatal(err)
		}
		if err := bob.cli.SendReceipt(t.Context(), room, ev, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.UserTyping(t.Context(), room, true, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.cli.UploadKeys(t.Context(), &mautrix.ReqUploadKeys{OneTimeKeys: map[id.KeyID]mautrix.OneTimeKey{
			id.NewKeyID(id.KeyAlgorithmSignedCurve25519, "AAAAAQ"): {Key: "a"},
		}}); err != nil {
			t.Fatal(err)
		}
		toDevice := func() {
			t.Helper()
			_, err := bob.cli.SendToDevice(t.Context(), event.Type{Type: "org.example.ping", Class: event.ToDeviceEventType}, &mautrix.ReqSendToDevice{
				Messages: map[id.UserID]map[id.DeviceID]*event.Content{alice.id: {alice.cli.DeviceID: {Raw: map[string]any{"n": 1}}}},
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		toDevice()

		ext := func(since string) map[string]any {
			td := map[string]any{"enabled": true}
			if since != "" {
				td["since"] = since
			}
			return map[string]any{
				"lists": map[string]any{"l": map[string]any{"ranges": [][]int{{0, 5}}, "timeline_limit": 1}},
				"extensions": map[string]any{
					"to_device": td, "e2ee": map[string]any{"enabled": true},
					"account_data": map[string]any{"enabled": true}, "receipts": map[string]any{"enabled": true},
					"typing": map[string]any{"enabled": true},
				},
			}
		}
		type toDev struct {
			NextBatch string         `json:"next_batch"`
			Events    []*event.Event `json:"events"`
		}
		type e2ee struct {
			DeviceLists *struct {
				Changed []string `json:"changed"`
				Left    []string `json:"left"`
			} `json:"device_lists"`
			OTK      map[string]int `json:"device_one_time_keys_count"`
			Fallback []string       `json:"device_unused_fallback_key_types"`
		}
		type acct struct {
			Global []*event.Event            `json:"global"`
			Rooms  map[string][]*event.Event `json:"rooms"`
		}
		type roomsExt struct {
			Rooms map[string]*event.Event `json:"rooms"`
		}
		get := func(r *ssResp, name string, v any) {
			t.Helper()
			raw, ok := r.Extensions[name]
			if !ok {
				t.Fatalf("no %s extension in %v", name, mapKeysOf(r.Extensions))
			}
			if err := json.Unmarshal(raw, v); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}

		first := ssSync(t, alice, "", 0, ext(""))
		var td toDev
		get(first, "to_device", &td)
		if len(td.Events) != 1 || td.Events[0].Type.Type != "org.example.ping" || td.Events[0].Sender != bob.id || td.NextBatch == "" {
			t.Fatalf("to_device: %+v", td)
		}
		var ee e2ee
		get(first, "e2ee", &ee)
		if ee.OTK["signed_curve25519"] != 1 || ee.Fallback == nil || ee.DeviceLists != nil {
			t.Fatalf("e2ee: %+v", ee)
		}
		var ad acct
		get(first, "account_data", &ad)
		if hasType(ad.Global, "org.example.global") == nil || hasType(ad.Global, "m.push_rules") == nil || hasType(ad.Rooms[string(room)], "org.example.room") == nil {
			t.Fatalf("account_data: %+v", ad)
		}
		var rc, ty roomsExt
		get(first, "receipts", &rc)
		if r := rc.Rooms[string(room)]; r == nil || r.Type.Type != "m.receipt" || r.Content.Raw[string(ev)] == nil {
			t.Fatalf("receipts: %+v", rc)
		}
		get(first, "typing", &ty)
		if r := ty.Rooms[string(room)]; r == nil || r.Type.Type != "m.typing" || len(r.Content.Raw["user_ids"].([]any)) != 1 {
			t.Fatalf("typing: %+v", ty)
		}

		// Incremental: the to-device message is acknowledged by since and
		// not sent again; a new one comes. Nothing else changed.
		toDevice()
		if _, err := bob.cli.UserTyping(t.Context(), room, false, 0); err != nil {
			t.Fatal(err)
		}
		// Bob's new device key: a device list change Alice sees.
		if _, err := bob.cli.UploadKeys(t.Context(), &mautrix.ReqUploadKeys{DeviceKeys: &mautrix.DeviceKeys{
			UserID: bob.id, DeviceID: bob.cli.DeviceID, Algorithms: []id.Algorithm{id.AlgorithmMegolmV1},
			Keys: mautrix.KeyMap{id.NewDeviceKeyID(id.KeyAlgorithmEd25519, bob.cli.DeviceID): "x"},
		}}); err != nil {
			t.Fatal(err)
		}
		second := ssSync(t, alice, first.Pos, 0, ext(td.NextBatch))
		var td2 toDev
		get(second, "to_device", &td2)
		if len(td2.Events) != 1 {
			t.Fatalf("to_device after since: %d events", len(td2.Events))
		}
		var ee2 e2ee
		get(second, "e2ee", &ee2)
		if ee2.DeviceLists == nil || !slices.Contains(ee2.DeviceLists.Changed, string(bob.id)) {
			t.Fatalf("device lists: %+v", ee2.DeviceLists)
		}
		var ad2 acct
		get(second, "account_data", &ad2)
		if len(ad2.Global) != 0 || len(ad2.Rooms) != 0 {
			t.Fatalf("unchanged account data sent again: %+v", ad2)
		}
		var rc2, ty2 roomsExt
		get(second, "receipts", &rc2)
		if len(rc2.Rooms) != 0 {
			t.Fatalf("unchanged receipts sent again: %+v", rc2)
		}
		get(second, "typing", &ty2)
		if r := ty2.Rooms[string(room)]; r == nil || len(r.Content.Raw["user_ids"].([]any)) != 0 {
			t.Fatalf("typing stop: %+v", ty2)
		}
		// An extension limited to another list sees nothing of this room.
		scoped := ext(td2.NextBatch)
		scoped["extensions"].(map[string]any)["account_data"] = map[string]any{"enabled": true, "lists": []string{"other"}, "rooms": []string{}}
		if err := alice.cli.SetRoomAccountData(t.Context(), room, "org.example.room", map[string]any{"n": 2}); err != nil {
			t.Fatal(err)
		}
		third := ssSync(t, alice, "", 0, scoped)
		var ad3 acct
		get(third, "account_data", &ad3)
		if len(ad3.Rooms) != 0 {
			t.Fatalf("out-of-scope room account data: %+v", ad3.Rooms)
		}
		// A connection for extensions alone (as the SDK's encryption
		// sync): a parked poll wakes for a to-device message.
		encBody := func(since string) map[string]any {
			return map[string]any{"conn_id": "encryption", "extensions": map[string]any{
				"to_device": map[string]any{"enabled": true, "since": since}, "e2ee": map[string]any{"enabled": true}}}
		}
		enc := ssSync(t, alice, "", 0, encBody(td2.NextBatch))
		var td3 toDev
		get(enc, "to_device", &td3)
		if len(enc.Rooms) != 0 || len(enc.Lists) != 0 || len(td3.Events) != 0 {
			t.Fatalf("extensions-only connection: %+v %+v", enc, td3)
		}
		done := make(chan *ssResp, 1)
		go func() {
			r, _ := ssTry(t, alice, enc.Pos, 30000, encBody(td3.NextBatch))
			done <- r
		}()
		waitParked(t, b, 1)
		toDevice()
		select {
		case r := <-done:
			var td4 toDev
			if r == nil {
				t.Fatal("parked poll failed")
			}
			get(r, "to_device", &td4)
			if len(td4.Events) != 1 {
				t.Fatalf("woken by to-device: %+v", td4)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a to-device message did not wake the poll")
		}

		// Disabled extensions are absent.
		plain := ssSync(t, alice, "", 0, map[string]any{"lists": map[string]any{}})
		if len(plain.Extensions) != 0 {
			t.Fatalf("extensions without asking: %v", mapKeysOf(plain.Extensions))
		}
	})
}

func TestSlidingSyncVersions(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice := newSyncUser(t, b, "alice")
		v, err := alice.cli.Versions(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if !v.UnstableFeatures["org.matrix.simplified_msc3575"] {
			t.Fatalf("unstable_features lacks org.matrix.simplified_msc3575: %v", v.UnstableFeatures)
		}
	})
}
