//go:build goolm

package server_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// This test runs mautrix-go's OlmMachine, with its pure-Go goolm backend,
// against Hearth: two clients publish their keys, cross-sign, establish an
// Olm session over to-device messages, share a Megolm session and decrypt
// each other's room messages. libolm needs cgo and its headers, so the
// test is behind the goolm tag:
//
//	go test -tags goolm -run TestOlmMachines ./server

// olmStateStore tells the machines that the test's room is encrypted.
type olmStateStore struct {
	room id.RoomID
}

func (s *olmStateStore) IsEncrypted(_ context.Context, r id.RoomID) (bool, error) {
	return r == s.room, nil
}

func (s *olmStateStore) GetEncryptionEvent(_ context.Context, r id.RoomID) (*event.EncryptionEventContent, error) {
	if r != s.room {
		return nil, nil
	}
	return &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}, nil
}

func (s *olmStateStore) GetHistoryVisibility(context.Context, id.RoomID) (*event.HistoryVisibilityEventContent, error) {
	return &event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityShared}, nil
}

func (s *olmStateStore) FindSharedRooms(context.Context, id.UserID) ([]id.RoomID, error) {
	return []id.RoomID{s.room}, nil
}

// olmClient is a user with an OlmMachine and its sync position.
type olmClient struct {
	e2ee  *e2eeUser
	mach  *crypto.OlmMachine
	since string
}

func newOlmClient(t *testing.T, u *e2eeUser, st *olmStateStore) *olmClient {
	t.Helper()
	log := zerolog.Nop()
	mach := crypto.NewOlmMachine(u.cli, &log, crypto.NewMemoryStore(nil), st)
	if err := mach.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := mach.ShareKeys(t.Context(), -1); err != nil {
		t.Fatalf("share keys: %v", err)
	}
	return &olmClient{e2ee: u, mach: mach}
}

// sync runs one /sync and feeds it to the machine, returning the room's
// timeline.
func (c *olmClient) sync(t *testing.T, room id.RoomID) []*event.Event {
	t.Helper()
	resp, err := c.e2ee.cli.FullSyncRequest(t.Context(), mautrix.ReqSync{Since: c.since, SetPresence: event.PresenceOffline})
	if err != nil {
		t.Fatal(err)
	}
	c.mach.ProcessSyncResponse(t.Context(), resp, c.since)
	c.since = resp.NextBatch
	if jr := resp.Rooms.Join[room]; jr != nil {
		return jr.Timeline.Events
	}
	return nil
}

// send encrypts body with the room's Megolm session, sharing it first.
func (c *olmClient) send(t *testing.T, room id.RoomID, to []id.UserID, body string) {
	t.Helper()
	if err := c.mach.ShareGroupSession(t.Context(), room, to); err != nil {
		t.Fatalf("share group session: %v", err)
	}
	enc, err := c.mach.EncryptMegolmEvent(t.Context(), room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: body})
	if err != nil {
		t.Fatalf("encrypt: %v", err)
	}
	if _, err := c.e2ee.cli.SendMessageEvent(t.Context(), room, event.EventEncrypted, enc); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// decryptAll decrypts the room's encrypted events and returns the bodies.
func (c *olmClient) decryptAll(t *testing.T, room id.RoomID, evs []*event.Event) []string {
	t.Helper()
	var out []string
	for _, ev := range evs {
		if ev.Type != event.EventEncrypted {
			continue
		}
		ev.RoomID = room
		if ev.Content.Parsed == nil {
			if err := ev.Content.ParseRaw(ev.Type); err != nil {
				t.Fatal(err)
			}
		}
		dec, err := c.mach.DecryptMegolmEvent(t.Context(), ev)
		if err != nil {
			t.Fatalf("%s decrypting %s: %v", c.e2ee.id, ev.ID, err)
		}
		if dec.Content.Parsed == nil {
			if err := dec.Content.ParseRaw(dec.Type); err != nil {
				t.Fatal(err)
			}
		}
		out = append(out, dec.Content.AsMessage().Body)
	}
	return out
}

