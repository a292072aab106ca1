package server_test

import (
	"fmt"
	"slices"
	"strings"
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
		waitMessage(t, bob, room.RoomID, bobSince, "hello from A")
		if _, err := bob.cli.SendText(ctx, room.RoomID, "hello from B"); err != nil {
			t.Fatal(err)
		}
		waitMessage(t, alice, room.RoomID, aliceSince, "hello from B")
	})
}

// waitRoom long-polls u's /sync until check accepts an answer, and returns
// the new since.
func waitRoom(t *testing.T, u roomUser, since string, what string, check func(*mautrix.RespSync) bool) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := u.cli.FullSyncRequest(t.Context(), mautrix.ReqSync{Since: since, Timeout: 2000})
		if err != nil {
			t.Fatalf("sync as %s: %v", u.id, err)
		}
		since = resp.NextBatch
		if check(resp) {
			return since
		}
	}
	t.Fatalf("%s never saw %s", u.id, what)
	return since
}

// Invites, rejections, profile changes, kicks and bans across two servers.
func TestFederationMemberships(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		a := fed.Start(t, e)
		b := fed.Start(t, e)
		ctx := t.Context()
		alice := newSyncUser(t, a, "alice")
		bob, carol := newSyncUser(t, b, "bob"), newSyncUser(t, b, "carol")
		bobSince := doSync(t, bob, "", "", 0).NextBatch
		carolSince := doSync(t, carol, "", "", 0).NextBatch

		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Secret plans"})
		if err != nil {
			t.Fatal(err)
		}
		// An invite to a server that is not in the room yet.
		if _, err := alice.cli.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: bob.id}); err != nil {
			t.Fatalf("invite bob: %v", err)
		}
		bobSince = waitRoom(t, bob, bobSince, "the invite", func(r *mautrix.RespSync) bool {
			inv, ok := r.Rooms.Invite[room.RoomID]
			if !ok {
				return false
			}
			if n := hasType(inv.State.Events, "m.room.name"); n == nil || n.Content.Raw["name"] != "Secret plans" {
				t.Errorf("invite state lacks the room's name: %v", inv.State.Events)
			}
			return true
		})
		if _, err := bob.cli.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatalf("bob accepts the invite: %v", err)
		}
		if _, err := alice.cli.SendText(ctx, room.RoomID, "welcome"); err != nil {
			t.Fatal(err)
		}
		bobSince = waitMessage(t, bob, room.RoomID, bobSince, "welcome")

		// An invite rejected: the inviting server learns of it.
		if _, err := alice.cli.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: carol.id}); err != nil {
			t.Fatalf("invite carol: %v", err)
		}
		waitRoom(t, carol, carolSince, "the invite", func(r *mautrix.RespSync) bool {
			_, ok := r.Rooms.Invite[room.RoomID]
			return ok
		})
		if _, err := carol.cli.LeaveRoom(ctx, room.RoomID); err != nil {
			t.Fatalf("carol rejects the invite: %v", err)
		}
		waitFor(t, "carol's rejection on alice's server", func() bool {
			m, _ := a.Store.Membership(ctx, string(room.RoomID), string(carol.id))
			return m == "leave"
		})

		// bob's new display name reaches alice's server.
		if err := bob.cli.SetDisplayName(ctx, "Robert"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "bob's display name on alice's server", func() bool {
			ev, err := a.Store.CurrentStateEvent(ctx, string(room.RoomID), "m.room.member", string(bob.id))
			return err == nil && strings.Contains(string(ev.JSON), `"Robert"`)
		})

		// A kick reaches the kicked user's server; bob can no longer send.
		if _, err := alice.cli.KickUser(ctx, room.RoomID, &mautrix.ReqKickUser{UserID: bob.id, Reason: "bye"}); err != nil {
			t.Fatal(err)
		}
		waitRoom(t, bob, bobSince, "the kick", func(r *mautrix.RespSync) bool {
			_, ok := r.Rooms.Leave[room.RoomID]
			return ok
		})
		if _, err := bob.cli.SendText(ctx, room.RoomID, "still here?"); err == nil {
			t.Error("a kicked user could still send")
		}
		// A ban of a user who is not in the room reaches their server too.
		if _, err := alice.cli.BanUser(ctx, room.RoomID, &mautrix.ReqBanUser{UserID: bob.id}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "bob's ban on his own server", func() bool {
			m, _ := b.Store.Membership(ctx, string(room.RoomID), string(bob.id))
			return m == "ban"
		})
	})
}

// waitFor polls cond for up to 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A server stopped for a while gets what it missed once it is back: the
// other server sends the newest event when the stopped one next contacts
// it, and the stopped one fetches the events before it
// (/get_missing_events).
func TestFederationCatchUpAfterRestart(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		a := fed.Start(t, e)
		b := fed.Start(t, e)
		ctx := t.Context()
		alice := newSyncUser(t, a, "alice")
		bob := newSyncUser(t, b, "bob")
		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.JoinRoom(ctx, string(room.RoomID), &mautrix.ReqJoinRoom{Via: []string{a.Cfg.ServerName}}); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.cli.SendText(ctx, room.RoomID, "before"); err != nil {
			t.Fatal(err)
		}
		since := waitMessage(t, bob, room.RoomID, doSync(t, bob, "", "", 0).NextBatch, "before")

		b.Stop(t)
		var sent []string
		for i := 0; i < 5; i++ {
			body := fmt.Sprintf("while B was down %d", i)
			if _, err := alice.cli.SendText(ctx, room.RoomID, body); err != nil {
				t.Fatal(err)
			}
			sent = append(sent, body)
		}
		// A has tried B and is backing off.
		waitFor(t, "A to record B as failing", func() bool {
			d, err := a.Store.DestinationByName(ctx, b.Cfg.ServerName)
			return err == nil && d.FailureTS != 0
		})
		b.Start(t)
		// bob speaks: B contacts A, which retries B at once.
		if _, err := bob.cli.SendText(ctx, room.RoomID, "I'm back"); err != nil {
			t.Fatal(err)
		}
		var got []string
		waitRoom(t, bob, since, "the messages sent while B was down", func(r *mautrix.RespSync) bool {
			if jr, ok := r.Rooms.Join[room.RoomID]; ok {
				got = append(got, bodies(jr.Timeline.Events)...)
			}
			for _, s := range sent {
				if !slices.Contains(got, s) {
					return false
				}
			}
			return true
		})
	})
}
