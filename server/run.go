package server

import (
	"context"
	"errors"
	"sync"
)

// Background work: goroutines that outlive the request, or the start-up,
// that began them (room deletions, admin_room_delete.go). Run owns them. It
// hands each one a context that ends with Run's and returns only once all
// have stopped, so none of them touches the store after its owner closes it.

// ErrShuttingDown is the cause with which the process cancels every
// request's context when shutdown starts (context.WithCancelCause under the
// http.Server's BaseContext). Parked /sync long-polls then return at once,
// and writeError answers 503 instead of taking it for a client that went
// away.
var ErrShuttingDown = errors.New("server is shutting down")

// background is the state Run and goBackground share.
type background struct {
	mu sync.Mutex
	// ctx is Run's context while Run runs, nil before and after: work
	// offered when it is nil is not started.
	ctx     context.Context
	started bool
	wg      sync.WaitGroup
	// deleting holds the IDs of the room deletions this process is
	// carrying out, so a deletion started by the admin API and the same one
	// found unfinished by resumeRoomDeletes never run at once.
	deleting map[string]bool
}

// Run starts the server's background work (resuming the room deletions and
// deactivations a previous process, or this one before Run, left
// unfinished) and keeps starting the work handlers ask for until ctx ends.
// It then cancels the work's context and returns once every goroutine has
// stopped; work cut short is resumable and is resumed by the next Run. Stop serving requests
// before ending ctx, and close the store only after Run has returned.
//
// Run returns nil when ctx ends, and an error only when called twice.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	b := &s.bg
	b.mu.Lock()
	if b.started {
		b.mu.Unlock()
		return errors.New("server: Run called twice")
	}
	b.started, b.ctx = true, ctx
	b.mu.Unlock()

	s.goBackground(s.resumeRoomDeletes)
	s.goBackground(s.timeline.RunTxnFilter)
	s.goBackground(s.runPush)
	s.goBackground(s.runDelayed)
	s.goBackground(s.resumeDeactivations)
	if s.fedSender != nil {
		s.goBackground(func(ctx context.Context) {
			if err := s.fedSender.Run(ctx); err != nil {
				s.log.Error("federation sender stopped", "err", err)
			}
		})
	}
	<-ctx.Done()

	b.mu.Lock()
	b.ctx = nil
	b.mu.Unlock()
	b.wg.Wait()
	return nil
}

// goBackground runs f in a goroutine that Run waits for, with Run's
// context. When Run is not running it starts nothing and reports false; the
// caller's work must then be recorded where the next Run finds it.
func (s *Server) goBackground(f func(ctx context.Context)) bool {
	b := &s.bg
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ctx == nil {
		return false
	}
	b.wg.Add(1)
	go func(ctx context.Context) {
		defer b.wg.Done()
		f(ctx)
	}(b.ctx)
	return true
}

// claimDelete marks a room deletion as being carried out by this process;
// false: it already is.
func (b *background) claimDelete(deleteID string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.deleting[deleteID] {
		return false
	}
	if b.deleting == nil {
		b.deleting = map[string]bool{}
	}
	b.deleting[deleteID] = true
	return true
}

func (b *background) releaseDelete(deleteID string) {
	b.mu.Lock()
	delete(b.deleting, deleteID)
	b.mu.Unlock()
}
