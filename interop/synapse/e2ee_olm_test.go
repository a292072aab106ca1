//go:build goolm

package synapse_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/interop/synapse"
)

// End-to-end encryption between a Hearth user and a Synapse user, with
// mautrix-go's OlmMachine on its pure-Go goolm backend on both sides (the
// goolm tag, as server/e2ee_olm_test.go): every device key, cross-signing
// key and signature, one-time key claim and Olm to-device message crosses
// federation between the two, in Synapse's shapes and Hearth's.
//
//	go test -tags goolm -run TestEncryption ./interop/...

// olmRoom tells the machines that the test's room is encrypted.
type olmRoom struct{ id id.RoomID }

func (s *olmRoom) IsEncrypted(_ context.Context, r id.RoomID) (bool, error) { return r == s.id, nil }

func (s *olmRoom) GetEncryptionEvent(_ context.Context, r id.RoomID) (*event.EncryptionEventContent, error) {
	if r != s.id {
		return nil, nil
	}
	return &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}, nil
}

func (s *olmRoom) GetHistoryVisibility(context.Context, id.RoomID) (*event.HistoryVisibilityEventContent, error) {
	return &event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityShared}, nil
}

func (s *olmRoom) FindSharedRooms(context.Context, id.UserID) ([]id.RoomID, error) {
	return []id.RoomID{s.id}, nil
}

// olmUser is a user with an OlmMachine, cross-signing set up.
type olmUser struct {
	*user
	mach *crypto.OlmMachine
	// got collects the room's encrypted events seen by sync.
	got []*event.Event
}

func newOlmUser(t *testing.T, u *user, room *olmRoom) *olmUser {
	t.Helper()
	log := zerolog.Nop()
	mach := crypto.NewOlmMachine(u.Client, &log, crypto.NewMemoryStore(nil), room)
	if err := mach.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := mach.ShareKeys(t.Context(), -1); err != nil {
		t.Fatalf("%s shares keys: %v", u.UserID, err)
	}
	keys, err := mach.GenerateCrossSigningKeys()
	if err != nil {
		t.Fatal(err)
	}
	// A first upload needs no user-interactive auth on either server;
	// the password is there in case one asks.
	if err := mach.PublishCrossSigningKeys(t.Context(), keys, func(uia *mautrix.RespUserInteractive) any {
		return map[string]any{"type": "m.login.password", "session": uia.Session, "password": synapse.Password,
			"identifier": map[string]any{"type": "m.id.user", "user": string(u.UserID)}}
	}); err != nil {
		t.Fatalf("%s publishes cross-signing keys: %v", u.UserID, err)
	}
	if err := mach.SignOwnMasterKey(t.Context()); err != nil {
		t.Fatalf("%s signs their master key: %v", u.UserID, err)
	}
	if err := mach.SignOwnDevice(t.Context(), mach.OwnIdentity()); err != nil {
		t.Fatalf("%s signs their device: %v", u.UserID, err)
	}
	return &olmUser{user: u, mach: mach}
}

// sync runs one /sync (long-polling a second) and feeds it to the machine.
func (o *olmUser) sync(t *testing.T, room id.RoomID) {
	t.Helper()
	resp, err := o.FullSyncRequest(t.Context(), mautrix.ReqSync{Since: o.since, Timeout: 1000, SetPresence: event.PresenceOffline})
	if err != nil {
		t.Fatalf("sync as %s: %v", o.UserID, err)
	}
	o.mach.ProcessSyncResponse(t.Context(), resp, o.since)
	o.since = resp.NextBatch
	if jr := resp.Rooms.Join[room]; jr != nil {
		for _, ev := range jr.Timeline.Events {
			if ev.Type == event.EventEncrypted {
				o.got = append(o.got, ev)
			}
		}
	}
}

