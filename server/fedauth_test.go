package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"hearth/server"
	"hearth/server/federation"
	"hearth/server/rooms"
	"hearth/server/servertest"
	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// originKey is origin.test's signing key, which the server under test
// knows from its database (the key ring's second source).
func originKey(t *testing.T) rooms.SigningKey {
	t.Helper()
	seed := sha256.Sum256([]byte("origin.test"))
	k, err := rooms.SigningKeyFromSeed("origin.test", "ed25519:o1", seed[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// knowKey stores a server's key as if fetched earlier, valid for a day.
func knowKey(t *testing.T, st *storage.Store, k rooms.SigningKey) {
	t.Helper()
	now := time.Now().UnixMilli()
	if err := st.StoreServerKeys(context.Background(), []storage.ServerKey{{ServerName: k.ServerName, KeyID: k.KeyID,
		PublicKey: base64.RawStdEncoding.EncodeToString(pubKey(k)), ValidUntilTS: now + 86_400_000,
		FromServer: k.ServerName, FetchedTS: now}}, nil); err != nil {
		t.Fatal(err)
	}
}

// fedRequest is a request as another server sends it: signed over
// (signMethod, signTarget, origin, destination, signBody) with key, but
// sent as method to base+target with body. The differences are the
// tampering under test.
type fedRequest struct {
	key                    rooms.SigningKey
	origin, destination    string
	signMethod, signTarget string
	signBody               []byte
	method, target         string
	body                   []byte
	header                 func(string) string // edits the Authorization header
	noAuth                 bool
}

// send makes the request and returns the status and the decoded answer.
func (f fedRequest) send(t *testing.T, base string) (int, map[string]any) {
	t.Helper()
	signed, err := http.NewRequest(f.signMethod, federation.Scheme+"://"+f.destination+f.signTarget, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := federation.SignRequest(signed, f.key, f.origin, f.destination, f.signBody); err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(f.method, base+f.target, bytes.NewReader(f.body))
	if err != nil {
		t.Fatal(err)
	}
	auth := signed.Header.Get("Authorization")
	if f.header != nil {
		auth = f.header(auth)
	}
	if !f.noAuth {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

// TestXMatrixOnFederationRoutes checks the X-Matrix check in front of the
// federation routes of a running server: a signed request is answered;
// each kind of tampering or bad header is 401 M_UNAUTHORIZED.
func TestXMatrixOnFederationRoutes(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		key := originKey(t)
		knowKey(t, b.Store, key)
		// victim.test uses the same key ID as origin.test, with its own key.
		victim := key
		victim.ServerName, victim.Private = "victim.test", originKeyOther(t)
		knowKey(t, b.Store, victim)
		seedUser(t, b.Store, "alice", "alicepw", false)
		if err := b.Store.SetDisplayName(context.Background(), "@alice:hearth.test", "Alice"); err != nil {
			t.Fatal(err)
		}
		const profile = "/_matrix/federation/v1/query/profile?user_id=%40alice%3Ahearth.test"
		good := fedRequest{key: key, origin: "origin.test", destination: "hearth.test",
			signMethod: http.MethodGet, signTarget: profile, method: http.MethodGet, target: profile}

		status, body := good.send(t, b.URL)
		if status != http.StatusOK || body["displayname"] != "Alice" {
			t.Fatalf("signed request: %d %v", status, body)
		}
		// /version needs no signature.
		if status, body := call(t, http.MethodGet, b.URL+"/_matrix/federation/v1/version", "", nil); status != http.StatusOK {
			t.Fatalf("version: %d %v", status, body)
		}

		tests := []struct {
			name, reason string
			edit         func(*fedRequest)
		}{
			{"no Authorization header", "no X-Matrix Authorization header", func(f *fedRequest) { f.noAuth = true }},
			{"malformed header", "malformed", func(f *fedRequest) { f.header = func(string) string { return `X-Matrix origin="origin.test",key=` } }},
			{"another scheme", "no X-Matrix Authorization header", func(f *fedRequest) {
				f.header = func(h string) string { return strings.Replace(h, "X-Matrix", "Bearer", 1) }
			}},
			{"for another server", "addressed to another server", func(f *fedRequest) { f.destination = "elsewhere.test" }},
			{"destination rewritten", "signature does not match", func(f *fedRequest) {
				f.destination = "elsewhere.test"
				f.header = func(h string) string { return strings.Replace(h, "elsewhere.test", "hearth.test", 1) }
			}},
			{"origin rewritten", "signature does not match", func(f *fedRequest) {
				f.header = func(h string) string { return strings.Replace(h, `origin="origin.test"`, `origin="victim.test"`, 1) }
			}},
			{"unknown origin", "signing key not found", func(f *fedRequest) {
				f.origin = "stranger.test"
				f.key.ServerName = "stranger.test"
			}},
			{"unknown key", "signing key not found", func(f *fedRequest) { f.key.KeyID = "ed25519:o2" }},
			{"signed with another key", "signature does not match", func(f *fedRequest) {
				f.key.Private = originKeyOther(t)
			}},
			{"query tampered", "signature does not match", func(f *fedRequest) {
				f.target = "/_matrix/federation/v1/query/profile?user_id=%40alice%3Ahearth.test&field=displayname"
			}},
			{"query re-encoded", "signature does not match", func(f *fedRequest) { f.target = "/_matrix/federation/v1/query/profile?user_id=@alice:hearth.test" }},
			{"path tampered", "signature does not match", func(f *fedRequest) {
				f.signTarget = "/_matrix/federation/v1/query/directory?user_id=%40alice%3Ahearth.test"
			}},
			{"method tampered", "signature does not match", func(f *fedRequest) { f.signMethod = http.MethodPost }},
			{"body added", "signature does not match", func(f *fedRequest) { f.body = []byte(`{"a":1}`) }},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				f := good
				tc.edit(&f)
				status, body := f.send(t, b.URL)
				msg, _ := body["error"].(string)
				if status != http.StatusUnauthorized || body["errcode"] != "M_UNAUTHORIZED" || !strings.Contains(msg, tc.reason) {
					t.Fatalf("%d %v; want 401 M_UNAUTHORIZED, %q", status, body, tc.reason)
				}
			})
		}
	})
}

// originKeyOther is a key with origin.test's key ID but other bytes.
func originKeyOther(t *testing.T) []byte {
	t.Helper()
	seed := sha256.Sum256([]byte("not origin.test"))
	k, err := rooms.SigningKeyFromSeed("origin.test", "ed25519:o1", seed[:])
	if err != nil {
		t.Fatal(err)
	}
	return k.Private
}

// syncBuffer is a log destination safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestXMatrixWithBody puts the server's X-Matrix check in front of
// a handler like /send (a PUT with a JSON body): the handler gets the
// origin and the body; a tampered body is refused and the refusal logged
// with the claimed origin and the reason.
func TestXMatrixWithBody(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		var logs syncBuffer
		h := startHearth(t, e, "hearth.test", func(d *server.Deps) {
			d.Log = slog.New(slog.NewTextHandler(&logs, nil))
		})
		key := originKey(t)
		knowKey(t, h.st, key)
		var got struct {
			sync.Mutex
			origin string
			body   []byte
		}
		echo := server.FederationAuth(h.srv, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			got.Lock()
			got.origin, got.body = server.OriginFrom(r.Context()), body
			got.Unlock()
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{}`))
		}))
		hs := httptest.NewServer(echo)
		t.Cleanup(hs.Close)

		const target = "/_matrix/federation/v1/send/txn1"
		body := []byte(`{"origin":"origin.test","pdus":[],"edus":[{"edu_type":"m.typing","content":{"typing":true}}]}`)
		good := fedRequest{key: key, origin: "origin.test", destination: "hearth.test",
			signMethod: http.MethodPut, signTarget: target, signBody: body,
			method: http.MethodPut, target: target, body: body}
		if status, out := good.send(t, hs.URL); status != http.StatusOK {
			t.Fatalf("signed PUT: %d %v", status, out)
		}
		got.Lock()
		if got.origin != "origin.test" || !bytes.Equal(got.body, body) {
			t.Fatalf("handler saw origin %q, body %s", got.origin, got.body)
		}
		got.Unlock()

		tampered := good
		tampered.body = bytes.Replace(body, []byte(`true`), []byte(`false`), 1)
		if status, out := tampered.send(t, hs.URL); status != http.StatusUnauthorized || out["errcode"] != "M_UNAUTHORIZED" {
			t.Fatalf("tampered body: %d %v", status, out)
		}
		if l := logs.String(); !strings.Contains(l, "federation request refused") || !strings.Contains(l, "origin=origin.test") ||
			!strings.Contains(l, "signature does not match") {
			t.Fatalf("refusal not logged with origin and reason:\n%s", l)
		}
		dropped := good
		dropped.body = nil
		if status, out := dropped.send(t, hs.URL); status != http.StatusUnauthorized || out["errcode"] != "M_UNAUTHORIZED" {
			t.Fatalf("body dropped: %d %v", status, out)
		}
		notJSON := good
		notJSON.body = []byte(`{"pdus":`)
		if status, out := notJSON.send(t, hs.URL); status != http.StatusBadRequest || out["errcode"] != "M_NOT_JSON" {
			t.Fatalf("body not JSON: %d %v", status, out)
		}
		// The server's private key is never logged.
		if strings.Contains(logs.String(), base64.RawStdEncoding.EncodeToString(h.key.Private.Seed())) {
			t.Fatal("the private key was logged")
		}
	})
}
