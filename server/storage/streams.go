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
	watermark         // every live position ≤ visible has finished
	last      int64   // last live position handed out
	history   int64   // last history position handed out (≤ 0)
	pending   []int64 // live positions handed out and not finished, ascending
}

// watermark is a stream's newest position readers may use, which only
// rises, and a way to wait for it. mu also guards the fields of the
// stream that embeds it.
type watermark struct {
	mu       sync.Mutex
	visible  int64
	advanced chan struct{}
}

func newWatermark(v int64) watermark { return watermark{visible: v, advanced: make(chan struct{})} }

// raiseLocked makes v visible if it is newer, waking the waiters; the
// caller holds mu.
func (w *watermark) raiseLocked(v int64) {
	if v > w.visible {
		w.visible = v
		close(w.advanced)
		w.advanced = make(chan struct{})
	}
}

// current is the newest position readers may use.
func (w *watermark) current() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.visible
}

// waitVisible returns once pos is visible (or ctx ends).
func (w *watermark) waitVisible(ctx context.Context, pos int64) error {
	for {
		w.mu.Lock()
		v, ch := w.visible, w.advanced
		w.mu.Unlock()
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
	return &eventStream{watermark: newWatermark(last), last: last, history: min(lo.Int64, 0)}, nil
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
	// Every position below a finished one finishes soon: waitVisible
	// only waits for commits.
	es.raiseLocked(v)
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
	watermark
	// byTx are the positions each open transaction took; pending is all
	// of them (SQLite may hand a rolled-back id out again while its first
	// holder has not ended, so an id may be in it twice).
	byTx      map[*sql.Tx][]int64
	pending   []int64
	committed int64 // highest committed position
}

// loadAuxStream starts the stream at the newest stored position.
func loadAuxStream(ctx context.Context, db *sql.DB) (*auxStream, error) {
	var n sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT MAX(id) FROM aux_stream`).Scan(&n); err != nil {
		return nil, fmt.Errorf("storage: read aux stream position: %w", err)
	}
	return &auxStream{watermark: newWatermark(n.Int64), byTx: map[*sql.Tx][]int64{}, committed: n.Int64}, nil
}

// took reports whether tx has taken a position already.
func (as *auxStream) took(tx *sql.Tx) bool {
	as.mu.Lock()
	defer as.mu.Unlock()
	return len(as.byTx[tx]) > 0
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
	// Only positions taken before v can hold it back, and their
	// transactions have already ended or are ending: on SQLite the writer
	// is one connection, and on PostgreSQL nextAuxID's table lock is held
	// until commit. So waitVisible does not wait long.
	as.raiseLocked(v)
	return last
}
