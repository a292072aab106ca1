package server_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/server/federation"
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
		// Back after leaving, c knows a is in the room, but a join
		// through b alone still goes through b alone; naming none, the
		// servers c saw in the room are asked (a v12 room ID names none).
		v12, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "12"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := carol.cli.JoinRoom(ctx, string(v12.RoomID), &mautrix.ReqJoinRoom{Via: []string{a.Cfg.ServerName}}); err != nil {
			t.Fatal(err)
		}
		if _, err := carol.cli.LeaveRoom(ctx, v12.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := carol.cli.JoinRoom(ctx, string(v12.RoomID), &mautrix.ReqJoinRoom{Via: []string{b.Cfg.ServerName}}); err == nil {
			t.Fatal("a rejoin through a server not in the room succeeded")
		}
		if _, err := carol.cli.JoinRoomByID(ctx, v12.RoomID); err != nil {
			t.Fatalf("rejoin naming no server: %v", err)
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

// The deprecated v1 send_join and send_leave answer [200, answer], and
// refuse an event of another membership as v2 does.
func TestFederationSendJoinLeaveV1(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		a, b := fed.Start(t, e), fed.Start(t, e)
		ctx := t.Context()
		alice := newSyncUser(t, a, "alice")
		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		roomID := string(room.RoomID)
		cli := fed.Client(t, b)
		bkey, err := b.Cfg.LoadSigningKey()
		if err != nil {
			t.Fatal(err)
		}
		key := rooms.SigningKey{ServerName: b.Cfg.ServerName, KeyID: bkey.ID, Private: bkey.Priv}
		bob := "@bob:" + b.Cfg.ServerName
		complete := func(membership string) *rooms.Event {
			t.Helper()
			var made struct {
				Event       json.RawMessage `json:"event"`
				RoomVersion string          `json:"room_version"`
			}
			q := url.Values{"ver": {"10", "11", "12"}}
			if membership == "leave" {
				q = nil
			}
			path := "/_matrix/federation/v1/make_" + membership + "/" + url.PathEscape(roomID) + "/" + url.PathEscape(bob)
			if err := cli.Do(ctx, a.Cfg.ServerName, http.MethodGet, path, q, nil, &made); err != nil {
				t.Fatalf("make_%s: %v", membership, err)
			}
			rv, _ := rooms.LookupVersion("12")
			ev, err := rooms.CompleteProto(rv, made.Event, nil, key)
			if err != nil {
				t.Fatal(err)
			}
			return ev
		}
		send := func(endpoint string, ev *rooms.Event) ([]json.RawMessage, error) {
			var out []json.RawMessage
			path := "/_matrix/federation/v1/" + endpoint + "/" + url.PathEscape(roomID) + "/" + url.PathEscape(ev.ID())
			err := cli.Do(ctx, a.Cfg.ServerName, http.MethodPut, path, nil, json.RawMessage(ev.JSON()), &out)
			return out, err
		}
		join := complete("join")
		// A join is not a leave.
		_, err = send("send_leave", join)
		var re *federation.RemoteError
		if !errors.As(err, &re) || re.Status != http.StatusBadRequest {
			t.Errorf("a join through v1 send_leave: %v, want 400", err)
		}
		out, err := send("send_join", join)
		if err != nil {
			t.Fatalf("v1 send_join: %v", err)
		}
		var answer struct {
			State     []json.RawMessage `json:"state"`
			AuthChain []json.RawMessage `json:"auth_chain"`
		}
		if len(out) != 2 || string(out[0]) != "200" || json.Unmarshal(out[1], &answer) != nil || len(answer.State) == 0 {
			t.Fatalf("v1 send_join answered %s", out)
		}
		if m, err := a.Store.Membership(ctx, roomID, bob); err != nil || m != "join" {
			t.Fatalf("bob after v1 send_join: %q %v", m, err)
		}
		out, err = send("send_leave", complete("leave"))
		if err != nil || len(out) != 2 || string(out[0]) != "200" {
			t.Fatalf("v1 send_leave: %s %v", out, err)
		}
		if m, err := a.Store.Membership(ctx, roomID, bob); err != nil || m != "leave" {
			t.Fatalf("bob after v1 send_leave: %q %v", m, err)
		}
	})
}

