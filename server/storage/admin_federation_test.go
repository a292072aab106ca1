package storage_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// fedRoom persists a room's events straight into the store: state events
// change the current state, and events marked outbound are what the
// federation sender would send.
type fedRoom struct {
	t     *testing.T
	st    *storage.Store
	id    string
	prev  []string
	group int64
}

func newFedRoom(t *testing.T, st *storage.Store, id string) *fedRoom {
	t.Helper()
	if err := st.CreateRoom(context.Background(), &storage.Room{RoomID: id, RoomVersion: "12", Creator: "@a:hs"}); err != nil {
		t.Fatal(err)
	}
	r := &fedRoom{t: t, st: st, id: id}
	r.add("$create"+id, "m.room.create", strp(""), "", false)
	r.add("$join-a"+id, "m.room.member", strp("@a:hs"), "join", false)
	return r
}

// add persists one event and returns its stream position.
func (r *fedRoom) add(id, typ string, sk *string, membership string, outbound bool) int64 {
	r.t.Helper()
	sender := "@a:hs"
	if sk != nil && typ == "m.room.member" {
		sender = *sk
	}
	ne := &storage.NewEvent{Event: storage.Event{EventID: id, RoomID: r.id, Type: typ, StateKey: sk, Sender: sender,
		Depth: int64(len(r.prev) + 1), JSON: []byte(`{"n":"` + id + `"}`), Membership: membership},
		PrevEvents: r.prev, StateBefore: r.group, Outbound: outbound}
	head := &storage.HeadUpdate{Extremities: []string{id}}
	if sk != nil {
		head.Changes = []storage.StateChange{{Key: storage.StateKey{Type: typ, StateKey: *sk}, EventID: id}}
	}
	if err := r.st.PersistEvents(context.Background(), []*storage.NewEvent{ne}, head); err != nil {
		r.t.Fatalf("persist %s: %v", id, err)
	}
	r.prev, r.group = []string{id}, ne.StateGroup
	return ne.StreamPos
}

func (r *fedRoom) member(userID, membership string) {
	r.t.Helper()
	r.add("$"+membership+userID+r.id, "m.room.member", strp(userID), membership, false)
}

func (r *fedRoom) say(id string) int64 {
	r.t.Helper()
	return r.add(id, "m.room.message", nil, "", true)
}

func destNames(ds []*storage.DestinationStatus) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Name())
	}
	return out
}

