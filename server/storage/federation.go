package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Federation: the sender's position in the event stream, destinations with
// their retry state and catch-up records, and the transactions received.

// FederationSenderPosition is the event stream position the federation
// sender has queued up to. The store sets it when it opens a database
// without one (migration 0043), at the newest event then: a new server has
// nothing of the past to send. Should the row be missing all the same, it
// is the current position.
func (s *Store) FederationSenderPosition(ctx context.Context) (int64, error) {
	var pos int64
	err := s.read.QueryRowContext(ctx, `SELECT position FROM federation_sender_position WHERE id = 1`).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		pos = s.events.current()
		err = s.tx(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO federation_sender_position (id, position) VALUES (1, $1) ON CONFLICT (id) DO NOTHING`, pos)
			return err
		})
		if err != nil {
			return 0, fmt.Errorf("storage: federation sender position: %w", err)
		}
		return s.FederationSenderPosition(ctx)
	}
	if err != nil {
		return 0, fmt.Errorf("storage: federation sender position: %w", err)
	}
	return pos, nil
}

// OutboundEventsAfter returns up to limit events the federation sender must
// consider, with stream position in (after, upTo], oldest first. They are
// read without their JSON: what decides where an event goes (its room,
// state group, sender, type, state key and membership) is there, and most
// events, those of rooms with no other server, go nowhere. EventJSONs
// reads it for those that do.
func (s *Store) OutboundEventsAfter(ctx context.Context, after, upTo int64, limit int) ([]*Event, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT stream_ordering, event_id, room_id, type, state_key, sender,
		COALESCE(membership, ''), COALESCE(state_group, 0) FROM events
		WHERE stream_ordering > $1 AND stream_ordering <= $2 AND outbound = 1 AND `+liveEvent+`
		ORDER BY stream_ordering LIMIT $3`, after, upTo, limit)
	if err != nil {
		return nil, fmt.Errorf("storage: outbound events: %w", err)
	}
	defer rows.Close()
	var out []*Event
	for rows.Next() {
		e := &Event{}
		var sk sql.NullString
		if err := rows.Scan(&e.StreamPos, &e.EventID, &e.RoomID, &e.Type, &sk, &e.Sender, &e.Membership, &e.StateGroup); err != nil {
			return nil, fmt.Errorf("storage: outbound events: %w", err)
		}
		if sk.Valid {
			e.StateKey = &sk.String
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// EventJSONs fills in the JSON of events read without it
// (OutboundEventsAfter), by stream position. An event gone since (its room
// purged) is left without.
func (s *Store) EventJSONs(ctx context.Context, evs []*Event) error {
	byPos := make(map[int64]*Event, len(evs))
	pos := make([]int64, len(evs))
	for i, e := range evs {
		byPos[e.StreamPos], pos[i] = e, e.StreamPos
	}
	for chunk := range slices.Chunk(pos, 500) {
		in, arg := s.inInts("stream_ordering", 1, chunk)
		rows, err := s.read.QueryContext(ctx, `SELECT stream_ordering, json FROM events WHERE `+in, arg)
		if err != nil {
			return fmt.Errorf("storage: event JSON: %w", err)
		}
		for rows.Next() {
			var p int64
			var js []byte
			if err := rows.Scan(&p, &js); err != nil {
				rows.Close()
				return fmt.Errorf("storage: event JSON: %w", err)
			}
			if e := byPos[p]; e != nil {
				e.JSON = js
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return fmt.Errorf("storage: event JSON: %w", err)
		}
	}
	return nil
}

// DestinationRoom is a room's newest event queued for a destination.
type DestinationRoom struct {
	Destination, RoomID string
	StreamPos           int64
}

// QueueForDestinations records, with the sender's new position, the newest
// event of each room queued for each destination.
func (s *Store) QueueForDestinations(ctx context.Context, position int64, queued []DestinationRoom) error {
	// One row per (destination, room): PostgreSQL refuses a statement
	// that updates a row twice.
	newest := map[[2]string]int64{}
	for _, q := range queued {
		k := [2]string{q.Destination, q.RoomID}
		newest[k] = max(newest[k], q.StreamPos)
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		args := make([]any, 0, 3*len(newest))
		for k, pos := range newest {
			args = append(args, k[0], k[1], pos)
		}
		if err := s.bulkExec(ctx, tx, `INSERT INTO federation_destination_rooms (destination, room_id, stream_ordering) VALUES `, 3,
			` ON CONFLICT (destination, room_id) DO UPDATE SET stream_ordering = excluded.stream_ordering
				WHERE excluded.stream_ordering > federation_destination_rooms.stream_ordering`, args); err != nil {
			return fmt.Errorf("storage: queue for destinations: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE federation_sender_position SET position = $1 WHERE id = 1 AND position < $1`, position); err != nil {
			return fmt.Errorf("storage: federation sender position: %w", err)
		}
		return nil
	})
}

// Destination is another server's retry state (Synapse's destinations).
type Destination struct {
	Destination     string
	RetryLastTS     int64
	RetryIntervalMS int64
	FailureTS       int64 // 0: healthy
	LastSuccessTS   int64
	LastError       string
	// LastSuccessfulPos: every event queued for it up to here was delivered.
	LastSuccessfulPos int64
}

const destinationColumns = `destination, retry_last_ts, retry_interval_ms, COALESCE(failure_ts, 0), COALESCE(last_success_ts, 0),
	COALESCE(last_error, ''), last_successful_stream_ordering`

func scanDestination(row interface{ Scan(...any) error }) (*Destination, error) {
	d := &Destination{}
	err := row.Scan(&d.Destination, &d.RetryLastTS, &d.RetryIntervalMS, &d.FailureTS, &d.LastSuccessTS, &d.LastError, &d.LastSuccessfulPos)
	return d, err
}

// DestinationByName returns a destination, or ErrNotFound.
func (s *Store) DestinationByName(ctx context.Context, destination string) (*Destination, error) {
	d, err := scanDestination(s.read.QueryRowContext(ctx, `SELECT `+destinationColumns+` FROM federation_destinations WHERE destination = $1`, destination))
	if err != nil {
		return nil, notFound(err, "destination "+destination)
	}
	return d, nil
}

// EnsureDestination records a destination, delivered up to pos, unless it
// is known already.
func (s *Store) EnsureDestination(ctx context.Context, destination string, pos int64) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO federation_destinations (destination, last_successful_stream_ordering) VALUES ($1, $2)
			ON CONFLICT (destination) DO NOTHING`, destination, pos)
		if err != nil {
			return fmt.Errorf("storage: record destination: %w", err)
		}
		return nil
	})
}

// DestinationDelivered records a successful transaction: the destination is
// healthy and has every event queued for it up to pos.
func (s *Store) DestinationDelivered(ctx context.Context, destination string, pos int64) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE federation_destinations SET retry_last_ts = 0, retry_interval_ms = 0, failure_ts = NULL,
			last_error = NULL, last_success_ts = $2,
			last_successful_stream_ordering = CASE WHEN last_successful_stream_ordering < $3 THEN $3 ELSE last_successful_stream_ordering END
			WHERE destination = $1`, destination, nowMS(), pos)
		if err != nil {
			return fmt.Errorf("storage: destination delivered: %w", err)
		}
		return nil
	})
}

