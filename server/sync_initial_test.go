package server_test

import (
	"bytes"
	"encoding/json"
	"encoding/json/jsontext"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/server"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// TestInitialSyncBatchedMatchesPerRoom builds a user's rooms in every shape
// an initial sync meets (joined with state changes, edits and a thread in
// the timeline; joined where history before the join is hidden; a timeline
// that a type filter makes read further back than the batch; left,
// banned, forgotten, invited) and checks that the initial sync built from
// batched reads (sync_initial.go) answers exactly what the room-by-room
// build does, under a range of filters.
func TestInitialSyncBatchedMatchesPerRoom(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob, carol := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob"), newSyncUser(t, b, "carol")
		state := func(u roomUser, room id.RoomID, typ event.Type, key string, content any) {
			t.Helper()
			if _, err := u.cli.SendStateEvent(ctx, room, typ, key, content); err != nil {
				t.Fatalf("%s state %s: %v", u.id, typ.Type, err)
			}
		}
		sendRaw := func(u roomUser, room id.RoomID, typ string, content map[string]any) id.EventID {
			t.Helper()
			r, err := u.cli.SendMessageEvent(ctx, room, event.Type{Type: typ, Class: event.MessageEventType}, content)
			if err != nil {
				t.Fatalf("%s send %s: %v", u.id, typ, err)
			}
			return r.EventID
		}

		// Busy: state changes, a join, an edit and a thread inside the
		// last few events.
		busy := sharedRoom(t, bob, alice)
		for i := range 6 {
			send(t, bob, busy, fmt.Sprint("b", i))
		}
		root := send(t, alice, busy, "root")
		state(bob, busy, event.StateTopic, "", map[string]string{"topic": "first"})
		if _, err := carol.cli.JoinRoomByID(ctx, busy); err != nil {
			t.Fatal(err)
		}
		sendRaw(carol, busy, "m.room.message", map[string]any{"msgtype": "m.text", "body": "in thread",
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
		sendRaw(alice, busy, "m.room.message", map[string]any{"msgtype": "m.text", "body": "* root!", "m.new_content": map[string]any{"msgtype": "m.text", "body": "root!"},
			"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": root}})
		state(bob, busy, event.StateRoomName, "", map[string]string{"name": "Busy"})
		send(t, carol, busy, "c0")

		// Small: all of its history fits the timeline.
		small, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Small"})
		if err != nil {
			t.Fatal(err)
		}
		send(t, alice, small.RoomID, "s0")

		// Late: history visibility "joined", Alice joins after messages
		// she may not see.
		late, err := bob.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
			Type: event.StateHistoryVisibility, StateKey: new(string), Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}}}}})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 4 {
			send(t, bob, late.RoomID, fmt.Sprint("hidden", i))
		}
		if _, err := alice.cli.JoinRoomByID(ctx, late.RoomID); err != nil {
			t.Fatal(err)
		}
		send(t, bob, late.RoomID, "seen")

		// Noisy: a message under many events a type filter drops.
		noisy := sharedRoom(t, bob, alice)
		send(t, bob, noisy, "under the noise")
		state(bob, noisy, event.StateTopic, "", map[string]string{"topic": "noise"})
		for i := range 12 {
			sendRaw(bob, noisy, "org.example.noise", map[string]any{"n": i})
		}

		// Left: Alice leaves, Bob goes on. Banned. Forgotten.
		left := sharedRoom(t, bob, alice)
		send(t, alice, left, "before leaving")
		if _, err := alice.cli.LeaveRoom(ctx, left); err != nil {
			t.Fatal(err)
		}
		send(t, bob, left, "after alice left")
		banned := sharedRoom(t, bob, alice)
		send(t, alice, banned, "before the ban")
		if _, err := bob.cli.BanUser(ctx, banned, &mautrix.ReqBanUser{UserID: alice.id, Reason: "test"}); err != nil {
			t.Fatal(err)
		}
		forgotten := sharedRoom(t, bob, alice)
		if _, err := alice.cli.LeaveRoom(ctx, forgotten); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.cli.ForgetRoom(ctx, forgotten); err != nil {
			t.Fatal(err)
		}

		// Invited.
		invited, err := bob.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Invite"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.InviteUser(ctx, invited.RoomID, &mautrix.ReqInviteUser{UserID: alice.id}); err != nil {
			t.Fatal(err)
		}

		cases := []struct {
			name, filter string
			stateAfter   bool
		}{
			{name: "default"},
			{name: "lazy members", filter: `{"room":{"timeline":{"limit":3},"state":{"lazy_load_members":true}}}`},
			{name: "lazy redundant", filter: `{"room":{"timeline":{"limit":2},"state":{"lazy_load_members":true,"include_redundant_members":true}}}`},
			{name: "include leave", filter: `{"room":{"include_leave":true,"timeline":{"limit":4}}}`},
			{name: "type filters", filter: `{"room":{"include_leave":true,"timeline":{"limit":2,"types":["m.room.message"]},"state":{"not_types":["m.room.power_levels"]}}}`},
			{name: "rooms and fields", filter: fmt.Sprintf(`{"event_fields":["type","sender","content.body"],"room":{"include_leave":true,"rooms":[%q,%q,%q]}}`,
				busy, left, invited.RoomID)},
			{name: "thread counts", filter: `{"room":{"timeline":{"limit":5,"unread_thread_notifications":true}}}`},
			{name: "long timeline", filter: `{"room":{"include_leave":true,"timeline":{"limit":50}}}`},
			{name: "state after", stateAfter: true},
			{name: "state after lazy", filter: `{"room":{"include_leave":true,"timeline":{"limit":3},"state":{"lazy_load_members":true}}}`, stateAfter: true},
		}
		var names []string // of the last answer's objects, in order
		initial := func(filter string, stateAfter, perRoom bool) map[string]any {
			t.Helper()
			server.SetInitialSyncPerRoom(b.Server, perRoom)
			defer server.SetInitialSyncPerRoom(b.Server, false)
			var out map[string]any
			out, names = rawInitialSyncNames(t, b, alice.tok, filter, stateAfter)
			return out
		}
		initial("", false, false) // presence and other first-sync writes
		for _, tc := range cases {
			batched := initial(tc.filter, tc.stateAfter, false)
			perRoom := initial(tc.filter, tc.stateAfter, true)
			perRoomNames := names
			if !reflect.DeepEqual(batched, perRoom) {
				bj, _ := json.MarshalIndent(batched, "", " ")
				pj, _ := json.MarshalIndent(perRoom, "", " ")
				t.Fatalf("%s: batched initial sync differs from per room\nbatched: %s\nper room: %s", tc.name, bj, pj)
			}
			// Built and written a room or two at a time (roomStream), the
			// answer is the same: sections split across chunks, a chunk
			// of one room.
			for _, n := range []int{1, 2} {
				server.SetInitialSyncChunk(b.Server, n)
				chunked := initial(tc.filter, tc.stateAfter, false)
				server.SetInitialSyncChunk(b.Server, 0)
				if !reflect.DeepEqual(chunked, perRoom) {
					cj, _ := json.MarshalIndent(chunked, "", " ")
					pj, _ := json.MarshalIndent(perRoom, "", " ")
					t.Fatalf("%s: initial sync built %d rooms at a time differs from per room\nchunked: %s\nper room: %s", tc.name, n, cj, pj)
				}
				// In the same order: the rooms of a section sorted as a
				// whole answer's maps are.
				if !slices.Equal(names, perRoomNames) {
					t.Fatalf("%s: initial sync built %d rooms at a time writes its names in another order\nchunked: %q\nper room: %q", tc.name, n, names, perRoomNames)
				}
			}
			// Not two empty answers: the rooms are there, with events.
			rooms, _ := batched["rooms"].(map[string]any)
			join, _ := rooms["join"].(map[string]any)
			room, _ := join[string(busy)].(map[string]any)
			tl, _ := room["timeline"].(map[string]any)
			if evs, _ := tl["events"].([]any); len(evs) == 0 {
				t.Fatalf("%s: no timeline for the busy room: %v", tc.name, rooms)
			}
			if _, ok := join[string(forgotten)]; ok {
				t.Fatalf("%s: forgotten room joined", tc.name)
			}
		}
		// The shapes were met: the filters that include leaves show both
		// left rooms, the visibility rule hid the late room's history.
		resp := doSync(t, alice, "", `{"room":{"include_leave":true,"timeline":{"limit":50}}}`, 0)
		if _, ok := resp.Rooms.Leave[left]; !ok {
			t.Fatal("left room missing")
		}
		if _, ok := resp.Rooms.Leave[banned]; !ok {
			t.Fatal("banned room missing")
		}
		if _, ok := resp.Rooms.Invite[invited.RoomID]; !ok {
			t.Fatal("invite missing")
		}
		if got := bodies(resp.Rooms.Join[late.RoomID].Timeline.Events); len(got) != 1 || got[0] != "seen" {
			t.Fatalf("late room timeline: %v", got)
		}
	})
}

