package storage_test

import (
	"context"
	"testing"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// TestPipelinedWriteFails: a write sent whole (PostgreSQL: BEGIN, its
// statements and COMMIT in one round trip) that fails changes nothing,
// and the writes after it work. On PostgreSQL the server skips what
// follows the failing statement, COMMIT included, and holds the
// transaction aborted: the pool's one connection must not be handed out
// as it is (pipelineTx).
func TestPipelinedWriteFails(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		e.Options.MaxConns = 1
		st := storagetest.Open(t, e)
		ctx := t.Context()
		n := func(pos int64) storage.Notification {
			return storage.Notification{UserID: "@bob:hs", StreamPos: pos, RoomID: "!r:hs", EventID: "$e", ThreadID: "main",
				Actions: `["notify"]`, TS: pos, CumNotif: 1}
		}
		if err := st.RecordNotifications(ctx, 5, []storage.Notification{n(5)}, nil); err != nil {
			t.Fatal(err)
		}
		// The same notification again: its key is taken.
		if err := st.RecordNotifications(ctx, 6, []storage.Notification{n(5)}, nil); err == nil {
			t.Fatal("a notification recorded twice")
		}
		if pos, err := st.PushPosition(ctx); err != nil || pos != 5 {
			t.Fatalf("position after a failed write: %d, %v; want 5", pos, err)
		}
		if err := st.RecordNotifications(ctx, 7, []storage.Notification{n(7)}, nil); err != nil {
			t.Fatalf("the write after a failed one: %v", err)
		}
		if pos, err := st.PushPosition(ctx); err != nil || pos != 7 {
			t.Fatalf("position: %d, %v; want 7", pos, err)
		}
	})
}

// TestGroupCommitOutlier: a batch of messages one of which is stored as
// an outlier already is written again, one write at a time, in
// transactions that can turn it into a timeline event (on PostgreSQL the
// batch is first sent whole, and fails).
func TestGroupCommitOutlier(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		const room = "!a:hs"
		if err := st.CreateRoom(ctx, &storage.Room{RoomID: room, RoomVersion: "11", Creator: "@a:hs"}); err != nil {
			t.Fatal(err)
		}
		msg := func(id string) []*storage.NewEvent {
			return []*storage.NewEvent{{Event: storage.Event{EventID: id, RoomID: room, Type: "m.room.message", Sender: "@a:hs",
				Depth: 2, JSON: []byte(`{"content":{"body":"hello"}}`)}}}
		}
		out := msg("$m2")
		out[0].Outlier = true
		if err := st.PersistOutliers(ctx, out); err != nil {
			t.Fatal(err)
		}
		var last *storage.Pending
		var ps []*storage.Pending
		for _, id := range []string{"$m1", "$m2", "$m3"} {
			last = st.QueueEvents(ctx, msg(id), &storage.HeadUpdate{Extremities: []string{id}}, last)
			ps = append(ps, last)
		}
		for i, p := range ps {
			if err := p.Wait(); err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
		}
		for _, id := range []string{"$m1", "$m2", "$m3"} {
			ev, err := st.EventByID(ctx, id)
			if err != nil || ev.Outlier || ev.StreamPos <= 0 {
				t.Fatalf("%s: %+v, %v; want a timeline event", id, ev, err)
			}
		}
		// A duplicate in a batch of messages fails alone.
		a := st.QueueEvents(ctx, msg("$m4"), &storage.HeadUpdate{Extremities: []string{"$m4"}}, nil)
		dup := st.QueueEvents(ctx, msg("$m1"), &storage.HeadUpdate{Extremities: []string{"$m1"}}, nil)
		b := st.QueueEvents(ctx, msg("$m5"), &storage.HeadUpdate{Extremities: []string{"$m5"}}, nil)
		if err := dup.Wait(); err != storage.ErrConflict {
			t.Fatalf("duplicate: %v, want ErrConflict", err)
		}
		for _, p := range []*storage.Pending{a, b} {
			if err := p.Wait(); err != nil {
				t.Fatal(err)
			}
		}
	})
}
