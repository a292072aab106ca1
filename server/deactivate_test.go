package server_test

import (
	"net/http"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/server/servertest"
	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// Deactivation as Synapse does it, through the client API and the admin
// API, on every storage engine: the account leaves its rooms, invites are
// rejected, knocks withdrawn, devices and keys deleted, and with erase the
// profile is cleared and its messages hidden from later members.

// deactivate deactivates u through the client API (password UIA).
func deactivate(t *testing.T, b *servertest.Bundle, u roomUser, name string, erase bool) {
	t.Helper()
	acctUIA(t, b, "POST", "/_matrix/client/v3/account/deactivate", u.tok, map[string]any{"erase": erase},
		func(s string) map[string]any { return acctPasswordAuth(name, acctPW, s) }).want(t, http.StatusOK, "")
}

func TestDeactivationLeavesEverything(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob, carol := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob"), newSyncUser(t, b, "carol")

		// Bob is joined to one room, invited to another, knocking on a
		// third; he has a device with keys, account data and a key backup.
		joined := sharedRoom(t, alice, bob, carol)
		invited, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.id}})
		if err != nil {
			t.Fatal(err)
		}
		knocked, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat",
			InitialState: []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.KnockRoom(ctx, string(knocked.RoomID), &mautrix.ReqKnockRoom{}); err != nil {
			t.Fatal(err)
		}
		who, err := bob.cli.Whoami(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Store.UploadKeys(ctx, string(bob.id), string(who.DeviceID), &storage.KeyUpload{
			DeviceKeys:  []byte(`{"user_id":"` + string(bob.id) + `","device_id":"` + string(who.DeviceID) + `"}`),
			OneTimeKeys: []storage.OneTimeKey{{Algorithm: "signed_curve25519", KeyID: "AAAA", JSON: []byte(`{"key":"k"}`)}},
		}); err != nil {
			t.Fatal(err)
		}
		if err := bob.cli.SetAccountData(ctx, "org.example.settings", map[string]any{"theme": "dark"}); err != nil {
			t.Fatal(err)
		}
		if err := bob.cli.SetDisplayName(ctx, "Bob"); err != nil {
			t.Fatal(err)
		}
		if res, err := bob.cli.SearchUserDirectory(ctx, "bob", 10); err != nil || len(res.Results) != 0 {
			t.Fatalf("bob finds himself: %+v %v", res, err)
		}
		if res, err := alice.cli.SearchUserDirectory(ctx, "bob", 10); err != nil || len(res.Results) != 1 {
			t.Fatalf("alice's directory search before: %+v %v", res, err)
		}
		aliceSince := doSync(t, alice, "", "", 0).NextBatch

		deactivate(t, b, bob, "bob", false)

		for _, c := range []struct {
			room id.RoomID
			what string
		}{{joined, "joined room"}, {invited.RoomID, "invite"}, {knocked.RoomID, "knock"}} {
			if m, err := b.Store.Membership(ctx, string(c.room), string(bob.id)); err != nil || m != "leave" {
				t.Errorf("bob's %s: membership %q %v, want leave", c.what, m, err)
			}
		}
		members, err := alice.cli.JoinedMembers(ctx, joined)
		if err != nil {
			t.Fatal(err)
		}
		if _, still := members.Joined[bob.id]; still || len(members.Joined) != 2 {
			t.Errorf("joined members after bob's deactivation: %v", members.Joined)
		}
		// Alice's /sync shows him leaving.
		res := doSync(t, alice, aliceSince, "", 0)
		if jr := res.Rooms.Join[joined]; jr == nil || hasType(jr.Timeline.Events, "m.room.member") == nil {
			t.Errorf("alice's sync does not show bob leaving: %+v", res.Rooms.Join[joined])
		}
		if r, err := alice.cli.SearchUserDirectory(ctx, "bob", 10); err != nil || len(r.Results) != 0 {
			t.Errorf("alice still finds bob in the user directory: %+v %v", r, err)
		}
		// No devices, keys or account data are left, and no token works.
		if devs, err := b.Store.Devices(ctx, string(bob.id)); err != nil || len(devs) != 0 {
			t.Errorf("bob's devices: %v %v", devs, err)
		}
		if keys, err := b.Store.DeviceKeys(ctx, string(bob.id)); err != nil || len(keys) != 0 {
			t.Errorf("bob's device keys: %v %v", keys, err)
		}
		if n, err := b.Store.OneTimeKeyCounts(ctx, string(bob.id), string(who.DeviceID)); err != nil || len(n) != 0 {
			t.Errorf("bob's one-time keys: %v %v", n, err)
		}
		if _, err := b.Store.AccountDataContent(ctx, string(bob.id), "", "org.example.settings"); err != storage.ErrNotFound {
			t.Errorf("bob's account data: %v", err)
		}
		_, err = bob.cli.Whoami(ctx)
		acctWantErr(t, err, 401, "M_UNKNOWN_TOKEN")
		// Not erased: his profile stays.
		if p, err := alice.cli.GetProfile(ctx, bob.id); err != nil || p.DisplayName != "Bob" {
			t.Errorf("bob's profile after a deactivation without erase: %+v %v", p, err)
		}

		// The admin API takes the same path: carol is erased.
		adminTok := seedUser(t, b.Store, "root", "rootpw", true)
		if status, body := call(t, "POST", b.URL+"/_synapse/admin/v1/deactivate/"+string(carol.id), adminTok, map[string]any{"erase": true}); status != 200 {
			t.Fatalf("admin deactivate: %d %v", status, body)
		}
		if m, err := b.Store.Membership(ctx, string(joined), string(carol.id)); err != nil || m != "leave" {
			t.Errorf("carol's membership after the admin deactivated her: %q %v", m, err)
		}
		u, err := b.Store.UserByID(ctx, string(carol.id))
		if err != nil || !u.Deactivated || !u.Erased || u.DisplayName != "" || u.AvatarURL != "" {
			t.Errorf("carol after an erasing deactivation: %+v %v", u, err)
		}
		if status, body := call(t, "POST", b.URL+"/_synapse/admin/v1/deactivate/@nobody:hearth.test", adminTok, map[string]any{}); status != 404 || body["errcode"] != "M_NOT_FOUND" {
			t.Errorf("deactivating an unknown user: %d %v", status, body)
		}
	})
}

