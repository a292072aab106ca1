package server_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/server"
	"hearth/server/federation"
	"hearth/server/rooms"
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
		// alice asks bob's server for his profile.
		if p, err := alice.cli.GetProfile(ctx, bob.id); err != nil || p.DisplayName != "Robert" {
			t.Errorf("bob's profile through alice's server: %+v %v", p, err)
		}
		if _, err := alice.cli.GetProfile(ctx, id.UserID("@nobody:"+b.Cfg.ServerName)); !errorIs(err, mautrix.MNotFound) {
			t.Errorf("unknown remote user's profile: %v", err)
		}

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
		since := doSync(t, bob, "", "", 0).NextBatch
		if _, err := alice.cli.SendText(ctx, room.RoomID, "before"); err != nil {
			t.Fatal(err)
		}
		since = waitMessage(t, bob, room.RoomID, since, "before")

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

// Three servers, two of which change the room at the same time without
// seeing each other's change: every server ends with the state the spec's
// state resolution gives. alice (A) demotes bob while bob (B), not knowing
// it, sets the topic; carol (C) receives both. The demotion, a power
// event, is resolved first, and bob's topic then fails against it: the
// topic stays what it was, on all three.
func TestFederationConcurrentChangesConverge(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		a, b, c := fed.Start(t, e), fed.Start(t, e), fed.Start(t, e)
		ctx := t.Context()
		alice, bob, carol := newSyncUser(t, a, "alice"), newSyncUser(t, b, "bob"), newSyncUser(t, c, "carol")
		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Topic: "original", RoomVersion: "11",
			PowerLevelOverride: plOverride(map[string]any{string(alice.id): 100, string(bob.id): 50})})
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range []roomUser{bob, carol} {
			if _, err := u.cli.JoinRoom(ctx, string(room.RoomID), &mautrix.ReqJoinRoom{Via: []string{a.Cfg.ServerName}}); err != nil {
				t.Fatalf("%s joins: %v", u.id, err)
			}
		}
		roomID := string(room.RoomID)
		everywhere := func(what string, cond func(*servertest.Bundle) bool) {
			t.Helper()
			for _, srv := range []*servertest.Bundle{a, b, c} {
				waitFor(t, what+" on "+srv.Cfg.ServerName, func() bool { return cond(srv) })
			}
		}
		everywhere("three members", func(srv *servertest.Bundle) bool {
			m, _ := srv.Store.Members(ctx, roomID)
			return len(m) == 3
		})
		original := currentID(t, a, roomID, "m.room.topic")

		// A stops hearing from other servers: bob's topic cannot reach it.
		a.PauseFederation(t)
		if _, err := bob.cli.SendStateEvent(ctx, room.RoomID, event.StateTopic, "", map[string]any{"topic": "bob's topic"}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "bob's topic on C", func() bool { return currentID(t, c, roomID, "m.room.topic") != original })
		var pl map[string]any
		if err := alice.cli.StateEvent(ctx, room.RoomID, event.StatePowerLevels, "", &pl); err != nil {
			t.Fatal(err)
		}
		pl["users"].(map[string]any)[string(bob.id)] = 0
		demotion, err := alice.cli.SendStateEvent(ctx, room.RoomID, event.StatePowerLevels, "", pl)
		if err != nil {
			t.Fatal(err)
		}
		a.ResumeFederation(t)
		// A speaks again: B, which failed to reach A, retries at once.
		if _, err := alice.cli.SendText(ctx, room.RoomID, "anyone there?"); err != nil {
			t.Fatal(err)
		}
		everywhere("alice's power levels", func(srv *servertest.Bundle) bool {
			return currentID(t, srv, roomID, "m.room.power_levels") == string(demotion.EventID)
		})
		everywhere("the original topic", func(srv *servertest.Bundle) bool {
			return currentID(t, srv, roomID, "m.room.topic") == original
		})
		// And the whole current state is the same on all three.
		want, _ := a.Store.CurrentState(ctx, roomID)
		for _, srv := range []*servertest.Bundle{b, c} {
			got, _ := srv.Store.CurrentState(ctx, roomID)
			if !maps.Equal(got, want) {
				t.Errorf("current state on %s differs from A's:\n got %v\nwant %v", srv.Cfg.ServerName, got, want)
			}
		}
	})
}

