package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestRawConn sends over a rawConn: the body and token arrive, a refusal
// is an error naming its status, and a server that closes the connection
// after an answer gets a new one for the next send.
func TestRawConn(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch {
		case r.Method != http.MethodPut || r.Header.Get("Authorization") != "Bearer tok" || string(b) != `{"a":1}`:
			http.Error(w, `{"errcode":"M_BAD"}`, http.StatusBadRequest)
		case strings.HasSuffix(r.URL.Path, "/refuse"):
			http.Error(w, `{"errcode":"M_FORBIDDEN"}`, http.StatusForbidden)
		case strings.HasSuffix(r.URL.Path, "/hang"):
			<-release
		case strings.HasSuffix(r.URL.Path, "/close"):
			w.Header().Set("Connection", "close")
			io.WriteString(w, `{"event_id":"$c"}`)
		default:
			io.WriteString(w, `{"event_id":"$e"}`)
		}
	}))
	conns := countConns(srv)
	srv.Start()
	defer srv.Close()
	defer close(release)
	host := strings.TrimPrefix(srv.URL, "http://")
	var rc rawConn
	put := func(path string) (string, error) {
		b, err := rc.do(t.Context(), http.MethodPut, host, path, "tok", []byte(`{"a":1}`))
		return string(b), err
	}
	for range 3 {
		if b, err := put("/send"); err != nil || b != `{"event_id":"$e"}` {
			t.Fatalf("send: %q, %v", b, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for three sends, want 1", n)
	}
	if _, err := put("/refuse"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("refused send: %v", err)
	}
	if b, err := put("/close"); err != nil || b != `{"event_id":"$c"}` {
		t.Fatalf("send answered with Connection: close: %q, %v", b, err)
	}
	if b, err := put("/send"); err != nil || b != `{"event_id":"$e"}` {
		t.Fatalf("send after the server closed: %q, %v", b, err)
	}
	// A send whose context ends stops waiting for its answer.
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	began := time.Now()
	if _, err := rc.do(ctx, http.MethodPut, host, "/hang", "tok", []byte(`{"a":1}`)); err == nil || time.Since(began) > 10*time.Second {
		t.Fatalf("send cancelled after 100 ms: %v after %v", err, time.Since(began))
	}
	if b, err := put("/send"); err != nil || b != `{"event_id":"$e"}` {
		t.Fatalf("send after a cancelled one: %q, %v", b, err)
	}
}

// TestRawConnAfterIdleClose: a kept-alive connection the server closed
// while it was idle (its IdleTimeout) is redialled for the next GET or PUT,
// which then succeeds; a POST, which may not be repeated, fails instead.
func TestRawConnAfterIdleClose(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		io.WriteString(w, `{"ok":true}`)
	}))
	srv.Config.IdleTimeout = 50 * time.Millisecond
	conns := countConns(srv)
	srv.Start()
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	var rc rawConn
	for i, method := range []string{http.MethodGet, http.MethodPut, http.MethodGet} {
		if b, err := rc.do(t.Context(), method, host, "/sync", "tok", nil); err != nil || string(b) != `{"ok":true}` {
			t.Fatalf("%s %d after the server closed the idle connection: %q, %v", method, i, b, err)
		}
		time.Sleep(300 * time.Millisecond) // the server closes the idle connection
	}
	if n := conns.Load(); n != 3 {
		t.Fatalf("%d connections, want 3 (one a request, each after the last was closed)", n)
	}
	if _, err := rc.do(t.Context(), http.MethodPost, host, "/receipt", "tok", []byte(`{}`)); err == nil {
		t.Fatal("a POST on a connection closed under it was sent again")
	}
	if n := requests.Load(); n != 3 {
		t.Fatalf("the server answered %d requests, want 3", n)
	}
}

