package appliance

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"

	"hearth/config"
	"hearth/server/metrics"
)

// MetricsPath is where an http listener with the metrics resource serves
// the metrics (Synapse's path, which scrape configs written for Synapse
// use); a listener of type metrics also answers at /metrics.
const MetricsPath = "/_synapse/metrics"

// withMetricsResource adds MetricsPath to an http listener that lists the
// metrics resource, when enable_metrics is on.
func withMetricsResource(cfg *config.Config, l config.Listener, m *metrics.Metrics, h http.Handler) http.Handler {
	if !cfg.EnableMetrics || !hasResource(l, "metrics") {
		return h
	}
	mh := m.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == MetricsPath {
			mh.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// metricsListeners binds the listeners of type metrics. As in Synapse, they
// stay closed (with a warning) unless enable_metrics is on.
func metricsListeners(cfg *config.Config, m *metrics.Metrics, log *slog.Logger) ([]net.Listener, http.Handler, error) {
	var lns []net.Listener
	for i, l := range cfg.Listeners {
		if l.Type != "metrics" {
			continue
		}
		if !cfg.EnableMetrics {
			log.Warn("a metrics listener is configured, but enable_metrics is not true: not starting it", "listener", i)
			continue
		}
		boundHere := 0
		var firstErr error
		for _, a := range l.BindAddresses {
			addr := net.JoinHostPort(a, strconv.Itoa(l.Port))
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("listeners[%d]: cannot listen on %s: %w", i, addr, err)
				}
				continue
			}
			boundHere++
			lns = append(lns, ln)
		}
		if boundHere == 0 {
			for _, ln := range lns {
				ln.Close()
			}
			return nil, nil, firstErr
		}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.Handle("GET "+MetricsPath, m.Handler())
	return lns, mux, nil
}

func hasResource(l config.Listener, name string) bool {
	for _, r := range l.Resources {
		if slices.Contains(r.Names, name) {
			return true
		}
	}
	return false
}
