package server_test

import (
	"fmt"
	"net/url"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// search runs POST /search for u through mautrix-go.
func search(t *testing.T, u roomUser, req mautrix.ReqSearch) *mautrix.RespSearch {
	t.Helper()
	resp, err := u.cli.Search(t.Context(), &req)
	if err != nil {
		t.Fatalf("search %q as %s: %v", req.SearchTerm, u.id, err)
	}
	return resp
}

// searchIDs lists the event IDs of the results, in order.
func searchIDs(resp *mautrix.RespSearch) []id.EventID {
	out := make([]id.EventID, len(resp.Results))
	for i, r := range resp.Results {
		out[i] = r.Event.ID
	}
	return out
}

func inRoom(rooms ...id.RoomID) *mautrix.FilterPart { return &mautrix.FilterPart{Rooms: rooms} }

func sameSet[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// TestSearch drives POST /search with mautrix-go on both engines:
// matching over the three keys, rank against recent order, filters,
// context, highlights, pagination, groupings and the answer's count.
func TestSearch(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob := newRoomUser(t, b, "alice"), newRoomUser(t, b, "bob")
		bob.cli.UserID = bob.id
		if err := bob.cli.SetDisplayName(ctx, "Bob B"); err != nil {
			t.Fatal(err)
		}
		created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Garden club", Topic: "All about tomatoes"})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		if _, err := bob.cli.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		shouty := histText(t, bob, room, "Tomatoes! tomatoes, tomatoes and more tomatoes")
		planted := histText(t, alice, room, "I planted a tomato today")
		histText(t, alice, room, "Cucumbers come next week")
		growing := histText(t, bob, room, "The tomato plants are growing")
		other, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		elsewhere := histText(t, alice, other.RoomID, "a tomato in another room")

		t.Run("matching", func(t *testing.T) {
			// Stemmed: "tomato" finds "tomatoes"; every key by default,
			// the topic included; both of alice's rooms.
			resp := search(t, alice, mautrix.ReqSearch{SearchTerm: "tomato"})
			if resp.Count != 5 || len(resp.Results) != 5 {
				t.Fatalf("tomato: count %d, %d results", resp.Count, len(resp.Results))
			}
			var topic int
			for _, r := range resp.Results {
				if r.Event.Type == event.StateTopic {
					topic++
				}
				if r.Event.RoomID == "" || r.Event.Content.Raw == nil {
					t.Fatalf("result without room or content: %+v", r.Event)
				}
			}
			if topic != 1 {
				t.Fatalf("the topic was found %d times", topic)
			}
			// One key at a time.
			if got := searchIDs(search(t, alice, mautrix.ReqSearch{SearchTerm: "tomato", Keys: []string{"content.body"}})); len(got) != 4 {
				t.Fatalf("content.body: %v", got)
			}
			if resp := search(t, alice, mautrix.ReqSearch{SearchTerm: "garden", Keys: []string{"content.name"}}); len(resp.Results) != 1 ||
				resp.Results[0].Event.Type != event.StateRoomName {
				t.Fatalf("content.name: %+v", resp.Results)
			}
			if got := searchIDs(search(t, alice, mautrix.ReqSearch{SearchTerm: "garden", Keys: []string{"content.body"}})); len(got) != 0 {
				t.Fatalf("the name was found in bodies: %v", got)
			}
			// Words in a row must all match; a phrase keeps its order.
			if got := searchIDs(search(t, alice, mautrix.ReqSearch{SearchTerm: "tomato growing"})); !slices.Equal(got, []id.EventID{growing}) {
				t.Fatalf("tomato growing: %v", got)
			}
			if got := searchIDs(search(t, alice, mautrix.ReqSearch{SearchTerm: `"growing tomato"`})); len(got) != 0 {
				t.Fatalf("phrase out of order: %v", got)
			}
			if got := searchIDs(search(t, alice, mautrix.ReqSearch{SearchTerm: "cucumber"})); len(got) != 1 {
				t.Fatalf("cucumber: %v", got)
			}
			if resp := search(t, alice, mautrix.ReqSearch{SearchTerm: "nothing matches this"}); resp.Count != 0 || len(resp.Results) != 0 || resp.NextBatch != "" {
				t.Fatalf("no match: %+v", resp)
			}
		})

		t.Run("order", func(t *testing.T) {
			req := mautrix.ReqSearch{SearchTerm: "tomato", Keys: []string{"content.body"}, Filter: inRoom(room)}
			byRank := searchIDs(search(t, alice, req))
			if len(byRank) != 3 || byRank[0] != shouty {
				t.Fatalf("rank order: %v, want %s first", byRank, shouty)
			}
			req.OrderBy = "recent"
			recent := search(t, alice, req)
			if got := searchIDs(recent); !slices.Equal(got, []id.EventID{growing, planted, shouty}) {
				t.Fatalf("recent order: %v", got)
			}
			for _, r := range recent.Results {
				if r.Rank <= 0 {
					t.Fatalf("no rank in recent order: %v", r.Rank)
				}
			}
		})

		t.Run("filters", func(t *testing.T) {
			body := []string{"content.body"}
			for name, tc := range map[string]struct {
				filter *mautrix.FilterPart
				want   []id.EventID
			}{
				"senders":     {&mautrix.FilterPart{Senders: []id.UserID{bob.id}}, []id.EventID{shouty, growing}},
				"not_senders": {&mautrix.FilterPart{NotSenders: []id.UserID{bob.id}}, []id.EventID{planted, elsewhere}},
				"rooms":       {inRoom(other.RoomID), []id.EventID{elsewhere}},
				"not_rooms":   {&mautrix.FilterPart{NotRooms: []id.RoomID{room}}, []id.EventID{elsewhere}},
				"types":       {&mautrix.FilterPart{Types: []event.Type{event.StateTopic}}, nil},
				"not_types":   {&mautrix.FilterPart{NotTypes: []event.Type{event.EventMessage}}, nil},
				"limit":       {&mautrix.FilterPart{Limit: 2, Rooms: []id.RoomID{room}}, []id.EventID{growing, planted}},
			} {
				resp := search(t, alice, mautrix.ReqSearch{SearchTerm: "tomato", Keys: body, OrderBy: "recent", Filter: tc.filter})
				if got := searchIDs(resp); !sameSet(got, tc.want) {
					t.Errorf("%s: %v, want %v", name, got, tc.want)
				}
			}
			// The types filter and the keys meet: the topic alone.
			resp := search(t, alice, mautrix.ReqSearch{SearchTerm: "tomato", Filter: &mautrix.FilterPart{Types: []event.Type{event.StateTopic}}})
			if len(resp.Results) != 1 || resp.Results[0].Event.Type != event.StateTopic || resp.Count != 1 {
				t.Fatalf("types m.room.topic: %+v", resp.Results)
			}
		})

		t.Run("context and highlights", func(t *testing.T) {
			raw := acctDo(t, b, "POST", "/_matrix/client/v3/search", alice.tok, map[string]any{
				"search_categories": map[string]any{"room_events": map[string]any{
					"search_term":   "today",
					"event_context": map[string]any{"before_limit": 1, "after_limit": 2, "include_profile": true},
				}},
			})
			if raw.status != 200 {
				t.Fatalf("search: %d %v", raw.status, raw.body)
			}
			re := raw.body["search_categories"].(map[string]any)["room_events"].(map[string]any)
			res := re["results"].([]any)[0].(map[string]any)
			c := res["context"].(map[string]any)
			if got := histRawIDs(c["events_before"]); !slices.Equal(got, []string{string(shouty)}) {
				t.Fatalf("events_before: %v", got)
			}
			if got := histRawIDs(c["events_after"]); len(got) != 2 || got[1] != string(growing) {
				t.Fatalf("events_after: %v", got)
			}
			if c["start"] == "" || c["end"] == "" {
				t.Fatalf("context tokens: %v", c)
			}
			profiles := c["profile_info"].(map[string]any)
			if p, _ := profiles[string(bob.id)].(map[string]any); p["displayname"] != "Bob B" {
				t.Fatalf("profile_info: %v", profiles)
			}
			if _, ok := profiles[string(alice.id)]; !ok {
				t.Fatalf("profile_info lacks alice: %v", profiles)
			}
			// The context's tokens work with /messages.
			end, _ := c["end"].(string)
			msgs, err := alice.cli.Messages(ctx, room, end, "", mautrix.DirectionForward, nil, 10)
			if err != nil || len(msgs.Chunk) != 0 {
				t.Fatalf("messages from the context's end: %v %v", msgs, err)
			}

			// Highlights: the words of the results that matched, as
			// written (lowercased), stems and all.
			resp := search(t, alice, mautrix.ReqSearch{SearchTerm: "tomato", Keys: []string{"content.body"}})
			if !slices.Contains(resp.Highlights, "tomatoes") || !slices.Contains(resp.Highlights, "tomato") ||
				slices.Contains(resp.Highlights, "plants") {
				t.Fatalf("highlights: %v", resp.Highlights)
			}
		})

		t.Run("pagination and groups", func(t *testing.T) {
			pages, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
			if err != nil {
				t.Fatal(err)
			}
			var sent []id.EventID
			for i := range 25 {
				sent = append(sent, histText(t, alice, pages.RoomID, fmt.Sprintf("page marker %d", i)))
			}
			for _, order := range []string{"recent", "rank"} {
				req := mautrix.ReqSearch{SearchTerm: "marker", OrderBy: order, Filter: inRoom(pages.RoomID)}
				var got []id.EventID
				for n := 0; ; n++ {
					resp := search(t, alice, req)
					if resp.Count != 25 {
						t.Fatalf("%s page %d: count %d", order, n, resp.Count)
					}
					got = append(got, searchIDs(resp)...)
					if resp.NextBatch == "" {
						break
					}
					if n > 5 {
						t.Fatalf("%s: pagination does not end", order)
					}
					req.NextBatch = resp.NextBatch
				}
				if order == "recent" {
					want := slices.Clone(sent)
					slices.Reverse(want)
					if !slices.Equal(got, want) {
						t.Fatalf("recent pages: %v", got)
					}
				} else if !sameSet(got, sent) {
					t.Fatalf("rank pages: %d results, want the 25", len(got))
				}
			}

			// Groups by room and by sender, and a room's next_batch
			// pages through that room alone.
			resp := search(t, alice, mautrix.ReqSearch{SearchTerm: "tomato OR marker", OrderBy: "recent", Keys: []string{"content.body"},
				Filter:    &mautrix.FilterPart{Limit: 5},
				Groupings: mautrix.SearchGroupings{GroupBy: []mautrix.SearchGroup{{Key: "room_id"}, {Key: "sender"}}}})
			if resp.Count != 29 || len(resp.Results) != 5 || resp.NextBatch == "" {
				t.Fatalf("grouped: count %d, %d results, next_batch %q", resp.Count, len(resp.Results), resp.NextBatch)
			}
			g := resp.Groups["room_id"][string(pages.RoomID)]
			if len(g.Results) != 5 || g.Order != 0 || g.NextBatch == "" {
				t.Fatalf("room group: %+v", g)
			}
			if s := resp.Groups["sender"][string(alice.id)]; len(s.Results) != 5 {
				t.Fatalf("sender group: %+v", resp.Groups["sender"])
			}
			rest := search(t, alice, mautrix.ReqSearch{SearchTerm: "tomato OR marker", OrderBy: "recent", Keys: []string{"content.body"},
				Filter: &mautrix.FilterPart{Limit: 100}, NextBatch: g.NextBatch})
			if len(rest.Results) != 20 {
				t.Fatalf("the room group's next page: %d results", len(rest.Results))
			}
			for _, r := range rest.Results {
				if r.Event.RoomID != pages.RoomID {
					t.Fatalf("a group's page left its room: %s", r.Event.RoomID)
				}
			}
		})

		t.Run("predecessor", func(t *testing.T) {
			// Searching an upgraded room searches its predecessor too
			// (Complement's "Search works across an upgraded room and
			// its predecessor").
			newer, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat",
				CreationContent: map[string]any{"predecessor": map[string]any{"room_id": other.RoomID, "event_id": string(elsewhere)}}})
			if err != nil {
				t.Fatal(err)
			}
			now := histText(t, alice, newer.RoomID, "a tomato in the new room")
			got := searchIDs(search(t, alice, mautrix.ReqSearch{SearchTerm: "tomato", Filter: inRoom(newer.RoomID)}))
			if !sameSet(got, []id.EventID{now, elsewhere}) {
				t.Fatalf("upgraded room: %v, want %s and %s", got, now, elsewhere)
			}
		})

		t.Run("state", func(t *testing.T) {
			resp := search(t, alice, mautrix.ReqSearch{SearchTerm: "cucumber", IncludeState: true})
			var name bool
			for _, ev := range resp.State[room] {
				name = name || ev.Type == event.StateRoomName
			}
			if len(resp.State) != 1 || !name {
				t.Fatalf("include_state: %v", resp.State)
			}
		})

		t.Run("bad requests", func(t *testing.T) {
			for name, body := range map[string]any{
				"no search_term": map[string]any{"search_categories": map[string]any{"room_events": map[string]any{}}},
				"order_by":       map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x", "order_by": "best"}}},
				"keys":           map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x", "keys": []string{"content.url"}}}},
				"group_by":       map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x", "groupings": map[string]any{"group_by": []any{map[string]any{"key": "type"}}}}}},
				"no categories":  map[string]any{},
			} {
				if r := acctDo(t, b, "POST", "/_matrix/client/v3/search", alice.tok, body); r.status != 400 {
					t.Errorf("%s: %d %v", name, r.status, r.body)
				}
			}
			r := acctDo(t, b, "POST", "/_matrix/client/v3/search?next_batch="+url.QueryEscape("garbage"), alice.tok,
				map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x"}}})
			if r.status != 400 || r.errcode() != "M_INVALID_PARAM" {
				t.Fatalf("bad next_batch: %d %v", r.status, r.body)
			}
			if r := acctDo(t, b, "POST", "/_matrix/client/v3/search", "", map[string]any{}); r.status != 401 {
				t.Fatalf("no token: %d", r.status)
			}
		})

		t.Run("ignored users", func(t *testing.T) {
			alice.cli.UserID = alice.id
			if err := alice.cli.SetAccountData(ctx, "m.ignored_user_list", map[string]any{"ignored_users": map[string]any{string(bob.id): map[string]any{}}}); err != nil {
				t.Fatal(err)
			}
			resp := search(t, alice, mautrix.ReqSearch{SearchTerm: "tomato", Keys: []string{"content.body"}, Filter: inRoom(room),
				EventContext: mautrix.SearchEventContext{BeforeLimit: 5, AfterLimit: 5}})
			if got := searchIDs(resp); !slices.Equal(got, []id.EventID{planted}) {
				t.Fatalf("with bob ignored: %v", got)
			}
			for _, ev := range slices.Concat(resp.Results[0].Context.EventsBefore, resp.Results[0].Context.EventsAfter) {
				if ev.Sender == bob.id && ev.Type == event.EventMessage {
					t.Fatalf("context shows %s from ignored bob", ev.ID)
				}
			}
		})
	})
}

