package storage_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"
	"weak"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// TestGroupCommit: writes queued together commit together, a failing one
// is rolled back alone, one built on a failed one fails too, and a room's
// writes keep their queue order however many rooms write at once.
func TestGroupCommit(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		msg := func(room, id string, prev string, txn string) []*storage.NewEvent {
			ne := &storage.NewEvent{Event: storage.Event{EventID: id, RoomID: room, Type: "m.room.message", Sender: "@a:hs",
				Depth: 2, JSON: []byte(`{}`)}}
			if prev != "" {
				ne.PrevEvents = []string{prev}
			}
			if txn != "" {
				ne.SenderDevice, ne.TxnID, ne.TxnScope = "DEV", txn, "send "+room
			}
			return []*storage.NewEvent{ne}
		}
		head := func(id string) *storage.HeadUpdate { return &storage.HeadUpdate{Extremities: []string{id}} }
		for _, room := range []string{"!a:hs", "!b:hs"} {
			if err := st.CreateRoom(ctx, &storage.Room{RoomID: room, RoomVersion: "11", Creator: "@a:hs"}); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.PersistEvents(ctx, msg("!b:hs", "$b0", "", "t1"), head("$b0")); err != nil {
			t.Fatal(err)
		}

		a1 := st.QueueEvents(ctx, msg("!a:hs", "$a1", "", ""), head("$a1"), nil)
		a2 := st.QueueEvents(ctx, msg("!a:hs", "$a2", "$a1", ""), head("$a2"), a1)
		b1 := st.QueueEvents(ctx, msg("!b:hs", "$b1", "$b0", "t1"), head("$b1"), nil) // txn ID taken
		b2 := st.QueueEvents(ctx, msg("!b:hs", "$b2", "$b1", ""), head("$b2"), b1)
		b3 := st.QueueEvents(ctx, msg("!b:hs", "$b3", "$b0", ""), head("$b3"), nil)
		for name, p := range map[string]*storage.Pending{"a1": a1, "a2": a2, "b3": b3} {
			if err := p.Wait(); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		if err := b1.Wait(); !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("b1 reused a transaction ID: %v", err)
		}
		if err := b2.Wait(); !errors.Is(err, storage.ErrBuiltOnFailed) {
			t.Fatalf("b2 was built on b1: %v", err)
		}
		for _, id := range []string{"$a1", "$a2", "$b3"} {
			if _, err := st.EventByID(ctx, id); err != nil {
				t.Fatalf("%s: %v", id, err)
			}
		}
		for _, id := range []string{"$b1", "$b2"} {
			if _, err := st.EventByID(ctx, id); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("%s was stored: %v", id, err)
			}
		}
		exts, err := st.ForwardExtremities(ctx, "!b:hs")
		if err != nil || len(exts) != 1 || exts[0].EventID != "$b3" {
			t.Fatalf("room b's extremities: %v, %v", exts, err)
		}

		// Many writers into several rooms, each room's writes queued in
		// order (under a lock per room, as the timeline does) and each
		// built on the one before.
		const rooms, writers, each = 4, 16, 25
		var locks [rooms]sync.Mutex
		var last [rooms]*storage.Pending
		var order [rooms][]string
		for r := range rooms {
			if err := st.CreateRoom(ctx, &storage.Room{RoomID: fmt.Sprintf("!r%d:hs", r), RoomVersion: "11", Creator: "@a:hs"}); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		errs := make(chan error, writers*each)
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					r := (w + i) % rooms
					room, id := fmt.Sprintf("!r%d:hs", r), fmt.Sprintf("$w%d-%d", w, i)
					locks[r].Lock()
					p := st.QueueEvents(ctx, msg(room, id, "", ""), head(id), last[r])
					last[r] = p
					order[r] = append(order[r], id)
					locks[r].Unlock()
					if err := p.Wait(); err != nil {
						errs <- fmt.Errorf("%s: %w", id, err)
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for r := range rooms {
			evs, err := st.RoomEvents(ctx, fmt.Sprintf("!r%d:hs", r), 0, 1<<62, 10*writers*each, false)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != len(order[r]) {
				t.Fatalf("room %d has %d events, want %d", r, len(evs), len(order[r]))
			}
			for i, e := range evs {
				if e.EventID != order[r][i] {
					t.Fatalf("room %d's event %d is %s, want %s (queue order)", r, i, e.EventID, order[r][i])
				}
			}
		}
	})
}

// TestEndedWritesLetGo: a write that ended no longer holds what it was
// made of, nor the writes it was built on. The timeline keeps each room's
// last write, and each is built on the one before: kept whole, a steady
// stream of messages made a chain back through all of them.
func TestEndedWritesLetGo(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		if err := st.CreateRoom(ctx, &storage.Room{RoomID: "!c:hs", RoomVersion: "11", Creator: "@a:hs"}); err != nil {
			t.Fatal(err)
		}
		var first weak.Pointer[storage.NewEvent]
		var last *storage.Pending
		for i := range 50 {
			id := fmt.Sprintf("$c%d", i)
			ne := &storage.NewEvent{Event: storage.Event{EventID: id, RoomID: "!c:hs", Type: "m.room.message", Sender: "@a:hs",
				Depth: int64(i + 2), JSON: []byte(`{}`)}}
			if i == 0 {
				first = weak.Make(ne)
			}
			last = st.QueueEvents(ctx, []*storage.NewEvent{ne}, &storage.HeadUpdate{Extremities: []string{id}}, last)
		}
		if err := last.Wait(); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(5 * time.Second); first.Value() != nil; {
			if time.Now().After(deadline) {
				t.Fatal("the last write still holds the first write's events")
			}
			runtime.GC()
			time.Sleep(10 * time.Millisecond)
		}
		runtime.KeepAlive(last)
	})
}
