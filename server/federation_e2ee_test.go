package server_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/server/servertest"
	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// End-to-end encryption across two Hearth servers: alice on a, bob on b,
// in one room of alice's. The clients only ever talk to their own server.

type fedPair struct {
	a, b       *servertest.Bundle
	alice, bob *e2eeUser
	room       id.RoomID
}

func newFedPair(t *testing.T, e storagetest.Engine) *fedPair {
	t.Helper()
	p := newFedServers(t, e)
	p.join(t)
	return p
}

// newFedServers starts the servers and registers alice and bob.
func newFedServers(t *testing.T, e storagetest.Engine) *fedPair {
	t.Helper()
	fed := servertest.NewFederation(t)
	p := &fedPair{a: fed.Start(t, e), b: fed.Start(t, e)}
	p.alice, p.bob = newE2EEUser(t, p.a, "alice"), newE2EEUser(t, p.b, "bob")
	return p
}

// join puts alice and bob in a room of alice's.
func (p *fedPair) join(t *testing.T) {
	t.Helper()
	room, err := p.alice.cli.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "crypt"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.bob.cli.JoinRoom(t.Context(), fmt.Sprintf("#crypt:%s", p.a.Cfg.ServerName), nil); err != nil {
		t.Fatalf("bob joins over federation: %v", err)
	}
	p.room = room.RoomID
}

// syncUntil long-polls u's /sync from since until ok accepts an answer, and
// returns that answer.
func syncUntil(t *testing.T, u roomUser, since string, what string, ok func(*mautrix.RespSync) bool) *mautrix.RespSync {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		r, err := u.cli.FullSyncRequest(t.Context(), mautrix.ReqSync{Since: since, Timeout: 1000, SetPresence: event.PresenceOffline})
		if err != nil {
			t.Fatalf("sync as %s: %v", u.id, err)
		}
		if ok(r) {
			return r
		}
		since = r.NextBatch
	}
	t.Fatalf("%s never saw %s", u.id, what)
	return nil
}

func changedHas(u id.UserID) func(*mautrix.RespSync) bool {
	return func(r *mautrix.RespSync) bool { return slices.Contains(r.DeviceLists.Changed, u) }
}

// Bob's client asks his own server for alice's keys; it asks hers, and
// answers with what she published. One-time keys are claimed the same way,
// each once. A server that cannot be reached is reported in failures.
func TestFederationKeysQueryAndClaim(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		p := newFedServers(t, e)
		alice, bob := p.alice, p.bob
		alice.upload(t, p.a, map[string]any{"device_keys": alice.deviceKeys(t),
			"fallback_keys": map[string]any{"signed_curve25519:FB": alice.otk(t, true)}}).want(t, http.StatusOK, "")
		otks := alice.uploadOTKs(t, p.a, 3)
		acctDo(t, p.a, http.MethodPost, csPath, alice.tok, newCSKeys(t, alice.id).body()).want(t, http.StatusOK, "")
		// Keys first, then the room: no update crosses the query below.
		p.join(t)
		carol := newE2EEUser(t, p.a, "carol") // shares no room with bob
		carol.upload(t, p.a, map[string]any{"device_keys": carol.deviceKeys(t)}).want(t, http.StatusOK, "")

		q := bob.query(t, p.b, alice, carol)
		got, _ := dig(q.body, "device_keys", string(alice.id), string(alice.device)).(map[string]any)
		if got == nil || !verifySig(t, got, string(alice.id), "ed25519:"+string(alice.device), alice.pub) {
			t.Fatalf("alice's device keys through bob's server: %v", q.body)
		}
		if dig(q.body, "master_keys", string(alice.id)) == nil || dig(q.body, "self_signing_keys", string(alice.id)) == nil ||
			dig(q.body, "user_signing_keys", string(alice.id)) != nil {
			t.Fatalf("alice's cross-signing keys through bob's server: %v", q.body)
		}
		if dig(q.body, "device_keys", string(carol.id), string(carol.device)) == nil {
			t.Fatalf("carol's keys: %v", q.body)
		}
		if f, _ := q.body["failures"].(map[string]any); len(f) != 0 {
			t.Fatalf("failures: %v", f)
		}
		// mautrix reads the answer as well.
		mq, err := bob.cli.QueryKeys(t.Context(), &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.id: nil}})
		if err != nil || mq.DeviceKeys[alice.id][alice.device].Keys.GetEd25519(alice.device).String() != alice.pub {
			t.Fatalf("mautrix query: %+v %v", mq, err)
		}
		// Bob's server tracks alice, so it keeps her list; carol's it
		// could not keep up to date, so it does not.
		if l, err := p.b.Store.RemoteDeviceListOf(t.Context(), string(alice.id)); err != nil || len(l.Devices) != 1 || l.CrossSigning["master"] == nil {
			t.Fatalf("alice's list on bob's server: %+v %v", l, err)
		}
		if _, err := p.b.Store.RemoteDeviceListOf(t.Context(), string(carol.id)); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("carol's list was cached: %v", err)
		}

		claimed := map[string]int{}
		for range 4 {
			for k := range bob.claim(t, p.b, alice) {
				claimed[k]++
			}
		}
		if len(claimed) != 4 || claimed["signed_curve25519:FB"] != 1 {
			t.Fatalf("claimed %v: want the three one-time keys, then the fallback", claimed)
		}
		for k := range otks {
			if claimed[k] != 1 {
				t.Fatalf("one-time key %s claimed %d times", k, claimed[k])
			}
		}

		// A server that does not answer is a failure, within the timeout;
		// the others' keys are still there.
		gone := "@dave:127.0.0.1:1"
		r := acctDo(t, p.b, http.MethodPost, "/_matrix/client/v3/keys/query", bob.tok,
			map[string]any{"device_keys": map[string]any{gone: []string{}, string(carol.id): []string{}}, "timeout": 5000})
		r.want(t, http.StatusOK, "")
		if dig(r.body, "failures", "127.0.0.1:1") == nil || dig(r.body, "device_keys", string(carol.id), string(carol.device)) == nil {
			t.Fatalf("query with an unreachable server: %v", r.body)
		}
		r = acctDo(t, p.b, http.MethodPost, "/_matrix/client/v3/keys/claim", bob.tok,
			map[string]any{"one_time_keys": map[string]any{gone: map[string]any{"D": "signed_curve25519"}}, "timeout": 5000})
		r.want(t, http.StatusOK, "")
		if dig(r.body, "failures", "127.0.0.1:1") == nil {
			t.Fatalf("claim from an unreachable server: %v", r.body)
		}
	})
}

