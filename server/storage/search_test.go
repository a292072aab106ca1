package storage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// searchRoom is a room with one joined user, filled through PersistEvents.
type searchRoom struct {
	t     *testing.T
	st    *storage.Store
	id    string
	prev  []string
	group int64
	n     int
}

func newSearchRoom(t *testing.T, st *storage.Store, id string) *searchRoom {
	t.Helper()
	if err := st.CreateRoom(context.Background(), &storage.Room{RoomID: id, RoomVersion: "11", Creator: "@a:hs"}); err != nil {
		t.Fatal(err)
	}
	r := &searchRoom{t: t, st: st, id: id}
	r.persist(&storage.NewEvent{Event: storage.Event{Type: "m.room.create", StateKey: strp("")}})
	r.persist(&storage.NewEvent{Event: storage.Event{Type: "m.room.member", StateKey: strp("@a:hs"), Membership: "join"}})
	return r
}

// persist stores ne as the room's next event (its ID, room, sender, depth
// and JSON filled in unless set).
func (r *searchRoom) persist(ne *storage.NewEvent) *storage.NewEvent {
	r.t.Helper()
	r.n++
	e := &ne.Event
	if e.EventID == "" {
		e.EventID = fmt.Sprintf("$%s-%d", r.id[1:], r.n)
	}
	e.RoomID, e.Depth = r.id, int64(r.n)
	if e.Sender == "" {
		e.Sender = "@a:hs"
	}
	if e.JSON == nil {
		e.JSON = []byte(`{}`)
	}
	var head *storage.HeadUpdate
	if !e.Outlier && !e.Rejected && !e.SoftFailed && !ne.Backfilled {
		ne.PrevEvents, ne.StateBefore = r.prev, r.group
		head = &storage.HeadUpdate{Extremities: []string{e.EventID}}
		if e.StateKey != nil {
			head.Changes = []storage.StateChange{{Key: storage.StateKey{Type: e.Type, StateKey: *e.StateKey}, EventID: e.EventID}}
		}
	}
	ctx := context.Background()
	var err error
	if e.Outlier {
		err = r.st.PersistOutliers(ctx, []*storage.NewEvent{ne})
	} else {
		err = r.st.PersistEvents(ctx, []*storage.NewEvent{ne}, head)
	}
	if err != nil {
		r.t.Fatalf("persist %s: %v", e.EventID, err)
	}
	if head != nil {
		r.prev, r.group = []string{e.EventID}, ne.StateGroup
	}
	return ne
}

func (r *searchRoom) text(body string) *storage.NewEvent {
	r.t.Helper()
	js, err := json.Marshal(map[string]any{"content": map[string]any{"msgtype": "m.text", "body": body}})
	if err != nil {
		r.t.Fatal(err)
	}
	return r.persist(&storage.NewEvent{Event: storage.Event{Type: "m.room.message", JSON: js}})
}

func searchIDs(t *testing.T, st *storage.Store, q storage.SearchQuery) ([]string, int) {
	t.Helper()
	if q.UserID == "" {
		q.UserID = "@a:hs"
	}
	if q.Types == nil {
		q.Types = []string{"m.room.message", "m.room.name", "m.room.topic"}
	}
	if q.Limit == 0 {
		q.Limit = 10
	}
	res, count, err := st.SearchEvents(context.Background(), &q)
	if err != nil {
		t.Fatalf("search %q: %v", q.Term, err)
	}
	ids := make([]string, len(res))
	for i, r := range res {
		ids[i] = r.Event.EventID
	}
	return ids, count
}