// currentID is the event ID of a key of the room's current state on srv.
func currentID(t *testing.T, srv *servertest.Bundle, roomID, typ string) string {
	t.Helper()
	ev, err := srv.Store.CurrentStateEvent(t.Context(), roomID, typ, "")
	if err != nil {
		return ""
	}
	return ev.EventID
}

// One transaction with a good event and three bad ones: a bad signature
// (refused, not stored), a bad content hash (kept, redacted, as the spec
// requires), and one its sender was not allowed to send (rejected). The
// good event is kept and reaches the room's users; the answer names each.
func TestFederationBadEventsInATransaction(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		a, b := fed.Start(t, e), fed.Start(t, e)
		ctx := t.Context()
		alice, bob := newSyncUser(t, a, "alice"), newSyncUser(t, b, "bob")
		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.JoinRoom(ctx, string(room.RoomID), &mautrix.ReqJoinRoom{Via: []string{a.Cfg.ServerName}}); err != nil {
			t.Fatal(err)
		}
		roomID := string(room.RoomID)
		since := doSync(t, alice, "", "", 0).NextBatch

		// Build as B, on A's view of the room (A keeps verifying with its
		// real key ring, which fetches B's key from B).
		af := newFed(t, a)
		a.Server.Timeline().SetKeys(a.Server.KeyRing().Lookup(context.Background()))
		bkey, err := b.Cfg.LoadSigningKey()
		if err != nil {
			t.Fatal(err)
		}
		af.keys[b.Cfg.ServerName] = rooms.SigningKey{ServerName: b.Cfg.ServerName, KeyID: bkey.ID, Private: bkey.Priv}
		head := af.builderOnHead(b.Cfg.ServerName, roomID)
		msg := func(sender, body string) *rooms.Event {
			e, err := head.Fork().Append("m.room.message", nil, sender, map[string]any{"msgtype": "m.text", "body": body})
			if err != nil && !errors.Is(err, rooms.ErrNotAuthorized) {
				t.Fatal(err)
			}
			return e
		}
		good := msg(string(bob.id), "a good event")
		badSig := tamper(t, msg(string(bob.id), "a bad signature"), func(o map[string]any) {
			sigs := o["signatures"].(map[string]any)[b.Cfg.ServerName].(map[string]any)
			for k := range sigs {
				sigs[k] = "AAAA" + sigs[k].(string)[4:]
			}
		})
		badHash := tamper(t, msg(string(bob.id), "a bad hash"), func(o map[string]any) {
			o["content"] = map[string]any{"msgtype": "m.text", "body": "changed after signing"}
		})
		dave := "@dave:" + b.Cfg.ServerName
		notAllowed := msg(dave, "I never joined")

		var resp struct {
			PDUs map[string]struct {
				Error string `json:"error"`
			} `json:"pdus"`
		}
		txn := map[string]any{"origin": b.Cfg.ServerName, "origin_server_ts": time.Now().UnixMilli(),
			"pdus": []json.RawMessage{json.RawMessage(good.JSON()), badSig, badHash, json.RawMessage(notAllowed.JSON())}}
		cli := fed.Client(t, b)
		if err := cli.Do(ctx, a.Cfg.ServerName, http.MethodPut, "/_matrix/federation/v1/send/bad-events-1", nil, txn, &resp); err != nil {
			t.Fatal(err)
		}
		badHashID := idOfRaw(t, badHash)
		if r, ok := resp.PDUs[good.ID()]; !ok || r.Error != "" {
			t.Errorf("good event: %+v (present %t)", r, ok)
		}
		if r := resp.PDUs[notAllowed.ID()]; r.Error == "" {
			t.Error("the event dave was not allowed to send has no error")
		}
		if r, ok := resp.PDUs[badHashID]; !ok || r.Error != "" {
			t.Errorf("the event with a bad hash (kept redacted): %+v (present %t)", r, ok)
		}
		if r, ok := resp.PDUs[idOfRaw(t, badSig)]; ok && r.Error == "" {
			t.Error("the event with a bad signature was accepted")
		}
		if _, err := a.Store.EventByID(ctx, idOfRaw(t, badSig)); err == nil {
			t.Error("the event with a bad signature was stored")
		}
		if se, err := a.Store.EventByID(ctx, notAllowed.ID()); err != nil || !se.Rejected {
			t.Errorf("the not-allowed event: %+v %v, want stored as rejected", se, err)
		}
		if se, err := a.Store.EventByID(ctx, badHashID); err != nil || strings.Contains(string(se.JSON), "changed after signing") {
			t.Errorf("the bad-hash event: %v, want stored redacted", err)
		}
		waitMessage(t, alice, room.RoomID, since, "a good event")
		// The same transaction again is answered the same, not processed twice.
		var again map[string]any
		if err := cli.Do(ctx, a.Cfg.ServerName, http.MethodPut, "/_matrix/federation/v1/send/bad-events-1", nil, txn, &again); err != nil {
			t.Fatal(err)
		}
		if len(again["pdus"].(map[string]any)) != len(resp.PDUs) {
			t.Errorf("the retried transaction got %v", again)
		}
		// An unsigned request is 401 M_UNAUTHORIZED.
		unsigned := &federation.Client{HTTP: cli.HTTP}
		err = unsigned.Do(ctx, a.Cfg.ServerName, http.MethodPut, "/_matrix/federation/v1/send/unsigned-1", nil, txn, nil)
		var re *federation.RemoteError
		if !errors.As(err, &re) || re.Status != http.StatusUnauthorized || re.Code != "M_UNAUTHORIZED" {
			t.Errorf("unsigned transaction: %v", err)
		}
	})
}

