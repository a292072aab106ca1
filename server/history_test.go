package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
	"hearth/server/timeline"
)

// histSend sends an m.room.message with the given content.
func histSend(t *testing.T, u roomUser, room id.RoomID, content map[string]any) id.EventID {
	t.Helper()
	resp, err := u.cli.SendMessageEvent(t.Context(), room, event.EventMessage, content)
	if err != nil {
		t.Fatalf("send as %s: %v", u.id, err)
	}
	return resp.EventID
}

func histText(t *testing.T, u roomUser, room id.RoomID, body string) id.EventID {
	t.Helper()
	return histSend(t, u, room, map[string]any{"msgtype": "m.text", "body": body})
}

// histGet sends a raw GET with query parameters.
func histGet(t *testing.T, b *servertest.Bundle, tok, path string, q url.Values) acctReply {
	t.Helper()
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return acctDo(t, b, "GET", path, tok, nil)
}

// histIDs lists the event IDs of a chunk.
func histIDs(chunk []*event.Event) []id.EventID {
	out := make([]id.EventID, len(chunk))
	for i, e := range chunk {
		out[i] = e.ID
	}
	return out
}

func histRawIDs(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, e := range list {
		m, _ := e.(map[string]any)
		s, _ := m["event_id"].(string)
		out = append(out, s)
	}
	return out
}

// TestMessagesPaginateThousand sends 1,000 messages from four concurrent
// clients, then pages back through the room: every event comes back
// exactly once, in topological order, and paging forwards gives the same
// events reversed.
func TestMessagesPaginateThousand(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
		defer cancel()
		alice, bob := newRoomUser(t, b, "alice"), newRoomUser(t, b, "bob")
		created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		if _, err := bob.cli.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}

		const senders, perSender = 4, 250
		sent := make([][]id.EventID, senders)
		var wg sync.WaitGroup
		errs := make(chan error, senders)
		for g := range senders {
			u := []roomUser{alice, bob}[g%2]
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perSender {
					r, err := u.cli.SendText(ctx, room, fmt.Sprintf("msg %d/%d", g, i))
					if err != nil {
						errs <- err
						return
					}
					sent[g] = append(sent[g], r.EventID)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("send: %v", err)
		}

		// Back from the end with an odd page size, so pages straddle.
		var back []id.EventID
		from, pages := "", 0
		for {
			resp, err := alice.cli.Messages(ctx, room, from, "", mautrix.DirectionBackward, nil, 97)
			if err != nil {
				t.Fatalf("messages: %v", err)
			}
			if pages++; pages > 50 {
				t.Fatal("pagination does not end")
			}
			back = append(back, histIDs(resp.Chunk)...)
			if resp.End == "" {
				break
			}
			if resp.Start != from && from != "" {
				t.Fatalf("start %q does not echo from %q", resp.Start, from)
			}
			from = resp.End
		}
		seen := map[id.EventID]int{}
		for _, ev := range back {
			seen[ev]++
		}
		for g := range sent {
			for _, ev := range sent[g] {
				if seen[ev] != 1 {
					t.Fatalf("event %s returned %d times", ev, seen[ev])
				}
			}
		}
		if len(seen) != len(back) {
			t.Fatalf("%d events returned, %d distinct", len(back), len(seen))
		}
		all, err := b.Store.RoomEvents(ctx, string(room), 0, 1<<62, 5000, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(back) != len(all) || len(all) < senders*perSender+6 {
			t.Fatalf("got %d events, the room has %d", len(back), len(all))
		}
		// Topological order: depth strictly falls going back (one linear DAG).
		stored, err := b.Store.EventsByID(ctx, idStrings(back))
		if err != nil {
			t.Fatal(err)
		}
		depth := map[string]int64{}
		for _, se := range stored {
			depth[se.EventID] = se.Depth
		}
		for i := 1; i < len(back); i++ {
			if depth[string(back[i])] >= depth[string(back[i-1])] {
				t.Fatalf("event %d (%s, depth %d) is not older than the one before it (depth %d)", i, back[i], depth[string(back[i])], depth[string(back[i-1])])
			}
		}
		// Each sender's events appear in the order they were sent.
		pos := map[id.EventID]int{}
		for i, ev := range back {
			pos[ev] = i
		}
		for g := range sent {
			for i := 1; i < len(sent[g]); i++ {
				if pos[sent[g][i]] >= pos[sent[g][i-1]] {
					t.Fatalf("sender %d: event %d listed after an earlier one", g, i)
				}
			}
		}
		if first := back[len(back)-1]; depth[string(first)] != 1 {
			t.Fatalf("history does not end at the create event: %s has depth %d", first, depth[string(first)])
		}

		// Forwards from the start yields the same events, reversed.
		var fwd []id.EventID
		from = ""
		for pages = 0; ; {
			resp, err := alice.cli.Messages(ctx, room, from, "", mautrix.DirectionForward, nil, 250)
			if err != nil {
				t.Fatalf("messages forwards: %v", err)
			}
			if pages++; pages > 20 {
				t.Fatal("forward pagination does not end")
			}
			fwd = append(fwd, histIDs(resp.Chunk)...)
			if resp.End == "" {
				break
			}
			from = resp.End
		}
		slices.Reverse(fwd)
		if !slices.Equal(fwd, back) {
			t.Fatalf("forward pagination (%d events) differs from backward (%d)", len(fwd), len(back))
		}

		// A stream token (the shape /sync's prev_batch has) starts at the
		// last event that had arrived by then, inclusive.
		mid, err := b.Store.EventByID(ctx, string(sent[0][100]))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := alice.cli.Messages(ctx, room, "s"+strconv.FormatInt(mid.StreamPos, 10)+"_0", "", mautrix.DirectionBackward, nil, 3)
		if err != nil || len(resp.Chunk) != 3 || resp.Chunk[0].ID != sent[0][100] {
			t.Fatalf("messages from a stream token: %v %v", histIDs(resp.Chunk), err)
		}
		// `to` stops the walk, and there is no end once it is reached.
		resp2, err := alice.cli.Messages(ctx, room, "s"+strconv.FormatInt(mid.StreamPos, 10)+"_0", resp.End, mautrix.DirectionBackward, nil, 50)
		if err != nil || len(resp2.Chunk) != 3 || resp2.End != "" {
			t.Fatalf("messages with to: %d events, end %q, %v", len(resp2.Chunk), resp2.End, err)
		}
	})
}

