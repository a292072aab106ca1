package storage_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// TestGroupTx: small writes queued together (groupTx: receipts, read
// markers, presence) share one transaction; one that fails fails alone
// while the others run again and commit; a write's commit callback runs
// once if it committed and never if it failed; and what a write took is
// visible to readers when it returns. Then many receipts at once.
func TestGroupTx(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		errBad := errors.New("bad write")
		type write struct {
			user      string
			fail      bool
			txs       []*sql.Tx // the transactions it ran in
			pos       int64
			committed int
			err       error
		}
		var mu sync.Mutex
		run := func(w *write) error {
			return st.GroupAuxTx(ctx, func(tx *sql.Tx, id int64) error {
				mu.Lock()
				w.txs = append(w.txs, tx)
				w.pos = id
				mu.Unlock()
				if _, err := tx.ExecContext(ctx, `INSERT INTO account_data (user_id, room_id, type, content, stream_id)
					VALUES ($1, '', 'test', '{}', $2)`, w.user, id); err != nil {
					return err
				}
				if w.fail {
					return errBad
				}
				return nil
			}, func() {
				mu.Lock()
				w.committed++
				mu.Unlock()
			})
		}
		// batch queues ws while a write holds the committer, in order,
		// then lets them run and waits for them.
		batch := func(ws ...*write) {
			t.Helper()
			started, release := make(chan struct{}), make(chan struct{})
			held := make(chan error, 1)
			go func() {
				held <- st.GroupAuxTx(ctx, func(*sql.Tx, int64) error {
					close(started)
					<-release
					return nil
				}, nil)
			}()
			<-started
			var wg sync.WaitGroup
			for i, w := range ws {
				wg.Go(func() { w.err = run(w) })
				for deadline := time.Now().Add(10 * time.Second); st.QueuedWrites() < i+1; time.Sleep(time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatalf("write %d not queued", i)
					}
				}
			}
			close(release)
			wg.Wait()
			if err := <-held; err != nil {
				t.Fatal(err)
			}
		}
		rows := func(user string) int {
			t.Helper()
			var n int
			if err := st.ReadDB().QueryRowContext(ctx, `SELECT COUNT(*) FROM account_data WHERE user_id = $1`, user).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		visible := func(w *write) {
			t.Helper()
			if upTo, _ := st.MaxAuxPos(ctx); rows(w.user) != 1 || upTo < w.pos {
				t.Fatalf("%s: %d rows, readers at %d (written at %d)", w.user, rows(w.user), upTo, w.pos)
			}
		}

		c, d := &write{user: "@c:hs"}, &write{user: "@d:hs"}
		batch(c, d)
		for _, w := range []*write{c, d} {
			if w.err != nil || len(w.txs) != 1 || w.committed != 1 {
				t.Fatalf("%s: %v, ran %d times, committed %d times", w.user, w.err, len(w.txs), w.committed)
			}
			visible(w)
		}
		if c.txs[0] != d.txs[0] {
			t.Fatal("two writes queued together ran in two transactions")
		}

		a, bad, b := &write{user: "@a:hs"}, &write{user: "@bad:hs", fail: true}, &write{user: "@b:hs"}
		batch(a, bad, b)
		if !errors.Is(bad.err, errBad) || bad.committed != 0 {
			t.Fatalf("the failing write: %v, committed %d times", bad.err, bad.committed)
		}
		if len(a.txs) != 2 || a.txs[0] != bad.txs[0] {
			t.Fatalf("the write before the failing one ran in %d transactions, the first shared: %v", len(a.txs), len(a.txs) > 0 && a.txs[0] == bad.txs[0])
		}
		for _, w := range []*write{a, b} {
			if w.err != nil || w.committed != 1 {
				t.Fatalf("%s: %v, committed %d times", w.user, w.err, w.committed)
			}
			visible(w)
		}
		if n := rows(bad.user); n != 0 {
			t.Fatalf("the failing write left %d rows", n)
		}

		// Many members mark a message read at once: every receipt is
		// stored at a position of its own and readable on return.
		if err := st.CreateRoom(ctx, &storage.Room{RoomID: "!r:hs", RoomVersion: "11", Creator: "@a:hs"}); err != nil {
			t.Fatal(err)
		}
		before, _ := st.MaxAuxPos(ctx)
		const members = 40
		var wg sync.WaitGroup
		errs := make(chan error, members)
		for i := range members {
			wg.Go(func() {
				rc := &storage.Receipt{RoomID: "!r:hs", UserID: fmt.Sprintf("@m%d:hs", i), Type: "m.read", EventID: "$e", TS: 1}
				pos, err := st.PutReceipt(ctx, rc)
				if err == nil {
					if now, _ := st.MaxAuxPos(ctx); now < pos {
						err = fmt.Errorf("receipt at %d, readers at %d", pos, now)
					}
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		upTo, _ := st.MaxAuxPos(ctx)
		rs, err := st.ReceiptsBetween(ctx, []string{"!r:hs"}, before, upTo)
		if err != nil || len(rs) != members {
			t.Fatalf("%d receipts, want %d: %v", len(rs), members, err)
		}
		seen := map[int64]bool{}
		for _, r := range rs {
			if seen[r.StreamID] {
				t.Fatalf("two receipts at %d", r.StreamID)
			}
			seen[r.StreamID] = true
		}

		// A request that ended does not take its write, nor the batch it
		// shares, down with it: the write runs to its end.
		ended, cancel := context.WithCancel(ctx)
		cancel()
		pos, err := st.PutReceipt(ended, &storage.Receipt{RoomID: "!r:hs", UserID: "@gone:hs", Type: "m.read", EventID: "$e", TS: 1})
		if err != nil {
			t.Fatalf("receipt of an ended request: %v", err)
		}
		if rs, err := st.ReceiptsBetween(ctx, []string{"!r:hs"}, pos-1, pos); err != nil || len(rs) != 1 || rs[0].UserID != "@gone:hs" {
			t.Fatalf("receipt of an ended request: %v, %v", rs, err)
		}
	})
}
