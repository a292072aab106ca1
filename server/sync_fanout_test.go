package server_test

import (
	"fmt"
	"net/url"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// Tests of /sync's fan-out path (sync_shared.go): answers built from shared
// event JSON with each viewer's unsigned, and a member who fell behind.

// rawTimeline is a room's timeline in a raw /sync answer.
type rawTimeline struct {
	events    []map[string]any
	limited   bool
	prevBatch string
}

// rawSync runs /sync and returns the raw answer.
func rawSync(t *testing.T, b *servertest.Bundle, token, since, filter string) map[string]any {
	t.Helper()
	q := url.Values{"timeout": {"0"}}
	if since != "" {
		q.Set("since", since)
	}
	if filter != "" {
		q.Set("filter", filter)
	}
	r := acctDo(t, b, "GET", "/_matrix/client/v3/sync?"+q.Encode(), token, nil)
	if r.status != 200 {
		t.Fatalf("sync: %d %v", r.status, r.body)
	}
	return r.body
}

func timelineIn(body map[string]any, room id.RoomID) rawTimeline {
	rooms, _ := body["rooms"].(map[string]any)
	join, _ := rooms["join"].(map[string]any)
	jr, _ := join[string(room)].(map[string]any)
	tl, _ := jr["timeline"].(map[string]any)
	var out rawTimeline
	evs, _ := tl["events"].([]any)
	for _, e := range evs {
		out.events = append(out.events, e.(map[string]any))
	}
	out.limited, _ = tl["limited"].(bool)
	out.prevBatch, _ = tl["prev_batch"].(string)
	return out
}

func (tl rawTimeline) byID(eventID id.EventID) map[string]any {
	for _, e := range tl.events {
		if e["event_id"] == string(eventID) {
			return e
		}
	}
	return nil
}

func rawBody(e map[string]any) string {
	c, _ := e["content"].(map[string]any)
	s, _ := c["body"].(string)
	return s
}

// TestSyncFallenBehindCatchesUp: a member who fell far behind gets a
// bounded, limited timeline whose prev_batch /messages continues from, back
// to where their previous sync ended, without a gap or a duplicate.
func TestSyncFallenBehindCatchesUp(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		room := sharedRoom(t, alice, bob)
		const ten = `{"room":{"timeline":{"limit":10}}}`
		first := rawSync(t, b, bob.tok, "", ten)
		since, _ := first["next_batch"].(string)

		const n = 45
		var want []string
		for i := range n {
			body := fmt.Sprint("behind ", i)
			send(t, alice, room, body)
			want = append(want, body)
		}
		tl := timelineIn(rawSync(t, b, bob.tok, since, ten), room)
		if !tl.limited || tl.prevBatch == "" || len(tl.events) != 10 {
			t.Fatalf("fallen-behind sync: limited=%v prev_batch=%q %d events", tl.limited, tl.prevBatch, len(tl.events))
		}
		var got []string
		for _, ev := range tl.events {
			got = append(got, rawBody(ev))
		}
		if !slices.Equal(got, want[n-10:]) {
			t.Fatalf("timeline %v, want the newest ten", got)
		}
		// Page back from prev_batch to the previous sync's position.
		var older []string
		from := tl.prevBatch
		for page := 0; ; page++ {
			if page > 20 {
				t.Fatal("/messages did not reach the previous sync's position")
			}
			q := url.Values{"dir": {"b"}, "limit": {"7"}, "from": {from}, "to": {since}}
			r := acctDo(t, b, "GET", "/_matrix/client/v3/rooms/"+esc(string(room))+"/messages?"+q.Encode(), bob.tok, nil)
			if r.status != 200 {
				t.Fatalf("/messages: %d %v", r.status, r.body)
			}
			chunk, _ := r.body["chunk"].([]any)
			for _, c := range chunk {
				if body := rawBody(c.(map[string]any)); body != "" {
					older = append(older, body)
				}
			}
			end, _ := r.body["end"].(string)
			if len(chunk) == 0 || end == "" {
				break
			}
			from = end
		}
		slices.Reverse(older)
		if all := append(older, got...); !slices.Equal(all, want) {
			t.Fatalf("sync plus /messages gave %d messages %v, want the %d sent in order", len(all), all, n)
		}
	})
}

