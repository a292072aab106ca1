package storage_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// memberRoom persists a room whose members are joined (or have left, for
// the members given with a "-" prefix), and returns a function that
// changes one member's membership.
func memberRoom(t *testing.T, st *storage.Store, room string, members ...string) func(user, membership string) {
	t.Helper()
	ctx := context.Background()
	if err := st.CreateRoom(ctx, &storage.Room{RoomID: room, RoomVersion: "12", Creator: members[0]}); err != nil {
		t.Fatal(err)
	}
	var prev []string
	group := int64(0)
	n := 0
	persist := func(typ, sk, membership string) {
		t.Helper()
		n++
		id := "$" + room[1:2] + string(rune('a'+n))
		ne := &storage.NewEvent{Event: storage.Event{EventID: id, RoomID: room, Type: typ, StateKey: &sk, Sender: members[0],
			Depth: int64(n), JSON: []byte(`{}`), Membership: membership}, PrevEvents: prev, StateBefore: group}
		head := &storage.HeadUpdate{Extremities: []string{id}, Changes: []storage.StateChange{{Key: storage.StateKey{Type: typ, StateKey: sk}, EventID: id}}}
		if err := st.PersistEvents(ctx, []*storage.NewEvent{ne}, head); err != nil {
			t.Fatalf("persist %s: %v", id, err)
		}
		prev, group = []string{id}, ne.StateGroup
	}
	persist("m.room.create", "", "")
	for _, m := range members {
		persist("m.room.member", m, "join")
	}
	return func(user, membership string) { persist("m.room.member", user, membership) }
}

func pokesOf(t *testing.T, st *storage.Store, dest string) []storage.DeviceListPoke {
	t.Helper()
	p, err := st.DeviceListPokes(context.Background(), dest, 100)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A local user's key changes are queued for each other server in their
// rooms, one poke per device, newest change only, until delivered; the
// delivered stream_id is the next update's prev_id.
func TestDeviceListPokes(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		memberRoom(t, st, "!r:hs", "@a:hs", "@b:r1", "@c:r2", "@d:r1")
		memberRoom(t, st, "!s:hs", "@e:hs", "@f:r3") // not a's
		upload := func(dev, key string) {
			t.Helper()
			if _, err := st.UploadKeys(ctx, "@a:hs", dev, &storage.KeyUpload{DeviceKeys: []byte(`{"k":"` + key + `"}`)}); err != nil {
				t.Fatal(err)
			}
		}
		upload("D1", "1")
		upload("D1", "2") // replaces the poke of the first
		upload("D2", "1")
		if err := st.PutCrossSigningKeys(ctx, "@a:hs", []*storage.CrossSigningKey{{Type: "master", PublicKey: "M", JSON: []byte(`{}`)}}); err != nil {
			t.Fatal(err)
		}
		dests, err := st.OutboxDestinations(ctx)
		if err != nil || !slices.Equal(dests, []string{"r1", "r2"}) {
			t.Fatalf("destinations %v %v, want r1 and r2", dests, err)
		}
		p := pokesOf(t, st, "r1")
		if len(p) != 3 || p[0].DeviceID != "D1" || p[1].DeviceID != "D2" || p[2].DeviceID != "" || p[0].LastSent != 0 {
			t.Fatalf("pokes for r1: %+v", p)
		}
		if !(p[0].StreamID < p[1].StreamID && p[1].StreamID < p[2].StreamID) {
			t.Fatalf("pokes out of order: %+v", p)
		}
		// D2 changes again after the pokes were read: its poke stays.
		upload("D2", "2")
		if err := st.DeviceListPokesSent(ctx, "r1", p); err != nil {
			t.Fatal(err)
		}
		left := pokesOf(t, st, "r1")
		if len(left) != 1 || left[0].DeviceID != "D2" || left[0].StreamID <= p[1].StreamID || left[0].LastSent != p[1].StreamID {
			t.Fatalf("after delivery r1 has %+v, want D2's newer change after %d", left, p[1].StreamID)
		}
		if len(pokesOf(t, st, "r2")) != 3 { // D1, D2 (coalesced), cross-signing
			t.Fatalf("r2: %+v", pokesOf(t, st, "r2"))
		}
		// Deleting devices pokes each with a position of its own.
		if err := st.DeleteDevices(ctx, "@a:hs", []string{"D1", "D2"}); err != nil {
			t.Fatal(err)
		}
		p = pokesOf(t, st, "r1")
		if len(p) != 2 || p[0].StreamID == p[1].StreamID {
			t.Fatalf("deleted devices: %+v", p)
		}
		// A remote user's changes, and signatures on someone else's key,
		// are nobody's business but this server's.
		if err := st.MarkDeviceListChange(ctx, "@b:r1"); err != nil {
			t.Fatal(err)
		}
		if err := st.PutKeySignatures(ctx, []storage.KeySignature{{TargetUser: "@e:hs", TargetKey: "X", SignerUser: "@a:hs", SignerKey: "ed25519:U", Signature: "s"}}); err != nil {
			t.Fatal(err)
		}
		if n := len(pokesOf(t, st, "r3")); n != 0 {
			t.Fatalf("%d pokes for r3", n)
		}
		// The user's own signature on their master key is.
		if err := st.PutKeySignatures(ctx, []storage.KeySignature{{TargetUser: "@a:hs", TargetKey: "M", SignerUser: "@a:hs", SignerKey: "ed25519:D1", Signature: "s"}}); err != nil {
			t.Fatal(err)
		}
		if p := pokesOf(t, st, "r2"); p[len(p)-1].DeviceID != "" {
			t.Fatalf("signed master key: %+v", p)
		}
	})
}

