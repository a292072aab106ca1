package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json/jsontext"
	"encoding/json/v2"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"hearth/server/rooms"
	"hearth/server/storage"
)

// The key ring answers "which public key did server S sign with under key
// ID K, and until when is it valid?" (Server-Server API, "Retrieving
// server keys"). It looks in memory, then in the database, then asks S
// itself (GET /_matrix/key/v2/server), then each trusted notary (POST
// /_matrix/key/v2/query). It also publishes this server's own keys and
// keeps the signed responses the notary endpoints serve again.

const (
	// DefaultKeyValidity is how far ahead the valid_until_ts this server
	// publishes lies: Synapse's key_refresh_interval default.
	DefaultKeyValidity = 24 * time.Hour
	// MaxKeyValidity caps what other servers publish: "Servers MUST use
	// the lesser of this field and 7 days into the future" (spec,
	// valid_until_ts), so a key leaked with a far valid_until_ts cannot be
	// used for longer.
	MaxKeyValidity = 7 * 24 * time.Hour

	defaultFetchTimeout  = 30 * time.Second
	defaultRetryInterval = time.Minute
	// maxRetryInterval bounds the backoff for a server that keeps failing.
	maxRetryInterval = 30 * time.Minute
	// maxKeyResponse bounds a key response read from the network; real
	// ones are well under a kilobyte per key.
	maxKeyResponse = 1 << 20
	// maxRememberedServers bounds the in-memory cache: X-Matrix origins
	// are chosen by whoever sends the request.
	maxRememberedServers = 10000
)

// ErrKeyNotFound is wrapped when no key with the asked ID is known for a
// server, after fetching (or trying to fetch) it.
var ErrKeyNotFound = errors.New("federation: signing key not found")

// OldKey is a signing key this server used to use (Synapse's
// old_signing_keys): published in old_verify_keys so that events it
// signed still verify elsewhere.
type OldKey struct {
	KeyID     string // "ed25519:abc"
	Public    ed25519.PublicKey
	ExpiredTS int64 // ms: when this server stopped using it
}

// TrustedKeyServer is a notary whose answers the key ring believes when a
// server cannot be asked directly (Synapse's trusted_key_servers).
type TrustedKeyServer struct {
	ServerName string
	// VerifyKeys are the notary's keys, by key ID, configured out of band:
	// at least one of them must have signed every answer it gives.
	VerifyKeys map[string]ed25519.PublicKey
}

// KeyRingOptions configure a KeyRing. Only Key is required.
type KeyRingOptions struct {
	// Key is this server's signing key; Key.ServerName is its name. The
	// key ring answers for it, and for OldKeys, without any I/O.
	Key     rooms.SigningKey
	OldKeys []OldKey
	// Store keeps fetched keys across restarts; nil: memory only.
	Store *storage.Store
	// Client fetches keys. Its transport must understand
	// matrix-federation://<server name>/... URLs (see Scheme); nil: a
	// plain http.Client, with which every fetch fails.
	Client *http.Client
	// TrustedKeyServers are asked, in order, when a server cannot be.
	TrustedKeyServers []TrustedKeyServer
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	Log *slog.Logger
	// KeyValidity is how long the keys this server publishes are valid;
	// 0: DefaultKeyValidity.
	KeyValidity time.Duration
	// FetchTimeout bounds one fetch from all sources together; 0: 30s.
	FetchTimeout time.Duration
	// RetryInterval is the least time between two fetches for the same
	// server, doubled after each failure up to 30 minutes, so a dead or
	// misbehaving server is not asked again for every event or request;
	// 0: one minute.
	RetryInterval time.Duration
}

// KeyRing finds and caches other servers' public signing keys. It is safe
// for concurrent use; concurrent lookups for one server share one fetch.
type KeyRing struct {
	o      KeyRingOptions
	ownPub ed25519.PublicKey

	mu       sync.Mutex
	servers  map[string]*serverKeys
	inflight map[string]*fetchCall
}

// serverKeys is what the key ring knows about one server. keys is
// replaced, never modified, so a reader may keep it after unlocking.
type serverKeys struct {
	keys      map[string]keyInfo
	nextFetch time.Time // no fetch before this
	failures  int       // consecutive failed fetches
	lastErr   error     // why the last fetch failed
}

