// Package timeline is the only way events enter a room, whoever built them.
//
// Local events (createRoom, send, state, membership) are built, signed and
// authorised on the room's head (Send, CreateRoom). Events built elsewhere
// arrive through Receive, as one of three kinds: Live (new events), Backfill
// (older history) and Outlier (auth chains, the state a join brings), and a
// join through another server through Join. Both paths share persistence
// (storage.PersistEvents), the state calculation (state.go) and the
// observers told about every persisted event (the /sync notifier today; the
// federation send queue and push later).
//
// Received events go through the checks of the server-server spec
// ("Checks performed on receipt of a PDU") in its order: format and room
// version, signatures (through a rooms.KeyLookup the federation code
// provides), hashes (the event is redacted on a mismatch), authorisation
// against its own auth_events (failure: rejected), against the state before
// it, resolved from its prev_events' states (rejected), and, for live
// events, against the room's current state (soft-failed). Rejected and
// soft-failed events are stored with their status and change nothing else.
//
// Concurrency: everything that can take long (signature checks, fetching
// missing events, state resolution, loading state) happens before a room's
// lock is taken; the lock is held for the write of the room's head alone,
// and never across network I/O. Locks are a fixed table of shards, not one
// mutex per room ever seen. Observers run after the lock is released.
package timeline

import (
	"context"
	"errors"
	"hash/fnv"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"hearth/server/cache"
	"hearth/server/rooms"
	"hearth/server/storage"
)

// ErrUnknownRoom is returned for events of rooms this server has no state for.
var ErrUnknownRoom = errors.New("timeline: unknown room")

// ErrRoomBlocked is returned for local events in a room an admin blocked.
var ErrRoomBlocked = errors.New("timeline: this room has been blocked on this server")

// Fetcher fetches what a received event refers to and this server lacks:
// missing auth events, and the state before an event whose prev_events are
// unknown. Federation implements it; without one, such events are dropped.
// It is called with no lock held.
type Fetcher interface {
	// Event fetches one event from server (GET /_matrix/federation/v1/event).
	Event(ctx context.Context, server string, rv *rooms.RoomVersion, eventID string) (*rooms.Event, error)
	// StateBefore fetches the room state before an event and its auth chain
	// from server (GET /_matrix/federation/v1/state/{roomId}?event_id=).
	StateBefore(ctx context.Context, server string, rv *rooms.RoomVersion, roomID, eventID string) (state, authChain []*rooms.Event, err error)
	// MissingEvents fetches up to limit events between earliest and latest
	// from server (POST /_matrix/federation/v1/get_missing_events).
	MissingEvents(ctx context.Context, server string, rv *rooms.RoomVersion, roomID string, earliest, latest []string, limit int) ([]*rooms.Event, error)
}

// Observer is told about every event that became part of a room's live
// timeline (accepted live events, local or received), in the order of their
// stream positions per room, after the event is visible to readers.
type Observer interface {
	EventPersisted(p *Persisted)
}

// Persisted is one event an observer is told about.
type Persisted struct {
	Event *storage.Event
	PDU   *rooms.Event
	// Changes is what the event changed in the room's current state: its
	// own key for a local state event, possibly many keys (a state reset
	// among them) when a received event merges forks.
	Changes []storage.StateChange
	// Local is true for events built on this server.
	Local bool
}

// Deps is what a Timeline needs.
type Deps struct {
	Store *storage.Store
	// Key signs local events.
	Key rooms.SigningKey
	// Keys looks up servers' public keys to verify received events; the
	// federation code provides it (it must know this server's own key).
	// Without it, received events are dropped.
	Keys rooms.KeyLookup
	// Fetcher fetches missing events for received ones; optional.
	Fetcher Fetcher
	Now     func() time.Time
	Log     *slog.Logger
}

