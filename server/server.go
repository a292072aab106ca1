// Package server is Hearth's HTTP surface: every Matrix route (routes.go),
// the handlers by spec area, and the few helpers they share (errors.go,
// json.go, auth.go). Handlers read top to bottom: decode, check, store, answer.
package server

import (
	"context"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"hearth/config"
	"hearth/server/federation"
	"hearth/server/mailer"
	"hearth/server/metrics"
	"hearth/server/push"
	"hearth/server/rendezvous"
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
	// Setup, when set, builds the first-run page (web/setup.go) to serve at
	// /_hearth/setup; it is called after Dashboard.
	Setup func(*Server) http.Handler
	// OAuth, when set and the config's oauth section enables it, builds
	// the OAuth 2.0 authorisation server (package oauth, which imports
	// this one), mounted at OAuthPath (oauth_accounts.go).
	OAuth func(*Server) OAuthProvider
	// Keys is the key ring: other servers' signing keys, for X-Matrix
	// requests, received events and the notary endpoints. nil: one built
	// from Key, Store, Now and OldKeys, with a plain http.Client that
	// cannot reach other servers (until the federation transport is
	// wired in) and no trusted key servers.
	Keys *federation.KeyRing
	// OldKeys are the keys this server used to sign with (config
	// old_signing_keys), published in old_verify_keys. Only used to build
	// the key ring when Keys is nil; a given key ring carries its own.
	OldKeys []federation.OldKey
	// Metrics are the collectors to update; nil: a set of the server's own.
	// Give a fresh one to each server: they register on it.
	Metrics *metrics.Metrics
	// PushMaxStaged bounds the notification rows the push evaluator keeps
	// staged while writing them fails (push.Options.MaxStaged); 0: its
	// default.
	PushMaxStaged int
	// PushFlushEvery is how long the push evaluator keeps rows staged at
	// most (push.Options.FlushEvery); 0: its default.
	PushFlushEvery time.Duration
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
	timeline *timeline.Timeline
	reg      registrationState
	notifier *notifier
	// initialPerRoom builds initial syncs room by room instead of from
	// batched reads (sync_initial.go); tests compare the two.
	initialPerRoom atomic.Bool
	// initialChunk, when set, replaces initialChunk (sync_initial.go):
	// tests build initial syncs a room or two at a time.
	initialChunk atomic.Int32
	// shared is what the /sync answers of one wake-up share
	// (sync_shared.go).
	shared *syncShared
	// pages bounds the /messages pages built at once (client_history.go).
	pages places
	// sliding holds the sliding sync connections, roomFacts what list
	// filters learn of rooms (client_slidingsync.go).
	sliding   slidingConns
	roomFacts roomFacts
	dashboard http.Handler
	setup     http.Handler
	// oauth is the OAuth 2.0 authorisation server (nil: not served), and
	// xsReset the cross-signing resets users approved on its account page
	// (oauth_accounts.go).
	oauth   OAuthProvider
	xsReset crossSigningResets
	// rendezvous holds MSC4108's QR-code login sessions (client_rendezvous.go).
	rendezvous *rendezvous.Store
	// media is the content repository's state (media.go).
	media *mediaRepo
	// keys finds other servers' signing keys and publishes ours
	// (keys_server.go, fedauth.go).
	keys *federation.KeyRing
	// fedSender delivers this server's events to other servers, and
	// fedClient makes requests to them (both nil when not federating).
	fedSender    *federation.Sender
	fedClient    *federation.Client
	fedTransport *federation.Transport
	fedLimits    originLimits
	// resyncs are the remote device lists being fetched again
	// (federation_keys.go).
	resyncs resyncs
	// spaces caches other servers' descriptions of rooms (client_spaces.go).
	spaces spaceCache
	// upgrades are the rooms being upgraded (client_upgrade.go).
	upgrades upgradeLocks
	// push evaluates push rules on every event and pushers delivers the
	// notifications to push gateways (push.go); pushGate holds /sync's
	// wakes until an event's notifications are recorded.
	push     *push.Evaluator
	pushers  *push.Pool
	pushGate *pushGate
	// presenceSent is when each local user's presence last went to other
	// servers (presence.go).
	presenceSent presenceSent
	// presenceSwept is when (Unix ns, by Deps.Now) presence was last
	// swept for users gone quiet (presence.go).
	presenceSwept atomic.Int64
	// delayed is the delayed events' scheduler (delayed_events.go).
	delayed *delayedState
	// bg is the background work Run owns (run.go).
	bg background
	// metrics are the Prometheus collectors (metrics.go).
	metrics *metrics.Metrics
	// mailer sends the validation emails (nil without the email section,
	// or when mailerErr says why it could not be built).
	mailer    *mailer.Mailer
	mailerErr error
	// mutualBatch overrides the mutual rooms batch size (tests; 0: the
	// default, client_mutual_rooms.go).
	mutualBatch int
}