// tamper edits an event's JSON after it was signed.
func tamper(t *testing.T, e *rooms.Event, edit func(map[string]any)) json.RawMessage {
	t.Helper()
	var o map[string]any
	if err := json.Unmarshal(e.JSON(), &o); err != nil {
		t.Fatal(err)
	}
	edit(o)
	raw, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// idOfRaw is the event ID of a v12 PDU (its reference hash).
func idOfRaw(t *testing.T, raw []byte) string {
	t.Helper()
	e, err := rooms.ParseEvent(rooms.MustVersion("12"), raw)
	if err != nil {
		t.Fatal(err)
	}
	return e.ID()
}

// A user who joins a room through another server pages back into history
// from before the join: /messages fetches it from the other server
// (backfill) when it reaches the start of what its own server has.
func TestFederationBackPagination(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		a, b := fed.Start(t, e), fed.Start(t, e)
		ctx := t.Context()
		alice, bob := newSyncUser(t, a, "alice"), newSyncUser(t, b, "bob")
		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		var mid id.EventID
		var midTS time.Time
		for i := 0; i < 25; i++ {
			body := fmt.Sprintf("history %d", i)
			sent, err := alice.cli.SendText(ctx, room.RoomID, body)
			if err != nil {
				t.Fatal(err)
			}
			if i == 12 {
				mid, midTS = sent.EventID, time.Now()
				time.Sleep(20 * time.Millisecond)
			}
			want = append(want, body)
		}
		if _, err := bob.cli.JoinRoom(ctx, string(room.RoomID), &mautrix.ReqJoinRoom{Via: []string{a.Cfg.ServerName}}); err != nil {
			t.Fatal(err)
		}
		// Before any back-pagination, bob's server has none of that
		// history: it asks alice's for the event nearest a time in it.
		near, err := bob.cli.TimestampToEvent(ctx, room.RoomID, midTS.Add(5*time.Millisecond), mautrix.DirectionBackward)
		if err != nil || near.EventID != mid {
			t.Errorf("timestamp_to_event in history bob's server lacks: %+v %v, want %s", near, err, mid)
		}
		// Forwards, bob's own join is the first event his server has after
		// that time, but it follows a gap: alice's server knows a closer
		// one, which bob's server fetches so /context can start from it.
		next, err := bob.cli.TimestampToEvent(ctx, room.RoomID, midTS.Add(5*time.Millisecond), mautrix.DirectionForward)
		if err != nil || next.EventID == mid {
			t.Fatalf("timestamp_to_event forwards across the gap: %+v %v", next, err)
		}
		if ev, err := a.Store.EventByID(ctx, string(next.EventID)); err != nil || !strings.Contains(string(ev.JSON), "history 13") {
			t.Errorf("timestamp_to_event forwards: %s is not the message after %s (%v)", next.EventID, mid, err)
		}
		if _, err := bob.cli.Context(ctx, room.RoomID, next.EventID, nil, 1); err != nil {
			t.Errorf("/context of the event found across the gap: %v", err)
		}
		var got []string
		from := ""
		for page := 0; page < 20; page++ {
			resp, err := bob.cli.Messages(ctx, room.RoomID, from, "", mautrix.DirectionBackward, nil, 10)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, bodies(resp.Chunk)...) // newest first
			if resp.End == "" {
				break
			}
			from = resp.End
		}
		slices.Reverse(got)
		if !slices.Equal(got, want) {
			t.Errorf("bob paged back to %v, want %v", got, want)
		}
	})
}

