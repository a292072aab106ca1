package server

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"hearth/server/timeline"
)

// notifier is /sync's per-process state. Above all it wakes long-polling
// /sync requests: a parked request is a waiter registered under its user
// and under the rooms it is joined to, and every change /sync can report
// wakes the waiters it may concern:
//
//   - an event wakes the waiters of its room, and for a membership event
//     also those of its target user (an invite reaches someone who is not
//     in the room yet);
//   - account data wakes its user's waiters, a receipt its room's.
//
// A woken waiter re-reads the stores for what concerns it; the notifier
// carries no data, so a spurious wake costs one read and a missed one is
// impossible as long as a waiter registers before it reads (getSync).
// Waking is a non-blocking send on each waiter's one-slot channel, so a
// change costs O(waiters concerned), not O(all waiters), and hundreds of
// parked requests in other rooms are not disturbed.
//
// It also keeps the lazy-loading record of which member events each device
// has been sent (client_sync.go), the only other thing /sync remembers
// between requests.
type notifier struct {
	mu     sync.Mutex
	byUser map[string]map[*waiter]struct{}
	byRoom map[string]map[*waiter]struct{}
	// waiting counts parked /sync requests (a gauge; tests use it to know
	// a long poll is asleep before they cause the event that wakes it).
	waiting atomic.Int64

	lazy lazyCache
	// typing is the rooms' typing users (typing.go).
	typing typingState
}

// waiter is one parked /sync request.
type waiter struct {
	wake   chan struct{} // one slot: a pending wake is never lost or doubled
	userID string
	rooms  []string
}

func newNotifier() *notifier {
	return &notifier{byUser: map[string]map[*waiter]struct{}{}, byRoom: map[string]map[*waiter]struct{}{}}
}

func addWaiter(m map[string]map[*waiter]struct{}, key string, w *waiter) {
	set := m[key]
	if set == nil {
		set = map[*waiter]struct{}{}
		m[key] = set
	}
	set[w] = struct{}{}
}

func removeWaiter(m map[string]map[*waiter]struct{}, key string, w *waiter) {
	if set := m[key]; set != nil {
		delete(set, w)
		if len(set) == 0 {
			delete(m, key)
		}
	}
}

// register adds a waiter for userID's own changes. Call it before reading
// the stores, so a change committed after the read wakes it.
func (n *notifier) register(userID string) *waiter {
	w := &waiter{wake: make(chan struct{}, 1), userID: userID}
	n.mu.Lock()
	addWaiter(n.byUser, userID, w)
	n.mu.Unlock()
	return w
}

// watchRooms also wakes w for changes in rooms. A change between the read
// that listed the rooms and this call is not seen by w: the caller checks
// the stream positions again afterwards.
func (n *notifier) watchRooms(w *waiter, rooms []string) {
	n.mu.Lock()
	for _, r := range rooms {
		addWaiter(n.byRoom, r, w)
	}
	w.rooms = append(w.rooms, rooms...)
	n.mu.Unlock()
}

// park holds a long-polling request until w is woken, timer fires or ctx
// ends, counted in waiting, then unregisters w. It reports whether the
// timer fired, and ctx's error when it ended.
func (n *notifier) park(ctx context.Context, w *waiter, timer *time.Timer) (timedOut bool, err error) {
	n.waiting.Add(1)
	select {
	case <-w.wake:
	case <-timer.C:
		timedOut = true
	case <-ctx.Done():
	}
	n.waiting.Add(-1)
	n.unregister(w)
	return timedOut, ctx.Err()
}

// unregister removes w everywhere.
func (n *notifier) unregister(w *waiter) {
	n.mu.Lock()
	removeWaiter(n.byUser, w.userID, w)
	for _, r := range w.rooms {
		removeWaiter(n.byRoom, r, w)
	}
	n.mu.Unlock()
}

func (n *notifier) wakeSet(set map[*waiter]struct{}) {
	for w := range set {
		select {
		case w.wake <- struct{}{}:
		default: // already has a wake pending
		}
	}
}

// EventPersisted wakes the waiters an event may concern (it is the
// timeline's observer): its room's, and those of every user whose
// membership it changed, its own target's for a membership event and
// those a state reset moved (an invite reaches someone who is not in the
// room yet; a reset may take a user out of it). It reads no more of the
// event than pushGate keeps of it (heldWake).
func (n *notifier) EventPersisted(p *timeline.Persisted) {
	e := p.Event
	n.mu.Lock()
	defer n.mu.Unlock()
	n.wakeSet(n.byRoom[e.RoomID])
	if e.Type == "m.room.member" && e.StateKey != nil {
		n.wakeSet(n.byUser[*e.StateKey])
	}
	for _, c := range p.Changes {
		if c.Key.Type == "m.room.member" {
			n.wakeSet(n.byUser[c.Key.StateKey])
		}
	}
}

// notifyUser wakes userID's waiters (account data).
func (n *notifier) notifyUser(userID string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.wakeSet(n.byUser[userID])
}

// notifyRoom wakes the waiters of a room (receipts).
func (n *notifier) notifyRoom(roomID string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.wakeSet(n.byRoom[roomID])
}
