package federation_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json/jsontext"
	"encoding/json/v2"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hearth/server/federation"
	"hearth/server/rooms"
	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// notary is a trusted key server: it answers POST /_matrix/key/v2/query
// with what answer returns for each server asked about, adding its own
// signature with key.
type notary struct {
	name   string
	key    rooms.SigningKey
	hits   atomic.Int32
	answer func(server string) [][]byte
}

func newNotary(t *testing.T, n *network, name string, answer func(server string) [][]byte) *notary {
	t.Helper()
	nt := &notary{name: name, key: testKey(t, name, "ed25519:n1"), answer: answer}
	n.add(t, name, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nt.hits.Add(1)
		var req struct {
			ServerKeys map[string]map[string]struct {
				MinimumValidUntilTS int64 `json:"minimum_valid_until_ts"`
			} `json:"server_keys"`
		}
		if r.Method != http.MethodPost || r.URL.Path != "/_matrix/key/v2/query" || json.UnmarshalRead(r.Body, &req) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		out := []jsontext.Value{}
		for server := range req.ServerKeys {
			for _, doc := range nt.answer(server) {
				signed, err := rooms.SignJSON(doc, nt.key)
				if err != nil {
					t.Error(err)
				}
				out = append(out, signed)
			}
		}
		json.MarshalWrite(w, map[string]any{"server_keys": out})
	}))
	return nt
}

// trusted is the notary as our configuration names it.
func (nt *notary) trusted() federation.TrustedKeyServer {
	return federation.TrustedKeyServer{ServerName: nt.name, VerifyKeys: map[string]ed25519.PublicKey{nt.key.KeyID: pubOf(nt.key)}}
}

func TestKeyRingFetchesFromTheServer(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		n, c := newNetwork(), newClock()
		rm := newRemote(t, n, c, "remote.test")
		ring := newRing(t, st, n, c)

		pub, validUntil, err := ring.VerifyKey(ctx, "remote.test", "ed25519:r1", c.ms(0))
		if err != nil {
			t.Fatal(err)
		}
		if !pub.Equal(pubOf(rm.key)) || validUntil != c.ms(24*time.Hour) {
			t.Fatalf("key %x valid until %d; want %x until %d", pub, validUntil, pubOf(rm.key), c.ms(24*time.Hour))
		}
		// Memory answers the next lookups.
		for range 3 {
			if _, _, err := ring.VerifyKey(ctx, "remote.test", "ed25519:r1", c.ms(time.Hour)); err != nil {
				t.Fatal(err)
			}
		}
		if got := rm.hits.Load(); got != 1 {
			t.Errorf("the server was asked %d times, want 1", got)
		}
		// The database has the key and the signed response.
		keys, err := st.ServerKeys(ctx, "remote.test")
		if err != nil || len(keys) != 1 || keys[0].KeyID != "ed25519:r1" || keys[0].FromServer != "remote.test" || keys[0].ValidUntilTS != validUntil {
			t.Fatalf("stored keys: %+v %v", keys, err)
		}
		resp, err := st.ServerKeyResponseOf(ctx, "remote.test")
		if err != nil || rooms.VerifyJSON(resp.JSON, "remote.test", "ed25519:r1", pubOf(rm.key)) != nil {
			t.Fatalf("stored response: %v", err)
		}
		// A key the server does not have is not found.
		if _, _, err := ring.VerifyKey(ctx, "remote.test", "ed25519:nope", c.ms(0)); !errors.Is(err, federation.ErrKeyNotFound) {
			t.Fatalf("unknown key ID: %v", err)
		}
	})
}

