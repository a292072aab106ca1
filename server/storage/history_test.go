package storage_test

import (
	"context"
	"slices"
	"testing"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// TestTopologicalPagination stores events whose arrival order differs from
// their depth (as backfill produces) and checks that pages follow (depth,
// stream), that positions sit between events, and that relation queries
// recurse and filter.
func TestTopologicalPagination(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		room := "!r:hs"
		if err := st.CreateRoom(ctx, &storage.Room{RoomID: room, RoomVersion: "12", Creator: "@a:hs"}); err != nil {
			t.Fatal(err)
		}
		put := func(id string, depth int64, relatesTo, relType string) {
			t.Helper()
			ne := &storage.NewEvent{Event: storage.Event{EventID: id, RoomID: room, Type: "m.room.message", Sender: "@a:hs",
				Depth: depth, JSON: []byte(`{}`), RelatesTo: relatesTo, RelType: relType}}
			if err := st.PersistEvents(ctx, []*storage.NewEvent{ne}, nil); err != nil {
				t.Fatalf("persist %s: %v", id, err)
			}
		}
		// Arrival order: $d3, $d1, $d2a, $d2b, $d5; depth order: d1, d2a, d2b, d3, d5.
		put("$d3", 3, "", "")
		put("$d1", 1, "", "")
		put("$d2a", 2, "", "")
		put("$d2b", 2, "", "")
		put("$d5", 5, "", "")
		ids := func(evs []*storage.Event) []string {
			var out []string
			for _, e := range evs {
				out = append(out, e.EventID)
			}
			return out
		}
		back, err := st.RoomEventsTopo(ctx, room, storage.TopoEnd, nil, 10, true)
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(back); !slices.Equal(got, []string{"$d5", "$d3", "$d2b", "$d2a", "$d1"}) {
			t.Fatalf("backwards: %v", got)
		}
		// Page by two, continuing from just before the last event returned.
		var paged []string
		from := storage.TopoEnd
		for range 5 {
			evs, err := st.RoomEventsTopo(ctx, room, from, nil, 2, true)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) == 0 {
				break
			}
			paged = append(paged, ids(evs)...)
			last := evs[len(evs)-1]
			from = storage.TopoPos{Depth: last.Depth, Stream: last.StreamPos - 1}
		}
		if !slices.Equal(paged, ids(back)) {
			t.Fatalf("paged backwards: %v", paged)
		}
		fwd, _ := st.RoomEventsTopo(ctx, room, storage.TopoPos{}, nil, 10, false)
		slices.Reverse(fwd)
		if !slices.Equal(ids(fwd), ids(back)) {
			t.Fatalf("forwards: %v", ids(fwd))
		}
		// The stream position after $d1 arrived maps to the topologically
		// last event by then: $d3 (it arrived first).
		d1, _ := st.EventByID(ctx, "$d1")
		pos, err := st.TopoPosAtStream(ctx, room, d1.StreamPos)
		if err != nil || pos.Depth != 3 {
			t.Fatalf("position at $d1's arrival: %+v %v", pos, err)
		}
		// `to` bounds the walk (exclusive backwards).
		to := storage.TopoPos{Depth: 2, Stream: d1.StreamPos + 1} // just after $d2a
		bounded, _ := st.RoomEventsTopo(ctx, room, storage.TopoEnd, &to, 10, true)
		if got := ids(bounded); !slices.Equal(got, []string{"$d5", "$d3", "$d2b"}) {
			t.Fatalf("bounded: %v", got)
		}

		// Relations: a thread on $d1 with an edit of a reply.
		put("$t1", 6, "$d1", "m.thread")
		put("$t2", 7, "$d1", "m.thread")
		put("$e1", 8, "$t1", "m.replace")
		put("$other", 9, "$d2a", "m.thread")
		rel := func(q storage.RelationQuery) []string {
			q.RoomID, q.EventID, q.Limit = room, "$d1", 10
			if q.Backwards {
				q.From = storage.TopoEnd
			}
			evs, err := st.RelatedEvents(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			return ids(evs)
		}
		if got := rel(storage.RelationQuery{Backwards: true}); !slices.Equal(got, []string{"$t2", "$t1"}) {
			t.Fatalf("direct relations: %v", got)
		}
		if got := rel(storage.RelationQuery{Backwards: true, MaxDepth: 3}); !slices.Equal(got, []string{"$e1", "$t2", "$t1"}) {
			t.Fatalf("recursive relations: %v", got)
		}
		if got := rel(storage.RelationQuery{MaxDepth: 3, RelType: "m.replace"}); !slices.Equal(got, []string{"$e1"}) {
			t.Fatalf("recursive, filtered: %v", got)
		}
		sums, err := st.ThreadSummaries(ctx, room, []string{"$d1", "$d2a", "$d3"}, "@a:hs")
		if err != nil || len(sums) != 2 || sums["$d1"].Count != 2 || sums["$d1"].Latest.EventID != "$t2" || !sums["$d1"].Participated {
			t.Fatalf("thread summaries: %+v %v", sums, err)
		}
		roots, err := st.ThreadRoots(ctx, room, "", storage.TopoEnd.Stream, 10)
		if err != nil || len(roots) != 2 || roots[0].EventID != "$d2a" || roots[1].EventID != "$d1" {
			t.Fatalf("thread roots: %+v %v", roots, err)
		}
		if roots, _ := st.ThreadRoots(ctx, room, "@b:hs", storage.TopoEnd.Stream, 10); len(roots) != 0 {
			t.Fatalf("participated roots for a stranger: %+v", roots)
		}
	})
}
