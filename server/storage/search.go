package storage

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode"

	"github.com/tidwall/gjson"
)

// Full-text search over room events (POST /search, server/client_search.go).
//
// event_search holds one row per searchable event: a live, accepted event
// (not an outlier, not rejected or soft-failed; backfilled history
// included) of a type whose text the spec's search keys name
// (SearchKeyType), keyed by the event's stream_ordering. It is written by
// the transaction that persists the event (indexForSearch): on PostgreSQL
// by the event's own INSERT (withSearchIndex), on SQLite through a queue
// that every search empties first (searchQueue). So a search never misses
// an event /sync has shown. Rows leave with the event's redaction or its
// room's purge.
//
// The engines differ here more than anywhere else, but mostly in SQL text;
// both read a search term through the same parse of Synapse's syntax
// (searchTerm), rendered in each one's query language:
//   - SQLite: an FTS5 table (modernc's build has FTS5) whose rowid is the
//     stream_ordering, tokenised by unicode61 with the Porter stemmer, so
//     that "messages" finds "message" as PostgreSQL's english
//     configuration does; rank is -bm25 (higher is better); highlights
//     come from FTS5's highlight().
//   - PostgreSQL: a tsvector per event under a GIN index, the english
//     configuration and websearch_to_tsquery (as Synapse), rank
//     ts_rank_cd, highlights from ts_headline.

// SearchKeyType is the event type whose content a search key names
// (content.body: m.room.message, content.name: m.room.name,
// content.topic: m.room.topic, as Synapse indexes them).
func SearchKeyType(key string) (string, bool) {
	switch key {
	case "content.body":
		return "m.room.message", true
	case "content.name":
		return "m.room.name", true
	case "content.topic":
		return "m.room.topic", true
	}
	return "", false
}

// SearchText is the text of an event the index holds: content.body,
// content.name or content.topic by type, when it is a non-empty string.
// NUL is replaced (neither engine indexes it) and invalid UTF-8 too.
func SearchText(typ string, pdu []byte) (string, bool) {
	var field string
	switch typ {
	case "m.room.message":
		field = "content.body"
	case "m.room.name":
		field = "content.name"
	case "m.room.topic":
		field = "content.topic"
	default:
		return "", false
	}
	v := gjson.GetBytes(pdu, field)
	if v.Type != gjson.String || v.Str == "" {
		return "", false
	}
	return strings.ToValidUTF8(strings.ReplaceAll(v.Str, "\x00", " "), "\uFFFD"), true
}

// searchRowID is the column of event_search holding the stream_ordering.
func (s *Store) searchRowID() string {
	if s.d.Name == "sqlite" {
		return "rowid"
	}
	return "stream_ordering"
}

