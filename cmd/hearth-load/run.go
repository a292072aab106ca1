package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
)

// run measures the phases o asks for, in order, and returns what it
// measured, also when a later phase fails.
func run(ctx context.Context, o options, log io.Writer) ([]Result, error) {
	phases := strings.Split(o.Phases, ",")
	for _, p := range phases {
		if !slices.Contains(allPhases, p) {
			return nil, fmt.Errorf("unknown phase %q (phases: %s)", p, strings.Join(allPhases, ","))
		}
	}
	t := &target{log: log, pid: o.PID}
	var srv *server // nil: the server at o.URL
	if o.URL == "" {
		var err error
		if srv, err = startServer(ctx, o.Hearth, o.Postgres, log); err != nil {
			return nil, err
		}
		defer srv.stop()
		t.client, t.pid = newClient(srv.url, srv.secret), srv.pid()
		engine := "SQLite"
		if o.Postgres != "" {
			engine = "PostgreSQL"
		}
		fmt.Fprintf(log, "hearth started at %s on %s, pid %d\n", srv.url, engine, t.pid)
		// Idle means idle: the server's first second (it trims what
		// start-up alone used once it serves) is not its idle state.
		time.Sleep(idleSettle)
		if rss, _, err := memory(t.pid); err == nil {
			anon, file, _ := rssParts(t.pid)
			t.results = append(t.results, Result{Phase: "idle", Params: fmt.Sprintf("%v after start, ", idleSettle) + engine,
				Metrics: []Metric{{"server RSS", rss, "MiB"}, {"of it anonymous (heap, stacks, SQLite)", anon, "MiB"},
					{"of it file-backed (the binary's pages)", file, "MiB"}}})
		}
	} else {
		t.client = newClient(strings.TrimRight(o.URL, "/"), o.SharedSecret)
	}
	// The peak before the crowd: issue 12 holds the mxbench-style phases
	// to 64 MiB and the 200-client crowd to 150 MiB, so the crowd runs
	// last by default and the end row gives both peaks.
	hwmBefore := 0.0 // 0: the crowd did not run after other phases
	for i, p := range phases {
		fmt.Fprintf(log, "phase %s\n", p)
		if p == "crowd" && i > 0 && t.pid != 0 && hwmBefore == 0 {
			if _, hwm, err := memory(t.pid); err == nil {
				hwmBefore = hwm
			}
		}
		var err error
		switch p {
		case "baseline":
			err = t.baselinePhase(ctx, o)
		case "send":
			err = t.sendPhase(ctx, o)
		case "fanout":
			err = t.fanoutPhase(ctx, o)
		case "crowd":
			err = t.crowdPhase(ctx, o)
		case "initsync":
			err = t.initSyncPhase(ctx, o)
		case "messages":
			err = t.messagesPhase(ctx, o)
		}
		if err != nil {
			if srv != nil {
				err = srv.failed(err)
			}
			return t.results, fmt.Errorf("phase %s: %w", p, err)
		}
	}
	if t.pid != 0 {
		if rss, hwm, err := memory(t.pid); err == nil {
			cpu, _ := cpuSeconds(t.pid)
			ms := []Metric{{"server RSS", rss, "MiB"}, {"server VmHWM (peak of the run)", hwm, "MiB"}}
			if hwmBefore > 0 {
				ms = append(ms, Metric{"server VmHWM before the crowd", hwmBefore, "MiB"})
			}
			ms = append(ms, Metric{"server CPU since start", cpu, "s"})
			t.results = append(t.results, Result{Phase: "end", Params: "after every phase", Metrics: ms})
		}
	}
	return t.results, nil
}

// target is the server under load and what was measured on it so far.
type target struct {
	client  *client
	pid     int // 0: memory and CPU are not sampled
	log     io.Writer
	results []Result
}

// users registers n users named <name><i>, a few at a time.
func (t *target) users(ctx context.Context, name string, n int) ([]*user, error) {
	us := make([]*user, n)
	err := parallel(ctx, n, 8, func(ctx context.Context, i int) error {
		u, err := t.client.register(ctx, fmt.Sprintf("%s%d", name, i))
		us[i] = u
		return err
	})
	return us, err
}

// sharedRoom makes a public room created by us[0] and joined by the rest.
func (t *target) sharedRoom(ctx context.Context, us []*user) (string, error) {
	room, err := t.client.createRoom(ctx, us[0], "public_chat", "load")
	if err != nil {
		return "", err
	}
	err = parallel(ctx, len(us)-1, 8, func(ctx context.Context, i int) error {
		return t.client.join(ctx, us[i+1], room)
	})
	return room, err
}

// parallel runs fn for 0..n-1, at most conc at once, and returns the
// first error.
func parallel(ctx context.Context, n, conc int, fn func(ctx context.Context, i int) error) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(conc)
	for i := range n {
		g.Go(func() error { return fn(ctx, i) })
	}
	return g.Wait()
}