// A page larger than one /backfill answer (100 events): /messages
// backfills until its page is full, and keeps an end token while
// backfilling brings events, so the client pages on to the room's start.
func TestFederationBackPaginationLargePages(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		a, b := fed.Start(t, e), fed.Start(t, e)
		ctx := t.Context()
		alice, bob := newSyncUser(t, a, "alice"), newSyncUser(t, b, "bob")
		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for i := 0; i < 260; i++ {
			body := fmt.Sprintf("history %d", i)
			if _, err := alice.cli.SendText(ctx, room.RoomID, body); err != nil {
				t.Fatal(err)
			}
			want = append(want, body)
		}
		if _, err := bob.cli.JoinRoom(ctx, string(room.RoomID), &mautrix.ReqJoinRoom{Via: []string{a.Cfg.ServerName}}); err != nil {
			t.Fatal(err)
		}
		var got []string
		from := ""
		for page := 0; page < 10; page++ {
			resp, err := bob.cli.Messages(ctx, room.RoomID, from, "", mautrix.DirectionBackward, nil, 200)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, bodies(resp.Chunk)...) // newest first
			if page == 0 && len(resp.Chunk) < 200 {
				t.Errorf("the first page holds %d events, want a full page", len(resp.Chunk))
			}
			if resp.End == "" {
				break
			}
			from = resp.End
		}
		slices.Reverse(got)
		if !slices.Equal(got, want) {
			t.Errorf("bob paged back to %d messages, want %d", len(got), len(want))
		}
	})
}

// A room's server ACL shuts a server out: its events are refused.
func TestFederationServerACL(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		a, b := fed.Start(t, e), fed.Start(t, e)
		ctx := t.Context()
		alice, bob := newSyncUser(t, a, "alice"), newSyncUser(t, b, "bob")
		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.JoinRoom(ctx, string(room.RoomID), &mautrix.ReqJoinRoom{Via: []string{a.Cfg.ServerName}}); err != nil {
			t.Fatal(err)
		}
		since := doSync(t, alice, "", "", 0).NextBatch
		if _, err := bob.cli.SendText(ctx, room.RoomID, "before the ACL"); err != nil {
			t.Fatal(err)
		}
		waitMessage(t, alice, room.RoomID, since, "before the ACL")
		host, _, _ := strings.Cut(b.Cfg.ServerName, ":")
		if _, err := alice.cli.SendStateEvent(ctx, room.RoomID, event.StateServerACL, "", map[string]any{
			"allow": []string{"*"}, "deny": []string{host}, "allow_ip_literals": true}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the ACL on bob's server", func() bool { return currentID(t, b, string(room.RoomID), "m.room.server_acl") != "" })
		sent, err := bob.cli.SendText(ctx, room.RoomID, "after the ACL")
		if err != nil {
			t.Fatal(err)
		}
		// bob's server sends it (it has nowhere else to go), and alice's
		// server answers with an error for it.
		waitFor(t, "bob's server to have tried", func() bool {
			d, err := b.Store.DestinationByName(ctx, a.Cfg.ServerName)
			return err == nil && d.LastSuccessfulPos >= eventPos(t, b, string(sent.EventID))
		})
		if _, err := a.Store.EventByID(ctx, string(sent.EventID)); err == nil {
			t.Error("alice's server took an event from a server its ACL denies")
		}
	})
}

