package server_test

import (
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// TestInviteFiltering (MSC4155): alice's invite filter blocks, ignores or
// allows inviters by user and server glob, for invites from her own
// server and from another.
func TestInviteFiltering(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		a := fed.Start(t, e)
		b := fed.Start(t, e)
		ctx := t.Context()
		carol := newSyncUser(t, a, "carol") // alice's own server
		bob, mallory := newSyncUser(t, b, "bob"), newSyncUser(t, b, "mallory")
		n := 0
		// fresh gives each case an alice with the filter given.
		fresh := func(filter map[string]any) roomUser {
			t.Helper()
			n++
			alice := newSyncUser(t, a, "alice"+string(rune('a'+n)))
			if err := alice.cli.SetAccountData(ctx, "org.matrix.msc4155.invite_permission_config", filter); err != nil {
				t.Fatal(err)
			}
			return alice
		}
		invite := func(from, to roomUser) error {
			t.Helper()
			room, err := from.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
			if err != nil {
				t.Fatal(err)
			}
			_, err = from.cli.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: to.id})
			return err
		}
		invites := func(u roomUser) int {
			t.Helper()
			return len(doSync(t, u, "", "", 0).Rooms.Invite)
		}
		server := b.Cfg.ServerName

		alice := fresh(map[string]any{"blocked_users": []string{string(bob.id)}})
		acctWantErr(t, invite(bob, alice), 403, "M_INVITE_BLOCKED")
		if err := invite(mallory, alice); err != nil {
			t.Errorf("an invite from another user of the server: %v", err)
		}
		if got := invites(alice); got != 1 {
			t.Errorf("alice sees %d invites, want mallory's only", got)
		}

		alice = fresh(map[string]any{"ignored_users": []string{string(carol.id)}, "ignored_servers": []string{server}})
		if err := invite(carol, alice); err != nil {
			t.Errorf("an ignored local invite fails for the inviter: %v", err)
		}
		if err := invite(bob, alice); err != nil {
			t.Errorf("an ignored remote invite fails for the inviter: %v", err)
		}
		if got := invites(alice); got != 0 {
			t.Errorf("alice sees %d ignored invites", got)
		}
		// No invite section at all, as in Synapse (MSC4155's tests read
		// its presence as an invite shown).
		if r := acctDo(t, a, "GET", "/_matrix/client/v3/sync", alice.tok, nil); r.status != 200 || r.body["rooms"].(map[string]any)["invite"] != nil {
			t.Errorf("sync with only ignored invites: %d %v", r.status, r.body["rooms"])
		}

		// Globs on servers; an allowed user wins over a blocked server.
		alice = fresh(map[string]any{"allowed_users": []string{"@bob:*"}, "blocked_servers": []string{"127.0.0.?:*", "*"}})
		acctWantErr(t, invite(mallory, alice), 403, "M_INVITE_BLOCKED")
		acctWantErr(t, invite(carol, alice), 403, "M_INVITE_BLOCKED")
		if err := invite(bob, alice); err != nil {
			t.Errorf("an allowed user of a blocked server: %v", err)
		}
		if got := invites(alice); got != 1 {
			t.Errorf("alice sees %d invites, want bob's", got)
		}
		_, err := carol.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{alice.id}})
		acctWantErr(t, err, 403, "M_INVITE_BLOCKED")

		// Null lists are no rules.
		alice = fresh(map[string]any{"allowed_users": nil, "blocked_users": nil, "blocked_servers": nil})
		if err := invite(bob, alice); err != nil || invites(alice) != 1 {
			t.Errorf("null lists: %v", err)
		}
	})
}
