// Package servertest starts a real Hearth server over HTTP for tests, once
// per storage engine (see storagetest.Each).
package servertest

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"hearth/config"
	"hearth/server"
	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// Bundle is a running test server.
type Bundle struct {
	URL    string
	Cfg    *config.Config
	Store  *storage.Store
	Server *server.Server
	HTTP   *httptest.Server

	engine storagetest.Engine
	// deps edits the server's dependencies before it starts (StartWith).
	deps func(*server.Deps)
	// stopRequests cancels the requests' contexts; stopRun ends
	// Server.Run and waits for it to return.
	stopRequests context.CancelCauseFunc
	reqCtx       context.Context
	stopRun      func()

	// FedHTTP serves the federation API over TLS at the server name's
	// address (federated bundles only, see Federation).
	FedHTTP *httptest.Server
	fed     *Federation
	fedLn   net.Listener

	// addr is the client listener's address while stopped.
	addr    string
	stopped bool
	fedMu   sync.Mutex
	fedSeen map[string]int // path → requests (FederationRequests)
	fedWrap func(http.Handler) http.Handler
}

// Option edits the config before the server starts.
type Option func(*config.Config)

// Config returns a valid config for server name "hearth.test" with
// registration open and rate limits off (tests that measure limits turn
// them back on through an Option).
func Config(t testing.TB, dir string) *config.Config {
	t.Helper()
	key, err := config.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, "signing.key")
	if err := os.WriteFile(keyPath, key.Encode(), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{
		ServerName:                            "hearth.test",
		SigningKeyPath:                        keyPath,
		RegistrationSharedSecret:              "test-shared-secret",
		EnableRegistration:                    true,
		EnableRegistrationWithoutVerification: true,
		MediaStorePath:                        filepath.Join(dir, "media"),
		Database:                              config.Database{Name: "sqlite3", Args: config.DatabaseArgs{Database: filepath.Join(dir, "hearth.db")}},
	}
	cfg.Defaults()
	cfg.BcryptRounds = 4 // the minimum: tests hash many passwords
	// No traffic off this machine: no server may be sent to (the
	// remote servers some tests play are never dialled) and no notary is
	// asked for keys. Federation.Start opens this up for loopback.
	cfg.FederationDomainWhitelist = []string{}
	cfg.TrustedKeyServers = []config.TrustedKeyServer{}
	cfg.SuppressKeyServerWarning = true
	// Rate limits off: a zero per_second never limits.
	cfg.RCLogin = config.RCLogin{Address: config.RateLimit{BurstCount: 1}, Account: config.RateLimit{BurstCount: 1}, FailedAttempts: config.RateLimit{BurstCount: 1}}
	cfg.RCRegistration = config.RateLimit{BurstCount: 1}
	return cfg
}

// Start runs a server on engine e, configured by opts.
func Start(t testing.TB, e storagetest.Engine, opts ...Option) *Bundle {
	t.Helper()
	return StartWith(t, e, nil, opts...)
}

// StartWith is Start with the server's dependencies edited by deps (for
// the parts built outside package server, such as the OAuth 2.0 API), on
// every start of the bundle.
func StartWith(t testing.TB, e storagetest.Engine, deps func(*server.Deps), opts ...Option) *Bundle {
	t.Helper()
	dir := t.TempDir()
	cfg := Config(t, dir)
	for _, o := range opts {
		o(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config invalid: %v", err)
	}
	b := &Bundle{Cfg: cfg, engine: e, deps: deps}
	b.open(t, "")
	t.Cleanup(b.cleanup)
	return b
}

// open starts a server on the bundle's config and engine, listening on
// addr ("" for any free port).
func (b *Bundle) open(t testing.TB, addr string) {
	t.Helper()
	st, err := storage.Open(t.Context(), b.engine.Options)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	key, err := b.Cfg.LoadSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("HEARTH_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	d := server.Deps{Cfg: b.Cfg, Store: st, Key: key, Log: log}
	if b.deps != nil {
		b.deps(&d)
	}
	srv, h := server.New(d)
	hs := httptest.NewUnstartedServer(h)
	// As the appliance: requests' contexts end, with server.ErrShuttingDown,
	// when shutdown starts, so parked /sync long-polls do not hold it.
	reqCtx, stopRequests := context.WithCancelCause(context.Background())
	hs.Config.BaseContext = func(net.Listener) context.Context { return reqCtx }
	if addr != "" {
		// Listen where the previous server did, so clients keep their URL.
		var l net.Listener
		for i := 0; ; i++ {
			if l, err = net.Listen("tcp", addr); err == nil || i == 50 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			st.Close()
			t.Fatalf("listen again on %s: %v", addr, err)
		}
		hs.Listener.Close()
		hs.Listener = l
	}
	hs.Start()
	if b.fed != nil {
		b.FedHTTP = b.fed.serve(t, b.countFederation(h), reqCtx, b.Cfg.ServerName, b.fedLn)
		b.fedLn = nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(ctx) }()
	b.stopRun = func() {
		cancel()
		<-ran // Run fails only when called twice
	}
	b.stopRequests, b.reqCtx = stopRequests, reqCtx
	b.URL, b.Store, b.Server, b.HTTP = hs.URL, st, srv, hs
}

// close stops the server in the appliance's order: requests first (their
// contexts cancelled, then every handler waited for), then the background
// work, and the store last.
func (b *Bundle) close() {
	b.stopRequests(server.ErrShuttingDown)
	b.HTTP.Close()
	if b.FedHTTP != nil {
		b.FedHTTP.Close()
	}
	b.stopRun()
	b.Store.Close()
}

// cleanup closes the server at the end of the test, unless it is stopped.
func (b *Bundle) cleanup() {
	if !b.stopped {
		b.close()
	}
}

// Restart stops the server and its store, then starts a new server on the
// same database and address: what survives is only what was stored.
func (b *Bundle) Restart(t testing.TB) {
	t.Helper()
	b.Stop(t)
	b.Start(t)
}

// Stop stops the server and its store, as a shutdown does; Start runs it
// again on the same database and addresses.
func (b *Bundle) Stop(t testing.TB) {
	t.Helper()
	b.addr = b.HTTP.Listener.Addr().String()
	b.close()
	b.stopped = true
}

// Start runs a server stopped with Stop again.
func (b *Bundle) Start(t testing.TB) {
	t.Helper()
	if !b.stopped {
		t.Fatal("servertest: Start of a server that is running")
	}
	b.stopped = false
	b.open(t, b.addr)
}
