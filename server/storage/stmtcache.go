package storage

import (
	"context"
	"database/sql"
	"sync"
)

// readDB is the read pool. On SQLite it keeps its queries prepared:
// modernc's driver otherwise parses every query's SQL again on every call,
// which profiles of /sync showed as a fifth of its CPU. database/sql
// prepares a statement again on each connection that runs it, and closes
// it with the pool. PostgreSQL's driver (pgx) caches prepared statements
// itself, so there the queries go straight through.
type readDB struct {
	*sql.DB
	stmts *stmtCache // nil: no cache
}

// maxCachedStmts bounds the statements kept: queries built with a varying
// number of placeholders are statements of their own.
const maxCachedStmts = 512

type stmtCache struct {
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

func (r *readDB) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	c := r.stmts
	c.mu.Lock()
	st, ok := c.m[query]
	c.mu.Unlock()
	if ok {
		return st, nil
	}
	st, err := r.DB.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.m[query]; ok {
		st.Close()
		return old, nil
	}
	if len(c.m) >= maxCachedStmts {
		// Rare (the queries are few): start again rather than track
		// use. A statement closed while a query runs on it closes once
		// that query's rows are done.
		for q, old := range c.m {
			old.Close()
			delete(c.m, q)
		}
	}
	c.m[query] = st
	return st, nil
}

// QueryContext runs a query, prepared once when the pool keeps statements.
func (r *readDB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if r.stmts == nil {
		return r.DB.QueryContext(ctx, query, args...)
	}
	st, err := r.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// QueryRowContext is QueryContext for one row.
func (r *readDB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if r.stmts == nil {
		return r.DB.QueryRowContext(ctx, query, args...)
	}
	st, err := r.stmt(ctx, query)
	if err != nil {
		// database/sql has no way to build a Row holding an error: run
		// the query unprepared, which reports it.
		return r.DB.QueryRowContext(ctx, query, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// writeStmts keeps the statements of the committer's hot path (events,
// their edges, transaction IDs, heads) prepared on SQLite's one write
// connection: profiles of sends showed parsing their SQL as a fifth of the
// committer's CPU. A statement is prepared after the first transaction
// that runs it has ended, never inside one: preparing through the pool
// while a transaction holds its only connection would wait forever.
// PostgreSQL's driver caches prepared statements itself (nil here).
type writeStmts struct {
	mu      sync.Mutex
	m       map[string]*sql.Stmt
	missing map[string]bool
}

// txExec runs a statement of the hot path in tx, prepared when it can be.
func (s *Store) txExec(ctx context.Context, tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	if st := s.writeStmt(query); st != nil {
		return tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	}
	return tx.ExecContext(ctx, query, args...)
}

// txQueryRow is txExec for a query of one row.
func (s *Store) txQueryRow(ctx context.Context, tx *sql.Tx, query string, args ...any) *sql.Row {
	if st := s.writeStmt(query); st != nil {
		return tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)
	}
	return tx.QueryRowContext(ctx, query, args...)
}

// writeStmt returns the prepared statement of query, or nil and notes
// it for prepareWrites.
func (s *Store) writeStmt(query string) *sql.Stmt {
	w := s.wstmts
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.m[query]
	if st == nil && len(w.m)+len(w.missing) < maxCachedStmts {
		w.missing[query] = true
	}
	return st
}

// prepareWrites prepares the statements noted since the last call. Call it
// outside any write transaction.
func (s *Store) prepareWrites(ctx context.Context) {
	w := s.wstmts
	if w == nil {
		return
	}
	w.mu.Lock()
	var queries []string
	for q := range w.missing {
		queries = append(queries, q)
		delete(w.missing, q)
	}
	w.mu.Unlock()
	for _, q := range queries {
		// A statement that fails to prepare runs unprepared, as before,
		// and reports its error there.
		st, err := s.write.PrepareContext(ctx, q)
		if err != nil {
			continue
		}
		w.mu.Lock()
		w.m[q] = st
		w.mu.Unlock()
	}
}

// closeWrites closes the prepared write statements.
func (s *Store) closeWrites() {
	if s.wstmts == nil {
		return
	}
	s.wstmts.mu.Lock()
	defer s.wstmts.mu.Unlock()
	for q, st := range s.wstmts.m {
		st.Close()
		delete(s.wstmts.m, q)
	}
}
