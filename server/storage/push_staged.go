package storage

import (
	"context"
	"slices"
	"sync"
)

// Staged notifications: what the push evaluator found, held in memory
// until it writes a group of its steps at once (FlushNotifications).
//
// A step's rows touch one leaf of the notifications' key per notified
// member, whatever number of events the step carries, so writing each
// step as it was evaluated (every 10 ms under load) made that page scatter
// the largest cost of a busy room, and every /sync wake-up waited for the
// write. Staged rows count at once: the unread counts read the staged
// heads and totals before the stored ones (UnreadCounts, cumAt,
// ThreadHeads), and the readers of whole rows (NotificationsOf,
// NotificationsAfter) and the deletions wait for the write, asking the
// evaluator to write at once (FlushWanted), so that they never wait for
// its next flush.
//
// The stored push position moves only with a flush, together with the
// rows: a crash loses what was staged and the evaluator evaluates it again
// from the stored position, as it did for a step whose write was lost.
//
// Only the evaluator's goroutine stages and flushes, so nothing is staged
// while a flush runs.
type stagedNotifications struct {
	mu   sync.Mutex
	rows map[string][]Notification // by user, in position order
	n    int
	// heads are the newest staged head of each (user, room, thread), by
	// user and by (room, thread).
	userHeads map[string]map[[2]string]ThreadHead
	roomHeads map[[2]string]map[string]ThreadHead
	pos       int64 // evaluated up to (staged; at least flushed)
	flushed   int64 // stored up to
	written   chan struct{}
	// wanted holds a token while a reader waits for staged rows to be
	// written (FlushWanted); made with the Store, never replaced.
	wanted chan struct{}
	// flushing is FlushNotifications' buffer of rows, kept for the next
	// flush up to keepRows.
	flushing []Notification
}

// keepRows bounds the rows' buffers kept from one flush to the next: a
// busy room's flush holds up to the evaluator's flush threshold (2,000
// rows), and a burst beyond it is given back. What the last flush before
// a quiet spell kept stays held (cleared) until the next: ~1 MB at most.
const keepRows = 4096

// FlushWanted is ready when a reader waits for the staged rows to be
// written (waitWritten): the evaluator should call FlushNotifications now
// rather than at its next flush.
func (s *Store) FlushWanted() <-chan struct{} { return s.staged.wanted }

// StageNotifications holds a step's rows and heads, evaluated up to pos,
// for the next FlushNotifications; they count at once (see above).
func (s *Store) StageNotifications(pos int64, ns []Notification, heads []ThreadHead) {
	st := &s.staged
	st.mu.Lock()
	if st.rows == nil {
		st.rows, st.userHeads, st.roomHeads = map[string][]Notification{}, map[string]map[[2]string]ThreadHead{}, map[[2]string]map[string]ThreadHead{}
	}
	for _, n := range ns {
		st.rows[n.UserID] = append(st.rows[n.UserID], n)
	}
	st.n += len(ns)
	for _, h := range heads {
		k := [2]string{h.RoomID, h.ThreadID}
		if st.userHeads[h.UserID] == nil {
			st.userHeads[h.UserID] = map[[2]string]ThreadHead{}
		}
		st.userHeads[h.UserID][k] = h
		if st.roomHeads[k] == nil {
			st.roomHeads[k] = map[string]ThreadHead{}
		}
		st.roomHeads[k][h.UserID] = h
	}
	st.pos = max(st.pos, pos)
	st.mu.Unlock()
	s.headsRecorded(heads)
	s.evaluatedUpTo(pos)
}

// Staged reports the rows staged and how far the evaluated position is
// ahead of the stored one.
func (s *Store) Staged() (rows int, ahead int64) {
	st := &s.staged
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.n, st.pos - st.flushed
}

