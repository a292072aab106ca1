package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/synapseadmin"
)

// client speaks the client-server API over plain net/http: the hot paths
// (send, /sync, /messages) stay cheap for the load tool, so that on a
// small machine the figures are the server's, not the client's. Responses
// are read with gjson, without decoding whole /sync bodies into structs.
type client struct {
	base   string
	secret string // registration_shared_secret, or "" for open registration
	prefix string // makes user names unique across runs on one server
	http   *http.Client
	txn    atomic.Int64
	// rawHost and rawPath are the base URL's host and path when sends
	// can take a rawConn (plain http); rawHost is "" otherwise.
	rawHost, rawPath string
}

// user is one registered account with its access token.
type user struct {
	ID, Token string
	// sends is the user's own connection for sends, reads the one for
	// its /sync long polls and /messages pages, marks the one for its read
	// receipts (rawConns): a client keeps its long poll apart from what it
	// sends, as Element does.
	sends, reads, marks rawConn
}

func newClient(base, secret string) *client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 0
	tr.MaxIdleConnsPerHost = 4096 // every client keeps its connections: no churn through TIME_WAIT
	c := &client{base: base, secret: secret, prefix: "load" + randomHex(3), http: &http.Client{Transport: tr}}
	if u, err := url.Parse(base); err == nil && u.Scheme == "http" && u.User == nil && u.RawQuery == "" {
		c.rawHost, c.rawPath = u.Host, strings.TrimSuffix(u.EscapedPath(), "/")
	}
	return c
}

// register creates the user <prefix>-<name>, by shared-secret registration
// when the secret is known, else through open registration (m.login.dummy).
func (c *client) register(ctx context.Context, name string) (*user, error) {
	name = c.prefix + "-" + name
	anon, err := mautrix.NewClient(c.base, "", "")
	if err != nil {
		return nil, err
	}
	anon.Client = c.http
	var resp *mautrix.RespRegister
	if c.secret != "" {
		admin := synapseadmin.Client{Client: anon}
		resp, err = admin.SharedSecretRegister(ctx, c.secret, synapseadmin.ReqSharedSecretRegister{Username: name, Password: "load tool " + name})
	} else {
		resp, err = anon.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: name, Password: "load tool " + name})
	}
	if err != nil {
		return nil, fmt.Errorf("register %s: %w", name, err)
	}
	return &user{ID: resp.UserID.String(), Token: resp.AccessToken}, nil
}

// do sends one request and returns the body of a 200 answer.
func (c *client) do(ctx context.Context, u *user, method, path string, query url.Values, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	target := c.base + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, err
	}
	if u != nil {
		req.Header.Set("Authorization", "Bearer "+u.Token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, bytes.TrimSpace(b))
	}
	return b, nil
}

const clientV3 = "/_matrix/client/v3"

func roomPath(room string) string { return clientV3 + "/rooms/" + url.PathEscape(room) }

// createRoom makes a room with preset (public_chat lets others join).
func (c *client) createRoom(ctx context.Context, u *user, preset, name string) (string, error) {
	b, err := c.do(ctx, u, http.MethodPost, clientV3+"/createRoom", nil, map[string]any{"preset": preset, "name": name})
	if err != nil {
		return "", err
	}
	return gjson.GetBytes(b, "room_id").String(), nil
}

func (c *client) join(ctx context.Context, u *user, room string) error {
	_, err := c.do(ctx, u, http.MethodPost, roomPath(room)+"/join", nil, map[string]any{})
	return err
}

// loadMark identifies a message sent by the tool: sender index, sequence
// number, and the send's start in Unix microseconds, for delivery latency
// (canonical JSON allows integers up to 2^53, too few for nanoseconds).
type loadMark struct {
	Sender int   `json:"s"`
	Seq    int   `json:"n"`
	Sent   int64 `json:"t"`
}

// send posts one m.room.message carrying mark.
func (c *client) send(ctx context.Context, u *user, room string, mark loadMark) error {
	txn := "hl" + strconv.FormatInt(c.txn.Add(1), 10)
	path := roomPath(room) + "/send/m.room.message/" + txn
	// {"msgtype":"m.text","body":"load test message N","hl":{"s":S,"n":N,"t":T}}
	body := make([]byte, 0, 128)
	body = append(body, `{"msgtype":"m.text","body":"load test message `...)
	body = strconv.AppendInt(body, int64(mark.Seq), 10)
	body = append(body, `","hl":{"s":`...)
	body = strconv.AppendInt(body, int64(mark.Sender), 10)
	body = append(body, `,"n":`...)
	body = strconv.AppendInt(body, int64(mark.Seq), 10)
	body = append(body, `,"t":`...)
	body = strconv.AppendInt(body, mark.Sent, 10)
	body = append(body, "}}"...)
	var err error
	if c.rawHost != "" {
		_, err = u.sends.do(ctx, http.MethodPut, c.rawHost, c.rawPath+path, u.Token, body)
	} else {
		_, err = c.do(ctx, u, http.MethodPut, path, nil, json.RawMessage(body))
	}
	return err
}

// markRead moves the user's read receipt and read marker in room to
// eventID, as Element does for the room in view (POST read_markers with
// both).
func (c *client) markRead(ctx context.Context, u *user, room, eventID string) error {
	path := roomPath(room) + "/read_markers"
	body, err := json.Marshal(map[string]string{"m.fully_read": eventID, "m.read": eventID})
	if err != nil {
		return err
	}
	if c.rawHost != "" {
		_, err = u.marks.do(ctx, http.MethodPost, c.rawHost, c.rawPath+path, u.Token, body)
	} else {
		_, err = c.do(ctx, u, http.MethodPost, path, nil, json.RawMessage(body))
	}
	return err
}

