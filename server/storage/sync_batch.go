package storage

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Batch reads for an initial /sync: what the per-room reads (RoomEvents,
// StateAndChangesAfter, Members, ThreadSummaries) return, for many rooms
// in a few statements. On PostgreSQL every statement is a round trip, and
// a user in hundreds of rooms would otherwise pay several per room.

// RoomRange is a room and a stream range (After, UpTo] of it.
type RoomRange struct {
	RoomID      string
	After, UpTo int64
}

// perRoomChunk is the most branches one UNION ALL statement holds. Chunks
// are padded to a power of two so that only a few statement shapes are
// ever prepared (the read pool caches statements by text).
const perRoomChunk = 64

// unionPerRoom runs, per chunk of n items, one statement that is the UNION
// ALL of branch(i, first) for each item i, where first is the number of the
// branch's first placeholder and args(i) its arguments (nargs of them).
// Padding branches get pad as their arguments and must match no row.
func (s *Store) unionPerRoom(ctx context.Context, n, nargs int, branch func(first int) string, args func(i int) []any, pad []any,
	scan func(rows *sql.Rows) error) error {
	for start := 0; start < n; start += perRoomChunk {
		count := min(n-start, perRoomChunk)
		size := 1
		for size < count {
			size *= 2
		}
		var q strings.Builder
		all := make([]any, 0, size*nargs)
		for b := 0; b < size; b++ {
			if b > 0 {
				q.WriteString(" UNION ALL ")
			}
			fmt.Fprintf(&q, "SELECT * FROM (%s) AS b%d", branch(b*nargs+1), b)
			if b < count {
				all = append(all, args(start+b)...)
			} else {
				all = append(all, pad...)
			}
		}
		rows, err := s.read.QueryContext(ctx, q.String(), all...)
		if err != nil {
			return err
		}
		for rows.Next() {
			if err := scan(rows); err != nil {
				rows.Close()
				return err
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	return nil
}

// LatestRoomEvents is RoomEvents(room, After, UpTo, limit, backwards) for
// each range: the newest live events of each room in its range, at most
// limit, newest first. Rooms without any are absent.
func (s *Store) LatestRoomEvents(ctx context.Context, ranges []RoomRange, limit int) (map[string][]*Event, error) {
	out := make(map[string][]*Event, len(ranges))
	err := s.unionPerRoom(ctx, len(ranges), 4, func(p int) string {
		return fmt.Sprintf(`SELECT `+eventColumns+` FROM events
			WHERE room_id = $%d AND stream_ordering > $%d AND stream_ordering <= $%d AND `+liveEvent+`
			ORDER BY stream_ordering DESC LIMIT $%d`, p, p+1, p+2, p+3)
	}, func(i int) []any {
		r := ranges[i]
		return []any{r.RoomID, r.After, r.UpTo, limit}
	}, []any{"", 0, 0, 0}, func(rows *sql.Rows) error {
		e, err := scanEvent(rows)
		if err != nil {
			return err
		}
		out[e.RoomID] = append(out[e.RoomID], e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: latest room events: %w", err)
	}
	// Each branch comes back in its own order, newest first, but a
	// planner may interleave branches: make the order explicit.
	for _, evs := range out {
		slices.SortFunc(evs, func(a, b *Event) int { return int(b.StreamPos - a.StreamPos) })
	}
	return out, nil
}

// RoomStates is the state of many rooms from one point on: their current
// state and every change after a position, enough to give the state at
// any position at or after it (StateAndChangesAfter).
type RoomStates struct {
	current map[string]StateKeyMap
	after   map[string]int64
	changes map[string][]StateChange // oldest first
}

// StatesAndChanges reads the current state of the rooms of ranges and
// their changes after each range's After: current states from the cache
// or in one statement, then the changes in per-room statements (current
// state before changes, as StateAndChangesAfter does).
func (s *Store) StatesAndChanges(ctx context.Context, ranges []RoomRange) (*RoomStates, error) {
	rs := &RoomStates{current: make(map[string]StateKeyMap, len(ranges)), after: make(map[string]int64, len(ranges)),
		changes: map[string][]StateChange{}}
	var missing []string
	for _, r := range ranges {
		rs.after[r.RoomID] = r.After
		if m, ok := s.c.currentState.Get(r.RoomID); ok {
			rs.current[r.RoomID] = m
		} else {
			missing = append(missing, r.RoomID)
		}
	}
	if len(missing) > 0 {
		gen := s.c.currentState.Generation()
		cond, arg := s.inSet("room_id", 1, missing)
		rows, err := s.read.QueryContext(ctx, `SELECT room_id, type, state_key, event_id FROM current_state WHERE `+cond, arg)
		if err != nil {
			return nil, fmt.Errorf("storage: current states: %w", err)
		}
		loaded := make(map[string]StateKeyMap, len(missing))
		for _, id := range missing {
			loaded[id] = StateKeyMap{}
		}
		for rows.Next() {
			var room, ev string
			var k StateKey
			if err := rows.Scan(&room, &k.Type, &k.StateKey, &ev); err != nil {
				rows.Close()
				return nil, err
			}
			loaded[room][k] = ev
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("storage: current states: %w", err)
		}
		for id, m := range loaded {
			rs.current[id] = m
			s.c.currentState.AddIfGeneration(id, m, gen)
		}
	}
	err := s.unionPerRoom(ctx, len(ranges), 2, func(p int) string {
		return fmt.Sprintf(`SELECT room_id, type, state_key, COALESCE(event_id, '') AS event_id, COALESCE(prev_event_id, '') AS prev_event_id,
			stream_ordering FROM current_state_deltas WHERE room_id = $%d AND stream_ordering > $%d
			ORDER BY stream_ordering, type, state_key`, p, p+1)
	}, func(i int) []any {
		return []any{ranges[i].RoomID, ranges[i].After}
	}, []any{"", 0}, func(rows *sql.Rows) error {
		var room string
		var c StateChange
		if err := rows.Scan(&room, &c.Key.Type, &c.Key.StateKey, &c.EventID, &c.PrevEventID, &c.StreamPos); err != nil {
			return err
		}
		rs.changes[room] = append(rs.changes[room], c)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("storage: state deltas: %w", err)
	}
	for _, cs := range rs.changes {
		slices.SortStableFunc(cs, func(a, b StateChange) int { return int(a.StreamPos - b.StreamPos) })
	}
	return rs, nil
}

// StateAndChangesAfter is Store.StateAndChangesAfter from what was read:
// ok is false when the room was not read, or pos is before its range.
func (rs *RoomStates) StateAndChangesAfter(roomID string, pos int64) (state StateKeyMap, later []StateChange, ok bool) {
	if rs == nil {
		return nil, nil, false
	}
	cur, have := rs.current[roomID]
	if !have || pos < rs.after[roomID] {
		return nil, nil, false
	}
	state = maps.Clone(cur)
	changes := rs.changes[roomID]
	for i := len(changes) - 1; i >= 0; i-- {
		c := changes[i]
		if c.StreamPos <= pos {
			break
		}
		if c.PrevEventID == "" {
			delete(state, c.Key)
		} else {
			state[c.Key] = c.PrevEventID
		}
	}
	for _, c := range changes {
		if c.StreamPos > pos {
			later = append(later, c)
		}
	}
	return state, later, true
}

// MembersOfRooms is Members for each room, in one statement.
func (s *Store) MembersOfRooms(ctx context.Context, roomIDs []string) (map[string]map[string]string, error) {
	out := make(map[string]map[string]string, len(roomIDs))
	if len(roomIDs) == 0 {
		return out, nil
	}
	for _, id := range roomIDs {
		out[id] = map[string]string{}
	}
	cond, arg := s.inSet("room_id", 1, roomIDs)
	rows, err := s.read.QueryContext(ctx, `SELECT room_id, state_key, COALESCE(membership, '') FROM current_state
		WHERE type = 'm.room.member' AND `+cond, arg)
	if err != nil {
		return nil, fmt.Errorf("storage: members of rooms: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var room, u, m string
		if err := rows.Scan(&room, &u, &m); err != nil {
			return nil, err
		}
		out[room][u] = m
	}
	return out, rows.Err()
}

// ThreadRootsAmong returns which of ids some live, unredacted m.thread
// event relates to (in any room: ThreadSummaries checks the room), so that
// a caller can skip ThreadSummaries for the rooms with none.
func (s *Store) ThreadRootsAmong(ctx context.Context, ids []string) (map[string]bool, error) {
	out := map[string]bool{}
	if len(ids) == 0 {
		return out, nil
	}
	cond, arg := s.inSet("relates_to", 1, ids)
	roots, err := queryStrings(ctx, s.read, `SELECT DISTINCT relates_to FROM events WHERE rel_type = 'm.thread' AND `+cond+` AND `+liveRelation, arg)
	if err != nil {
		return nil, fmt.Errorf("storage: thread roots among: %w", err)
	}
	for _, r := range roots {
		out[r] = true
	}
	return out, nil
}