// signs has o sign other's master key, as fetched through o's server, and
// waits until o holds other's device as cross-signed verified.
func (o *olmUser) signs(t *testing.T, room id.RoomID, other *olmUser) {
	t.Helper()
	var master id.Ed25519
	deadline := time.Now().Add(waitTimeout)
	for master == "" {
		theirs, err := o.QueryKeys(t.Context(), &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{other.UserID: mautrix.DeviceIDList{}}})
		if err != nil {
			t.Fatalf("%s queries %s's keys: %v", o.UserID, other.UserID, err)
		}
		for _, k := range theirs.MasterKeys[other.UserID].Keys {
			master = k
		}
		if master == "" && time.Now().After(deadline) {
			t.Fatalf("%s's server never had %s's master key", o.UserID, other.UserID)
		}
		if master == "" {
			time.Sleep(200 * time.Millisecond)
		}
	}
	if err := o.mach.SignUser(t.Context(), other.UserID, master); err != nil {
		t.Fatalf("%s signs %s: %v", o.UserID, other.UserID, err)
	}
	var trust id.TrustState
	for deadline := time.Now().Add(waitTimeout); time.Now().Before(deadline); {
		o.sync(t, room)
		dev, err := o.mach.GetOrFetchDevice(t.Context(), other.UserID, other.DeviceID)
		if err != nil {
			t.Fatalf("%s fetches %s's device: %v", o.UserID, other.UserID, err)
		}
		if trust, err = o.mach.ResolveTrustContext(t.Context(), dev); err == nil && trust == id.TrustStateCrossSignedVerified {
			return
		}
	}
	t.Fatalf("%s's device is %s to %s, want cross-signed verified", other.UserID, trust, o.UserID)
}

// send shares the room's Megolm session with members over Olm, then sends
// body encrypted with it.
func (o *olmUser) send(t *testing.T, room id.RoomID, members []id.UserID, body string) {
	t.Helper()
	if err := o.mach.ShareGroupSession(t.Context(), room, members); err != nil {
		t.Fatalf("%s shares a group session: %v", o.UserID, err)
	}
	enc, err := o.mach.EncryptMegolmEvent(t.Context(), room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: body})
	if err != nil {
		t.Fatalf("%s encrypts: %v", o.UserID, err)
	}
	if _, err := o.SendMessageEvent(t.Context(), room, event.EventEncrypted, enc); err != nil {
		t.Fatalf("%s sends: %v", o.UserID, err)
	}
}

// decrypts syncs until the room's encrypted events decrypt to want, in
// order: the Megolm session comes as a to-device message, before or after
// the room event.
func (o *olmUser) decrypts(t *testing.T, room id.RoomID, want ...string) {
	t.Helper()
	var bodies []string
	for deadline := time.Now().Add(waitTimeout); time.Now().Before(deadline); {
		o.sync(t, room)
		bodies = bodies[:0]
		for _, ev := range o.got {
			ev.RoomID = room
			if ev.Content.Parsed == nil {
				if err := ev.Content.ParseRaw(ev.Type); err != nil {
					t.Fatal(err)
				}
			}
			dec, err := o.mach.DecryptMegolmEvent(t.Context(), ev)
			if err != nil {
				break // its session has not arrived yet
			}
			if dec.Content.Parsed == nil {
				if err := dec.Content.ParseRaw(dec.Type); err != nil {
					t.Fatal(err)
				}
			}
			bodies = append(bodies, dec.Content.AsMessage().Body)
		}
		if slices.Equal(bodies, want) {
			return
		}
	}
	t.Fatalf("%s decrypted %q, want %q", o.UserID, bodies, want)
}

// A Hearth user and a Synapse user in a room of the Hearth user's: both
// cross-sign, each verifies the other's identity through their own
// server, and each decrypts the other's Megolm messages.
func TestEncryption(t *testing.T) {
	each(t, func(t *testing.T, p pair) {
		alice := p.hearthUser(t, "alice")
		bob := p.synapseUser(t, "bob")
		created := alice.createRoom(t, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "crypt"})
		if _, err := bob.JoinRoom(t.Context(), fmt.Sprintf("#crypt:%s", p.hearth.Cfg.ServerName), nil); err != nil {
			t.Fatalf("bob (Synapse) joins: %v", err)
		}
		alice.waitMembership(t, created, bob.UserID, "join")
		room := &olmRoom{id: created}
		a, b := newOlmUser(t, alice, room), newOlmUser(t, bob, room)
		a.sync(t, created)
		b.sync(t, created)

		b.signs(t, created, a)
		a.signs(t, created, b)

		members := []id.UserID{alice.UserID, bob.UserID}
		a.send(t, created, members, "secret from Hearth")
		b.decrypts(t, created, "secret from Hearth")
		b.send(t, created, members, "secret from Synapse")
		a.decrypts(t, created, "secret from Hearth", "secret from Synapse")
	})
}