// TestSearchVisibility checks that search shows only what history
// visibility allows, and that a redacted event leaves the results in
// both orders.
func TestSearchVisibility(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob, carol := newRoomUser(t, b, "alice"), newRoomUser(t, b, "bob"), newRoomUser(t, b, "carol")
		joined, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat",
			InitialState: []*event.Event{{Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}}}}})
		if err != nil {
			t.Fatal(err)
		}
		shared, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		// More than a page of matches bob may not see: the search reads
		// on past them.
		for i := range 30 {
			histText(t, alice, joined.RoomID, fmt.Sprintf("secret plans before bob came, part %d", i))
		}
		histText(t, alice, shared.RoomID, "shared plans before bob came")
		for _, r := range []id.RoomID{joined.RoomID, shared.RoomID} {
			if _, err := bob.cli.JoinRoomByID(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		// Long, so that it ranks below the others: found in a second round.
		after := histText(t, alice, joined.RoomID, "secret plans, a sequel written at some length so that it ranks below every message before it")
		sharedAfter := histText(t, alice, shared.RoomID, "shared plans after bob came")

		for _, order := range []string{"rank", "recent"} {
			resp := search(t, bob, mautrix.ReqSearch{SearchTerm: "plans", OrderBy: order, Filter: inRoom(joined.RoomID)})
			if got := searchIDs(resp); !slices.Equal(got, []id.EventID{after}) || resp.NextBatch != "" {
				t.Fatalf("%s, joined visibility: bob found %v (next_batch %q), want only %s", order, got, resp.NextBatch, after)
			}
			// With shared visibility a member sees the room's history.
			if got := searchIDs(search(t, bob, mautrix.ReqSearch{SearchTerm: "plans", OrderBy: order, Filter: inRoom(shared.RoomID)})); len(got) != 2 || !slices.Contains(got, sharedAfter) {
				t.Fatalf("%s, shared visibility: bob found %v", order, got)
			}
		}
		// The context of a result shows only what bob may see either.
		resp := search(t, bob, mautrix.ReqSearch{SearchTerm: "sequel", Filter: inRoom(joined.RoomID),
			EventContext: mautrix.SearchEventContext{BeforeLimit: 10}})
		if len(resp.Results) != 1 {
			t.Fatalf("sequel: %v", searchIDs(resp))
		}
		for _, ev := range resp.Results[0].Context.EventsBefore {
			if ev.Type == event.EventMessage {
				t.Fatalf("context shows %s from before bob joined", ev.ID)
			}
		}
		// A room the user is not in is not searched; a room they left
		// neither (Synapse searches joined rooms).
		if got := searchIDs(search(t, carol, mautrix.ReqSearch{SearchTerm: "plans"})); len(got) != 0 {
			t.Fatalf("carol, in no room, found %v", got)
		}
		if _, err := bob.cli.LeaveRoom(ctx, shared.RoomID); err != nil {
			t.Fatal(err)
		}
		if got := searchIDs(search(t, bob, mautrix.ReqSearch{SearchTerm: "shared"})); len(got) != 0 {
			t.Fatalf("bob found %v in a room he left", got)
		}

		// Redacted: gone, in both orders (Complement's
		// TestSearch/Search_results_with_*_ordering_do_not_include_redacted_events).
		if _, err := alice.cli.RedactEvent(ctx, joined.RoomID, after); err != nil {
			t.Fatal(err)
		}
		for _, order := range []string{"rank", "recent"} {
			resp := search(t, alice, mautrix.ReqSearch{SearchTerm: "plans", OrderBy: order, Filter: inRoom(joined.RoomID)})
			if got := searchIDs(resp); slices.Contains(got, after) || len(got) != 10 || resp.Count != 30 {
				t.Fatalf("%s after the redaction: %v (count %d)", order, got, resp.Count)
			}
		}
	})
}
