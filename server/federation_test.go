package server_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// Hearth federating with Hearth: servers on loopback, each named after its
// TLS federation listener, with certificates from a CA the test makes. The
// clients are mautrix-go over each server's client API.

// waitMessage long-polls u's /sync from since until a message with body
// arrives in roomID, and returns the new since.
func waitMessage(t *testing.T, u roomUser, roomID id.RoomID, since, body string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := u.cli.FullSyncRequest(t.Context(), mautrix.ReqSync{Since: since, Timeout: 2000})
		if err != nil {
			t.Fatalf("sync as %s: %v", u.id, err)
		}
		since = resp.NextBatch
		if jr, ok := resp.Rooms.Join[roomID]; ok && slices.Contains(bodies(jr.Timeline.Events), body) {
			return since
		}
	}
	t.Fatalf("%s never saw %q in %s", u.id, body, roomID)
	return since
}

func TestFederationJoinAndMessages(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		a := fed.Start(t, e)
		b := fed.Start(t, e)
		ctx := t.Context()
		alice := newSyncUser(t, a, "alice")
		bob := newSyncUser(t, b, "bob")

		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "lounge", Name: "Lounge"})
		if err != nil {
			t.Fatal(err)
		}
		alias := fmt.Sprintf("#lounge:%s", a.Cfg.ServerName)
		joined, err := bob.cli.JoinRoom(ctx, alias, nil)
		if err != nil {
			t.Fatalf("bob joins %s over federation: %v", alias, err)
		}
		if joined.RoomID != room.RoomID {
			t.Fatalf("joined %s, want %s", joined.RoomID, room.RoomID)
		}
		// bob's server has the room's state: its name, and both members.
		members, err := bob.cli.JoinedMembers(ctx, room.RoomID)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := members.Joined[alice.id]; !ok || len(members.Joined) != 2 {
			t.Errorf("joined members on bob's server: %v", members.Joined)
		}
		var name event.RoomNameEventContent
		if err := bob.cli.StateEvent(ctx, room.RoomID, event.StateRoomName, "", &name); err != nil || name.Name != "Lounge" {
			t.Errorf("room name on bob's server: %q %v", name.Name, err)
		}

		aliceSince := doSync(t, alice, "", "", 0).NextBatch
		bobSince := doSync(t, bob, "", "", 0).NextBatch
		// alice's server learned of bob's join (it accepted it).
		if m, err := a.Store.Membership(ctx, string(room.RoomID), string(bob.id)); err != nil || m != "join" {
			t.Fatalf("bob's membership on alice's server: %q %v", m, err)
		}

		if _, err := alice.cli.SendText(ctx, room.RoomID, "hello from A"); err != nil {
			t.Fatal(err)
		}
		bobSince = waitMessage(t, bob, room.RoomID, bobSince, "hello from A")
		if _, err := bob.cli.SendText(ctx, room.RoomID, "hello from B"); err != nil {
			t.Fatal(err)
		}
		aliceSince = waitMessage(t, alice, room.RoomID, aliceSince, "hello from B")
		_ = aliceSince
		_ = bobSince
	})
}
