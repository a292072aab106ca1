package storage_test

import (
	"fmt"
	"testing"
	"time"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// TestStagedNotifications: what the evaluator staged counts before it is
// written (unread counts, running totals, thread heads), the stored
// position moves only with the write, and the readers of whole rows wait
// for it, asking for it to be done now.
func TestStagedNotifications(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := t.Context()
		const user, room = "@bob:hs", "!room:hs"
		stage := func(pos, cum int64) {
			n := storage.Notification{UserID: user, StreamPos: pos, RoomID: room, EventID: fmt.Sprintf("$e%d", pos), ThreadID: "main",
				Actions: `["notify"]`, TS: pos, CumNotif: cum}
			h := storage.ThreadHead{UserID: user, RoomID: room, ThreadID: "main", StreamPos: pos, CumNotif: cum}
			st.StageNotifications(pos, []storage.Notification{n}, []storage.ThreadHead{h})
		}
		unread := func(upTo int64) int64 {
			t.Helper()
			c, err := st.UnreadCounts(ctx, user, nil, upTo)
			if err != nil {
				t.Fatal(err)
			}
			return c[room]["main"].Notifications
		}
		// One stored, two staged.
		if err := st.RecordNotifications(ctx, 1, []storage.Notification{{UserID: user, StreamPos: 1, RoomID: room, EventID: "$e1",
			ThreadID: "main", Actions: `["notify"]`, TS: 1, CumNotif: 1}},
			[]storage.ThreadHead{{UserID: user, RoomID: room, ThreadID: "main", StreamPos: 1, CumNotif: 1}}); err != nil {
			t.Fatal(err)
		}
		if got := unread(100); got != 1 {
			t.Fatalf("unread before staging: %d, want 1", got)
		}
		stage(2, 2)
		stage(3, 3)
		// Carol, whose counts nothing has read (so cached) yet, notified
		// by the same event.
		st.StageNotifications(3, []storage.Notification{{UserID: "@carol:hs", StreamPos: 3, RoomID: room, EventID: "$e3", ThreadID: "main",
			Actions: `["notify"]`, TS: 3, CumNotif: 1}}, []storage.ThreadHead{{UserID: "@carol:hs", RoomID: room, ThreadID: "main", StreamPos: 3, CumNotif: 1}})
		if c, err := st.UnreadCounts(ctx, "@carol:hs", nil, 100); err != nil || c[room]["main"].Notifications != 1 {
			t.Fatalf("carol's unread with one staged: %v, %v", c, err)
		}
		if got := unread(100); got != 3 {
			t.Fatalf("unread with two staged: %d, want 3", got)
		}
		if got := unread(2); got != 2 {
			t.Fatalf("unread up to a staged position: %d, want 2", got)
		}
		if n, _, err := st.CumAt(ctx, user, room, "main", 3); err != nil || n != 3 {
			t.Fatalf("totals at a staged row: %d, %v; want 3", n, err)
		}
		heads, err := st.ThreadHeads(ctx, room, "main")
		if err != nil || heads[user].StreamPos != 3 || heads[user].CumNotif != 3 {
			t.Fatalf("thread heads with staged ones: %+v, %v", heads, err)
		}
		if pos, err := st.PushPosition(ctx); err != nil || pos != 1 {
			t.Fatalf("stored position before the write: %d, %v; want 1", pos, err)
		}
		// /notifications waits for the write.
		got := make(chan []storage.Notification, 1)
		go func() {
			ns, err := st.NotificationsOf(ctx, user, 0, 10, false)
			if err != nil {
				t.Error(err)
			}
			got <- ns
		}()
		select {
		case ns := <-got:
			t.Fatalf("NotificationsOf answered before the write: %d rows", len(ns))
		case <-time.After(100 * time.Millisecond):
		}
		// ... and asks the evaluator to write now.
		select {
		case <-st.FlushWanted():
		case <-time.After(10 * time.Second):
			t.Fatal("NotificationsOf waits without asking for a flush")
		}
		if err := st.FlushNotifications(ctx); err != nil {
			t.Fatal(err)
		}
		if ns := <-got; len(ns) != 3 || ns[0].StreamPos != 3 {
			t.Fatalf("notifications after the write: %+v", ns)
		}
		if rows, ahead := st.Staged(); rows != 0 || ahead != 0 {
			t.Fatalf("staged after the write: %d rows, %d ahead", rows, ahead)
		}
		if pos, err := st.PushPosition(ctx); err != nil || pos != 3 {
			t.Fatalf("stored position after the write: %d, %v; want 3", pos, err)
		}
		// Written, the same answers, now from the tables.
		if got := unread(100); got != 3 {
			t.Fatalf("unread after the write: %d, want 3", got)
		}
		if got := unread(2); got != 2 {
			t.Fatalf("unread up to 2 after the write: %d, want 2", got)
		}
		// A position staged alone is written by the next flush too.
		st.StageNotifications(9, nil, nil)
		if err := st.FlushNotifications(ctx); err != nil {
			t.Fatal(err)
		}
		if pos, err := st.PushPosition(ctx); err != nil || pos != 9 {
			t.Fatalf("stored position after a position alone: %d, %v; want 9", pos, err)
		}
	})
}

