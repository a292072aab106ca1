package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/server/storage/storagetest"
)

// TestCrashDuringSends kills the real hearth binary with SIGKILL while
// clients send into one room, several times, on each engine. After every
// restart the clients retry each send that got no answer and a sample of
// those that did, under the same transaction IDs. At the end every
// acknowledged event is in the room exactly once, with the event ID the
// server first answered, and no retried send made a second event.
// Bounded: crashRounds rounds of about a second of sending each.
func TestCrashDuringSends(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		start := time.Now()
		hs := newCrashServer(t, e)
		hs.start(t)
		ctx := t.Context()

		// senders clients: two per user, so two devices of one user and two
		// requests of one device race.
		const users, perUser = 3, 2
		var clients []*crashClient
		var ownerToken string
		var room id.RoomID
		for u := range users {
			cli := hs.client(t, "")
			resp, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: fmt.Sprintf("crash%d", u), Password: "crash-test-pw"})
			if err != nil {
				t.Fatalf("register: %v", err)
			}
			if u == 0 {
				ownerToken = resp.AccessToken
				created, err := hs.client(t, ownerToken).CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
				if err != nil {
					t.Fatal(err)
				}
				room = created.RoomID
			} else if _, err := hs.client(t, resp.AccessToken).JoinRoomByID(ctx, room); err != nil {
				t.Fatal(err)
			}
			for p := range perUser {
				clients = append(clients, &crashClient{name: fmt.Sprintf("u%dc%d", u, p), token: resp.AccessToken,
					acked: map[string]id.EventID{}, pending: map[string]bool{}})
			}
		}

		const crashRounds = 4
		for round := range crashRounds {
			// Retry what the last crash left unanswered, and re-send some
			// acknowledged ones: the same ID must come back.
			for _, c := range clients {
				c.retry(t, hs, room)
			}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for _, c := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c.sendUntil(hs, room, round, stop)
				}()
			}
			time.Sleep(time.Duration(300+rand.IntN(700)) * time.Millisecond)
			hs.kill(t)
			close(stop)
			wg.Wait()
			hs.start(t)
		}
		for _, c := range clients {
			c.retry(t, hs, room)
		}

		// Every acknowledged event once, under its first ID; nothing twice.
		seen := map[string][]id.EventID{}
		owner := hs.client(t, ownerToken)
		from := ""
		for {
			msgs, err := owner.Messages(ctx, room, from, "", mautrix.DirectionBackward, nil, 1000)
			if err != nil {
				t.Fatalf("messages: %v", err)
			}
			for _, ev := range msgs.Chunk {
				if ev.Type == event.EventMessage {
					body, _ := ev.Content.Raw["body"].(string)
					seen[body] = append(seen[body], ev.ID)
				}
			}
			if msgs.End == "" || len(msgs.Chunk) == 0 {
				break
			}
			from = msgs.End
		}
		acked := 0
		for _, c := range clients {
			for txn, want := range c.acked {
				acked++
				got := seen[txn]
				if len(got) != 1 || got[0] != want {
					t.Errorf("%s: acknowledged %s as %s; in the room: %v", c.name, txn, want, got)
				}
			}
			if len(c.pending) > 0 {
				t.Errorf("%s: %d sends still unanswered after the last retry", c.name, len(c.pending))
			}
		}
		for body, ids := range seen {
			if len(ids) > 1 {
				t.Errorf("%q is in the room %d times: %v", body, len(ids), ids)
			}
		}
		if acked < crashRounds*len(clients) {
			t.Errorf("only %d sends acknowledged: the test did not exercise the server", acked)
		}
		t.Logf("%s: %d crashes, %d events acknowledged, %d retried after a crash, %d re-sent after acknowledgement, %v",
			e.Name, crashRounds, acked, sum(clients, func(c *crashClient) int { return c.retried }),
			sum(clients, func(c *crashClient) int { return c.resent }), time.Since(start).Round(time.Millisecond))
	})
}

func sum(cs []*crashClient, f func(*crashClient) int) int {
	n := 0
	for _, c := range cs {
		n += f(c)
	}
	return n
}

// crashClient is one sending client: what the server acknowledged, and
// what it sent without an answer.
type crashClient struct {
	name    string
	token   string
	mu      sync.Mutex
	acked   map[string]id.EventID
	pending map[string]bool
	next    int
	retried int
	resent  int
}

// sendUntil sends one event at a time until stop is closed; an answer is
// an acknowledgement, an error (the server died) leaves the send pending.
func (c *crashClient) sendUntil(hs *crashServer, room id.RoomID, round int, stop chan struct{}) {
	cli := hs.clientNoT(c.token)
	for {
		select {
		case <-stop:
			return
		default:
		}
		c.mu.Lock()
		txn := fmt.Sprintf("%s-r%d-%d", c.name, round, c.next)
		c.next++
		c.pending[txn] = true
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := cli.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": txn},
			mautrix.ReqSendEvent{TransactionID: txn})
		cancel()
		if err != nil {
			return // the server is gone; txn stays pending
		}
		c.mu.Lock()
		delete(c.pending, txn)
		c.acked[txn] = resp.EventID
		c.mu.Unlock()
	}
}