// A change of alice's devices reaches bob's server (m.device_list_update,
// m.signing_key_update) and shows in his /sync device_lists.changed; his
// server's copy of her list follows it. Remote users joining and leaving
// show in changed and left. The same holds the other way.
func TestFederationDeviceListUpdates(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		p := newFedPair(t, e)
		alice, bob := p.alice, p.bob
		ctx := t.Context()
		since := doSync(t, bob.roomUser, "", "", 0).NextBatch
		aliceSince := doSync(t, alice.roomUser, "", "", 0).NextBatch

		// Alice's first keys: bob's server has no list of hers yet, so it
		// fetches one (GET /user/devices).
		alice.upload(t, p.a, map[string]any{"device_keys": alice.deviceKeys(t)}).want(t, http.StatusOK, "")
		since = syncUntil(t, bob.roomUser, since, "alice's first keys", changedHas(alice.id)).NextBatch
		// In step with her server: the next update applies on top.
		aliceStream := func() int64 {
			n, err := p.a.Store.DeviceListStreamID(ctx, string(alice.id))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		cached := func() *storage.RemoteDeviceList {
			l, err := p.b.Store.RemoteDeviceListOf(ctx, string(alice.id))
			if err != nil {
				return &storage.RemoteDeviceList{}
			}
			return l
		}
		waitFor(t, "bob's server to fetch alice's list", func() bool { return cached().StreamID == aliceStream() })

		// A second device: an incremental update.
		second := acctLogin(t, p.a, "alice", acctPW, "SECOND")
		alice2 := &e2eeUser{roomUser: roomUser{id: alice.id, tok: second.AccessToken, cli: acctClient(t, p.a, second.AccessToken)}, device: "SECOND", priv: alice.priv, pub: alice.pub}
		alice2.upload(t, p.a, map[string]any{"device_keys": alice2.deviceKeys(t)}).want(t, http.StatusOK, "")
		since = syncUntil(t, bob.roomUser, since, "alice's second device", changedHas(alice.id)).NextBatch
		if l := cached(); len(l.Devices) != 2 || l.StreamID != aliceStream() {
			t.Fatalf("bob's server's list of alice: %+v, her stream at %d", l, aliceStream())
		}
		if devs, _ := dig(bob.query(t, p.b, alice).body, "device_keys", string(alice.id)).(map[string]any); len(devs) != 2 {
			t.Fatalf("bob sees %d devices of alice", len(devs))
		}
		// Renaming it reaches bob too.
		acctDo(t, p.a, http.MethodPut, "/_matrix/client/v3/devices/SECOND", alice.tok,
			map[string]any{"display_name": "Alice's phone"}).want(t, http.StatusOK, "")
		since = syncUntil(t, bob.roomUser, since, "alice's renamed device", changedHas(alice.id)).NextBatch

		// Deleting it, and publishing cross-signing keys.
		acctUIA(t, p.a, http.MethodDelete, "/_matrix/client/v3/devices/SECOND", alice.tok, nil, func(s string) map[string]any {
			return acctPasswordAuth("alice", acctPW, s)
		}).want(t, http.StatusOK, "")
		since = syncUntil(t, bob.roomUser, since, "alice's deleted device", changedHas(alice.id)).NextBatch
		if devs, _ := dig(bob.query(t, p.b, alice).body, "device_keys", string(alice.id)).(map[string]any); len(devs) != 1 || devs["SECOND"] != nil {
			t.Fatalf("deleted device still listed: %v", devs)
		}
		acctDo(t, p.a, http.MethodPost, csPath, alice.tok, newCSKeys(t, alice.id).body()).want(t, http.StatusOK, "")
		since = syncUntil(t, bob.roomUser, since, "alice's cross-signing keys", changedHas(alice.id)).NextBatch
		if dig(bob.query(t, p.b, alice).body, "master_keys", string(alice.id)) == nil {
			t.Fatal("alice's master key did not reach bob")
		}

		// The other way: bob's keys reach alice's /sync.
		bob.upload(t, p.b, map[string]any{"device_keys": bob.deviceKeys(t)}).want(t, http.StatusOK, "")
		syncUntil(t, alice.roomUser, aliceSince, "bob's keys", changedHas(bob.id))

		// A remote user joining is changed; leaving, left; and bob's
		// server, which no longer shares a room with her, drops her list.
		carol := newE2EEUser(t, p.a, "carol")
		carol.upload(t, p.a, map[string]any{"device_keys": carol.deviceKeys(t)}).want(t, http.StatusOK, "")
		if _, err := carol.cli.JoinRoomByID(ctx, p.room); err != nil {
			t.Fatal(err)
		}
		since = syncUntil(t, bob.roomUser, since, "carol's join", changedHas(carol.id)).NextBatch
		bob.query(t, p.b, carol)
		if _, err := p.b.Store.RemoteDeviceListOf(ctx, string(carol.id)); err != nil {
			t.Fatalf("carol's list not cached: %v", err)
		}
		if _, err := carol.cli.LeaveRoom(ctx, p.room); err != nil {
			t.Fatal(err)
		}
		syncUntil(t, bob.roomUser, since, "carol's leave", func(r *mautrix.RespSync) bool {
			return slices.Contains(r.DeviceLists.Left, carol.id) && !slices.Contains(r.DeviceLists.Changed, carol.id)
		})
		waitFor(t, "carol's list to be dropped", func() bool {
			_, err := p.b.Store.RemoteDeviceListOf(ctx, string(carol.id))
			return errors.Is(err, storage.ErrNotFound)
		})
		// Delivered updates are forgotten by alice's server.
		waitFor(t, "alice's server to empty its outbox", func() bool {
			d, err := p.a.Store.OutboxDestinations(ctx)
			return err == nil && len(d) == 0
		})
		// Bob leaving, his server shares no room with alice: her list goes.
		if _, err := bob.cli.LeaveRoom(ctx, p.room); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "alice's list to be dropped", func() bool {
			_, err := p.b.Store.RemoteDeviceListOf(ctx, string(alice.id))
			return errors.Is(err, storage.ErrNotFound)
		})
	})
}

