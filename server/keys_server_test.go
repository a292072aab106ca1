package server_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"hearth/config"
	"hearth/server"
	"hearth/server/federation"
	"hearth/server/rooms"
	"hearth/server/servertest"
	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// fedNet routes matrix-federation://<server name>/... to test servers, as
// the federation transport routes it to what discovery finds.
type fedNet struct {
	mu    sync.Mutex
	hosts map[string]string // server name → host:port
}

func (n *fedNet) add(name, url string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.hosts == nil {
		n.hosts = map[string]string{}
	}
	n.hosts[name] = url[len("http://"):]
}

func (n *fedNet) RoundTrip(req *http.Request) (*http.Response, error) {
	n.mu.Lock()
	host := n.hosts[req.URL.Host]
	n.mu.Unlock()
	if req.URL.Scheme != federation.Scheme || host == "" {
		return nil, errors.New("test network: no route to " + req.URL.String())
	}
	out := req.Clone(req.Context())
	u := *req.URL
	u.Scheme, u.Host = "http", host
	out.URL, out.Host = &u, req.URL.Host
	return http.DefaultTransport.RoundTrip(out)
}

// hearth is one Hearth server for federation tests.
type hearth struct {
	name string
	url  string
	key  rooms.SigningKey
	st   *storage.Store
	srv  *server.Server
}

// freshEngine is another, empty database of e's kind: each server of a
// test needs its own.
func freshEngine(t *testing.T, e storagetest.Engine) storagetest.Engine {
	t.Helper()
	if e.Name == "postgres" {
		return storagetest.Engine{Name: e.Name, Options: storage.Options{
			Postgres: storagetest.FreshSchema(t, os.Getenv(storagetest.EnvPostgres)), MaxConns: 8}}
	}
	return storagetest.Engine{Name: e.Name, Options: storage.Options{SQLitePath: filepath.Join(t.TempDir(), "hearth.db")}}
}

// startHearth starts a server named name on its own database; edit may
// change its dependencies (the key ring, old keys, the log).
func startHearth(t *testing.T, e storagetest.Engine, name string, edit func(*server.Deps)) *hearth {
	t.Helper()
	cfg := servertest.Config(t, t.TempDir())
	cfg.ServerName = name
	ck, err := cfg.LoadSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	st := storagetest.Open(t, freshEngine(t, e))
	d := server.Deps{Cfg: cfg, Store: st, Key: ck, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if edit != nil {
		edit(&d)
	}
	srv, h := server.New(d)
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	return &hearth{name: name, url: hs.URL, key: roomsKeyOf(name, ck), st: st, srv: srv}
}

func roomsKeyOf(name string, k config.SigningKey) rooms.SigningKey {
	return rooms.SigningKey{ServerName: name, KeyID: k.ID, Private: k.Priv}
}

func pubKey(k rooms.SigningKey) ed25519.PublicKey { return k.Private.Public().(ed25519.PublicKey) }

// getJSON fetches url and returns the status and the raw body.
func getRaw(t *testing.T, method, url string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, raw
}

// keyResponse is a /_matrix/key/v2/server object.
type keyResponse struct {
	ServerName    string                       `json:"server_name"`
	VerifyKeys    map[string]map[string]string `json:"verify_keys"`
	OldVerifyKeys map[string]struct {
		Key       string `json:"key"`
		ExpiredTS int64  `json:"expired_ts"`
	} `json:"old_verify_keys"`
	ValidUntilTS int64                        `json:"valid_until_ts"`
	Signatures   map[string]map[string]string `json:"signatures"`
}

func TestServerKeys(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		old := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32)).Public().(ed25519.PublicKey)
		expired := time.Now().Add(-48 * time.Hour).UnixMilli()
		h := startHearth(t, e, "hearth.test", func(d *server.Deps) {
			d.OldKeys = []federation.OldKey{{KeyID: "ed25519:old", Public: old, ExpiredTS: expired}}
		})
		for _, path := range []string{"/_matrix/key/v2/server", "/_matrix/key/v2/server/" + h.key.KeyID} {
			before := time.Now()
			status, raw := getRaw(t, http.MethodGet, h.url+path, nil)
			if status != http.StatusOK {
				t.Fatalf("%s: %d %s", path, status, raw)
			}
			var resp keyResponse
			if err := json.Unmarshal(raw, &resp); err != nil {
				t.Fatal(err)
			}
			if err := rooms.VerifyJSON(raw, "hearth.test", h.key.KeyID, pubKey(h.key)); err != nil {
				t.Fatalf("%s: self-signature: %v", path, err)
			}
			if resp.ServerName != "hearth.test" || len(resp.VerifyKeys) != 1 ||
				resp.VerifyKeys[h.key.KeyID]["key"] != base64.RawStdEncoding.EncodeToString(pubKey(h.key)) {
				t.Fatalf("%s: %s", path, raw)
			}
			// valid_until_ts: a day ahead (Synapse's key_refresh_interval).
			if lo, hi := before.Add(24*time.Hour).UnixMilli(), time.Now().Add(24*time.Hour).UnixMilli(); resp.ValidUntilTS < lo || resp.ValidUntilTS > hi {
				t.Fatalf("%s: valid_until_ts %d, want within [%d, %d]", path, resp.ValidUntilTS, lo, hi)
			}
			o := resp.OldVerifyKeys["ed25519:old"]
			if len(resp.OldVerifyKeys) != 1 || o.Key != base64.RawStdEncoding.EncodeToString(old) || o.ExpiredTS != expired {
				t.Fatalf("%s: old_verify_keys %+v", path, resp.OldVerifyKeys)
			}
		}

		status, raw := getRaw(t, http.MethodGet, h.url+"/_matrix/federation/v1/version", nil)
		var v struct {
			Server map[string]string `json:"server"`
		}
		if status != http.StatusOK || json.Unmarshal(raw, &v) != nil || v.Server["name"] != "Hearth" || v.Server["version"] != server.Version {
			t.Fatalf("version: %d %s", status, raw)
		}
	})
}