// TestClientSendUnderPrefix sends through a client whose base URL has a
// path: the send goes under it, with the body the receivers read.
func TestClientSendUnderPrefix(t *testing.T) {
	var got atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.Store(r.Method + " " + r.URL.EscapedPath() + " " + string(b))
		io.WriteString(w, `{"event_id":"$e"}`)
	}))
	defer srv.Close()
	c := newClient(srv.URL+"/prefix/", "")
	if err := c.send(t.Context(), &user{Token: "tok"}, "!r:x", loadMark{Sender: 2, Seq: 7, Sent: 99}); err != nil {
		t.Fatal(err)
	}
	want := `PUT /prefix/_matrix/client/v3/rooms/%21r:x/send/m.room.message/hl1 {"msgtype":"m.text","body":"load test message 7","hl":{"s":2,"n":7,"t":99}}`
	if g, _ := got.Load().(string); g != want {
		t.Fatalf("server saw\n%s\nwant\n%s", g, want)
	}
}

// TestClientSendOverHTTPS sends through net/http where a send connection
// cannot go (TLS): the server sees the same request.
func TestClientSendOverHTTPS(t *testing.T) {
	var got atomic.Value
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.Store(r.Method + " " + r.URL.EscapedPath() + " " + r.Header.Get("Authorization") + " " + string(b))
		io.WriteString(w, `{"event_id":"$e"}`)
	}))
	defer srv.Close()
	c := newClient(srv.URL, "")
	c.http = srv.Client()
	if err := c.send(t.Context(), &user{Token: "tok"}, "!r:x", loadMark{Sender: 2, Seq: 7, Sent: 99}); err != nil {
		t.Fatal(err)
	}
	want := `PUT /_matrix/client/v3/rooms/%21r:x/send/m.room.message/hl1 Bearer tok {"msgtype":"m.text","body":"load test message 7","hl":{"s":2,"n":7,"t":99}}`
	if g, _ := got.Load().(string); g != want {
		t.Fatalf("server saw\n%s\nwant\n%s", g, want)
	}
}

// TestClientReadsOverOneConn long-polls /sync and pages /messages as a
// receiver does: the requests arrive whole (query, token, no body), all
// over one connection, and a refusal names the request without its query.
func TestClientReadsOverOneConn(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.EscapedPath()+"?"+r.URL.RawQuery+" "+r.Header.Get("Authorization")+
			" ["+r.Header.Get("Content-Type")+r.Header.Get("Content-Length")+string(b)+"]")
		mu.Unlock()
		if r.URL.Query().Get("since") == "refuse" {
			http.Error(w, `{"errcode":"M_LIMIT_EXCEEDED"}`, http.StatusTooManyRequests)
			return
		}
		io.WriteString(w, `{"next_batch":"s2"}`)
	}))
	conns := countConns(srv)
	srv.Start()
	defer srv.Close()
	c := newClient(srv.URL+"/prefix", "")
	u := &user{Token: "tok"}
	if b, err := c.sync(t.Context(), u, "s1", 30*time.Second, `{"a":1}`); err != nil || string(b) != `{"next_batch":"s2"}` {
		t.Fatalf("sync: %q, %v", b, err)
	}
	if _, err := c.messages(t.Context(), u, "!r:x", "t1", "", 100); err != nil {
		t.Fatal(err)
	}
	_, err := c.sync(t.Context(), u, "refuse", 0, "")
	if err == nil || !strings.Contains(err.Error(), "GET /prefix/_matrix/client/v3/sync: 429") || strings.Contains(err.Error(), "refuse") {
		t.Fatalf("refused sync: %v", err)
	}
	want := []string{
		`GET /prefix/_matrix/client/v3/sync?filter=%7B%22a%22%3A1%7D&since=s1&timeout=30000 Bearer tok []`,
		`GET /prefix/_matrix/client/v3/rooms/%21r:x/messages?dir=b&from=t1&limit=100 Bearer tok []`,
		`GET /prefix/_matrix/client/v3/sync?since=refuse&timeout=0 Bearer tok []`,
	}
	mu.Lock()
	got := strings.Join(seen, "\n")
	mu.Unlock()
	if got != strings.Join(want, "\n") {
		t.Fatalf("server saw\n%s\nwant\n%s", got, strings.Join(want, "\n"))
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for three reads, want 1", n)
	}
}

// countConns counts the connections an unstarted test server accepts.
func countConns(srv *httptest.Server) *atomic.Int32 {
	var n atomic.Int32
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			n.Add(1)
		}
	}
	return &n
}
