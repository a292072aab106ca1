package storage

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// batchRows gathers what the writes of one transaction add beside their
// event rows, written by flushRows once the writes are done: DAG edges,
// transaction IDs and (SQLite) search rows, one statement per table on
// PostgreSQL, where every statement is a round trip; and the rooms' heads,
// of which only the last counts. The committer's batches carry many
// messages of one room, and each used to replace the room's forward
// extremities and raise its bump stamp again.
type batchRows struct {
	// events are messages whose rows are still to write (PostgreSQL).
	events                []*NewEvent
	edges, txnIDs, search []any
	// exts are the forward extremities of each room (replaced whole).
	exts map[string][]string
	// bumps are the rooms' new bump stamps (they only move forward).
	bumps map[string]int64
}

// maxEventRows bounds the events one statement writes (21 parameters
// each; PostgreSQL takes at most 65,535).
const maxEventRows = 256

func newBatchRows() *batchRows {
	return &batchRows{exts: map[string][]string{}, bumps: map[string]int64{}}
}

// extremities sets a room's forward extremities.
func (r *batchRows) extremities(roomID string, ids []string) { r.exts[roomID] = ids }

// bump raises the room's bump stamp to the event's position when the
// event is a live, accepted event of a bump type (migration 0024).
func (r *batchRows) bump(ne *NewEvent) {
	e := &ne.Event
	if !ne.live() || e.Rejected || e.SoftFailed || !BumpEventTypes[e.Type] {
		return
	}
	r.bumps[e.RoomID] = max(r.bumps[e.RoomID], e.StreamPos)
}

// flushRows writes rows with b, sending them (stmtBatch.send): on
// PostgreSQL in one round trip. A transaction ID taken already is
// ErrConflict: the committer then runs its writes again one by one, so
// that it is the write that reused it which fails.
func (s *Store) flushRows(b *stmtBatch, r *batchRows) error {
	// Events first: a conflict is found before anything else is written.
	var inserted map[string]bool
	for start := 0; start < len(r.events); start += maxEventRows {
		s.queueEventRows(b, r.events[start:min(start+maxEventRows, len(r.events))], &inserted, b.whole)
	}
	b.rows(wrapErr("storage: insert edges: %w"), `INSERT INTO event_edges (stream_ordering, prev_event_id) VALUES `, 2,
		` ON CONFLICT DO NOTHING`, r.edges)
	b.rows(func(err error) error {
		if isUnique(err) {
			return ErrConflict
		}
		return fmt.Errorf("storage: record txn ids: %w", err)
	}, `INSERT INTO event_txn_ids (user_id, device_id, scope, txn_id, stream_ordering) VALUES `, 5, ``, r.txnIDs)
	b.rows(wrapErr("storage: queue for search: %w"), `INSERT INTO event_search_pending (stream_ordering, value) VALUES `, 2, ``, r.search)
	var bumps []any
	for _, room := range slices.Sorted(maps.Keys(r.bumps)) {
		bumps = append(bumps, room, r.bumps[room])
	}
	b.rows(wrapErr("storage: record bump stamps: %w"), `INSERT INTO room_bump_stamps (room_id, stream_ordering) VALUES `, 2,
		` ON CONFLICT (room_id) DO UPDATE SET stream_ordering = excluded.stream_ordering
		WHERE room_bump_stamps.stream_ordering < excluded.stream_ordering`, bumps)
	if len(r.exts) > 0 {
		rooms := slices.Sorted(maps.Keys(r.exts))
		cond, arg := s.inSet("room_id", 1, rooms)
		b.exec(wrapErr("storage: update extremities: %w"), `DELETE FROM forward_extremities WHERE `+cond, arg)
		var exts []any
		for _, room := range rooms {
			for _, id := range r.exts[room] {
				exts = append(exts, room, id)
			}
		}
		b.rows(wrapErr("storage: insert extremities: %w"), `INSERT INTO forward_extremities (room_id, event_id) VALUES `, 2, ``, exts)
	}
	if err := b.send(); err != nil {
		return err
	}
	if b.whole {
		// Every event is new: the statement failed the transaction
		// otherwise (queueEventRows, strict).
		return nil
	}
	// Events stored already: outliers to turn into timeline events (and
	// index, which the statement did only for the rows it inserted), or
	// conflicts.
	for _, ne := range r.events {
		if inserted[ne.EventID] {
			continue
		}
		if err := deOutlier(b.ctx, b.tx, ne, ne.StateGroup); err != nil {
			return err
		}
		if err := s.indexForSearch(b.ctx, b.tx, r, ne); err != nil {
			return err
		}
	}
	return nil
}

// wrapErr wraps an error with format (one %w).
func wrapErr(format string) func(error) error {
	return func(err error) error { return fmt.Errorf(format, err) }
}

// execRows inserts rows (args, cols per row): on PostgreSQL with
// multi-row statements (bulkExec), on SQLite, which has no round trips to
// save, row by row with one statement prepared once (txExec).
func (s *Store) execRows(ctx context.Context, tx *sql.Tx, head string, cols int, tail string, args []any) error {
	if len(args) == 0 {
		return nil
	}
	if s.d.Name != "sqlite" {
		return s.bulkExec(ctx, tx, head, cols, tail, args)
	}
	var b strings.Builder
	b.WriteString(head)
	b.WriteByte('(')
	for c := range cols {
		if c > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "$%d", c+1)
	}
	b.WriteByte(')')
	b.WriteString(tail)
	q := b.String()
	for start := 0; start < len(args); start += cols {
		if _, err := s.txExec(ctx, tx, q, args[start:start+cols]...); err != nil {
			return err
		}
	}
	return nil
}