func TestKeyRingRefusesBadResponses(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		n, c := newNetwork(), newClock()
		impostor := testKey(t, "remote.test", "ed25519:r1") // same ID, other bytes below
		impostor.Private = testKey(t, "impostor", "ed25519:r1").Private
		tests := []struct {
			name  string
			build func(rm *remote) []byte
		}{
			{"signed by another key than the one listed", func(rm *remote) []byte {
				return signedDoc(t, rm.doc(c.ms(time.Hour)), impostor)
			}},
			{"tampered after signing", func(rm *remote) []byte {
				doc := rm.doc(c.ms(time.Hour))
				signed := signedDoc(t, doc, rm.key)
				var obj map[string]jsontext.Value
				json.Unmarshal(signed, &obj)
				obj["valid_until_ts"] = jsontext.Value("99999999999999")
				out, _ := json.Marshal(obj)
				return out
			}},
			{"not signed", func(rm *remote) []byte { return signedDoc(t, rm.doc(c.ms(time.Hour))) }},
			{"signed only by a key it does not list", func(rm *remote) []byte {
				other := testKey(t, "remote.test", "ed25519:other")
				return signedDoc(t, rm.doc(c.ms(time.Hour)), other)
			}},
			{"for another server", func(rm *remote) []byte {
				doc := rm.doc(c.ms(time.Hour))
				doc.ServerName = "other.test"
				other := rm.key
				other.ServerName = "other.test"
				return signedDoc(t, doc, other)
			}},
			{"no valid_until_ts", func(rm *remote) []byte { return signedDoc(t, rm.doc(0), rm.key) }},
			{"not JSON", func(rm *remote) []byte { return []byte("<html>") }},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				rm := newRemote(t, n, c, "remote.test")
				rm.serveDoc(func() []byte { return tc.build(rm) })
				ring := newRing(t, st, n, c)
				_, _, err := ring.VerifyKey(context.Background(), "remote.test", "ed25519:r1", c.ms(0))
				if !errors.Is(err, federation.ErrKeyNotFound) {
					t.Fatalf("err = %v, want ErrKeyNotFound", err)
				}
				if keys, err := st.ServerKeys(context.Background(), "remote.test"); err != nil || len(keys) != 0 {
					t.Fatalf("refused response stored: %+v %v", keys, err)
				}
			})
		}
	})
}

func TestKeyRingRefetchesStaleKeys(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		n, c := newNetwork(), newClock()
		rm := newRemote(t, n, c, "remote.test")
		validUntil := c.ms(time.Hour)
		rm.serveDoc(func() []byte { return signedDoc(t, rm.doc(validUntil), rm.key) })
		ring := newRing(t, st, n, c)

		// An event from two hours on needs more than the hour published:
		// the key is fetched, and returned with the validity it has.
		_, got, err := ring.VerifyKey(ctx, "remote.test", "ed25519:r1", c.ms(2*time.Hour))
		if err != nil || got != validUntil || rm.hits.Load() != 1 {
			t.Fatalf("valid until %d (want %d), %v, %d fetches", got, validUntil, err, rm.hits.Load())
		}
		// Asked again at once, the server is not bothered again.
		if _, got, err := ring.VerifyKey(ctx, "remote.test", "ed25519:r1", c.ms(2*time.Hour)); err != nil || got != validUntil || rm.hits.Load() != 1 {
			t.Fatalf("valid until %d, %v, %d fetches", got, err, rm.hits.Load())
		}
		// Later, the server publishes a longer validity: refetched.
		c.Advance(2 * time.Minute)
		validUntil = c.ms(3 * 24 * time.Hour)
		if _, got, err := ring.VerifyKey(ctx, "remote.test", "ed25519:r1", c.ms(2*time.Hour)); err != nil || got != validUntil || rm.hits.Load() != 2 {
			t.Fatalf("after refetch: valid until %d (want %d), %v, %d fetches", got, validUntil, err, rm.hits.Load())
		}
		// Once that has passed too, a request (valid now) refetches.
		c.Advance(4 * 24 * time.Hour)
		validUntil = c.ms(24 * time.Hour)
		if _, got, err := ring.VerifyKey(ctx, "remote.test", "ed25519:r1", c.ms(0)); err != nil || got != validUntil || rm.hits.Load() != 3 {
			t.Fatalf("after expiry: valid until %d (want %d), %v, %d fetches", got, validUntil, err, rm.hits.Load())
		}
	})
}

func TestKeyRingCapsValidityAtSevenDays(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		n, c := newNetwork(), newClock()
		rm := newRemote(t, n, c, "remote.test")
		rm.serveDoc(func() []byte { return signedDoc(t, rm.doc(c.ms(365*24*time.Hour)), rm.key) })
		ring := newRing(t, st, n, c)
		_, got, err := ring.VerifyKey(context.Background(), "remote.test", "ed25519:r1", c.ms(0))
		if want := c.ms(7 * 24 * time.Hour); err != nil || got != want {
			t.Fatalf("valid until %d, %v; want %d (now + 7 days)", got, err, want)
		}
	})
}

