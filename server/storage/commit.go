package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Group commit: event writes (PersistEvents) and the small writes many
// clients make at once (receipts, read markers, presence: groupTx) go to
// one committer, which runs every write waiting when it is free in one
// transaction and commits them with one fsync (SQLite) or one WAL flush
// (PostgreSQL). A write is acknowledged only once its batch is durable;
// one that fails fails alone (the batch then runs again, each write in a
// transaction of its own).
// Writes run in the order they were queued, so a room's events keep their
// order, and a write may name one it builds on (Pending.after): when that
// one failed, it fails too without running, for the room's head it was
// built on never existed.

// maxCommitBatch bounds the writes one transaction carries, so that a
// batch's latency stays bounded however deep the queue.
const maxCommitBatch = 128

// ErrBuiltOnFailed is the error of a write queued on one that failed.
var ErrBuiltOnFailed = errors.New("storage: the write this one builds on failed")

// Pending is a queued write: events, or a groupTx function.
type Pending struct {
	evs   []*NewEvent
	head  *HeadUpdate
	after *Pending
	ctx   context.Context
	s     *Store

	// fn and committed are a groupTx write's (fn set: no events).
	fn        func(ctx context.Context, tx *sql.Tx) error
	committed func()

	roomID string
	// relBefore is the room's relations version before the write was
	// queued (UnrelatedAt).
	relBefore uint64
	live      []int64
	done      chan struct{}
	err       error
}

// Done reports whether the write has ended (committed or failed).
func (p *Pending) Done() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is the write's outcome; call it once Done.
func (p *Pending) Err() error { return p.err }

// Wait returns once the write is durable and its stream positions are
// visible to readers, or with the reason it failed. The write runs to its
// end whatever ctx does: others may already build on it.
func (p *Pending) Wait() error {
	<-p.done
	if p.err != nil {
		return p.err
	}
	if len(p.live) > 0 {
		return p.s.events.waitVisible(p.ctx, p.live[len(p.live)-1])
	}
	return nil
}

// committer owns the queue of event writes (see above).
type committer struct {
	s     *Store
	queue chan *Pending
	// mu is held to queue (read) and to close (write): nothing is queued
	// after the committer drained the queue on its way out.
	mu     sync.RWMutex
	closed bool
	stop   chan struct{}
	wg     sync.WaitGroup
}

func (s *Store) startCommitter() {
	s.commit = &committer{s: s, queue: make(chan *Pending, 4*maxCommitBatch), stop: make(chan struct{})}
	s.commit.wg.Add(1)
	go s.commit.run()
}

// stopCommitter ends the committer after the writes already queued.
func (s *Store) stopCommitter() {
	if s.commit == nil {
		return
	}
	s.commit.mu.Lock()
	if !s.commit.closed {
		s.commit.closed = true
		close(s.commit.stop)
	}
	s.commit.mu.Unlock()
	s.commit.wg.Wait()
}

// QueueEvents queues events of one room and a head update for the
// committer and returns at once (PersistEvents for what it stores). after,
// when not nil, is a write these events build on: they are stored only if
// it was.
func (s *Store) QueueEvents(ctx context.Context, evs []*NewEvent, head *HeadUpdate, after *Pending) *Pending {
	p := &Pending{evs: evs, head: head, after: after, ctx: context.WithoutCancel(ctx), s: s,
		done: make(chan struct{})}
	for _, ne := range evs {
		if p.roomID != "" && ne.RoomID != p.roomID {
			p.fail(fmt.Errorf("storage: persist: events of rooms %s and %s in one batch", p.roomID, ne.RoomID))
			return p
		}
		p.roomID = ne.RoomID
	}
	p.relBefore = s.relVersions.get(p.roomID)
	if len(evs) == 0 && head == nil {
		close(p.done)
		return p
	}
	s.commit.mu.RLock()
	defer s.commit.mu.RUnlock()
	if s.commit.closed {
		p.fail(errors.New("storage: closed"))
		return p
	}
	s.commit.queue <- p
	return p
}

