package server_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/server"
	"hearth/server/servertest"
	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

func ptr[T any](v T) *T { return &v }

// These tests drive the encryption endpoints with real ed25519 keys and
// hand-built key objects (the signing is done here, with mautrix's
// canonical JSON, independently of the server's verifier), over HTTP, on
// every storage engine. e2ee_olm_test.go runs mautrix's own OlmMachine
// against Hearth when built with -tags goolm.

// e2eeUser is a user with one device and its ed25519 identity key.
type e2eeUser struct {
	roomUser
	device id.DeviceID
	priv   ed25519.PrivateKey
	pub    string // unpadded base64
}

func b64(b []byte) string { return base64.RawStdEncoding.EncodeToString(b) }

func newE2EEUser(t *testing.T, b *servertest.Bundle, name string) *e2eeUser {
	t.Helper()
	r := acctRegister(t, b, name)
	cli := acctClient(t, b, r.AccessToken)
	cli.UserID, cli.DeviceID = r.UserID, r.DeviceID
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &e2eeUser{roomUser: roomUser{id: r.UserID, tok: r.AccessToken, cli: cli}, device: r.DeviceID, priv: priv, pub: b64(pub)}
}

// signJSON adds signer's signature by keyID to obj, over the canonical
// JSON of obj without signatures and unsigned (spec: "Signing JSON").
func signJSON(t *testing.T, obj map[string]any, signer id.UserID, keyID string, priv ed25519.PrivateKey) map[string]any {
	t.Helper()
	bare := map[string]any{}
	for k, v := range obj {
		if k != "signatures" && k != "unsigned" {
			bare[k] = v
		}
	}
	canon, err := canonicaljson.Marshal(bare)
	if err != nil {
		t.Fatal(err)
	}
	sigs, _ := obj["signatures"].(map[string]any)
	if sigs == nil {
		sigs = map[string]any{}
		obj["signatures"] = sigs
	}
	mine, _ := sigs[string(signer)].(map[string]any)
	if mine == nil {
		mine = map[string]any{}
		sigs[string(signer)] = mine
	}
	mine[keyID] = b64(ed25519.Sign(priv, canon))
	return obj
}

// deviceKeys builds u's signed device keys.
func (u *e2eeUser) deviceKeys(t *testing.T) map[string]any {
	curve := make([]byte, 32)
	_, _ = rand.Read(curve)
	obj := map[string]any{
		"user_id":    string(u.id),
		"device_id":  string(u.device),
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys": map[string]any{
			"curve25519:" + string(u.device): b64(curve),
			"ed25519:" + string(u.device):    u.pub,
		},
	}
	return signJSON(t, obj, u.id, "ed25519:"+string(u.device), u.priv)
}

// otk builds a signed one-time (or fallback) curve25519 key object.
func (u *e2eeUser) otk(t *testing.T, fallback bool) map[string]any {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	obj := map[string]any{"key": b64(k)}
	if fallback {
		obj["fallback"] = true
	}
	return signJSON(t, obj, u.id, "ed25519:"+string(u.device), u.priv)
}

// upload posts /keys/upload and returns the answer.
func (u *e2eeUser) upload(t *testing.T, b *servertest.Bundle, body map[string]any) acctReply {
	t.Helper()
	return acctDo(t, b, http.MethodPost, "/_matrix/client/v3/keys/upload", u.tok, body)
}

func (u *e2eeUser) uploadOTKs(t *testing.T, b *servertest.Bundle, n int) map[string]bool {
	t.Helper()
	keys := map[string]any{}
	ids := map[string]bool{}
	for i := range n {
		kid := fmt.Sprintf("signed_curve25519:%s%03d", u.device, i)
		keys[kid] = u.otk(t, false)
		ids[kid] = true
	}
	u.upload(t, b, map[string]any{"one_time_keys": keys}).want(t, http.StatusOK, "")
	return ids
}

// verifySig checks, as a client would, that obj carries a valid signature
// by signer's keyID made with pub.
func verifySig(t *testing.T, obj map[string]any, signer, keyID, pub string) bool {
	t.Helper()
	sigs, _ := obj["signatures"].(map[string]any)
	mine, _ := sigs[signer].(map[string]any)
	sig, _ := mine[keyID].(string)
	if sig == "" {
		return false
	}
	bare := map[string]any{}
	for k, v := range obj {
		if k != "signatures" && k != "unsigned" {
			bare[k] = v
		}
	}
	canon, err := canonicaljson.Marshal(bare)
	if err != nil {
		t.Fatal(err)
	}
	pk, err1 := base64.RawStdEncoding.DecodeString(pub)
	sb, err2 := base64.RawStdEncoding.DecodeString(sig)
	return err1 == nil && err2 == nil && ed25519.Verify(pk, canon, sb)
}

// dig walks nested JSON objects.
func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func (u *e2eeUser) query(t *testing.T, b *servertest.Bundle, users ...*e2eeUser) acctReply {
	t.Helper()
	want := map[string]any{}
	for _, o := range users {
		want[string(o.id)] = []string{}
	}
	r := acctDo(t, b, http.MethodPost, "/_matrix/client/v3/keys/query", u.tok, map[string]any{"device_keys": want})
	r.want(t, http.StatusOK, "")
	return r
}

func (u *e2eeUser) claim(t *testing.T, b *servertest.Bundle, target *e2eeUser) map[string]any {
	t.Helper()
	r := acctDo(t, b, http.MethodPost, "/_matrix/client/v3/keys/claim", u.tok, map[string]any{
		"one_time_keys": map[string]any{string(target.id): map[string]any{string(target.device): "signed_curve25519"}},
	})
	r.want(t, http.StatusOK, "")
	got, _ := dig(r.body, "one_time_keys", string(target.id), string(target.device)).(map[string]any)
	return got
}