// TestSyncSharedEventJSON: an event's JSON is built once and shared by the
// answers of every receiver, yet each gets its own unsigned: the
// transaction ID only on the sending device, membership per viewer; and a
// redaction after the JSON was shared shows in the answers that follow.
func TestSyncSharedEventJSON(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		room := sharedRoom(t, alice, bob)
		// Alice's second device.
		other := acctLogin(t, b, alice.id.Localpart(), acctPW, "OTHER")
		if other.DeviceID != "OTHER" {
			t.Fatalf("second device: %q", other.DeviceID)
		}
		mark := func(tok string) string {
			s, _ := rawSync(t, b, tok, "", `{"room":{"timeline":{"limit":1}}}`)["next_batch"].(string)
			return s
		}
		bobSince, aliceSince, otherSince := mark(bob.tok), mark(alice.tok), mark(other.AccessToken)

		const txn = "txn-shared-json"
		sent, err := alice.cli.SendMessageEvent(t.Context(), room, event.EventMessage,
			map[string]any{"msgtype": "m.text", "body": "shared"}, mautrix.ReqSendEvent{TransactionID: txn})
		if err != nil {
			t.Fatal(err)
		}
		// Then Bob's, in the same answers: after an event with a
		// transaction ID, one without for the viewer (unsigned maps are
		// reused within a batch).
		bobSent, err := bob.cli.SendMessageEvent(t.Context(), room, event.EventMessage,
			map[string]any{"msgtype": "m.text", "body": "bob's"}, mautrix.ReqSendEvent{TransactionID: "txn-bob"})
		if err != nil {
			t.Fatal(err)
		}
		// Bob first, so his answer makes the shared JSON the others use.
		for _, c := range []struct {
			who, tok, since string
			txn             bool
		}{{"bob", bob.tok, bobSince, false}, {"alice's other device", other.AccessToken, otherSince, false}, {"alice's sending device", alice.tok, aliceSince, true}} {
			tl := timelineIn(rawSync(t, b, c.tok, c.since, ""), room)
			ev := tl.byID(sent.EventID)
			if ev == nil || rawBody(ev) != "shared" || ev["sender"] != string(alice.id) {
				t.Fatalf("%s: event %v", c.who, ev)
			}
			bu, _ := tl.byID(bobSent.EventID)["unsigned"].(map[string]any)
			if got, has := bu["transaction_id"]; has != (c.who == "bob") || bu["membership"] != "join" {
				t.Fatalf("%s: Bob's event's unsigned %v (transaction_id %v)", c.who, bu, got)
			}
			if _, has := ev["room_id"]; has {
				t.Fatalf("%s: /sync event carries room_id: %v", c.who, ev)
			}
			u, _ := ev["unsigned"].(map[string]any)
			if u["membership"] != "join" {
				t.Fatalf("%s: unsigned %v", c.who, u)
			}
			if age, ok := u["age"].(float64); !ok || age < 0 {
				t.Fatalf("%s: unsigned.age %v", c.who, u["age"])
			}
			if got, has := u["transaction_id"]; has != c.txn || (c.txn && got != txn) {
				t.Fatalf("%s: unsigned.transaction_id %v (present %v), want present %v", c.who, got, has, c.txn)
			}
		}

		// Redacted after its JSON was shared: answers from then on carry
		// the redacted event, to Bob and to the sender alike.
		if _, err := alice.cli.RedactEvent(t.Context(), room, sent.EventID, mautrix.ReqRedact{Reason: "oops"}); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct{ who, tok, since string }{{"bob", bob.tok, bobSince}, {"alice", alice.tok, aliceSince}} {
			ev := timelineIn(rawSync(t, b, c.tok, c.since, ""), room).byID(sent.EventID)
			if ev == nil {
				t.Fatalf("%s: redacted event missing from the timeline", c.who)
			}
			if content, _ := ev["content"].(map[string]any); len(content) != 0 {
				t.Fatalf("%s: redacted event still has content %v", c.who, content)
			}
			u, _ := ev["unsigned"].(map[string]any)
			because, _ := u["redacted_because"].(map[string]any)
			if because == nil || because["type"] != "m.room.redaction" {
				t.Fatalf("%s: unsigned %v lacks redacted_because", c.who, u)
			}
		}
	})
}