func TestKeyRingKeepsOldKeysForOldEvents(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		n, c := newNetwork(), newClock()
		rm := newRemote(t, n, c, "remote.test")
		old := testKey(t, "remote.test", "ed25519:r0")
		expired := c.ms(-24 * time.Hour)
		rm.serveDoc(func() []byte {
			doc := rm.doc(c.ms(24 * time.Hour))
			doc.OldVerifyKeys = map[string]map[string]any{old.KeyID: {"key": b64(pubOf(old)), "expired_ts": expired}}
			return signedDoc(t, doc, rm.key)
		})
		ring := newRing(t, st, n, c)

		// An event sent two days ago, signed with the old key, verifies.
		rv := rooms.MustVersion("10")
		ev, err := rooms.BuildEvent(rv, rooms.EventTemplate{RoomID: "!r:remote.test", Type: "m.room.message",
			Sender: "@a:remote.test", Content: map[string]any{"body": "old"}, Depth: 5,
			OriginServerTS: c.ms(-48 * time.Hour), PrevEvents: []string{"$p"}, AuthEvents: []string{"$a"}}, old)
		if err != nil {
			t.Fatal(err)
		}
		if err := rooms.VerifySignatures(ev, ring.Lookup(ctx)); err != nil {
			t.Fatalf("event signed with the old key before it expired: %v", err)
		}
		// One sent an hour ago with it does not: the key had expired.
		late, err := rooms.BuildEvent(rv, rooms.EventTemplate{RoomID: "!r:remote.test", Type: "m.room.message",
			Sender: "@a:remote.test", Content: map[string]any{"body": "late"}, Depth: 6,
			OriginServerTS: c.ms(-time.Hour), PrevEvents: []string{"$p"}, AuthEvents: []string{"$a"}}, old)
		if err != nil {
			t.Fatal(err)
		}
		if err := rooms.VerifySignatures(late, ring.Lookup(ctx)); !errors.Is(err, rooms.ErrSignature) {
			t.Fatalf("event signed with the old key after it expired: %v", err)
		}
		// The current key verifies a current event.
		cur, err := rooms.BuildEvent(rv, rooms.EventTemplate{RoomID: "!r:remote.test", Type: "m.room.message",
			Sender: "@a:remote.test", Content: map[string]any{"body": "now"}, Depth: 7,
			OriginServerTS: c.ms(0), PrevEvents: []string{"$p"}, AuthEvents: []string{"$a"}}, rm.key)
		if err != nil {
			t.Fatal(err)
		}
		if err := rooms.VerifySignatures(cur, ring.Lookup(ctx)); err != nil {
			t.Fatalf("event signed with the current key: %v", err)
		}
		// The old key is stored as old.
		keys, err := st.ServerKeys(ctx, "remote.test")
		if err != nil || len(keys) != 2 || keys[0].KeyID != old.KeyID || keys[0].ExpiredTS != expired || keys[0].ValidUntilTS != expired {
			t.Fatalf("stored keys: %+v %v", keys, err)
		}
	})
}

