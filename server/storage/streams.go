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
