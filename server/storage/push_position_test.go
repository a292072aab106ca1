package storage_test

import (
	"fmt"
	"math"
	"testing"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// TestPushPositionOnlyMovesForward: an evaluator that stops while its last
// batch committed without its knowing writes its older position on the
// way out; that must not move the stored position back, or the next
// evaluator records the same notifications again and fails on their keys
// (TestSyncSurvivesRestart's flake on PostgreSQL).
func TestPushPositionOnlyMovesForward(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := t.Context()
		if err := st.RecordNotifications(ctx, 9, nil, nil); err != nil {
			t.Fatal(err)
		}
		if err := st.SetPushPosition(ctx, 7); err != nil {
			t.Fatal(err)
		}
		if pos, err := st.PushPosition(ctx); err != nil || pos != 9 {
			t.Fatalf("position after an older write: %d, %v; want 9", pos, err)
		}
		if err := st.SetPushPosition(ctx, 12); err != nil {
			t.Fatal(err)
		}
		if pos, err := st.PushPosition(ctx); err != nil || pos != 12 {
			t.Fatalf("position after a newer write: %d, %v; want 12", pos, err)
		}
	})
}

// TestNotificationTotalsCache: the running totals at a position are cached
// once the evaluator has passed it (cumAt), and dropped with the
// notifications they were read from: a user deactivated (and reactivated
// by an admin) starts counting again from nothing, and a stale total would
// hide their new unread notifications.
func TestNotificationTotalsCache(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := t.Context()
		const user, room = "@bob:hs", "!room:hs"
		if err := st.CreateUser(ctx, &storage.User{UserID: user, Localpart: "bob", PasswordHash: "$2b$x"}); err != nil {
			t.Fatal(err)
		}
		record := func(pos, cum int64) {
			t.Helper()
			n := storage.Notification{UserID: user, StreamPos: pos, RoomID: room, EventID: fmt.Sprintf("$e%d", pos), ThreadID: "main",
				Actions: `["notify"]`, TS: pos, CumNotif: cum}
			h := storage.ThreadHead{UserID: user, RoomID: room, ThreadID: "main", StreamPos: pos, CumNotif: cum}
			if err := st.RecordNotifications(ctx, pos, []storage.Notification{n}, []storage.ThreadHead{h}); err != nil {
				t.Fatal(err)
			}
		}
		at := func(pos int64) int64 {
			t.Helper()
			n, _, err := st.CumAt(ctx, user, room, "main", pos)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		record(1, 1)
		record(2, 2)
		record(3, 3)
		// Another room's notifications in between are walked past.
		if err := st.RecordNotifications(ctx, 4, []storage.Notification{{UserID: user, StreamPos: 4, RoomID: "!other:hs",
			EventID: "$e4", ThreadID: "main", Actions: `["notify"]`, TS: 4, CumNotif: 1}}, nil); err != nil {
			t.Fatal(err)
		}
		if got := at(2); got != 2 {
			t.Fatalf("totals at 2: %d, want 2", got)
		}
		if got := at(4); got != 3 {
			t.Fatalf("totals at 4: %d, want 3 (the thread's last at or before 4)", got)
		}
		if got := at(2); got != 2 { // cached now
			t.Fatalf("totals at 2 again: %d, want 2", got)
		}
		if err := st.DeactivateUser(ctx, user, false); err != nil {
			t.Fatal(err)
		}
		if err := st.Reactivate(ctx, user); err != nil {
			t.Fatal(err)
		}
		record(5, 1)
		if got := at(2); got != 0 {
			t.Fatalf("totals at 2 after the notifications went: %d, want 0", got)
		}
	})
}

