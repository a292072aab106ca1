// Command hearth-load measures a Hearth homeserver under load: send
// throughput and latency, /sync fan-out, the 200-client scenario, initial
// sync and /messages pagination, with the server's memory and CPU. It
// starts its own server (built from this repo, on loopback, on a fresh
// database) unless -url names a running one. docs/load.md describes each
// phase and how to reproduce the README's figures.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"
)

// options are the flags; every phase is bounded by a count and a time.
type options struct {
	URL          string // a running server; empty: start one
	SharedSecret string // registration_shared_secret of the -url server; empty: open registration
	PID          int    // the -url server's process, to sample its memory and CPU
	Hearth       string // hearth binary to start; empty: go build ./cmd/hearth
	Postgres     string // DSN: start the server on a fresh schema in this database
	Phases       string // comma-separated subset of allPhases
	JSON         bool

	Senders  []int         // send: one run per count, into one room and into as many rooms
	SendTime time.Duration // send: length of each run
	SendMax  int           // send: at most this many messages per run

	Receivers   []int         // fanout: one run per count
	FanoutRate  float64       // fanout: messages per second from one sender
	FanoutTime  time.Duration // fanout: sending time of each run
	SyncTimeout time.Duration // long-poll timeout of every /sync
	Presence    bool          // fanout, crowd: the long polls ask for presence too
	Receipts    bool          // fanout, crowd: receivers mark what they receive as read

	Clients  int           // crowd: clients, all in one room
	Interval time.Duration // crowd: each client sends once per interval
	Duration time.Duration // crowd: sending time
	Grace    time.Duration // fanout, crowd: how long receivers may take to catch up after the last send

	InitRooms    []int // initsync: room counts, measured in turn on one user
	InitMessages int   // initsync: messages per room
	InitRuns     int   // initsync: syncs measured per room count

	PageMessages int // messages: messages in the room
	PageLimit    int // messages: events per /messages request
	PageRuns     int // messages: full back-paginations
}

var allPhases = []string{"baseline", "send", "fanout", "initsync", "messages", "crowd"}

func main() {
	if dir := os.Getenv(baselineEnv); dir != "" {
		if err := serveBaseline(dir); err != nil {
			fmt.Fprintln(os.Stderr, "hearth-load baseline:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	var senders, receivers, initRooms string
	flag.StringVar(&o.URL, "url", "", "measure the server at this base URL instead of starting one")
	flag.StringVar(&o.SharedSecret, "shared-secret", "", "with -url: the server's registration_shared_secret (default: open registration)")
	flag.IntVar(&o.PID, "pid", 0, "with -url: the server's process ID, to sample its RSS and CPU from /proc")
	flag.StringVar(&o.Hearth, "hearth", "", "hearth binary to start (default: build ./cmd/hearth)")
	flag.StringVar(&o.Postgres, "postgres", "", "start the server on PostgreSQL at this DSN, in a fresh schema (default: SQLite)")
	flag.StringVar(&o.Phases, "phases", strings.Join(allPhases, ","), "phases to run, in this order")
	flag.BoolVar(&o.JSON, "json", false, "print the results as JSON instead of a table")
	flag.StringVar(&senders, "senders", "1,10,50", "send: sender counts, one run each (into one room, then into as many rooms)")
	flag.DurationVar(&o.SendTime, "send-time", 10*time.Second, "send: length of each run")
	flag.IntVar(&o.SendMax, "send-max", 100000, "send: at most this many messages per run")
	flag.StringVar(&receivers, "receivers", "20,100", "fanout: receiver counts, one run each")
	flag.Float64Var(&o.FanoutRate, "fanout-rate", 5, "fanout: messages per second")
	flag.DurationVar(&o.FanoutTime, "fanout-time", 20*time.Second, "fanout: sending time of each run")
	flag.BoolVar(&o.Presence, "presence", false, "fanout, crowd: the long polls ask for presence too, as Element does unless its config turns it off")
	flag.BoolVar(&o.Receipts, "receipts", false, "fanout, crowd: every receiver marks what it receives as read (read_markers, at most every 500 ms), as Element does for the room in view")
	flag.DurationVar(&o.SyncTimeout, "sync-timeout", 30*time.Second, "long-poll timeout of each /sync")
	flag.IntVar(&o.Clients, "clients", 200, "crowd: clients in one room, each long-polling /sync and sending")
	flag.DurationVar(&o.Interval, "interval", 2*time.Second, "crowd: each client sends once per interval")
	flag.DurationVar(&o.Duration, "duration", 60*time.Second, "crowd: sending time (the issue's run: 3m)")
	flag.DurationVar(&o.Grace, "grace", 30*time.Second, "fanout, crowd: time allowed to catch up after the last send")
	flag.StringVar(&initRooms, "init-rooms", "50,200", "initsync: room counts of the user, measured in turn")
	flag.IntVar(&o.InitMessages, "init-messages", 20, "initsync: messages per room")
	flag.IntVar(&o.InitRuns, "init-runs", 20, "initsync: syncs measured per room count")
	flag.IntVar(&o.PageMessages, "page-messages", 2000, "messages: messages in the room")
	flag.IntVar(&o.PageLimit, "page-limit", 50, "messages: events per /messages request")
	flag.IntVar(&o.PageRuns, "page-runs", 5, "messages: back-paginations through the whole room")
	flag.Parse()
	var err error
	for _, l := range []struct {
		s   string
		dst *[]int
	}{{senders, &o.Senders}, {receivers, &o.Receivers}, {initRooms, &o.InitRooms}} {
		if *l.dst, err = intList(l.s); err != nil {
			fmt.Fprintln(os.Stderr, "hearth-load:", err)
			os.Exit(2)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	report := Report{Time: time.Now().UTC(), Machine: thisMachine(), Server: o.URL}
	if report.Server == "" {
		report.Server = "started, SQLite"
		if o.Postgres != "" {
			report.Server = "started, PostgreSQL"
		}
	}
	report.Results, err = run(ctx, o, os.Stderr)
	if o.JSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(report)
	} else {
		printReport(os.Stdout, report)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hearth-load:", err)
		os.Exit(1)
	}
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q: want positive whole numbers separated by commas", s)
		}
		out = append(out, n)
	}
	return out, nil
}