func idStrings(ids []id.EventID) []string {
	out := make([]string, len(ids))
	for i, v := range ids {
		out[i] = string(v)
	}
	return out
}

// TestMessagesFilterAndErrors covers the filter parameter, lazy-loaded
// members, limits and the error answers.
func TestMessagesFilterAndErrors(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob, carol := newRoomUser(t, b, "alice"), newRoomUser(t, b, "bob"), newRoomUser(t, b, "carol")
		created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		if _, err := bob.cli.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		a1 := histText(t, alice, room, "one")
		b1 := histText(t, bob, room, "two")
		img := histSend(t, alice, room, map[string]any{"msgtype": "m.image", "body": "pic", "url": "mxc://hearth.test/abc"})
		if _, err := alice.cli.SendMessageEvent(ctx, room, event.NewEventType("org.example.custom"), map[string]any{"x": 1}); err != nil {
			t.Fatal(err)
		}

		resp, err := alice.cli.Messages(ctx, room, "", "", mautrix.DirectionBackward, &mautrix.FilterPart{Senders: []id.UserID{bob.id}, LazyLoadMembers: true}, 10)
		if err != nil {
			t.Fatal(err)
		}
		// Bob's message and his join; his member event is the lazy state.
		if got := histIDs(resp.Chunk); len(got) != 2 || got[0] != b1 {
			t.Fatalf("senders filter: %v", got)
		}
		if len(resp.State) != 1 || resp.State[0].GetStateKey() != string(bob.id) {
			t.Fatalf("lazy-loaded state: %+v", resp.State)
		}
		resp, err = alice.cli.Messages(ctx, room, "", "", mautrix.DirectionBackward, &mautrix.FilterPart{Types: []event.Type{event.EventMessage}, NotSenders: []id.UserID{bob.id}}, 10)
		if err != nil {
			t.Fatal(err)
		}
		if got := histIDs(resp.Chunk); !slices.Equal(got, []id.EventID{img, a1}) {
			t.Fatalf("types+not_senders: %v, want %v", got, []id.EventID{img, a1})
		}
		if resp.State != nil {
			t.Fatalf("state without lazy loading: %v", resp.State)
		}
		yes := true
		resp, err = alice.cli.Messages(ctx, room, "", "", mautrix.DirectionBackward, &mautrix.FilterPart{ContainsURL: &yes}, 10)
		if err != nil || !slices.Equal(histIDs(resp.Chunk), []id.EventID{img}) {
			t.Fatalf("contains_url: %v %v", histIDs(resp.Chunk), err)
		}
		resp, err = alice.cli.Messages(ctx, room, "", "", mautrix.DirectionBackward, &mautrix.FilterPart{Types: []event.Type{event.NewEventType("org.example.*")}}, 10)
		if err != nil || len(resp.Chunk) != 1 || resp.Chunk[0].Type.Type != "org.example.custom" {
			t.Fatalf("wildcard type: %v %v", histIDs(resp.Chunk), err)
		}
		// MSC3874 relation filters (Synapse's unstable names).
		reply := histSend(t, bob, room, map[string]any{"msgtype": "m.text", "body": "in thread",
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": a1}})
		msgPath := "/_matrix/client/v3/rooms/" + esc(string(room)) + "/messages"
		r := histGet(t, b, alice.tok, msgPath, url.Values{"dir": {"b"}, "filter": {`{"org.matrix.msc3874.rel_types":["m.thread"]}`}})
		if got := histRawIDs(r.body["chunk"]); !slices.Equal(got, []string{string(reply)}) {
			t.Fatalf("rel_types filter: %v", got)
		}
		r = histGet(t, b, alice.tok, msgPath, url.Values{"dir": {"b"}, "limit": {"2"}, "filter": {`{"org.matrix.msc3874.not_rel_types":["m.thread"]}`}})
		if got := histRawIDs(r.body["chunk"]); len(got) != 2 || slices.Contains(got, string(reply)) {
			t.Fatalf("not_rel_types filter: %v", got)
		}
		// The default limit is 10.
		for i := range 12 {
			histText(t, alice, room, fmt.Sprint("more ", i))
		}
		r = histGet(t, b, alice.tok, msgPath, url.Values{"dir": {"b"}})
		if chunk, _ := r.body["chunk"].([]any); r.status != 200 || len(chunk) != 10 || r.body["end"] == nil || r.body["start"] == nil {
			t.Fatalf("default limit: %d %d", r.status, len(chunk))
		}

		path := "/_matrix/client/v3/rooms/" + esc(string(room)) + "/messages"
		histGet(t, b, alice.tok, path, url.Values{"dir": {"x"}}).want(t, 400, "M_INVALID_PARAM")
		histGet(t, b, alice.tok, path, url.Values{"dir": {"b"}, "from": {"garbage"}}).want(t, 400, "M_INVALID_PARAM")
		histGet(t, b, alice.tok, path, url.Values{"dir": {"b"}, "limit": {"-1"}}).want(t, 400, "M_INVALID_PARAM")
		histGet(t, b, alice.tok, path, url.Values{"dir": {"b"}, "filter": {"{"}}).want(t, 400, "M_INVALID_PARAM")
		// Carol was never in the room (a public_chat room is "shared").
		histGet(t, b, carol.tok, path, url.Values{"dir": {"b"}}).want(t, 403, "M_FORBIDDEN")
		histGet(t, b, alice.tok, "/_matrix/client/v3/rooms/%21nope%3Ahearth.test/messages", url.Values{"dir": {"b"}}).want(t, 403, "M_FORBIDDEN")
		histGet(t, b, "", path, url.Values{"dir": {"b"}}).want(t, 401, "M_MISSING_TOKEN")
	})
}

