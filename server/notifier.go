package server

import (
	"sync"
	"sync/atomic"
)

// notifier is /sync's per-process state. Above all it wakes long-polling
// /sync requests: every change /sync can report (an event, account data, a
// receipt) calls notify, and each waiter then re-reads the stores for what
// concerns it. A waiter takes waitCh before reading, so a change committed
// after its read always wakes it. One broadcast channel serves any number
// of waiters: notify closes it (O(1), whoever is waiting) and installs a
// fresh one, so hundreds of waiters cost one channel, not one each, and a
// waiter that finds nothing for it goes back to sleep on the new channel.
//
// It also keeps the lazy-loading record of which member events each device
// has been sent (client_sync.go), the only other thing /sync remembers
// between requests.
type notifier struct {
	mu   sync.Mutex
	wake chan struct{}
	// waiting counts parked /sync requests (a gauge; tests use it to know
	// a long poll is asleep before they cause the event that wakes it).
	waiting atomic.Int64

	lazy lazyCache
}

func newNotifier() *notifier { return &notifier{wake: make(chan struct{})} }

// notify wakes every current waiter. The argument (the event stream
// position of the change, 0 for aux changes) is informational: waiters
// read the stores themselves.
func (n *notifier) notify(int64) {
	n.mu.Lock()
	close(n.wake)
	n.wake = make(chan struct{})
	n.mu.Unlock()
}

// waitCh returns a channel closed at the next notify. Take it before
// checking for news, so a change between the check and the wait is not lost.
func (n *notifier) waitCh() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.wake
}