// eventPos is an event's stream position on srv.
func eventPos(t *testing.T, srv *servertest.Bundle, eventID string) int64 {
	t.Helper()
	se, err := srv.Store.EventByID(t.Context(), eventID)
	if err != nil {
		t.Fatal(err)
	}
	return se.StreamPos
}

// A client lists another server's room directory through its own server,
// when that server shares it (allow_public_rooms_over_federation).
func TestFederationPublicRooms(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		sharing := fed.Start(t, e, func(c *config.Config) { c.AllowPublicRoomsOverFederation = true })
		private := fed.Start(t, e)
		b := fed.Start(t, e)
		ctx := t.Context()
		bob := newSyncUser(t, b, "bob")
		for _, srv := range []*servertest.Bundle{sharing, private} {
			owner := newSyncUser(t, srv, "owner")
			if _, err := owner.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: "Town square"}); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := bob.cli.PublicRooms(ctx, &mautrix.ReqPublicRooms{Server: sharing.Cfg.ServerName})
		if err != nil {
			t.Fatalf("directory of %s: %v", sharing.Cfg.ServerName, err)
		}
		if len(resp.Chunk) != 1 || resp.Chunk[0].Name != "Town square" {
			t.Errorf("directory of %s: %+v", sharing.Cfg.ServerName, resp.Chunk)
		}
		var found mautrix.RespPublicRooms
		u := bob.cli.BuildClientURL("v3", "publicRooms")
		body := map[string]any{"server": sharing.Cfg.ServerName, "filter": map[string]any{"generic_search_term": "town"}}
		if _, err := bob.cli.MakeRequest(ctx, http.MethodPost, u, body, &found); err != nil || len(found.Chunk) != 1 {
			t.Errorf("filtered directory of %s: %+v %v", sharing.Cfg.ServerName, found, err)
		}
		if _, err := bob.cli.PublicRooms(ctx, &mautrix.ReqPublicRooms{Server: private.Cfg.ServerName}); !errorIs(err, mautrix.MForbidden) {
			t.Errorf("directory of a server that does not share it: %v", err)
		}
	})
}

// Knocking on a room of another server: the knock reaches the room, the
// knocker sees it with the room's stripped state, and an invite from the
// room lets them in.
func TestFederationKnock(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		a, b := fed.Start(t, e), fed.Start(t, e)
		ctx := t.Context()
		alice, bob := newSyncUser(t, a, "alice"), newSyncUser(t, b, "bob")
		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Knock first",
			InitialState: []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}}})
		if err != nil {
			t.Fatal(err)
		}
		since := doSync(t, bob, "", "", 0).NextBatch
		if _, err := bob.cli.KnockRoom(ctx, string(room.RoomID), &mautrix.ReqKnockRoom{Via: []string{a.Cfg.ServerName}, Reason: "let me in"}); err != nil {
			t.Fatalf("knock: %v", err)
		}
		since = waitRoom(t, bob, since, "the knock", func(r *mautrix.RespSync) bool {
			k, ok := r.Rooms.Knock[room.RoomID]
			if ok {
				if n := hasType(k.State.Events, "m.room.name"); n == nil || n.Content.Raw["name"] != "Knock first" {
					t.Errorf("knock state lacks the room's name: %v", k.State.Events)
				}
			}
			return ok
		})
		if m, err := a.Store.Membership(ctx, string(room.RoomID), string(bob.id)); err != nil || m != "knock" {
			t.Fatalf("bob's membership on alice's server: %q %v", m, err)
		}
		if _, err := alice.cli.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: bob.id}); err != nil {
			t.Fatal(err)
		}
		waitRoom(t, bob, since, "the invite", func(r *mautrix.RespSync) bool {
			_, ok := r.Rooms.Invite[room.RoomID]
			return ok
		})
		if _, err := bob.cli.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatalf("join after the invite: %v", err)
		}
	})
}

