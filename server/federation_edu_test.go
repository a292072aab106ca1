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

// EDUs across servers: read receipts.

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