// TestContext asks for the events around one and pages on from its tokens.
func TestContext(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice := newRoomUser(t, b, "alice")
		created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Ctx"})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		var ids []id.EventID
		for i := range 10 {
			ids = append(ids, histText(t, alice, room, fmt.Sprint("m", i)))
		}
		c, err := alice.cli.Context(ctx, room, ids[5], nil, 4)
		if err != nil {
			t.Fatal(err)
		}
		if c.Event == nil || c.Event.ID != ids[5] {
			t.Fatalf("context event: %+v", c.Event)
		}
		if got := histIDs(c.EventsBefore); !slices.Equal(got, []id.EventID{ids[4], ids[3]}) {
			t.Fatalf("events_before %v, want %v", got, ids[3:5])
		}
		if got := histIDs(c.EventsAfter); !slices.Equal(got, []id.EventID{ids[6], ids[7]}) {
			t.Fatalf("events_after %v, want %v", got, ids[6:8])
		}
		hasName := false
		for _, s := range c.State {
			hasName = hasName || s.Type == event.StateRoomName
		}
		if !hasName || c.Start == "" || c.End == "" {
			t.Fatalf("context state/start/end: %d state events, %q %q", len(c.State), c.Start, c.End)
		}
		next, err := alice.cli.Messages(ctx, room, c.End, "", mautrix.DirectionForward, nil, 1)
		if err != nil || len(next.Chunk) != 1 || next.Chunk[0].ID != ids[8] {
			t.Fatalf("forward from context end: %v %v", histIDs(next.Chunk), err)
		}
		// Forwards to the live end still hands back a token, from which a
		// later call picks up exactly the new events.
		tail, err := alice.cli.Messages(ctx, room, c.End, "", mautrix.DirectionForward, nil, 10)
		if err != nil || !slices.Equal(histIDs(tail.Chunk), ids[8:]) || tail.End == "" {
			t.Fatalf("forward to the live end: %v end %q %v", histIDs(tail.Chunk), tail.End, err)
		}
		fresh := histText(t, alice, room, "fresh")
		later, err := alice.cli.Messages(ctx, room, tail.End, "", mautrix.DirectionForward, nil, 10)
		if err != nil || !slices.Equal(histIDs(later.Chunk), []id.EventID{fresh}) {
			t.Fatalf("catching up from the live end: %v %v", histIDs(later.Chunk), err)
		}
		if empty, err := alice.cli.Messages(ctx, room, later.End, "", mautrix.DirectionForward, nil, 10); err != nil || len(empty.Chunk) != 0 || empty.End != "" {
			t.Fatalf("nothing new: %v end %q %v", histIDs(empty.Chunk), empty.End, err)
		}
		prev, err := alice.cli.Messages(ctx, room, c.Start, "", mautrix.DirectionBackward, nil, 1)
		if err != nil || len(prev.Chunk) != 1 || prev.Chunk[0].ID != ids[2] {
			t.Fatalf("backward from context start: %v %v", histIDs(prev.Chunk), err)
		}
		histGet(t, b, alice.tok, "/_matrix/client/v3/rooms/"+esc(string(room))+"/context/%24nope", nil).want(t, 404, "M_NOT_FOUND")
		bob := newRoomUser(t, b, "bob")
		histGet(t, b, bob.tok, "/_matrix/client/v3/rooms/"+esc(string(room))+"/context/"+esc(string(ids[5])), nil).want(t, 404, "M_NOT_FOUND")
	})
}

