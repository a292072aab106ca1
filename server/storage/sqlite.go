package storage

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"strconv"
	"time"

	"modernc.org/sqlite"
)

// How Hearth uses SQLite, and why the single writer never waits on a lock.
//
// Every write goes through one connection (Store.write, one connection in
// its pool), so writers queue in Go, in order, instead of polling SQLite's
// locks. Reads go to a pool of their own (Store.read). In WAL mode readers
// and the writer do not block each other, with two narrow exceptions:
//   - A reader that reads the WAL-index header while the writer is
//     rewriting it takes the WAL write lock for a moment to read it again.
//     A writer whose BEGIN meets that moment is told "busy" and SQLite's
//     busy handler sleeps 1, 2, 5, 10... ms before it tries again; on a
//     loaded machine those sleeps, not the lock, are what the writer waits.
//   - A connection that closes tries to take the database's exclusive lock
//     (to checkpoint if it were the last one) and holds the pending lock
//     until it has closed; a connection opening meanwhile waits.
//
// Either way the writer met a lock, and SQLite's busy handler then sleeps
// 1, 2, 5, 10... up to 100 ms between tries however soon the lock is free;
// on a loaded machine that schedule, not the lock, is what the writer waits,
// while the server sits idle. A write through a read connection (or any
// second writer) would do the same for as long as it holds the lock.
//
// So:
//   - the writer does not use SQLite's busy handler (busy_timeout 0): a
//     BEGIN, or a write outside a transaction, that meets a lock is retried
//     here at once, yielding to the goroutine holding it (SQLite runs on
//     goroutines: the holder is one of ours), then polling at most every
//     lockPollMax, for up to writerBusyTimeout;
//   - read connections are opened once and kept (no churn of opens and
//     closes under load);
//   - they are query_only: a write through one fails at once, loudly,
//     instead of queueing on a lock behind the writer (every write path
//     must use tx or the writer), and their busy timeout is short;
//   - every such wait of the writer is timed inside the driver, below the
//     pool's queue, counted (LockWaits) and, when long, logged, rather
//     than showing only as slow sends.
const (
	// writerBusyTimeout bounds how long the writer waits for a lock held
	// by another connection: by design only the brief holds above, or
	// another process (sqlite3, a backup tool) on the same file.
	writerBusyTimeout = 10 * time.Second
	// readerBusyTimeout bounds a reader's wait for the same. A reader that
	// waits longer fails with SQLITE_BUSY instead of stalling a /sync.
	readerBusyTimeout = 2 * time.Second
	// readConns is the read pool's size. The machine's cores bound useful
	// read parallelism; each connection costs its page cache and schema.
	readConns = 4
	// writerCacheKiB and readerCacheKiB are the page caches (PRAGMA
	// cache_size) per connection. The writer's cache stays valid across its
	// own commits; a reader's is dropped whenever another connection
	// committed since its last read, so under write load a big reader
	// cache is memory that holds nothing useful, and the OS page cache
	// serves its misses.
	writerCacheKiB = 4096
	readerCacheKiB = 1024
	// lockPollMax is the longest the writer sleeps between two tries of a
	// lock (SQLite's own handler sleeps up to 100 ms).
	lockPollMax = time.Millisecond
	// lockWaitLog is the BEGIN wait above which the writer logs one.
	lockWaitLog = 100 * time.Millisecond
)

// sqliteDSN is the connection string for the writer or a reader.
func sqliteDSN(path string, writer bool) string {
	q := url.Values{}
	busy, cache := readerBusyTimeout, readerCacheKiB
	if writer {
		busy, cache = 0, writerCacheKiB // the writer retries in Go (withLockRetry)
	}
	// busy_timeout first: the pragmas after it may meet a lock.
	q.Add("_pragma", "busy_timeout("+strconv.FormatInt(busy.Milliseconds(), 10)+")")
	if writer {
		// WAL lets readers run beside the writer (the mode is stored in
		// the file, so readers need not set it); synchronous=FULL makes a
		// commit durable before it is acknowledged; _txlock=immediate
		// takes the write lock at BEGIN so a transaction never has to
		// upgrade from read to write halfway.
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous(FULL)")
		q.Add("_pragma", "foreign_keys(1)")
		// Statement journals (the undo of one statement that may fail
		// halfway, e.g. a multi-row INSERT) in memory: by default one
		// spills to a temporary file past 64 KiB, a pwrite for every
		// page the statement touches (a quarter of the push evaluator's
		// CPU recording a message's notifications in a 200-member room).
		q.Add("_pragma", "temp_store(MEMORY)")
		// Checkpoints run beside the writer (checkpoint.go).
		q.Add("_pragma", writerCheckpointPragma)
		q.Set("_txlock", "immediate")
	} else {
		q.Set("_query_only", "1")
	}
	q.Add("_pragma", "cache_size(-"+strconv.Itoa(cache)+")")
	return "file:" + path + "?" + q.Encode()
}

// openSQLite opens the writer (one connection, its BEGINs timed) and the
// read pool (readConns connections, kept open).
func (s *Store) openSQLite(path string) (write, read *sql.DB, err error) {
	syncWithFdatasync()
	probe, err := sql.Open("sqlite", "")
	if err != nil {
		return nil, nil, err
	}
	drv := probe.Driver()
	probe.Close()
	write = sql.OpenDB(&timedConnector{dsn: sqliteDSN(path, true), drv: drv, s: s})
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	write.SetConnMaxIdleTime(0)
	write.SetConnMaxLifetime(0)
	read, err = sql.Open("sqlite", sqliteDSN(path, false))
	if err != nil {
		write.Close()
		return nil, nil, err
	}
	read.SetMaxOpenConns(readConns)
	// database/sql keeps 2 idle connections by default and closes the
	// rest as they come back: under load that opens and closes readers
	// all the time (see above). Keep them all.
	read.SetMaxIdleConns(readConns)
	read.SetConnMaxIdleTime(0)
	read.SetConnMaxLifetime(0)
	return write, read, nil
}