// retry re-sends every pending send and every fifth acknowledged one.
func (c *crashClient) retry(t *testing.T, hs *crashServer, room id.RoomID) {
	t.Helper()
	cli := hs.client(t, c.token)
	i := 0
	for txn, want := range c.acked {
		if i++; i%5 != 0 {
			continue
		}
		resp, err := cli.SendMessageEvent(t.Context(), room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": txn},
			mautrix.ReqSendEvent{TransactionID: txn})
		if err != nil || resp.EventID != want {
			t.Fatalf("%s: re-sending acknowledged %s: %v %v, want %s", c.name, txn, resp, err, want)
		}
		c.resent++
	}
	for txn := range c.pending {
		resp, err := cli.SendMessageEvent(t.Context(), room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": txn},
			mautrix.ReqSendEvent{TransactionID: txn})
		if err != nil {
			t.Fatalf("%s: retrying %s: %v", c.name, txn, err)
		}
		delete(c.pending, txn)
		c.acked[txn] = resp.EventID
		c.retried++
	}
}

// crashServer runs the hearth binary on one database across restarts.
type crashServer struct {
	dir, cfgPath string
	cmd          *exec.Cmd
	done         chan error
	mu           sync.Mutex
	url          string
}

func newCrashServer(t *testing.T, e storagetest.Engine) *crashServer {
	t.Helper()
	dir := t.TempDir()
	key, err := config.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "signing.key"), key.Encode(), 0o600); err != nil {
		t.Fatal(err)
	}
	db := fmt.Sprintf("{name: sqlite3, args: {database: %q}}", filepath.Join(dir, "hearth.db"))
	if e.Name == "postgres" {
		db = fmt.Sprintf("{name: psycopg2, args: {dsn: %q, cp_max: 8}}", e.Options.Postgres)
	}
	cfg := fmt.Sprintf(`server_name: crash.test
log_level: info
listeners:
  - {port: 8008, bind_addresses: ['127.0.0.1'], type: http, resources: [{names: [client]}]}
database: %s
signing_key_path: %q
media_store_path: %q
enable_registration: true
enable_registration_without_verification: true
bcrypt_rounds: 4
rc_login: {address: {per_second: 0, burst_count: 1000}, account: {per_second: 0, burst_count: 1000}, failed_attempts: {per_second: 0, burst_count: 1000}}
rc_registration: {per_second: 0, burst_count: 1000}
`, db, filepath.Join(dir, "signing.key"), filepath.Join(dir, "media"))
	s := &crashServer{dir: dir, cfgPath: filepath.Join(dir, "homeserver.yaml")}
	if err := os.WriteFile(s.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s.cmd != nil {
			s.cmd.Process.Kill()
			<-s.done
		}
	})
	return s
}

// start runs the binary on a port it picks itself, learns the port from
// its "listening" log line, and waits until it answers. A port picked here
// and handed over could be taken in between by the other engine's server,
// started at the same moment: this test then talked to that server.
func (s *crashServer) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(hearthBin, "serve", "-c", s.cfgPath, "--listen", "127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var logMu sync.Mutex
	var logs []string
	bound := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			logMu.Lock()
			logs = append(logs, line)
			logMu.Unlock()
			if _, addr, ok := strings.Cut(line, "msg=listening addr="); ok {
				select {
				case bound <- strings.Fields(addr)[0]:
				default:
				}
			}
		}
	}()
	s.cmd, s.done = cmd, make(chan error, 1)
	go func() { s.done <- cmd.Wait() }()
	exited := func(err error) {
		logMu.Lock()
		defer logMu.Unlock()
		t.Fatalf("hearth exited on start: %v\n%s", err, strings.Join(logs, "\n"))
	}
	deadline := time.After(30 * time.Second)
	select {
	case addr := <-bound:
		s.mu.Lock()
		s.url = "http://" + addr
		s.mu.Unlock()
	case err := <-s.done:
		exited(err)
	case <-deadline:
		t.Fatal("hearth did not say where it listens within 30 s of starting")
	}
	for {
		resp, err := http.Get(s.url + "/_matrix/client/versions")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case err := <-s.done:
			exited(err)
		case <-deadline:
			t.Fatal("hearth did not answer within 30 s of starting")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// kill sends SIGKILL: no shutdown, no flush.
func (s *crashServer) kill(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	err := <-s.done
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("hearth was not killed: %v", err)
	}
	s.cmd = nil
}

func (s *crashServer) client(t *testing.T, token string) *mautrix.Client {
	t.Helper()
	return s.clientNoT(token)
}

func (s *crashServer) clientNoT(token string) *mautrix.Client {
	s.mu.Lock()
	u := s.url
	s.mu.Unlock()
	cli, err := mautrix.NewClient(u, "", token)
	if err != nil {
		panic(err)
	}
	cli.DefaultHTTPRetries = 0
	return cli
}