// DestinationFailed records a failed attempt and the wait before the next.
func (s *Store) DestinationFailed(ctx context.Context, destination, reason string, retryIntervalMS int64) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		now := nowMS()
		_, err := tx.ExecContext(ctx, `UPDATE federation_destinations SET retry_last_ts = $2, retry_interval_ms = $3,
			failure_ts = COALESCE(failure_ts, $2), last_error = $4 WHERE destination = $1`, destination, now, retryIntervalMS, truncate(reason, 1000))
		if err != nil {
			return fmt.Errorf("storage: destination failed: %w", err)
		}
		return nil
	})
}

// ResetDestinationRetry clears a destination's back-off (it contacted us,
// or an admin asked), keeping what it was delivered. It reports whether
// the destination was backing off.
func (s *Store) ResetDestinationRetry(ctx context.Context, destination string) (bool, error) {
	var was bool
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE federation_destinations SET retry_last_ts = 0, retry_interval_ms = 0
			WHERE destination = $1 AND retry_interval_ms > 0`, destination)
		if err != nil {
			return fmt.Errorf("storage: reset destination: %w", err)
		}
		n, _ := res.RowsAffected()
		was = n > 0
		return nil
	})
	return was, err
}

// DestinationsBehind lists the destinations that have queued events not
// yet delivered (what a sender starting up must catch up).
func (s *Store) DestinationsBehind(ctx context.Context) ([]string, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT d.destination FROM federation_destinations d
		WHERE EXISTS (SELECT 1 FROM federation_destination_rooms r
			WHERE r.destination = d.destination AND r.stream_ordering > d.last_successful_stream_ordering)
		ORDER BY d.destination`)
	if err != nil {
		return nil, fmt.Errorf("storage: destinations behind: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// CatchUpEvents returns, for each room with events queued for destination
// after pos, the newest of them, oldest room first, at most limit.
func (s *Store) CatchUpEvents(ctx context.Context, destination string, after int64, limit int) ([]*Event, error) {
	return scanEvents(s.read.QueryContext(ctx, `SELECT `+eventColumnsOf("e.")+` FROM federation_destination_rooms r
		JOIN events e ON e.stream_ordering = r.stream_ordering
		WHERE r.destination = $1 AND r.stream_ordering > $2 ORDER BY r.stream_ordering LIMIT $3`, destination, after, limit))
}

// JoinedServers lists the servers with a joined member in the room's
// current state. The list is cached: callers must not modify it.
func (s *Store) JoinedServers(ctx context.Context, roomID string) ([]string, error) {
	return s.c.joinedServers.GetOrLoad(roomID, func() ([]string, error) { return s.joinedServers(ctx, roomID) })
}

func (s *Store) joinedServers(ctx context.Context, roomID string) ([]string, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT state_key FROM current_state WHERE room_id = $1 AND type = 'm.room.member' AND membership = 'join'`, roomID)
	if err != nil {
		return nil, fmt.Errorf("storage: joined servers: %w", err)
	}
	defer rows.Close()
	seen := map[string]bool{}
	var out []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		if _, server, ok := strings.Cut(u, ":"); ok && !seen[server] {
			seen[server] = true
			out = append(out, server)
		}
	}
	return out, rows.Err()
}

// JoinedServersInGroup lists the servers with a joined member in a state
// group's state.
func (s *Store) JoinedServersInGroup(ctx context.Context, group int64) ([]string, error) {
	state, err := s.StateGroup(ctx, group)
	if err != nil {
		return nil, err
	}
	var ids []string
	for k, id := range state {
		if k.Type == "m.room.member" {
			ids = append(ids, id)
		}
	}
	seen := map[string]bool{}
	var out []string
	for start := 0; start < len(ids); start += s.d.InChunk {
		chunk := ids[start:min(start+s.d.InChunk, len(ids))]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		rows, err := s.read.QueryContext(ctx, `SELECT state_key FROM events WHERE event_id IN (`+inList(1, len(chunk))+`) AND membership = 'join'`, args...)
		if err != nil {
			return nil, fmt.Errorf("storage: joined servers: %w", err)
		}
		for rows.Next() {
			var u string
			if err := rows.Scan(&u); err != nil {
				rows.Close()
				return nil, err
			}
			if _, server, ok := strings.Cut(u, ":"); ok && !seen[server] {
				seen[server] = true
				out = append(out, server)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ReceivedTxn returns the answer given to a transaction from origin, if it
// was received before.
func (s *Store) ReceivedTxn(ctx context.Context, origin, txnID string) ([]byte, bool, error) {
	var resp string
	err := s.read.QueryRowContext(ctx, `SELECT response FROM federation_received_txns WHERE origin = $1 AND txn_id = $2`, origin, txnID).Scan(&resp)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("storage: received txn: %w", err)
	}
	return []byte(resp), true, nil
}

// SaveReceivedTxn records the answer to a transaction from origin.
func (s *Store) SaveReceivedTxn(ctx context.Context, origin, txnID string, response []byte) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO federation_received_txns (origin, txn_id, response, received_ts) VALUES ($1, $2, $3, $4)
			ON CONFLICT (origin, txn_id) DO NOTHING`, origin, txnID, string(response), nowMS())
		if err != nil {
			return fmt.Errorf("storage: save received txn: %w", err)
		}
		return nil
	})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// SetOutOfRoomMembership records a local user's membership in a room this