// TestTimestampToEvent finds the events on either side of a moment.
func TestTimestampToEvent(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice := newRoomUser(t, b, "alice")
		created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		var evs []*event.Event
		for i := range 3 {
			time.Sleep(5 * time.Millisecond) // distinct origin_server_ts
			ev, err := alice.cli.GetEvent(ctx, room, histText(t, alice, room, fmt.Sprint("t", i)))
			if err != nil {
				t.Fatal(err)
			}
			evs = append(evs, ev)
		}
		at := func(ms int64, dir mautrix.Direction) (id.EventID, error) {
			r, err := alice.cli.TimestampToEvent(ctx, room, time.UnixMilli(ms), dir)
			if err != nil {
				return "", err
			}
			return r.EventID, nil
		}
		if got, err := at(evs[1].Timestamp-1, mautrix.DirectionForward); err != nil || got != evs[1].ID {
			t.Fatalf("forward from just before t1: %s %v", got, err)
		}
		if got, err := at(evs[1].Timestamp+1, mautrix.DirectionBackward); err != nil || got != evs[1].ID {
			t.Fatalf("backward from just after t1: %s %v", got, err)
		}
		if got, err := at(evs[2].Timestamp, mautrix.DirectionBackward); err != nil || got != evs[2].ID {
			t.Fatalf("backward from t2 exactly: %s %v", got, err)
		}
		_, err = at(evs[2].Timestamp+1, mautrix.DirectionForward)
		acctWantErr(t, err, 404, "M_NOT_FOUND")
		_, err = at(1, mautrix.DirectionBackward)
		acctWantErr(t, err, 404, "M_NOT_FOUND")
		path := "/_matrix/client/v1/rooms/" + esc(string(room)) + "/timestamp_to_event"
		histGet(t, b, alice.tok, path, url.Values{"ts": {"1"}}).want(t, 400, "M_MISSING_PARAM")
		histGet(t, b, alice.tok, path, url.Values{"ts": {"x"}, "dir": {"f"}}).want(t, 400, "M_INVALID_PARAM")
	})
}

