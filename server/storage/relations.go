package storage

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync/atomic"
)

// Relations (spec: "Forming relationships between events"). The events
// table keeps each event's content.m.relates_to as relates_to/rel_type.
// A redacted relation no longer counts: redaction strips m.relates_to from
// the content, so every query here skips redacted events, as Synapse does.

const liveRelation = liveEvent + ` AND redacted_by IS NULL`

// roomVersions count changes per room, hashed into a fixed number of
// buckets (rooms sharing one only move each other's): a reader that reads
// a room's version before a read and finds it unchanged later knows no
// such change was made in between.
type roomVersions struct {
	seed maphash.Seed
	n    [1024]atomic.Uint64
}

func newRoomVersions() *roomVersions { return &roomVersions{seed: maphash.MakeSeed()} }

func (v *roomVersions) bucket(roomID string) *atomic.Uint64 {
	return &v.n[maphash.String(v.seed, roomID)%uint64(len(v.n))]
}

func (v *roomVersions) get(roomID string) uint64 { return v.bucket(roomID).Load() }
func (v *roomVersions) bump(roomID string)       { v.bucket(roomID).Add(1) }

// RelationsVersion changes whenever an event that may add to another
// event's bundled aggregations (an edit, a reference, a thread reply:
// every relation but an annotation) is stored in roomID. It moves after
// the event's transaction committed and before its stream position
// becomes visible, so a reader that read version v before a relation
// read, and reads v again later, knows no such event was stored in the
// room in between. A relation only ever stops counting otherwise (by a
// redaction, or a purge), so "no relations" seen at v still holds at v.
func (s *Store) RelationsVersion(roomID string) uint64 { return s.relVersions.get(roomID) }

// relationsStored moves the relation versions of the rooms of evs that
// hold a relation (see RelationsVersion). Events become relations only
// through PersistEvents: outliers are never live relations, and one turned
// into a timeline event is persisted again.
func (s *Store) relationsStored(evs []*NewEvent) {
	for _, ne := range evs {
		if ne.RelatesTo != "" && ne.RelType != "m.annotation" {
			s.relVersions.bump(ne.RoomID)
		}
	}
}

// UnrelatedAt returns the relations version eventID's room had before the
// event was stored, if it is a fresh event (NewEvent.Fresh) stored
// recently. Nothing could relate to it then, and every relation stored
// since moves the version, so while RelationsVersion still returns that
// version the event has nothing to bundle: the members woken by a new
// message need not each ask for its relations.
func (s *Store) UnrelatedAt(eventID string) (version uint64, ok bool) {
	return s.c.freshUnrelated.Get(eventID)
}

// freshStored records the fresh events of a committed write for
// UnrelatedAt, with the version read before the write was queued: one
// stored in the same write that relates to them has moved it since.
func (s *Store) freshStored(p *Pending) {
	for _, ne := range p.evs {
		if ne.Fresh && ne.live() {
			s.c.freshUnrelated.Add(ne.EventID, p.relBefore)
		}
	}
}

// EventRowsVersion changes whenever a stored event of roomID changes in
// place (a redaction) or goes (a purge), after the change committed. The
// rows RoomEvents reads of a range of committed positions are the same as
// long as it does not change: live events are never rejected, soft-failed
// or turned into outliers later, and an outlier made a timeline event
// takes a new position.
func (s *Store) EventRowsVersion(roomID string) uint64 { return s.rowVersions.get(roomID) }

// RelationQuery selects the events relating to one parent.
type RelationQuery struct {
	RoomID, EventID string
	// RelType and EventType filter the results ("" for any).
	RelType, EventType string
	// MaxDepth follows relations of relations this many levels (1: direct
	// relations only).
	MaxDepth int
	From     TopoPos
	To       *TopoPos
	Limit    int
	// Backwards walks newest first from From; otherwise oldest first after From.
	Backwards bool
}

// RelatedEvents returns the events relating to q.EventID in topological
// order, within q's bounds.
func (s *Store) RelatedEvents(ctx context.Context, q RelationQuery) ([]*Event, error) {
	if q.MaxDepth < 1 {
		q.MaxDepth = 1
	}
	args := []any{q.RoomID, q.EventID, q.MaxDepth, q.From.Depth, q.From.Stream, q.Limit}
	query := `WITH RECURSIVE rel (event_id, lvl) AS (
			SELECT event_id, 1 FROM events WHERE relates_to = $2 AND room_id = $1 AND ` + liveRelation + `
			UNION
			SELECT e.event_id, rel.lvl + 1 FROM events e JOIN rel ON e.relates_to = rel.event_id
			WHERE rel.lvl < $3 AND e.room_id = $1 AND e.outlier = 0 AND e.rejected = 0 AND e.redacted_by IS NULL
		)
		SELECT ` + eventColumns + ` FROM events WHERE event_id IN (SELECT event_id FROM rel)`
	order := `depth ASC, stream_ordering ASC`
	if q.Backwards {
		query += ` AND ` + topoAtOrBefore(4, 5)
		order = `depth DESC, stream_ordering DESC`
	} else {
		query += ` AND ` + topoAfter(4, 5)
	}
	if q.To != nil {
		args = append(args, q.To.Depth, q.To.Stream)
		if q.Backwards {
			query += ` AND ` + topoAfter(7, 8)
		} else {
			query += ` AND ` + topoAtOrBefore(7, 8)
		}
	}
	if q.RelType != "" {
		args = append(args, q.RelType)
		query += fmt.Sprintf(` AND rel_type = $%d`, len(args))
	}
	if q.EventType != "" {
		args = append(args, q.EventType)
		query += fmt.Sprintf(` AND type = $%d`, len(args))
	}
	return scanEvents(s.read.QueryContext(ctx, query+` ORDER BY `+order+` LIMIT $6`, args...))
}

