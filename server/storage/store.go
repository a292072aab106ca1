// Package storage is Hearth's one database layer: one Store, one SQL code
// path for SQLite and PostgreSQL. SQL sits inline beside its Scan; the few
// dialect differences live in dialect.go and in migration templates.
package storage

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"hearth/server/cache"

	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"
	_ "modernc.org/sqlite"             // registers "sqlite"
)

// ErrNotFound is returned when a row asked for does not exist.
var ErrNotFound = errors.New("storage: not found")

// ErrConflict is returned when a unique key is already taken.
var ErrConflict = errors.New("storage: already exists")

// Store is the database. Reads go to read; every write goes through tx(),
// which uses write. On SQLite write is a single connection, so writers queue
// in Go instead of failing with "database is locked".
type Store struct {
	read  *readDB
	write *sql.DB
	// wstmts keeps the committer's statements prepared (SQLite only).
	wstmts *writeStmts
	d      dialect
	// events hands out event stream positions and makes them visible in
	// order, so a /sync reader that has seen position N has seen
	// everything below it, without serialising writers (streams.go).
	events *eventStream
	// aux makes aux stream positions visible once committed, in order
	// (streams.go).
	aux *auxStream
	// relVersions tell which rooms stored relations, rowVersions which
	// changed stored events in place (relations.go).
	relVersions, rowVersions *roomVersions

	cacheRegistry *cache.Registry
	c             caches // caches.go
	// sq moves queued rows into SQLite's search index (search.go).
	sq searchQueue
	// commit batches event writes into shared transactions (commit.go).
	commit *committer
	// deltasUpTo is the highest stream position a current-state delta
	// may have been written at (statedeltas.go).
	deltasUpTo atomic.Int64
	// receiptMarks, accountDataMarks, toDeviceMarks and deviceListMarks
	// are the highest aux positions a receipt (per room), account data or
	// a to-device message (per user) or a device list change (one key:
	// "") may have been written at (auxmarks.go).
	receiptMarks, accountDataMarks, toDeviceMarks, deviceListMarks auxMarks
	// bumps is every room's bump stamp (bumpstamps.go).
	bumps bumpStamps
	// ckpt checkpoints SQLite's WAL (nil on PostgreSQL).
	ckpt *checkpointer
	// writerCommits counts the SQLite writer's commits: the checkpointer
	// only runs after some.
	writerCommits atomic.Int64
	// pushEvaluated is the push position this process evaluated last
	// (StageNotifications, RecordNotifications, SetPushPosition):
	// notifications at or before it are all stored or staged (cumAt
	// caches their totals).
	pushEvaluated atomic.Int64
	// staged holds the push evaluator's rows until it writes them
	// (push_staged.go).
	staged stagedNotifications
	// observeWrite, when set, times write transactions (ObserveWrites).
	observeWrite func(wait, total time.Duration)
	// sqlitePath is the SQLite database file ("" on PostgreSQL).
	sqlitePath string
	// lockWaits and lockWaitNS count the SQLite writer's waits on locks
	// held by other connections (sqlite.go).
	lockWaits, lockWaitNS atomic.Int64
	log                   *slog.Logger
}

// Options selects the engine.
type Options struct {
	// Postgres, when set, is a pgx connection string; otherwise SQLitePath is used.
	Postgres   string
	SQLitePath string
	MaxConns   int
	// Caches is where the Store registers its caches; nil: a registry of its own.
	Caches *cache.Registry
	// Log receives the store's warnings (a lock wait on SQLite); nil: none.
	Log *slog.Logger
}

