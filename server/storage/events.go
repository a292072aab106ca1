package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Event is a stored PDU with the columns queries need.
type Event struct {
	StreamPos      int64
	EventID        string
	RoomID         string
	Type           string
	StateKey       *string
	Sender         string
	Depth          int64
	OriginServerTS int64
	JSON           []byte
	Membership     string
	ReplacesState  string // event ID of the state event this one replaced
	StateGroup     int64
	Rejected       bool
	SoftFailed     bool
	Outlier        bool
	RedactedBy     string
	RelatesTo      string
	RelType        string
	SenderDevice   string
	TxnID          string
	// TxnScope is the endpoint and room the transaction ID belongs to; it
	// is stored with the ID, not on the event.
	TxnScope string
}

// IsState reports whether the event has a state key.
func (e *Event) IsState() bool { return e.StateKey != nil }

// Live reports whether the event is part of the room's timeline as clients
// see it: not an outlier, not rejected, not soft-failed.
func (e *Event) Live() bool { return !e.Outlier && !e.Rejected && !e.SoftFailed }

// eventColumnsOf lists the event columns read by scanEvent, each qualified
// with prefix ("" or a table alias such as "e.").
func eventColumnsOf(p string) string {
	return strings.NewReplacer("@", p).Replace(`@stream_ordering, @event_id, @room_id, @type, @state_key, @sender, @depth,
	@origin_server_ts, @json, COALESCE(@membership, ''), COALESCE(@replaces_state, ''), COALESCE(@state_group, 0),
	@rejected, @soft_failed, @outlier, COALESCE(@redacted_by, ''), COALESCE(@relates_to, ''), COALESCE(@rel_type, ''),
	COALESCE(@sender_device, ''), COALESCE(@txn_id, '')`)
}

var eventColumns = eventColumnsOf("")

func scanEvent(row interface{ Scan(...any) error }) (*Event, error) {
	e := &Event{}
	var sk sql.NullString
	var js string
	var rejected, softFailed, outlier int
	err := row.Scan(&e.StreamPos, &e.EventID, &e.RoomID, &e.Type, &sk, &e.Sender, &e.Depth, &e.OriginServerTS, &js,
		&e.Membership, &e.ReplacesState, &e.StateGroup, &rejected, &softFailed, &outlier, &e.RedactedBy, &e.RelatesTo, &e.RelType, &e.SenderDevice, &e.TxnID)
	if err != nil {
		return nil, err
	}
	if sk.Valid {
		k := sk.String
		e.StateKey = &k
	}
	e.JSON, e.Rejected, e.SoftFailed, e.Outlier = []byte(js), rejected != 0, softFailed != 0, outlier != 0
	return e, nil
}