// To-device EDUs are queued with the client's transaction, once, and kept
// until deleted; received ones are queued once per sender and message_id.
func TestOutboxEDUsAndToDeviceDedupe(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		edu := []storage.OutboxEDU{{Destination: "r1", Type: "m.direct_to_device", Content: []byte(`{"message_id":"m1"}`)}}
		for range 2 {
			if _, err := st.SendToDevice(ctx, "@a:hs", "D", "txn1", nil, edu); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := st.SendToDevice(ctx, "@a:hs", "D", "txn2", nil, []storage.OutboxEDU{{Destination: "r1", Type: "m.direct_to_device", Content: []byte(`{"message_id":"m2"}`)}}); err != nil {
			t.Fatal(err)
		}
		got, err := st.OutboxEDUs(ctx, "r1", 10)
		if err != nil || len(got) != 2 || string(got[0].Content) != `{"message_id":"m1"}` {
			t.Fatalf("outbox: %+v %v", got, err)
		}
		if d, _ := st.OutboxDestinations(ctx); !slices.Equal(d, []string{"r1"}) {
			t.Fatalf("destinations %v", d)
		}
		if err := st.DeleteOutboxEDUs(ctx, []int64{got[0].ID}); err != nil {
			t.Fatal(err)
		}
		if left, _ := st.OutboxEDUs(ctx, "r1", 10); len(left) != 1 || left[0].ID != got[1].ID {
			t.Fatalf("after delete: %+v", left)
		}

		msg := []storage.ToDeviceMessage{{UserID: "@a:hs", DeviceID: "D", Sender: "@b:r1", Type: "m.test", Content: []byte(`{}`)}}
		first, err := st.SendToDevice(ctx, "@b:r1", "", "mid", msg, nil)
		if err != nil || !first {
			t.Fatalf("first delivery: %v %v", first, err)
		}
		if again, err := st.SendToDevice(ctx, "@b:r1", "", "mid", msg, nil); err != nil || again {
			t.Fatalf("second delivery queued: %v %v", again, err)
		}
		if other, _ := st.SendToDevice(ctx, "@c:r1", "", "mid", msg, nil); !other {
			t.Fatal("another sender's message with the same message_id was dropped")
		}
	})
}

