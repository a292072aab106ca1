package storage_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// TestReadPoolCannotWrite: on SQLite every write must go through the one
// writer connection; a write sent to the read pool (which would otherwise
// queue on SQLite's lock behind the writer, for up to its busy timeout)
// fails at once. Every other storage test runs with the same read-only
// pool, so a write path that bypasses the writer fails them too.
func TestReadPoolCannotWrite(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		if st.Engine() == "postgres" {
			if _, ok := st.Pools()["main"]; !ok {
				t.Fatalf("PostgreSQL pools %v: want one pool for reads and writes", st.Pools())
			}
			t.Skip("PostgreSQL has one pool for reads and writes; its server does the locking")
		}
		ctx := context.Background()
		if err := st.CreateUser(ctx, &storage.User{UserID: "@a:hs", Localpart: "a", PasswordHash: "x"}); err != nil {
			t.Fatal(err)
		}
		// Hold the write lock from the writer itself, as a busy writer
		// would: a reader that tried to write would wait on it.
		for _, q := range []string{
			`UPDATE users SET is_admin = 1 WHERE user_id = '@a:hs'`,
			`INSERT INTO users (user_id, localpart, password_hash, created_ts) VALUES ('@b:hs', 'b', 'x', 0)`,
			`CREATE TABLE rogue (x INTEGER)`,
		} {
			began := time.Now()
			_, err := st.ReadDB().ExecContext(ctx, q)
			if err == nil {
				t.Fatalf("%s through the read pool succeeded", q)
			}
			if !strings.Contains(err.Error(), "readonly") {
				t.Errorf("%s through the read pool: %v, want a readonly error", q, err)
			}
			if d := time.Since(began); d > time.Second {
				t.Errorf("%s through the read pool failed after %v; want at once", q, d)
			}
		}
		u, err := st.UserByID(ctx, "@a:hs")
		if err != nil || u.IsAdmin {
			t.Fatalf("user after refused writes: %+v %v", u, err)
		}
	})
}

// TestWriterLockWaitIsReported: when another connection holds SQLite's
// write lock, the writer waits (up to its busy timeout) and says so: the
// wait is counted and logged, not hidden in slow sends.
func TestWriterLockWaitIsReported(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		var logged bytes.Buffer
		var mu sync.Mutex
		e.Options.Log = slog.New(slog.NewTextHandler(&lockedWriter{w: &logged, mu: &mu}, nil))
		st := storagetest.Open(t, e)
		ctx := context.Background()
		if e.Name == "postgres" {
			if err := st.CreateUser(ctx, &storage.User{UserID: "@a:hs", Localpart: "a", PasswordHash: "x"}); err != nil {
				t.Fatal(err)
			}
			if n, _ := st.LockWaits(); n != 0 {
				t.Fatalf("lock waits on PostgreSQL: %d", n)
			}
			return
		}
		other, err := sql.Open("sqlite", "file:"+st.SQLitePath()+"?_pragma=busy_timeout(5000)&_txlock=immediate")
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		tx, err := other.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		const hold = 400 * time.Millisecond
		done := make(chan error, 1)
		go func() {
			done <- st.CreateUser(ctx, &storage.User{UserID: "@a:hs", Localpart: "a", PasswordHash: "x"})
		}()
		time.Sleep(hold)
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("write after the lock was released: %v", err)
		}
		n, total := st.LockWaits()
		if n != 1 || total < hold/2 {
			t.Fatalf("lock waits: %d for %v; want 1 of about %v", n, total, hold)
		}
		mu.Lock()
		defer mu.Unlock()
		if !strings.Contains(logged.String(), "waited for a lock held by another connection") {
			t.Fatalf("no lock wait logged; log:\n%s", logged.String())
		}
	})
}

// TestWritesBesideReadsDoNotWaitOnLocks runs writes through the writer
// while readers keep the read pool busy, as /sync does during sends: the
// writer must not spend its time waiting on SQLite locks (on PostgreSQL
// there are none of ours to count).
func TestWritesBesideReadsDoNotWaitOnLocks(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var readers sync.WaitGroup
		var reads sync.Map
		for i := range 16 {
			readers.Go(func() {
				n := 0
				for ctx.Err() == nil {
					if _, err := st.CountUsers(ctx); err != nil && ctx.Err() == nil {
						t.Errorf("reader %d: %v", i, err)
						return
					}
					n++
				}
				reads.Store(i, n)
			})
		}
		var writers sync.WaitGroup
		for w := range 4 {
			writers.Go(func() {
				for i := range 100 {
					id := fmt.Sprintf("u%d-%d", w, i)
					if err := st.CreateUser(context.Background(), &storage.User{UserID: "@" + id + ":hs", Localpart: id, PasswordHash: "x"}); err != nil {
						t.Errorf("write: %v", err)
						return
					}
				}
			})
		}
		writers.Wait()
		cancel()
		readers.Wait()
		if n, err := st.CountUsers(context.Background()); err != nil || n != 400 {
			t.Fatalf("users: %d %v", n, err)
		}
		total := 0
		reads.Range(func(_, v any) bool { total += v.(int); return true })
		if total < 16 {
			t.Fatalf("readers ran %d reads; the test did not overlap reads and writes", total)
		}
		n, waited := st.LockWaits()
		t.Logf("%d reads beside 400 writes; writer lock waits: %d, %v in all", total, n, waited)
		if waited > 100*time.Millisecond {
			t.Fatalf("the writer waited %v on locks in %d BEGINs", waited, n)
		}
	})
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