// TestHistoryVisibility: with "joined" visibility a newcomer's history
// starts at their join; with "shared" it reaches back to the start. Both
// rooms have the same shape, so the first half would fail if visibility
// were not applied.
func TestHistoryVisibility(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob := newRoomUser(t, b, "alice"), newRoomUser(t, b, "bob")
		seenBy := func(vis string) (map[string]bool, id.RoomID, id.EventID) {
			created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat",
				InitialState: []*event.Event{{Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": vis}}}}})
			if err != nil {
				t.Fatal(err)
			}
			room := created.RoomID
			secret := histText(t, alice, room, "before bob")
			if _, err := bob.cli.JoinRoomByID(ctx, room); err != nil {
				t.Fatal(err)
			}
			histText(t, alice, room, "after bob")
			r := histGet(t, b, bob.tok, "/_matrix/client/v3/rooms/"+esc(string(room))+"/messages", url.Values{"dir": {"b"}, "limit": {"50"}})
			if r.status != 200 {
				t.Fatalf("%s: messages: %d %v", vis, r.status, r.body)
			}
			bodies := map[string]bool{}
			for _, ev := range r.body["chunk"].([]any) {
				c, _ := ev.(map[string]any)["content"].(map[string]any)
				if body, ok := c["body"].(string); ok {
					bodies[body] = true
				}
			}
			return bodies, room, secret
		}
		joined, room, secret := seenBy("joined")
		if joined["before bob"] || !joined["after bob"] {
			t.Fatalf("joined visibility: bob saw %v", joined)
		}
		histGet(t, b, bob.tok, "/_matrix/client/v3/rooms/"+esc(string(room))+"/context/"+esc(string(secret)), nil).want(t, 404, "M_NOT_FOUND")
		acctDo(t, b, "GET", "/_matrix/client/v3/rooms/"+esc(string(room))+"/event/"+esc(string(secret)), bob.tok, nil).want(t, 404, "M_NOT_FOUND")
		// Bob leaves: he still sees his own leave (the spec lets a user see
		// their membership events on the state before them), not what
		// came after it.
		if _, err := bob.cli.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		histText(t, alice, room, "after bob left")
		r := histGet(t, b, bob.tok, "/_matrix/client/v3/rooms/"+esc(string(room))+"/messages", url.Values{"dir": {"b"}, "limit": {"2"}})
		chunk, _ := r.body["chunk"].([]any)
		if r.status != 200 || len(chunk) != 2 {
			t.Fatalf("messages of a departed member: %d %v", r.status, r.body)
		}
		first, _ := chunk[0].(map[string]any)
		c, _ := first["content"].(map[string]any)
		second, _ := chunk[1].(map[string]any)
		c2, _ := second["content"].(map[string]any)
		if first["type"] != "m.room.member" || first["state_key"] != string(bob.id) || c["membership"] != "leave" || c2["body"] != "after bob" {
			t.Fatalf("messages of a departed member, newest first: %v", chunk)
		}
		shared, sharedRoom, _ := seenBy("shared")
		if !shared["before bob"] || !shared["after bob"] {
			t.Fatalf("shared visibility: bob saw %v", shared)
		}
		// A stranger reads a world_readable room, but not a shared one.
		carol := newRoomUser(t, b, "carol")
		_, open, _ := seenBy("world_readable")
		msgs := func(room id.RoomID) acctReply {
			return histGet(t, b, carol.tok, "/_matrix/client/v3/rooms/"+esc(string(room))+"/messages", url.Values{"dir": {"b"}})
		}
		if r := msgs(open); r.status != 200 || len(histRawIDs(r.body["chunk"])) == 0 {
			t.Fatalf("world_readable for a stranger: %d %v", r.status, r.body)
		}
		msgs(sharedRoom).want(t, 403, "M_FORBIDDEN")
	})
}