// TestKeyClaimUploadOrder: one-time keys are handed out in the order they
// were uploaded (MSC4225, spec v1.15), not in key ID order: a key uploaded
// later never goes out before an older one still waiting.
func TestKeyClaimUploadOrder(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob := newE2EEUser(t, b, "alice"), newE2EEUser(t, b, "bob")
		alice.upload(t, b, map[string]any{"device_keys": alice.deviceKeys(t)}).want(t, http.StatusOK, "")
		// Uploaded newest key ID first; then two keys in one upload.
		order := []string{"signed_curve25519:ZZZ", "signed_curve25519:MMM", "signed_curve25519:AAA", "signed_curve25519:BBB"}
		alice.upload(t, b, map[string]any{"one_time_keys": map[string]any{order[0]: alice.otk(t, false)}}).want(t, http.StatusOK, "")
		alice.upload(t, b, map[string]any{"one_time_keys": map[string]any{order[1]: alice.otk(t, false)}}).want(t, http.StatusOK, "")
		alice.upload(t, b, map[string]any{"one_time_keys": map[string]any{
			order[2]: alice.otk(t, false), order[3]: alice.otk(t, false)}}).want(t, http.StatusOK, "")
		for i, want := range order {
			got := bob.claim(t, b, alice)
			if got[want] == nil || len(got) != 1 {
				t.Fatalf("claim %d = %v, want %s", i, got, want)
			}
		}
	})
}

func TestKeysUploadQueryClaim(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob := newE2EEUser(t, b, "alice"), newE2EEUser(t, b, "bob")

		// Device keys must be this device's (their self-signature is left
		// to the clients that read them, as Synapse does).
		noAlg := alice.deviceKeys(t)
		delete(noAlg, "algorithms")
		alice.upload(t, b, map[string]any{"device_keys": noAlg}).want(t, http.StatusBadRequest, "M_BAD_JSON")
		other := alice.deviceKeys(t)
		other["device_id"] = "OTHERDEVICE"
		alice.upload(t, b, map[string]any{"device_keys": signJSON(t, other, alice.id, "ed25519:"+string(alice.device), alice.priv)}).
			want(t, http.StatusBadRequest, "M_INVALID_PARAM")
		forged := bob.deviceKeys(t) // bob's key object, uploaded by alice
		alice.upload(t, b, map[string]any{"device_keys": forged}).want(t, http.StatusBadRequest, "M_INVALID_PARAM")

		dk := alice.deviceKeys(t)
		up := alice.upload(t, b, map[string]any{"device_keys": dk})
		up.want(t, http.StatusOK, "")
		if n := dig(up.body, "one_time_key_counts", "signed_curve25519"); n != float64(0) {
			t.Fatalf("counts after a keys-only upload: %v", up.body)
		}
		ids := alice.uploadOTKs(t, b, 5)
		resp, err := alice.cli.UploadKeys(t.Context(), &mautrix.ReqUploadKeys{})
		if err != nil || resp.OneTimeKeyCounts.SignedCurve25519 != 5 {
			t.Fatalf("counts via mautrix: %+v %v", resp, err)
		}
		// Re-uploading a key ID with other content is refused.
		var someID string
		for k := range ids {
			someID = k
			break
		}
		alice.upload(t, b, map[string]any{"one_time_keys": map[string]any{someID: alice.otk(t, false)}}).want(t, http.StatusBadRequest, "M_INVALID_PARAM")

		// Bob sees alice's device keys, exactly as signed, with the
		// device's display name unsigned.
		if err := alice.cli.SetDeviceInfo(t.Context(), alice.device, &mautrix.ReqDeviceInfo{DisplayName: "Alice's laptop"}); err != nil {
			t.Fatal(err)
		}
		q := bob.query(t, b, alice)
		got, _ := dig(q.body, "device_keys", string(alice.id), string(alice.device)).(map[string]any)
		if got == nil || !verifySig(t, got, string(alice.id), "ed25519:"+string(alice.device), alice.pub) {
			t.Fatalf("queried device keys do not verify: %v", q.body)
		}
		if n := dig(got, "unsigned", "device_display_name"); n != "Alice's laptop" {
			t.Fatalf("device_display_name = %v", n)
		}
		mq, err := bob.cli.QueryKeys(t.Context(), &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.id: nil}})
		if err != nil || mq.DeviceKeys[alice.id][alice.device].Keys.GetEd25519(alice.device).String() != alice.pub {
			t.Fatalf("mautrix query: %+v %v", mq, err)
		}

		// Twenty concurrent claims of five keys: each key goes out once.
		var mu sync.Mutex
		claimed := map[string]int{}
		empty := 0
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				got := bob.claim(t, b, alice)
				mu.Lock()
				defer mu.Unlock()
				if len(got) == 0 {
					empty++
				}
				for k := range got {
					claimed[k]++
				}
			})
		}
		wg.Wait()
		if len(claimed) != 5 || empty != 15 {
			t.Fatalf("claimed %v, %d empty; want the 5 keys once each", claimed, empty)
		}
		for k, n := range claimed {
			if !ids[k] || n != 1 {
				t.Fatalf("key %s claimed %d times (uploaded: %v)", k, n, ids[k])
			}
		}
		s := doSync(t, alice.roomUser, "", "", 0)
		if s.DeviceOTKCount.SignedCurve25519 != 0 || len(s.FallbackKeys) != 0 {
			t.Fatalf("sync counts after claims: %+v fallback %v", s.DeviceOTKCount, s.FallbackKeys)
		}

		// A fallback key is handed out once the one-time keys are gone,
		// and sync reports it unused until then.
		fb := alice.otk(t, true)
		alice.upload(t, b, map[string]any{"fallback_keys": map[string]any{"signed_curve25519:FB1": fb}}).want(t, http.StatusOK, "")
		s = doSync(t, alice.roomUser, "", "", 0)
		if !slices.Equal(s.FallbackKeys, []id.KeyAlgorithm{"signed_curve25519"}) {
			t.Fatalf("unused fallback types = %v", s.FallbackKeys)
		}
		one := map[string]any{"signed_curve25519:ONE": alice.otk(t, false)}
		alice.upload(t, b, map[string]any{"one_time_keys": one}).want(t, http.StatusOK, "")
		if got := bob.claim(t, b, alice); got["signed_curve25519:ONE"] == nil {
			t.Fatalf("claim with a one-time key left: %v", got)
		}
		s = doSync(t, alice.roomUser, "", "", 0)
		if len(s.FallbackKeys) != 1 {
			t.Fatal("the fallback key was used while a one-time key was left")
		}
		for range 2 { // the fallback key may be handed out again
			got := bob.claim(t, b, alice)
			if k, _ := got["signed_curve25519:FB1"].(map[string]any); k == nil || k["fallback"] != true {
				t.Fatalf("claim with only the fallback left: %v", got)
			}
		}
		s = doSync(t, alice.roomUser, "", "", 0)
		if len(s.FallbackKeys) != 0 {
			t.Fatalf("used fallback key still reported unused: %v", s.FallbackKeys)
		}
		// A new fallback key is unused again.
		alice.upload(t, b, map[string]any{"fallback_keys": map[string]any{"signed_curve25519:FB2": alice.otk(t, true)}}).want(t, http.StatusOK, "")
		if s = doSync(t, alice.roomUser, "", "", 0); len(s.FallbackKeys) != 1 {
			t.Fatalf("new fallback key not reported: %v", s.FallbackKeys)
		}
	})
}