func TestNotaryEndpoints(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		ctx := context.Background()
		net := &fedNet{}
		// remote.test is another Hearth; hearth.test is the notary, which
		// reaches remote.test through the test network.
		remote := startHearth(t, e, "remote.test", nil)
		net.add("remote.test", remote.url)
		notary := startHearth(t, e, "hearth.test", func(d *server.Deps) {
			d.Keys = federation.NewKeyRing(federation.KeyRingOptions{Key: roomsKeyOf("hearth.test", d.Key),
				Store: d.Store, Client: &http.Client{Transport: net}, Log: d.Log})
		})
		net.add("hearth.test", notary.url)

		// bothSigned checks a notary answer: one object per server, each
		// signed by its origin and by the notary.
		bothSigned := func(name string, raw []byte, want map[string]rooms.SigningKey) {
			t.Helper()
			var answer struct {
				ServerKeys []json.RawMessage `json:"server_keys"`
			}
			if err := json.Unmarshal(raw, &answer); err != nil || answer.ServerKeys == nil {
				t.Fatalf("%s: %s", name, raw)
			}
			got := map[string]bool{}
			for _, obj := range answer.ServerKeys {
				var k keyResponse
				if err := json.Unmarshal(obj, &k); err != nil {
					t.Fatal(err)
				}
				origin, ok := want[k.ServerName]
				if !ok || got[k.ServerName] {
					t.Fatalf("%s: unexpected or repeated keys of %s: %s", name, k.ServerName, raw)
				}
				got[k.ServerName] = true
				if err := rooms.VerifyJSON(obj, k.ServerName, origin.KeyID, pubKey(origin)); err != nil {
					t.Errorf("%s: origin signature of %s: %v", name, k.ServerName, err)
				}
				if err := rooms.VerifyJSON(obj, "hearth.test", notary.key.KeyID, pubKey(notary.key)); err != nil {
					t.Errorf("%s: notary signature on %s: %v", name, k.ServerName, err)
				}
			}
			if len(got) != len(want) {
				t.Fatalf("%s: got keys of %v, want %d servers: %s", name, got, len(want), raw)
			}
		}

		status, raw := getRaw(t, http.MethodGet, notary.url+"/_matrix/key/v2/query/remote.test", nil)
		if status != http.StatusOK {
			t.Fatalf("GET query: %d %s", status, raw)
		}
		bothSigned("GET query", raw, map[string]rooms.SigningKey{"remote.test": remote.key})

		body := []byte(`{"server_keys": {"remote.test": {"` + remote.key.KeyID + `": {"minimum_valid_until_ts": 0}},
			"hearth.test": {}, "nowhere.test": {}}}`)
		status, raw = getRaw(t, http.MethodPost, notary.url+"/_matrix/key/v2/query", body)
		if status != http.StatusOK {
			t.Fatalf("POST query: %d %s", status, raw)
		}
		bothSigned("POST query", raw, map[string]rooms.SigningKey{"remote.test": remote.key, "hearth.test": notary.key})

		// An unreachable server with no keys stored: an empty list.
		status, raw = getRaw(t, http.MethodGet, notary.url+"/_matrix/key/v2/query/nowhere.test", nil)
		if status != http.StatusOK || string(raw) != `{"server_keys":[]}` {
			t.Fatalf("unknown server: %d %s", status, raw)
		}
		status, _ = getRaw(t, http.MethodPost, notary.url+"/_matrix/key/v2/query", []byte(`{}`))
		if status != http.StatusBadRequest {
			t.Fatalf("POST without server_keys: %d", status)
		}

		// A third server that cannot reach remote.test trusts hearth.test
		// as its notary, and gets remote.test's key through it.
		third := federation.NewKeyRing(federation.KeyRingOptions{
			Key:    rooms.SigningKey{ServerName: "third.test", KeyID: "ed25519:t", Private: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, 32))},
			Client: &http.Client{Transport: &fedNet{hosts: map[string]string{"hearth.test": notary.url[len("http://"):]}}},
			TrustedKeyServers: []federation.TrustedKeyServer{{ServerName: "hearth.test",
				VerifyKeys: map[string]ed25519.PublicKey{notary.key.KeyID: pubKey(notary.key)}}},
			Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		pub, _, err := third.VerifyKey(ctx, "remote.test", remote.key.KeyID, time.Now().UnixMilli())
		if err != nil || !pub.Equal(pubKey(remote.key)) {
			t.Fatalf("through the notary: %x %v", pub, err)
		}
	})
}