// TestSearchIndex checks what enters and leaves the index on both engines:
// live events and backfilled history do, outliers, rejected and
// soft-failed events do not (until an outlier becomes a timeline event),
// redactions and purges take events out; and the query syntax.
func TestSearchIndex(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		r := newSearchRoom(t, st, "!search:hs")
		hello := r.text("hello wonderful world").Event.EventID
		running := r.text("the dogs were running home").Event.EventID
		r.persist(&storage.NewEvent{Event: storage.Event{Type: "m.room.topic", StateKey: strp(""),
			JSON: []byte(`{"content":{"topic":"a wonderful topic"}}`)}})
		r.persist(&storage.NewEvent{Event: storage.Event{Type: "m.room.message", Rejected: true,
			JSON: []byte(`{"content":{"body":"wonderful but rejected"}}`)}, RejectReason: "test"})
		r.persist(&storage.NewEvent{Event: storage.Event{Type: "m.room.message", SoftFailed: true,
			JSON: []byte(`{"content":{"body":"wonderful but soft-failed"}}`)}, RejectReason: "test"})
		r.persist(&storage.NewEvent{Event: storage.Event{EventID: "$outlier", Type: "m.room.message", Outlier: true,
			JSON: []byte(`{"content":{"body":"wonderful outlier"}}`)}})
		r.persist(&storage.NewEvent{Event: storage.Event{Type: "m.room.message", JSON: []byte(`{"content":{"body":42}}`)}})
		back := r.persist(&storage.NewEvent{Event: storage.Event{Type: "m.room.message",
			JSON: []byte(`{"content":{"body":"wonderful old history"}}`)}, Backfilled: true}).Event.EventID

		ids, count := searchIDs(t, st, storage.SearchQuery{Term: "wonderful"})
		if count != 3 || len(ids) != 3 || !slices.Contains(ids, hello) || !slices.Contains(ids, back) {
			t.Fatalf("wonderful: %v (count %d)", ids, count)
		}
		// Stemming: "run" finds "running", "dog" finds "dogs".
		if ids, _ := searchIDs(t, st, storage.SearchQuery{Term: "run dog"}); !slices.Equal(ids, []string{running}) {
			t.Fatalf("run dog: %v", ids)
		}
		// Synapse's syntax: phrases, or, negation; no FTS5 syntax gets through.
		for term, want := range map[string][]string{
			`"wonderful world"`:          {hello},
			`"world wonderful"`:          nil,
			`hello OR dogs`:              {running, hello},
			`wonderful -topic -history`:  {hello},
			`-wonderful`:                 nil,
			`NEAR(hello world) "`:        nil, // "near" is a word here
			`hello NEAR(world) "`:        nil,
			`world OR -wonderful`:        {hello},
			`"hello" "world" "`:          {hello},
			`hello* AND ) ( ^wonderful:`: {hello},
			``:                           nil,
		} {
			if ids, _ := searchIDs(t, st, storage.SearchQuery{Term: term, Types: []string{"m.room.message"}}); !slices.Equal(ids, want) {
				t.Errorf("%s: %v, want %v", term, ids, want)
			}
		}
		// An outlier that becomes a timeline event enters the index.
		r.persist(&storage.NewEvent{Event: storage.Event{EventID: "$outlier", Type: "m.room.message",
			JSON: []byte(`{"content":{"body":"wonderful outlier"}}`)}})
		if ids, _ := searchIDs(t, st, storage.SearchQuery{Term: "outlier"}); !slices.Equal(ids, []string{"$outlier"}) {
			t.Fatalf("de-outliered: %v", ids)
		}
		// Redacted: gone.
		if err := st.RedactEvent(ctx, hello, "$redaction", []byte(`{"content":{}}`)); err != nil {
			t.Fatal(err)
		}
		if ids, _ := searchIDs(t, st, storage.SearchQuery{Term: "hello"}); len(ids) != 0 {
			t.Fatalf("redacted event found: %v", ids)
		}
		// Not joined: nothing.
		if ids, _ := searchIDs(t, st, storage.SearchQuery{Term: "wonderful", UserID: "@b:hs"}); len(ids) != 0 {
			t.Fatalf("non-member found %v", ids)
		}
		// Purged: the index rows go with the events, queued ones too.
		r.text("wonderful, and queued when the room is purged")
		if err := st.PurgeRoom(ctx, r.id); err != nil {
			t.Fatal(err)
		}
		if n := searchRows(t, st); n != 0 {
			t.Fatalf("%d index rows left after the purge", n)
		}
	})
}