// rawConn is one kept-alive HTTP/1.1 connection a user's requests of one
// kind take in turn, written and read by the goroutine asking: net/http's
// client runs two goroutines per connection and hands every request and
// response between them, which on a 2-core machine cost the tool ~0.15 ms
// of CPU a send (a third of the server's own), taken from the server it
// measures. It asks for no gzip, as net/http's client did; Hearth answers
// uncompressed either way, so the server's work is the same.
type rawConn struct {
	mu   sync.Mutex
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
}

// rawTimeout bounds one request on a rawConn.
const rawTimeout = time.Minute

// do sends method target (a path and query) with a JSON body (nil: none)
// and returns the body of a 200 answer. Any failure closes the
// connection; the next request dials again. A kept-alive connection the
// server closed while it was idle (Hearth after 2 minutes, as phases that
// set up rooms can take under a small memory limit) fails the next
// request before any answer: a GET or PUT (the sends carry transaction
// IDs) is then sent once more on a new connection, as net/http's client
// does for requests it may repeat.
func (rc *rawConn) do(ctx context.Context, method, host, target, token string, body []byte) ([]byte, error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for attempt := 0; ; attempt++ {
		reused := rc.conn != nil
		if !reused {
			addr := host
			if _, _, err := net.SplitHostPort(host); err != nil {
				addr = net.JoinHostPort(strings.Trim(host, "[]"), "80")
			}
			var d net.Dialer
			conn, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			rc.conn, rc.r, rc.w = conn, bufio.NewReader(conn), bufio.NewWriter(conn)
		}
		b, keep, err := rc.roundTrip(ctx, method, host, target, token, body)
		if err != nil || !keep {
			rc.conn.Close()
			rc.conn = nil
		}
		var closed *closedBeforeAnswer
		if reused && attempt == 0 && errors.As(err, &closed) && ctx.Err() == nil &&
			(method == http.MethodGet || method == http.MethodPut) {
			continue
		}
		return b, err
	}
}

// closedBeforeAnswer is a request's failure before any byte of an answer
// came back: the connection was closed or reset under it.
type closedBeforeAnswer struct{ err error }

func (e *closedBeforeAnswer) Error() string {
	return "connection closed before an answer: " + e.err.Error()
}
func (e *closedBeforeAnswer) Unwrap() error { return e.err }

// beforeAnswer is err, a failure to write a request or to read the first
// byte of its answer, marked as closedBeforeAnswer when the connection was
// closed or reset (not when it timed out).
func beforeAnswer(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return &closedBeforeAnswer{err}
	}
	return err
}

// roundTrip writes the request and reads its answer; keep is false when
// the server closes the connection after it.
func (rc *rawConn) roundTrip(ctx context.Context, method, host, target, token string, body []byte) (b []byte, keep bool, err error) {
	deadline := time.Now().Add(rawTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := rc.conn.SetDeadline(deadline); err != nil {
		return nil, false, err
	}
	// A request cut short by ctx ends at once, as net/http's would.
	conn := rc.conn
	defer context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })()
	w := rc.w
	w.WriteString(method)
	w.WriteByte(' ')
	w.WriteString(target)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(host)
	w.WriteString("\r\nAuthorization: Bearer ")
	w.WriteString(token)
	if body != nil {
		w.WriteString("\r\nContent-Type: application/json\r\nContent-Length: ")
		w.WriteString(strconv.Itoa(len(body)))
	}
	w.WriteString("\r\n\r\n")
	w.Write(body)
	if err := w.Flush(); err != nil {
		return nil, false, beforeAnswer(err)
	}
	if _, err := rc.r.Peek(1); err != nil {
		return nil, false, beforeAnswer(err)
	}
	resp, err := http.ReadResponse(rc.r, &http.Request{Method: method})
	if err != nil {
		return nil, false, err
	}
	b, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, false, err
	}
	if resp.StatusCode != http.StatusOK {
		path, _, _ := strings.Cut(target, "?")
		return nil, !resp.Close, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, bytes.TrimSpace(b))
	}
	return b, !resp.Close, nil
}

// syncFilter is what a client like Element asks for: members loaded
// lazily, a bounded timeline, and no presence (Element turns presence off
// for servers its config names; -presence asks for it, as Element does
// elsewhere).
const (
	syncFilter         = `{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":50}},"presence":{"not_types":["*"]}}`
	syncFilterPresence = `{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":50}}}`
)

// sync is one /sync; since "" is an initial sync, filter "" asks for everything.
func (c *client) sync(ctx context.Context, u *user, since string, timeout time.Duration, filter string) ([]byte, error) {
	q := url.Values{"timeout": {strconv.FormatInt(timeout.Milliseconds(), 10)}}
	if since != "" {
		q.Set("since", since)
	}
	if filter != "" {
		q.Set("filter", filter)
	}
	return c.get(ctx, u, clientV3+"/sync", q)
}

// messages is one /messages page backwards from from ("" is the end of the
// room), down to to ("" is the start of the room).
func (c *client) messages(ctx context.Context, u *user, room, from, to string, limit int) ([]byte, error) {
	q := url.Values{"dir": {"b"}, "limit": {strconv.Itoa(limit)}}
	if from != "" {
		q.Set("from", from)
	}
	if to != "" {
		q.Set("to", to)
	}
	return c.get(ctx, u, roomPath(room)+"/messages", q)
}

// get is a GET of the user's long polls and pages, over its reads
// connection when the server is plain http.
func (c *client) get(ctx context.Context, u *user, path string, q url.Values) ([]byte, error) {
	if c.rawHost == "" {
		return c.do(ctx, u, http.MethodGet, path, q, nil)
	}
	return u.reads.do(ctx, http.MethodGet, c.rawHost, c.rawPath+path+"?"+q.Encode(), u.Token, nil)
}