// keyInfo is one known key.
type keyInfo struct {
	pub        ed25519.PublicKey
	validUntil int64 // ms
	expired    int64 // ms; 0 for a key in verify_keys
	from       string
	fetched    int64
}

type fetchCall struct {
	done chan struct{}
	err  error
}

// NewKeyRing builds a key ring.
func NewKeyRing(o KeyRingOptions) *KeyRing {
	if o.Client == nil {
		o.Client = &http.Client{}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.KeyValidity <= 0 {
		o.KeyValidity = DefaultKeyValidity
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = defaultFetchTimeout
	}
	if o.RetryInterval <= 0 {
		o.RetryInterval = defaultRetryInterval
	}
	k := &KeyRing{o: o, servers: map[string]*serverKeys{}, inflight: map[string]*fetchCall{}}
	if o.Key.Private != nil {
		k.ownPub = o.Key.Private.Public().(ed25519.PublicKey)
	}
	return k
}

// ServerName is this server's name.
func (k *KeyRing) ServerName() string { return k.o.Key.ServerName }

// Now is the key ring's clock.
func (k *KeyRing) Now() time.Time { return k.o.Now() }

// VerifyKey returns serverName's public key keyID and the time (ms) until
// which it is valid, fetching it when it is unknown or known valid only
// until before minValidTS: the origin_server_ts of an event to verify, or
// now for a request. When no fresher answer can be had, a known key is
// returned with its stale validity: whether that matters is the caller's
// decision (room versions 1–4 ignore key validity). An unknown key is an
// error wrapping ErrKeyNotFound; other errors (the database) are internal.
func (k *KeyRing) VerifyKey(ctx context.Context, serverName, keyID string, minValidTS int64) (ed25519.PublicKey, int64, error) {
	if serverName == k.o.Key.ServerName {
		return k.ownKey(keyID)
	}
	if !validServerName(serverName) {
		return nil, 0, fmt.Errorf("%w: %q is not a server name", ErrKeyNotFound, serverName)
	}
	keys, err := k.load(ctx, serverName)
	if err != nil {
		return nil, 0, err
	}
	if ki, ok := keys[keyID]; ok && ki.validUntil >= minValidTS {
		return ki.pub, ki.validUntil, nil
	}
	fetchErr := k.refresh(ctx, serverName, keyID, minValidTS)
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	if ki, ok := k.cached(serverName)[keyID]; ok {
		return ki.pub, ki.validUntil, nil
	}
	if fetchErr != nil {
		return nil, 0, fmt.Errorf("%w: %s of %s: %w", ErrKeyNotFound, keyID, serverName, fetchErr)
	}
	return nil, 0, fmt.Errorf("%w: %s of %s", ErrKeyNotFound, keyID, serverName)
}

// Lookup adapts the key ring to the room pipeline's rooms.KeyLookup, whose
// calls carry no context of their own: ctx bounds them all.
func (k *KeyRing) Lookup(ctx context.Context) rooms.KeyLookup {
	return func(serverName, keyID string, minValidTS int64) (ed25519.PublicKey, int64, error) {
		return k.VerifyKey(ctx, serverName, keyID, minValidTS)
	}
}

// ownKey answers for this server from configuration.
func (k *KeyRing) ownKey(keyID string) (ed25519.PublicKey, int64, error) {
	if keyID == k.o.Key.KeyID && k.ownPub != nil {
		return k.ownPub, k.o.Now().Add(k.o.KeyValidity).UnixMilli(), nil
	}
	for _, old := range k.o.OldKeys {
		if old.KeyID == keyID {
			return old.Public, old.ExpiredTS, nil
		}
	}
	return nil, 0, fmt.Errorf("%w: %s is not a key of this server (%s)", ErrKeyNotFound, keyID, k.o.Key.ServerName)
}

// OldKeys are this server's old keys, as configured.
func (k *KeyRing) OldKeys() []OldKey { return append([]OldKey(nil), k.o.OldKeys...) }

// OwnServerKeys is this server's key response (GET /_matrix/key/v2/server):
// its current key, its old keys, valid_until_ts now + KeyValidity, signed
// with its key.
func (k *KeyRing) OwnServerKeys() (jsontext.Value, error) {
	if k.ownPub == nil {
		return nil, errors.New("federation: this server has no signing key")
	}
	type verifyKey struct {
		Key string `json:"key"`
	}
	type oldVerifyKey struct {
		Key       string `json:"key"`
		ExpiredTS int64  `json:"expired_ts"`
	}
	old := map[string]oldVerifyKey{}
	for _, o := range k.o.OldKeys {
		old[o.KeyID] = oldVerifyKey{Key: base64.RawStdEncoding.EncodeToString(o.Public), ExpiredTS: o.ExpiredTS}
	}
	raw, err := json.Marshal(struct {
		ServerName    string                  `json:"server_name"`
		VerifyKeys    map[string]verifyKey    `json:"verify_keys"`
		OldVerifyKeys map[string]oldVerifyKey `json:"old_verify_keys"`
		ValidUntilTS  int64                   `json:"valid_until_ts"`
	}{
		ServerName:    k.o.Key.ServerName,
		VerifyKeys:    map[string]verifyKey{k.o.Key.KeyID: {Key: base64.RawStdEncoding.EncodeToString(k.ownPub)}},
		OldVerifyKeys: old,
		ValidUntilTS:  k.o.Now().Add(k.o.KeyValidity).UnixMilli(),
	}, json.Deterministic(true))
	if err != nil {
		return nil, err
	}
	return rooms.SignJSON(raw, k.o.Key)
}

// NotaryKeys returns the key responses of serverName this server can vouch
// for as a notary (POST /_matrix/key/v2/query), each as its origin signed
// it; the caller adds this server's signature. The stored response is
// refetched when it is valid until before minValidTS, lacks one of keyIDs,
// or has lived half its lifetime (spec: "Intermediate notary servers
// should cache a response for half of its lifetime"); when that fails, the
// stored one is served all the same, so that old events' signatures can
// still be checked. None known: an empty list.
func (k *KeyRing) NotaryKeys(ctx context.Context, serverName string, keyIDs []string, minValidTS int64) ([]jsontext.Value, error) {
	if serverName == k.o.Key.ServerName {
		own, err := k.OwnServerKeys()
		if err != nil {
			return nil, err
		}
		return []jsontext.Value{own}, nil
	}
	if !validServerName(serverName) || k.o.Store == nil {
		return nil, nil
	}
	resp, err := k.o.Store.ServerKeyResponseOf(ctx, serverName)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if missing, stale := k.notaryNeeds(resp, keyIDs, minValidTS); stale {
		if _, err := k.load(ctx, serverName); err != nil {
			return nil, err
		}
		if err := k.refresh(ctx, serverName, missing, minValidTS); err != nil {
			k.o.Log.Debug("notary: could not refresh keys", "server", serverName, "err", err)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if resp, err = k.o.Store.ServerKeyResponseOf(ctx, serverName); errors.Is(err, storage.ErrNotFound) {
			return nil, nil
		} else if err != nil {
			return nil, err
		}
	}
	if resp == nil {
		return nil, nil
	}
	return []jsontext.Value{jsontext.Value(resp.JSON)}, nil
}

// notaryNeeds reports whether resp must be refetched before serving it,
// and a key ID it lacks.
func (k *KeyRing) notaryNeeds(resp *storage.ServerKeyResponse, keyIDs []string, minValidTS int64) (missing string, stale bool) {
	if resp == nil {
		return firstOr(keyIDs), true
	}
	now := k.o.Now().UnixMilli()
	if resp.ValidUntilTS < minValidTS || now >= resp.FetchedTS+(resp.ValidUntilTS-resp.FetchedTS)/2 {
		return firstOr(keyIDs), true
	}
	var ids struct {
		VerifyKeys    map[string]jsontext.Value `json:"verify_keys"`
		OldVerifyKeys map[string]jsontext.Value `json:"old_verify_keys"`
	}
	if err := json.Unmarshal(resp.JSON, &ids); err != nil {
		return firstOr(keyIDs), true
	}
	for _, id := range keyIDs {
		_, cur := ids.VerifyKeys[id]
		_, old := ids.OldVerifyKeys[id]
		if !cur && !old {
			return id, true
		}
	}
	return "", false
}

func firstOr(ids []string) string {
	if len(ids) > 0 {
		return ids[0]
	}
	return ""
}

// cached returns the keys held in memory for serverName.
func (k *KeyRing) cached(serverName string) map[string]keyInfo {
	k.mu.Lock()
	defer k.mu.Unlock()
	if sk := k.servers[serverName]; sk != nil {
		return sk.keys
	}
	return nil
}

// load returns serverName's keys from memory, or from the database the
// first time.
func (k *KeyRing) load(ctx context.Context, serverName string) (map[string]keyInfo, error) {
	k.mu.Lock()
	if sk := k.servers[serverName]; sk != nil {
		k.mu.Unlock()
		return sk.keys, nil
	}
	k.mu.Unlock()
	keys := map[string]keyInfo{}
	if k.o.Store != nil {
		rows, err := k.o.Store.ServerKeys(ctx, serverName)
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			pub, err := decodeKey(r.PublicKey)
			if err != nil {
				continue // written by this code, so never; but not worth failing over
			}
			keys[r.KeyID] = keyInfo{pub: pub, validUntil: r.ValidUntilTS, expired: r.ExpiredTS, from: r.FromServer, fetched: r.FetchedTS}
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if sk := k.servers[serverName]; sk != nil {
		// A fetch got there first; its keys include what was stored.
		return sk.keys, nil
	}
	k.rememberLocked(serverName, &serverKeys{keys: keys})
	return keys, nil
}

// rememberLocked adds a server to the memory cache, forgetting another one
// (not being fetched) when the cache is full; it can be reloaded from the
// database.
func (k *KeyRing) rememberLocked(serverName string, sk *serverKeys) {
	if len(k.servers) >= maxRememberedServers {
		for name := range k.servers {
			if k.inflight[name] == nil {
				delete(k.servers, name)
				break
			}
		}
	}
	k.servers[serverName] = sk
}

// refresh fetches serverName's keys unless a fetch is already under way
// (then it waits for that one) or the server was fetched too recently. It
// returns why no key could be had, if so. The fetch itself is not bound to
// ctx, so a caller giving up does not abort it for the others waiting.
func (k *KeyRing) refresh(ctx context.Context, serverName, keyID string, minValidTS int64) error {
	k.mu.Lock()
	call := k.inflight[serverName]
	if call == nil {
		sk := k.servers[serverName]
		for try := 0; sk == nil; try++ {
			// Forgotten since it was loaded (the cache is full): load it
			// again, so that what is fetched merges with what is stored.
			k.mu.Unlock()
			if try == 3 {
				sk = &serverKeys{keys: map[string]keyInfo{}}
				k.mu.Lock()
				k.rememberLocked(serverName, sk)
				break
			}
			if _, err := k.load(ctx, serverName); err != nil {
				return err
			}
			k.mu.Lock()
			sk = k.servers[serverName]
		}
		if call = k.inflight[serverName]; call == nil {
			if next := sk.nextFetch; k.o.Now().Before(next) {
				err := sk.lastErr
				k.mu.Unlock()
				if err != nil {
					return fmt.Errorf("not asked again before %s: %w", next.Format(time.RFC3339), err)
				}
				return nil
			}
			call = &fetchCall{done: make(chan struct{})}
			k.inflight[serverName] = call
			go k.runFetch(serverName, keyID, minValidTS, call)
		}
	}
	k.mu.Unlock()
	select {
	case <-call.done:
		return call.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runFetch performs one shared fetch and records its outcome.
func (k *KeyRing) runFetch(serverName, keyID string, minValidTS int64, call *fetchCall) {
	ctx, cancel := context.WithTimeout(context.Background(), k.o.FetchTimeout)
	defer cancel()
	err := k.fetch(ctx, serverName, keyID, minValidTS)
	if err != nil {
		k.o.Log.Info("could not fetch server keys", "server", serverName, "key_id", keyID, "err", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.inflight, serverName)
	sk := k.servers[serverName]
	if sk == nil {
		sk = &serverKeys{keys: map[string]keyInfo{}}
		k.rememberLocked(serverName, sk)
	}
	wait := k.o.RetryInterval
	if err != nil {
		sk.failures++
		for i := 1; i < sk.failures && wait < maxRetryInterval; i++ {
			wait *= 2
		}
		wait = min(wait, maxRetryInterval)
	} else {
		sk.failures = 0
	}
	sk.lastErr = err
	sk.nextFetch = k.o.Now().Add(wait)
	call.err = err
	close(call.done)
}

// fetch asks serverName itself, then each trusted notary until one has
// the key wanted (any current key when keyID is ""), storing every valid
// answer. It fails only when no source answered validly.
func (k *KeyRing) fetch(ctx context.Context, serverName, keyID string, minValidTS int64) error {
	var errs []error
	answered := false
	direct, err := k.fetchDirect(ctx, serverName)
	if err != nil {
		errs = append(errs, fmt.Errorf("from %s: %w", serverName, err))
	} else {
		if err := k.install(ctx, direct); err != nil {
			return err
		}
		answered = true
		if direct.satisfies(keyID, minValidTS) {
			return nil
		}
	}
	for _, n := range k.o.TrustedKeyServers {
		if n.ServerName == serverName {
			continue
		}
		resps, err := k.fetchFromNotary(ctx, n, serverName, keyID, minValidTS)
		if err != nil {
			errs = append(errs, fmt.Errorf("from notary %s: %w", n.ServerName, err))
			continue
		}
		done := false
		for _, r := range resps {
			if err := k.install(ctx, r); err != nil {
				return err
			}
			answered = true
			done = done || r.satisfies(keyID, minValidTS)
		}
		if done {
			return nil
		}
	}
	if answered {
		return nil
	}
	return errors.Join(errs...)
}

// keyResponse is a verified key response.
type keyResponse struct {
	server     string
	from       string // who served it
	raw        jsontext.Value
	validUntil int64 // capped
	fetched    int64
	keys       map[string]keyInfo
}

// satisfies reports whether the response has keyID (any current key when
// keyID is "") valid until minValidTS.
func (r *keyResponse) satisfies(keyID string, minValidTS int64) bool {
	for id, ki := range r.keys {
		if (id == keyID || keyID == "" && ki.expired == 0) && ki.validUntil >= minValidTS {
			return true
		}
	}
	return false
}

// fetchDirect asks the server itself (GET /_matrix/key/v2/server).
func (k *KeyRing) fetchDirect(ctx context.Context, serverName string) (*keyResponse, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, Scheme+"://"+serverName+"/_matrix/key/v2/server", nil)
	if err != nil {
		return nil, err
	}
	body, err := k.do(req)
	if err != nil {
		return nil, err
	}
	return parseKeyResponse(body, serverName, serverName, k.o.Now())
}

// fetchFromNotary asks a trusted notary (POST /_matrix/key/v2/query) and
// keeps the answers for serverName that carry both the notary's signature
// (with a key configured for it) and the origin's own.
func (k *KeyRing) fetchFromNotary(ctx context.Context, n TrustedKeyServer, serverName, keyID string, minValidTS int64) ([]*keyResponse, error) {
	type criteria struct {
		MinimumValidUntilTS int64 `json:"minimum_valid_until_ts,omitzero"`
	}
	ids := map[string]criteria{}
	if keyID != "" {
		ids[keyID] = criteria{MinimumValidUntilTS: minValidTS}
	}
	reqBody, err := json.Marshal(map[string]any{"server_keys": map[string]any{serverName: ids}})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, Scheme+"://"+n.ServerName+"/_matrix/key/v2/query", bytes.NewReader(reqBody))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	body, err := k.do(req)
	if err != nil {
		return nil, err
	}
	var answer struct {
		ServerKeys []jsontext.Value `json:"server_keys"`
	}
	if err := json.Unmarshal(body, &answer); err != nil {
		return nil, fmt.Errorf("answer is not a key query response: %w", err)
	}
	var out []*keyResponse
	var errs []error
	for _, obj := range answer.ServerKeys {
		var head struct {
			ServerName string `json:"server_name"`
		}
		if err := json.Unmarshal(obj, &head); err != nil || head.ServerName != serverName {
			continue // not what was asked for: ignored, not trusted
		}
		if err := verifyNotarySignature(obj, n); err != nil {
			errs = append(errs, err)
			continue
		}
		r, err := parseKeyResponse(obj, serverName, n.ServerName, k.o.Now())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		if len(errs) == 0 {
			return nil, fmt.Errorf("no keys for %s", serverName)
		}
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// QueryNotary asks notary n for serverName's current keys (POST
// /_matrix/key/v2/query) and returns the key IDs and public keys it
// vouches for, verified as the key ring verifies them (signed by the
// notary with one of n's keys, and by the server itself). Nothing is
// stored: the federation tester compares them with what the server
// publishes directly.
func (k *KeyRing) QueryNotary(ctx context.Context, n TrustedKeyServer, serverName string) (map[string]ed25519.PublicKey, error) {
	rs, err := k.fetchFromNotary(ctx, n, serverName, "", 0)
	if err != nil {
		return nil, err
	}
	out := map[string]ed25519.PublicKey{}
	for _, r := range rs {
		for id, ki := range r.keys {
			if ki.expired == 0 {
				out[id] = ki.pub
			}
		}
	}
	return out, nil
}

// verifyNotarySignature checks that obj is signed by the notary with one
// of its configured keys, and by none of them wrongly.
func verifyNotarySignature(obj []byte, n TrustedKeyServer) error {
	var sigs struct {
		Signatures map[string]map[string]jsontext.Value `json:"signatures"`
	}
	if err := json.Unmarshal(obj, &sigs); err != nil {
		return err
	}
	verified := false
	for id, pub := range n.VerifyKeys {
		if _, ok := sigs.Signatures[n.ServerName][id]; !ok {
			continue
		}
		if err := rooms.VerifyJSON(obj, n.ServerName, id, pub); err != nil {
			return fmt.Errorf("notary signature %s: %w", id, err)
		}
		verified = true
	}
	if !verified {
		return fmt.Errorf("%w: not signed by the notary %s with a key configured for it", rooms.ErrSignature, n.ServerName)
	}
	return nil
}

// do sends req and returns the body of a 200 answer.
func (k *KeyRing) do(req *http.Request) ([]byte, error) {
	resp, err := k.o.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxKeyResponse+1))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: HTTP %d", req.Method, req.URL.Path, resp.StatusCode)
	}
	if len(body) > maxKeyResponse {
		return nil, fmt.Errorf("%s %s: answer larger than %d bytes", req.Method, req.URL.Path, maxKeyResponse)
	}
	return body, nil
}

// parseKeyResponse checks a /_matrix/key/v2/server object: it must be for
// serverName and signed by serverName with the key(s) it lists (spec,
// "Publishing Keys"); its valid_until_ts is capped at 7 days from now.
func parseKeyResponse(raw []byte, serverName, from string, now time.Time) (*keyResponse, error) {
	var r struct {
		ServerName string `json:"server_name"`
		VerifyKeys map[string]struct {
			Key string `json:"key"`
		} `json:"verify_keys"`
		OldVerifyKeys map[string]struct {
			Key       string `json:"key"`
			ExpiredTS int64  `json:"expired_ts"`
		} `json:"old_verify_keys"`
		ValidUntilTS int64                                `json:"valid_until_ts"`
		Signatures   map[string]map[string]jsontext.Value `json:"signatures"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("not a key response: %w", err)
	}
	if r.ServerName != serverName {
		return nil, fmt.Errorf("key response is for server_name %q, not %q", r.ServerName, serverName)
	}
	if r.ValidUntilTS <= 0 {
		return nil, errors.New("key response has no valid_until_ts")
	}
	nowMS := now.UnixMilli()
	validUntil := min(r.ValidUntilTS, now.Add(MaxKeyValidity).UnixMilli())
	keys := map[string]keyInfo{}
	for id, v := range r.OldVerifyKeys {
		pub, err := decodeKey(v.Key)
		if !usableKeyID(id) || err != nil || v.ExpiredTS <= 0 {
			continue // another algorithm, or unusable: not ours to judge
		}
		exp := min(v.ExpiredTS, validUntil)
		keys[id] = keyInfo{pub: pub, validUntil: exp, expired: exp, from: from, fetched: nowMS}
	}
	current := map[string]ed25519.PublicKey{}
	for id, v := range r.VerifyKeys {
		if !usableKeyID(id) {
			continue
		}
		pub, err := decodeKey(v.Key)
		if err != nil {
			return nil, fmt.Errorf("verify key %s: %w", id, err)
		}
		current[id] = pub
		keys[id] = keyInfo{pub: pub, validUntil: validUntil, from: from, fetched: nowMS}
	}
	signed := false
	for id := range r.Signatures[serverName] {
		pub, ok := current[id]
		if !ok {
			continue
		}
		if err := rooms.VerifyJSON(raw, serverName, id, pub); err != nil {
			return nil, fmt.Errorf("self-signature %s: %w", id, err)
		}
		signed = true
	}
	if !signed {
		return nil, fmt.Errorf("%w: key response is not signed by %s with a key it lists", rooms.ErrSignature, serverName)
	}
	return &keyResponse{server: serverName, from: from, raw: append(jsontext.Value(nil), raw...),
		validUntil: validUntil, fetched: nowMS, keys: keys}, nil
}

// usableKeyID reports whether id names an ed25519 key this server can
// keep: one with a NUL character is no use to any event, and PostgreSQL
// could not store it (its failure would lose the response's other keys
// on that engine alone).
func usableKeyID(id string) bool {
	return strings.HasPrefix(id, "ed25519:") && strings.IndexByte(id, 0) < 0
}

// install merges a verified response into memory and the database.
func (k *KeyRing) install(ctx context.Context, r *keyResponse) error {
	k.mu.Lock()
	var old map[string]keyInfo
	if sk := k.servers[r.server]; sk != nil {
		old = sk.keys
	}
	k.mu.Unlock()
	merged := make(map[string]keyInfo, len(old)+len(r.keys))
	for id, ki := range old {
		merged[id] = ki
	}
	rows := make([]storage.ServerKey, 0, len(r.keys))
	for id, ki := range r.keys {
		if prev, ok := old[id]; ok {
			ki = mergeKey(prev, ki)
		}
		merged[id] = ki
		rows = append(rows, storage.ServerKey{ServerName: r.server, KeyID: id,
			PublicKey: base64.RawStdEncoding.EncodeToString(ki.pub), ValidUntilTS: ki.validUntil,
			ExpiredTS: ki.expired, FromServer: ki.from, FetchedTS: ki.fetched})
	}
	if k.o.Store != nil {
		resp := &storage.ServerKeyResponse{ServerName: r.server, FromServer: r.from,
			ValidUntilTS: r.validUntil, FetchedTS: r.fetched, JSON: r.raw}
		if err := k.o.Store.StoreServerKeys(ctx, rows, resp); err != nil {
			return err
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if sk := k.servers[r.server]; sk != nil {
		sk.keys = merged
	} else {
		k.rememberLocked(r.server, &serverKeys{keys: merged})
	}
	return nil
}

// mergeKey combines what was known of a key with a new answer about it.
// A key whose bytes changed is taken as new. A key moved to
// old_verify_keys is valid until its expired_ts from then on, and an old
// key does not become current again on the word of an older cached answer.
// A current key's validity only grows: every answer was signed by the
// server, and a notary's older copy must not shorten a fresher one.
func mergeKey(prev, next keyInfo) keyInfo {
	switch {
	case !prev.pub.Equal(next.pub):
		return next
	case next.expired != 0:
		return next
	case prev.expired != 0:
		return prev
	case prev.validUntil > next.validUntil:
		next.validUntil = prev.validUntil
	}
	return next
}

// decodeKey decodes an unpadded base64 ed25519 public key (padding is
// tolerated).
func decodeKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("not %d bytes of base64", ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// serverNameRe is the spec's server name grammar (appendices, "Server
// name"): a DNS name, IPv4 address or bracketed IPv6 literal, and an
// optional port.
var serverNameRe = regexp.MustCompile(`^(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]{1,255})(:[0-9]{1,5})?$`)

func validServerName(s string) bool { return serverNameRe.MatchString(s) }
