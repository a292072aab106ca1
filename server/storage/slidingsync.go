package storage

import (
	"context"
	"fmt"
)

// BumpEventTypes are the event types that move a room up a room list
// sorted by recency (MSC4186's bump_stamp; the same set as Synapse).
var BumpEventTypes = map[string]bool{
	"m.room.create": true, "m.room.message": true, "m.room.encrypted": true, "m.sticker": true,
	"m.call.invite": true, "m.poll.start": true, "m.beacon_info": true,
}

// CurrentStateOfType returns, for each of the rooms that has any, the
// state keys and event IDs of its current state events of type typ: one
// query for a whole room list (sliding sync's list filters).
func (s *Store) CurrentStateOfType(ctx context.Context, roomIDs []string, typ string) (map[string]map[string]string, error) {
	out := map[string]map[string]string{}
	if len(roomIDs) == 0 {
		return out, nil
	}
	cond, arg := s.inSet("room_id", 2, roomIDs)
	rows, err := s.read.QueryContext(ctx, `SELECT room_id, state_key, event_id FROM current_state WHERE type = $1 AND `+cond, typ, arg)
	if err != nil {
		return nil, fmt.Errorf("storage: current state of type: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r, k, id string
		if err := rows.Scan(&r, &k, &id); err != nil {
			return nil, fmt.Errorf("storage: scan state: %w", err)
		}
		if out[r] == nil {
			out[r] = map[string]string{}
		}
		out[r][k] = id
	}
	return out, rows.Err()
}

// RoomAccountDataOfType returns the user's room account data of one type
// (m.tag for sliding sync's tag filters), by room.
func (s *Store) RoomAccountDataOfType(ctx context.Context, userID, typ string) (map[string][]byte, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT room_id, content FROM account_data
		WHERE user_id = $1 AND type = $2 AND room_id <> ''`, userID, typ)
	if err != nil {
		return nil, fmt.Errorf("storage: room account data of type: %w", err)
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var r, c string
		if err := rows.Scan(&r, &c); err != nil {
			return nil, fmt.Errorf("storage: scan account data: %w", err)
		}
		out[r] = []byte(c)
	}
	return out, rows.Err()
}