// A remote user's cached device list follows updates that chain from the
// last one applied, and asks for a resync on any gap.
func TestRemoteDeviceLists(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		if err := st.CreateUser(ctx, &storage.User{UserID: "@a:hs", Localpart: "a"}); err != nil {
			t.Fatal(err)
		}
		setMember := memberRoom(t, st, "!r:hs", "@a:hs", "@b:r1")
		bob := "@b:r1"
		if ok, err := st.SharesRoomWithLocalUser(ctx, bob); err != nil || !ok {
			t.Fatalf("bob tracked: %v %v", ok, err)
		}
		if ok, _ := st.SharesRoomWithLocalUser(ctx, "@z:r1"); ok {
			t.Fatal("a stranger is tracked")
		}
		apply := func(u storage.RemoteDeviceUpdate, want storage.DeviceUpdateResult) {
			t.Helper()
			u.UserID = bob
			if got, err := st.ApplyRemoteDeviceUpdate(ctx, &u); err != nil || got != want {
				t.Fatalf("update %+v: %v %v, want %v", u, got, err, want)
			}
		}
		apply(storage.RemoteDeviceUpdate{DeviceID: "B1", StreamID: 1}, storage.UpdateGap) // not cached
		// A list from a keys query has no stream_id: the next update resyncs.
		l := &storage.RemoteDeviceList{UserID: bob, Devices: []storage.RemoteDevice{{DeviceID: "B1", Keys: []byte(`{"k":1}`)}},
			CrossSigning: map[string]*storage.CrossSigningKey{"master": {Type: "master", PublicKey: "M", JSON: []byte(`{"m":1}`)}}}
		if ok, err := st.CacheRemoteDeviceList(ctx, l); err != nil || !ok {
			t.Fatalf("cache: %v %v", ok, err)
		}
		if ok, _ := st.CacheRemoteDeviceList(ctx, l); ok {
			t.Fatal("a cached list was replaced by a query's answer")
		}
		apply(storage.RemoteDeviceUpdate{DeviceID: "B1", StreamID: 5, PrevIDs: []int64{4}}, storage.UpdateGap)
		l.StreamID = 10
		if err := st.ResyncRemoteDeviceList(ctx, l); err != nil {
			t.Fatal(err)
		}
		before, _ := st.MaxAuxPos(ctx)
		apply(storage.RemoteDeviceUpdate{DeviceID: "B2", StreamID: 11, PrevIDs: []int64{10}, Keys: []byte(`{"k":2}`)}, storage.UpdateApplied)
		apply(storage.RemoteDeviceUpdate{DeviceID: "B2", StreamID: 11, PrevIDs: []int64{10}}, storage.UpdateKnown)
		apply(storage.RemoteDeviceUpdate{DeviceID: "B3", StreamID: 13, PrevIDs: []int64{12}}, storage.UpdateGap)
		apply(storage.RemoteDeviceUpdate{DeviceID: "B3", StreamID: 13}, storage.UpdateGap)
		apply(storage.RemoteDeviceUpdate{DeviceID: "B1", StreamID: 14, PrevIDs: []int64{11}, Deleted: true}, storage.UpdateApplied)
		got, err := st.RemoteDeviceListOf(ctx, bob)
		if err != nil || got.StreamID != 14 || len(got.Devices) != 1 || got.Devices[0].DeviceID != "B2" || got.CrossSigning["master"] == nil {
			t.Fatalf("cached list %+v %v", got, err)
		}
		changed, _ := st.DeviceListChangedUsers(ctx, before, 1<<62)
		if !slices.Equal(changed, []string{bob}) {
			t.Fatalf("bob's change not on the aux stream: %v", changed)
		}
		// An older snapshot does not undo newer updates.
		l.StreamID = 12
		if err := st.ResyncRemoteDeviceList(ctx, l); err != nil {
			t.Fatal(err)
		}
		if got, _ := st.RemoteDeviceListOf(ctx, bob); got.StreamID != 14 {
			t.Fatalf("an old snapshot replaced the list: %+v", got)
		}
		if cached, err := st.PutRemoteCrossSigningKeys(ctx, bob, []*storage.CrossSigningKey{{Type: "self_signing", PublicKey: "S", JSON: []byte(`{}`)}}); err != nil || !cached {
			t.Fatalf("put cross-signing keys: %v %v", cached, err)
		}
		if got, _ := st.RemoteDeviceListOf(ctx, bob); got.CrossSigning["self_signing"] == nil || got.CrossSigning["master"] == nil {
			t.Fatalf("cross-signing keys %+v", got.CrossSigning)
		}
		// Tracked, the list is kept; once bob shares no room with a local
		// user, it is dropped.
		if forgot, err := st.ForgetUntrackedDeviceLists(ctx, []string{bob}); err != nil || len(forgot) != 0 {
			t.Fatalf("forgot %v %v", forgot, err)
		}
		setMember(bob, "leave")
		if forgot, err := st.ForgetUntrackedDeviceLists(ctx, []string{bob}); err != nil || !slices.Equal(forgot, []string{bob}) {
			t.Fatalf("forgot %v %v", forgot, err)
		}
		if _, err := st.RemoteDeviceListOf(ctx, bob); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("forgotten list: %v", err)
		}
	})
}
