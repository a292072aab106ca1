package storage_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// TestAuxStreamVisibleOnceCommitted checks the aux stream's newest
// position, kept in memory: a position is not visible while its
// transaction is open, never when the transaction rolled back (SQLite
// hands that id out again), visible once it committed, and read back from
// the database when the store is opened again.
func TestAuxStreamVisibleOnceCommitted(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		ctx := context.Background()
		st := storagetest.Open(t, e)
		before, _ := st.MaxAuxPos(ctx)
		errRollback := errors.New("roll back")
		err := st.TakeAuxInTx(ctx, func(id int64) error {
			if id <= before {
				t.Fatalf("took %d, not above %d", id, before)
			}
			if now, _ := st.MaxAuxPos(ctx); now != before {
				t.Fatalf("position %d visible while its transaction is open", now)
			}
			return errRollback
		})
		if !errors.Is(err, errRollback) {
			t.Fatal(err)
		}
		if now, _ := st.MaxAuxPos(ctx); now != before {
			t.Fatalf("rolled-back position visible: %d, was %d", now, before)
		}
		var took int64
		if err := st.TakeAuxInTx(ctx, func(id int64) error {
			if now, _ := st.MaxAuxPos(ctx); now != before {
				t.Fatalf("position %d visible while its transaction is open", now)
			}
			took = id
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if now, _ := st.MaxAuxPos(ctx); now != took {
			t.Fatalf("after commit the newest position is %d, want %d", now, took)
		}
		// A change made inside another write's transaction (a device
		// list change, markDeviceListChange) moves it too.
		if err := st.MarkDeviceListChange(ctx, "@u:hs"); err != nil {
			t.Fatal(err)
		}
		marked, _ := st.MaxAuxPos(ctx)
		if marked <= took {
			t.Fatalf("device list change not visible: %d, was %d", marked, took)
		}
		if changed, _ := st.DeviceListChangedUsers(ctx, took, marked); len(changed) != 1 {
			t.Fatalf("device list change up to %d: %v", marked, changed)
		}
		again := storagetest.Open(t, e)
		if now, _ := again.MaxAuxPos(ctx); now != marked {
			t.Fatalf("reopened store starts at %d, want %d", now, marked)
		}
	})
}

// TestRoomsOfUserOutOfRoom: the cached rooms of a user follow their
// memberships in rooms this server is not in.
func TestRoomsOfUserOutOfRoom(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		rooms := func() []storage.RoomMembership {
			t.Helper()
			ms, err := st.RoomsOfUser(ctx, "@u:hs")
			if err != nil {
				t.Fatal(err)
			}
			return ms
		}
		if ms := rooms(); len(ms) != 0 {
			t.Fatalf("rooms of a new user: %+v", ms)
		}
		if err := st.SetOutOfRoomMembership(ctx, "@u:hs", "!r:remote", "11", "invite", "$inv", []byte(`[]`)); err != nil {
			t.Fatal(err)
		}
		if ms := rooms(); len(ms) != 1 || ms[0].Membership != "invite" {
			t.Fatalf("after the invite: %+v", ms)
		}
		if err := st.SetOutOfRoomMembership(ctx, "@u:hs", "!r:remote", "11", "leave", "$rej", []byte(`[]`)); err != nil {
			t.Fatal(err)
		}
		if ms := rooms(); len(ms) != 1 || ms[0].Membership != "leave" || ms[0].EventID != "$rej" {
			t.Fatalf("after the rejection: %+v", ms)
		}
		if err := st.DeleteOutOfRoomMembership(ctx, "@u:hs", "!r:remote"); err != nil {
			t.Fatal(err)
		}
		if ms := rooms(); len(ms) != 0 {
			t.Fatalf("after the delete: %+v", ms)
		}
	})
}