// groupTx is txThen for a small write that many requests make at once:
// it runs in the committer's next batch, so that concurrent writes share
// one transaction and one sync to disk, and wakes the /sync long polls
// once, not once each. fn may run twice (again in a transaction of its
// own, when a write in its batch failed): it must leave nothing but its
// statements behind before it returns nil. committed (when not nil) runs
// once the write is durable, before its aux stream positions become
// visible. It returns once they are visible; the write runs to its end
// whatever ctx does: fn gets ctx without its cancellation, for a request
// that ends must not interrupt the batch it shares.
func (s *Store) groupTx(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error, committed func()) error {
	p := &Pending{fn: fn, committed: committed, ctx: context.WithoutCancel(ctx), s: s, done: make(chan struct{})}
	s.commit.mu.RLock()
	if s.commit.closed {
		s.commit.mu.RUnlock()
		return errors.New("storage: closed")
	}
	s.commit.queue <- p
	s.commit.mu.RUnlock()
	<-p.done
	return p.err
}

func (p *Pending) fail(err error) {
	p.err = err
	p.release()
	close(p.done)
}

// release drops what a write was made of once it ended: only its outcome
// is read after that. The timeline keeps each room's last write (and each
// queued transaction ID's) to build on, and every write links the one it
// built on (after), so under a steady stream of messages into a room,
// writes kept whole made a chain back through every message sent since
// the stream began: in the 200-client crowd, thousands of events and their
// rows held in memory.
func (p *Pending) release() {
	p.evs, p.head, p.after, p.live, p.fn, p.committed = nil, nil, nil, nil, nil, nil
}

func (c *committer) run() {
	defer c.wg.Done()
	for {
		var first *Pending
		select {
		case first = <-c.queue:
		case <-c.stop:
			// Writes queued before Close still run.
			for {
				select {
				case p := <-c.queue:
					c.commit([]*Pending{p})
				default:
					return
				}
			}
		}
		batch := []*Pending{first}
	fill:
		for len(batch) < maxCommitBatch {
			select {
			case p := <-c.queue:
				batch = append(batch, p)
			default:
				break fill
			}
		}
		if c.s.d.Name != "postgres" {
			c.commit(batch)
			continue
		}
		// On PostgreSQL a batch of messages is one round trip
		// (pipelineTx), and a groupTx write among them would make it a
		// transaction of round trips per statement: they commit apart,
		// events first. Neither kind reads what the other writes
		// (receipts, account data and presence against events and room
		// state), so their order within the batch does not matter.
		var events, small []*Pending
		for _, p := range batch {
			if p.fn != nil {
				small = append(small, p)
			} else {
				events = append(events, p)
			}
		}
		for _, part := range [][]*Pending{events, small} {
			if len(part) > 0 {
				c.commit(part)
			}
		}
	}
}

