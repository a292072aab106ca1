package storage_test

import (
	"context"
	"slices"
	"testing"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// openEngine opens a store on e, for tests that close and open it again.
func openEngine(t *testing.T, e storagetest.Engine) *storage.Store {
	t.Helper()
	st, err := storage.Open(context.Background(), e.Options)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// ReceiptsBetween reads only the rooms with a receipt after the reader's
// position, yet misses none: written since the store opened, or before
// it (read after a restart), in stream order across rooms.
func TestReceiptsBetweenSkipsQuietRooms(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		ctx := context.Background()
		open := func() *storage.Store { return openEngine(t, e) }
		st := open()
		put := func(st *storage.Store, room, user, event string) int64 {
			t.Helper()
			pos, err := st.PutReceipt(ctx, &storage.Receipt{RoomID: room, UserID: user, Type: "m.read", EventID: event, TS: 1})
			if err != nil {
				t.Fatal(err)
			}
			return pos
		}
		between := func(st *storage.Store, rooms []string, after, upTo int64) []string {
			t.Helper()
			rs, err := st.ReceiptsBetween(ctx, rooms, after, upTo)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, r := range rs {
				out = append(out, r.RoomID+" "+r.UserID+" "+r.EventID)
			}
			return out
		}
		rooms := []string{"!a:hs", "!b:hs", "!c:hs"}
		p0, _ := st.MaxAuxPos(ctx)
		put(st, "!b:hs", "@u:hs", "$1")
		p1 := put(st, "!a:hs", "@u:hs", "$2")
		put(st, "!b:hs", "@v:hs", "$3")
		p3, _ := st.MaxAuxPos(ctx)
		if got := between(st, rooms, p0, p3); !slices.Equal(got, []string{"!b:hs @u:hs $1", "!a:hs @u:hs $2", "!b:hs @v:hs $3"}) {
			t.Fatalf("receipts since p0: %v", got)
		}
		if got := between(st, rooms, p1, p3); !slices.Equal(got, []string{"!b:hs @v:hs $3"}) {
			t.Fatalf("receipts since p1: %v", got)
		}
		if got := between(st, []string{"!a:hs", "!c:hs"}, p1, p3); len(got) != 0 {
			t.Fatalf("receipts of quiet rooms: %v", got)
		}
		// A replaced receipt moves to its new position.
		p4 := put(st, "!a:hs", "@u:hs", "$4")
		if got := between(st, rooms, p3, p4); !slices.Equal(got, []string{"!a:hs @u:hs $4"}) {
			t.Fatalf("replaced receipt: %v", got)
		}
		st.Close()

		// After a restart the marks start again: receipts from before it
		// are still found, and rooms quiet since are skipped.
		st = open()
		defer st.Close()
		if got := between(st, rooms, p0, p4); !slices.Equal(got, []string{"!b:hs @u:hs $1", "!b:hs @v:hs $3", "!a:hs @u:hs $4"}) {
			t.Fatalf("receipts after a restart: %v", got)
		}
		p5 := put(st, "!c:hs", "@w:hs", "$5")
		if got := between(st, rooms, p4, p5); !slices.Equal(got, []string{"!c:hs @w:hs $5"}) {
			t.Fatalf("receipt after a restart: %v", got)
		}
		if got := between(st, rooms, p5, p5); len(got) != 0 {
			t.Fatalf("receipts in an empty range: %v", got)
		}
	})
}

// A user's account data and to-device messages, and the device list
// changes, are read only when something was written after the reader's
// position (auxmarks.go), yet none is missed: written since the store
// opened, or before it (read after a restart).
func TestAuxMarksMissNothing(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		ctx := context.Background()
		open := func() *storage.Store { return openEngine(t, e) }
		// read lists what each reader finds in (after, upTo] for @u, and
		// the account data of @v, who has none.
		read := func(st *storage.Store, after, upTo int64) []string {
			t.Helper()
			var out []string
			for _, user := range []string{"@u:hs", "@v:hs"} {
				ads, err := st.AccountDataBetween(ctx, user, after, upTo)
				if err != nil {
					t.Fatal(err)
				}
				for _, a := range ads {
					out = append(out, "account data "+user+" "+a.Type)
				}
			}
			msgs, err := st.ToDeviceBetween(ctx, "@u:hs", "DEV", after, upTo, 10)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range msgs {
				out = append(out, "to-device "+m.Type)
			}
			users, err := st.DeviceListChangedUsers(ctx, after, upTo)
			if err != nil {
				t.Fatal(err)
			}
			for _, u := range users {
				out = append(out, "device list "+u)
			}
			return out
		}
		write := func(st *storage.Store, n string) int64 {
			t.Helper()
			if _, err := st.PutAccountData(ctx, "@u:hs", "", "t"+n, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			if _, err := st.SendToDevice(ctx, "@w:hs", "W", "txn"+n, []storage.ToDeviceMessage{{UserID: "@u:hs", DeviceID: "DEV", Sender: "@w:hs", Type: "m" + n, Content: []byte(`{}`)}}, nil); err != nil {
				t.Fatal(err)
			}
			if err := st.MarkDeviceListChange(ctx, "@u:hs"); err != nil {
				t.Fatal(err)
			}
			pos, _ := st.MaxAuxPos(ctx)
			return pos
		}
		st := open()
		p0, _ := st.MaxAuxPos(ctx)
		p1 := write(st, "1")
		want1 := []string{"account data @u:hs t1", "to-device m1", "device list @u:hs"}
		if got := read(st, p0, p1); !slices.Equal(got, want1) {
			t.Fatalf("written since the store opened: %v, want %v", got, want1)
		}
		if got := read(st, p1, p1); len(got) != 0 {
			t.Fatalf("nothing after the writes: %v", got)
		}
		st.Close()

		st = open()
		defer st.Close()
		if got := read(st, p0, p1); !slices.Equal(got, want1) {
			t.Fatalf("written before a restart: %v, want %v", got, want1)
		}
		p2 := write(st, "2")
		if got, want := read(st, p1, p2), []string{"account data @u:hs t2", "to-device m2", "device list @u:hs"}; !slices.Equal(got, want) {
			t.Fatalf("written after a restart: %v, want %v", got, want)
		}
	})
}
