package storage_test

import (
	"context"
	"slices"
	"testing"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// TestEventEdgesByPosition: the DAG's edges are keyed by their event's
// stream position (migration 0040), so they must follow the event to the
// position it ends at: an event stored first as an outlier takes a new one
// when it becomes a timeline event. Then migration 0040 run again on edges
// stored by event ID keeps every edge.
func TestEventEdgesByPosition(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		ctx := context.Background()
		st := storagetest.Open(t, e)
		r := newSearchRoom(t, st, "!edges:hs")
		a := r.text("one")
		// An outlier (as from a join's auth chain), then the same event
		// arriving in the timeline.
		late := &storage.NewEvent{Event: storage.Event{EventID: "$late", Type: "m.room.message", Outlier: true}}
		r.persist(late)
		r.n--
		late = r.persist(&storage.NewEvent{Event: storage.Event{EventID: "$late", Type: "m.room.message"}})
		b := r.text("two")
		want := map[string][]string{a.Event.EventID: a.PrevEvents, "$late": {a.Event.EventID}, b.Event.EventID: {"$late"}}
		check := func(st *storage.Store, when string) {
			t.Helper()
			for id, prevs := range want {
				got, err := st.PrevEvents(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, prevs) {
					t.Fatalf("%s: prev events of %s: %v, want %v", when, id, got, prevs)
				}
			}
		}
		if late.Event.StreamPos <= a.Event.StreamPos {
			t.Fatalf("the de-outliered event kept an old position: %d after %d", late.Event.StreamPos, a.Event.StreamPos)
		}
		check(st, "stored")

		// The edges as stored before migration 0040, keyed by event ID.
		db := st.DB()
		for _, q := range []string{
			`CREATE TABLE event_edges_old (event_id TEXT NOT NULL, prev_event_id TEXT NOT NULL, room_id TEXT NOT NULL,
				PRIMARY KEY (event_id, prev_event_id))`,
			`INSERT INTO event_edges_old SELECT e.event_id, ed.prev_event_id, e.room_id FROM event_edges ed
				JOIN events e ON e.stream_ordering = ed.stream_ordering`,
			`DROP TABLE event_edges`,
			`ALTER TABLE event_edges_old RENAME TO event_edges`,
			`CREATE INDEX event_edges_room ON event_edges (room_id)`,
			`DELETE FROM schema_migrations WHERE version = 40`,
		} {
			if _, err := db.Exec(q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		st.Close()
		st = storagetest.Open(t, e)
		check(st, "migrated")
	})
}

// TestTxnIDsByPosition: a client transaction ID finds its event through the
// event's stream position (migration 0041), also after the migration
// rewrote rows stored by event ID.
func TestTxnIDsByPosition(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		ctx := context.Background()
		st := storagetest.Open(t, e)
		r := newSearchRoom(t, st, "!txn:hs")
		sent := r.persist(&storage.NewEvent{Event: storage.Event{Type: "m.room.message", SenderDevice: "DEV", TxnID: "t1",
			TxnScope: "send:!txn:hs"}})
		r.text("not sent with a transaction ID")
		check := func(st *storage.Store, when string) {
			t.Helper()
			id, err := st.EventIDByTxn(ctx, "@a:hs", "DEV", "send:!txn:hs", "t1")
			if err != nil || id != sent.Event.EventID {
				t.Fatalf("%s: event of t1: %q, %v; want %s", when, id, err, sent.Event.EventID)
			}
			if _, err := st.EventIDByTxn(ctx, "@a:hs", "DEV", "send:!txn:hs", "t2"); err == nil {
				t.Fatalf("%s: an unknown transaction ID found an event", when)
			}
		}
		check(st, "stored")
		db := st.DB()
		for _, q := range []string{
			`CREATE TABLE event_txn_ids_old (user_id TEXT NOT NULL, device_id TEXT NOT NULL, scope TEXT NOT NULL, txn_id TEXT NOT NULL,
				event_id TEXT NOT NULL, created_ts BIGINT NOT NULL, PRIMARY KEY (user_id, device_id, scope, txn_id))`,
			`INSERT INTO event_txn_ids_old SELECT t.user_id, t.device_id, t.scope, t.txn_id, e.event_id, 0 FROM event_txn_ids t
				JOIN events e ON e.stream_ordering = t.stream_ordering`,
			`DROP TABLE event_txn_ids`,
			`ALTER TABLE event_txn_ids_old RENAME TO event_txn_ids`,
			`DELETE FROM schema_migrations WHERE version = 41`,
		} {
			if _, err := db.Exec(q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		st.Close()
		st = storagetest.Open(t, e)
		check(st, "migrated")
	})
}

// TestFederationSenderPositionMigration: migration 0043 keeps a stored
// federation sender position, and sets a missing one to the newest event.
func TestFederationSenderPositionMigration(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		ctx := context.Background()
		st := storagetest.Open(t, e)
		if pos, err := st.FederationSenderPosition(ctx); err != nil || pos != 0 {
			t.Fatalf("position of a new database: %d, %v; want 0 (set when it opened, before any event)", pos, err)
		}
		r := newSearchRoom(t, st, "!fed:hs")
		last := r.text("the newest event")
		rerun := func(qs ...string) int64 {
			t.Helper()
			for _, q := range append(qs, `DELETE FROM schema_migrations WHERE version = 43`) {
				if _, err := st.DB().Exec(q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			st.Close()
			st = storagetest.Open(t, e)
			pos, err := st.FederationSenderPosition(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return pos
		}
		if pos := rerun(`UPDATE federation_sender_position SET position = 1`); pos != 1 {
			t.Fatalf("a stored position became %d, want it kept (1)", pos)
		}
		if pos := rerun(`DELETE FROM federation_sender_position`); pos != last.Event.StreamPos {
			t.Fatalf("a missing position became %d, want the newest event's, %d", pos, last.Event.StreamPos)
		}
	})
}
