package storage_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

func strp(s string) *string { return &s }

func TestEventsAndStateGroups(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		room := "!r:hs"
		if err := st.CreateRoom(ctx, &storage.Room{RoomID: room, RoomVersion: "12", Creator: "@a:hs"}); err != nil {
			t.Fatal(err)
		}
		prev, group := []string{}, int64(0)
		persist := func(id, typ string, sk *string, membership string) *storage.NewEvent {
			t.Helper()
			ne := &storage.NewEvent{Event: storage.Event{EventID: id, RoomID: room, Type: typ, StateKey: sk, Sender: "@a:hs",
				Depth: int64(len(prev) + 1), JSON: []byte(`{}`), Membership: membership},
				PrevEvents: prev, StateBefore: group}
			head := &storage.HeadUpdate{Extremities: []string{id}}
			if sk != nil {
				head.Changes = []storage.StateChange{{Key: storage.StateKey{Type: typ, StateKey: *sk}, EventID: id}}
			}
			if err := st.PersistEvents(ctx, []*storage.NewEvent{ne}, head); err != nil {
				t.Fatalf("persist %s: %v", id, err)
			}
			prev, group = []string{id}, ne.StateGroup
			return ne
		}
		persist("$create", "m.room.create", strp(""), "")
		persist("$join", "m.room.member", strp("@a:hs"), "join")
		msg := persist("$msg", "m.room.message", nil, "")
		if msg.StateGroup == 0 || msg.StateGroup != group {
			t.Fatal("message event did not keep its parent's state group")
		}
		// 100 members: more than one delta chain's worth, so a snapshot is cut.
		for i := 0; i < 100; i++ {
			persist(fmt.Sprintf("$m%d", i), "m.room.member", strp(fmt.Sprintf("@u%d:hs", i)), "join")
		}
		persist("$topic", "m.room.topic", strp(""), "")
		state, err := st.StateGroup(ctx, group)
		if err != nil {
			t.Fatal(err)
		}
		if len(state) != 103 || state[storage.StateKey{Type: "m.room.member", StateKey: "@u42:hs"}] != "$m42" {
			t.Fatalf("state has %d entries", len(state))
		}
		// State at an earlier event is unchanged by later ones.
		early, _ := st.StateGroup(ctx, msg.StateGroup)
		if len(early) != 2 {
			t.Fatalf("state at $msg has %d entries, want 2", len(early))
		}
		cur, _ := st.CurrentState(ctx, room)
		if len(cur) != len(state) {
			t.Fatalf("current state %d != %d", len(cur), len(state))
		}
		ext, _ := st.ForwardExtremities(ctx, room)
		if len(ext) != 1 || ext[0].EventID != "$topic" {
			t.Fatalf("extremities %+v", ext)
		}
		if m, _ := st.Membership(ctx, room, "@u7:hs"); m != "join" {
			t.Fatalf("membership %q", m)
		}
		rooms, _ := st.RoomsOfUser(ctx, "@u7:hs", "join")
		if len(rooms) != 1 || rooms[0].RoomID != room {
			t.Fatalf("rooms of user %+v", rooms)
		}
		// Idempotent transaction IDs.
		ne := &storage.NewEvent{Event: storage.Event{EventID: "$t1", RoomID: room, Type: "m.room.message", Sender: "@a:hs", JSON: []byte(`{}`),
			SenderDevice: "D", TxnID: "txn1", TxnScope: "send " + room}, PrevEvents: prev, StateBefore: group}
		if err := st.PersistEvents(ctx, []*storage.NewEvent{ne}, nil); err != nil {
			t.Fatal(err)
		}
		if id, err := st.EventIDByTxn(ctx, "@a:hs", "D", "send "+room, "txn1"); err != nil || id != "$t1" {
			t.Fatalf("txn lookup %q %v", id, err)
		}
		dup := &storage.NewEvent{Event: storage.Event{EventID: "$t2", RoomID: room, Type: "m.room.message", Sender: "@a:hs", JSON: []byte(`{}`),
			SenderDevice: "D", TxnID: "txn1", TxnScope: "send " + room}, PrevEvents: []string{"$t1"}, StateBefore: group}
		if err := st.PersistEvents(ctx, []*storage.NewEvent{dup}, nil); !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("duplicate txn: %v", err)
		}
		if _, err := st.EventByID(ctx, "$t2"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatal("a refused event was half-stored")
		}
		evs, err := st.RoomEvents(ctx, room, 0, 1<<62, 1000, false)
		if err != nil || len(evs) != 105 {
			t.Fatalf("room events %d %v", len(evs), err)
		}
		for i := 1; i < len(evs); i++ {
			if evs[i].StreamPos <= evs[i-1].StreamPos {
				t.Fatal("stream order not increasing")
			}
		}
	})
}

// TestTxnIDs: the stored client transaction IDs page in key order, each
// once, across senders, devices and scopes (the timeline's filter loads
// them this way), and are counted.
func TestTxnIDs(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		room := "!r:hs"
		if err := st.CreateRoom(ctx, &storage.Room{RoomID: room, RoomVersion: "12", Creator: "@a:hs"}); err != nil {
			t.Fatal(err)
		}
		want := map[storage.TxnIDKey]bool{}
		prev := []string{}
		for i := range 23 {
			k := storage.TxnIDKey{UserID: fmt.Sprintf("@u%d:hs", i%3), DeviceID: fmt.Sprintf("D%d", i%2),
				Scope: fmt.Sprintf("send %s%d", room, i%5), TxnID: fmt.Sprintf("t%d", i)}
			id := fmt.Sprintf("$e%d", i)
			ne := &storage.NewEvent{Event: storage.Event{EventID: id, RoomID: room, Type: "m.room.message", Sender: k.UserID,
				Depth: int64(i + 1), JSON: []byte(`{}`), SenderDevice: k.DeviceID, TxnID: k.TxnID, TxnScope: k.Scope}, PrevEvents: prev}
			if err := st.PersistEvents(ctx, []*storage.NewEvent{ne}, nil); err != nil {
				t.Fatal(err)
			}
			prev = []string{id}
			want[k] = true
		}
		if n, err := st.CountTxnIDs(ctx); err != nil || n != len(want) {
			t.Fatalf("CountTxnIDs: %d, %v; want %d", n, err, len(want))
		}
		got := map[storage.TxnIDKey]bool{}
		var after storage.TxnIDKey
		for pages := 0; ; pages++ {
			keys, err := st.TxnIDs(ctx, after, 4)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range keys {
				if got[k] || !want[k] {
					t.Fatalf("page %d: %+v seen twice or never stored", pages, k)
				}
				got[k] = true
			}
			if len(keys) < 4 {
				break
			}
			after = keys[len(keys)-1]
		}
		if len(got) != len(want) {
			t.Fatalf("paged %d IDs, want %d", len(got), len(want))
		}
	})
}
