// Package server is Hearth's HTTP surface: every Matrix route (routes.go),
// the handlers by spec area, and the few helpers they share (errors.go,
// json.go, auth.go). Handlers read top to bottom: decode, check, store, answer.
package server

import (
	"log/slog"
	"net/http"
	"time"

	"hearth/config"
	"hearth/server/federation"
	"hearth/server/storage"
	"hearth/server/timeline"
)

// Version is the Hearth release, set at build time with -ldflags
// "-X hearth/server.Version=...".
var Version = "0.1.0-dev"

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
	// timeline is the only way events enter rooms; notifier wakes /sync
	// when it persists one.
	timeline  *timeline.Timeline
	reg       registrationState
	notifier  *notifier
	dashboard http.Handler
	// media is the content repository's state (media.go).
	media *mediaRepo
	// fedSender delivers this server's events to other servers, and
	// fedClient makes requests to them (both nil when not federating).
	fedSender *federation.Sender
	fedClient *federation.Client
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
	s.notifier = newNotifier()
	s.timeline = timeline.New(timeline.Deps{Store: d.Store, Key: s.roomsKey(), Now: d.Now, Log: d.Log})
	s.timeline.Observe(s.notifier)
	s.media = newMediaRepo(s)
	if d.Dashboard != nil {
		s.dashboard = d.Dashboard(s)
	}
	return s, s.routes()
}

// Timeline is the server's room pipeline: the federation code receives
// events through it, tests feed it DAGs.
func (s *Server) Timeline() *timeline.Timeline { return s.timeline }

// ServerName is the configured server_name.
func (s *Server) ServerName() string { return s.cfg.ServerName }
