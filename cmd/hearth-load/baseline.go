package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"modernc.org/sqlite" // the "sqlite" driver, as Hearth uses it
)

// The baseline is the floor a homeserver's send path is measured against
// (issue 12: sends must beat "a bare handler that signs and commits
// durably once per request on the same machine in the same run"). It is
// a separate process running this binary: one HTTP handler for the send
// endpoint that builds the event, signs it with ed25519, hashes it, and
// commits it in its own transaction to SQLite with Hearth's settings
// (WAL, synchronous=FULL, commits synced with fdatasync, one writer
// connection). No auth, no room state, no fan-out.

// baselineEnv names the directory the baseline serves from; when set,
// this binary is the baseline server, not the load tool.
const baselineEnv = "HEARTH_LOAD_BASELINE_DIR"

// serveBaseline serves the bare send handler on a free loopback port,
// prints "listening ADDR" and serves until killed.
func serveBaseline(dir string) error {
	// Hearth's commits sync with fdatasync (server/storage/sqlite.go); a
	// baseline left on fsync would pay more for each of its own.
	_, _ = sqlite.Fdatasync(true)
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(FULL)", "busy_timeout(10000)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "baseline.db")+"?"+q.Encode())
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE, room_id TEXT NOT NULL, json TEXT NOT NULL)`); err != nil {
		return err
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	var depth atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /_matrix/client/v3/rooms/{room}/send/{type}/{txn}", func(w http.ResponseWriter, r *http.Request) {
		var content map[string]any
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 65536)).Decode(&content); err != nil {
			http.Error(w, `{"errcode":"M_BAD_JSON"}`, http.StatusBadRequest)
			return
		}
		ev := map[string]any{"type": r.PathValue("type"), "room_id": r.PathValue("room"), "sender": "@baseline:load.test",
			"content": content, "depth": depth.Add(1), "origin_server_ts": time.Now().UnixMilli()}
		unsigned, _ := json.Marshal(ev) // map keys are sorted: canonical enough for a floor
		ev["signatures"] = map[string]any{"load.test": map[string]string{"ed25519:a": base64.RawStdEncoding.EncodeToString(ed25519.Sign(key, unsigned))}}
		signed, _ := json.Marshal(ev)
		sum := sha256.Sum256(signed)
		eventID := "$" + base64.RawURLEncoding.EncodeToString(sum[:])
		tx, err := db.BeginTx(r.Context(), nil)
		if err == nil {
			if _, err = tx.Exec(`INSERT INTO events (event_id, room_id, json) VALUES ($1, $2, $3)`, eventID, r.PathValue("room"), string(signed)); err == nil {
				err = tx.Commit()
			} else {
				tx.Rollback()
			}
		}
		if err != nil {
			http.Error(w, `{"errcode":"M_UNKNOWN"}`, http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"event_id":%q}`, eventID)
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println("listening", l.Addr())
	return http.Serve(l, mux)
}

// baseline is a running baseline process.
type baseline struct {
	url  string
	cmd  *exec.Cmd
	dir  string
	done chan error
}

// startBaseline runs this binary again as the baseline server.
func startBaseline(ctx context.Context) (*baseline, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "hearth-load-baseline-")
	if err != nil {
		return nil, err
	}
	b := &baseline{dir: dir, done: make(chan error, 1)}
	b.cmd = exec.Command(self)
	b.cmd.Env = append(os.Environ(), baselineEnv+"="+dir)
	b.cmd.Stderr = os.Stderr
	out, err := b.cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := b.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	go func() { b.done <- b.cmd.Wait() }()
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- s
		io.Copy(io.Discard, out)
	}()
	select {
	case s := <-line:
		addr, ok := strings.CutPrefix(strings.TrimSpace(s), "listening ")
		if !ok {
			b.stop()
			return nil, fmt.Errorf("baseline server said %q", s)
		}
		b.url = "http://" + addr
		return b, nil
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
	}
	b.stop()
	return nil, fmt.Errorf("baseline server did not start")
}

func (b *baseline) stop() {
	b.cmd.Process.Kill()
	<-b.done
	os.RemoveAll(b.dir)
}

// baselinePhase sends with each -senders count into the bare handler,
// exactly as the send phase does into Hearth's one room.
func (t *target) baselinePhase(ctx context.Context, o options) error {
	b, err := startBaseline(ctx)
	if err != nil {
		return err
	}
	defer b.stop()
	bt := &target{client: newClient(b.url, ""), pid: b.cmd.Process.Pid, log: t.log}
	u := &user{ID: "@baseline:load.test", Token: "none"}
	for _, n := range o.Senders {
		us, rooms := make([]*user, n), make([]string, n)
		for i := range us {
			us[i], rooms[i] = u, "!baseline:load.test"
		}
		if err := bt.sendRun(ctx, o, fmt.Sprintf("%d senders, bare handler: sign + one durable SQLite commit a request", n), us, rooms); err != nil {
			return err
		}
	}
	for i := range bt.results {
		bt.results[i].Phase = "baseline"
	}
	t.results = append(t.results, bt.results...)
	return nil
}
