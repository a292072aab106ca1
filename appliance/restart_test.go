package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// app is one process: Run, stopped by cancelling its context as SIGTERM does
// in cmd/hearth.
type app struct {
	addr   string
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	took   time.Duration
}

// startApp runs the appliance on cfg, listening on listen, and stops it when
// the test ends.
func startApp(t *testing.T, cfg *config.Config, listen string) *app {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("HEARTH_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	// The previous process's port is free once its Run has returned, but
	// allow the kernel a moment.
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithCancel(context.Background())
		a := &app{cancel: cancel, done: make(chan error, 1)}
		ready := make(chan string, 1)
		go func() {
			a.done <- Run(ctx, cfg, Options{Listen: listen, Log: log, Ready: func(addr string) { ready <- addr }})
		}()
		select {
		case a.addr = <-ready:
			t.Cleanup(func() { a.stop(t) })
			return a
		case err := <-a.done:
			cancel()
			if attempt == 20 {
				t.Fatalf("run: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		case <-time.After(20 * time.Second):
			t.Fatal("server did not start")
		}
	}
}

// stop cancels Run's context and returns how long Run took to return.
func (a *app) stop(t *testing.T) time.Duration {
	a.once.Do(func() {
		began := time.Now()
		a.cancel()
		if err := <-a.done; err != nil {
			t.Errorf("run: %v", err)
		}
		a.took = time.Since(began)
	})
	return a.took
}

// outcomes sorts the answers clients got while the server stopped. Each
// request must end in an answer (ok), a 503 naming the shutdown, or a
// transport error (the listener is closed, or the connection was); anything
// else, such as a 200 without a body or a 500, is bad.
type outcomes struct {
	mu                       sync.Mutex
	ok, unavailable, refused int
	bad                      []string
}

func (o *outcomes) add(what string, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var he mautrix.HTTPError
	switch {
	case err == nil:
		o.ok++
	case errors.As(err, &he) && he.Response == nil:
		o.refused++
	case errors.As(err, &he) && he.Response.StatusCode == http.StatusServiceUnavailable && he.RespError != nil:
		o.unavailable++
	default:
		o.bad = append(o.bad, fmt.Sprintf("%s: %v", what, err))
	}
}

func (o *outcomes) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return fmt.Sprintf("%d answered, %d 503, %d refused, %d bad", o.ok, o.unavailable, o.refused, len(o.bad))
}

// load runs client loops until quit is closed: they go on through a stopped
// server, as real clients do, retrying after a short pause.
type load struct {
	quit chan struct{}
	wg   sync.WaitGroup
}

func newLoad() *load { return &load{quit: make(chan struct{})} }

func (l *load) run(f func(quit <-chan struct{})) {
	l.wg.Go(func() { f(l.quit) })
}

// end stops the loops and reports whether every request in flight came
// back within d.
func (l *load) end(d time.Duration) bool {
	close(l.quit)
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

func pause(quit <-chan struct{}, d time.Duration) bool {
	select {
	case <-quit:
		return false
	case <-time.After(d):
		return true
	}
}

// TestRestartUnderLoad stops the server through the path production uses,
// appliance.Run with its context cancelled (as SIGTERM does in cmd/hearth):
// first with 20 clients parked in /sync long-polls, then with those 20
// syncing while 5 others send messages. Stopping must return within a
// second each time, every request in flight must come back, and after a
// restart on the same database every message whose send was acknowledged
// must be in the room, none twice (senders retry with the same transaction
// ID, as clients do, so a send committed just before shutdown is not
// repeated).
func TestRestartUnderLoad(t *testing.T) {
	const syncers, senders = 20, 5
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		ctx := context.Background()
		cfg := servertest.Config(t, t.TempDir())
		if e.Name == "postgres" {
			cfg.Database = config.Database{Name: "psycopg2", Args: config.DatabaseArgs{DSN: e.Options.Postgres}}
		} else {
			cfg.Database.Args.Database = e.Options.SQLitePath
		}
		a := startApp(t, cfg, "127.0.0.1:0")
		addr := a.addr

		users := make([]*mautrix.Client, syncers+senders)
		for i := range users {
			cli, err := mautrix.NewClient("http://"+addr, "", "")
			if err != nil {
				t.Fatal(err)
			}
			name := fmt.Sprintf("user%02d", i)
			resp, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: name, Password: name + " long password"})
			if err != nil {
				t.Fatalf("register %s: %v", name, err)
			}
			cli.UserID, cli.AccessToken = resp.UserID, resp.AccessToken
			users[i] = cli
		}
		room, err := users[0].CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range users[1:] {
			if _, err := u.JoinRoomByID(ctx, room.RoomID); err != nil {
				t.Fatalf("join: %v", err)
			}
		}
		since := make([]string, syncers)
		for i := range syncers {
			resp, err := users[i].FullSyncRequest(ctx, mautrix.ReqSync{})
			if err != nil {
				t.Fatalf("initial sync: %v", err)
			}
			since[i] = resp.NextBatch
		}

		// syncLoops long-polls /sync (5 minutes, the server's maximum) for
		// every syncer until quit; inFlight counts requests not yet back.
		var inFlight atomic.Int32
		syncLoops := func(l *load, out *outcomes) {
			for i := range syncers {
				l.run(func(quit <-chan struct{}) {
					for {
						inFlight.Add(1)
						resp, err := users[i].FullSyncRequest(ctx, mautrix.ReqSync{Since: since[i], Timeout: 300_000})
						inFlight.Add(-1)
						out.add("sync", err)
						if err == nil {
							since[i] = resp.NextBatch
						} else if !pause(quit, 20*time.Millisecond) {
							return
						}
						select {
						case <-quit:
							return
						default:
						}
					}
				})
			}
		}
		// A stop must return within a second (more under the race
		// detector), and the requests in flight must all have come back
		// by then.
		limit := slowdown * time.Second
		stopWithin := func(a *app, l *load, what string) time.Duration {
			t.Helper()
			took := a.stop(t)
			if took > limit {
				t.Errorf("%s: stopping took %v (limit %v)", what, took, limit)
			}
			if !l.end(limit) {
				t.Fatalf("%s: requests still hanging %v after the server stopped (%d of them syncs)", what, limit, inFlight.Load())
			}
			return took
		}

		// 1. Twenty parked long-polls and nothing else.
		parked := &outcomes{}
		l := newLoad()
		syncLoops(l, parked)
		// The server gives no count of parked syncs outside its own tests:
		// wait until all 20 are sent, then give them time to park; none
		// may have come back.
		for deadline := time.Now().Add(10 * time.Second); inFlight.Load() != syncers && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond)
		if n := inFlight.Load(); n != syncers {
			t.Fatalf("%d of %d syncs parked (%s)", n, syncers, parked)
		}
		tookParked := stopWithin(a, l, "parked syncs")
		// Each one was answered 503: the shutdown ended it, not a timeout
		// or a dropped connection.
		if parked.unavailable != syncers || len(parked.bad) != 0 {
			t.Errorf("parked syncs at shutdown: %s %v", parked, parked.bad)
		}

		// 2. The same database, address and clients: syncs and sends,
		// stopped while messages are being sent.
		a = startApp(t, cfg, addr)
		var (
			ackMu sync.Mutex
			acked = map[string]id.EventID{} // txn ID → event ID
		)
		pending := make([]string, senders) // per sender: a txn not yet acknowledged
		next := make([]int, senders)
		sends := &outcomes{}
		// sendLoops sends until quit; with untilAcked, each sender instead
		// stops as soon as it has no unacknowledged transaction.
		sendLoops := func(l *load, out *outcomes, untilAcked bool) {
			for s := range senders {
				cli := users[syncers+s]
				l.run(func(quit <-chan struct{}) {
					for {
						if pending[s] == "" {
							if untilAcked {
								return
							}
							next[s]++
							pending[s] = fmt.Sprintf("load-%d-%d", s, next[s])
						}
						txn := pending[s]
						resp, err := cli.SendMessageEvent(ctx, room.RoomID, event.EventMessage,
							map[string]any{"msgtype": "m.text", "body": txn}, mautrix.ReqSendEvent{TransactionID: txn})
						out.add("send", err)
						if err == nil && resp.EventID != "" {
							ackMu.Lock()
							acked[txn] = resp.EventID
							ackMu.Unlock()
							pending[s] = ""
						} else if !pause(quit, 20*time.Millisecond) {
							return
						}
						select {
						case <-quit:
							return
						default:
						}
					}
				})
			}
		}
		loaded := &outcomes{}
		l = newLoad()
		syncLoops(l, loaded)
		sendLoops(l, sends, false)
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			ackMu.Lock()
			n := len(acked)
			ackMu.Unlock()
			if n >= 50 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("only %d sends acknowledged in 10s (%s)", n, sends)
			}
		}
		syncsAtStop := inFlight.Load()
		tookLoaded := stopWithin(a, l, "under load")
		if len(loaded.bad)+len(sends.bad) != 0 {
			t.Errorf("answers while stopping: syncs %s %v; sends %s %v", loaded, loaded.bad, sends, sends.bad)
		}
		t.Logf("%s: stopping took %v with %d parked syncs; %v with %d syncs in flight and %d senders (syncs %s; sends %s)",
			e.Name, tookParked, syncers, tookLoaded, syncsAtStop, senders, loaded, sends)

		// 3. After a restart every acknowledged message is there, and
		// every sender's last transaction, retried, is answered with the
		// event it already made or a new one: nothing lost, nothing twice.
		startApp(t, cfg, addr) // stopped at cleanup
		l = newLoad()
		retried := &outcomes{}
		sendLoops(l, retried, true)
		if !l.end(10 * time.Second) {
			t.Fatalf("retried sends did not finish: %s", retried)
		}
		if len(retried.bad) != 0 {
			t.Errorf("retried sends: %v", retried.bad)
		}
		got := map[string][]id.EventID{} // body → event IDs
		from := ""
		for {
			page, err := users[0].Messages(ctx, room.RoomID, from, "", mautrix.DirectionBackward, nil, 500)
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range page.Chunk {
				if ev.Type == event.EventMessage {
					body, _ := ev.Content.Raw["body"].(string)
					got[body] = append(got[body], ev.ID)
				}
			}
			if page.End == "" || len(page.Chunk) == 0 {
				break
			}
			from = page.End
		}
		for txn, evID := range acked {
			if ids := got[txn]; len(ids) != 1 || ids[0] != evID {
				t.Errorf("acknowledged %s (%s): in the room as %v", txn, evID, ids)
			}
		}
		for body, ids := range got {
			if _, ok := acked[body]; !ok || len(ids) != 1 {
				t.Errorf("message %q in the room %d times, acknowledged: %t", body, len(ids), ok)
			}
		}
		if len(got) != len(acked) {
			t.Errorf("%d messages in the room, %d acknowledged", len(got), len(acked))
		}
		// The syncers carry on from where they were.
		for i := range syncers {
			resp, err := users[i].FullSyncRequest(ctx, mautrix.ReqSync{Since: since[i]})
			if err != nil || resp.NextBatch == "" {
				t.Errorf("sync after restart: %v", err)
			}
		}
	})
}
