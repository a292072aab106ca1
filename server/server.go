// Package server is Hearth's HTTP surface: every Matrix route (routes.go),
// the handlers by spec area, and the few helpers they share (errors.go,
// json.go, auth.go). Handlers read top to bottom: decode, check, store, answer.
package server

import (
	"log/slog"
	"net/http"
	"time"

	"hearth/config"
	"hearth/server/storage"
)

// Deps is everything the server needs, passed explicitly (no globals).
type Deps struct {
	Cfg   *config.Config
	Store *storage.Store
	Key   config.SigningKey
	Log   *slog.Logger
	// Now is the clock; tests may replace it.
	Now func() time.Time
	// Dashboard, when set, builds the admin dashboard (package web, which
	// imports this one) to mount at /_hearth/admin on this handler.
	Dashboard func(*Server) http.Handler
}

// Server holds the dependencies and the per-process state handlers share.
type Server struct {
	cfg     *config.Config
	store   *storage.Store
	key     config.SigningKey
	log     *slog.Logger
	now     func() time.Time
	started time.Time
	limits  *limiters
	nonces  *nonceStore
	touches *touchCache
	// roomStates holds each room's event builder between events and
	// serialises writers per room; notifier wakes /sync.
	roomStates *roomStates
	reg        registrationState
	notifier   *notifier
	dashboard  http.Handler
	// media is the content repository's state (media.go).
	media *mediaRepo
	// bg is the background work Run owns (run.go).
	bg background
}

// New builds the server and its routes. Call Run for its background work.
func New(d Deps) (*Server, http.Handler) {
	if d.Log == nil {
		d.Log = slog.Default()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	s := &Server{cfg: d.Cfg, store: d.Store, key: d.Key, log: d.Log, now: d.Now, started: d.Now()}
	s.limits = newLimiters(d.Cfg, d.Now)
	s.nonces = newNonceStore(d.Now)
	s.touches = newTouchCache()
	s.roomStates = newRoomStates(d.Store.Caches())
	s.notifier = newNotifier()
	s.media = newMediaRepo(s)
	if d.Dashboard != nil {
		s.dashboard = d.Dashboard(s)
	}
	return s, s.routes()
}

// ServerName is the configured server_name.
func (s *Server) ServerName() string { return s.cfg.ServerName }
