package appliance

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"hearth/server"
)

// requests ties the HTTP servers' requests to the process's shutdown. Every
// request's context descends from ctx, which stop cancels (with
// server.ErrShuttingDown as the cause) when shutdown starts, so parked
// /sync long-polls end at once instead of holding http.Server.Shutdown for
// their timeout. wg counts the handlers still running: the store may be
// closed only once drain has returned.
type requests struct {
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu      sync.Mutex
	drained bool
	wg      sync.WaitGroup
}

func newRequests(parent context.Context) *requests {
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(parent))
	return &requests{ctx: ctx, cancel: cancel}
}

// httpServer serves h with the settings every Hearth listener shares.
func (rq *requests) httpServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           rq.track(h),
		BaseContext:       func(net.Listener) context.Context { return rq.ctx },
		ReadHeaderTimeout: 30 * time.Second,
		// Keep-alive connections idle this long are closed; with
		// ReadTimeout 0 they would otherwise be held forever. WriteTimeout
		// stays 0: /sync long-polls for up to 5 minutes, and a media
		// download to a slow client can take longer still.
		IdleTimeout: 120 * time.Second,
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// track counts h's running calls. After drain it answers 503 without
// calling h: http.Server.Close does not wait for a request it had already
// read, and that one must not reach a closing store.
func (rq *requests) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rq.mu.Lock()
		if rq.drained {
			rq.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"errcode":"M_UNKNOWN","error":"server is shutting down"}`))
			return
		}
		rq.wg.Add(1)
		rq.mu.Unlock()
		defer rq.wg.Done()
		h.ServeHTTP(w, r)
	})
}

// stop cancels every request's context: shutdown has started.
func (rq *requests) stop() { rq.cancel(server.ErrShuttingDown) }

// drain returns once every handler has returned; none starts after.
func (rq *requests) drain() {
	rq.mu.Lock()
	rq.drained = true
	rq.mu.Unlock()
	rq.wg.Wait()
}