// syncWithFdatasync makes SQLite commit with fdatasync(2) instead of
// fsync(2), process-wide, as SQLite's own builds for Linux do (modernc's
// transpiled SQLite keeps the source's default, fsync, unless asked).
// Both put the WAL's new frames, and the file's size when it grew, on
// disk before the commit returns; fsync also flushes the file's
// timestamps, which on ext4 makes every commit a journal commit as well.
// Where fdatasync does not exist (macOS, Windows) the call fails and
// commits keep fsync.
func syncWithFdatasync() {
	_, _ = sqlite.Fdatasync(true)
}

// LockWaits is how many times the SQLite writer found the database locked
// by another connection and had to wait, and for how long in all. Always
// zero on PostgreSQL.
func (s *Store) LockWaits() (n int64, total time.Duration) {
	return s.lockWaits.Load(), time.Duration(s.lockWaitNS.Load())
}

// lockWaited records one wait of the writer on a lock.
func (s *Store) lockWaited(d time.Duration) {
	s.lockWaits.Add(1)
	s.lockWaitNS.Add(int64(d))
	if d >= lockWaitLog && s.log != nil {
		s.log.Warn("storage: the SQLite writer waited for a lock held by another connection",
			"wait_ms", d.Milliseconds(), "hint", "another process using the database file, or a write bypassing the writer")
	}
}

// timedConnector opens the writer's connection wrapped in timedConn.
type timedConnector struct {
	dsn string
	drv driver.Driver
	s   *Store
}

func (c *timedConnector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.drv.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	return &timedConn{Conn: conn, s: c.s}, nil
}

func (c *timedConnector) Driver() driver.Driver { return c.drv }

// timedConn is the writer's connection. BEGIN (IMMEDIATE: it does nothing
// but take the write lock) is retried while the lock is busy, and timed;
// statements outside a transaction are retried likewise. Inside a
// transaction nothing is retried: BEGIN IMMEDIATE holds the write lock, so
// no statement of it can meet a busy one.
type timedConn struct {
	driver.Conn
	s    *Store
	inTx bool
}

func (c *timedConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	var tx driver.Tx
	err := c.withLockRetry(ctx, func() (err error) {
		tx, err = c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite writer: begin: %w", err)
	}
	c.inTx = true
	return &timedTx{Tx: tx, c: c}, nil
}

func (c *timedConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	exec := c.Conn.(driver.ExecerContext)
	if c.inTx {
		return exec.ExecContext(ctx, query, args)
	}
	var res driver.Result
	err := c.withLockRetry(ctx, func() (err error) {
		res, err = exec.ExecContext(ctx, query, args)
		return err
	})
	return res, err
}

func (c *timedConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	q := c.Conn.(driver.QueryerContext)
	if c.inTx {
		return q.QueryContext(ctx, query, args)
	}
	var rows driver.Rows
	err := c.withLockRetry(ctx, func() (err error) {
		rows, err = q.QueryContext(ctx, query, args)
		return err
	})
	return rows, err
}

func (c *timedConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
}

func (c *timedConn) Ping(ctx context.Context) error {
	return c.Conn.(driver.Pinger).Ping(ctx)
}

func (c *timedConn) ResetSession(ctx context.Context) error {
	return c.Conn.(driver.SessionResetter).ResetSession(ctx)
}

func (c *timedConn) IsValid() bool {
	return c.Conn.(driver.Validator).IsValid()
}

// Unwrap is the driver's own connection, for sql.Conn.Raw users.
func (c *timedConn) Unwrap() driver.Conn { return c.Conn }

// timedTx marks the end of the writer's transaction.
type timedTx struct {
	driver.Tx
	c *timedConn
}

func (t *timedTx) Commit() error {
	t.c.inTx = false
	err := t.Tx.Commit()
	if err == nil {
		t.c.s.writerCommits.Add(1)
	}
	return err
}

func (t *timedTx) Rollback() error {
	t.c.inTx = false
	return t.Tx.Rollback()
}

// withLockRetry runs try again while it fails because SQLite reports the
// database busy (a lock another connection holds), for up to
// writerBusyTimeout, and records the wait (lockWaited). It first yields,
// since the holder is usually a reader goroutine of this process a few
// microseconds from letting go, then sleeps a little longer each time, at
// most lockPollMax.
func (c *timedConn) withLockRetry(ctx context.Context, try func() error) error {
	var first time.Time
	pause := 20 * time.Microsecond
	for n := 0; ; n++ {
		err := try()
		if !first.IsZero() && (err == nil || !isBusy(err) || time.Since(first) > writerBusyTimeout || ctx.Err() != nil) {
			c.s.lockWaited(time.Since(first))
		}
		if err == nil || !isBusy(err) {
			return err
		}
		if first.IsZero() {
			first = time.Now()
		} else if time.Since(first) > writerBusyTimeout {
			return err
		}
		if ctx.Err() != nil {
			return err
		}
		if n < 3 {
			runtime.Gosched()
			continue
		}
		time.Sleep(pause)
		pause = min(2*pause, lockPollMax)
	}
}

// isBusy reports SQLITE_BUSY (and its extended codes).
func isBusy(err error) bool {
	var e interface{ Code() int }
	return errors.As(err, &e) && e.Code()&0xff == 5
}
