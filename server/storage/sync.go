package storage

import (
	"context"
	"fmt"
)

// RoomsWithEventsBetween lists the rooms that have live events or
// current-state changes in (after, upTo]: what an incremental /sync needs
// to look at.
func (s *Store) RoomsWithEventsBetween(ctx context.Context, after, upTo int64) (map[string]bool, error) {
	q := `SELECT room_id FROM events
		WHERE stream_ordering > $1 AND stream_ordering <= $2 AND ` + liveEvent
	if !s.noDeltasAfter(after) {
		q += ` UNION SELECT room_id FROM current_state_deltas WHERE stream_ordering > $1 AND stream_ordering <= $2`
	}
	rows, err := s.read.QueryContext(ctx, q, after, upTo)
	if err != nil {
		return nil, fmt.Errorf("storage: rooms with events: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			return nil, fmt.Errorf("storage: scan room: %w", err)
		}
		out[r] = true
	}
	return out, rows.Err()
}

// ForgottenRooms lists the rooms the user has forgotten.
func (s *Store) ForgottenRooms(ctx context.Context, userID string) (map[string]bool, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT room_id FROM forgotten_rooms WHERE user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("storage: forgotten rooms: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			return nil, fmt.Errorf("storage: scan room: %w", err)
		}
		out[r] = true
	}
	return out, rows.Err()
}