func TestOlmMachines(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob := newE2EEUser(t, b, "alice"), newE2EEUser(t, b, "bob")
		room := sharedRoom(t, alice.roomUser, bob.roomUser)
		st := &olmStateStore{room: room}
		ac, bc := newOlmClient(t, alice, st), newOlmClient(t, bob, st)
		ac.sync(t, room)
		bc.sync(t, room)

		// Cross-signing: both publish keys (the first upload needs no
		// UIA) and sign their own device and master key; bob then signs
		// alice, so her device becomes cross-signed-verified to him.
		for _, c := range []*olmClient{ac, bc} {
			keys, err := c.mach.GenerateCrossSigningKeys()
			if err != nil {
				t.Fatal(err)
			}
			if err := c.mach.PublishCrossSigningKeys(t.Context(), keys, func(*mautrix.RespUserInteractive) any {
				t.Error("first cross-signing upload asked for UIA")
				return nil
			}); err != nil {
				t.Fatalf("publish cross-signing keys: %v", err)
			}
			if err := c.mach.SignOwnMasterKey(t.Context()); err != nil {
				t.Fatalf("sign own master key: %v", err)
			}
			if err := c.mach.SignOwnDevice(t.Context(), c.mach.OwnIdentity()); err != nil {
				t.Fatalf("sign own device: %v", err)
			}
		}
		ac.sync(t, room)
		bc.sync(t, room)
		theirs, err := bob.cli.QueryKeys(t.Context(), &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.id: nil}})
		if err != nil {
			t.Fatal(err)
		}
		var master id.Ed25519
		for _, k := range theirs.MasterKeys[alice.id].Keys {
			master = k
		}
		if err := bc.mach.SignUser(t.Context(), alice.id, master); err != nil {
			t.Fatalf("bob signs alice: %v", err)
		}
		bc.sync(t, room)
		dev, err := bc.mach.GetOrFetchDevice(t.Context(), alice.id, alice.device)
		if err != nil {
			t.Fatal(err)
		}
		if trust, err := bc.mach.ResolveTrustContext(t.Context(), dev); err != nil || trust != id.TrustStateCrossSignedVerified {
			t.Fatalf("alice's device is %s to bob (%v), want cross-signed verified", trust, err)
		}

		// Alice shares a Megolm session with bob over Olm (claiming one of
		// his one-time keys) and sends; bob decrypts, and the other way.
		members := []id.UserID{alice.id, bob.id}
		ac.send(t, room, members, "hello from alice")
		if got := bc.decryptAll(t, room, bc.sync(t, room)); len(got) != 1 || got[0] != "hello from alice" {
			t.Fatalf("bob decrypted %q", got)
		}
		bc.send(t, room, members, "hello from bob")
		// Alice's sync since before her own message brings both.
		if got := ac.decryptAll(t, room, ac.sync(t, room)); !slices.Equal(got, []string{"hello from alice", "hello from bob"}) {
			t.Fatalf("alice decrypted %q", got)
		}
		// The to-device messages carrying the keys were acknowledged by the
		// next sync and are gone.
		for _, c := range []*olmClient{ac, bc} {
			c.sync(t, room)
			r, err := c.e2ee.cli.FullSyncRequest(t.Context(), mautrix.ReqSync{SetPresence: event.PresenceOffline})
			if err != nil {
				t.Fatal(err)
			}
			if len(r.ToDevice.Events) != 0 {
				t.Fatalf("%s still has %d to-device messages", c.e2ee.id, len(r.ToDevice.Events))
			}
		}
	})
}

