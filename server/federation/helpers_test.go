package federation_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json/v2"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hearth/server/federation"
	"hearth/server/rooms"
	"hearth/server/storage"
)

// clock is a settable clock shared by a test's servers.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.UnixMilli(1_800_000_000_000)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func (c *clock) ms(d time.Duration) int64 { return c.Now().Add(d).UnixMilli() }

// network routes matrix-federation://<name>/... to the test's HTTP
// servers, as the real federation transport routes it to what server
// discovery finds. Unknown names fail like an unreachable server.
type network struct {
	mu    sync.Mutex
	hosts map[string]*httptest.Server
}

func newNetwork() *network { return &network{hosts: map[string]*httptest.Server{}} }

func (n *network) add(t *testing.T, name string, h http.Handler) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.hosts[name] = srv
}

func (n *network) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != federation.Scheme {
		return nil, errors.New("test network: scheme " + req.URL.Scheme)
	}
	n.mu.Lock()
	srv := n.hosts[req.URL.Host]
	n.mu.Unlock()
	if srv == nil {
		return nil, errors.New("test network: no route to " + req.URL.Host)
	}
	out := req.Clone(req.Context())
	u := *req.URL
	u.Scheme, u.Host = "http", srv.Listener.Addr().String()
	out.URL, out.Host = &u, req.URL.Host
	return http.DefaultTransport.RoundTrip(out)
}

func (n *network) client() *http.Client { return &http.Client{Transport: n} }

// testKey derives a fixed key for a server name.
func testKey(t testing.TB, server, keyID string) rooms.SigningKey {
	t.Helper()
	seed := sha256.Sum256([]byte(server + "/" + keyID))
	k, err := rooms.SigningKeyFromSeed(server, keyID, seed[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pubOf(k rooms.SigningKey) ed25519.PublicKey { return k.Private.Public().(ed25519.PublicKey) }

func b64(b []byte) string { return base64.RawStdEncoding.EncodeToString(b) }

// keyDoc is a /_matrix/key/v2/server object, built by hand so the tests
// check the key ring against the spec rather than against the code that
// publishes Hearth's own keys.
type keyDoc struct {
	ServerName    string                       `json:"server_name"`
	VerifyKeys    map[string]map[string]string `json:"verify_keys"`
	OldVerifyKeys map[string]map[string]any    `json:"old_verify_keys,omitempty"`
	ValidUntilTS  int64                        `json:"valid_until_ts"`
}

// signedDoc marshals doc and signs it with each key.
func signedDoc(t testing.TB, doc keyDoc, signers ...rooms.SigningKey) []byte {
	t.Helper()
	raw, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range signers {
		if raw, err = rooms.SignJSON(raw, k); err != nil {
			t.Fatal(err)
		}
	}
	return raw
}

// remote is another homeserver's key server.
type remote struct {
	name string
	key  rooms.SigningKey
	hits atomic.Int32

	mu sync.Mutex
	// serve answers GET /_matrix/key/v2/server; the default is a correct
	// response valid for a day.
	serve func(w http.ResponseWriter, r *http.Request)
	// gate, when set, holds requests until it is closed.
	gate chan struct{}
}

func newRemote(t *testing.T, n *network, c *clock, name string) *remote {
	t.Helper()
	rm := &remote{name: name, key: testKey(t, name, "ed25519:r1")}
	rm.serveDoc(func() []byte { return signedDoc(t, rm.doc(c.ms(24*time.Hour)), rm.key) })
	n.add(t, name, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rm.hits.Add(1)
		rm.mu.Lock()
		serve, gate := rm.serve, rm.gate
		rm.mu.Unlock()
		if gate != nil {
			<-gate
		}
		if r.Method != http.MethodGet || r.URL.Path != "/_matrix/key/v2/server" {
			http.NotFound(w, r)
			return
		}
		serve(w, r)
	}))
	return rm
}

// doc is a correct key document for the remote's key.
func (rm *remote) doc(validUntil int64) keyDoc {
	return keyDoc{ServerName: rm.name, ValidUntilTS: validUntil,
		VerifyKeys: map[string]map[string]string{rm.key.KeyID: {"key": b64(pubOf(rm.key))}}}
}

// serveDoc makes the remote answer with what build returns.
func (rm *remote) serveDoc(build func() []byte) {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	rm.serve = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(build())
	}
}

// fail makes the remote answer 500.
func (rm *remote) fail() {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	rm.serve = func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusInternalServerError) }
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newRing builds our server's key ring ("hearth.test") on the network.
func newRing(t *testing.T, st *storage.Store, n *network, c *clock, notaries ...federation.TrustedKeyServer) *federation.KeyRing {
	t.Helper()
	return federation.NewKeyRing(federation.KeyRingOptions{
		Key: testKey(t, "hearth.test", "ed25519:h1"), Store: st, Client: n.client(),
		TrustedKeyServers: notaries, Now: c.Now, Log: quietLog(),
	})
}