// To-device messages cross servers both ways, once per client
// transaction, and survive the sender's restart while the receiver is down.
func TestFederationToDevice(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		p := newFedPair(t, e)
		alice, bob := p.alice, p.bob
		ctx := t.Context()
		bobSince := doSync(t, bob.roomUser, "", "", 0).NextBatch
		aliceSince := doSync(t, alice.roomUser, "", "", 0).NextBatch
		send := func(from *e2eeUser, b *servertest.Bundle, txn string, to id.UserID, device string, n int) {
			t.Helper()
			acctDo(t, b, http.MethodPut, "/_matrix/client/v3/sendToDevice/m.test/"+txn, from.tok,
				map[string]any{"messages": map[string]any{string(to): map[string]any{device: map[string]any{"n": n}}}}).want(t, http.StatusOK, "")
		}
		// received collects the n of the m.test messages from sender.
		received := func(u roomUser, since string, sender id.UserID, want int) ([]float64, string) {
			t.Helper()
			var got []float64
			r := syncUntil(t, u, since, fmt.Sprintf("%d messages from %s", want, sender), func(r *mautrix.RespSync) bool {
				for _, ev := range r.ToDevice.Events {
					if ev.Sender == sender && ev.Type.Type == "m.test" {
						got = append(got, ev.Content.Raw["n"].(float64))
					}
				}
				return len(got) >= want
			})
			return got, r.NextBatch
		}

		send(alice, p.a, "t1", bob.id, string(bob.device), 1)
		send(alice, p.a, "t1", bob.id, string(bob.device), 1) // retried: sent once
		send(alice, p.a, "t2", bob.id, string(bob.device), 2)
		got, next := received(bob.roomUser, bobSince, alice.id, 2)
		if !slices.Equal(got, []float64{1, 2}) {
			t.Fatalf("bob got %v", got)
		}
		bobSince = next
		send(bob, p.b, "b1", alice.id, "*", 10)
		if got, _ := received(alice.roomUser, aliceSince, bob.id, 1); !slices.Equal(got, []float64{10}) {
			t.Fatalf("alice got %v", got)
		}

		// Bob's server is down: alice's message waits in her server's
		// outbox, across a restart of her server.
		p.b.FedHTTP.Close()
		send(alice, p.a, "t3", bob.id, string(bob.device), 3)
		waitFor(t, "a failed delivery to bob's server", func() bool {
			d, err := p.a.Store.DestinationByName(ctx, p.b.Cfg.ServerName)
			return err == nil && d.FailureTS != 0
		})
		p.a.Restart(t)
		p.b.Restart(t)
		// Bob's server is back; its next transaction tells alice's so.
		if _, err := bob.cli.SendText(ctx, p.room, "I'm back"); err != nil {
			t.Fatal(err)
		}
		if got, _ := received(bob.roomUser, bobSince, alice.id, 1); !slices.Equal(got, []float64{3}) {
			t.Fatalf("after the outage bob got %v", got)
		}
		waitFor(t, "alice's server to empty its outbox", func() bool {
			d, err := p.a.Store.OutboxDestinations(context.Background())
			return err == nil && len(d) == 0
		})
	})
}