// A server can authorise a restricted join only by the allowed rooms it
// is in: one that left the allowed room refuses (M_UNABLE_TO_AUTHORISE_JOIN)
// rather than trust its stale copy of it, and the joining server goes on to
// the next server named.
func TestFederationRestrictedJoinNeedsTheAllowedRoom(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		a, b, c := fed.Start(t, e), fed.Start(t, e), fed.Start(t, e)
		ctx := t.Context()
		alice, bob, carol := newSyncUser(t, a, "alice"), newSyncUser(t, b, "bob"), newSyncUser(t, c, "carol")
		allowed, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		restricted, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
			Type: event.StateJoinRules, StateKey: new(string), Content: event.Content{Raw: map[string]any{
				"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": allowed.RoomID}}}}}}})
		if err != nil {
			t.Fatal(err)
		}
		via := func(servers ...*servertest.Bundle) *mautrix.ReqJoinRoom {
			r := &mautrix.ReqJoinRoom{}
			for _, s := range servers {
				r.Via = append(r.Via, s.Cfg.ServerName)
			}
			return r
		}
		for _, room := range []id.RoomID{allowed.RoomID, restricted.RoomID} {
			if _, err := bob.cli.JoinRoom(ctx, string(room), via(a)); err != nil {
				t.Fatal(err)
			}
		}
		// bob may invite, so b could authorise joins...
		pl, err := alice.cli.SendStateEvent(ctx, restricted.RoomID, event.StatePowerLevels, "", map[string]any{"invite": 50, "users": map[string]any{string(alice.id): 100, string(bob.id): 50}})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "b to see bob may invite", func() bool {
			_, err := b.Store.EventByID(ctx, string(pl.EventID))
			return err == nil
		})
		// ...but carol is in the allowed room, and b saw her join; then
		// b's only user leaves it, and b's copy of it stops there.
		if _, err := carol.cli.JoinRoom(ctx, string(allowed.RoomID), via(a)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "b to see carol join the allowed room", func() bool {
			m, err := b.Store.Membership(ctx, string(allowed.RoomID), string(carol.id))
			return err == nil && m == "join"
		})
		if _, err := bob.cli.LeaveRoom(ctx, allowed.RoomID); err != nil {
			t.Fatal(err)
		}
		path := "/_matrix/federation/v1/make_join/" + url.PathEscape(string(restricted.RoomID)) + "/" + url.PathEscape(string(carol.id))
		err = fed.Client(t, c).Do(ctx, b.Cfg.ServerName, http.MethodGet, path, url.Values{"ver": {"11", "12"}}, nil, nil)
		var re *federation.RemoteError
		if !errors.As(err, &re) || re.Status != http.StatusBadRequest || re.Code != "M_UNABLE_TO_AUTHORISE_JOIN" {
			t.Fatalf("make_join at b, which left the allowed room: %v", err)
		}
		if _, err := carol.cli.JoinRoom(ctx, string(restricted.RoomID), via(b)); err == nil {
			t.Fatal("carol joined through b")
		}
		if _, err := carol.cli.JoinRoom(ctx, string(restricted.RoomID), via(b, a)); err != nil {
			t.Fatalf("join through b, then a: %v", err)
		}
		ev, err := a.Store.CurrentStateEvent(ctx, string(restricted.RoomID), "m.room.member", string(carol.id))
		if err != nil || !strings.Contains(string(ev.JSON), `"join_authorised_via_users_server":"`+string(alice.id)+`"`) {
			t.Fatalf("carol's join: %+v %v", ev, err)
		}
	})
}

// The inviter rescinding an invite (kicking the invitee) reaches the
// invitee's server, though it is not in the room: the invite ends there
// too. A kick by another member of the room does not (the invitee's server
// cannot check it was allowed).
func TestFederationRescindedInvite(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		a, b := fed.Start(t, e), fed.Start(t, e)
		ctx := t.Context()
		alice, carol, bob := newSyncUser(t, a, "alice"), newSyncUser(t, a, "carol"), newSyncUser(t, b, "bob")
		invited := func(inviter roomUser) id.RoomID {
			t.Helper()
			room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if err != nil {
				t.Fatal(err)
			}
			if inviter.id != alice.id {
				// Anyone may invite.
				if _, err := alice.cli.SendStateEvent(ctx, room.RoomID, event.StatePowerLevels, "", map[string]any{"invite": 0, "users": map[string]any{string(alice.id): 100}}); err != nil {
					t.Fatal(err)
				}
				if _, err := inviter.cli.JoinRoomByID(ctx, room.RoomID); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := inviter.cli.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: bob.id}); err != nil {
				t.Fatal(err)
			}
			return room.RoomID
		}
		membership := func(room id.RoomID) string {
			m, err := b.Store.OutOfRoomMembership(ctx, string(bob.id), string(room))
			if err != nil {
				return ""
			}
			return m.Membership
		}
		since := doSync(t, bob, "", "", 0).NextBatch
		rescinded := invited(alice)
		since = waitRoom(t, bob, since, "the invite", func(r *mautrix.RespSync) bool { _, ok := r.Rooms.Invite[rescinded]; return ok })
		if _, err := alice.cli.KickUser(ctx, rescinded, &mautrix.ReqKickUser{UserID: bob.id, Reason: "changed my mind"}); err != nil {
			t.Fatal(err)
		}
		waitRoom(t, bob, since, "the rescinded invite", func(r *mautrix.RespSync) bool { _, ok := r.Rooms.Leave[rescinded]; return ok })
		if m := membership(rescinded); m != "leave" {
			t.Fatalf("bob's membership after the inviter kicked him: %q", m)
		}

		// carol invites; alice, who did not, kicks: bob is still invited.
		kept := invited(carol)
		waitFor(t, "the second invite", func() bool { return membership(kept) == "invite" })
		if _, err := alice.cli.KickUser(ctx, kept, &mautrix.ReqKickUser{UserID: bob.id}); err != nil {
			t.Fatal(err)
		}
		marker, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Invite: []id.UserID{bob.id}})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "a later invite", func() bool { return membership(marker.RoomID) == "invite" })
		if m := membership(kept); m != "invite" {
			t.Fatalf("bob's membership after a non-inviter kicked him: %q", m)
		}
	})
}

