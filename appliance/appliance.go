// Package appliance runs a homeserver process: it opens and migrates the
// store, loads the signing key, binds every listener, serves, and shuts
// down cleanly. Everything that can fail is checked before the first
// request is answered, so a bad start never half-starts.
package appliance

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"hearth/appliance/certs"
	"hearth/appliance/datadir"
	"hearth/config"
	"hearth/server"
	"hearth/server/metrics"
	"hearth/server/oauth"
	"hearth/server/storage"
	"hearth/web"
)

// Options adjust a run beyond the config file.
type Options struct {
	// Listen overrides the address of the first listener serving the client
	// API ("host:port"); tests and containers use it.
	Listen string
	Log    *slog.Logger
	// Ready, if set, receives the bound client address once serving.
	Ready func(addr string)
}

// OpenStore opens the database the config names.
func OpenStore(ctx context.Context, cfg *config.Config, log *slog.Logger) (*storage.Store, error) {
	o := storage.Options{SQLitePath: cfg.Database.Args.Database, Log: log}
	if cfg.IsPostgres() {
		o = storage.Options{Postgres: cfg.PostgresDSN(), MaxConns: cfg.Database.Args.CPMax, Log: log}
	}
	st, err := storage.Open(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("database (%s): %w", cfg.Database.Name, err)
	}
	return st, nil
}