func scanEvents(rows *sql.Rows, err error) ([]*Event, error) {
	if err != nil {
		return nil, fmt.Errorf("storage: query events: %w", err)
	}
	defer rows.Close()
	var out []*Event
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, fmt.Errorf("storage: scan event: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// Room is a row of the rooms table.
type Room struct {
	RoomID      string
	RoomVersion string
	Creator     string
	IsPublic    bool
	Blocked     bool
	CreatedTS   int64
}

// RoomByID returns the room, or ErrNotFound.
func (s *Store) RoomByID(ctx context.Context, roomID string) (*Room, error) {
	r := &Room{}
	var pub, blocked int
	err := s.read.QueryRowContext(ctx, `SELECT room_id, room_version, creator, is_public, blocked, created_ts FROM rooms WHERE room_id = $1`, roomID).
		Scan(&r.RoomID, &r.RoomVersion, &r.Creator, &pub, &blocked, &r.CreatedTS)
	if err != nil {
		return nil, notFound(err, "room "+roomID)
	}
	r.IsPublic, r.Blocked = pub != 0, blocked != 0
	return r, nil
}

// CreateRoom records a new room (before its create event is stored).
func (s *Store) CreateRoom(ctx context.Context, r *Room) error {
	if r.CreatedTS == 0 {
		r.CreatedTS = nowMS()
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO rooms (room_id, room_version, creator, is_public, created_ts) VALUES ($1, $2, $3, $4, $5)`,
			r.RoomID, r.RoomVersion, r.Creator, boolInt(r.IsPublic), r.CreatedTS)
		if isUnique(err) {
			return ErrConflict
		}
		if err != nil {
			return fmt.Errorf("storage: create room: %w", err)
		}
		return nil
	})
}

// SetRoomPublic publishes or unpublishes the room in the directory.
func (s *Store) SetRoomPublic(ctx context.Context, roomID string, public bool) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE rooms SET is_public = $1 WHERE room_id = $2`, boolInt(public), roomID)
		if err != nil {
			return fmt.Errorf("storage: set room visibility: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// EventByID returns one event.
func (s *Store) EventByID(ctx context.Context, eventID string) (*Event, error) {
	e, err := scanEvent(s.read.QueryRowContext(ctx, `SELECT `+eventColumns+` FROM events WHERE event_id = $1`, eventID))
	if err != nil {
		return nil, notFound(err, "event "+eventID)
	}
	return e, nil
}

// EventsByID returns the events found, in no particular order.
func (s *Store) EventsByID(ctx context.Context, ids []string) ([]*Event, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	cond, arg := s.inSet("event_id", 1, ids)
	return scanEvents(s.read.QueryContext(ctx, `SELECT `+eventColumns+` FROM events WHERE `+cond, arg))
}

// Extremity is a forward extremity with what building on it needs.
type Extremity struct {
	EventID    string
	Depth      int64
	StateGroup int64
}

// ForwardExtremities returns the room's DAG leaves.
func (s *Store) ForwardExtremities(ctx context.Context, roomID string) ([]Extremity, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT e.event_id, e.depth, COALESCE(e.state_group, 0) FROM forward_extremities f
		JOIN events e ON e.event_id = f.event_id WHERE f.room_id = $1 ORDER BY e.depth DESC, e.stream_ordering DESC`, roomID)
	if err != nil {
		return nil, fmt.Errorf("storage: forward extremities: %w", err)
	}
	defer rows.Close()
	var out []Extremity
	for rows.Next() {
		var x Extremity
		if err := rows.Scan(&x.EventID, &x.Depth, &x.StateGroup); err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, rows.Err()
}

// CurrentStateEvent returns one current state event, or ErrNotFound.
func (s *Store) CurrentStateEvent(ctx context.Context, roomID, typ, stateKey string) (*Event, error) {
	e, err := scanEvent(s.read.QueryRowContext(ctx, `SELECT `+eventColumnsOf("e.")+` FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1 AND c.type = $2 AND c.state_key = $3`, roomID, typ, stateKey))
	if err != nil {
		return nil, notFound(err, "state event")
	}
	return e, nil
}

// Membership returns the user's current membership in the room ("" if none).
func (s *Store) Membership(ctx context.Context, roomID, userID string) (string, error) {
	var m sql.NullString
	err := s.read.QueryRowContext(ctx, `SELECT membership FROM current_state WHERE room_id = $1 AND type = 'm.room.member' AND state_key = $2`,
		roomID, userID).Scan(&m)
	if err != nil {
		if notFound(err, "") == ErrNotFound {
			return "", nil
		}
		return "", fmt.Errorf("storage: membership: %w", err)
	}
	return m.String, nil
}

// RoomMembership is one room and the user's membership in it.
type RoomMembership struct {
	RoomID     string
	Membership string
	EventID    string
	StreamPos  int64
	// Stripped is set for a room this server is not in (a remote
	// invite): the stripped state the invite came with, a JSON array;
	// RoomVersion is then the room's version, as the invite named it.
	Stripped    []byte
	RoomVersion string
}

// RoomsOfUser lists the rooms where the user's current membership is one of
// memberships (all when none given): from the current state of the rooms
// this server is in, and the user's memberships in rooms it is not in.
//
// The list of all of them is cached (every /sync reads it, twice for a
// long poll that is woken): the caller must not modify what it returns.
func (s *Store) RoomsOfUser(ctx context.Context, userID string, memberships ...string) ([]RoomMembership, error) {
	if len(memberships) == 0 {
		return s.c.roomsOfUser.GetOrLoad(userID, func() ([]RoomMembership, error) { return s.roomsOfUser(ctx, userID) })
	}
	return s.roomsOfUser(ctx, userID, memberships...)
}

// roomsOfUser is RoomsOfUser read from the database. With memberships the
// filter applies to each row before a room's newer row is picked, so it is
// not the cached list filtered.
func (s *Store) roomsOfUser(ctx context.Context, userID string, memberships ...string) ([]RoomMembership, error) {
	q := `SELECT room_id, COALESCE(membership, '') AS membership, event_id, stream_ordering, NULL AS stripped_state FROM current_state
		WHERE type = 'm.room.member' AND state_key = $1
		UNION ALL SELECT room_id, membership, event_id, stream_ordering, stripped_state FROM out_of_room_memberships
		WHERE user_id = $1`
	args := []any{userID}
	if len(memberships) > 0 {
		q = `SELECT * FROM (` + q + `) m WHERE m.membership IN (` + inList(2, len(memberships)) + `)`
		for _, m := range memberships {
			args = append(args, m)
		}
	}
	rows, err := s.read.QueryContext(ctx, q+` ORDER BY 1`, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: rooms of user: %w", err)
	}
	defer rows.Close()
	// A room may have both rows (an invite to a room this server left
	// earlier): the newer one is the user's membership.
	var out []RoomMembership
	for rows.Next() {
		var m RoomMembership
		var stripped sql.NullString
		if err := rows.Scan(&m.RoomID, &m.Membership, &m.EventID, &m.StreamPos, &stripped); err != nil {
			return nil, err
		}
		if stripped.Valid {
			m.Stripped = []byte(stripped.String)
		}
		if n := len(out); n > 0 && out[n-1].RoomID == m.RoomID {
			if m.StreamPos > out[n-1].StreamPos {
				out[n-1] = m
			}
			continue
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// Members lists (user, membership) of the room's current member events.
func (s *Store) Members(ctx context.Context, roomID string) (map[string]string, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT state_key, COALESCE(membership, '') FROM current_state WHERE room_id = $1 AND type = 'm.room.member'`, roomID)
	if err != nil {
		return nil, fmt.Errorf("storage: members: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var u, m string
		if err := rows.Scan(&u, &m); err != nil {
			return nil, err
		}
		out[u] = m
	}
	return out, rows.Err()
}

// MutualRooms lists the rooms both users are joined to, sorted by room ID
// byte-wise (in Go: PostgreSQL's ORDER BY follows the database collation).
func (s *Store) MutualRooms(ctx context.Context, a, b string) ([]string, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT x.room_id FROM current_state x
		JOIN current_state y ON y.room_id = x.room_id AND y.type = 'm.room.member' AND y.state_key = $2 AND y.membership = 'join'
		WHERE x.type = 'm.room.member' AND x.state_key = $1 AND x.membership = 'join'`, a, b)
	if err != nil {
		return nil, fmt.Errorf("storage: mutual rooms: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("storage: mutual rooms: %w", err)
		}
		out = append(out, id)
	}
	slices.Sort(out)
	return out, rows.Err()
}

// EventIDByTxn returns the event a client transaction already produced.
func (s *Store) EventIDByTxn(ctx context.Context, userID, deviceID, scope, txnID string) (string, error) {
	var id string
	err := s.read.QueryRowContext(ctx, `SELECT e.event_id FROM event_txn_ids t
		JOIN events e ON e.stream_ordering = t.stream_ordering WHERE t.user_id = $1 AND t.device_id = $2 AND t.scope = $3 AND t.txn_id = $4`,
		userID, deviceID, scope, txnID).Scan(&id)
	if err != nil {
		return "", notFound(err, "txn")
	}
	return id, nil
}

// TxnIDKey is one client transaction ID stored: its sender, device,
// scope and ID.
type TxnIDKey struct{ UserID, DeviceID, Scope, TxnID string }

// CountTxnIDs counts the client transaction IDs stored.
func (s *Store) CountTxnIDs(ctx context.Context) (int, error) {
	var n int
	if err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM event_txn_ids`).Scan(&n); err != nil {
		return 0, fmt.Errorf("storage: count transaction IDs: %w", err)
	}
	return n, nil
}

// TxnIDs returns up to limit client transaction IDs stored after after,
// in key order (the zero key: from the first).
func (s *Store) TxnIDs(ctx context.Context, after TxnIDKey, limit int) ([]TxnIDKey, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT user_id, device_id, scope, txn_id FROM event_txn_ids
		WHERE (user_id, device_id, scope, txn_id) > ($1, $2, $3, $4)
		ORDER BY user_id, device_id, scope, txn_id LIMIT $5`, after.UserID, after.DeviceID, after.Scope, after.TxnID, limit)
	if err != nil {
		return nil, fmt.Errorf("storage: transaction IDs: %w", err)
	}
	defer rows.Close()
	var out []TxnIDKey
	for rows.Next() {
		var k TxnIDKey
		if err := rows.Scan(&k.UserID, &k.DeviceID, &k.Scope, &k.TxnID); err != nil {
			return nil, fmt.Errorf("storage: transaction IDs: %w", err)
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// RoomEvents returns up to limit live events of the room (not outliers,
// rejected or soft-failed) with stream position in (after, upTo], in
// stream order, or newest first when backwards.
func (s *Store) RoomEvents(ctx context.Context, roomID string, after, upTo int64, limit int, backwards bool) ([]*Event, error) {
	order := "ASC"
	if backwards {
		order = "DESC"
	}
	return scanEvents(s.read.QueryContext(ctx, `SELECT `+eventColumns+` FROM events
		WHERE room_id = $1 AND stream_ordering > $2 AND stream_ordering <= $3 AND `+liveEvent+`
		ORDER BY stream_ordering `+order+` LIMIT $4`, roomID, after, upTo, limit))
}

// MaxStreamPos is the newest event stream position readers may use: every
// event and state change at or below it is committed (see eventStream).
func (s *Store) MaxStreamPos(context.Context) (int64, error) {
	return s.events.current(), nil
}

// RedactEvent replaces an event's JSON with its redacted form and records
// the redaction that caused it. The event leaves the search index.
func (s *Store) RedactEvent(ctx context.Context, eventID, redactedBy string, redactedJSON []byte) error {
	var unqueued int64
	var roomID string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		if unqueued, err = s.unindexForSearch(ctx, tx, eventID); err != nil {
			return err
		}
		err = tx.QueryRowContext(ctx, `UPDATE events SET json = $1, redacted_by = $2 WHERE event_id = $3 RETURNING room_id`,
			string(redactedJSON), redactedBy, eventID).Scan(&roomID)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("storage: redact %s: %w", eventID, err)
		}
		return nil
	})
	if err == nil {
		s.sq.pending.Add(-unqueued)
		// Reads of the room's events made before go (EventRowsVersion).
		s.rowVersions.bump(roomID)
	}
	return err
}

// PrevEvents returns an event's prev_events as recorded in the DAG's edges.
func (s *Store) PrevEvents(ctx context.Context, eventID string) ([]string, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT ed.prev_event_id FROM events e
		JOIN event_edges ed ON ed.stream_ordering = e.stream_ordering WHERE e.event_id = $1`, eventID)
	if err != nil {
		return nil, fmt.Errorf("storage: prev events: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// LastTimelineGap returns the stream position of the newest live event of
// the room in (after, upTo] that follows a gap: one of its prev events is
// not in this server's timeline (unknown, or known only as an outlier), as
// when a received event's missing history was crossed with the state at it
// rather than fetched. 0 when there is none.
func (s *Store) LastTimelineGap(ctx context.Context, roomID string, after, upTo int64) (int64, error) {
	var pos sql.NullInt64
	err := s.read.QueryRowContext(ctx, `SELECT MAX(e.stream_ordering) FROM events e
		JOIN event_edges ed ON ed.stream_ordering = e.stream_ordering
		LEFT JOIN events p ON p.event_id = ed.prev_event_id
		WHERE e.room_id = $1 AND e.stream_ordering > $2 AND e.stream_ordering <= $3
			AND e.outlier = 0 AND e.rejected = 0 AND e.soft_failed = 0
			AND (p.event_id IS NULL OR p.outlier = 1)`, roomID, after, upTo).Scan(&pos)
	if err != nil {
		return 0, fmt.Errorf("storage: timeline gap: %w", err)
	}
	return pos.Int64, nil
}

// BackwardExtremities lists up to limit prev_events of the room's timeline
// events that this server does not have in its timeline: where its history
// of the room stops and older history could be backfilled from.
func (s *Store) BackwardExtremities(ctx context.Context, roomID string, limit int) ([]string, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT DISTINCT ed.prev_event_id FROM events e
		JOIN event_edges ed ON ed.stream_ordering = e.stream_ordering
		LEFT JOIN events p ON p.event_id = ed.prev_event_id
		WHERE e.room_id = $1 AND (p.event_id IS NULL OR p.outlier = 1) LIMIT $2`, roomID, limit)
	if err != nil {
		return nil, fmt.Errorf("storage: backward extremities: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}
