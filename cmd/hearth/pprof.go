package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
)

// pprofEnv names the environment variable that turns on Go's profiler for
// developers measuring the server (docs/load.md): a loopback HOST:PORT on
// which /debug/pprof/ is served. It is not a config key on purpose: the
// profiler exposes memory contents and is never for production.
const pprofEnv = "HEARTH_PPROF_LISTEN"

// The heap profile can only be read through that profiler. Without it, the
// runtime's sampling of allocations (one every 512 KiB by default) is pure
// cost: a stack walk per sample, and the sampled call stacks kept for the
// life of the process (~2 MB, runtime.MemStats.BuckHashSys, and the pages
// of the function tables the walks touch). It is turned off before main
// runs.
var _ = func() int {
	if os.Getenv(pprofEnv) == "" {
		runtime.MemProfileRate = 0
	}
	return 0
}()

func servePprof(addr string, log *slog.Logger) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s=%q: %w", pprofEnv, addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s=%q: the profiler listens on a loopback address only", pprofEnv, addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: %w", pprofEnv, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	log.Warn("profiler listening; never do this in production", "env", pprofEnv, "addr", l.Addr().String())
	go http.Serve(l, mux) //nolint:errcheck // lives as long as the process
	return nil
}