// FlushNotifications writes what is staged, and the evaluated position, in
// one transaction (RecordNotifications). On an error everything stays
// staged for the next call, unless the stored position shows the write
// committed after all.
func (s *Store) FlushNotifications(ctx context.Context) error {
	st := &s.staged
	st.mu.Lock()
	if st.pos <= st.flushed && st.n == 0 {
		st.mu.Unlock()
		return nil
	}
	pos := st.pos
	rows := slices.Grow(st.flushing[:0], st.n)
	st.flushing = nil // this flush's until it is done
	for _, rs := range st.rows {
		rows = append(rows, rs...) // a user's rows together: one leaf after another
	}
	var heads []ThreadHead
	for _, hs := range st.userHeads {
		for _, h := range hs {
			heads = append(heads, h)
		}
	}
	st.mu.Unlock()
	if err := s.RecordNotifications(ctx, pos, rows, heads); err != nil {
		if stored, perr := s.PushPosition(ctx); perr != nil || stored < pos {
			return err
		}
		// Committed after all: the caches learn of it as from a write
		// that said so.
		s.notificationsRecorded(pos, heads)
	}
	st.mu.Lock()
	// A user notified since the last flush keeps the buffer of their rows
	// for the next (busy rooms notify the same members flush after flush);
	// one who was not has theirs dropped.
	for u, rs := range st.rows {
		if len(rs) == 0 || cap(rs) > keepRows {
			delete(st.rows, u)
			continue
		}
		clear(rs) // nothing kept alive by rows already written
		st.rows[u] = rs[:0]
	}
	if cap(rows) <= keepRows {
		clear(rows)
		st.flushing = rows[:0]
	}
	clear(st.userHeads)
	clear(st.roomHeads)
	st.n, st.flushed = 0, pos
	if st.written != nil {
		close(st.written)
		st.written = nil
	}
	st.mu.Unlock()
	return nil
}

// waitWritten waits until what was staged when it was called is stored,
// or ctx ends.
func (s *Store) waitWritten(ctx context.Context) error {
	st := &s.staged
	st.mu.Lock()
	want := st.pos
	for st.flushed < want && st.n > 0 {
		if st.written == nil {
			st.written = make(chan struct{})
		}
		ch := st.written
		select {
		case st.wanted <- struct{}{}:
		default: // asked already
		}
		st.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		st.mu.Lock()
	}
	st.mu.Unlock()
	return nil
}

// stagedCumAt is the running totals of the (user, room, thread)'s newest
// staged notification at or before pos, if one is staged: staged rows are
// newer than every stored one, so it is the answer.
func (s *Store) stagedCumAt(user, room, thread string, pos int64) (n, hl int64, ok bool) {
	st := &s.staged
	st.mu.Lock()
	defer st.mu.Unlock()
	rs := st.rows[user]
	for i := len(rs) - 1; i >= 0; i-- {
		if r := rs[i]; r.StreamPos <= pos && r.RoomID == room && r.ThreadID == thread {
			return r.CumNotif, r.CumHighlight, true
		}
	}
	return 0, 0, false
}

// stagedHeadsOf is a copy of the user's staged heads.
func (s *Store) stagedHeadsOf(user string) []ThreadHead {
	st := &s.staged
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []ThreadHead
	for _, h := range st.userHeads[user] {
		out = append(out, h)
	}
	return out
}

// withHeadsFrom is heads (all of one user's) with those of staged put in,
// newer replacing older; heads itself is not changed.
func withHeadsFrom(heads, staged []ThreadHead) []ThreadHead {
	if len(staged) == 0 {
		return heads
	}
	out := slices.Clone(heads)
	for _, h := range staged {
		i := slices.IndexFunc(out, func(o ThreadHead) bool { return o.RoomID == h.RoomID && o.ThreadID == h.ThreadID })
		switch {
		case i < 0:
			out = append(out, h)
		case out[i].StreamPos < h.StreamPos:
			out[i] = h
		}
	}
	return out
}

// stagedThreadHeads puts the (room, thread)'s staged heads into heads.
func (s *Store) stagedThreadHeads(room, thread string, heads map[string]ThreadHead) {
	st := &s.staged
	st.mu.Lock()
	defer st.mu.Unlock()
	for u, h := range st.roomHeads[[2]string{room, thread}] {
		if o, ok := heads[u]; !ok || o.StreamPos < h.StreamPos {
			heads[u] = h
		}
	}
}
