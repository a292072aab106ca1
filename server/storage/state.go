package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"

	"hearth/server/matrix"
)

// Room state lives in two forms:
//
//   - state groups: the state before or after an event, immutable, stored
//     as a snapshot or as a delta on a previous group (see 0004_rooms.sql);
//     a delta may remove a key (an entry with an empty event ID), which
//     state resolution needs when forks merge;
//   - current state: the resolution of the states at the room's forward
//     extremities, kept as rows per key, with every change recorded in
//     current_state_deltas at the stream position that made it. The state
//     at any earlier stream position is current state with the later
//     deltas undone (StateAt): that is what /sync reports, whichever branch
//     of the DAG an event arrived on.

// StateKey is a (type, state_key) pair.
type StateKey = matrix.StateKey

// StateKeyMap is room state as event IDs by (type, state_key).
type StateKeyMap = map[StateKey]string

// maxStateChain bounds delta chains: reading a group's state walks at most
// this many groups before reaching a snapshot.
const maxStateChain = 64

// newStateGroup adds a group holding delta on top of prev, or a snapshot of
// prev+delta when prev's chain is long (or prev is 0). An empty event ID in
// delta removes the key.
func (s *Store) newStateGroup(ctx context.Context, tx *sql.Tx, roomID string, prev int64, delta map[StateKey]string) (int64, error) {
	chain := 0
	if prev != 0 {
		if err := tx.QueryRowContext(ctx, `SELECT chain_len FROM state_groups WHERE id = $1`, prev).Scan(&chain); err != nil {
			return 0, notFound(err, "state group")
		}
	}
	entries := delta
	var prevArg any = prev
	chainLen := chain + 1
	if prev == 0 || chain+1 >= maxStateChain {
		full := map[StateKey]string{}
		if prev != 0 {
			var err error
			if full, err = stateOfGroup(ctx, tx, prev); err != nil {
				return 0, err
			}
		}
		for k, v := range delta {
			if v == "" {
				delete(full, k)
			} else {
				full[k] = v
			}
		}
		entries, prevArg, chainLen = full, nil, 0
	}
	var id int64
	if err := tx.QueryRowContext(ctx, `INSERT INTO state_groups (room_id, prev_group, chain_len) VALUES ($1, $2, $3) RETURNING id`,
		roomID, prevArg, chainLen).Scan(&id); err != nil {
		return 0, fmt.Errorf("storage: insert state group: %w", err)
	}
	args := make([]any, 0, 4*len(entries))
	for k, ev := range entries {
		args = append(args, id, k.Type, k.StateKey, ev)
	}
	if err := s.bulkExec(ctx, tx, `INSERT INTO state_group_entries (group_id, type, state_key, event_id) VALUES `, 4, ``, args); err != nil {
		return 0, fmt.Errorf("storage: insert state entries: %w", err)
	}
	return id, nil
}