// commit runs a batch of writes in one transaction. Should one of them
// fail, none is kept: each runs again in a transaction of its own, so that
// only the failing one fails. Writes rarely fail (the timeline refuses
// what a client can get wrong before it queues), and savepoints around
// every write would cost PostgreSQL two more round trips each.
//
// On PostgreSQL a batch of messages alone is sent whole (pipelineTx): its
// transaction is one round trip. Should an event of it be stored already
// (an outlier to turn into a timeline event, or a conflict), the
// transaction fails, and its writes run again one by one, as for any
// failure, in transactions that read what they need.
func (c *committer) commit(batch []*Pending) {
	s := c.s
	errs := make([]error, len(batch))
	whole := s.d.Name == "postgres" && !slices.ContainsFunc(batch, (*Pending).readsInTx)
	run := func(ctx context.Context, durable bool, fn func(b *stmtBatch) error) error {
		return s.batchTxThen(ctx, durable, fn, func() {
			for i, p := range batch {
				if p.committed != nil && errs[i] == nil {
					p.committed()
				}
			}
		})
	}
	if whole {
		run = s.pipelineTx // messages alone: no groupTx writes
	}
	var rows *batchRows
	err := run(context.Background(), true, func(b *stmtBatch) error {
		rows = newBatchRows()
		for i, p := range batch {
			if p.after != nil && failed(batch[:i], errs, p.after) {
				errs[i] = ErrBuiltOnFailed
				continue
			}
			if p.fn != nil {
				errs[i] = p.fn(p.ctx, b.tx)
			} else {
				errs[i] = s.persistTx(p.ctx, b.tx, rows, p)
			}
			if errs[i] != nil {
				return errs[i]
			}
		}
		if err := s.flushRows(b, rows); err != nil {
			// Whose write it was is found by running them one by one.
			return err
		}
		return nil
	})
	if err == nil {
		s.bumps.raise(rows.bumps) // committed, not yet visible (bumpstamps.go)
	}
	if err != nil && (len(batch) > 1 || whole) {
		for i, p := range batch {
			s.events.finish(p.live) // abandoned with the transaction
			p.live, errs[i] = nil, nil
		}
		for i, p := range batch {
			if p.after != nil && failed(batch[:i], errs, p.after) {
				errs[i] = ErrBuiltOnFailed
				continue
			}
			if p.fn != nil {
				errs[i] = s.txThen(context.Background(), func(tx *sql.Tx) error { return p.fn(p.ctx, tx) }, p.committed)
				continue
			}
			errs[i] = s.batchTx(context.Background(), true, func(b *stmtBatch) error {
				rows = newBatchRows()
				if err := s.persistTx(p.ctx, b.tx, rows, p); err != nil {
					return err
				}
				return s.flushRows(b, rows)
			})
			if errs[i] == nil {
				s.bumps.raise(rows.bumps)
			}
		}
		err = nil
	}
	for i, p := range batch {
		if err != nil && errs[i] == nil {
			errs[i] = err
		}
		p.err = errs[i]
		if p.err == nil && p.head != nil && len(p.head.Changes) > 0 {
			// Before the positions become visible: a reader that sees
			// them must not find the old current state in the cache.
			// A head update without changes (messages: the forward
			// extremities alone) leaves the current state as it was.
			s.currentStateChanged(p.roomID)
			s.membersChanged(p.head.Changes)
		}
		if p.err == nil {
			// Likewise, a reader that sees a relation's position finds
			// its room's relations version moved, and one that sees a
			// fresh event's finds it known to have no relations.
			s.relationsStored(p.evs)
			s.freshStored(p)
		}
	}
	for i, p := range batch {
		s.events.finish(p.live)
		if errs[i] == nil {
			s.searchQueued(p.evs)
		}
		p.release()
		close(p.done)
	}
	// Outside the transaction, with the writes acknowledged: statements
	// run for the first time are prepared for the next batches.
	s.prepareWrites(context.Background())
}

// readsInTx reports whether p runs statements in the transaction itself
// (tx): a groupTx write, a state event (its row, its state group) or a
// head update changing the current state. Otherwise it only adds rows
// for flushRows (on PostgreSQL: messages, which are not read back, and
// the room's forward extremities), and the batch can be sent whole.
func (p *Pending) readsInTx() bool {
	if len(p.evs) == 0 || (p.head != nil && (len(p.head.Changes) > 0 || p.head.StateGroup != 0)) {
		return true
	}
	return slices.ContainsFunc(p.evs, func(ne *NewEvent) bool { return ne.IsState() })
}

// failed reports whether the write p failed: in the batch being committed
// (batch, with its errors so far), or before it. Writes run in queue order,
// so one queued before p is either in batch or done.
func failed(batch []*Pending, errs []error, p *Pending) bool {
	for i, q := range batch {
		if q == p {
			return errs[i] != nil
		}
	}
	return p.Done() && p.err != nil
}
