package storage

import (
	"context"
	"database/sql"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"
)

// Checkpoints (SQLite). In WAL mode a commit appends pages to the WAL, and
// a checkpoint copies them back into the database file. SQLite runs one in
// the committing connection, once the WAL holds wal_autocheckpoint pages:
// in the single writer that is the group commit's own path, where every
// send of every room waits behind it (a sixth of the writer's CPU in a
// profile of the push evaluator's writes). So the writer's threshold is
// raised to a backstop, and a connection of its own checkpoints from its
// own goroutine once the WAL passes checkpointPages. A PASSIVE checkpoint
// never blocks the writer or a reader, and never waits on them.
const (
	// checkpointPages is the WAL size (in pages) past which the
	// checkpointer runs: SQLite's own default for wal_autocheckpoint.
	checkpointPages = 1000
	// writerCheckpointPages is the writer's wal_autocheckpoint: should the
	// checkpointer fall behind, the writer checkpoints itself as before.
	writerCheckpointPages = 8 * checkpointPages
	// checkpointEvery is how often the checkpointer looks at the WAL's
	// size: one stat(2), nothing more, while the server is idle.
	checkpointEvery = 250 * time.Millisecond
	// checkpointBusyCommits is the number of the writer's commits since
	// the last checkpoint that make the next one run at the next tick;
	// fewer wait up to checkpointIdle. A checkpoint of a WAL that holds a
	// commit or two costs about as much as one of a hundred (a statement,
	// a walk of the WAL index, an fsync of the database file): at a few
	// messages a second one every tick was 9% of the server's CPU.
	checkpointBusyCommits = 20
	checkpointIdle        = 2 * time.Second
)

// checkpointDue reports whether the checkpointer should run, given the
// writer's commits since the last checkpoint, how long ago that was, and
// whether the WAL file grew since the last tick (a few large commits, as
// a join with thousands of state events writes, fill it as fast as many
// small ones: the writer must not reach its own backstop meanwhile).
func checkpointDue(commits int64, since time.Duration, grew bool) bool {
	return commits >= checkpointBusyCommits || (commits > 0 && (grew || since >= checkpointIdle))
}

// checkpointer checkpoints the WAL of the SQLite database at path.
type checkpointer struct {
	db   *sql.DB
	wal  string
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// startCheckpointer opens the checkpointer's connection and starts it.
func (s *Store) startCheckpointer(ctx context.Context, path string) error {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(0)")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxIdleTime(0)
	db.SetConnMaxLifetime(0)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return err
	}
	c := &checkpointer{db: db, wal: path + "-wal", stop: make(chan struct{})}
	c.wg.Add(1)
	go c.run(s)
	s.ckpt = c
	return nil
}

func (c *checkpointer) run(s *Store) {
	defer c.wg.Done()
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	pageSize := int64(4096)
	_ = c.db.QueryRow(`PRAGMA page_size`).Scan(&pageSize)
	var done int64 // the writer's commits before the last checkpoint
	var size int64 // the WAL file's size at the last tick
	last := time.Now()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		fi, err := os.Stat(c.wal)
		if err != nil || fi.Size() < checkpointPages*pageSize {
			continue
		}
		commits, grew := s.writerCommits.Load(), fi.Size() > size
		size = fi.Size()
		if !checkpointDue(commits-done, time.Since(last), grew) {
			continue
		}
		done, last = commits, time.Now()
		// The WAL file keeps its size after a restart; the frames not yet
		// copied are what counts.
		var busy, frames, copied int64
		err = c.db.QueryRow(`PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &frames, &copied)
		if err != nil && s.log != nil {
			s.log.Warn("storage: checkpoint of the SQLite WAL failed", "wal", c.wal, "err", err)
		}
	}
}

// close stops the checkpointer and closes its connection; again, nothing.
func (c *checkpointer) close() error {
	if c == nil {
		return nil
	}
	var err error
	c.once.Do(func() {
		close(c.stop)
		c.wg.Wait()
		err = c.db.Close()
	})
	return err
}

// writerCheckpointPragma is the writer's wal_autocheckpoint pragma value.
var writerCheckpointPragma = "wal_autocheckpoint(" + strconv.Itoa(writerCheckpointPages) + ")"