// New builds the server and its routes. Call Run for its background work.
func New(d Deps) (*Server, http.Handler) {
	if d.Log == nil {
		d.Log = slog.Default()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Metrics == nil {
		d.Metrics = metrics.New()
	}
	s := &Server{cfg: d.Cfg, store: d.Store, key: d.Key, log: d.Log, now: d.Now, started: d.Now(), metrics: d.Metrics}
	s.limits = newLimiters(d.Cfg, d.Now)
	s.nonces = newNonceStore(d.Now)
	s.rendezvous = rendezvous.New(rendezvous.DefaultCapacity, rendezvous.DefaultTTL, d.Now)
	s.touches = newTouchCache()
	s.notifier = newNotifier()
	s.shared = newSyncShared(d.Store.Caches())
	s.pages = newPlaces(buildPlaces())
	fedHTTP := s.federationHTTP()
	s.keys = d.Keys
	if s.keys == nil {
		s.keys = federation.NewKeyRing(federation.KeyRingOptions{Key: s.roomsKey(), OldKeys: d.OldKeys,
			Store: d.Store, Client: fedHTTP, TrustedKeyServers: trustedKeyServers(d.Cfg), Now: d.Now, Log: d.Log})
	}
	// Key lookups for received events are bounded by the key ring's own
	// fetch timeout, not by the request that delivered the events.
	s.timeline = timeline.New(timeline.Deps{Store: d.Store, Key: s.roomsKey(), Keys: s.keys.Lookup(context.Background()),
		Now: d.Now, Log: d.Log})
	s.startPush(d.PushMaxStaged, d.PushFlushEvery)
	s.startDelayed()
	if fedHTTP != nil {
		s.startFederation(fedHTTP)
	}
	s.media = newMediaRepo(s)
	if d.Cfg.Email != nil {
		s.mailer, s.mailerErr = mailer.New(*d.Cfg.Email, d.Cfg.ServerName)
		if s.mailerErr != nil {
			d.Log.Error("email: validation emails cannot be sent", "err", s.mailerErr)
		}
	}
	s.registerMetrics()
	if d.Dashboard != nil {
		s.dashboard = d.Dashboard(s)
	}
	if d.Setup != nil {
		s.setup = d.Setup(s)
	}
	if d.OAuth != nil && d.Cfg.OAuth.Enabled {
		s.oauth = d.OAuth(s)
	}
	return s, s.routes()
}

// Timeline is the server's room pipeline: the federation code receives
// events through it, tests feed it DAGs.
func (s *Server) Timeline() *timeline.Timeline { return s.timeline }

// KeyRing is the server's key ring: the federation code verifies other
// servers' signatures with it.
func (s *Server) KeyRing() *federation.KeyRing { return s.keys }

// ServerName is the configured server_name.
func (s *Server) ServerName() string { return s.cfg.ServerName }