// TestAuxStreamCommitsInOrder writes account data from many goroutines while
// a reader follows the aux stream the way /sync does (read the newest
// position, then everything up to it). If an id could commit after a higher
// one was visible, the reader would step past it and never see that entry.
func TestAuxStreamCommitsInOrder(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		const writers, each = 8, 40
		var wg sync.WaitGroup
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					var err error
					if i%2 == 0 {
						_, err = st.PutAccountData(ctx, "@u:hs", "", fmt.Sprintf("t.%d.%d", w, i), []byte(`{}`))
					} else {
						_, err = st.PutReceipt(ctx, &storage.Receipt{RoomID: "!r:hs", UserID: fmt.Sprintf("@%d.%d:hs", w, i), Type: "m.read", EventID: "$e"})
					}
					if err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		seen := map[string]bool{}
		var last int64
		follow := func() {
			upTo, err := st.MaxAuxPos(ctx)
			if err != nil {
				t.Fatal(err)
			}
			ad, err := st.AccountDataBetween(ctx, "@u:hs", last, upTo)
			if err != nil {
				t.Fatal(err)
			}
			rs, err := st.ReceiptsBetween(ctx, []string{"!r:hs"}, last, upTo)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range ad {
				seen[a.Type] = true
			}
			for _, r := range rs {
				seen[r.UserID] = true
			}
			last = upTo
		}
		for running := true; running; {
			select {
			case <-done:
				running = false
			default:
			}
			follow()
		}
		follow()
		if len(seen) != writers*each {
			t.Fatalf("the follower saw %d of %d changes", len(seen), writers*each)
		}
	})
}

func TestAccountDataReceiptsFilters(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		if _, err := st.AccountDataContent(ctx, "@u:hs", "", "x"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("absent account data: %v", err)
		}
		id1, err := st.PutAccountData(ctx, "@u:hs", "", "x", []byte(`{"a":1}`))
		if err != nil {
			t.Fatal(err)
		}
		// Concurrent read-modify-writes lose nothing.
		var wg sync.WaitGroup
		for i := range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := st.UpdateAccountData(ctx, "@u:hs", "!r:hs", "m.tag", func(old []byte) ([]byte, error) {
					m := map[string]int{}
					if old != nil {
						_ = json.Unmarshal(old, &m)
					}
					m[fmt.Sprint("t", i)] = i
					return json.Marshal(m)
				})
				if err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		c, err := st.AccountDataContent(ctx, "@u:hs", "!r:hs", "m.tag")
		m := map[string]int{}
		if err != nil || json.Unmarshal(c, &m) != nil || len(m) != 10 {
			t.Fatalf("tags after concurrent edits: %s %v", c, err)
		}
		between, err := st.AccountDataBetween(ctx, "@u:hs", id1, 1<<62)
		if err != nil || len(between) != 1 || between[0].RoomID != "!r:hs" || between[0].StreamID <= id1 {
			t.Fatalf("account data since %d: %+v %v", id1, between, err)
		}

		// A receipt replaces the user's previous one of the same type and thread.
		r1, _ := st.PutReceipt(ctx, &storage.Receipt{RoomID: "!r:hs", UserID: "@u:hs", Type: "m.read", EventID: "$1", TS: 1})
		st.PutReceipt(ctx, &storage.Receipt{RoomID: "!r:hs", UserID: "@u:hs", Type: "m.read", ThreadID: "main", EventID: "$1", TS: 1})
		st.PutReceipt(ctx, &storage.Receipt{RoomID: "!r:hs", UserID: "@u:hs", Type: "m.read", EventID: "$2", TS: 2})
		rs, err := st.ReceiptsBetween(ctx, []string{"!r:hs", "!other:hs"}, 0, 1<<62)
		if err != nil || len(rs) != 2 || rs[1].EventID != "$2" || rs[1].StreamID <= r1 {
			t.Fatalf("receipts: %+v %v", rs, err)
		}

		// Filters belong to their user.
		fid, err := st.CreateFilter(ctx, "@u:hs", []byte(`{"room":{}}`))
		if err != nil {
			t.Fatal(err)
		}
		if def, err := st.Filter(ctx, "@u:hs", fid); err != nil || string(def) != `{"room":{}}` {
			t.Fatalf("filter: %s %v", def, err)
		}
		if _, err := st.Filter(ctx, "@v:hs", fid); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("another user's filter: %v", err)
		}
	})
}