// untilDecrypted syncs c (long-polling) until the room's encrypted events
// received since c.since decrypt to want, in order: the Megolm session
// arrives over Olm as a to-device message, which may come before or after
// the room event.
func (c *olmClient) untilDecrypted(t *testing.T, room id.RoomID, want ...string) {
	t.Helper()
	var evs []*event.Event
	deadline := time.Now().Add(30 * time.Second)
	var got []string
	for time.Now().Before(deadline) {
		resp, err := c.e2ee.cli.FullSyncRequest(t.Context(), mautrix.ReqSync{Since: c.since, Timeout: 1000, SetPresence: event.PresenceOffline})
		if err != nil {
			t.Fatal(err)
		}
		c.mach.ProcessSyncResponse(t.Context(), resp, c.since)
		c.since = resp.NextBatch
		if jr := resp.Rooms.Join[room]; jr != nil {
			for _, ev := range jr.Timeline.Events {
				if ev.Type == event.EventEncrypted {
					evs = append(evs, ev)
				}
			}
		}
		got = got[:0]
		for _, ev := range evs {
			ev.RoomID = room
			if ev.Content.Parsed == nil {
				if err := ev.Content.ParseRaw(ev.Type); err != nil {
					t.Fatal(err)
				}
			}
			dec, err := c.mach.DecryptMegolmEvent(t.Context(), ev)
			if err != nil {
				break // its session has not arrived yet
			}
			if dec.Content.Parsed == nil {
				if err := dec.Content.ParseRaw(dec.Type); err != nil {
					t.Fatal(err)
				}
			}
			got = append(got, dec.Content.AsMessage().Body)
		}
		if slices.Equal(got, want) {
			return
		}
	}
	t.Fatalf("%s decrypted %q, want %q", c.e2ee.id, got, want)
}

// trusts syncs c until it holds other's device as cross-signed verified.
func (c *olmClient) trusts(t *testing.T, room id.RoomID, other *e2eeUser) {
	t.Helper()
	var trust id.TrustState
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		resp, err := c.e2ee.cli.FullSyncRequest(t.Context(), mautrix.ReqSync{Since: c.since, Timeout: 1000, SetPresence: event.PresenceOffline})
		if err != nil {
			t.Fatal(err)
		}
		c.mach.ProcessSyncResponse(t.Context(), resp, c.since)
		c.since = resp.NextBatch
		dev, err := c.mach.GetOrFetchDevice(t.Context(), other.id, other.device)
		if err != nil {
			t.Fatal(err)
		}
		if trust, err = c.mach.ResolveTrustContext(t.Context(), dev); err == nil && trust == id.TrustStateCrossSignedVerified {
			return
		}
	}
	t.Fatalf("%s's device is %s to %s, want cross-signed verified", other.id, trust, c.e2ee.id)
}

// The same across two servers: alice on one, bob on the other. Every key,
// signature, one-time key claim and Olm message crosses federation: the
// clients only talk to their own server.
func TestOlmMachinesAcrossServers(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		p := newFedPair(t, e)
		alice, bob, room := p.alice, p.bob, p.room
		st := &olmStateStore{room: room}
		ac, bc := newOlmClient(t, alice, st), newOlmClient(t, bob, st)
		ac.sync(t, room)
		bc.sync(t, room)

		for _, c := range []*olmClient{ac, bc} {
			keys, err := c.mach.GenerateCrossSigningKeys()
			if err != nil {
				t.Fatal(err)
			}
			if err := c.mach.PublishCrossSigningKeys(t.Context(), keys, func(*mautrix.RespUserInteractive) any {
				t.Error("first cross-signing upload asked for UIA")
				return nil
			}); err != nil {
				t.Fatalf("publish cross-signing keys: %v", err)
			}
			if err := c.mach.SignOwnMasterKey(t.Context()); err != nil {
				t.Fatalf("sign own master key: %v", err)
			}
			if err := c.mach.SignOwnDevice(t.Context(), c.mach.OwnIdentity()); err != nil {
				t.Fatalf("sign own device: %v", err)
			}
		}
		// Bob signs alice's master key, which his server fetched from hers.
		var master id.Ed25519
		waitFor(t, "alice's master key on bob's side", func() bool {
			theirs, err := bob.cli.QueryKeys(t.Context(), &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.id: nil}})
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range theirs.MasterKeys[alice.id].Keys {
				master = k
			}
			return master != ""
		})
		if err := bc.mach.SignUser(t.Context(), alice.id, master); err != nil {
			t.Fatalf("bob signs alice: %v", err)
		}
		bc.trusts(t, room, alice)

		members := []id.UserID{alice.id, bob.id}
		ac.send(t, room, members, "hello from alice")
		bc.untilDecrypted(t, room, "hello from alice")
		bc.send(t, room, members, "hello from bob")
		ac.untilDecrypted(t, room, "hello from alice", "hello from bob")
	})
}