// TestMessagesFromSyncPrevBatch: /sync's prev_batch (a stream token)
// continues exactly where the sync timeline starts.
func TestMessagesFromSyncPrevBatch(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice := newRoomUser(t, b, "alice")
		created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		var sent []id.EventID
		for i := range 20 {
			sent = append(sent, histText(t, alice, room, fmt.Sprint("s", i)))
		}
		r := histGet(t, b, alice.tok, "/_matrix/client/v3/sync", url.Values{"filter": {`{"room":{"timeline":{"limit":5}}}`}})
		if r.status != 200 {
			t.Fatalf("sync: %d %v", r.status, r.body)
		}
		jr := r.body["rooms"].(map[string]any)["join"].(map[string]any)[string(room)].(map[string]any)
		tl := jr["timeline"].(map[string]any)
		if got := histRawIDs(tl["events"]); !slices.Equal(got, idStrings(sent[15:])) {
			t.Fatalf("sync timeline: %v", got)
		}
		resp, err := alice.cli.Messages(ctx, room, tl["prev_batch"].(string), "", mautrix.DirectionBackward, nil, 5)
		if err != nil {
			t.Fatal(err)
		}
		want := slices.Clone(sent[10:15])
		slices.Reverse(want)
		if got := histIDs(resp.Chunk); !slices.Equal(got, want) {
			t.Fatalf("messages from prev_batch: %v, want %v", got, want)
		}
	})
}