// Run serves until ctx is cancelled.
func Run(ctx context.Context, cfg *config.Config, o Options) error {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	key, err := cfg.LoadSigningKey()
	if err != nil {
		return err
	}
	// One server per data directory; restore checks the same lock.
	lock, err := datadir.Acquire(cfg)
	if err != nil {
		return err
	}
	defer lock.Release()
	st, err := OpenStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	// Closed last: after every handler and background goroutine has
	// returned (the end of Run).
	defer st.Close()
	if err := applyTuning(cfg, st); err != nil {
		return err
	}
	// Certificates: files reloaded on change, or ACME (certs package).
	tlsCerts, err := certs.New(cfg, st.CertCache(), log)
	if err != nil {
		return err
	}
	var dash *web.Dashboard  // dashboard.go
	var auth *oauth.Provider // the OAuth 2.0 API, when cfg.OAuth.Enabled
	m := metrics.New()       // metrics.go
	srv, handler := server.New(server.Deps{Cfg: cfg, Store: st, Key: key, Log: log, Dashboard: dashboardHook(cfg, tlsCerts, &dash),
		Setup: setupHook(cfg, &dash), Metrics: m, OAuth: oauth.Hook(func(p *oauth.Provider) { auth = p })})

	reqs := newRequests(ctx) // requests.go

	// Bind every listener first: a port in use stops the start before any
	// request is served.
	type bound struct {
		ln  net.Listener
		srv *http.Server
		// client: a listener of the client API (with the dashboard unless
		// it has its own); dash: the dashboard's own listener.
		client, dash, tls bool
	}
	var servers []bound
	closeAll := func() {
		for _, b := range servers {
			b.ln.Close()
		}
	}
	var tlsConfig *tls.Config
	if tlsCerts != nil {
		tlsConfig = tlsCerts.TLSConfig()
	}
	overridden := false
	for i, l := range cfg.Listeners {
		if l.Type != "http" {
			continue
		}
		addrs := make([]string, 0, len(l.BindAddresses))
		for _, a := range l.BindAddresses {
			addrs = append(addrs, net.JoinHostPort(a, strconv.Itoa(l.Port)))
		}
		if o.Listen != "" && !overridden && servesClient(l) {
			addrs, overridden = []string{o.Listen}, true
		}
		var firstErr error
		boundHere := 0
		for _, addr := range addrs {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				// "::" and "0.0.0.0" are often listed together; on a
				// dual-stack host the first already holds the port. A
				// listener fails only when none of its addresses binds.
				if firstErr == nil {
					firstErr = fmt.Errorf("listeners[%d]: cannot listen on %s: %w", i, addr, err)
				}
				continue
			}
			if l.TLS {
				ln = tls.NewListener(ln, tlsConfig)
			}
			boundHere++
			h := server.WithXForwarded(withMetricsResource(cfg, l, m, handler), l.XForwarded)
			servers = append(servers, bound{ln: ln, srv: reqs.httpServer(h, log), client: servesClient(l), tls: l.TLS})
		}
		if boundHere == 0 {
			closeAll()
			return firstErr
		}
		if firstErr != nil {
			log.Warn("listener address skipped", "err", firstErr)
		}
	}
	if len(servers) == 0 {
		return errors.New("listeners: no http listener could be bound")
	}
	dashLns, dashHandler, err := dashboardListeners(cfg, srv, tlsCerts, &dash)
	if err != nil {
		closeAll()
		return err
	}
	for _, ln := range dashLns {
		servers = append(servers, bound{ln: ln, srv: reqs.httpServer(dashHandler, log), dash: true})
	}
	metricsLns, metricsHandler, err := metricsListeners(cfg, m, log)
	if err != nil {
		closeAll()
		return err
	}
	for _, ln := range metricsLns {
		servers = append(servers, bound{ln: ln, srv: reqs.httpServer(metricsHandler, log)})
	}
	// ACME's HTTP-01 listener (port 80): challenges, and a redirect to
	// HTTPS for everything else.
	if h := tlsCerts.RedirectHandler(); h != nil {
		lns, err := listenACME(cfg)
		if err != nil {
			closeAll()
			return err
		}
		for _, ln := range lns {
			servers = append(servers, bound{ln: ln, srv: reqs.httpServer(h, log)})
		}
	}
	// Background work (room deletions, the dashboard's sampler) runs on a
	// context of its own, ended only after the last request has been
	// answered.
	bgCtx, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackground()
	var background sync.WaitGroup
	background.Go(func() {
		if err := srv.Run(bgCtx); err != nil {
			log.Error("background work", "err", err)
		}
	})
	if auth != nil {
		background.Go(func() { auth.Run(bgCtx) })
	}
	if dash != nil {
		background.Go(func() { dash.Run(bgCtx) })
	}
	background.Go(func() { tlsCerts.Run(bgCtx) })

	var wg sync.WaitGroup
	errc := make(chan error, len(servers))
	for _, b := range servers {
		wg.Add(1)
		go func(b bound) {
			defer wg.Done()
			log.Info("listening", "addr", b.ln.Addr().String())
			if err := b.srv.Serve(b.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}(b)
	}
	log.Info("hearth started", "version", server.Version, "server_name", cfg.ServerName, "database", st.Engine())
	if w := cfg.KeyServerWarning(); w != "" {
		log.Warn(w)
	}
	for _, b := range servers {
		if b.dash || (b.client && !cfg.DashboardOwnListener()) {
			announceSetup(ctx, cfg, st, setupBase(cfg, b.ln.Addr(), b.tls), log)
			break
		}
	}
	if o.Ready != nil {
		o.Ready(servers[0].ln.Addr().String())
	}
	trimAfterStart() // trim.go

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	// Shut down in order: requests (their contexts are cancelled first,
	// so parked /sync long-polls answer at once), then the background
	// work, then the store (deferred above).
	began := time.Now()
	log.Info("hearth stopping")
	reqs.stop()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stopping sync.WaitGroup
	for _, b := range servers {
		stopping.Go(func() {
			if err := b.srv.Shutdown(shutdownCtx); err != nil {
				// A handler ignored its cancelled context (a download to a
				// slow client, say): close the connections so its reads
				// and writes fail and it returns.
				log.Warn("requests still running at the shutdown deadline; closing their connections", "addr", b.ln.Addr().String(), "err", err)
				b.srv.Close()
			}
		})
	}
	stopping.Wait()
	wg.Wait()
	reqs.drain()
	stopBackground()
	background.Wait()
	log.Info("hearth stopped", "took", time.Since(began))
	return err
}

func servesClient(l config.Listener) bool {
	if len(l.Resources) == 0 {
		return true
	}
	for _, r := range l.Resources {
		for _, n := range r.Names {
			if n == "client" {
				return true
			}
		}
	}
	return false
}

// listenACME binds the HTTP-01 listener on every acme.bind_addresses
// address; it fails only when none binds, naming the port.
func listenACME(cfg *config.Config) ([]net.Listener, error) {
	var lns []net.Listener
	var firstErr error
	for _, a := range cfg.ACME.BindAddresses {
		addr := net.JoinHostPort(a, strconv.Itoa(cfg.ACME.Port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("acme.port: cannot listen on %s for ACME HTTP-01 challenges: %w "+
					"(another web server may hold port %d: stop it, or set acme.port and forward port 80 there)", addr, err, cfg.ACME.Port)
			}
			continue
		}
		lns = append(lns, ln)
	}
	if len(lns) == 0 {
		return nil, firstErr
	}
	return lns, nil
}
