package server_test

import (
	"sync"
	"time"
)

// movableClock is a server clock (server.Deps.Now) the test can move
// forward: the real time, plus how far it was moved.
type movableClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *movableClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}
func (c *movableClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off += d
}