// waitSync runs a long-polling /sync in the background.
func waitSync(t *testing.T, u roomUser, since string) <-chan *mautrix.RespSync {
	ch := make(chan *mautrix.RespSync, 1)
	go func() {
		r, err := u.cli.FullSyncRequest(t.Context(), mautrix.ReqSync{Timeout: 20000, Since: since, SetPresence: event.PresenceOffline})
		if err != nil {
			t.Errorf("long poll: %v", err)
		}
		ch <- r
	}()
	return ch
}

func recvSync(t *testing.T, ch <-chan *mautrix.RespSync) *mautrix.RespSync {
	t.Helper()
	select {
	case r := <-ch:
		if r == nil {
			t.FailNow()
		}
		return r
	case <-time.After(15 * time.Second):
		t.Fatal("the long poll did not wake")
	}
	return nil
}

func TestKeysDeviceListChanges(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob, carol := newE2EEUser(t, b, "alice"), newE2EEUser(t, b, "bob"), newE2EEUser(t, b, "carol")
		dave := newE2EEUser(t, b, "dave") // shares no room
		room := sharedRoom(t, alice.roomUser, bob.roomUser)
		since := doSync(t, bob.roomUser, "", "", 0).NextBatch

		// Alice's key upload wakes bob and shows in device_lists.changed
		// and /keys/changes; dave's does not.
		poll := waitSync(t, bob.roomUser, since)
		waitParked(t, b, 1)
		dave.upload(t, b, map[string]any{"device_keys": dave.deviceKeys(t)}).want(t, http.StatusOK, "")
		alice.upload(t, b, map[string]any{"device_keys": alice.deviceKeys(t)}).want(t, http.StatusOK, "")
		r := recvSync(t, poll)
		if !slices.Equal(r.DeviceLists.Changed, []id.UserID{alice.id}) {
			t.Fatalf("changed = %v, want alice only", r.DeviceLists.Changed)
		}
		kc, err := bob.cli.GetKeyChanges(t.Context(), since, r.NextBatch)
		if err != nil || !slices.Equal(kc.Changed, []id.UserID{alice.id}) {
			t.Fatalf("keys/changes = %+v %v", kc, err)
		}
		// Uploading the same keys again changes nothing.
		since = r.NextBatch
		same := acctDo(t, b, http.MethodPost, "/_matrix/client/v3/keys/query", bob.tok, map[string]any{"device_keys": map[string]any{string(alice.id): []string{}}})
		dk := dig(same.body, "device_keys", string(alice.id), string(alice.device)).(map[string]any)
		delete(dk, "unsigned")
		alice.upload(t, b, map[string]any{"device_keys": dk}).want(t, http.StatusOK, "")
		if r := doSync(t, bob.roomUser, since, "", 0); len(r.DeviceLists.Changed) != 0 {
			t.Fatalf("identical re-upload reported as a change: %v", r.DeviceLists.Changed)
		}

		// Renaming a device is a change; the same name again is not.
		rename := func() {
			acctDo(t, b, http.MethodPut, "/_matrix/client/v3/devices/"+string(alice.device), alice.tok,
				map[string]any{"display_name": "Alice's laptop"}).want(t, http.StatusOK, "")
		}
		rename()
		r = doSync(t, bob.roomUser, since, "", 0)
		if !slices.Equal(r.DeviceLists.Changed, []id.UserID{alice.id}) {
			t.Fatalf("renamed device: changed = %v, want alice", r.DeviceLists.Changed)
		}
		since = r.NextBatch
		rename()
		if r := doSync(t, bob.roomUser, since, "", 0); len(r.DeviceLists.Changed) != 0 {
			t.Fatalf("the same name again reported as a change: %v", r.DeviceLists.Changed)
		}

		// Carol joining makes her changed; leaving, left. Carol herself
		// sees the room's members and herself (for her other devices).
		carolSince := doSync(t, carol.roomUser, "", "", 0).NextBatch
		if _, err := carol.cli.JoinRoomByID(t.Context(), room); err != nil {
			t.Fatal(err)
		}
		r = doSync(t, bob.roomUser, since, "", 0)
		if !slices.Contains(r.DeviceLists.Changed, carol.id) {
			t.Fatalf("carol's join: changed = %v", r.DeviceLists.Changed)
		}
		if got := doSync(t, carol.roomUser, carolSince, "", 0).DeviceLists.Changed; !slices.Equal(got, sortedUserIDs(alice.id, bob.id, carol.id)) {
			t.Fatalf("carol's own sync after her join: changed = %v", got)
		}
		since = r.NextBatch
		if _, err := carol.cli.LeaveRoom(t.Context(), room); err != nil {
			t.Fatal(err)
		}
		r = doSync(t, bob.roomUser, since, "", 0)
		if !slices.Equal(r.DeviceLists.Left, []id.UserID{carol.id}) || slices.Contains(r.DeviceLists.Changed, carol.id) {
			t.Fatalf("carol's leave: %+v", r.DeviceLists)
		}
		since = r.NextBatch

		// Deleting a device deletes its keys and is a change.
		second := acctLogin(t, b, "alice", acctPW, "SECOND")
		alice2 := &e2eeUser{roomUser: roomUser{id: alice.id, tok: second.AccessToken, cli: acctClient(t, b, second.AccessToken)}, device: "SECOND", priv: alice.priv, pub: alice.pub}
		alice2.upload(t, b, map[string]any{"device_keys": alice2.deviceKeys(t), "one_time_keys": map[string]any{"signed_curve25519:X": alice2.otk(t, false)}}).want(t, http.StatusOK, "")
		since = doSync(t, bob.roomUser, since, "", 0).NextBatch
		poll = waitSync(t, bob.roomUser, since)
		waitParked(t, b, 1)
		acctUIA(t, b, http.MethodDelete, "/_matrix/client/v3/devices/SECOND", alice.tok, nil, func(s string) map[string]any {
			return acctPasswordAuth("alice", acctPW, s)
		}).want(t, http.StatusOK, "")
		r = recvSync(t, poll)
		if !slices.Equal(r.DeviceLists.Changed, []id.UserID{alice.id}) {
			t.Fatalf("device deletion: changed = %v", r.DeviceLists.Changed)
		}
		q := bob.query(t, b, alice)
		if devs, _ := dig(q.body, "device_keys", string(alice.id)).(map[string]any); len(devs) != 1 || devs["SECOND"] != nil {
			t.Fatalf("deleted device still listed: %v", devs)
		}
		if got := bob.claim(t, b, alice2); len(got) != 0 {
			t.Fatalf("deleted device's one-time key claimed: %v", got)
		}
	})
}