// TestStagedNotificationsOverSeveralFlushes: the buffers a flush keeps for
// the next (each notified user's, and the flush's own) hold nothing of
// what was written: every row is stored once, with its own values, flush
// after flush, for a user notified at every flush and for one notified
// at every other.
func TestStagedNotificationsOverSeveralFlushes(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := t.Context()
		const room = "!room:hs"
		cum := map[string]int64{}
		want := map[string][]int64{}
		for pos := int64(1); pos <= 6; pos++ {
			users := []string{"@bob:hs"}
			if pos%2 == 1 {
				users = append(users, "@carol:hs")
			}
			var ns []storage.Notification
			var hs []storage.ThreadHead
			for _, u := range users {
				cum[u]++
				ns = append(ns, storage.Notification{UserID: u, StreamPos: pos, RoomID: room, EventID: fmt.Sprintf("$e%d", pos),
					ThreadID: "main", Actions: `["notify"]`, TS: pos, CumNotif: cum[u]})
				hs = append(hs, storage.ThreadHead{UserID: u, RoomID: room, ThreadID: "main", StreamPos: pos, CumNotif: cum[u]})
				want[u] = append([]int64{pos}, want[u]...)
			}
			st.StageNotifications(pos, ns, hs)
			if err := st.FlushNotifications(ctx); err != nil {
				t.Fatalf("flush at %d: %v", pos, err)
			}
		}
		for u, positions := range want {
			ns, err := st.NotificationsOf(ctx, u, 0, 20, false)
			if err != nil {
				t.Fatal(err)
			}
			if len(ns) != len(positions) {
				t.Fatalf("%s: %d rows stored, want %d: %+v", u, len(ns), len(positions), ns)
			}
			for i, n := range ns {
				if n.StreamPos != positions[i] || n.EventID != fmt.Sprintf("$e%d", n.StreamPos) || n.UserID != u ||
					n.CumNotif != int64(len(positions)-i) {
					t.Errorf("%s: row %d is %+v, want position %d with total %d", u, i, n, positions[i], len(positions)-i)
				}
			}
			c, err := st.UnreadCounts(ctx, u, nil, 100)
			if err != nil || c[room]["main"].Notifications != int64(len(positions)) {
				t.Errorf("%s: unread %v, %v; want %d", u, c, err, len(positions))
			}
		}
	})
}