// Open connects and applies pending migrations.
func Open(ctx context.Context, o Options) (*Store, error) {
	var s *Store
	if o.Postgres != "" {
		db, err := sql.Open("pgx", o.Postgres)
		if err != nil {
			return nil, fmt.Errorf("storage: open postgres: %w", err)
		}
		conns := 20
		if o.MaxConns > 0 {
			conns = o.MaxConns
		}
		db.SetMaxOpenConns(conns)
		// Every open connection may stay idle: a pool that keeps fewer
		// than it opens closes and reopens connections under load, and
		// each one opened again must prepare its statements again.
		db.SetMaxIdleConns(conns)
		db.SetConnMaxIdleTime(5 * time.Minute)
		s = &Store{read: &readDB{DB: db}, write: db, d: postgresDialect, log: o.Log}
	} else {
		if o.SQLitePath == "" {
			return nil, errors.New("storage: no SQLite path given")
		}
		if err := os.MkdirAll(filepath.Dir(o.SQLitePath), 0o700); err != nil {
			return nil, fmt.Errorf("storage: create database directory: %w", err)
		}
		s = &Store{d: sqliteDialect, sqlitePath: o.SQLitePath, log: o.Log}
		write, read, err := s.openSQLite(o.SQLitePath) // sqlite.go
		if err != nil {
			return nil, fmt.Errorf("storage: open sqlite %s: %w", o.SQLitePath, err)
		}
		s.read, s.write = &readDB{DB: read, stmts: &stmtCache{m: map[string]*sql.Stmt{}}}, write
		s.wstmts = &writeStmts{m: map[string]*sql.Stmt{}, missing: map[string]bool{}}
	}
	s.relVersions, s.rowVersions = newRoomVersions(), newRoomVersions()
	s.staged.wanted = make(chan struct{}, 1)
	s.cacheRegistry = o.Caches
	if s.cacheRegistry == nil {
		s.cacheRegistry = cache.NewRegistry()
	}
	s.c = newCaches(s.cacheRegistry)
	if err := s.write.PingContext(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("storage: connect to %s: %w", s.d.Name, err)
	}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	es, err := loadEventStream(ctx, s.write)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.events = es
	if err := s.loadDeltasUpTo(ctx); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.loadBumpStamps(ctx); err != nil {
		s.Close()
		return nil, err
	}
	if s.sqlitePath != "" {
		if err := s.startCheckpointer(ctx, s.sqlitePath); err != nil {
			s.Close()
			return nil, fmt.Errorf("storage: open sqlite %s for checkpoints: %w", s.sqlitePath, err)
		}
	}
	if s.aux, err = loadAuxStream(ctx, s.write); err != nil {
		s.Close()
		return nil, err
	}
	for _, m := range s.auxMarks() {
		m.floor = s.aux.current()
	}
	s.startCommitter()
	s.registerBuffers() // buffers.go
	if err := s.openSearchQueue(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close releases the connections.
func (s *Store) Close() error {
	s.stopCommitter()
	s.closeSearchQueue()
	s.closeWrites()
	err := errors.Join(s.ckpt.close(), s.write.Close())
	if s.read.DB != s.write {
		err = errors.Join(err, s.read.Close())
	}
	return err
}

// Engine is "sqlite" or "postgres".
func (s *Store) Engine() string { return s.d.Name }

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.read.PingContext(ctx) }

// tx runs fn in a write transaction, committing when it returns nil.
func (s *Store) tx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return s.txThen(ctx, fn, nil)
}

// txThen is tx calling committed (when not nil) once the transaction
// committed, before the aux stream positions it took become visible: a
// cache of what it changed is dropped there, so that a reader who sees the
// new positions cannot find the old value cached.
func (s *Store) txThen(ctx context.Context, fn func(tx *sql.Tx) error, committed func()) error {
	began := time.Now()
	tx, err := s.write.BeginTx(ctx, nil)
	if s.observeWrite != nil {
		wait := time.Since(began)
		defer func() { s.observeWrite(wait, time.Since(began)) }()
	}
	if err != nil {
		return fmt.Errorf("storage: begin: %w", err)
	}
	return s.runTx(ctx, tx, fn, committed)
}

// runTx runs fn in tx, then commits (when fn returned nil) or rolls back.
// The aux stream positions tx took then end (streams.go); when it
// committed, runTx calls committed (see txThen) and returns once they are
// visible, so whoever wakes a /sync after a write returns finds the write
// there.
func (s *Store) runTx(ctx context.Context, tx *sql.Tx, fn func(tx *sql.Tx) error, committed func()) error {
	ok := false
	defer func() {
		if last := s.aux.end(tx, ok); ok && last > 0 {
			_ = s.aux.waitVisible(context.WithoutCancel(ctx), last)
		}
	}()
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("storage: commit: %w", err)
	}
	ok = true
	if committed != nil {
		committed()
	}
	return nil
}