// Timeline is the room pipeline of one server.
type Timeline struct {
	store *storage.Store
	key   rooms.SigningKey
	keys  rooms.KeyLookup
	fetch Fetcher
	now   func() time.Time
	log   *slog.Logger

	locks roomLocks
	heads *cache.LRU[string, *roomHead]
	// inflight is each room's last write queued and perhaps not yet
	// durable: local messages are built on it before it commits (send).
	inflight inflight

	// versions numbers every head this Timeline builds or changes, so a
	// plan made against one head is known to be stale once it moved on.
	versions atomic.Int64

	obsMu     sync.RWMutex
	observers []Observer
}

// New builds a Timeline. Its caches are registered in the store's registry.
func New(d Deps) *Timeline {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Log == nil {
		d.Log = slog.Default()
	}
	t := &Timeline{store: d.Store, key: d.Key, keys: d.Keys, fetch: d.Fetcher, now: d.Now, log: d.Log,
		inflight: inflight{reload: make(chan struct{}, 1)},
		heads: cache.NewLRU[string, *roomHead](d.Store.Caches(), "room_builders",
			"room → current state, extremities and depth for building its next event", 256).WithSize(headSize)}
	d.Store.Caches().RegisterBuffer("txn_filter", "client transaction IDs stored, as a Bloom filter (entries: IDs added; memory: its bits)", func() (int, int64) {
		t.inflight.mu.Lock()
		defer t.inflight.mu.Unlock()
		if f := t.inflight.filter; f != nil {
			return f.ids, int64(len(f.bits)) * 8
		}
		return 0, 0
	})
	return t
}

// Observe registers o for every event persisted from now on.
func (t *Timeline) Observe(o Observer) {
	t.obsMu.Lock()
	defer t.obsMu.Unlock()
	t.observers = append(t.observers, o)
}

// SetKeys sets the key lookup received events are verified with (the
// federation code, which is built after the timeline).
func (t *Timeline) SetKeys(keys rooms.KeyLookup) { t.keys = keys }

// SetFetcher sets how missing events are fetched.
func (t *Timeline) SetFetcher(f Fetcher) { t.fetch = f }

func (t *Timeline) tell(ps []*Persisted) {
	if len(ps) == 0 {
		return
	}
	t.obsMu.RLock()
	defer t.obsMu.RUnlock()
	for _, p := range ps {
		for _, o := range t.observers {
			o.EventPersisted(p)
		}
	}
}

// lockShards is the size of the room lock table: rooms hash onto shards,
// so memory stays bounded however many rooms the server sees. Two rooms on
// one shard only wait for each other's head writes, which are short.
const lockShards = 256

type roomLocks [lockShards]sync.Mutex

// lock takes the room's lock; the returned func releases it. Nothing may
// take a second room lock while holding one (two rooms may share a shard).
func (l *roomLocks) lock(roomID string) func() {
	h := fnv.New32a()
	h.Write([]byte(roomID))
	m := &l[h.Sum32()%lockShards]
	m.Lock()
	return m.Unlock
}

// lock takes the room's lock once the room's writes in flight have ended,
// so that what the store holds of the room is its whole head. Every path
// but a local message send (send) takes it this way.
func (t *Timeline) lock(roomID string) func() {
	unlock := t.locks.lock(roomID)
	t.settle(roomID)
	return unlock
}

// settle waits, under the room's lock, for the room's write in flight;
// when it failed, the cached head (built on it) is forgotten.
func (t *Timeline) settle(roomID string) {
	p := t.inflight.get(roomID)
	if p == nil {
		return
	}
	if err := p.Wait(); err != nil {
		t.heads.Remove(roomID)
	}
	t.inflight.drop(roomID, p)
}

// inflight maps rooms to their last queued write (see Timeline.inflight).
type inflight struct {
	mu sync.Mutex
	m  map[string]*storage.Pending
	// txns are the client transaction IDs of queued events (checkTxn).
	txns map[string]*storage.Pending
	// ended remembers the transaction IDs of the last txnRing writes that
	// ended, each with its count in ends (ring holds them in order), so
	// that checkTxn can tell whether one ended since a TxnMark.
	ended map[string]uint64
	ring  [txnRing]string
	ends  uint64
	// filter holds every transaction ID stored (txnfilter.go); reload
	// asks RunTxnFilter to build a bigger one.
	filter *txnFilter
	reload chan struct{}
}