func TestToDevice(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob := newE2EEUser(t, b, "alice"), newE2EEUser(t, b, "bob")
		bob2tok := acctLogin(t, b, "bob", acctPW, "BOB2").AccessToken
		bob2 := roomUser{id: bob.id, tok: bob2tok, cli: acctClient(t, b, bob2tok)}
		bob2.cli.UserID = bob.id
		t0 := doSync(t, bob.roomUser, "", "", 0).NextBatch
		t0b := doSync(t, bob2, "", "", 0).NextBatch

		poll := waitSync(t, bob.roomUser, t0)
		waitParked(t, b, 1)
		send := func(txn string, msgs map[id.UserID]map[id.DeviceID]*event.Content) {
			t.Helper()
			p := fmt.Sprintf("/_matrix/client/v3/sendToDevice/m.test/%s", txn)
			acctDo(t, b, http.MethodPut, p, alice.tok, map[string]any{"messages": msgs}).want(t, http.StatusOK, "")
		}
		content := func(n int) *event.Content { return &event.Content{Raw: map[string]any{"n": n}} }
		send("t1", map[id.UserID]map[id.DeviceID]*event.Content{bob.id: {bob.device: content(1)}})
		send("t1", map[id.UserID]map[id.DeviceID]*event.Content{bob.id: {bob.device: content(1)}}) // retried: no second copy
		r := recvSync(t, poll)
		if len(r.ToDevice.Events) != 1 {
			t.Fatalf("first delivery: %d events", len(r.ToDevice.Events))
		}
		if _, err := alice.cli.SendToDevice(t.Context(), event.Type{Type: "m.test", Class: event.ToDeviceEventType},
			&mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{bob.id: {"*": content(2)}}}); err != nil {
			t.Fatal(err)
		}
		// Not acknowledged yet: syncing from t0 again delivers both.
		r = doSync(t, bob.roomUser, t0, "", 0)
		var ns []float64
		for _, ev := range r.ToDevice.Events {
			if ev.Sender != alice.id || ev.Type.Type != "m.test" {
				t.Fatalf("to-device event %+v", ev)
			}
			ns = append(ns, ev.Content.Raw["n"].(float64))
		}
		if !slices.Equal(ns, []float64{1, 2}) {
			t.Fatalf("redelivery from t0: %v", ns)
		}
		t1 := r.NextBatch
		// Syncing from t1 acknowledges them: they are deleted, so not even
		// the old token brings them back.
		if r := doSync(t, bob.roomUser, t1, "", 0); len(r.ToDevice.Events) != 0 {
			t.Fatalf("delivered again after t1: %d", len(r.ToDevice.Events))
		}
		if r := doSync(t, bob.roomUser, t0, "", 0); len(r.ToDevice.Events) != 0 {
			t.Fatalf("acknowledged messages were not deleted: %d", len(r.ToDevice.Events))
		}
		// The "*" message reached bob's other device too, and only that one.
		r = doSync(t, bob2, t0b, "", 0)
		if len(r.ToDevice.Events) != 1 || r.ToDevice.Events[0].Content.Raw["n"] != float64(2) {
			t.Fatalf("bob's second device got %d events", len(r.ToDevice.Events))
		}
		// A message to a device that does not exist is dropped, not an error.
		send("ghost", map[id.UserID]map[id.DeviceID]*event.Content{bob.id: {"NOSUCHDEVICE": content(0)}})

		// A backlog is delivered a hundred at a time, in order, none lost.
		for i := range 130 {
			send(fmt.Sprintf("bulk%d", i), map[id.UserID]map[id.DeviceID]*event.Content{bob.id: {bob.device: content(1000 + i)}})
		}
		var got []float64
		next := t1
		for range 3 {
			r := doSync(t, bob.roomUser, next, "", 0)
			if len(r.ToDevice.Events) > 100 {
				t.Fatalf("%d to-device events in one sync", len(r.ToDevice.Events))
			}
			for _, ev := range r.ToDevice.Events {
				got = append(got, ev.Content.Raw["n"].(float64))
			}
			next = r.NextBatch
		}
		if len(got) != 130 || got[0] != 1000 || got[99] != 1099 || got[129] != 1129 || !slices.IsSorted(got) {
			t.Fatalf("backlog delivered as %d messages: %v", len(got), got)
		}
	})
}

// crossSigningKey builds a cross-signing key object of usage typ.
func crossSigningKey(t *testing.T, user id.UserID, typ string) (map[string]any, ed25519.PrivateKey, string) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := b64(pub)
	return map[string]any{"user_id": string(user), "usage": []string{typ}, "keys": map[string]any{"ed25519:" + p: p}}, priv, p
}

