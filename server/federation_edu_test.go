package server_test

import (
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// EDUs across servers: read receipts and presence.

// receiptOf reports whether a sync's ephemeral events of room hold user's
// m.read receipt of eventID.
func receiptOf(r *mautrix.RespSync, room id.RoomID, user id.UserID, eventID id.EventID) bool {
	jr, ok := r.Rooms.Join[room]
	if !ok {
		return false
	}
	for _, ev := range jr.Ephemeral.Events {
		if ev.Type != event.EphemeralEventReceipt {
			continue
		}
		if err := ev.Content.ParseRaw(ev.Type); err != nil {
			continue
		}
		if rc, ok := ev.Content.Parsed.(*event.ReceiptEventContent); ok {
			if _, ok := (*rc)[eventID][event.ReceiptTypeRead][user]; ok {
				return true
			}
		}
	}
	return false
}

// A read receipt of a user of another server reaches the room's users;
// one that arrives before the event it points at (EDUs and PDUs travel
// apart) is kept, not dropped.
func TestFederationReceipts(t *testing.T) {
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
		sent, err := alice.cli.SendText(ctx, room.RoomID, "read me")
		if err != nil {
			t.Fatal(err)
		}
		waitMessage(t, bob, room.RoomID, "", "read me")
		if err := bob.cli.SendReceipt(ctx, room.RoomID, sent.EventID, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		since = waitRoom(t, alice, since, "bob's receipt", func(r *mautrix.RespSync) bool {
			return receiptOf(r, room.RoomID, bob.id, sent.EventID)
		})

		// b tells a of bob's receipt of an event a does not have yet.
		future := id.EventID("$not-arrived-yet")
		txn := map[string]any{"origin": b.Cfg.ServerName, "origin_server_ts": time.Now().UnixMilli(), "pdus": []any{},
			"edus": []any{map[string]any{"edu_type": "m.receipt", "content": map[string]any{string(room.RoomID): map[string]any{
				"m.read": map[string]any{string(bob.id): map[string]any{"event_ids": []string{string(future)}, "data": map[string]any{"ts": 1}}}}}}}}
		if err := fed.Client(t, b).Do(ctx, a.Cfg.ServerName, http.MethodPut, "/_matrix/federation/v1/send/receipt-early-1", nil, txn, nil); err != nil {
			t.Fatal(err)
		}
		waitRoom(t, alice, since, "bob's receipt of an event not arrived yet", func(r *mautrix.RespSync) bool {
			return receiptOf(r, room.RoomID, bob.id, future)
		})
	})
}

// userPresence is user's m.presence content in a sync answer, or nil.
func userPresence(r *mautrix.RespSync, user id.UserID) map[string]any {
	for _, ev := range r.Presence.Events {
		if ev.Sender == user {
			return ev.Content.Raw
		}
	}
	return nil
}

// Presence reaches the users of other servers who share a room with the
// user, and only the servers that do.
func TestFederationPresence(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		a, b := fed.Start(t, e), fed.Start(t, e)
		ctx := t.Context()
		alice, dave, bob := newSyncUser(t, a, "alice"), newSyncUser(t, a, "dave"), newSyncUser(t, b, "bob")
		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.JoinRoom(ctx, string(room.RoomID), &mautrix.ReqJoinRoom{Via: []string{a.Cfg.ServerName}}); err != nil {
			t.Fatal(err)
		}
		since := doSync(t, bob, "", "", 0).NextBatch
		set := func(u roomUser, state, msg string) {
			t.Helper()
			body := map[string]any{"presence": state}
			if msg != "" {
				body["status_msg"] = msg
			}
			acctDo(t, a, http.MethodPut, "/_matrix/client/v3/presence/"+esc(string(u.id))+"/status", u.tok, body).want(t, http.StatusOK, "")
		}
		set(dave, "online", "not in any room with bob")
		set(alice, "online", "Update for room members")
		since = waitRoom(t, bob, since, "alice online", func(r *mautrix.RespSync) bool {
			p := userPresence(r, alice.id)
			return p != nil && p["presence"] == "online" && p["status_msg"] == "Update for room members"
		})
		set(alice, "unavailable", "")
		waitRoom(t, bob, since, "alice unavailable", func(r *mautrix.RespSync) bool {
			p := userPresence(r, alice.id)
			return p != nil && p["presence"] == "unavailable"
		})
		if got, err := bob.cli.GetPresence(ctx, alice.id); err != nil || got.Presence != event.PresenceUnavailable {
			t.Errorf("GET alice's presence on bob's server: %+v %v", got, err)
		}
		if _, err := b.Store.PresenceOf(ctx, string(dave.id)); err == nil {
			t.Error("dave's presence reached a server he shares no room with")
		}
	})
}
