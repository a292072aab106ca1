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