// TestSyncDeviceCachesFollowWrites: what every /sync reads per device and
// user from caches (one-time key counts, unused fallback keys, whether the
// to-device queue is empty, global account data) follows each write.
func TestSyncDeviceCachesFollowWrites(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		const u, d = "@u:hs", "DEV"
		if err := st.CreateUser(ctx, &storage.User{UserID: u, Localpart: "u"}); err != nil {
			t.Fatal(err)
		}
		if err := st.CreateDevice(ctx, &storage.Device{UserID: u, DeviceID: d}); err != nil {
			t.Fatal(err)
		}
		counts := func() (map[string]int, []string) {
			t.Helper()
			otk, err := st.OneTimeKeyCounts(ctx, u, d)
			if err != nil {
				t.Fatal(err)
			}
			fb, err := st.UnusedFallbackKeyTypes(ctx, u, d)
			if err != nil {
				t.Fatal(err)
			}
			return otk, fb
		}
		if otk, fb := counts(); len(otk) != 0 || len(fb) != 0 {
			t.Fatalf("a new device has keys: %v %v", otk, fb)
		}
		up := &storage.KeyUpload{
			OneTimeKeys:  []storage.OneTimeKey{{Algorithm: "signed_curve25519", KeyID: "A", JSON: []byte(`{"a":1}`)}, {Algorithm: "signed_curve25519", KeyID: "B", JSON: []byte(`{"b":1}`)}},
			FallbackKeys: []storage.OneTimeKey{{Algorithm: "signed_curve25519", KeyID: "F", JSON: []byte(`{"f":1}`)}},
		}
		if _, err := st.UploadKeys(ctx, u, d, up); err != nil {
			t.Fatal(err)
		}
		if otk, fb := counts(); otk["signed_curve25519"] != 2 || len(fb) != 1 {
			t.Fatalf("after the upload: %v %v", otk, fb)
		}
		for range 3 { // two one-time keys, then the fallback key
			if _, err := st.ClaimOneTimeKey(ctx, u, d, "signed_curve25519"); err != nil {
				t.Fatal(err)
			}
		}
		if otk, fb := counts(); otk["signed_curve25519"] != 0 || len(fb) != 0 {
			t.Fatalf("after the claims: %v %v", otk, fb)
		}

		// To-device: acknowledged on an empty queue (remembered empty),
		// then a message arrives and its acknowledgement deletes it.
		if err := st.AckToDevice(ctx, u, d, 1<<40); err != nil {
			t.Fatal(err)
		}
		if _, err := st.SendToDevice(ctx, "@s:hs", "S", "txn1", []storage.ToDeviceMessage{{UserID: u, DeviceID: d, Sender: "@s:hs", Type: "m.test", Content: []byte(`{}`)}}, nil); err != nil {
			t.Fatal(err)
		}
		if msgs, _ := st.ToDeviceBetween(ctx, u, d, 0, 1<<40, 10); len(msgs) != 1 {
			t.Fatalf("queued: %v", msgs)
		}
		if err := st.AckToDevice(ctx, u, d, 1<<40); err != nil {
			t.Fatal(err)
		}
		if msgs, _ := st.ToDeviceBetween(ctx, u, d, 0, 1<<40, 10); len(msgs) != 0 {
			t.Fatalf("acknowledged message still queued: %v", msgs)
		}

		// Global account data: absent, set, set again.
		if _, err := st.AccountDataContent(ctx, u, "", "m.ignored_user_list"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("absent entry: %v", err)
		}
		for _, c := range []string{`{"ignored_users":{}}`, `{"ignored_users":{"@x:hs":{}}}`} {
			if _, err := st.PutAccountData(ctx, u, "", "m.ignored_user_list", []byte(c)); err != nil {
				t.Fatal(err)
			}
			if got, err := st.AccountDataContent(ctx, u, "", "m.ignored_user_list"); err != nil || string(got) != c {
				t.Fatalf("after writing %s: %s %v", c, got, err)
			}
		}
		// A device's notification settings go with it.
		typ := storage.LocalNotificationSettingsPrefix + d
		if _, err := st.PutAccountData(ctx, u, "", typ, []byte(`{"is_silenced":true}`)); err != nil {
			t.Fatal(err)
		}
		if _, err := st.AccountDataContent(ctx, u, "", typ); err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteDevices(ctx, u, []string{d}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.AccountDataContent(ctx, u, "", typ); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("settings of a deleted device: %v", err)
		}
	})
}