// indexForSearch adds a persisted event to the index when it is
// searchable: on SQLite to the queue (searchQueue) with the batch's other
// rows, on PostgreSQL to event_search, unless the event's own INSERT did
// (withSearchIndex).
func (s *Store) indexForSearch(ctx context.Context, tx *sql.Tx, rows *batchRows, ne *NewEvent) error {
	text, ok := searchTextOf(ne)
	if !ok {
		return nil
	}
	if s.d.Name != "postgres" {
		rows.search = append(rows.search, ne.StreamPos, text)
		return nil
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO event_search (stream_ordering, room_id, type, sender, origin_server_ts, vector)
		VALUES ($1, $2, $3, $4, $5, to_tsvector('english', $6))`, ne.StreamPos, ne.RoomID, ne.Type, ne.Sender, ne.OriginServerTS, text)
	if err != nil {
		return fmt.Errorf("storage: index %s for search: %w", ne.EventID, err)
	}
	return nil
}

// withSearchIndex returns the statement inserting an event (insert, which
// returns the event's stream_ordering, and its arguments), made on
// PostgreSQL to write the event's index row too when it is searchable,
// and whether it does. A round trip less inside the room's lock, where
// every send of the room waits; SQLite has no round trips to save.
func (s *Store) withSearchIndex(ne *NewEvent, insert string, args ...any) (string, []any, bool) {
	text, ok := searchTextOf(ne)
	if !ok || s.d.Name != "postgres" {
		return insert, args, false
	}
	n := len(args)
	return fmt.Sprintf(`WITH e AS (%s), s AS (INSERT INTO event_search (stream_ordering, room_id, type, sender, origin_server_ts, vector)
		SELECT stream_ordering, $%d, $%d, $%d, $%d, to_tsvector('english', $%d) FROM e) SELECT stream_ordering FROM e`, insert, n+1, n+2, n+3, n+4, n+5),
		append(args, ne.RoomID, ne.Type, ne.Sender, ne.OriginServerTS, text), true
}

// searchTextOf is the text to index for an event about to be persisted,
// if it is searchable: live and accepted, with text a search key names.
func searchTextOf(ne *NewEvent) (string, bool) {
	if ne.Outlier || ne.Rejected || ne.SoftFailed {
		return "", false
	}
	return SearchText(ne.Type, ne.JSON)
}

// unindexForSearch removes an event from the index (its redaction), and
// reports how many rows it took from SQLite's queue.
func (s *Store) unindexForSearch(ctx context.Context, tx *sql.Tx, eventID string) (int64, error) {
	_, err := tx.ExecContext(ctx, `DELETE FROM event_search WHERE `+s.searchRowID()+` IN
		(SELECT stream_ordering FROM events WHERE event_id = $1)`, eventID)
	if err != nil {
		return 0, fmt.Errorf("storage: remove %s from search: %w", eventID, err)
	}
	if s.d.Name != "sqlite" {
		return 0, nil
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM event_search_pending WHERE stream_ordering IN
		(SELECT stream_ordering FROM events WHERE event_id = $1)`, eventID)
	if err != nil {
		return 0, fmt.Errorf("storage: remove %s from search: %w", eventID, err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// searchQueue is how SQLite's index keeps out of the sends' way. FTS5
// pays most of an insert once per transaction (it writes a new segment at
// every commit): about 80 µs of CPU in modernc's SQLite, which each send
// would pay inside the database's single writer. So the transaction that
// persists an event queues its row in event_search_pending (a plain
// insert), and the queue is moved into the FTS5 table in batches, in
// transactions of their own: in the background once searchFlushAt rows
// wait, and before every search, so that a search finds every event
// persisted before it began. The queue is durable with the events; a
// batch moved is committed without waiting for the disk, because a crash
// that loses it puts the rows back in the queue.
//
// PostgreSQL writes its index row with the event (withSearchIndex): its
// GIN index takes rows into a pending list of its own.
type searchQueue struct {
	pending  atomic.Int64 // rows in event_search_pending
	flushing atomic.Bool  // a background flush is running
	flushMu  sync.Mutex   // one flush at a time
	mu       sync.Mutex   // closed, and wg.Add against Close's Wait
	closed   bool
	wg       sync.WaitGroup
}

const (
	searchFlushAt    = 32   // queued rows that start a background flush
	searchFlushBatch = 1000 // rows one flush transaction moves
)

// openSearchQueue counts the rows a previous run left queued.
func (s *Store) openSearchQueue(ctx context.Context) error {
	if s.d.Name != "sqlite" {
		return nil
	}
	var n int64
	if err := s.write.QueryRowContext(ctx, `SELECT COUNT(*) FROM event_search_pending`).Scan(&n); err != nil {
		return fmt.Errorf("storage: search queue: %w", err)
	}
	s.sq.pending.Store(n)
	return nil
}

// closeSearchQueue waits for a background flush to end.
func (s *Store) closeSearchQueue() {
	s.sq.mu.Lock()
	s.sq.closed = true
	s.sq.mu.Unlock()
	s.sq.wg.Wait()
}

// searchQueued counts the rows persisting evs queued, and starts a
// background flush when enough wait.
func (s *Store) searchQueued(evs []*NewEvent) {
	if s.d.Name != "sqlite" {
		return
	}
	n := 0
	for _, ne := range evs {
		if _, ok := searchTextOf(ne); ok {
			n++
		}
	}
	if n == 0 || s.sq.pending.Add(int64(n)) < searchFlushAt || !s.sq.flushing.CompareAndSwap(false, true) {
		return
	}
	s.sq.mu.Lock()
	defer s.sq.mu.Unlock()
	if s.sq.closed {
		s.sq.flushing.Store(false)
		return
	}
	s.sq.wg.Add(1)
	go func() {
		defer s.sq.wg.Done()
		defer s.sq.flushing.Store(false)
		// A failure leaves the rows queued; the next search's flush
		// tries again and reports it.
		_ = s.flushSearch(context.Background())
	}()
}

// flushSearch moves every queued row into the FTS5 table.
func (s *Store) flushSearch(ctx context.Context) error {
	if s.d.Name != "sqlite" || s.sq.pending.Load() <= 0 {
		return nil
	}
	s.sq.flushMu.Lock()
	defer s.sq.flushMu.Unlock()
	for {
		var moved int64
		err := s.txNoSync(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO event_search (rowid, value)
				SELECT stream_ordering, value FROM event_search_pending ORDER BY stream_ordering LIMIT $1`, searchFlushBatch); err != nil {
				return fmt.Errorf("storage: index queued events: %w", err)
			}
			res, err := tx.ExecContext(ctx, `DELETE FROM event_search_pending WHERE stream_ordering IN
				(SELECT stream_ordering FROM event_search_pending ORDER BY stream_ordering LIMIT $1)`, searchFlushBatch)
			if err != nil {
				return fmt.Errorf("storage: index queued events: %w", err)
			}
			moved, _ = res.RowsAffected()
			return nil
		})
		if err != nil {
			return err
		}
		s.sq.pending.Add(-moved)
		if moved < searchFlushBatch {
			return nil
		}
	}
}

// indexExistingEvents is migration 0017's step: it indexes the events
// stored before event_search existed, in batches, with the same rules and
// text as indexForSearch. Done in Go rather than SQL so that both engines
// index exactly what a new event would give (PostgreSQL's JSON functions
// fail the whole migration on a "\u0000" in one event's content).
func (s *Store) indexExistingEvents(ctx context.Context, tx *sql.Tx) error {
	head, tail, cols := `INSERT INTO event_search (rowid, value) VALUES `, ``, 2
	if s.d.Name == "postgres" {
		head = `INSERT INTO event_search (stream_ordering, room_id, type, sender, origin_server_ts, vector)
			SELECT CAST(v.s AS BIGINT), v.r, v.t, v.u, CAST(v.o AS BIGINT), to_tsvector('english', v.x) FROM (VALUES `
		tail, cols = `) AS v (s, r, t, u, o, x)`, 6
	}
	const batch = 1000
	after := int64(-1 << 62)
	for {
		rows, err := tx.QueryContext(ctx, `SELECT stream_ordering, room_id, type, sender, origin_server_ts, json FROM events
			WHERE stream_ordering > $1 AND type IN ('m.room.message', 'm.room.name', 'm.room.topic')
			AND outlier = 0 AND rejected = 0 AND soft_failed = 0 AND redacted_by IS NULL
			ORDER BY stream_ordering LIMIT $2`, after, batch)
		if err != nil {
			return fmt.Errorf("storage: read events to index: %w", err)
		}
		var args []any
		n := 0
		for rows.Next() {
			var pos, ts int64
			var room, typ, sender, js string
			if err := rows.Scan(&pos, &room, &typ, &sender, &ts, &js); err != nil {
				rows.Close()
				return err
			}
			n, after = n+1, pos
			if text, ok := SearchText(typ, []byte(js)); ok {
				if s.d.Name == "postgres" {
					// VALUES' untyped parameters are text there.
					args = append(args, strconv.FormatInt(pos, 10), room, typ, sender, strconv.FormatInt(ts, 10), text)
				} else {
					args = append(args, pos, text)
				}
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if err := s.bulkExec(ctx, tx, head, cols, tail, args); err != nil {
			return fmt.Errorf("storage: index events for search: %w", err)
		}
		if n < batch {
			return nil
		}
	}
}

// SearchQuery is one round of a search: which events, in which order,
// from where.
type SearchQuery struct {
	// Term is the user's search term (Synapse's syntax: words, "phrases",
	// or, -negation).
	Term string
	// UserID: only rooms this user is joined to are searched.
	UserID string
	// Types are the event types searched (from the keys and the filter);
	// none: nothing is found.
	Types []string
	// Rooms, when not nil, keeps only these rooms; NotRooms leaves rooms
	// out. Senders and NotSenders do the same for senders.
	Rooms, NotRooms     []string
	Senders, NotSenders []string
	// ByRank orders by rank, best first; otherwise newest first (by
	// origin_server_ts, as Synapse). Ties go to the later stream position.
	ByRank bool
	// After, when set, starts after this result in the order.
	After *SearchPos
	Limit int
}

// SearchPos is a result's place in a search's order. SQLite's bm25 weighs
// a match against the whole index, so there a rank order shifts a little
// as messages arrive, and a page boundary may then repeat or skip a
// result; PostgreSQL's ts_rank_cd depends on the event alone.
type SearchPos struct {
	Rank   float64
	TS     int64
	Stream int64
}

// SearchResult is one event found, with its rank (higher is better; the
// scale differs between the engines).
type SearchResult struct {
	Event *Event
	Rank  float64
}

// Pos is the place to continue after r.
func (r SearchResult) Pos() SearchPos {
	return SearchPos{Rank: r.Rank, TS: r.Event.OriginServerTS, Stream: r.Event.StreamPos}
}

// SearchEvents returns up to q.Limit events matching q in its order, and
// how many match in all, whatever q.After (Synapse's count: the filters
// count, history visibility does not).
//
// All matches are ranked and counted in one statement, and only the page
// is joined back to the events for their JSON: the sort carries a few
// numbers per match, not the events.
func (s *Store) SearchEvents(ctx context.Context, q *SearchQuery) ([]SearchResult, int, error) {
	if err := s.flushSearch(ctx); err != nil {
		return nil, 0, err
	}
	match := s.matchQuery(q.Term)
	if match == "" || len(q.Types) == 0 || q.Limit <= 0 || (q.Rooms != nil && len(q.Rooms) == 0) ||
		(q.Senders != nil && len(q.Senders) == 0) {
		return nil, 0, nil
	}
	// The statement is built in three parts: with (PostgreSQL's matches),
	// from + where (the matches the user may search, $1 the match), and
	// the page around them. t is the table whose room_id, type, sender,
	// origin_server_ts and stream_ordering the conditions read: the
	// events on SQLite, the index itself on PostgreSQL. rank is the
	// rank's expression among the matches, pageRank in the page.
	args := []any{match}
	var with, from, t, rank, where string
	pageRank := `c.rank`
	if s.d.Name == "sqlite" {
		from, t = `event_search JOIN events e ON e.stream_ordering = event_search.rowid
			JOIN current_state m ON m.room_id = e.room_id AND m.type = 'm.room.member' AND m.state_key = $2 AND m.membership = 'join'`, "e"
		args = append(args, q.UserID)
		rank = `-bm25(event_search)`
		// Only searchable events are indexed; the events' own columns
		// are checked anyway, as they are read.
		where = `event_search MATCH $1 AND e.outlier = 0 AND e.rejected = 0 AND e.soft_failed = 0 AND e.redacted_by IS NULL` +
			searchFilters(q, t, &args)
	} else {
		// The matches first, from the GIN index, whatever the planner's
		// statistics say: right after a burst of messages they lag, and
		// it would read every event of the room, or look the membership
		// up per match. The index rows carry what the conditions need,
		// the rooms are a list, so only the page reads events.
		rooms, err := s.joinedRooms(ctx, q.UserID, q.Rooms)
		if err != nil || len(rooms) == 0 {
			return nil, 0, err
		}
		q := *q
		q.Rooms = rooms
		with = `WITH s AS MATERIALIZED (SELECT * FROM event_search WHERE vector @@ websearch_to_tsquery('english', $1)) `
		from, t, where = `s`, "s", `TRUE`
		rank = `CAST(ts_rank_cd(s.vector, websearch_to_tsquery('english', $1)) AS DOUBLE PRECISION)`
		if !q.ByRank {
			// Newest first: rank the page alone (ts_rank_cd costs a few
			// µs a match).
			rank = `0`
			pageRank = `CAST(ts_rank_cd((SELECT x.vector FROM event_search x WHERE x.stream_ordering = c.so),
				websearch_to_tsquery('english', $1)) AS DOUBLE PRECISION)`
		}
		where += searchFilters(&q, t, &args)
	}
	countArgs := len(args)

	order := `c.ts DESC, c.so DESC`
	if q.ByRank {
		order = `c.rank DESC, c.so DESC`
	}
	after := ``
	if p := q.After; p != nil {
		n := len(args)
		if q.ByRank {
			after = fmt.Sprintf(`WHERE c.rank < $%d OR (c.rank = $%d AND c.so < $%d)`, n+1, n+1, n+2)
			args = append(args, p.Rank, p.Stream)
		} else {
			after = fmt.Sprintf(`WHERE c.ts < $%d OR (c.ts = $%d AND c.so < $%d)`, n+1, n+1, n+2)
			args = append(args, p.TS, p.Stream)
		}
	}
	args = append(args, q.Limit)
	// The count is a window over the matches before the page's start
	// (SQLite cannot call an FTS5 function in a window query itself).
	page := `SELECT c.so, c.ts, c.rank, c.total FROM (
			SELECT m.so, m.ts, m.rank, COUNT(*) OVER () AS total FROM (
				SELECT ` + t + `.stream_ordering AS so, ` + t + `.origin_server_ts AS ts, ` + rank + ` AS rank FROM ` + from + ` WHERE ` + where + `
			) m
		) c ` + after + ` ORDER BY ` + order + fmt.Sprintf(` LIMIT $%d`, len(args))
	rows, err := s.read.QueryContext(ctx, with+`SELECT `+eventColumnsOf("e.")+`, `+pageRank+`, c.total FROM (`+page+`) c
		JOIN events e ON e.stream_ordering = c.so`, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("storage: search: %w", err)
	}
	defer rows.Close()
	var out []SearchResult
	total := -1
	for rows.Next() {
		var r SearchResult
		if r.Event, err = scanEvent(scanPlus{rows, []any{&r.Rank, &total}}); err != nil {
			return nil, 0, fmt.Errorf("storage: search: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("storage: search: %w", err)
	}
	rows.Close()
	// The outer join loses the page's order.
	slices.SortFunc(out, func(a, b SearchResult) int {
		if q.ByRank && a.Rank != b.Rank {
			return cmp.Compare(b.Rank, a.Rank)
		}
		if !q.ByRank && a.Event.OriginServerTS != b.Event.OriginServerTS {
			return cmp.Compare(b.Event.OriginServerTS, a.Event.OriginServerTS)
		}
		return cmp.Compare(b.Event.StreamPos, a.Event.StreamPos)
	})
	if total < 0 {
		// An empty page carries no count: count on its own.
		err := s.read.QueryRowContext(ctx, with+`SELECT COUNT(*) FROM `+from+` WHERE `+where, args[:countArgs]...).Scan(&total)
		if err != nil {
			return nil, 0, fmt.Errorf("storage: search count: %w", err)
		}
	}
	return out, total, nil
}

// joinedRooms lists the rooms userID is joined to, of only's when not nil.
func (s *Store) joinedRooms(ctx context.Context, userID string, only []string) ([]string, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT room_id FROM current_state
		WHERE type = 'm.room.member' AND state_key = $1 AND membership = 'join'`, userID)
	if err != nil {
		return nil, fmt.Errorf("storage: joined rooms: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("storage: joined rooms: %w", err)
		}
		if only == nil || slices.Contains(only, id) {
			out = append(out, id)
		}
	}
	return out, rows.Err()
}

// searchFilters renders the conditions on table t (its room_id, type and
// sender) besides the match, appending their arguments.
func searchFilters(q *SearchQuery, t string, args *[]any) string {
	in := func(col string, not bool, vals []string) string {
		start := len(*args) + 1
		for _, v := range vals {
			*args = append(*args, v)
		}
		op := ` IN (`
		if not {
			op = ` NOT IN (`
		}
		return ` AND ` + t + `.` + col + op + inList(start, len(vals)) + `)`
	}
	w := in("type", false, q.Types)
	if q.Rooms != nil {
		w += in("room_id", false, q.Rooms)
	}
	if len(q.NotRooms) > 0 {
		w += in("room_id", true, q.NotRooms)
	}
	if q.Senders != nil {
		w += in("sender", false, q.Senders)
	}
	if len(q.NotSenders) > 0 {
		w += in("sender", true, q.NotSenders)
	}
	return w
}

// scanPlus scans an event row followed by extra columns.
type scanPlus struct {
	rows  *sql.Rows
	extra []any
}

func (p scanPlus) Scan(dest ...any) error { return p.rows.Scan(append(dest, p.extra...)...) }

// SearchHighlights returns the words of the texts that the search term
// matched, lowercased, for clients to highlight (Synapse's highlights,
// which it computes on PostgreSQL only). evs are events SearchEvents
// returned.
func (s *Store) SearchHighlights(ctx context.Context, term string, evs []*Event) ([]string, error) {
	type doc struct {
		pos  int64
		text string
	}
	var docs []doc
	var all strings.Builder
	for _, e := range evs {
		if t, ok := SearchText(e.Type, e.JSON); ok {
			docs = append(docs, doc{e.StreamPos, t})
			all.WriteString(t)
		}
	}
	match := s.matchQuery(term)
	if len(docs) == 0 || match == "" {
		return nil, nil
	}
	// Marks the texts do not contain, as Synapse picks them.
	start, stop := "<", ">"
	for strings.Contains(all.String(), start) {
		start += "<"
	}
	for strings.Contains(all.String(), stop) {
		stop += ">"
	}
	var rows *sql.Rows
	var err error
	if s.d.Name == "sqlite" {
		args := []any{match, start, stop}
		for _, d := range docs {
			args = append(args, d.pos)
		}
		rows, err = s.read.QueryContext(ctx, `SELECT highlight(event_search, 0, $2, $3) FROM event_search
			WHERE event_search MATCH $1 AND rowid IN (`+inList(4, len(docs))+`)`, args...)
	} else {
		args := []any{match}
		values := make([]string, len(docs))
		for i, d := range docs {
			args = append(args, d.text)
			values[i] = fmt.Sprintf("($%d)", i+2)
		}
		opts := fmt.Sprintf(`HighlightAll=true, StartSel="%s", StopSel="%s"`, start, stop)
		rows, err = s.read.QueryContext(ctx, `SELECT ts_headline('english', v.t, websearch_to_tsquery('english', $1), '`+
			strings.ReplaceAll(opts, "'", "''")+`') FROM (VALUES `+strings.Join(values, ", ")+`) AS v (t)`, args...)
	}
	if err != nil {
		return nil, fmt.Errorf("storage: search highlights: %w", err)
	}
	defer rows.Close()
	marked := regexp.MustCompile(regexp.QuoteMeta(start) + `(.*?)` + regexp.QuoteMeta(stop))
	seen := map[string]bool{}
	var out []string
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			return nil, fmt.Errorf("storage: search highlights: %w", err)
		}
		for _, m := range marked.FindAllStringSubmatch(h, -1) {
			for _, w := range strings.Fields(strings.ToLower(m[1])) {
				if !seen[w] {
					seen[w] = true
					out = append(out, w)
				}
			}
		}
	}
	return out, rows.Err()
}

// searchTerm is a search term parsed in Synapse's syntax: words, "quoted
// phrases", "or" between alternatives, "-" before a word or phrase to
// exclude it; the words and phrases of an alternative must all match. It
// is rendered for each engine (fts5, websearch) so that both read a term
// alike, and nothing the user types is either engine's syntax.
type searchTerm []searchAlt

// searchAlt is one alternative: phrases (of words) that must match, and
// phrases that must not. Alternatives that only exclude are dropped:
// FTS5's NOT is binary, and "everything but" is no search.
type searchAlt struct {
	must, not [][]string
}

func parseSearchTerm(term string) searchTerm {
	var out searchTerm
	var alt searchAlt
	not := false
	end := func() {
		if len(alt.must) > 0 {
			out = append(out, alt)
		}
		alt = searchAlt{}
	}
	add := func(words []string) {
		var kept []string
		for _, w := range words {
			if !searchStopWords[strings.ToLower(w)] && strings.IndexFunc(w, isWordRune) >= 0 {
				kept = append(kept, w)
			}
		}
		if len(kept) == 0 {
			return
		}
		if not {
			alt.not = append(alt.not, kept)
		} else {
			alt.must = append(alt.must, kept)
		}
		not = false
	}
	for i, chunk := range strings.Split(term, `"`) {
		words := searchWord.FindAllString(chunk, -1)
		if i%2 == 1 { // between quotes: a phrase
			add(words)
			continue
		}
		for _, w := range words {
			for strings.HasPrefix(w, "-") {
				not, w = true, w[1:]
			}
			switch {
			case w == "":
			case strings.EqualFold(w, "or"):
				end()
				not = false
			default:
				add([]string{w})
			}
		}
	}
	end()
	return out
}

// fts5 renders the term as an FTS5 query: every phrase quoted, AND within
// an alternative, NOT for exclusions, OR between alternatives.
func (t searchTerm) fts5() string {
	quote := func(words []string) string { return `"` + strings.Join(words, " ") + `"` }
	alts := make([]string, len(t))
	for i, a := range t {
		must := make([]string, len(a.must))
		for j, p := range a.must {
			must[j] = quote(p)
		}
		expr := "(" + strings.Join(must, " AND ") + ")"
		for _, p := range a.not {
			expr += " NOT " + quote(p)
		}
		alts[i] = "(" + expr + ")"
	}
	return strings.Join(alts, " OR ")
}

// websearch renders the term for PostgreSQL's websearch_to_tsquery.
func (t searchTerm) websearch() string {
	quote := func(words []string) string { return `"` + strings.Join(words, " ") + `"` }
	alts := make([]string, len(t))
	for i, a := range t {
		var parts []string
		for _, p := range a.must {
			parts = append(parts, quote(p))
		}
		for _, p := range a.not {
			parts = append(parts, "-"+quote(p))
		}
		alts[i] = strings.Join(parts, " ")
	}
	return strings.Join(alts, " or ")
}

// matchQuery is the term in the engine's query syntax; "" when there is
// nothing to search for.
func (s *Store) matchQuery(term string) string {
	t := parseSearchTerm(term)
	if s.d.Name == "sqlite" {
		return t.fts5()
	}
	return t.websearch()
}

// searchWord is a word of a search term (Synapse's [\w-]+, with the
// combining marks some scripts need inside words).
var searchWord = regexp.MustCompile(`[\p{L}\p{M}\p{N}_-]+`)

// searchStopWords are left out of SQLite queries (Synapse's list);
// PostgreSQL's english configuration has its own.
var searchStopWords = map[string]bool{"the": true, "a": true, "you": true, "me": true, "and": true, "but": true}

// isWordRune is a rune FTS5's unicode61 tokeniser keeps in a token.
func isWordRune(r rune) bool { return unicode.IsLetter(r) || unicode.IsNumber(r) }
