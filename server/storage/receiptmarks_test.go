package storage_test

import (
	"context"
	"slices"
	"testing"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// ReceiptsBetween reads only the rooms with a receipt after the reader's
// position, yet misses none: written since the store opened, or before
// it (read after a restart), in stream order across rooms.
func TestReceiptsBetweenSkipsQuietRooms(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		ctx := context.Background()
		open := func() *storage.Store {
			t.Helper()
			st, err := storage.Open(ctx, e.Options)
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
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