// asKeysSignatures converts a key object to mautrix's request type.
func asKeysSignatures(t *testing.T, obj map[string]any) mautrix.ReqKeysSignatures {
	t.Helper()
	var out mautrix.ReqKeysSignatures
	raw, _ := json.Marshal(obj)
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

type csKeys struct {
	master, self, user             map[string]any
	masterPriv, selfPriv, userPriv ed25519.PrivateKey
	masterPub, selfPub, userPub    string
}

func newCSKeys(t *testing.T, user id.UserID) *csKeys {
	c := &csKeys{}
	c.master, c.masterPriv, c.masterPub = crossSigningKey(t, user, "master")
	c.self, c.selfPriv, c.selfPub = crossSigningKey(t, user, "self_signing")
	c.user, c.userPriv, c.userPub = crossSigningKey(t, user, "user_signing")
	signJSON(t, c.self, user, "ed25519:"+c.masterPub, c.masterPriv)
	signJSON(t, c.user, user, "ed25519:"+c.masterPub, c.masterPriv)
	return c
}

func (c *csKeys) body() map[string]any {
	return map[string]any{"master_key": c.master, "self_signing_key": c.self, "user_signing_key": c.user}
}

const csPath = "/_matrix/client/v3/keys/device_signing/upload"

func TestCrossSigningAndSignatures(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob, carol := newE2EEUser(t, b, "alice"), newE2EEUser(t, b, "bob"), newE2EEUser(t, b, "carol")
		sharedRoom(t, alice.roomUser, bob.roomUser, carol.roomUser)
		alice.upload(t, b, map[string]any{"device_keys": alice.deviceKeys(t)}).want(t, http.StatusOK, "")

		// A self-signing key not signed by the master key is refused.
		ac := newCSKeys(t, alice.id)
		badSelf, _, _ := crossSigningKey(t, alice.id, "self_signing")
		acctDo(t, b, http.MethodPost, csPath, alice.tok, map[string]any{"master_key": ac.master, "self_signing_key": badSelf}).
			want(t, http.StatusBadRequest, "M_INVALID_SIGNATURE")
		// The first upload needs no UIA; the same keys again neither.
		acctDo(t, b, http.MethodPost, csPath, alice.tok, ac.body()).want(t, http.StatusOK, "")
		acctDo(t, b, http.MethodPost, csPath, alice.tok, ac.body()).want(t, http.StatusOK, "")

		q := alice.query(t, b, alice)
		if dig(q.body, "master_keys", string(alice.id)) == nil || dig(q.body, "self_signing_keys", string(alice.id)) == nil ||
			dig(q.body, "user_signing_keys", string(alice.id)) == nil {
			t.Fatalf("alice's own query lacks cross-signing keys: %v", q.body)
		}
		q = bob.query(t, b, alice)
		if dig(q.body, "master_keys", string(alice.id)) == nil || dig(q.body, "user_signing_keys", string(alice.id)) != nil {
			t.Fatalf("bob sees alice's user-signing key, or not her master key: %v", q.body)
		}

		// Replacing the keys needs the password.
		repl := newCSKeys(t, alice.id)
		first := acctDo(t, b, http.MethodPost, csPath, alice.tok, repl.body())
		if first.status != http.StatusUnauthorized || first.body["flows"] == nil {
			t.Fatalf("replacement without auth: %d %v", first.status, first.body)
		}
		body := repl.body()
		body["auth"] = acctPasswordAuth("alice", "wrong password", first.body["session"].(string))
		if r := acctDo(t, b, http.MethodPost, csPath, alice.tok, body); r.status != http.StatusUnauthorized || r.errcode() != "M_FORBIDDEN" {
			t.Fatalf("wrong password: %d %v", r.status, r.body)
		}
		var done map[string]any // the request that passed UIA
		acctUIA(t, b, http.MethodPost, csPath, alice.tok, repl.body(), func(s string) map[string]any {
			done = acctPasswordAuth("alice", acctPW, s)
			return done
		}).want(t, http.StatusOK, "")
		// Repeated as it was, with its finished session: still 200 (MSC3967).
		again := repl.body()
		again["auth"] = done
		acctDo(t, b, http.MethodPost, csPath, alice.tok, again).want(t, http.StatusOK, "")
		q = bob.query(t, b, alice)
		if dig(q.body, "master_keys", string(alice.id), "keys", "ed25519:"+repl.masterPub) == nil {
			t.Fatalf("master key not replaced: %v", dig(q.body, "master_keys"))
		}
		ac = repl
		// Once a master key exists, adding a key it lacked also needs UIA.
		noUser := newCSKeys(t, bob.id)
		acctDo(t, b, http.MethodPost, csPath, bob.tok, map[string]any{"master_key": noUser.master}).want(t, http.StatusOK, "")
		if r := acctDo(t, b, http.MethodPost, csPath, bob.tok, map[string]any{"self_signing_key": noUser.self}); r.status != http.StatusUnauthorized {
			t.Fatalf("adding a self-signing key without auth: %d %v", r.status, r.body)
		}

		// Alice signs her device with her self-signing key and her master
		// key with her device.
		dev := dig(alice.query(t, b, alice).body, "device_keys", string(alice.id), string(alice.device)).(map[string]any)
		delete(dev, "unsigned")
		signJSON(t, dev, alice.id, "ed25519:"+ac.selfPub, ac.selfPriv)
		master := map[string]any{}
		for k, v := range ac.master {
			master[k] = v
		}
		signJSON(t, master, alice.id, "ed25519:"+string(alice.device), alice.priv)
		resp, err := alice.cli.UploadSignatures(t.Context(), &mautrix.ReqUploadSignatures{
			alice.id: {string(alice.device): asKeysSignatures(t, dev), ac.masterPub: asKeysSignatures(t, master)},
		})
		if err != nil || len(resp.Failures) != 0 {
			t.Fatalf("signatures upload: %+v %v", resp, err)
		}
		q = bob.query(t, b, alice)
		gotDev := dig(q.body, "device_keys", string(alice.id), string(alice.device)).(map[string]any)
		if !verifySig(t, gotDev, string(alice.id), "ed25519:"+ac.selfPub, ac.selfPub) {
			t.Fatalf("device not cross-signed in query: %v", gotDev)
		}
		if !verifySig(t, dig(q.body, "master_keys", string(alice.id)).(map[string]any), string(alice.id), "ed25519:"+string(alice.device), alice.pub) {
			t.Fatal("master key lacks the device's signature")
		}

		// Bob signs alice's master key with his user-signing key: bob sees
		// that signature, carol does not.
		bc := newCSKeys(t, bob.id)
		acctUIA(t, b, http.MethodPost, csPath, bob.tok, bc.body(), func(s string) map[string]any {
			return acctPasswordAuth("bob", acctPW, s)
		}).want(t, http.StatusOK, "")
		am := map[string]any{}
		for k, v := range ac.master {
			am[k] = v
		}
		delete(am, "signatures")
		signJSON(t, am, bob.id, "ed25519:"+bc.userPub, bc.userPriv)
		r := acctDo(t, b, http.MethodPost, "/_matrix/client/v3/keys/signatures/upload", bob.tok, map[string]any{string(alice.id): map[string]any{ac.masterPub: am}})
		r.want(t, http.StatusOK, "")
		if f, _ := r.body["failures"].(map[string]any); len(f) != 0 {
			t.Fatalf("bob's signature refused: %v", f)
		}
		if !verifySig(t, dig(bob.query(t, b, alice).body, "master_keys", string(alice.id)).(map[string]any), string(bob.id), "ed25519:"+bc.userPub, bc.userPub) {
			t.Fatal("bob does not see his signature on alice's master key")
		}
		if dig(carol.query(t, b, alice).body, "master_keys", string(alice.id), "signatures", string(bob.id)) != nil {
			t.Fatal("carol sees bob's signature on alice's master key")
		}
		// A forged signature is a failure, not stored.
		forged := map[string]any{}
		for k, v := range ac.master {
			forged[k] = v
		}
		delete(forged, "signatures")
		_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
		signJSON(t, forged, carol.id, "ed25519:"+bc.userPub, otherPriv)
		r = acctDo(t, b, http.MethodPost, "/_matrix/client/v3/keys/signatures/upload", carol.tok, map[string]any{string(alice.id): map[string]any{ac.masterPub: forged}})
		if dig(r.body, "failures", string(alice.id), ac.masterPub, "errcode") != "M_INVALID_SIGNATURE" {
			t.Fatalf("forged signature: %v", r.body)
		}
	})
}

