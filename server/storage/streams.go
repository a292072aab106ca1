package storage

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"sync"
)

// eventStream hands out event stream positions and tracks which of them are
// visible to readers.
//
// Live events (and current-state deltas) take increasing positions above
// zero. A reader that has seen position N must have seen everything below
// it: /sync hands out N as a token and never looks below it again. Writers
// commit concurrently (PostgreSQL commits independent transactions in any
// order), so a position becomes visible only once every position below it
// has finished, committed or failed: Synapse's "max contiguous position".
// Writers of different rooms never wait for each other's locks, only, after
// their own commit, for the few transactions still in flight below them.
//
// History fetched later (backfill) and outliers take decreasing positions
// at or below zero: they are never "new" to an incremental /sync, whose
// positions only grow, yet /messages orders them by (depth, position) with
// the rest.
type eventStream struct {
	mu       sync.Mutex
	last     int64   // last live position handed out
	history  int64   // last history position handed out (≤ 0)
	pending  []int64 // live positions handed out and not finished, ascending
	visible  int64   // every live position ≤ visible has finished
	advanced chan struct{}
}

// loadEventStream starts the stream after the positions already stored.
func loadEventStream(ctx context.Context, db *sql.DB) (*eventStream, error) {
	var hi, lo sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT MAX(stream_ordering), MIN(stream_ordering) FROM events`).Scan(&hi, &lo); err != nil {
		return nil, fmt.Errorf("storage: read stream positions: %w", err)
	}
	var deltas sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT MAX(stream_ordering) FROM current_state_deltas`).Scan(&deltas); err != nil {
		return nil, fmt.Errorf("storage: read stream positions: %w", err)
	}
	last := max(hi.Int64, deltas.Int64, 0)
	return &eventStream{last: last, visible: last, history: min(lo.Int64, 0), advanced: make(chan struct{})}, nil
}

// nextLive hands out n live positions. Call it inside the transaction that
// uses them (on SQLite the single writer then makes position order commit
// order), and finish them once it ends, whatever the outcome.
func (es *eventStream) nextLive(n int) []int64 {
	es.mu.Lock()
	defer es.mu.Unlock()
	out := make([]int64, n)
	for i := range out {
		es.last++
		out[i] = es.last
		es.pending = append(es.pending, es.last)
	}
	return out
}

// nextHistory hands out a position for backfilled history or an outlier.
func (es *eventStream) nextHistory() int64 {
	es.mu.Lock()
	defer es.mu.Unlock()
	es.history--
	return es.history
}

// finish marks live positions as done (committed or abandoned).
func (es *eventStream) finish(positions []int64) {
	if len(positions) == 0 {
		return
	}
	es.mu.Lock()
	defer es.mu.Unlock()
	es.pending = slices.DeleteFunc(es.pending, func(p int64) bool { return slices.Contains(positions, p) })
	v := es.last
	if len(es.pending) > 0 {
		v = es.pending[0] - 1
	}
	if v > es.visible {
		es.visible = v
		close(es.advanced)
		es.advanced = make(chan struct{})
	}
}

// current is the newest position readers may use.
func (es *eventStream) current() int64 {
	es.mu.Lock()
	defer es.mu.Unlock()
	return es.visible
}

// waitVisible returns once pos is visible (or ctx ends). Every position
// below a finished one finishes soon: only commits are waited for.
func (es *eventStream) waitVisible(ctx context.Context, pos int64) error {
	for {
		es.mu.Lock()
		v, ch := es.visible, es.advanced
		es.mu.Unlock()
		if v >= pos {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// auxStream tracks which aux stream positions readers may use, so /sync
// reads the stream's newest position from memory instead of asking for
// MAX(id) each time.
//
// Positions come from the aux_stream table (nextAuxID) inside a write
// transaction. A position becomes visible once its transaction has
// committed and every position taken before it has ended: a reader that
// sees N as the newest position then finds everything at or below N
// committed, on both engines. A position of a transaction that failed is
// never made visible by itself (SQLite hands a rolled-back id out again).
type auxStream struct {
	mu sync.Mutex
	// byTx are the positions each open transaction took; pending is all
	// of them (SQLite may hand a rolled-back id out again while its first
	// holder has not ended, so an id may be in it twice).
	byTx      map[*sql.Tx][]int64
	pending   []int64
	committed int64 // highest committed position
	visible   int64
	advanced  chan struct{}
}

// loadAuxStream starts the stream at the newest stored position.
func loadAuxStream(ctx context.Context, db *sql.DB) (*auxStream, error) {
	var n sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT MAX(id) FROM aux_stream`).Scan(&n); err != nil {
		return nil, fmt.Errorf("storage: read aux stream position: %w", err)
	}
	return &auxStream{byTx: map[*sql.Tx][]int64{}, committed: n.Int64, visible: n.Int64, advanced: make(chan struct{})}, nil
}

// take records that tx took position id.
func (as *auxStream) take(tx *sql.Tx, id int64) {
	as.mu.Lock()
	defer as.mu.Unlock()
	as.byTx[tx] = append(as.byTx[tx], id)
	as.pending = append(as.pending, id)
}

// end records that tx ended, committed or not, and returns the highest
// position it took (0 when none). Every transaction of the writer ends
// here (Store.runTx), the migrations' too, before Open has loaded the
// stream (as is then nil).
func (as *auxStream) end(tx *sql.Tx, committed bool) int64 {
	if as == nil {
		return 0
	}
	as.mu.Lock()
	defer as.mu.Unlock()
	ids, ok := as.byTx[tx]
	if !ok {
		return 0
	}
	delete(as.byTx, tx)
	var last int64
	for _, id := range ids {
		if i := slices.Index(as.pending, id); i >= 0 {
			as.pending = slices.Delete(as.pending, i, i+1)
		}
		last = max(last, id)
	}
	if committed {
		as.committed = max(as.committed, last)
	}
	v := as.committed
	for _, p := range as.pending {
		v = min(v, p-1)
	}
	if v > as.visible {
		as.visible = v
		close(as.advanced)
		as.advanced = make(chan struct{})
	}
	return last
}

// current is the newest position readers may use.
func (as *auxStream) current() int64 {
	as.mu.Lock()
	defer as.mu.Unlock()
	return as.visible
}

// waitVisible returns once pos is visible (or ctx ends). Only positions
// taken before pos can hold it back, and their transactions have already
// ended or are ending: on SQLite the writer is one connection, and on
// PostgreSQL nextAuxID's table lock is held until commit.
func (as *auxStream) waitVisible(ctx context.Context, pos int64) error {
	for {
		as.mu.Lock()
		v, ch := as.visible, as.advanced
		as.mu.Unlock()
		if v >= pos {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
