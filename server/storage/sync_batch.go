package storage

import (
	"cmp"
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

// On SQLite, in process, the batch reads are a loop of one prepared
// statement per room: that costs less than parsing a statement that
// names every room. On PostgreSQL they are one statement taking the rooms
// and positions as arrays.

// roomArrays are the ranges' room IDs, Afters and UpTos as arrays.
func roomArrays(ranges []RoomRange) (ids []string, after, upTo []int64) {
	for _, r := range ranges {
		ids, after, upTo = append(ids, r.RoomID), append(after, r.After), append(upTo, r.UpTo)
	}
	return ids, after, upTo
}

// LatestRoomEvents is RoomEvents(room, After, UpTo, limit, backwards) for
// each range: the newest live events of each room in its range, at most
// limit, newest first. Rooms without any are absent.
func (s *Store) LatestRoomEvents(ctx context.Context, ranges []RoomRange, limit int) (map[string][]*Event, error) {
	out := make(map[string][]*Event, len(ranges))
	if s.d.Name == "sqlite" {
		for _, r := range ranges {
			evs, err := s.RoomEvents(ctx, r.RoomID, r.After, r.UpTo, limit, true)
			if err != nil {
				return nil, err
			}
			if len(evs) > 0 {
				out[r.RoomID] = evs
			}
		}
		return out, nil
	}
	ids, after, upTo := roomArrays(ranges)
	evs, err := scanEvents(s.read.QueryContext(ctx, `SELECT e.* FROM unnest(CAST($1 AS TEXT[]), CAST($2 AS BIGINT[]), CAST($3 AS BIGINT[])) AS r(room_id, after_pos, up_to)
		CROSS JOIN LATERAL (SELECT `+eventColumns+` FROM events
			WHERE room_id = r.room_id AND stream_ordering > r.after_pos AND stream_ordering <= r.up_to AND `+liveEvent+`
			ORDER BY stream_ordering DESC LIMIT $4) AS e
		ORDER BY e.room_id, e.stream_ordering DESC`, ids, after, upTo, limit))
	if err != nil {
		return nil, fmt.Errorf("storage: latest room events: %w", err)
	}
	for _, e := range evs {
		out[e.RoomID] = append(out[e.RoomID], e)
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
	scan := func(rows *sql.Rows) error {
		defer rows.Close()
		for rows.Next() {
			var room string
			var c StateChange
			if err := rows.Scan(&room, &c.Key.Type, &c.Key.StateKey, &c.EventID, &c.PrevEventID, &c.StreamPos); err != nil {
				return err
			}
			rs.changes[room] = append(rs.changes[room], c)
		}
		return rows.Err()
	}
	const cols = `SELECT d.room_id, d.type, d.state_key, COALESCE(d.event_id, ''), COALESCE(d.prev_event_id, ''), d.stream_ordering`
	// Read after the current states, as the queries are.
	ranges = slices.DeleteFunc(slices.Clone(ranges), func(r RoomRange) bool { return s.noDeltasAfter(r.After) })
	switch {
	case len(ranges) == 0:
	case s.d.Name == "sqlite":
		for _, r := range ranges {
			rows, err := s.read.QueryContext(ctx, cols+` FROM current_state_deltas d WHERE d.room_id = $1 AND d.stream_ordering > $2`, r.RoomID, r.After)
			if err == nil {
				err = scan(rows)
			}
			if err != nil {
				return nil, fmt.Errorf("storage: state deltas: %w", err)
			}
		}
	default:
		ids, after, _ := roomArrays(ranges)
		rows, err := s.read.QueryContext(ctx, cols+` FROM unnest(CAST($1 AS TEXT[]), CAST($2 AS BIGINT[])) AS r(room_id, after_pos)
			JOIN current_state_deltas d ON d.room_id = r.room_id AND d.stream_ordering > r.after_pos`, ids, after)
		if err == nil {
			err = scan(rows)
		}
		if err != nil {
			return nil, fmt.Errorf("storage: state deltas: %w", err)
		}
	}
	// Oldest first; at one position, in key order (as the deltas'
	// primary key orders them).
	for _, cs := range rs.changes {
		slices.SortFunc(cs, func(a, b StateChange) int {
			return cmp.Or(cmp.Compare(a.StreamPos, b.StreamPos), strings.Compare(a.Key.Type, b.Key.Type), strings.Compare(a.Key.StateKey, b.Key.StateKey))
		})
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