// TestFederationRestrictedJoinAuthorisedLocally: a user joining a
// restricted room through their own server, which has a member who may
// invite, is authorised by that member without asking the room's other
// servers (Complement's TestRestrictedRoomsLocalJoin*).
func TestFederationRestrictedJoinAuthorisedLocally(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		a, b := fed.Start(t, e), fed.Start(t, e)
		ctx := t.Context()
		alice, bob, charlie := newSyncUser(t, a, "alice"), newSyncUser(t, b, "bob"), newSyncUser(t, b, "charlie")
		allowed, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11"})
		if err != nil {
			t.Fatal(err)
		}
		restricted, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11", InitialState: []*event.Event{{
			Type: event.StateJoinRules, StateKey: new(string), Content: event.Content{Raw: map[string]any{
				"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": allowed.RoomID}}}}}}})
		if err != nil {
			t.Fatal(err)
		}
		viaA := &mautrix.ReqJoinRoom{Via: []string{a.Cfg.ServerName}}
		for _, room := range []id.RoomID{allowed.RoomID, restricted.RoomID} {
			if _, err := bob.cli.JoinRoom(ctx, string(room), viaA); err != nil {
				t.Fatal(err)
			}
		}
		pl, err := alice.cli.SendStateEvent(ctx, restricted.RoomID, event.StatePowerLevels, "", map[string]any{"invite": 50,
			"users": map[string]any{string(alice.id): 100, string(bob.id): 50}})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "b to see bob may invite", func() bool {
			_, err := b.Store.EventByID(ctx, string(pl.EventID))
			return err == nil
		})
		if _, err := charlie.cli.JoinRoom(ctx, string(allowed.RoomID), viaA); err != nil {
			t.Fatal(err)
		}
		if _, err := charlie.cli.JoinRoom(ctx, string(restricted.RoomID), &mautrix.ReqJoinRoom{Via: []string{b.Cfg.ServerName}}); err != nil {
			t.Fatalf("charlie's join through his own server: %v", err)
		}
		ev, err := b.Store.CurrentStateEvent(ctx, string(restricted.RoomID), "m.room.member", string(charlie.id))
		if err != nil || !strings.Contains(string(ev.JSON), `"join_authorised_via_users_server":"`+string(bob.id)+`"`) {
			t.Fatalf("charlie's join: %+v %v", ev, err)
		}
	})
}

// TestFederationRestrictedJoinFallsBackToAnotherServer: a user whose own
// server is in a restricted room but has no member who may invite joins
// through another server of the room, which authorises it (Complement's
// TestRestrictedRoomsRemoteJoinLocalUser).
func TestFederationRestrictedJoinFallsBackToAnotherServer(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		a, b := fed.Start(t, e), fed.Start(t, e)
		ctx := t.Context()
		alice, bob, charlie := newSyncUser(t, a, "alice"), newSyncUser(t, a, "bob"), newSyncUser(t, b, "charlie")
		allowed, err := charlie.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11"})
		if err != nil {
			t.Fatal(err)
		}
		restricted, err := charlie.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11", InitialState: []*event.Event{{
			Type: event.StateJoinRules, StateKey: new(string), Content: event.Content{Raw: map[string]any{
				"join_rule": "restricted", "allow": []any{map[string]any{"type": "m.room_membership", "room_id": allowed.RoomID}}}}}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := charlie.cli.InviteUser(ctx, restricted.RoomID, &mautrix.ReqInviteUser{UserID: alice.id}); err != nil {
			t.Fatal(err)
		}
		viaB := &mautrix.ReqJoinRoom{Via: []string{b.Cfg.ServerName}}
		if _, err := alice.cli.JoinRoom(ctx, string(restricted.RoomID), viaB); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.JoinRoom(ctx, string(allowed.RoomID), viaB); err != nil {
			t.Fatal(err)
		}
		// a is in the room, but alice may not invite: b authorises.
		if _, err := bob.cli.JoinRoom(ctx, string(restricted.RoomID), &mautrix.ReqJoinRoom{Via: []string{a.Cfg.ServerName}}); err != nil {
			t.Fatalf("bob's join through his own server: %v", err)
		}
		waitFor(t, "b to see bob's join", func() bool {
			ev, err := b.Store.CurrentStateEvent(ctx, string(restricted.RoomID), "m.room.member", string(bob.id))
			return err == nil && strings.Contains(string(ev.JSON), `"join_authorised_via_users_server":"`+string(charlie.id)+`"`)
		})
	})
}