// TestSyncQuietLongPollTimesOut: a long poll from a next_batch with nothing
// after it waits for its timeout, then answers with a token that still
// sees what comes next.
func TestSyncQuietLongPollTimesOut(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		room := sharedRoom(t, alice, bob)
		first := doSync(t, bob, "", "", 0)
		start := time.Now()
		quiet := doSync(t, bob, first.NextBatch, "", 700)
		if waited := time.Since(start); waited < 700*time.Millisecond {
			t.Fatalf("quiet long poll returned after %v", waited)
		}
		if quiet.NextBatch == "" || len(quiet.Rooms.Join) != 0 {
			t.Fatalf("quiet long poll: next_batch %q, rooms %+v", quiet.NextBatch, quiet.Rooms.Join)
		}
		evID := send(t, alice, room, "after the quiet poll")
		next := doSync(t, bob, quiet.NextBatch, "", 5000)
		if jr := next.Rooms.Join[room]; jr == nil || len(jr.Timeline.Events) != 1 || jr.Timeline.Events[0].ID != evID {
			t.Fatalf("sync after the quiet poll: %+v", next.Rooms.Join)
		}
	})
}

// TestSyncBundlesAfterNoRelations: answers remember which events had
// nothing to bundle (syncShared.noRelations); an edit, a thread reply or a
// reference stored after an answer found none shows up in the next one,
// and so do a redaction of the edit and an edit after that.
func TestSyncBundlesAfterNoRelations(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		room := sharedRoom(t, alice, bob)
		const filter = `{"room":{"timeline":{"limit":50}}}`
		since, _ := rawSync(t, b, bob.tok, "", filter)["next_batch"].(string)
		sendContent := func(content map[string]any) id.EventID {
			t.Helper()
			r, err := alice.cli.SendMessageEvent(t.Context(), room, event.EventMessage, content)
			if err != nil {
				t.Fatal(err)
			}
			return r.EventID
		}
		// relations is the event's unsigned.m.relations in Bob's answer
		// from since, asked twice: the second answer is made from what
		// the first remembered.
		relations := func(ev id.EventID) map[string]any {
			t.Helper()
			var got [2]map[string]any
			for i := range got {
				e := timelineIn(rawSync(t, b, bob.tok, since, filter), room).byID(ev)
				if e == nil {
					t.Fatalf("%s missing from Bob's timeline", ev)
				}
				u, _ := e["unsigned"].(map[string]any)
				got[i], _ = u["m.relations"].(map[string]any)
			}
			if fmt.Sprint(withoutAges(got[0])) != fmt.Sprint(withoutAges(got[1])) {
				t.Fatalf("%s: the same answer twice bundles %v, then %v", ev, got[0], got[1])
			}
			return got[0]
		}
		editBody := func(ev id.EventID) string {
			t.Helper()
			edit, _ := relations(ev)["m.replace"].(map[string]any)
			return rawBody(edit)
		}

		x := sendContent(map[string]any{"msgtype": "m.text", "body": "x"})
		if r := relations(x); r != nil {
			t.Fatalf("a new event bundles %v", r)
		}
		edit := sendContent(relEdit(x, "x edited"))
		if got := editBody(x); got != "* x edited" {
			t.Fatalf("edit after an answer found none: %q, relations %v", got, relations(x))
		}

		y := sendContent(map[string]any{"msgtype": "m.text", "body": "y"})
		if r := relations(y); r != nil {
			t.Fatalf("a new event bundles %v", r)
		}
		sendContent(relThread(y, "in y's thread"))
		thread, _ := relations(y)["m.thread"].(map[string]any)
		if thread == nil || thread["count"] != float64(1) {
			t.Fatalf("thread reply after an answer found none: %v", relations(y))
		}

		w := sendContent(map[string]any{"msgtype": "m.text", "body": "w"})
		if r := relations(w); r != nil {
			t.Fatalf("a new event bundles %v", r)
		}
		ref := sendContent(map[string]any{"msgtype": "m.text", "body": "see w",
			"m.relates_to": map[string]any{"rel_type": "m.reference", "event_id": w}})
		refs, _ := relations(w)["m.reference"].(map[string]any)
		if chunk, _ := refs["chunk"].([]any); len(chunk) != 1 || chunk[0].(map[string]any)["event_id"] != string(ref) {
			t.Fatalf("reference after an answer found none: %v", relations(w))
		}

		// The edit redacted: x has nothing to bundle again, until the
		// next edit.
		if _, err := alice.cli.RedactEvent(t.Context(), room, edit); err != nil {
			t.Fatal(err)
		}
		if r := relations(x); r != nil {
			t.Fatalf("after its edit was redacted x bundles %v", r)
		}
		sendContent(relEdit(x, "x again"))
		if got := editBody(x); got != "* x again" {
			t.Fatalf("edit after the redacted one: %q", got)
		}
	})
}