// TestMessagesFromPrevBatchLeavesOutLateEvents: an event of another server
// that arrives late, on a fork as old as the local events sent meanwhile,
// comes down /sync when it arrives; paging back from the prev_batch of that
// sync gives the local events before it, not the late event again in place
// of the oldest of them (Complement's TestNetworkPartitionOrdering).
func TestMessagesFromPrevBatchLeavesOutLateEvents(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		f := newFed(t, b, "r1.test")
		alice := newSyncUser(t, b, "alice")
		carol := "@carol:r1.test"
		rb, _ := remoteRoom(t, f, "r1.test", carol, "12", nil, 0)
		room := id.RoomID(rb.RoomID)
		joinThrough(t, f, rb, "r1.test", alice.id)
		// Built now, on the room as it is at alice's join; sent later.
		late := f.add(rb.Fork(), "m.room.message", nil, carol, map[string]any{"msgtype": "m.text", "body": "late"})
		var sent []id.EventID
		for i := range 4 {
			sent = append(sent, histText(t, alice, room, fmt.Sprint("event ", i+1)))
		}
		f.mustReceive("r1.test", timeline.Live, timeline.Accepted, late)
		var after []id.EventID
		for i := range 3 {
			after = append(after, histText(t, alice, room, fmt.Sprint("event ", i+5)))
		}
		r := histGet(t, b, alice.tok, "/_matrix/client/v3/sync", url.Values{"filter": {`{"room":{"timeline":{"limit":4}}}`}})
		tl := r.body["rooms"].(map[string]any)["join"].(map[string]any)[string(room)].(map[string]any)["timeline"].(map[string]any)
		if got, want := histRawIDs(tl["events"]), append([]string{late.ID()}, idStrings(after)...); !slices.Equal(got, want) {
			t.Fatalf("sync timeline %v, want %v", got, want)
		}
		resp, err := alice.cli.Messages(t.Context(), room, tl["prev_batch"].(string), "", mautrix.DirectionBackward, nil, 4)
		if err != nil {
			t.Fatal(err)
		}
		want := slices.Clone(sent)
		slices.Reverse(want)
		if got := histIDs(resp.Chunk); !slices.Equal(got, want) {
			t.Fatalf("messages from prev_batch: %v, want %v (the late event is %s)", got, want, late.ID())
		}
	})
}

// TestAdminHistory: the Synapse admin /messages and /context share the
// client endpoints' walk but not their gates. An admin outside the room
// reads every event, whatever the history visibility; a room that does not
// exist is not found rather than forbidden; lazy-loaded members come back
// as state, as they do for clients.
func TestAdminHistory(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		root := roomsUser(t, b, "root", true)
		alice := roomsUser(t, b, "alice", false)
		bob := roomsUser(t, b, "bob", false)
		room := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat",
			InitialState: []*event.Event{{Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}}}}})
		hidden := mustSend(t, alice, room, "before bob")
		if _, err := bob.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		shown := mustSend(t, bob, room, "after bob")
		all, err := b.Store.RoomEvents(ctx, string(room), 0, 1<<62, 100, false)
		if err != nil {
			t.Fatal(err)
		}
		admin := b.URL + "/_synapse/admin/v1/rooms/" + esc(string(room))
		client := "/_matrix/client/v3/rooms/" + esc(string(room))

		// The same room through the client API: the admin is not in it,
		// and bob's history starts at his join.
		histGet(t, b, root.AccessToken, client+"/messages", url.Values{"dir": {"b"}}).want(t, 403, "M_FORBIDDEN")
		if got := histRawIDs(histGet(t, b, bob.AccessToken, client+"/messages", url.Values{"dir": {"b"}, "limit": {"50"}}).body["chunk"]); slices.Contains(got, string(hidden)) {
			t.Fatalf("bob's history reaches before his join: %v", got)
		}
		histGet(t, b, bob.AccessToken, client+"/context/"+esc(string(hidden)), nil).want(t, 404, "M_NOT_FOUND")

		// The admin reads all of it, back to the create event, and there
		// is no end token once the start of the room is reached.
		status, body := call(t, "GET", admin+"/messages?dir=b&limit=50", root.AccessToken, nil)
		got := histRawIDs(body["chunk"])
		if status != 200 || len(got) != len(all) || got[0] != string(shown) || !slices.Contains(got, string(hidden)) || got[len(got)-1] != all[0].EventID {
			t.Fatalf("admin messages: %d %v, want the room's %d events", status, got, len(all))
		}
		if _, ok := body["end"]; ok {
			t.Errorf("admin messages: end %v at the start of the room", body["end"])
		}
		status, body = call(t, "GET", admin+"/context/"+esc(string(hidden))+"?limit=2", root.AccessToken, nil)
		if ev, _ := body["event"].(map[string]any); status != 200 || ev["event_id"] != string(hidden) {
			t.Fatalf("admin context of a hidden event: %d %v", status, body)
		}

		// Lazy-loaded members: the senders' member events.
		filter := url.QueryEscape(`{"lazy_load_members":true}`)
		status, body = call(t, "GET", admin+"/messages?dir=b&limit=1&filter="+filter, root.AccessToken, nil)
		state, _ := body["state"].([]any)
		if status != 200 || len(state) != 1 || state[0].(map[string]any)["state_key"] != string(bob.UserID) {
			t.Fatalf("admin messages, lazy-loaded members: %d %v", status, body)
		}

		// Unknown rooms, and events of another room.
		nope := b.URL + "/_synapse/admin/v1/rooms/" + esc("!nope:hearth.test")
		for _, u := range []string{nope + "/messages", nope + "/context/" + esc(string(hidden))} {
			if status, body := call(t, "GET", u, root.AccessToken, nil); status != 404 || body["errcode"] != "M_NOT_FOUND" {
				t.Errorf("GET %s: %d %v, want 404 M_NOT_FOUND", u, status, body)
			}
		}
		other := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		u := b.URL + "/_synapse/admin/v1/rooms/" + esc(string(other)) + "/context/" + esc(string(hidden))
		if status, body := call(t, "GET", u, root.AccessToken, nil); status != 404 || body["errcode"] != "M_NOT_FOUND" {
			t.Errorf("context of another room's event: %d %v", status, body)
		}
	})
}