// txNoSync is tx for writes whose durability can wait for the next
// ordinary commit: the commit does not wait for the disk, and the next
// durable commit, which comes after it in the (SQLite or PostgreSQL)
// write-ahead log, makes it durable as well. Only for rows that matter
// once a later durable write refers to them (outliers, state groups).
func (s *Store) txNoSync(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if s.d.Name == "postgres" {
		return s.tx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
				return fmt.Errorf("storage: relax commit: %w", err)
			}
			return fn(tx)
		})
	}
	// SQLite: synchronous is per connection, so hold the writer's one
	// connection for the pragma, the transaction and the pragma's reset.
	began := time.Now()
	conn, err := s.write.Conn(ctx)
	if err != nil {
		return fmt.Errorf("storage: writer connection: %w", err)
	}
	// Deferred first, so run once the connection is back: the hot
	// statements fn noted are prepared for the next time (writeStmt).
	defer s.prepareWrites(context.WithoutCancel(ctx))
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `PRAGMA synchronous = NORMAL`); err != nil {
		return fmt.Errorf("storage: relax commit: %w", err)
	}
	defer func() {
		if _, err := conn.ExecContext(context.WithoutCancel(ctx), `PRAGMA synchronous = FULL`); err != nil {
			// A writer left relaxed would acknowledge writes before they
			// are on disk: drop the connection instead.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}()
	tx, done, err := s.beginTimed(ctx, conn, began)
	if err != nil {
		return err
	}
	defer done()
	return s.runTx(ctx, tx, fn, nil)
}

// beginTimed begins a transaction on conn, a writer connection asked for
// at began. done, deferred by the caller, reports the write's wait and
// its whole time (observeWrite); a BEGIN that failed is reported here.
func (s *Store) beginTimed(ctx context.Context, conn *sql.Conn, began time.Time) (tx *sql.Tx, done func(), err error) {
	tx, err = conn.BeginTx(ctx, nil)
	done = func() {}
	if s.observeWrite != nil {
		wait := time.Since(began)
		done = func() { s.observeWrite(wait, time.Since(began)) }
	}
	if err != nil {
		done()
		return nil, nil, fmt.Errorf("storage: begin: %w", err)
	}
	return tx, done, nil
}

// inList renders "$n,$n+1,..." for an IN clause of count items starting at
// placeholder start (array parameters are not portable).
func inList(start, count int) string {
	var b strings.Builder
	for i := 0; i < count; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "$%d", start+i)
	}
	return b.String()
}

// inSet is a condition "column is one of values" with values bound as one
// parameter, $n: a JSON array read by json_each on SQLite, an array on
// PostgreSQL. The statement's text is then the same for any number of
// values, and neither engine parses a long IN list each time (on SQLite,
// parsing one was most of the cost of reading a few hundred events).
func (s *Store) inSet(column string, n int, values []string) (string, any) {
	return inValues(s.d.Name, column, n, values)
}

// inInts is inSet for integer values.
func (s *Store) inInts(column string, n int, values []int64) (string, any) {
	return inValues(s.d.Name, column, n, values)
}

func inValues[T string | int64](engine, column string, n int, values []T) (string, any) {
	if engine == "sqlite" {
		b, _ := json.Marshal(values)
		return fmt.Sprintf("%s IN (SELECT value FROM json_each($%d))", column, n), string(b)
	}
	if values == nil {
		values = []T{}
	}
	return fmt.Sprintf("%s = ANY($%d)", column, n), values
}

// queryStrings runs a query of one text column and returns its values.
func queryStrings(ctx context.Context, q querier, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// notFound maps sql.ErrNoRows to ErrNotFound, wrapping everything else.
func notFound(err error, op string) error {
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	return fmt.Errorf("storage: %s: %w", op, err)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func nowMS() int64 { return time.Now().UnixMilli() }

func toLower(s string) string { return strings.ToLower(s) }

// ObserveWrites sets fn to be told, for every write transaction, how long
// it waited to begin and how long it took in all (metrics). Call it before
// the store is shared.
func (s *Store) ObserveWrites(fn func(wait, total time.Duration)) { s.observeWrite = fn }

// Pools are the connection pools by role ("read" and "write" on SQLite,
// one "main" on PostgreSQL), for pool metrics.
func (s *Store) Pools() map[string]*sql.DB {
	if s.read.DB == s.write {
		return map[string]*sql.DB{"main": s.write}
	}
	return map[string]*sql.DB{"read": s.read.DB, "write": s.write}
}

// SQLitePath is the SQLite database file, "" on PostgreSQL (backups
// snapshot it).
func (s *Store) SQLitePath() string { return s.sqlitePath }
