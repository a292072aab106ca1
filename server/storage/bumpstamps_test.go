package storage_test

import (
	"context"
	"maps"
	"testing"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// The bump stamps sliding sync sorts by are kept in memory: raised by a
// bump event once it is stored, not by other events, loaded again at
// start, and gone with a purged room.
func TestBumpStamps(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		ctx := context.Background()
		st, err := storage.Open(ctx, e.Options)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { st.Close() }()
		memberRoom(t, st, "!a:hs", "@u:hs")
		memberRoom(t, st, "!b:hs", "@u:hs")
		send := func(room, id, typ string) int64 {
			t.Helper()
			ne := &storage.NewEvent{Event: storage.Event{EventID: id, RoomID: room, Type: typ, Sender: "@u:hs", Depth: 10, JSON: []byte(`{}`)}}
			if err := st.PersistEvents(ctx, []*storage.NewEvent{ne}, &storage.HeadUpdate{Extremities: []string{id}}); err != nil {
				t.Fatal(err)
			}
			return ne.StreamPos
		}
		stamps := func(want map[string]int64) {
			t.Helper()
			got, err := st.BumpStamps(ctx, []string{"!a:hs", "!b:hs", "!c:hs"})
			if err != nil || !maps.Equal(got, want) {
				t.Fatalf("bump stamps %v %v, want %v", got, err, want)
			}
		}
		a := send("!a:hs", "$a1", "m.room.message")
		b := send("!b:hs", "$b1", "m.room.encrypted")
		send("!a:hs", "$a2", "m.reaction") // not a bump
		stamps(map[string]int64{"!a:hs": a, "!b:hs": b})
		a = send("!a:hs", "$a3", "m.room.message")
		stamps(map[string]int64{"!a:hs": a, "!b:hs": b})

		st.Close()
		if st, err = storage.Open(ctx, e.Options); err != nil {
			t.Fatal(err)
		}
		stamps(map[string]int64{"!a:hs": a, "!b:hs": b})
		if err := st.PurgeRoom(ctx, "!b:hs"); err != nil {
			t.Fatal(err)
		}
		stamps(map[string]int64{"!a:hs": a})
	})
}