// withoutAges is v (decoded JSON) without its unsigned.age values, which
// move between two answers.
func withoutAges(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			if k != "age" {
				out[k] = withoutAges(x)
			}
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = withoutAges(x)
		}
		return out
	}
	return v
}

// TestSyncFollowsMembershipsOfCachedRooms: the rooms of a user are cached
// (storage's rooms_of_user); each change of the user's membership shows
// in the next /sync, and a long poll waiting on the cached rooms wakes for
// an invite.
func TestSyncFollowsMembershipsOfCachedRooms(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		first := doSync(t, bob, "", "", 0)
		next := doSync(t, bob, first.NextBatch, "", 0) // from the cache
		created, err := alice.cli.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		invited := make(chan *mautrix.RespSync, 1)
		go func() {
			r, err := bob.cli.FullSyncRequest(t.Context(), mautrix.ReqSync{Timeout: 10000, Since: next.NextBatch})
			if err != nil {
				t.Error(err)
			}
			invited <- r
		}()
		time.Sleep(200 * time.Millisecond) // the long poll waits
		if _, err := alice.cli.InviteUser(t.Context(), room, &mautrix.ReqInviteUser{UserID: bob.id}); err != nil {
			t.Fatal(err)
		}
		r := <-invited
		if r == nil || r.Rooms.Invite[room] == nil {
			t.Fatalf("the invite did not reach the long poll: %+v", r)
		}
		if _, err := bob.cli.JoinRoomByID(t.Context(), room); err != nil {
			t.Fatal(err)
		}
		joined := doSync(t, bob, r.NextBatch, "", 0)
		if joined.Rooms.Join[room] == nil || joined.Rooms.Invite[room] != nil {
			t.Fatalf("after the join: join %v, invite %v", joined.Rooms.Join, joined.Rooms.Invite)
		}
		if _, err := bob.cli.LeaveRoom(t.Context(), room); err != nil {
			t.Fatal(err)
		}
		left := doSync(t, bob, joined.NextBatch, "", 0)
		if left.Rooms.Leave[room] == nil || left.Rooms.Join[room] != nil {
			t.Fatalf("after the leave: leave %v, join %v", left.Rooms.Leave, left.Rooms.Join)
		}
		// A message after the leave is not Bob's to see.
		send(t, alice, room, "after bob left")
		if later := doSync(t, bob, left.NextBatch, "", 0); later.Rooms.Join[room] != nil || later.Rooms.Leave[room] != nil {
			t.Fatalf("after the leave the room is still reported: %+v", later.Rooms)
		}
	})
}