// TestRoomVersionsMove: a stored relation other than an annotation moves
// its room's relations version (bundled aggregations remember events
// without relations against it), and a redaction moves its room's event
// rows version (shared timeline reads are keyed by it).
func TestRoomVersionsMove(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		if err := st.CreateRoom(ctx, &storage.Room{RoomID: "!a:hs", RoomVersion: "11", Creator: "@a:hs"}); err != nil {
			t.Fatal(err)
		}
		persist := func(id, relType, relatesTo string) {
			t.Helper()
			ne := &storage.NewEvent{Event: storage.Event{EventID: id, RoomID: "!a:hs", Type: "m.room.message", Sender: "@a:hs",
				Depth: 2, JSON: []byte(`{}`), RelType: relType, RelatesTo: relatesTo}}
			if err := st.PersistEvents(ctx, []*storage.NewEvent{ne}, &storage.HeadUpdate{Extremities: []string{id}}); err != nil {
				t.Fatal(err)
			}
		}
		rel, rows := st.RelationsVersion("!a:hs"), st.EventRowsVersion("!a:hs")
		persist("$m", "", "")
		persist("$r", "m.annotation", "$m")
		if st.RelationsVersion("!a:hs") != rel {
			t.Fatal("a message or a reaction moved the relations version")
		}
		persist("$e", "m.replace", "$m")
		if st.RelationsVersion("!a:hs") == rel {
			t.Fatal("an edit did not move the relations version")
		}
		if st.EventRowsVersion("!a:hs") != rows {
			t.Fatal("new events moved the event rows version")
		}
		if err := st.RedactEvent(ctx, "$m", "$x", []byte(`{"redacted":true}`)); err != nil {
			t.Fatal(err)
		}
		if st.EventRowsVersion("!a:hs") == rows {
			t.Fatal("a redaction did not move the event rows version")
		}
	})
}

// TestUnrelatedAt: a fresh event is known to have no relations at the
// relations version from before its write, so a relation stored later,
// or in the same write, leaves that version behind; events not fresh,
// and outliers, are not known.
func TestUnrelatedAt(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		const room = "!a:hs"
		if err := st.CreateRoom(ctx, &storage.Room{RoomID: room, RoomVersion: "11", Creator: "@a:hs"}); err != nil {
			t.Fatal(err)
		}
		ev := func(id, relType, relatesTo string, fresh bool) *storage.NewEvent {
			return &storage.NewEvent{Event: storage.Event{EventID: id, RoomID: room, Type: "m.room.message", Sender: "@a:hs",
				Depth: 2, JSON: []byte(`{}`), RelType: relType, RelatesTo: relatesTo}, Fresh: fresh}
		}
		persist := func(evs ...*storage.NewEvent) {
			t.Helper()
			if err := st.PersistEvents(ctx, evs, &storage.HeadUpdate{Extremities: []string{evs[len(evs)-1].EventID}}); err != nil {
				t.Fatal(err)
			}
		}
		unrelated := func(id string) bool {
			v, ok := st.UnrelatedAt(id)
			return ok && v == st.RelationsVersion(room)
		}
		persist(ev("$old", "", "", false))
		persist(ev("$m", "", "", true))
		if !unrelated("$m") {
			t.Fatal("a fresh event is not known to have no relations")
		}
		if _, ok := st.UnrelatedAt("$old"); ok {
			t.Fatal("an event not fresh is known to have no relations")
		}
		persist(ev("$r", "m.annotation", "$m", true))
		if !unrelated("$m") {
			t.Fatal("a reaction (not bundled by version) made the fresh event unknown")
		}
		persist(ev("$e", "m.replace", "$m", true))
		if unrelated("$m") {
			t.Fatal("still known to have no relations after an edit of it")
		}
		// An event and its edit in one write: the version the event is
		// known at is the one before the write, which the edit moved (so
		// every event of that write is asked about again).
		persist(ev("$n", "", "", true), ev("$ne", "m.replace", "$n", true))
		if unrelated("$n") {
			t.Fatal("known to have no relations though its edit came in the same write")
		}
		o := ev("$out", "", "", true)
		o.Outlier = true
		if err := st.PersistEvents(ctx, []*storage.NewEvent{o}, nil); err != nil {
			t.Fatal(err)
		}
		if _, ok := st.UnrelatedAt("$out"); ok {
			t.Fatal("an outlier is known to have no relations")
		}
	})
}