func TestKeyRingAsksNotariesWhenTheServerFails(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		n, c := newNetwork(), newClock()
		rm := newRemote(t, n, c, "remote.test")
		rm.fail()
		good := func(string) [][]byte { return [][]byte{signedDoc(t, rm.doc(c.ms(12*time.Hour)), rm.key)} }

		// A notary signing with a key other than the one configured for
		// it is not believed.
		liar := newNotary(t, n, "liar.test", good)
		liarTrusted := liar.trusted()
		liarTrusted.VerifyKeys = map[string]ed25519.PublicKey{liar.key.KeyID: pubOf(testKey(t, "elsewhere", "ed25519:n1"))}
		// Nor one vouching for a response the origin did not sign.
		forger := newNotary(t, n, "forger.test", func(string) [][]byte {
			return [][]byte{signedDoc(t, rm.doc(c.ms(12*time.Hour)), testKey(t, "forged", "ed25519:r1"))}
		})
		ring := newRing(t, st, n, c, liarTrusted, forger.trusted())
		if _, _, err := ring.VerifyKey(ctx, "remote.test", "ed25519:r1", c.ms(0)); !errors.Is(err, federation.ErrKeyNotFound) {
			t.Fatalf("bad notaries believed: %v", err)
		}
		if rm.hits.Load() != 1 || liar.hits.Load() != 1 || forger.hits.Load() != 1 {
			t.Fatalf("asked server %d, liar %d, forger %d times; want once each", rm.hits.Load(), liar.hits.Load(), forger.hits.Load())
		}

		// A good notary, after the bad ones, is.
		honest := newNotary(t, n, "notary.test", good)
		ring = newRing(t, st, n, c, liarTrusted, forger.trusted(), honest.trusted())
		pub, validUntil, err := ring.VerifyKey(ctx, "remote.test", "ed25519:r1", c.ms(0))
		if err != nil || !pub.Equal(pubOf(rm.key)) || validUntil != c.ms(12*time.Hour) {
			t.Fatalf("through the notary: %x until %d, %v", pub, validUntil, err)
		}
		keys, err := st.ServerKeys(ctx, "remote.test")
		if err != nil || len(keys) != 1 || keys[0].FromServer != "notary.test" {
			t.Fatalf("stored keys: %+v %v", keys, err)
		}
		// The response is kept with both signatures.
		resp, err := st.ServerKeyResponseOf(ctx, "remote.test")
		if err != nil {
			t.Fatal(err)
		}
		if err := rooms.VerifyJSON(resp.JSON, "remote.test", "ed25519:r1", pubOf(rm.key)); err != nil {
			t.Errorf("origin signature: %v", err)
		}
		if err := rooms.VerifyJSON(resp.JSON, "notary.test", "ed25519:n1", pubOf(honest.key)); err != nil {
			t.Errorf("notary signature: %v", err)
		}
	})
}

func TestKeyRingPersists(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		n, c := newNetwork(), newClock()
		rm := newRemote(t, n, c, "remote.test")
		if _, _, err := newRing(t, st, n, c).VerifyKey(ctx, "remote.test", "ed25519:r1", c.ms(0)); err != nil {
			t.Fatal(err)
		}
		// A new key ring on the same database (a restart) needs no fetch,
		// even with the server gone.
		rm.fail()
		pub, _, err := newRing(t, st, newNetwork(), c).VerifyKey(ctx, "remote.test", "ed25519:r1", c.ms(time.Hour))
		if err != nil || !pub.Equal(pubOf(rm.key)) {
			t.Fatalf("after restart: %x %v", pub, err)
		}
		if rm.hits.Load() != 1 {
			t.Fatalf("fetched %d times, want 1", rm.hits.Load())
		}
	})
}

func TestKeyRingSharesConcurrentFetches(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		n, c := newNetwork(), newClock()
		rm := newRemote(t, n, c, "remote.test")
		gate := make(chan struct{})
		rm.mu.Lock()
		rm.gate = gate
		rm.mu.Unlock()
		ring := newRing(t, st, n, c)

		const lookups = 20
		var wg sync.WaitGroup
		errs := make(chan error, lookups)
		for range lookups {
			wg.Go(func() {
				_, _, err := ring.VerifyKey(context.Background(), "remote.test", "ed25519:r1", c.ms(0))
				errs <- err
			})
		}
		// Let the one request in once every lookup has had time to queue.
		deadline := time.Now().Add(5 * time.Second)
		for rm.hits.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond)
		close(gate)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if got := rm.hits.Load(); got != 1 {
			t.Fatalf("%d concurrent lookups made %d fetches, want 1", lookups, got)
		}
	})
}

func TestKeyRingBacksOffFailingServers(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		n, c := newNetwork(), newClock()
		rm := newRemote(t, n, c, "remote.test")
		rm.fail()
		ring := newRing(t, st, n, c)
		lookup := func() error {
			_, _, err := ring.VerifyKey(ctx, "remote.test", "ed25519:r1", c.ms(0))
			return err
		}
		for range 5 {
			if err := lookup(); !errors.Is(err, federation.ErrKeyNotFound) {
				t.Fatalf("err = %v", err)
			}
		}
		if rm.hits.Load() != 1 {
			t.Fatalf("a failing server was asked %d times at once, want 1", rm.hits.Load())
		}
		// After a minute it is asked again; after a second failure, it
		// waits two.
		c.Advance(61 * time.Second)
		lookup()
		c.Advance(61 * time.Second)
		lookup()
		if rm.hits.Load() != 2 {
			t.Fatalf("asked %d times, want 2 (backing off)", rm.hits.Load())
		}
		// Once it answers, lookups succeed.
		rm.serveDoc(func() []byte { return signedDoc(t, rm.doc(c.ms(time.Hour)), rm.key) })
		c.Advance(61 * time.Second)
		if err := lookup(); err != nil || rm.hits.Load() != 3 {
			t.Fatalf("after recovery: %v, %d fetches", err, rm.hits.Load())
		}
	})
}