// RelationsTo returns the live events relating to any of parents with one
// of relTypes, in topological order. Callers check that a relation is in
// its parent's room.
func (s *Store) RelationsTo(ctx context.Context, parents []string, relTypes ...string) ([]*Event, error) {
	if len(parents) == 0 {
		return nil, nil
	}
	// One statement however many parents (an initial /sync asks for the
	// timelines of all rooms at once).
	cond, arg := s.inSet("relates_to", 1, parents)
	args := []any{arg}
	for _, t := range relTypes {
		args = append(args, t)
	}
	return scanEvents(s.read.QueryContext(ctx, `SELECT `+eventColumns+` FROM events
		WHERE `+cond+` AND rel_type IN (`+inList(2, len(relTypes))+`) AND `+liveRelation+`
		ORDER BY depth, stream_ordering`, args...))
}

// ThreadSummary is what the m.thread bundled aggregation reports of a root.
type ThreadSummary struct {
	Count        int
	Latest       *Event // the topologically last event of the thread
	Participated bool   // the viewer sent an event in the thread
}

// ThreadSummaries summarises the threads rooted at roots (in roomID), for
// viewer. Roots without threads are absent from the map.
func (s *Store) ThreadSummaries(ctx context.Context, roomID string, roots []string, viewer string) (map[string]*ThreadSummary, error) {
	out := map[string]*ThreadSummary{}
	for start := 0; start < len(roots); start += 500 {
		chunk := roots[start:min(start+500, len(roots))]
		args := []any{roomID, viewer}
		for _, id := range chunk {
			args = append(args, id)
		}
		rows, err := s.read.QueryContext(ctx, `SELECT relates_to, COUNT(*), MAX(CASE WHEN sender = $2 THEN 1 ELSE 0 END) FROM events
			WHERE room_id = $1 AND rel_type = 'm.thread' AND relates_to IN (`+inList(3, len(chunk))+`) AND `+liveRelation+`
			GROUP BY relates_to`, args...)
		if err != nil {
			return nil, fmt.Errorf("storage: thread summaries: %w", err)
		}
		for rows.Next() {
			var root string
			var n, mine int
			if err := rows.Scan(&root, &n, &mine); err != nil {
				rows.Close()
				return nil, err
			}
			out[root] = &ThreadSummary{Count: n, Participated: mine != 0}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	for root, sum := range out {
		e, err := scanEvent(s.read.QueryRowContext(ctx, `SELECT `+eventColumns+` FROM events
			WHERE room_id = $1 AND rel_type = 'm.thread' AND relates_to = $2 AND `+liveRelation+`
			ORDER BY depth DESC, stream_ordering DESC LIMIT 1`, roomID, root))
		if err != nil {
			return nil, notFound(err, "latest thread event")
		}
		sum.Latest = e
	}
	return out, nil
}

// ThreadRoot is a thread root and the stream position of its latest reply.
type ThreadRoot struct {
	EventID     string
	LatestReply int64
}

// ThreadRoots lists the room's thread roots whose latest reply is at or
// before stream position upTo, most recently active first. With
// participant set, only threads that user started or replied in.
func (s *Store) ThreadRoots(ctx context.Context, roomID, participant string, upTo int64, limit int) ([]ThreadRoot, error) {
	args := []any{roomID, upTo, limit}
	cond := ""
	if participant != "" {
		args = append(args, participant)
		cond = ` AND (r.sender = $4 OR EXISTS (SELECT 1 FROM events p WHERE p.room_id = $1 AND p.rel_type = 'm.thread'
			AND p.relates_to = t.relates_to AND p.sender = $4 AND p.outlier = 0 AND p.rejected = 0 AND p.redacted_by IS NULL))`
	}
	rows, err := s.read.QueryContext(ctx, `SELECT t.relates_to, MAX(t.stream_ordering) AS latest FROM events t
		JOIN events r ON r.event_id = t.relates_to AND r.room_id = t.room_id
		WHERE t.room_id = $1 AND t.rel_type = 'm.thread' AND t.outlier = 0 AND t.rejected = 0 AND t.redacted_by IS NULL
			AND r.outlier = 0 AND r.rejected = 0`+cond+`
		GROUP BY t.relates_to HAVING MAX(t.stream_ordering) <= $2
		ORDER BY latest DESC LIMIT $3`, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: thread roots: %w", err)
	}
	defer rows.Close()
	var out []ThreadRoot
	for rows.Next() {
		var tr ThreadRoot
		if err := rows.Scan(&tr.EventID, &tr.LatestReply); err != nil {
			return nil, err
		}
		out = append(out, tr)
	}
	return out, rows.Err()
}