// TestMessagesMatchContext: /messages builds its events from the JSON it
// shares with /sync (formatJSON), /context through format; for every kind
// of event the two must be the same to the byte but for unsigned.age:
// edits, reactions, a redaction, a thread, state, and the sender's own
// transaction_id, seen by the sender and by another member.
func TestMessagesMatchContext(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob := newRoomUser(t, b, "alice"), newRoomUser(t, b, "bob")
		room := sharedRoom(t, alice, bob)
		root := histText(t, alice, room, "root")
		histSend(t, bob, room, map[string]any{"msgtype": "m.text", "body": "* edited", "m.new_content": map[string]any{"msgtype": "m.text", "body": "edited"},
			"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": string(root)}})
		if _, err := alice.cli.SendMessageEvent(ctx, room, event.EventReaction, map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": string(root), "key": "👍"}}); err != nil {
			t.Fatal(err)
		}
		histSend(t, bob, room, map[string]any{"msgtype": "m.text", "body": "in thread", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": string(root)}})
		gone := histText(t, bob, room, "to redact")
		if _, err := bob.cli.RedactEvent(ctx, room, gone); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.cli.SendStateEvent(ctx, room, event.StateTopic, "", map[string]any{"topic": "the topic"}); err != nil {
			t.Fatal(err)
		}
		histText(t, alice, room, "last <&> \u2028 \"quoted\"")
		for _, u := range []roomUser{alice, bob} {
			r := histGet(t, b, u.tok, "/_matrix/client/v3/rooms/"+esc(string(room))+"/messages", url.Values{"dir": {"b"}, "limit": {"50"}})
			if r.status != 200 {
				t.Fatalf("messages as %s: %d %v", u.id, r.status, r.body)
			}
			chunk := r.body["chunk"].([]any)
			if len(chunk) < 10 {
				t.Fatalf("messages as %s: %d events", u.id, len(chunk))
			}
			for _, ev := range chunk {
				got := ev.(map[string]any)
				id := got["event_id"].(string)
				c := histGet(t, b, u.tok, "/_matrix/client/v3/rooms/"+esc(string(room))+"/context/"+esc(id), url.Values{"limit": {"0"}})
				if c.status != 200 {
					t.Fatalf("context of %s as %s: %d %v", id, u.id, c.status, c.body)
				}
				want := c.body["event"].(map[string]any)
				dropClockFields(got)
				dropClockFields(want)
				gb, _ := json.Marshal(got)
				wb, _ := json.Marshal(want)
				if string(gb) != string(wb) {
					t.Errorf("as %s, event %s\n/messages: %s\n/context:  %s", u.id, id, gb, wb)
				}
			}
		}
	})
}