// TestDeactivationErase checks what erase hides: the erased user's events,
// redacted for members who were not in the room when they were sent, on
// every read path; as they were for the members who were.
func TestDeactivationErase(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob, dave := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob"), newSyncUser(t, b, "dave")
		room := sharedRoom(t, alice, bob)
		if err := bob.cli.SetDisplayName(ctx, "Bob"); err != nil {
			t.Fatal(err)
		}
		secret := send(t, bob, room, "my secret")
		if _, err := bob.cli.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{
			"msgtype": "m.text", "body": "* my edited secret",
			"m.new_content": map[string]any{"msgtype": "m.text", "body": "my edited secret"},
			"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": secret},
		}); err != nil {
			t.Fatal(err)
		}
		send(t, alice, room, "alice's words")
		deactivate(t, b, bob, "bob", true)
		if _, err := dave.cli.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}

		// Dave joined later: bob's message has no content for him, on
		// /event, /context, /messages and /sync (bodies leaves out the
		// empty ones), and carries no edit.
		ev, err := dave.cli.GetEvent(ctx, room, secret)
		if err != nil {
			t.Fatal(err)
		}
		if len(ev.Content.Raw) != 0 || ev.Unsigned.Relations != nil {
			t.Errorf("/event shows dave the erased message: %+v %+v", ev.Content.Raw, ev.Unsigned.Relations)
		}
		c, err := dave.cli.Context(ctx, room, secret, nil, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Event.Content.Raw) != 0 {
			t.Errorf("/context shows dave the erased message: %v", c.Event.Content.Raw)
		}
		if got := nonEmpty(bodies(c.EventsAfter)); !slices.Equal(got, []string{"alice's words"}) {
			t.Errorf("/context after the erased message: %v", got)
		}
		msgs, err := dave.cli.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		if got := nonEmpty(bodies(msgs.Chunk)); !slices.Equal(got, []string{"alice's words"}) {
			t.Errorf("dave's /messages bodies %v, want only alice's", got)
		}
		sync := doSync(t, dave, "", bigTimeline, 0)
		if got := nonEmpty(bodies(sync.Rooms.Join[room].Timeline.Events)); !slices.Equal(got, []string{"alice's words"}) {
			t.Errorf("dave's /sync timeline bodies %v, want only alice's", got)
		}

		// Alice was there: she still sees what bob wrote.
		ev, err = alice.cli.GetEvent(ctx, room, secret)
		if err != nil || ev.Content.Raw["body"] != "my secret" {
			t.Errorf("alice's /event of bob's message: %+v %v", ev, err)
		}
		msgs, err = alice.cli.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		if got := bodies(msgs.Chunk); !slices.Contains(got, "my secret") {
			t.Errorf("alice's /messages bodies %v", got)
		}
		// The erased profile: no name, no avatar.
		if p, err := alice.cli.GetProfile(ctx, bob.id); err == nil && (p.DisplayName != "" || p.AvatarURL.String() != "") {
			t.Errorf("bob's erased profile: %+v", p)
		}
	})
}