// An invite carries the room's state as full PDUs of the room's version,
// signed, with the m.room.create event among them (Server-Server API v1.16,
// MSC4311: Synapse logs a warning for stripped events and means to refuse
// them); the invitee's client is shown them stripped to type, state_key,
// sender and content, as the Client-Server API's StrippedStateEvent.
func TestFederationInviteRoomState(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		a, b := fed.Start(t, e), fed.Start(t, e)
		ctx := t.Context()
		alice := newSyncUser(t, a, "alice")
		bob := newSyncUser(t, b, "bob")
		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Plans"})
		if err != nil {
			t.Fatal(err)
		}
		roomID := string(room.RoomID)
		stored, err := a.Store.RoomByID(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		rv := rooms.MustVersion(stored.RoomVersion)
		akey, err := a.Cfg.LoadSigningKey()
		if err != nil {
			t.Fatal(err)
		}
		lookup := func(server, keyID string, _ int64) (ed25519.PublicKey, int64, error) {
			if server != a.Cfg.ServerName || keyID != akey.ID {
				return nil, 0, fmt.Errorf("no key %s of %s", keyID, server)
			}
			return akey.Public(), 1 << 62, nil
		}

		sent, err := server.InviteRoomState(a.Server, ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		var types []string
		for _, raw := range sent {
			pdu, err := rooms.ParseEvent(rv, raw)
			if err != nil {
				t.Fatalf("invite_room_state entry is not a PDU of room version %s: %v\n%s", rv.ID, err, raw)
			}
			if pdu.RoomID() != roomID {
				t.Errorf("invite_room_state entry of room %s", pdu.RoomID())
			}
			if err := rooms.VerifyServerSignature(pdu, a.Cfg.ServerName, lookup); err != nil {
				t.Errorf("invite_room_state %s: %v", pdu.Type(), err)
			}
			types = append(types, pdu.Type())
		}
		if !slices.Contains(types, "m.room.create") || !slices.Contains(types, "m.room.name") {
			t.Errorf("invite_room_state has %v, want m.room.create and m.room.name among them", types)
		}

		if _, err := alice.cli.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: bob.id}); err != nil {
			t.Fatal(err)
		}
		r := acctDo(t, b, http.MethodGet, "/_matrix/client/v3/sync", bob.tok, nil)
		inv, _ := r.body["rooms"].(map[string]any)["invite"].(map[string]any)[roomID].(map[string]any)
		evs, _ := inv["invite_state"].(map[string]any)["events"].([]any)
		var shown []string
		for _, ev := range evs {
			m := ev.(map[string]any)
			for k := range m {
				if k != "type" && k != "state_key" && k != "sender" && k != "content" && m["type"] != "m.room.create" {
					t.Errorf("invite_state %s shows the client %q", m["type"], k)
				}
			}
			// The create event whole (MSC4311), under its real ID.
			if m["type"] == "m.room.create" {
				if id, _ := m["event_id"].(string); id == "" || m["origin_server_ts"] == nil || m["room_id"] != roomID {
					t.Errorf("invite_state create event is not whole: %v", m)
				} else if se, err := a.Store.EventByID(ctx, id); err != nil || se.Type != "m.room.create" {
					t.Errorf("invite_state create event ID %s: %v %v", id, se, err)
				}
			}
			shown = append(shown, m["type"].(string))
		}
		if !slices.Contains(shown, "m.room.create") || !slices.Contains(shown, "m.room.name") || !slices.Contains(shown, "m.room.member") {
			t.Errorf("invite_state on bob's server: %v", shown)
		}
	})
}