// txnRing is how many ended transaction IDs inflight remembers: far more
// than end between a send's look-up in the store and its turn at the
// room's lock.
const txnRing = 1024

// TxnMark is a point in the sequence of ended client writes, taken when a
// send looks its transaction ID up (Timeline.EventIDByTxn).
type TxnMark struct {
	ends uint64
	set  bool
}

// endedSince reports whether a write of the transaction ID key may have
// ended after mark.
func (f *inflight) endedSince(key string, mark TxnMark) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !mark.set || f.ends-mark.ends >= txnRing {
		return true // not known: it may have
	}
	return f.ended[key] > mark.ends
}

func (f *inflight) txn(key string) *storage.Pending {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.txns[key]
}

func (f *inflight) setTxn(key string, p *storage.Pending) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.txns == nil {
		f.txns = map[string]*storage.Pending{}
	}
	f.txns[key] = p
}

func (f *inflight) dropTxn(key string, p *storage.Pending) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.txns[key] == p {
		delete(f.txns, key)
	}
	if f.ended == nil {
		f.ended = map[string]uint64{}
	}
	// Into the filter before the write counts as ended (txnfilter.go).
	f.filter.add(key)
	if f.filter.full() {
		f.filter.loaded = false // a "maybe" for every ID until rebuilt
		select {
		case f.reload <- struct{}{}:
		default:
		}
	}
	f.ends++
	slot := f.ends % txnRing
	if old := f.ring[slot]; old != "" && f.ended[old] == f.ends-txnRing {
		delete(f.ended, old)
	}
	f.ring[slot] = key
	f.ended[key] = f.ends
}

func (f *inflight) get(roomID string) *storage.Pending {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.m[roomID]
}

func (f *inflight) set(roomID string, p *storage.Pending) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string]*storage.Pending{}
	}
	f.m[roomID] = p
}

// drop forgets p once it ended, unless a later write replaced it.
func (f *inflight) drop(roomID string, p *storage.Pending) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m[roomID] == p {
		delete(f.m, roomID)
	}
}

// Exclusive runs fn while no event enters the room, then forgets the room's
// cached head: for admin changes to the room's row or DAG (block, purge).
// fn must not call the Timeline.
func (t *Timeline) Exclusive(roomID string, fn func() error) error {
	unlock := t.lock(roomID)
	defer unlock()
	defer t.heads.Remove(roomID)
	return fn()
}

// Invalidate forgets the room's cached head, so the next event reloads it
// from the store (after a redaction changed a state event's content).
func (t *Timeline) Invalidate(roomID string) {
	unlock := t.lock(roomID)
	defer unlock()
	t.heads.Remove(roomID)
}

// DropExtremities keeps only the room's newest forward extremity (by depth,
// then arrival), for rooms whose DAG has too many leaves; the current state
// becomes the state at that extremity. It returns how many were dropped.
func (t *Timeline) DropExtremities(ctx context.Context, roomID string) (int, error) {
	unlock := t.lock(roomID)
	defer unlock()
	defer t.heads.Remove(roomID)
	exts, err := t.store.ForwardExtremities(ctx, roomID)
	if err != nil || len(exts) <= 1 {
		return 0, err
	}
	h, err := t.head(ctx, roomID)
	if err != nil {
		return 0, err
	}
	current, err := t.store.StateGroup(ctx, h.group)
	if err != nil {
		return 0, err
	}
	keep := exts[0]
	state, err := t.store.StateGroup(ctx, keep.StateGroup)
	if err != nil {
		return 0, err
	}
	err = t.store.SetRoomHead(ctx, roomID, &storage.HeadUpdate{Extremities: []string{keep.EventID}, StateGroup: keep.StateGroup,
		Changes: changesBetween(current, state)})
	if err != nil {
		return 0, err
	}
	return len(exts) - 1, nil
}