func nonEmpty(list []string) []string {
	return slices.DeleteFunc(list, func(s string) bool { return s == "" })
}

// TestDeactivationAcrossServers deactivates a user of one server who is
// joined to, invited to and knocking on rooms of another: the other server
// sees them leave, the invite rejected and the knock withdrawn.
func TestDeactivationAcrossServers(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		a, b := fed.Start(t, e), fed.Start(t, e)
		ctx := t.Context()
		alice, bob := newSyncUser(t, a, "alice"), newSyncUser(t, b, "bob")
		via := []string{a.Cfg.ServerName}

		joined, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.JoinRoom(ctx, string(joined.RoomID), &mautrix.ReqJoinRoom{Via: via}); err != nil {
			t.Fatalf("bob joins over federation: %v", err)
		}
		invited, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.cli.InviteUser(ctx, invited.RoomID, &mautrix.ReqInviteUser{UserID: bob.id}); err != nil {
			t.Fatal(err)
		}
		knocked, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat",
			InitialState: []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.KnockRoom(ctx, string(knocked.RoomID), &mautrix.ReqKnockRoom{Via: via}); err != nil {
			t.Fatal(err)
		}
		for room, want := range map[id.RoomID]string{joined.RoomID: "join", invited.RoomID: "invite", knocked.RoomID: "knock"} {
			if m, err := a.Store.Membership(ctx, string(room), string(bob.id)); err != nil || m != want {
				t.Fatalf("bob on alice's server before: %q %v, want %s", m, err, want)
			}
		}

		deactivate(t, b, bob, "bob", false)

		for _, room := range []id.RoomID{joined.RoomID, invited.RoomID, knocked.RoomID} {
			waitFor(t, "bob's leave of "+string(room)+" on alice's server", func() bool {
				m, _ := a.Store.Membership(ctx, string(room), string(bob.id))
				return m == "leave"
			})
		}
		if ms, err := b.Store.RoomsOfUser(ctx, string(bob.id), "join", "invite", "knock"); err != nil || len(ms) != 0 {
			t.Errorf("bob's memberships on his own server: %+v %v", ms, err)
		}
		members, err := alice.cli.JoinedMembers(ctx, joined.RoomID)
		if err != nil {
			t.Fatal(err)
		}
		if _, still := members.Joined[bob.id]; still {
			t.Errorf("bob is still a member on alice's server: %v", members.Joined)
		}
	})
}

// TestDeactivationResumed: a deactivated user still in rooms (a
// deactivation cut short by a stop, or from before deactivation left
// rooms) leaves them when the server starts.
func TestDeactivationResumed(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		room := sharedRoom(t, alice, bob)
		// The account is deactivated; the leaving never happened.
		if err := b.Store.DeactivateUser(ctx, string(bob.id), false); err != nil {
			t.Fatal(err)
		}
		if m, _ := b.Store.Membership(ctx, string(room), string(bob.id)); m != "join" {
			t.Fatalf("bob's membership before the restart: %q", m)
		}
		b.Restart(t)
		waitFor(t, "bob's leave after the restart", func() bool {
			m, _ := b.Store.Membership(ctx, string(room), string(bob.id))
			return m == "leave"
		})
	})
}
