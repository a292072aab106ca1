package server

import (
	"context"
	"sync"
	"time"

	"hearth/server/matrix"
)

// Inbound federation requests are limited per origin server, as Synapse's
// rc_federation does by default: at most fedConcurrent at a time, the rest
// wait their turn, and beyond fedQueued waiting the origin is told to slow
// down (429 M_LIMIT_EXCEEDED). One busy or hostile server cannot take every
// worker of this one.
const (
	fedConcurrent = 3
	fedQueued     = 50
)

// originLimits holds one semaphore per origin with requests in flight.
type originLimits struct {
	mu     sync.Mutex
	byName map[string]*originSlot
}

type originSlot struct {
	sem     chan struct{}
	pending int // in flight and waiting
}

// acquire waits for a slot of origin's; the returned func frees it.
func (l *originLimits) acquire(ctx context.Context, origin string) (func(), error) {
	l.mu.Lock()
	if l.byName == nil {
		l.byName = map[string]*originSlot{}
	}
	slot := l.byName[origin]
	if slot == nil {
		slot = &originSlot{sem: make(chan struct{}, fedConcurrent)}
		l.byName[origin] = slot
	}
	if slot.pending >= fedConcurrent+fedQueued {
		l.mu.Unlock()
		return nil, matrix.LimitExceeded(time.Second)
	}
	slot.pending++
	l.mu.Unlock()
	release := func() {
		l.mu.Lock()
		slot.pending--
		if slot.pending == 0 {
			delete(l.byName, origin)
		}
		l.mu.Unlock()
	}
	select {
	case slot.sem <- struct{}{}:
		return func() { <-slot.sem; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}