// TestUnreadCountsReceiptBeforeItsEvent: a read receipt can name an event
// this server has not stored yet (a remote server's receipt that overtook
// its event). Until the event arrives the receipt reads nothing, and the
// user's unread base is not cached then: once the event is stored, the
// receipt counts.
func TestUnreadCountsReceiptBeforeItsEvent(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := t.Context()
		const user, room = "@bob:hs", "!a:hs"
		if err := st.CreateRoom(ctx, &storage.Room{RoomID: room, RoomVersion: "11", Creator: "@a:hs"}); err != nil {
			t.Fatal(err)
		}
		persist := func(id string) int64 {
			t.Helper()
			ne := &storage.NewEvent{Event: storage.Event{EventID: id, RoomID: room, Type: "m.room.message", Sender: "@a:hs",
				Depth: 2, JSON: []byte(`{}`)}}
			if err := st.PersistEvents(ctx, []*storage.NewEvent{ne}, &storage.HeadUpdate{Extremities: []string{id}}); err != nil {
				t.Fatal(err)
			}
			e, err := st.EventByID(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			return e.StreamPos
		}
		unread := func() int64 {
			t.Helper()
			counts, err := st.UnreadCounts(ctx, user, nil, math.MaxInt64)
			if err != nil {
				t.Fatal(err)
			}
			return counts[room]["main"].Notifications
		}
		p1 := persist("$1")
		if err := st.RecordNotifications(ctx, p1, []storage.Notification{{UserID: user, StreamPos: p1, RoomID: room, EventID: "$1",
			ThreadID: "main", Actions: `["notify"]`, TS: 1, CumNotif: 1}},
			[]storage.ThreadHead{{UserID: user, RoomID: room, ThreadID: "main", StreamPos: p1, CumNotif: 1}}); err != nil {
			t.Fatal(err)
		}
		if got := unread(); got != 1 {
			t.Fatalf("unread before any receipt: %d, want 1", got)
		}
		if _, err := st.PutReceipt(ctx, &storage.Receipt{RoomID: room, UserID: user, Type: "m.read", EventID: "$2", TS: 2}); err != nil {
			t.Fatal(err)
		}
		if got := unread(); got != 1 {
			t.Fatalf("unread with a receipt on an event not stored: %d, want 1", got)
		}
		persist("$2")
		if got := unread(); got != 0 {
			t.Fatalf("unread once the receipt's event is stored: %d, want 0", got)
		}
	})
}

// TestFailedNotificationWriteLeavesNothing: a write of notifications that
// fails part way leaves none of its rows, heads or position behind. On
// SQLite its statements are INSERT OR FAIL (failNotAbort), which keep the
// rows a failing statement wrote before it failed: only the rollback of
// the whole transaction takes them back. The duplicate row sits in the
// middle of the second statement (64 rows, then 16), after rows of that
// statement and a whole statement before it were written.
func TestFailedNotificationWriteLeavesNothing(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := t.Context()
		before, err := st.PushPosition(ctx)
		if err != nil {
			t.Fatal(err)
		}
		const room = "!r:hearth.test"
		var ns []storage.Notification
		var heads []storage.ThreadHead
		for i := range 80 {
			user := fmt.Sprintf("@m%02d:hearth.test", i)
			ns = append(ns, storage.Notification{UserID: user, StreamPos: 5, RoomID: room, EventID: "$e5",
				ThreadID: "main", Actions: `["notify"]`, TS: 5, CumNotif: 1})
			heads = append(heads, storage.ThreadHead{UserID: user, RoomID: room, ThreadID: "main", StreamPos: 5, CumNotif: 1})
		}
		ns[71] = ns[3] // a primary key written already, by the first statement
		if err := st.RecordNotifications(ctx, 5, ns, heads); err == nil {
			t.Fatal("a write with a duplicate notification succeeded")
		}
		if pos, err := st.PushPosition(ctx); err != nil || pos != before {
			t.Fatalf("push position %d, %v after the failed write; want %d", pos, err, before)
		}
		for _, user := range []string{"@m00:hearth.test", "@m03:hearth.test", "@m66:hearth.test", "@m79:hearth.test"} {
			if got, err := st.NotificationsOf(ctx, user, 0, 10, false); err != nil || len(got) != 0 {
				t.Fatalf("%s: %d notifications (%v) after the failed write", user, len(got), err)
			}
			counts, err := st.UnreadCounts(ctx, user, map[string]bool{room: true}, math.MaxInt64)
			if err != nil {
				t.Fatal(err)
			}
			if len(counts[room]) != 0 {
				t.Fatalf("%s: unread counts %v after the failed write", user, counts)
			}
		}
		// The store still writes: the same rows without the duplicate.
		ns[71] = storage.Notification{UserID: "@m71:hearth.test", StreamPos: 5, RoomID: room, EventID: "$e5",
			ThreadID: "main", Actions: `["notify"]`, TS: 5, CumNotif: 1}
		if err := st.RecordNotifications(ctx, 5, ns, heads); err != nil {
			t.Fatal(err)
		}
		if got, err := st.NotificationsOf(ctx, "@m66:hearth.test", 0, 10, false); err != nil || len(got) != 1 {
			t.Fatalf("after the good write: %d notifications, %v", len(got), err)
		}
	})
}