// TestDestinationsAdmin checks the destination list (search, every order,
// paging), one destination's lag, its rooms and the members it has in
// them, on both engines.
func TestDestinationsAdmin(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		a := newFedRoom(t, st, "!a:hs")
		a.member("@b:r1.test", "join")
		a.member("@c:r1.test", "join")
		a.member("@d:r2.test", "join")
		m1, _, m3 := a.say("$m1"), a.say("$m2"), a.say("$m3")
		a.say("$m4")
		m5 := a.say("$m5")
		b := newFedRoom(t, st, "!b:hs")
		b.member("@e:r1.test", "join")
		b.member("@e:r1.test", "leave")
		b1 := b.say("$b1")

		for _, d := range []string{"zz.test", "a.test", "r1.test", "r2.test"} {
			if err := st.EnsureDestination(ctx, d, 0); err != nil {
				t.Fatal(err)
			}
		}
		// r1 received $m1, then stopped answering: $m3 of room a and $b1
		// of room b are queued for it. r2 has everything up to $m5.
		if err := st.QueueForDestinations(ctx, b1, []storage.DestinationRoom{
			{Destination: "r1.test", RoomID: "!a:hs", StreamPos: m1}, {Destination: "r1.test", RoomID: "!a:hs", StreamPos: m3},
			{Destination: "r1.test", RoomID: "!b:hs", StreamPos: b1}, {Destination: "r2.test", RoomID: "!a:hs", StreamPos: m5},
		}); err != nil {
			t.Fatal(err)
		}
		if err := st.DestinationDelivered(ctx, "r1.test", m1); err != nil {
			t.Fatal(err)
		}
		if err := st.DestinationDelivered(ctx, "r2.test", m5); err != nil {
			t.Fatal(err)
		}
		if err := st.DestinationFailed(ctx, "r1.test", "connection refused", 10_000); err != nil {
			t.Fatal(err)
		}

		list := func(f storage.DestinationFilter) ([]string, int) {
			t.Helper()
			if f.Limit == 0 {
				f.Limit = 100
			}
			ds, total, err := st.ListDestinations(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			return destNames(ds), total
		}
		for _, tc := range []struct {
			name  string
			f     storage.DestinationFilter
			want  []string
			total int
		}{
			{"default", storage.DestinationFilter{}, []string{"a.test", "r1.test", "r2.test", "zz.test"}, 4},
			{"desc", storage.DestinationFilter{Desc: true}, []string{"zz.test", "r2.test", "r1.test", "a.test"}, 4},
			{"page", storage.DestinationFilter{From: 1, Limit: 2}, []string{"r1.test", "r2.test"}, 4},
			{"past the end", storage.DestinationFilter{From: 9}, nil, 4},
			{"search any case", storage.DestinationFilter{Search: "R1"}, []string{"r1.test"}, 1},
			{"failing first", storage.DestinationFilter{OrderBy: "failure_ts"}, []string{"r1.test", "a.test", "r2.test", "zz.test"}, 4},
			{"failing last", storage.DestinationFilter{OrderBy: "failure_ts", Desc: true}, []string{"a.test", "r2.test", "zz.test", "r1.test"}, 4},
			{"retry interval", storage.DestinationFilter{OrderBy: "retry_interval", Desc: true}, []string{"r1.test", "a.test", "r2.test", "zz.test"}, 4},
			{"retry last ts", storage.DestinationFilter{OrderBy: "retry_last_ts"}, []string{"a.test", "r2.test", "zz.test", "r1.test"}, 4},
			{"delivered", storage.DestinationFilter{OrderBy: "last_successful_stream_ordering", Desc: true}, []string{"r2.test", "r1.test", "a.test", "zz.test"}, 4},
		} {
			if got, total := list(tc.f); !slices.Equal(got, tc.want) || total != tc.total {
				t.Errorf("%s: %v (total %d), want %v (%d)", tc.name, got, total, tc.want, tc.total)
			}
		}

		r1, err := st.DestinationStatusByName(ctx, "r1.test")
		if err != nil {
			t.Fatal(err)
		}
		if r1.Rooms != 2 || r1.RoomsBehind != 2 || !r1.Behind() || r1.NewestQueued != b1 || r1.LastSuccessfulPos != m1 ||
			r1.FailureTS == 0 || r1.RetryLastTS == 0 || r1.RetryIntervalMS != 10_000 || r1.LastError != "connection refused" || r1.LastSuccessTS == 0 {
			t.Errorf("r1: %+v", r1)
		}
		r2, err := st.DestinationStatusByName(ctx, "r2.test")
		if err != nil || r2.Rooms != 1 || r2.Behind() || r2.NewestQueued != m5 || r2.FailureTS != 0 || r2.RetryIntervalMS != 0 {
			t.Errorf("r2: %+v %v", r2, err)
		}
		if z, err := st.DestinationStatusByName(ctx, "zz.test"); err != nil || z.Rooms != 0 || z.NewestQueued != 0 || z.LastSuccessTS != 0 {
			t.Errorf("zz: %+v %v", z, err)
		}
		if _, err := st.DestinationStatusByName(ctx, "nowhere.test"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("unknown destination: %v", err)
		}
		if total, failing, behind, err := st.DestinationTotals(ctx); err != nil || total != 4 || failing != 1 || behind != 1 {
			t.Errorf("totals: %d %d %d %v", total, failing, behind, err)
		}

		// r1 misses $m2 and $m3 in room a ($m4 and $m5 were never queued
		// for it) and $b1 in room b.
		if n, err := st.DestinationEventsBehind(ctx, "r1.test", 100); err != nil || n != 3 {
			t.Errorf("r1 events behind: %d %v", n, err)
		}
		if n, err := st.DestinationEventsBehind(ctx, "r1.test", 2); err != nil || n != 2 {
			t.Errorf("r1 events behind, capped: %d %v", n, err)
		}
		if n, err := st.DestinationEventsBehind(ctx, "r2.test", 100); err != nil || n != 0 {
			t.Errorf("r2 events behind: %d %v", n, err)
		}

		roomIDs := func(rs []storage.DestinationRoom) (out []string) {
			for _, r := range rs {
				out = append(out, r.RoomID)
			}
			return out
		}
		if rs, total, err := st.DestinationRooms(ctx, "r1.test", 0, 100, false); err != nil || total != 2 ||
			!slices.Equal(roomIDs(rs), []string{"!a:hs", "!b:hs"}) || rs[0].StreamPos != m3 || rs[1].StreamPos != b1 {
			t.Errorf("r1 rooms: %+v %d %v", rs, total, err)
		}
		if rs, total, err := st.DestinationRooms(ctx, "r1.test", 1, 1, false); err != nil || total != 2 || !slices.Equal(roomIDs(rs), []string{"!b:hs"}) {
			t.Errorf("r1 rooms, second page: %+v %d %v", rs, total, err)
		}
		if rs, _, err := st.DestinationRooms(ctx, "r1.test", 0, 100, true); err != nil || !slices.Equal(roomIDs(rs), []string{"!b:hs", "!a:hs"}) {
			t.Errorf("r1 rooms, backwards: %+v %v", rs, err)
		}
		if rs, total, err := st.DestinationRooms(ctx, "zz.test", 0, 100, false); err != nil || total != 0 || rs == nil || len(rs) != 0 {
			t.Errorf("zz rooms: %+v %d %v", rs, total, err)
		}

		// Members joined from r1: two in room a; in room b the only one left.
		if m, err := st.DestinationMembers(ctx, "r1.test", []string{"!a:hs", "!b:hs"}); err != nil || len(m) != 1 || m["!a:hs"] != 2 {
			t.Errorf("r1 members: %v %v", m, err)
		}
		if m, err := st.DestinationMembers(ctx, "r2.test", []string{"!a:hs"}); err != nil || m["!a:hs"] != 1 {
			t.Errorf("r2 members: %v %v", m, err)
		}
		// A server name is matched literally: the "_" of r_.test is not
		// LIKE's wildcard, so it does not match r1.test's members.
		if m, err := st.DestinationMembers(ctx, "r_.test", []string{"!a:hs"}); err != nil || len(m) != 0 {
			t.Errorf("r_.test members: %v %v", m, err)
		}

		// An admin's reset ends the back-off; the failure stays on record
		// until a transaction gets through.
		if was, err := st.ResetDestinationRetry(ctx, "r1.test"); err != nil || !was {
			t.Fatalf("reset: %v %v", was, err)
		}
		if was, err := st.ResetDestinationRetry(ctx, "r1.test"); err != nil || was {
			t.Fatalf("second reset: %v %v", was, err)
		}
		r1, _ = st.DestinationStatusByName(ctx, "r1.test")
		if r1.RetryIntervalMS != 0 || r1.RetryLastTS != 0 || r1.FailureTS == 0 {
			t.Errorf("r1 after reset: %+v", r1)
		}

		// LIKE's wildcards in a search match themselves.
		if err := st.EnsureDestination(ctx, "w_x.test", 0); err != nil {
			t.Fatal(err)
		}
		if err := st.EnsureDestination(ctx, "wax.test", 0); err != nil {
			t.Fatal(err)
		}
		if got, total := list(storage.DestinationFilter{Search: "w_x"}); !slices.Equal(got, []string{"w_x.test"}) || total != 1 {
			t.Errorf("search with _: %v %d", got, total)
		}
		if got, _ := list(storage.DestinationFilter{Search: "%"}); len(got) != 0 {
			t.Errorf("search with %%: %v", got)
		}
	})
}

