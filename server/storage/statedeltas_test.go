package storage_test

import (
	"context"
	"testing"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// Readers of state changes between two positions skip the database when
// no delta was written after the first; a state change moves that mark
// before it is visible, and a restart finds it again.
func TestStateDeltaMark(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		ctx := context.Background()
		st, err := storage.Open(ctx, e.Options)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if st != nil {
				st.Close()
			}
		}()
		const room = "!d:hs"
		member := memberRoom(t, st, room, "@a:hs", "@b:hs")
		at := func() int64 {
			t.Helper()
			pos, err := st.MaxStreamPos(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return pos
		}
		pos0 := at()
		for _, id := range []string{"$m1", "$m2"} {
			ne := &storage.NewEvent{Event: storage.Event{EventID: id, RoomID: room, Type: "m.room.message", Sender: "@a:hs",
				Depth: 10, JSON: []byte(`{}`)}}
			if err := st.PersistEvents(ctx, []*storage.NewEvent{ne}, &storage.HeadUpdate{Extremities: []string{id}}); err != nil {
				t.Fatal(err)
			}
		}
		pos1 := at()
		if pos1 <= pos0 || !st.NoDeltasAfter(pos0) {
			t.Fatalf("after messages alone (positions %d to %d): deltas after %d", pos0, pos1, pos0)
		}
		if cs, err := st.StateChangesBetween(ctx, []string{room}, pos0, pos1); err != nil || len(cs) != 0 {
			t.Fatalf("state changes between messages: %v, %v", cs, err)
		}
		member("@b:hs", "leave")
		pos2 := at()
		if st.NoDeltasAfter(pos1) || !st.NoDeltasAfter(pos2) {
			t.Fatalf("after b left at %d: deltas after %d: %v, after %d: %v", pos2, pos1, !st.NoDeltasAfter(pos1), pos2, !st.NoDeltasAfter(pos2))
		}
		key := storage.StateKey{Type: "m.room.member", StateKey: "@b:hs"}
		leave, err := st.StateEntryAt(ctx, room, pos2, key.Type, key.StateKey)
		if err != nil || leave == "" {
			t.Fatalf("b's member event now: %q, %v", leave, err)
		}
		cs, err := st.StateChangesBetween(ctx, []string{room}, pos1, pos2)
		if err != nil || len(cs[room]) != 1 || cs[room][0].Key != key || cs[room][0].EventID != leave {
			t.Fatalf("state changes: %+v, %v", cs, err)
		}
		ms, err := st.MembershipChangesBetween(ctx, []string{room}, pos1, pos2)
		if err != nil || len(ms) != 1 || ms[0].UserID != "@b:hs" || ms[0].Membership != "leave" {
			t.Fatalf("membership changes: %+v, %v", ms, err)
		}
		if rooms, err := st.RoomsWithEventsBetween(ctx, pos1, pos2); err != nil || !rooms[room] {
			t.Fatalf("rooms with events: %v, %v", rooms, err)
		}
		// The state at pos1 undoes the change (its delta, which this
		// helper writes without the previous event, says the key was not
		// in the state before).
		state, later, err := st.StateAndChangesAfter(ctx, room, pos1)
		if err != nil || len(later) != 1 || state[key] == leave {
			t.Fatalf("state and changes after %d: %v, %+v, %v", pos1, state, later, err)
		}
		if got, err := st.StateEntryAt(ctx, room, pos1, key.Type, key.StateKey); err != nil || got == leave {
			t.Fatalf("b's member event at %d: %q, %v; want the one before %q", pos1, got, err, leave)
		}
		rs, err := st.StatesAndChanges(ctx, []storage.RoomRange{{RoomID: room, After: pos1}})
		if err != nil {
			t.Fatal(err)
		}
		if _, later, ok := rs.StateAndChangesAfter(room, pos1); !ok || len(later) != 1 {
			t.Fatalf("batched state and changes after %d: %+v, %v", pos1, later, ok)
		}

		// A restart finds the newest delta stored.
		st.Close()
		if st, err = storage.Open(ctx, e.Options); err != nil {
			st = nil
			t.Fatal(err)
		}
		if st.NoDeltasAfter(pos2-1) || !st.NoDeltasAfter(pos2) {
			t.Fatalf("reopened: deltas after %d: %v, after %d: %v", pos2-1, !st.NoDeltasAfter(pos2-1), pos2, !st.NoDeltasAfter(pos2))
		}
	})
}