// searchRows counts event_search's rows, and SQLite's queued ones.
func searchRows(t *testing.T, st *storage.Store) int {
	t.Helper()
	var n int
	if err := st.DB().QueryRow(`SELECT COUNT(*) FROM event_search`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n + queuedRows(t, st)
}

// queuedRows counts the rows of SQLite's search queue (0 on PostgreSQL).
func queuedRows(t *testing.T, st *storage.Store) int {
	t.Helper()
	if st.Engine() != "sqlite" {
		return 0
	}
	var n int
	if err := st.DB().QueryRow(`SELECT COUNT(*) FROM event_search_pending`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSearchQueue checks SQLite's queue of index rows (PostgreSQL, which
// writes them with the events, runs the same assertions): a search finds
// queued events, a redaction takes them out of the queue, the queue
// survives a restart, and enough queued rows are moved in the background.
func TestSearchQueue(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		ctx := context.Background()
		st := storagetest.Open(t, e)
		r := newSearchRoom(t, st, "!queue:hs")
		kept := r.text("queued and kept").Event.EventID
		gone := r.text("queued and redacted").Event.EventID
		if err := st.RedactEvent(ctx, gone, "$redaction", []byte(`{"content":{}}`)); err != nil {
			t.Fatal(err)
		}
		if ids, count := searchIDs(t, st, storage.SearchQuery{Term: "queued"}); !slices.Equal(ids, []string{kept}) || count != 1 {
			t.Fatalf("queued: %v (%d)", ids, count)
		}
		// Queued across a restart.
		again := r.text("queued across a restart").Event.EventID
		st.Close()
		st = storagetest.Open(t, e)
		r.st = st
		if ids, _ := searchIDs(t, st, storage.SearchQuery{Term: "restart"}); !slices.Equal(ids, []string{again}) {
			t.Fatalf("after the restart: %v", ids)
		}
		// A burst is moved without a search.
		for i := range 100 {
			r.text(fmt.Sprintf("burst %d", i))
		}
		deadline := time.Now().Add(10 * time.Second)
		for queuedRows(t, st) >= 32 {
			if time.Now().After(deadline) {
				t.Fatalf("%d rows still queued", queuedRows(t, st))
			}
			time.Sleep(10 * time.Millisecond)
		}
		if _, count := searchIDs(t, st, storage.SearchQuery{Term: "burst"}); count != 100 {
			t.Fatalf("burst: %d found", count)
		}
		if n := queuedRows(t, st); n != 0 {
			t.Fatalf("%d rows queued after a search", n)
		}
	})
}

// TestSearchOrderAndPages pages through results in both orders: every
// match once, in order, and the count stays the total.
func TestSearchOrderAndPages(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		r := newSearchRoom(t, st, "!pages:hs")
		var sent []string
		for i := range 25 {
			body := fmt.Sprintf("note number %d", i)
			if i%5 == 0 {
				body = fmt.Sprintf("note note note, a note about notes: %d", i)
			}
			sent = append(sent, r.text(body).Event.EventID)
		}
		other := newSearchRoom(t, st, "!other:hs")
		other.text("a note elsewhere")
		for _, byRank := range []bool{false, true} {
			q := storage.SearchQuery{Term: "note", UserID: "@a:hs", Types: []string{"m.room.message"}, Rooms: []string{r.id}, ByRank: byRank, Limit: 7}
			var got []storage.SearchResult
			for page := 0; ; page++ {
				res, count, err := st.SearchEvents(context.Background(), &q)
				if err != nil {
					t.Fatal(err)
				}
				if count != 25 {
					t.Fatalf("page %d: count %d", page, count)
				}
				got = append(got, res...)
				if len(res) < q.Limit {
					break
				}
				p := res[len(res)-1].Pos()
				q.After = &p
			}
			if len(got) != 25 {
				t.Fatalf("rank %v: %d results", byRank, len(got))
			}
			var ids []string
			for i, g := range got {
				ids = append(ids, g.Event.EventID)
				if i > 0 && byRank && g.Rank > got[i-1].Rank {
					t.Fatalf("rank order broken at %d: %v > %v", i, g.Rank, got[i-1].Rank)
				}
			}
			if !byRank {
				want := slices.Clone(sent)
				slices.Reverse(want)
				if !slices.Equal(ids, want) {
					t.Fatalf("recent order: %v", ids)
				}
			} else {
				// The five messages saying "note" most often come first.
				for _, id := range ids[:5] {
					if i := slices.Index(sent, id); i%5 != 0 {
						t.Fatalf("rank order: %v first", ids[:5])
					}
				}
			}
		}
	})
}

// TestSearchMigration indexes the events stored before the index existed:
// migration 0017 run again on a database holding events.
func TestSearchMigration(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		st := storagetest.Open(t, e)
		r := newSearchRoom(t, st, "!old:hs")
		r.text("an old message")
		r.text("nul\u0000inside")
		r.text("another old message")
		db := st.DB()
		for _, q := range []string{`DROP TABLE event_search`, `DROP TABLE IF EXISTS event_search_pending`, `DELETE FROM schema_migrations WHERE version = 17`} {
			if _, err := db.Exec(q); err != nil {
				t.Fatal(err)
			}
		}
		st.Close()
		st = storagetest.Open(t, e)
		if ids, count := searchIDs(t, st, storage.SearchQuery{Term: "old message"}); count != 2 || len(ids) != 2 {
			t.Fatalf("after the migration: %v (%d)", ids, count)
		}
		if ids, _ := searchIDs(t, st, storage.SearchQuery{Term: "inside"}); len(ids) != 1 {
			t.Fatalf("text with NUL not indexed: %v", ids)
		}
	})
}