// rawInitialSyncNames is an initial /sync as JSON, without what changes
// with the clock (unsigned.age, presence's last_active_ago), and the names
// of the answer's objects in the order they were written.
func rawInitialSyncNames(t *testing.T, b *servertest.Bundle, token, filter string, stateAfter bool) (map[string]any, []string) {
	t.Helper()
	q := url.Values{}
	if filter != "" {
		q.Set("filter", filter)
	}
	if stateAfter {
		q.Set("use_state_after", "true")
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, b.URL+"/_matrix/client/v3/sync?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := b.HTTP.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("sync: %d %s", resp.StatusCode, body)
	}
	var out map[string]any
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	dropClockFields(out)
	var names []string
	dec := jsontext.NewDecoder(bytes.NewReader(body))
	for {
		tok, err := dec.ReadToken()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if kind, n := dec.StackIndex(dec.StackDepth()); tok.Kind() == '"' && kind == '{' && n%2 == 1 {
			names = append(names, tok.String())
		}
	}
	return out, names
}

func dropClockFields(v any) {
	switch v := v.(type) {
	case map[string]any:
		delete(v, "age")
		delete(v, "last_active_ago")
		for _, c := range v {
			dropClockFields(c)
		}
	case []any:
		for _, c := range v {
			dropClockFields(c)
		}
	}
}