// StoreStateGroup saves state as a new group: delta on top of prev (0 for
// a snapshot), an empty event ID removing a key. State resolution uses it
// for states no single parent had, stored as the difference from one of
// them. A group matters only once an event refers to it, whose commit
// makes the group durable too: it is written without waiting for the disk.
func (s *Store) StoreStateGroup(ctx context.Context, roomID string, prev int64, delta map[StateKey]string) (int64, error) {
	var id int64
	err := s.txNoSync(ctx, func(tx *sql.Tx) error {
		var err error
		id, err = s.newStateGroup(ctx, tx, roomID, prev, delta)
		return err
	})
	return id, err
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// stateOfGroup walks the delta chain down to its snapshot; the entry
// nearest the group wins, removals included.
func stateOfGroup(ctx context.Context, q querier, group int64) (map[StateKey]string, error) {
	out := map[StateKey]string{}
	for g := group; g != 0; {
		rows, err := q.QueryContext(ctx, `SELECT type, state_key, event_id FROM state_group_entries WHERE group_id = $1`, g)
		if err != nil {
			return nil, fmt.Errorf("storage: read state group %d: %w", g, err)
		}
		for rows.Next() {
			var k StateKey
			var ev string
			if err := rows.Scan(&k.Type, &k.StateKey, &ev); err != nil {
				rows.Close()
				return nil, err
			}
			if _, seen := out[k]; !seen {
				out[k] = ev
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		var prev sql.NullInt64
		if err := q.QueryRowContext(ctx, `SELECT prev_group FROM state_groups WHERE id = $1`, g).Scan(&prev); err != nil {
			return nil, notFound(err, "state group")
		}
		g = prev.Int64
	}
	maps.DeleteFunc(out, func(_ StateKey, ev string) bool { return ev == "" })
	return out, nil
}

// StateEntry returns the event ID one (type, state_key) has in a group's
// state, walking the delta chain only until it is found ("" if absent).
func (s *Store) StateEntry(ctx context.Context, group int64, typ, stateKey string) (string, error) {
	for g := group; g != 0; {
		var id string
		err := s.read.QueryRowContext(ctx, `SELECT event_id FROM state_group_entries WHERE group_id = $1 AND type = $2 AND state_key = $3`,
			g, typ, stateKey).Scan(&id)
		if err == nil {
			return id, nil // "" when a delta removed it
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return "", fmt.Errorf("storage: state entry: %w", err)
		}
		var prev sql.NullInt64
		if err := s.read.QueryRowContext(ctx, `SELECT prev_group FROM state_groups WHERE id = $1`, g).Scan(&prev); err != nil {
			return "", notFound(err, "state group")
		}
		g = prev.Int64
	}
	return "", nil
}

// MembershipInGroup is the user's membership in a group's state ("" if none).
func (s *Store) MembershipInGroup(ctx context.Context, group int64, userID string) (string, error) {
	return s.c.membershipAt.GetOrLoad(groupUser{group, userID}, func() (string, error) { return s.membershipInGroup(ctx, group, userID) })
}

func (s *Store) membershipInGroup(ctx context.Context, group int64, userID string) (string, error) {
	id, err := s.StateEntry(ctx, group, "m.room.member", userID)
	if err != nil || id == "" {
		return "", err
	}
	var m sql.NullString
	if err := s.read.QueryRowContext(ctx, `SELECT membership FROM events WHERE event_id = $1`, id).Scan(&m); err != nil {
		return "", notFound(err, "member event")
	}
	return m.String, nil
}

// StateGroup returns the full state map of a group. The map is the
// caller's to change: cached groups are handed out as copies.
func (s *Store) StateGroup(ctx context.Context, group int64) (map[StateKey]string, error) {
	if group == 0 {
		return map[StateKey]string{}, nil
	}
	m, err := s.c.stateGroups.GetOrLoad(group, func() (StateKeyMap, error) { return stateOfGroup(ctx, s.read, group) })
	if err != nil {
		return nil, err
	}
	return maps.Clone(m), nil
}

// StateGroupEntries returns the event IDs of keys in a group's state (""
// for a key not in it): StateGroup without copying the whole map, for
// callers that want a few keys of a room with a large state.
func (s *Store) StateGroupEntries(ctx context.Context, group int64, keys ...StateKey) ([]string, error) {
	out := make([]string, len(keys))
	if group == 0 {
		return out, nil
	}
	m, err := s.c.stateGroups.GetOrLoad(group, func() (StateKeyMap, error) { return stateOfGroup(ctx, s.read, group) })
	if err != nil {
		return nil, err
	}
	for i, k := range keys {
		out[i] = m[k]
	}
	return out, nil
}

// RoomStateGroup is the group holding the room's current state (0 when not
// recorded: a room from before groups were tracked per room).
func (s *Store) RoomStateGroup(ctx context.Context, roomID string) (int64, error) {
	var g sql.NullInt64
	err := s.read.QueryRowContext(ctx, `SELECT state_group FROM rooms WHERE room_id = $1`, roomID).Scan(&g)
	if err != nil {
		return 0, notFound(err, "room "+roomID)
	}
	return g.Int64, nil
}

// CurrentState returns the room's current state map, the caller's to change.
func (s *Store) CurrentState(ctx context.Context, roomID string) (map[StateKey]string, error) {
	m, err := s.c.currentState.GetOrLoad(roomID, func() (StateKeyMap, error) {
		rows, err := s.read.QueryContext(ctx, `SELECT type, state_key, event_id FROM current_state WHERE room_id = $1`, roomID)
		if err != nil {
			return nil, fmt.Errorf("storage: current state: %w", err)
		}
		defer rows.Close()
		out := map[StateKey]string{}
		for rows.Next() {
			var k StateKey
			var ev string
			if err := rows.Scan(&k.Type, &k.StateKey, &ev); err != nil {
				return nil, err
			}
			out[k] = ev
		}
		return out, rows.Err()
	})
	if err != nil {
		return nil, err
	}
	return maps.Clone(m), nil
}

// StateAt returns the room's state as it was at stream position pos: the
// current state with every change after pos undone.
func (s *Store) StateAt(ctx context.Context, roomID string, pos int64) (map[StateKey]string, error) {
	state, _, err := s.StateAndChangesAfter(ctx, roomID, pos)
	return state, err
}

// StateAndChangesAfter returns the room's state at stream position pos and
// the current-state changes after it, oldest first. Current state is read
// before the changes, so a change committed in between is undone through
// its delta rather than missed.
func (s *Store) StateAndChangesAfter(ctx context.Context, roomID string, pos int64) (map[StateKey]string, []StateChange, error) {
	state, err := s.CurrentState(ctx, roomID)
	if err != nil {
		return nil, nil, err
	}
	if s.noDeltasAfter(pos) { // read after the state, as the query is
		return state, nil, nil
	}
	rows, err := s.read.QueryContext(ctx, `SELECT type, state_key, COALESCE(event_id, ''), COALESCE(prev_event_id, ''), stream_ordering
		FROM current_state_deltas WHERE room_id = $1 AND stream_ordering > $2 ORDER BY stream_ordering DESC`, roomID, pos)
	if err != nil {
		return nil, nil, fmt.Errorf("storage: state deltas: %w", err)
	}
	defer rows.Close()
	// Newest first: the earliest change after pos is undone last, and its
	// previous event is the state at pos.
	var later []StateChange
	for rows.Next() {
		var c StateChange
		if err := rows.Scan(&c.Key.Type, &c.Key.StateKey, &c.EventID, &c.PrevEventID, &c.StreamPos); err != nil {
			return nil, nil, err
		}
		if c.PrevEventID == "" {
			delete(state, c.Key)
		} else {
			state[c.Key] = c.PrevEventID
		}
		later = append(later, c)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	slices.Reverse(later)
	return state, later, nil
}

// StateEntryAt is one key of StateAt ("" when absent).
func (s *Store) StateEntryAt(ctx context.Context, roomID string, pos int64, typ, stateKey string) (string, error) {
	var prev sql.NullString
	if !s.noDeltasAfter(pos) {
		err := s.read.QueryRowContext(ctx, `SELECT prev_event_id FROM current_state_deltas
			WHERE room_id = $1 AND type = $2 AND state_key = $3 AND stream_ordering > $4
			ORDER BY stream_ordering ASC LIMIT 1`, roomID, typ, stateKey, pos).Scan(&prev)
		if err == nil {
			return prev.String, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return "", fmt.Errorf("storage: state delta: %w", err)
		}
	}
	err := s.read.QueryRowContext(ctx, `SELECT event_id FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3`,
		roomID, typ, stateKey).Scan(&prev)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("storage: current state: %w", err)
	}
	return prev.String, nil
}

// StateChangesBetween returns the current-state changes of the rooms in
// stream positions (after, upTo], oldest first, by room.
func (s *Store) StateChangesBetween(ctx context.Context, roomIDs []string, after, upTo int64) (map[string][]StateChange, error) {
	out := map[string][]StateChange{}
	if s.noDeltasAfter(after) {
		return out, nil
	}
	for start := 0; start < len(roomIDs); start += 500 {
		chunk := roomIDs[start:min(start+500, len(roomIDs))]
		args := []any{after, upTo}
		for _, r := range chunk {
			args = append(args, r)
		}
		rows, err := s.read.QueryContext(ctx, `SELECT room_id, type, state_key, COALESCE(event_id, ''), COALESCE(prev_event_id, ''), stream_ordering
			FROM current_state_deltas WHERE stream_ordering > $1 AND stream_ordering <= $2 AND room_id IN (`+inList(3, len(chunk))+`)
			ORDER BY stream_ordering`, args...)
		if err != nil {
			return nil, fmt.Errorf("storage: state changes: %w", err)
		}
		for rows.Next() {
			var room string
			var c StateChange
			if err := rows.Scan(&room, &c.Key.Type, &c.Key.StateKey, &c.EventID, &c.PrevEventID, &c.StreamPos); err != nil {
				rows.Close()
				return nil, err
			}
			out[room] = append(out[room], c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}