// server is not in (an invite from another server, its rejection), with
// the stripped state the user sees of it, at a new stream position.
func (s *Store) SetOutOfRoomMembership(ctx context.Context, userID, roomID, roomVersion, membership, eventID string, stripped []byte) error {
	var pos []int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		pos = s.events.nextLive(1)
		_, err := tx.ExecContext(ctx, `INSERT INTO out_of_room_memberships (user_id, room_id, membership, event_id, stream_ordering,
				stripped_state, room_version)
			VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (user_id, room_id) DO UPDATE SET membership = excluded.membership,
				event_id = excluded.event_id, stream_ordering = excluded.stream_ordering, stripped_state = excluded.stripped_state,
				room_version = excluded.room_version`,
			userID, roomID, membership, eventID, pos[0], string(stripped), roomVersion)
		if err != nil {
			return fmt.Errorf("storage: out-of-room membership: %w", err)
		}
		return nil
	})
	if err == nil {
		s.c.roomsOfUser.Remove(userID)
	}
	s.events.finish(pos)
	if err != nil {
		return err
	}
	return s.events.waitVisible(context.WithoutCancel(ctx), pos[0])
}

// OutOfRoomMembership returns a local user's membership in a room this
// server is not in, or ErrNotFound.
func (s *Store) OutOfRoomMembership(ctx context.Context, userID, roomID string) (*RoomMembership, error) {
	m := &RoomMembership{RoomID: roomID}
	var stripped string
	err := s.read.QueryRowContext(ctx, `SELECT membership, event_id, stream_ordering, stripped_state, room_version FROM out_of_room_memberships
		WHERE user_id = $1 AND room_id = $2`, userID, roomID).Scan(&m.Membership, &m.EventID, &m.StreamPos, &stripped, &m.RoomVersion)
	if err != nil {
		return nil, notFound(err, "out-of-room membership")
	}
	m.Stripped = []byte(stripped)
	return m, nil
}

// DeleteOutOfRoomMembership forgets a local user's out-of-room membership
// (the user joined the room: current_state has it now).
func (s *Store) DeleteOutOfRoomMembership(ctx context.Context, userID, roomID string) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM out_of_room_memberships WHERE user_id = $1 AND room_id = $2`, userID, roomID)
		return err
	})
	s.c.roomsOfUser.Remove(userID)
	return err
}
