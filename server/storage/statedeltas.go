package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// Most events change no state: a message is a row of events and nothing
// in current_state_deltas. Yet every reader of "what changed between
// two positions" (each /sync woken by a message, the push evaluator,
// lazy-loaded members) asked the database for the deltas in its range,
// several queries for every message sent. So the store keeps the highest
// position a delta may have been written at (deltasUpTo), and a reader
// whose range starts at or after it knows the answer is empty.
//
// The mark is raised inside the transaction that writes the delta, before
// it commits, so before its position can become visible: a reader that
// sees a position, or state a delta was written with, and then reads the
// mark finds it at or past the delta. A transaction that rolls back
// leaves the mark raised, which only costs a query. Deleting deltas (a
// room purged) leaves it where it was, for the same reason.

// loadDeltasUpTo starts the mark at the newest delta stored.
func (s *Store) loadDeltasUpTo(ctx context.Context) error {
	var hi sql.NullInt64
	if err := s.write.QueryRowContext(ctx, `SELECT MAX(stream_ordering) FROM current_state_deltas`).Scan(&hi); err != nil {
		return fmt.Errorf("storage: read the newest state delta: %w", err)
	}
	if hi.Valid {
		s.deltasWritten(hi.Int64)
	} else {
		s.deltasUpTo.Store(minStreamPos)
	}
	return nil
}

// minStreamPos is below every stream position (live ones are positive,
// history ones negative).
const minStreamPos = -1 << 62

// deltasWritten raises the mark to pos: call it before the transaction
// writing a delta at pos commits.
func (s *Store) deltasWritten(pos int64) {
	for {
		cur := s.deltasUpTo.Load()
		if pos <= cur || s.deltasUpTo.CompareAndSwap(cur, pos) {
			return
		}
	}
}

// noDeltasAfter reports whether no current-state delta is stored at a
// position after pos.
func (s *Store) noDeltasAfter(pos int64) bool { return pos >= s.deltasUpTo.Load() }
