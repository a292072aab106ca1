package server_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/server/rooms"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// Rooms across servers as Complement's federation suite exercises them:
// createRoom's invites of other servers' users, joins through the servers
// named, remote aliases for clients, /event_auth in v12 rooms and the
// deprecated v1 send_join and send_leave.

// createRoom with users of another server in invite: each gets the invite
// through their server (which signs it), with is_direct, and joins it
// naming no server (a v12 room ID names none: the inviter's is used).
func TestFederationCreateRoomInvitesRemoteUsers(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		a, b := fed.Start(t, e), fed.Start(t, e)
		ctx := t.Context()
		alice, bob := newSyncUser(t, a, "alice"), newSyncUser(t, b, "bob")
		bobSince := doSync(t, bob, "", "", 0).NextBatch
		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Invites room",
			Invite: []id.UserID{bob.id}, IsDirect: true})
		if err != nil {
			t.Fatal(err)
		}
		waitRoom(t, bob, bobSince, "the invite", func(r *mautrix.RespSync) bool {
			inv, ok := r.Rooms.Invite[room.RoomID]
			if !ok {
				return false
			}
			for _, ev := range inv.State.Events {
				if ev.Type == event.StateMember && ev.GetStateKey() == string(bob.id) {
					return ev.Content.Raw["is_direct"] == true
				}
			}
			return false
		})
		if m, err := a.Store.Membership(ctx, string(room.RoomID), string(bob.id)); err != nil || m != "invite" {
			t.Fatalf("bob on alice's server: %q %v", m, err)
		}
		if _, err := bob.cli.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatalf("bob joins naming no server: %v", err)
		}
		if m, err := a.Store.Membership(ctx, string(room.RoomID), string(bob.id)); err != nil || m != "join" {
			t.Fatalf("bob on alice's server after joining: %q %v", m, err)
		}
	})
}

// A join names the servers to go through: the room ID's own server is
// only a fallback when none is known.
func TestFederationJoinThroughNamedServers(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		a, b, c := fed.Start(t, e), fed.Start(t, e), fed.Start(t, e)
		ctx := t.Context()
		alice, carol := newSyncUser(t, a, "alice"), newSyncUser(t, c, "carol")
		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"})
		if err != nil {
			t.Fatal(err)
		}
		// b is not in the room: through b alone the join fails, though
		// the room ID names a.
		if _, err := carol.cli.JoinRoom(ctx, string(room.RoomID), &mautrix.ReqJoinRoom{Via: []string{b.Cfg.ServerName}}); err == nil {
			t.Fatal("a join through a server not in the room succeeded")
		}
		// Naming none, the room ID's server is asked.
		if _, err := carol.cli.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatalf("join naming no server: %v", err)
		}
	})
}

// A client asks for another server's alias: its server asks that
// server's directory.
func TestFederationRemoteAliasForClients(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		a, b := fed.Start(t, e), fed.Start(t, e)
		ctx := t.Context()
		alice, bob := newSyncUser(t, a, "alice"), newSyncUser(t, b, "bob")
		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		alias := id.RoomAlias("#老虎£я🤨:" + a.Cfg.ServerName)
		if _, err := alice.cli.CreateAlias(ctx, alias, room.RoomID); err != nil {
			t.Fatal(err)
		}
		got, err := bob.cli.ResolveAlias(ctx, alias)
		if err != nil {
			t.Fatalf("bob resolves %s: %v", alias, err)
		}
		if got.RoomID != room.RoomID || !slices.Contains(got.Servers, a.Cfg.ServerName) {
			t.Errorf("resolved %s to %+v", alias, got)
		}
		_, err = bob.cli.ResolveAlias(ctx, id.RoomAlias("#nothing:"+a.Cfg.ServerName))
		acctWantErr(t, err, http.StatusNotFound, "M_NOT_FOUND")
	})
}

// In a v12 room, auth_events never list the create event; an auth chain
// includes it all the same.
func TestFederationEventAuthIncludesCreateEvent(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		a, b := fed.Start(t, e), fed.Start(t, e)
		ctx := t.Context()
		alice, bob := newSyncUser(t, a, "alice"), newSyncUser(t, b, "bob")
		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "12"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.JoinRoom(ctx, string(room.RoomID), &mautrix.ReqJoinRoom{Via: []string{a.Cfg.ServerName}}); err != nil {
			t.Fatal(err)
		}
		join, err := a.Store.CurrentStateEvent(ctx, string(room.RoomID), "m.room.member", string(bob.id))
		if err != nil {
			t.Fatal(err)
		}
		var resp struct {
			AuthChain []json.RawMessage `json:"auth_chain"`
		}
		path := "/_matrix/federation/v1/event_auth/" + url.PathEscape(string(room.RoomID)) + "/" + url.PathEscape(join.EventID)
		if err := fed.Client(t, b).Do(ctx, a.Cfg.ServerName, http.MethodGet, path, nil, nil, &resp); err != nil {
			t.Fatal(err)
		}
		rv, _ := rooms.LookupVersion("12")
		createID := "$" + strings.TrimPrefix(string(room.RoomID), "!")
		var ids []string
		for _, raw := range resp.AuthChain {
			ev, err := rooms.ParseEvent(rv, raw)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, ev.ID())
		}
		if !slices.Contains(ids, createID) {
			t.Errorf("auth chain %v lacks the create event %s", ids, createID)
		}
	})
}