func TestKeyRingAnswersForItselfWithoutIO(t *testing.T) {
	n, c := newNetwork(), newClock()
	old := testKey(t, "hearth.test", "ed25519:h0")
	own := testKey(t, "hearth.test", "ed25519:h1")
	ring := federation.NewKeyRing(federation.KeyRingOptions{Key: own, Client: n.client(), Now: c.Now, Log: quietLog(),
		OldKeys: []federation.OldKey{{KeyID: old.KeyID, Public: pubOf(old), ExpiredTS: c.ms(-time.Hour)}}})
	ctx := context.Background()
	pub, until, err := ring.VerifyKey(ctx, "hearth.test", "ed25519:h1", c.ms(0))
	if err != nil || !pub.Equal(pubOf(own)) || until != c.ms(federation.DefaultKeyValidity) {
		t.Fatalf("own key: %x until %d, %v", pub, until, err)
	}
	pub, until, err = ring.VerifyKey(ctx, "hearth.test", "ed25519:h0", c.ms(-2*time.Hour))
	if err != nil || !pub.Equal(pubOf(old)) || until != c.ms(-time.Hour) {
		t.Fatalf("own old key: %x until %d, %v", pub, until, err)
	}
	if _, _, err := ring.VerifyKey(ctx, "hearth.test", "ed25519:nope", c.ms(0)); !errors.Is(err, federation.ErrKeyNotFound) {
		t.Fatalf("unknown own key: %v", err)
	}
	// Not a server name: refused before any I/O.
	if _, _, err := ring.VerifyKey(ctx, "bad/name", "ed25519:x", 0); !errors.Is(err, federation.ErrKeyNotFound) {
		t.Fatalf("bad server name: %v", err)
	}

	// The published response lists both, self-signed, valid for a day.
	raw, err := ring.OwnServerKeys()
	if err != nil {
		t.Fatal(err)
	}
	if err := rooms.VerifyJSON(raw, "hearth.test", own.KeyID, pubOf(own)); err != nil {
		t.Fatalf("self-signature: %v", err)
	}
	var doc keyDoc
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.ServerName != "hearth.test" || doc.ValidUntilTS != c.ms(24*time.Hour) ||
		doc.VerifyKeys[own.KeyID]["key"] != b64(pubOf(own)) ||
		doc.OldVerifyKeys[old.KeyID]["key"] != b64(pubOf(old)) || doc.OldVerifyKeys[old.KeyID]["expired_ts"] != float64(c.ms(-time.Hour)) {
		t.Fatalf("published: %s", raw)
	}
}

// A key response may list a key whose ID has a NUL character: no event
// can name it usefully, and PostgreSQL cannot store it, so it is left
// out, and the response's other keys are kept, on both engines.
func TestKeyRingLeavesOutKeyIDsWithNUL(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		n, c := newNetwork(), newClock()
		rm := newRemote(t, n, c, "remote.test")
		odd := testKey(t, "remote.test", "ed25519:o1")
		rm.serveDoc(func() []byte {
			doc := rm.doc(c.ms(24 * time.Hour))
			doc.OldVerifyKeys = map[string]map[string]any{"ed25519:o\x00": {"key": b64(pubOf(odd)), "expired_ts": c.ms(-time.Hour)}}
			return signedDoc(t, doc, rm.key)
		})
		if _, _, err := newRing(t, st, n, c).VerifyKey(ctx, "remote.test", "ed25519:r1", c.ms(0)); err != nil {
			t.Fatalf("the current key of a response that also lists a key ID with a NUL character: %v", err)
		}
		keys, err := st.ServerKeys(ctx, "remote.test")
		if err != nil || len(keys) != 1 || keys[0].KeyID != "ed25519:r1" {
			t.Fatalf("stored keys: %+v %v", keys, err)
		}
	})
}
