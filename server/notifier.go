package server

import "sync"

// notifier wakes long-polling /sync requests. Every change that /sync can
// report (an event, account data, a receipt, typing) calls notify; each
// waiter then re-checks whether anything concerns it. One broadcast channel
// is cheap: a change wakes the waiters within microseconds, and a waiter
// that finds nothing for it goes back to sleep.
type notifier struct {
	mu   sync.Mutex
	wake chan struct{}
}

func newNotifier() *notifier { return &notifier{wake: make(chan struct{})} }

// notify wakes every current waiter.
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