// TestStagedNotificationsFailedFlush: a write that fails keeps everything
// staged (still counted, written by a later flush); one that fails because
// its rows were stored already, the stored position showing it, counts as
// done instead of failing every flush after it.
func TestStagedNotificationsFailedFlush(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := t.Context()
		const user, room = "@bob:hs", "!room:hs"
		row := func(pos, cum int64) storage.Notification {
			return storage.Notification{UserID: user, StreamPos: pos, RoomID: room, EventID: fmt.Sprintf("$e%d", pos), ThreadID: "main",
				Actions: `["notify"]`, TS: pos, CumNotif: cum}
		}
		head := func(pos, cum int64) storage.ThreadHead {
			return storage.ThreadHead{UserID: user, RoomID: room, ThreadID: "main", StreamPos: pos, CumNotif: cum}
		}
		// Position 4's row is stored already, with the position at 2: a
		// flush with a row at 4 again fails on its key.
		if err := st.RecordNotifications(ctx, 2, []storage.Notification{row(4, 1)}, nil); err != nil {
			t.Fatal(err)
		}
		st.StageNotifications(4, []storage.Notification{row(4, 1)}, []storage.ThreadHead{head(4, 1)})
		if err := st.FlushNotifications(ctx); err == nil {
			t.Fatal("a flush of a row stored already succeeded")
		}
		if rows, ahead := st.Staged(); rows != 1 || ahead == 0 {
			t.Fatalf("staged after a failed flush: %d rows, %d ahead; want it all kept", rows, ahead)
		}
		if c, err := st.UnreadCounts(ctx, user, nil, 100); err != nil || c[room]["main"].Notifications != 1 {
			t.Fatalf("unread after a failed flush: %v, %v", c, err)
		}
		if pos, err := st.PushPosition(ctx); err != nil || pos != 2 {
			t.Fatalf("stored position after a failed flush: %d, %v; want 2", pos, err)
		}
		if hs, err := st.ThreadHeads(ctx, room, "main"); err != nil || hs[user].CumNotif != 1 { // cached: none stored
			t.Fatalf("thread heads after a failed flush: %+v, %v", hs, err)
		}
		// The same write committed after all (as when the commit's answer
		// was lost): the stored position reaches what was staged, and
		// the flush counts as done.
		if err := st.SetPushPosition(ctx, 4); err != nil {
			t.Fatal(err)
		}
		if err := st.FlushNotifications(ctx); err != nil {
			t.Fatalf("flush of rows stored with their position: %v", err)
		}
		if rows, ahead := st.Staged(); rows != 0 || ahead != 0 {
			t.Fatalf("staged after that flush: %d rows, %d ahead", rows, ahead)
		}
		// What the caches hold counts the write as done too.
		if hs, err := st.ThreadHeads(ctx, room, "main"); err != nil || hs[user].CumNotif != 1 || hs[user].StreamPos != 4 {
			t.Fatalf("thread heads after that flush: %+v, %v", hs, err)
		}
		if c, err := st.UnreadCounts(ctx, user, nil, 100); err != nil || c[room]["main"].Notifications != 1 {
			t.Fatalf("unread after that flush: %v, %v", c, err)
		}
		// And the next rows are written as usual.
		st.StageNotifications(5, []storage.Notification{row(5, 2)}, []storage.ThreadHead{head(5, 2)})
		if err := st.FlushNotifications(ctx); err != nil {
			t.Fatal(err)
		}
		if ns, err := st.NotificationsOf(ctx, user, 0, 10, false); err != nil || len(ns) != 2 {
			t.Fatalf("notifications: %+v, %v", ns, err)
		}
	})
}

// TestThreadHeadsCached: a thread's heads, cached once read, follow every
// write that changes them: the heads a flush records (a user's new head,
// a user's first), a deactivated user's heads going, and a purged room's.
func TestThreadHeadsCached(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := t.Context()
		const room = "!room:hs"
		for _, u := range []string{"bob", "carol"} {
			if err := st.CreateUser(ctx, &storage.User{UserID: "@" + u + ":hs", Localpart: u}); err != nil {
				t.Fatal(err)
			}
		}
		record := func(pos int64, cum map[string]int64) {
			t.Helper()
			var ns []storage.Notification
			var hs []storage.ThreadHead
			for u, c := range cum {
				ns = append(ns, storage.Notification{UserID: u, StreamPos: pos, RoomID: room, EventID: fmt.Sprintf("$e%d", pos),
					ThreadID: "main", Actions: `["notify"]`, TS: pos, CumNotif: c})
				hs = append(hs, storage.ThreadHead{UserID: u, RoomID: room, ThreadID: "main", StreamPos: pos, CumNotif: c})
			}
			if err := st.RecordNotifications(ctx, pos, ns, hs); err != nil {
				t.Fatal(err)
			}
		}
		heads := func(want map[string]int64) {
			t.Helper()
			got, err := st.ThreadHeads(ctx, room, "main")
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("heads %+v, want totals %v", got, want)
			}
			for u, c := range want {
				if got[u].CumNotif != c || got[u].UserID != u {
					t.Fatalf("heads %+v, want totals %v", got, want)
				}
			}
		}
		heads(map[string]int64{}) // read, and cached, empty
		record(1, map[string]int64{"@bob:hs": 1})
		heads(map[string]int64{"@bob:hs": 1})
		record(2, map[string]int64{"@bob:hs": 2, "@carol:hs": 1})
		heads(map[string]int64{"@bob:hs": 2, "@carol:hs": 1})
		// A caller's map is its own.
		got, _ := st.ThreadHeads(ctx, room, "main")
		delete(got, "@bob:hs")
		heads(map[string]int64{"@bob:hs": 2, "@carol:hs": 1})
		if err := st.DeactivateUser(ctx, "@bob:hs", false); err != nil {
			t.Fatal(err)
		}
		heads(map[string]int64{"@carol:hs": 1})
		if err := st.PurgeRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		heads(map[string]int64{})
	})
}