// Device names reach other servers only with
// allow_device_name_lookup_over_federation: in the keys other servers
// query, and in the device list updates sent to them.
func TestFederationDeviceNames(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		for _, allow := range []bool{false, true} {
			fed := servertest.NewFederation(t)
			p := &fedPair{a: fed.Start(t, e, func(c *config.Config) { c.AllowDeviceNameLookupOverFederation = allow }), b: fed.Start(t, e)}
			p.alice, p.bob = newE2EEUser(t, p.a, "alice"), newE2EEUser(t, p.b, "bob")
			alice, bob := p.alice, p.bob
			acctDo(t, p.a, http.MethodPut, "/_matrix/client/v3/devices/"+string(alice.device), alice.tok,
				map[string]any{"display_name": "Alice's laptop"}).want(t, http.StatusOK, "")
			alice.upload(t, p.a, map[string]any{"device_keys": alice.deviceKeys(t)}).want(t, http.StatusOK, "")
			p.join(t)
			name := func() any {
				q := bob.query(t, p.b, alice)
				return dig(q.body, "device_keys", string(alice.id), string(alice.device), "unsigned", "device_display_name")
			}
			want := map[bool]any{false: nil, true: "Alice's laptop"}[allow]
			if got := name(); got != want {
				t.Fatalf("allow %v: bob sees alice's device named %v, want %v", allow, got, want)
			}
			// A rename reaches bob's server's copy.
			since := doSync(t, bob.roomUser, "", "", 0).NextBatch
			acctDo(t, p.a, http.MethodPut, "/_matrix/client/v3/devices/"+string(alice.device), alice.tok,
				map[string]any{"display_name": "Alice's phone"}).want(t, http.StatusOK, "")
			syncUntil(t, bob.roomUser, since, "the rename", changedHas(alice.id))
			want = map[bool]any{false: nil, true: "Alice's phone"}[allow]
			waitFor(t, "bob's server to have alice's device name", func() bool { return name() == want })
		}
	})
}
