package appliance

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"

	"hearth/appliance/certs"
	"hearth/config"
	"hearth/server"
	"hearth/server/cache"
	"hearth/server/storage"
	"hearth/web"
)

// applyTuning sets the cache factors, the Go memory limit and the GC
// target (caches.*, memory.*). Left at 0, GOMEMLIMIT and GOGC in the
// environment still work, and without GOMEMLIMIT the automatic memory
// limit is in force (cache.ApplyRuntime).
func applyTuning(cfg *config.Config, st *storage.Store) error {
	reg := st.Caches()
	if err := reg.SetGlobalFactor(cfg.Caches.GlobalFactor); err != nil {
		return fmt.Errorf("caches.global_factor: %w", err)
	}
	for name, f := range cfg.Caches.PerCacheFactors {
		if err := reg.SetFactor(name, f); err != nil {
			return fmt.Errorf("caches.per_cache_factors.%s: %w", name, err)
		}
	}
	cache.ApplyRuntime(int64(cfg.Memory.Limit), cfg.Memory.GCPercent)
	return nil
}

// dashboardHook mounts the dashboard on the client listeners unless it has
// a port of its own; it records the dashboard in *dash either way.
func dashboardHook(cfg *config.Config, tlsCerts *certs.Manager, dash **web.Dashboard) func(*server.Server) http.Handler {
	if !cfg.DashboardEnabled() || cfg.DashboardOwnListener() {
		return nil
	}
	return func(s *server.Server) http.Handler {
		*dash = web.New(web.Deps{Server: s, Certs: tlsCerts})
		return (*dash).Handler()
	}
}

// dashboardListeners binds the dashboard's own listener (admin_dashboard.port)
// and returns its listeners and handler; nothing when it shares the client
// listeners.
func dashboardListeners(cfg *config.Config, srv *server.Server, tlsCerts *certs.Manager, dash **web.Dashboard) ([]net.Listener, http.Handler, error) {
	if !cfg.DashboardOwnListener() {
		return nil, nil, nil
	}
	*dash = web.New(web.Deps{Server: srv, Certs: tlsCerts})
	h := server.WithXForwarded((*dash).Standalone(), cfg.AdminDashboard.XForwarded)
	var lns []net.Listener
	var firstErr error
	for _, a := range cfg.AdminDashboard.BindAddresses {
		addr := net.JoinHostPort(a, strconv.Itoa(cfg.AdminDashboard.Port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("admin_dashboard: cannot listen on %s: %w", addr, err)
			}
			continue
		}
		lns = append(lns, ln)
	}
	if len(lns) == 0 {
		return nil, nil, firstErr
	}
	return lns, h, nil
}

// setupHook serves the first-run page on the client listeners beside the
// dashboard (dashboardHook has built it by the time this runs).
func setupHook(cfg *config.Config, dash **web.Dashboard) func(*server.Server) http.Handler {
	if !cfg.DashboardEnabled() || cfg.DashboardOwnListener() {
		return nil
	}
	return func(*server.Server) http.Handler { return (*dash).SetupHandler() }
}

// announceSetup prints the one-time setup link when the server has no admin
// yet (web/setup.go). base is the address the dashboard answers on.
func announceSetup(ctx context.Context, cfg *config.Config, st *storage.Store, base string, log *slog.Logger) {
	if !cfg.DashboardEnabled() {
		return
	}
	tok, err := web.PrepareSetup(ctx, cfg, st)
	if err != nil {
		log.Error("first-run setup unavailable", "err", err)
		return
	}
	if tok == "" {
		return
	}
	link := strings.TrimSuffix(base, "/") + web.SetupPath + "?token=" + tok
	log.Warn("this server has no admin yet: open the setup link to create the first one (it works once)", "url", link,
		"token_file", web.SetupTokenPath(cfg))
}

// setupBase is the URL the setup link starts with: public_baseurl when the
// dashboard shares the client listeners, else the listener's own address.
func setupBase(cfg *config.Config, addr net.Addr, tls bool) string {
	if cfg.PublicBaseURL != "" && !cfg.DashboardOwnListener() {
		return cfg.PublicBaseURL
	}
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String()
	}
	if ip := net.ParseIP(host); ip != nil && (ip.IsUnspecified() || ip.IsLoopback()) {
		host = "localhost"
	}
	scheme := "http"
	if tls {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}
