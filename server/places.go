package server

import (
	"context"
	"runtime"
)

// places bounds how many requests do a kind of work at once: the rest
// wait for a place. Work that builds a large answer in memory takes one, so
// that memory is bounded by the places times the answer's size, not by the
// number of clients asking together; on a machine of few cores more of
// them at once would not finish sooner.
type places chan struct{}

func newPlaces(n int) places { return make(places, n) }

// buildPlaces is how many large answers (incremental /sync, /messages
// pages) are built at once: a few per core.
func buildPlaces() int { return max(8, 4*runtime.GOMAXPROCS(0)) }

// take waits for a place, or for ctx to end. The returned func gives the
// place back; calling it again does nothing.
func (p places) take(ctx context.Context) (func(), error) {
	select {
	case p <- struct{}{}:
	case <-ctx.Done():
		return func() {}, context.Cause(ctx)
	}
	held := true
	return func() {
		if held {
			held = false
			<-p
		}
	}, nil
}
