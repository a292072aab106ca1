package storage

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// stmtBatch runs the statements of a write whose results are not read
// back: on PostgreSQL it queues them and sends them all in one round trip
// (a pgx pipeline on the transaction's connection), on SQLite, which has
// no round trips to save, it runs each at once. The committer's batches
// (an event row statement, edges, transaction IDs, bump stamps, forward
// extremities) and the push evaluator's notifications are a handful of
// statements each; run one by one, each cost PostgreSQL a round trip, a
// wake-up of its backend and of the committer, for a few microseconds of
// work.
//
// An error of a statement run at once (SQLite) is kept and returned by
// send, so that callers read the same on both engines.
type stmtBatch struct {
	s   *Store
	ctx context.Context
	tx  *sql.Tx
	// conn is the transaction's connection (PostgreSQL; nil on SQLite),
	// on which b is sent.
	conn *sql.Conn
	// whole: the transaction is the pipeline (pipelineTx): tx is nil,
	// and what is queued is sent with BEGIN and COMMIT once fn returns.
	whole bool
	b     pgx.Batch
	err   error
}

// exec queues (or, on SQLite, runs) a statement; wrap, when not nil,
// turns its error into the one send returns.
func (b *stmtBatch) exec(wrap func(error) error, query string, args ...any) {
	if b.conn != nil {
		b.b.Queue(query, args...).Fn = func(br pgx.BatchResults) error {
			_, err := br.Exec()
			if err != nil && wrap != nil {
				err = wrap(err)
			}
			return err
		}
		return
	}
	if b.err != nil {
		return
	}
	if _, err := b.s.txExec(b.ctx, b.tx, query, args...); err != nil {
		if wrap != nil {
			err = wrap(err)
		}
		b.err = err
	}
}

// query queues a statement whose rows fn reads (PostgreSQL only).
func (b *stmtBatch) query(query string, args []any, fn func(pgx.Rows) error) {
	b.b.Queue(query, args...).Query(fn)
}

// rows queues an insert of rows (args, cols per row): on PostgreSQL as
// multi-row statements of at most the dialect's BulkRows rows (bulkExec),
// on SQLite as execRows runs them (row by row).
func (b *stmtBatch) rows(wrap func(error) error, head string, cols int, tail string, args []any) {
	b.insert(b.s.execRows, wrap, head, cols, tail, args)
}

// bulk is rows run on SQLite as bulkExec runs them (multi-row statements).
func (b *stmtBatch) bulk(wrap func(error) error, head string, cols int, tail string, args []any) {
	b.insert(b.s.bulkExec, wrap, head, cols, tail, args)
}

func (b *stmtBatch) insert(sqlite func(context.Context, *sql.Tx, string, int, string, []any) error,
	wrap func(error) error, head string, cols int, tail string, args []any) {
	if len(args) == 0 {
		return
	}
	if b.conn == nil {
		if b.err == nil {
			if err := sqlite(b.ctx, b.tx, head, cols, tail, args); err != nil {
				if wrap != nil {
					err = wrap(err)
				}
				b.err = err
			}
		}
		return
	}
	step := b.s.d.BulkRows * cols
	for start := 0; start < len(args); start += step {
		chunk := args[start:min(start+step, len(args))]
		b.exec(wrap, bulkSQL(head, cols, tail, len(chunk)/cols, true), chunk...)
	}
}

// send sends what is queued and returns the first error, in queue order;
// the batch can then be filled again.
func (b *stmtBatch) send() error {
	if b.whole {
		return nil // sent by pipelineTx
	}
	if b.conn == nil || b.b.Len() == 0 {
		err := b.err
		b.err = nil
		return err
	}
	err := b.conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("storage: pipeline on a %T connection", dc)
		}
		return c.Conn().SendBatch(b.ctx, &b.b).Close()
	})
	b.b = pgx.Batch{}
	return err
}

// batchTx runs fn in a write transaction with a stmtBatch on it; fn sends
// what it queued (send) before it returns. durable false is txNoSync: the
// commit does not wait for the disk.
func (s *Store) batchTx(ctx context.Context, durable bool, fn func(b *stmtBatch) error) error {
	return s.batchTxThen(ctx, durable, fn, nil)
}

// batchTxThen is a durable batchTx calling committed (when not nil) once
// the transaction committed, before the aux stream positions it took
// become visible (txThen). A transaction that is not durable does not
// call it.
func (s *Store) batchTxThen(ctx context.Context, durable bool, fn func(b *stmtBatch) error, committed func()) error {
	if s.d.Name != "postgres" {
		run := func(tx *sql.Tx) error { return fn(&stmtBatch{s: s, ctx: ctx, tx: tx}) }
		if durable {
			return s.txThen(ctx, run, committed)
		}
		return s.txNoSync(ctx, run)
	}
	began := time.Now()
	conn, err := s.write.Conn(ctx)
	if err != nil {
		return fmt.Errorf("storage: begin: %w", err)
	}
	defer conn.Close()
	tx, done, err := s.beginTimed(ctx, conn, began)
	if err != nil {
		return err
	}
	defer done()
	return s.runTx(ctx, tx, func(tx *sql.Tx) error {
		b := &stmtBatch{s: s, ctx: ctx, tx: tx, conn: conn}
		if !durable {
			// Sent with the statements: no round trip of its own.
			b.exec(func(err error) error { return fmt.Errorf("storage: relax commit: %w", err) },
				`SET LOCAL synchronous_commit = off`)
		}
		return fn(b)
	}, committed)
}

// pipelineTx is batchTx for a transaction made of queued statements alone:
// fn must not use b.tx, nil on PostgreSQL, whose results it reads only
// in its statements' callbacks. On PostgreSQL BEGIN, the statements and
// COMMIT then go in one pipeline: the whole transaction, its commit's
// WAL flush included, is one round trip. On SQLite it is batchTx.
func (s *Store) pipelineTx(ctx context.Context, durable bool, fn func(b *stmtBatch) error) error {
	if s.d.Name != "postgres" {
		return s.batchTx(ctx, durable, fn)
	}
	began := time.Now()
	conn, err := s.write.Conn(ctx)
	if err != nil {
		return fmt.Errorf("storage: begin: %w", err)
	}
	defer conn.Close()
	if s.observeWrite != nil {
		wait := time.Since(began)
		defer func() { s.observeWrite(wait, time.Since(began)) }()
	}
	b := &stmtBatch{s: s, ctx: ctx, conn: conn, whole: true}
	b.b.Queue(`BEGIN`)
	if !durable {
		b.exec(wrapErr("storage: relax commit: %w"), `SET LOCAL synchronous_commit = off`)
	}
	if err := fn(b); err != nil {
		return err
	}
	b.exec(wrapErr("storage: commit: %w"), `COMMIT`)
	// Should a statement fail, the server skips the rest, COMMIT
	// included, and holds the transaction aborted: pgx's database/sql
	// driver then discards the connection when the pool hands it out
	// again (it checks for an open transaction), as for a transaction
	// left open. Writes rarely fail.
	return conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("storage: pipeline on a %T connection", dc)
		}
		return c.Conn().SendBatch(ctx, &b.b).Close()
	})
}