func TestKeyBackup(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice := newE2EEUser(t, b, "alice")
		do := func(method, path string, body any) acctReply {
			t.Helper()
			return acctDo(t, b, method, "/_matrix/client/v3/room_keys/"+path, alice.tok, body)
		}
		do(http.MethodGet, "version", nil).want(t, http.StatusNotFound, "M_NOT_FOUND")
		authData := map[string]any{"public_key": "abc", "signatures": map[string]any{}}
		v := do(http.MethodPost, "version", map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": authData})
		v.want(t, http.StatusOK, "")
		if v.body["version"] != "1" {
			t.Fatalf("first version = %v", v.body)
		}
		// mautrix reads it back.
		cur, err := alice.cli.GetKeyBackupLatestVersion(t.Context())
		if err != nil || cur.Version != "1" || cur.Count != 0 || cur.AuthData.PublicKey != "abc" {
			t.Fatalf("latest version: %+v %v", cur, err)
		}

		const room, sess = "!room:hearth.test", "sess1"
		keyPath := "keys/" + esc(room) + "/" + sess
		put := func(version string, fmi, fc int, verified bool, data string) acctReply {
			t.Helper()
			return do(http.MethodPut, keyPath+"?version="+version, map[string]any{
				"first_message_index": fmi, "forwarded_count": fc, "is_verified": verified, "session_data": map[string]any{"d": data},
			})
		}
		stored := func() string {
			t.Helper()
			r := do(http.MethodGet, keyPath+"?version=1", nil)
			r.want(t, http.StatusOK, "")
			s, _ := dig(r.body, "session_data", "d").(string)
			return s
		}
		put("2", 5, 1, false, "x").want(t, http.StatusForbidden, "M_WRONG_ROOM_KEYS_VERSION")
		r := put("1", 5, 1, false, "a")
		r.want(t, http.StatusOK, "")
		etag1 := r.body["etag"]
		if r.body["count"] != float64(1) {
			t.Fatalf("count after first key: %v", r.body)
		}
		// The replacement rules (spec: "Server-side key backups").
		steps := []struct {
			name     string
			fmi, fc  int
			verified bool
			data     string
			want     string
		}{
			{"higher first_message_index is kept out", 10, 0, false, "b", "a"},
			{"lower first_message_index replaces", 2, 3, false, "c", "c"},
			{"same index, higher forwarded_count is kept out", 2, 4, false, "d", "c"},
			{"same index, lower forwarded_count replaces", 2, 1, false, "e", "e"},
			{"verified beats unverified whatever the index", 20, 9, true, "f", "f"},
			{"unverified never replaces verified", 0, 0, false, "g", "f"},
			{"verified with a lower index replaces", 1, 9, true, "h", "h"},
		}
		etag := etag1
		for _, st := range steps {
			r := put("1", st.fmi, st.fc, st.verified, st.data)
			r.want(t, http.StatusOK, "")
			if got := stored(); got != st.want {
				t.Fatalf("%s: stored %q, want %q", st.name, got, st.want)
			}
			if changed := st.want == st.data; changed == (r.body["etag"] == etag) {
				t.Fatalf("%s: etag %v → %v", st.name, etag, r.body["etag"])
			}
			etag = r.body["etag"]
		}
		// Whole-backup and per-room forms.
		do(http.MethodPut, "keys?version=1", map[string]any{"rooms": map[string]any{"!other:hearth.test": map[string]any{"sessions": map[string]any{
			"s2": map[string]any{"first_message_index": 0, "forwarded_count": 0, "is_verified": false, "session_data": map[string]any{"d": "z"}},
		}}}}).want(t, http.StatusOK, "")
		all := do(http.MethodGet, "keys?version=1", nil)
		if dig(all.body, "rooms", room, "sessions", sess, "session_data", "d") != "h" || dig(all.body, "rooms", "!other:hearth.test", "sessions", "s2") == nil {
			t.Fatalf("all keys: %v", all.body)
		}
		if rk := do(http.MethodGet, "keys/"+esc("!none:hearth.test")+"?version=1", nil); rk.status != http.StatusOK || len(rk.body["sessions"].(map[string]any)) != 0 {
			t.Fatalf("empty room: %d %v", rk.status, rk.body)
		}
		mk, err := alice.cli.GetKeyBackupForRoom(t.Context(), "1", room)
		if err != nil || len(mk.Sessions) != 1 {
			t.Fatalf("mautrix room keys: %+v %v", mk, err)
		}
		del := do(http.MethodDelete, keyPath+"?version=1", nil)
		if del.body["count"] != float64(1) {
			t.Fatalf("count after deleting one session: %v", del.body)
		}
		do(http.MethodGet, keyPath+"?version=1", nil).want(t, http.StatusNotFound, "M_NOT_FOUND")

		// A new version becomes current; writes to the old one are refused
		// with the current version named.
		do(http.MethodPost, "version", map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": authData}).want(t, http.StatusOK, "")
		if g := do(http.MethodGet, "version", nil); g.body["version"] != "2" {
			t.Fatalf("current after create: %v", g.body)
		}
		w := put("1", 0, 0, true, "late")
		w.want(t, http.StatusForbidden, "M_WRONG_ROOM_KEYS_VERSION")
		if w.body["current_version"] != "2" {
			t.Fatalf("current_version = %v", w.body["current_version"])
		}
		// auth_data can change, the algorithm cannot.
		do(http.MethodPut, "version/2", map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": map[string]any{"public_key": "new"}, "version": "2"}).want(t, http.StatusOK, "")
		if g := do(http.MethodGet, "version/2", nil); dig(g.body, "auth_data", "public_key") != "new" {
			t.Fatalf("auth_data not updated: %v", g.body)
		}
		do(http.MethodPut, "version/2", map[string]any{"algorithm": "other", "auth_data": map[string]any{}}).want(t, http.StatusBadRequest, "M_INVALID_PARAM")
		// Deleting the current version makes the previous one current;
		// its number is never reused.
		do(http.MethodDelete, "version/2", nil).want(t, http.StatusOK, "")
		do(http.MethodGet, "version/2", nil).want(t, http.StatusNotFound, "M_NOT_FOUND")
		if g := do(http.MethodGet, "version", nil); g.body["version"] != "1" {
			t.Fatalf("current after delete: %v", g.body)
		}
		v3 := do(http.MethodPost, "version", map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": authData})
		if v3.body["version"] != "3" {
			t.Fatalf("version after a deleted 2 = %v", v3.body)
		}
	})
}

// typingIn returns the m.typing user IDs of room in r, and whether there was one.
func typingIn(r *mautrix.RespSync, room id.RoomID) ([]id.UserID, bool) {
	jr := r.Rooms.Join[room]
	if jr == nil {
		return nil, false
	}
	for _, ev := range jr.Ephemeral.Events {
		if ev.Type == event.EphemeralEventTyping {
			var c struct {
				UserIDs []id.UserID `json:"user_ids"`
			}
			raw, _ := json.Marshal(ev.Content.Raw)
			_ = json.Unmarshal(raw, &c)
			return c.UserIDs, true
		}
	}
	return nil, false
}

func TestTyping(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob, carol := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob"), newSyncUser(t, b, "carol")
		room := sharedRoom(t, alice, bob)
		// A token from before any typing on the server still hears that
		// typing started and stopped (Complement's "Typing can be
		// explicitly stopped"): no typing yet must not read as an initial sync.
		fresh := sharedRoom(t, alice, bob)
		before := doSync(t, bob, "", "", 0).NextBatch
		if _, err := alice.cli.UserTyping(t.Context(), fresh, true, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.cli.UserTyping(t.Context(), fresh, false, 0); err != nil {
			t.Fatal(err)
		}
		if users, ok := typingIn(doSync(t, bob, before, "", 0), fresh); !ok || len(users) != 0 {
			t.Fatalf("stop seen from a token older than any typing: %v %v", users, ok)
		}

		since := doSync(t, bob, "", "", 0).NextBatch

		// Only members, and only for themselves.
		if _, err := carol.cli.UserTyping(t.Context(), room, true, time.Second); err == nil {
			t.Fatal("a non-member set typing")
		}
		acctDo(t, b, http.MethodPut, "/_matrix/client/v3/rooms/"+esc(string(room))+"/typing/"+esc(string(bob.id)), alice.tok,
			map[string]any{"typing": true, "timeout": 1000}).want(t, http.StatusForbidden, "M_FORBIDDEN")

		poll := waitSync(t, bob, since)
		waitParked(t, b, 1)
		start := time.Now()
		if _, err := alice.cli.UserTyping(t.Context(), room, true, 1500*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		r := recvSync(t, poll)
		if users, ok := typingIn(r, room); !ok || !slices.Equal(users, []id.UserID{alice.id}) {
			t.Fatalf("typing after the start: %v %v", users, ok)
		}
		// The timeout ends it and wakes the next long poll.
		poll = waitSync(t, bob, r.NextBatch)
		r = recvSync(t, poll)
		users, ok := typingIn(r, room)
		if !ok || len(users) != 0 {
			t.Fatalf("typing after the timeout: %v %v", users, ok)
		}
		if el := time.Since(start); el < 1400*time.Millisecond {
			t.Fatalf("typing ended after %v, before its 1.5 s timeout", el)
		}
		// Nothing more to say: a sync from here reports no typing.
		if _, ok := typingIn(doSync(t, bob, r.NextBatch, "", 0), room); ok {
			t.Fatal("typing reported again with nothing changed")
		}
		// An explicit stop is immediate; an initial sync shows who types.
		if _, err := alice.cli.UserTyping(t.Context(), room, true, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		if users, _ := typingIn(doSync(t, bob, "", "", 0), room); !slices.Equal(users, []id.UserID{alice.id}) {
			t.Fatalf("initial sync typing = %v", users)
		}
		next := doSync(t, bob, r.NextBatch, "", 0).NextBatch
		if _, err := alice.cli.UserTyping(t.Context(), room, false, 0); err != nil {
			t.Fatal(err)
		}
		if users, ok := typingIn(doSync(t, bob, next, "", 0), room); !ok || len(users) != 0 {
			t.Fatalf("after stop: %v %v", users, ok)
		}
	})
}

// presenceOf parses an m.presence event's content.
func presenceOf(ev *event.Event) *event.PresenceEventContent {
	var c event.PresenceEventContent
	raw, _ := json.Marshal(ev.Content.Raw)
	_ = json.Unmarshal(raw, &c)
	return &c
}

func TestPresence(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		clk := &movableClock{}
		b := servertest.StartWith(t, e, func(d *server.Deps) { d.Now = clk.now })
		alice, bob, carol := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob"), newSyncUser(t, b, "carol")
		room := sharedRoom(t, alice, bob)
		noPresence := func(u roomUser, since string) *mautrix.RespSync {
			t.Helper()
			r, err := u.cli.FullSyncRequest(t.Context(), mautrix.ReqSync{Since: since, SetPresence: event.PresenceOffline})
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		since := noPresence(bob, "").NextBatch

		poll := waitSync(t, bob, since)
		waitParked(t, b, 1)
		if err := alice.cli.SetPresence(t.Context(), mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "lunch"}); err != nil {
			t.Fatal(err)
		}
		r := recvSync(t, poll)
		if len(r.Presence.Events) != 1 || r.Presence.Events[0].Sender != alice.id {
			t.Fatalf("presence events: %+v", r.Presence.Events)
		}
		pc := presenceOf(r.Presence.Events[0])
		if pc.Presence != event.PresenceUnavailable || pc.StatusMessage != "lunch" {
			t.Fatalf("presence content: %+v", pc)
		}

		got, err := bob.cli.GetPresence(t.Context(), alice.id)
		if err != nil || got.Presence != event.PresenceUnavailable || got.StatusMsg != "lunch" || got.CurrentlyActive {
			t.Fatalf("GET presence: %+v %v", got, err)
		}
		if _, err := carol.cli.GetPresence(t.Context(), alice.id); err == nil {
			t.Fatal("carol, who shares no room with alice, read her presence")
		}
		acctDo(t, b, http.MethodPut, "/_matrix/client/v3/presence/"+esc(string(alice.id))+"/status", bob.tok, map[string]any{"presence": "online"}).
			want(t, http.StatusForbidden, "M_FORBIDDEN")
		acctDo(t, b, http.MethodPut, "/_matrix/client/v3/presence/"+esc(string(alice.id))+"/status", alice.tok, map[string]any{"presence": "away"}).
			want(t, http.StatusBadRequest, "M_INVALID_PARAM")

		// set_presence=online on /sync publishes; syncing again in the
		// same state does not.
		since = r.NextBatch
		if _, err := alice.cli.FullSyncRequest(t.Context(), mautrix.ReqSync{SetPresence: event.PresenceOnline}); err != nil {
			t.Fatal(err)
		}
		r = noPresence(bob, since)
		if len(r.Presence.Events) != 1 || presenceOf(r.Presence.Events[0]).Presence != event.PresenceOnline {
			t.Fatalf("after set_presence=online: %+v", r.Presence.Events)
		}
		if pc := presenceOf(r.Presence.Events[0]); !pc.CurrentlyActive || pc.StatusMessage != "lunch" {
			t.Fatalf("online presence: %+v", pc)
		}
		since = r.NextBatch
		if _, err := alice.cli.FullSyncRequest(t.Context(), mautrix.ReqSync{SetPresence: event.PresenceOnline}); err != nil {
			t.Fatal(err)
		}
		if r := noPresence(bob, since); len(r.Presence.Events) != 0 {
			t.Fatalf("unchanged presence sent again: %+v", r.Presence.Events)
		}
		// Alice goes quiet: last active ten minutes ago (written to the
		// store, so that bob, who syncs, is not taken for gone too). She
		// reads as offline at once. Presence is swept for the quiet at
		// most every 15 s, by the /sync of anyone: that publishes her
		// offline, seen from the next sync on.
		since = doSync(t, bob, since, "", 0).NextBatch
		quiet := &storage.Presence{UserID: string(alice.id), State: "online", StatusMsg: ptr("lunch"), LastActiveTS: clk.now().Add(-10 * time.Minute).UnixMilli()}
		if _, err := b.Store.SetPresence(t.Context(), quiet, false); err != nil {
			t.Fatal(err)
		}
		if got, err := bob.cli.GetPresence(t.Context(), alice.id); err != nil || got.Presence != event.PresenceOffline {
			t.Fatalf("GET presence of a gone user: %+v %v", got, err)
		}
		clk.advance(15 * time.Second)
		noPresence(carol, "") // carol may not see alice's presence, but her sync sweeps
		r = noPresence(bob, since)
		if len(r.Presence.Events) != 1 || presenceOf(r.Presence.Events[0]).Presence != event.PresenceOffline {
			t.Fatalf("gone user not published offline: %+v", r.Presence.Events)
		}
		// Her next sync brings her back online.
		since = r.NextBatch
		doSync(t, alice, "", "", 0)
		if r := noPresence(bob, since); len(r.Presence.Events) != 1 || presenceOf(r.Presence.Events[0]).Presence != event.PresenceOnline {
			t.Fatalf("back from offline: %+v", r.Presence.Events)
		}

		// Carol's initial sync has no presence of alice's; once carol
		// joins alice's room, her next sync brings it, unchanged as it is.
		carolSince := noPresence(carol, "")
		for _, ev := range carolSince.Presence.Events {
			if ev.Sender == alice.id {
				t.Fatal("carol was sent alice's presence")
			}
		}
		// Nor does an incremental one when alice's presence changes.
		if err := alice.cli.SetPresence(t.Context(), mautrix.ReqPresence{Presence: event.PresenceUnavailable}); err != nil {
			t.Fatal(err)
		}
		if r := noPresence(carol, carolSince.NextBatch); slices.ContainsFunc(r.Presence.Events, func(ev *event.Event) bool { return ev.Sender == alice.id }) {
			t.Fatalf("carol, in no room with alice, was sent her change: %+v", r.Presence.Events)
		}
		if _, err := carol.cli.JoinRoomByID(t.Context(), room); err != nil {
			t.Fatal(err)
		}
		r = noPresence(carol, carolSince.NextBatch)
		if !slices.ContainsFunc(r.Presence.Events, func(ev *event.Event) bool { return ev.Sender == alice.id }) {
			t.Fatalf("carol's sync after joining lacks alice's presence: %+v", r.Presence.Events)
		}
	})
}

// sortedUserIDs is ids in the order device_lists lists them.
func sortedUserIDs(ids ...id.UserID) []id.UserID {
	slices.Sort(ids)
	return ids
}