// TestOutboundEventsReadWithoutJSON checks what the federation sender
// reads of the stream: outbound live events in order with what decides
// their destinations and no JSON, then the JSON of those it asks for, an
// event gone since left without, on both engines.
func TestOutboundEventsReadWithoutJSON(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		a := newFedRoom(t, st, "!a:hs")
		start := a.say("$first")
		a.member("@b:remote", "join")
		last := a.say("$second")
		evs, err := st.OutboundEventsAfter(ctx, start-1, last, 10)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, e := range evs {
			ids = append(ids, e.EventID)
			if e.JSON != nil || e.RoomID != "!a:hs" || e.Sender != "@a:hs" || e.Type != "m.room.message" || e.StateGroup == 0 {
				t.Errorf("%s read as %+v", e.EventID, e)
			}
		}
		// The membership is not outbound (add's argument), so not read.
		if !slices.Equal(ids, []string{"$first", "$second"}) {
			t.Fatalf("outbound events = %v", ids)
		}
		gone := &storage.Event{EventID: "$gone", StreamPos: last + 100}
		if err := st.EventJSONs(ctx, []*storage.Event{evs[1], gone, evs[0]}); err != nil {
			t.Fatal(err)
		}
		if string(evs[0].JSON) != `{"n":"$first"}` || string(evs[1].JSON) != `{"n":"$second"}` || gone.JSON != nil {
			t.Errorf("JSON filled in: %s, %s, gone %q", evs[0].JSON, evs[1].JSON, gone.JSON)
		}
		if evs, err = st.OutboundEventsAfter(ctx, start, last, 1); err != nil || len(evs) != 1 || evs[0].EventID != "$second" {
			t.Errorf("after the first, limit 1: %v, %v", evs, err)
		}
	})
}
