package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
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

// eventColumnsOf lists the event columns read by scanEvent, each qualified
// with prefix ("" or a table alias such as "e.").
func eventColumnsOf(p string) string {
	return strings.NewReplacer("@", p).Replace(`@stream_ordering, @event_id, @room_id, @type, @state_key, @sender, @depth,
	@origin_server_ts, @json, COALESCE(@membership, ''), COALESCE(@replaces_state, ''), COALESCE(@state_group, 0),
	@rejected, @outlier, COALESCE(@redacted_by, ''), COALESCE(@relates_to, ''), COALESCE(@rel_type, ''),
	COALESCE(@sender_device, ''), COALESCE(@txn_id, '')`)
}

var eventColumns = eventColumnsOf("")

func scanEvent(row interface{ Scan(...any) error }) (*Event, error) {
	e := &Event{}
	var sk sql.NullString
	var js string
	var rejected, outlier int
	err := row.Scan(&e.StreamPos, &e.EventID, &e.RoomID, &e.Type, &sk, &e.Sender, &e.Depth, &e.OriginServerTS, &js,
		&e.Membership, &e.ReplacesState, &e.StateGroup, &rejected, &outlier, &e.RedactedBy, &e.RelatesTo, &e.RelType, &e.SenderDevice, &e.TxnID)
	if err != nil {
		return nil, err
	}
	if sk.Valid {
		k := sk.String
		e.StateKey = &k
	}
	e.JSON, e.Rejected, e.Outlier = []byte(js), rejected != 0, outlier != 0
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

// NewEvent is an event to persist with what it changes.
type NewEvent struct {
	Event
	PrevEvents []string
	// StateBefore is the state group of the state before the event (0 for
	// the create event).
	StateBefore int64
	// UpdateCurrentState applies a state event to the room's current state
	// (false for events that lost state resolution or are rejected).
	UpdateCurrentState bool
}

// maxStateChain bounds delta chains: reading a group's state walks at most
// this many groups before reaching a snapshot.
const maxStateChain = 64

// PersistEvent stores an event, its state group, DAG edges, forward
// extremities, current state and transaction ID in one transaction, and
// returns its stream position. It is the only way events enter the store.
func (s *Store) PersistEvent(ctx context.Context, ne *NewEvent) (int64, error) {
	e := &ne.Event
	s.persistMu.Lock()
	defer s.persistMu.Unlock()
	err := s.tx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `INSERT INTO events (event_id, room_id, type, state_key, sender, depth, origin_server_ts, json,
			membership, replaces_state, rejected, outlier, relates_to, rel_type, sender_device, txn_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) RETURNING stream_ordering`,
			e.EventID, e.RoomID, e.Type, e.StateKey, e.Sender, e.Depth, e.OriginServerTS, string(e.JSON),
			nullStr(e.Membership), nullStr(e.ReplacesState), boolInt(e.Rejected), boolInt(e.Outlier), nullStr(e.RelatesTo), nullStr(e.RelType),
			nullStr(e.SenderDevice), nullStr(e.TxnID)).Scan(&e.StreamPos)
		if isUnique(err) {
			return ErrConflict
		}
		if err != nil {
			return fmt.Errorf("storage: insert event %s: %w", e.EventID, err)
		}
		if e.Outlier {
			return nil
		}
		group := ne.StateBefore
		if e.IsState() && !e.Rejected {
			if group, err = newStateGroup(ctx, tx, e.RoomID, ne.StateBefore, map[StateKey]string{{e.Type, *e.StateKey}: e.EventID}); err != nil {
				return err
			}
		}
		e.StateGroup = group
		if _, err := tx.ExecContext(ctx, `UPDATE events SET state_group = $1 WHERE stream_ordering = $2`, nullInt(group), e.StreamPos); err != nil {
			return fmt.Errorf("storage: set state group: %w", err)
		}
		for _, p := range ne.PrevEvents {
			if _, err := tx.ExecContext(ctx, `INSERT INTO event_edges (event_id, prev_event_id, room_id) VALUES ($1, $2, $3)
				ON CONFLICT DO NOTHING`, e.EventID, p, e.RoomID); err != nil {
				return fmt.Errorf("storage: insert edge: %w", err)
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM forward_extremities WHERE room_id = $1 AND event_id = $2`, e.RoomID, p); err != nil {
				return fmt.Errorf("storage: update extremities: %w", err)
			}
		}
		// An event becomes a leaf unless something already points at it
		// (it arrived after its children, e.g. by backfill).
		if _, err := tx.ExecContext(ctx, `INSERT INTO forward_extremities (room_id, event_id)
			SELECT $1, $2 WHERE NOT EXISTS (SELECT 1 FROM event_edges WHERE prev_event_id = $2)`, e.RoomID, e.EventID); err != nil {
			return fmt.Errorf("storage: insert extremity: %w", err)
		}
		if ne.UpdateCurrentState && e.IsState() && !e.Rejected {
			if _, err := tx.ExecContext(ctx, `INSERT INTO current_state (room_id, type, state_key, event_id, membership, stream_ordering)
				VALUES ($1, $2, $3, $4, $5, $6)
				ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id,
					membership = excluded.membership, stream_ordering = excluded.stream_ordering`,
				e.RoomID, e.Type, *e.StateKey, e.EventID, nullStr(e.Membership), e.StreamPos); err != nil {
				return fmt.Errorf("storage: update current state: %w", err)
			}
			if e.Type == "m.room.member" && e.Membership == "join" {
				if _, err := tx.ExecContext(ctx, `DELETE FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2`, *e.StateKey, e.RoomID); err != nil {
					return fmt.Errorf("storage: unforget room: %w", err)
				}
			}
		}
		if e.TxnID != "" && e.SenderDevice != "" {
			if _, err := tx.ExecContext(ctx, `INSERT INTO event_txn_ids (user_id, device_id, scope, txn_id, event_id, created_ts) VALUES ($1, $2, $3, $4, $5, $6)`,
				e.Sender, e.SenderDevice, e.TxnScope, e.TxnID, e.EventID, nowMS()); err != nil {
				if isUnique(err) {
					return ErrConflict
				}
				return fmt.Errorf("storage: record txn id: %w", err)
			}
		}
		return nil
	})
	return e.StreamPos, err
}

// StateKey is a (type, state_key) pair.
type StateKey struct{ Type, StateKey string }

// StateKeyMap is room state as event IDs by (type, state_key).
type StateKeyMap = map[StateKey]string

// newStateGroup adds a group holding delta on top of prev, or a snapshot of
// prev+delta when prev's chain is long (or prev is 0).
func newStateGroup(ctx context.Context, tx *sql.Tx, roomID string, prev int64, delta map[StateKey]string) (int64, error) {
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
			full[k] = v
		}
		entries, prevArg, chainLen = full, nil, 0
	}
	var id int64
	if err := tx.QueryRowContext(ctx, `INSERT INTO state_groups (room_id, prev_group, chain_len) VALUES ($1, $2, $3) RETURNING id`,
		roomID, prevArg, chainLen).Scan(&id); err != nil {
		return 0, fmt.Errorf("storage: insert state group: %w", err)
	}
	for k, ev := range entries {
		if _, err := tx.ExecContext(ctx, `INSERT INTO state_group_entries (group_id, type, state_key, event_id) VALUES ($1, $2, $3, $4)`,
			id, k.Type, k.StateKey, ev); err != nil {
			return 0, fmt.Errorf("storage: insert state entry: %w", err)
		}
	}
	return id, nil
}

// StoreStateGroup saves a full or resolved state as a new group (used when
// state resolution produces state no single parent had).
func (s *Store) StoreStateGroup(ctx context.Context, roomID string, prev int64, delta map[StateKey]string) (int64, error) {
	var id int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		id, err = newStateGroup(ctx, tx, roomID, prev, delta)
		return err
	})
	return id, err
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// stateOfGroup walks the delta chain down to its snapshot; the entry
// nearest the group wins.
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
		var prev sql.NullInt64
		if err := q.QueryRowContext(ctx, `SELECT prev_group FROM state_groups WHERE id = $1`, g).Scan(&prev); err != nil {
			return nil, notFound(err, "state group")
		}
		g = prev.Int64
	}
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
			return id, nil
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
	var out []*Event
	for start := 0; start < len(ids); start += 500 {
		chunk := ids[start:min(start+500, len(ids))]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		evs, err := scanEvents(s.read.QueryContext(ctx, `SELECT `+eventColumns+` FROM events WHERE event_id IN (`+inList(1, len(chunk))+`)`, args...))
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
	}
	return out, nil
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

// CurrentState returns the room's current state map.
func (s *Store) CurrentState(ctx context.Context, roomID string) (map[StateKey]string, error) {
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
}

// RoomsOfUser lists the rooms where the user's current membership is one of
// memberships (all when none given).
func (s *Store) RoomsOfUser(ctx context.Context, userID string, memberships ...string) ([]RoomMembership, error) {
	q := `SELECT room_id, COALESCE(membership, ''), event_id, stream_ordering FROM current_state WHERE type = 'm.room.member' AND state_key = $1`
	args := []any{userID}
	if len(memberships) > 0 {
		q += ` AND membership IN (` + inList(2, len(memberships)) + `)`
		for _, m := range memberships {
			args = append(args, m)
		}
	}
	rows, err := s.read.QueryContext(ctx, q+` ORDER BY room_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: rooms of user: %w", err)
	}
	defer rows.Close()
	var out []RoomMembership
	for rows.Next() {
		var m RoomMembership
		if err := rows.Scan(&m.RoomID, &m.Membership, &m.EventID, &m.StreamPos); err != nil {
			return nil, err
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

// EventIDByTxn returns the event a client transaction already produced.
func (s *Store) EventIDByTxn(ctx context.Context, userID, deviceID, scope, txnID string) (string, error) {
	var id string
	err := s.read.QueryRowContext(ctx, `SELECT event_id FROM event_txn_ids WHERE user_id = $1 AND device_id = $2 AND scope = $3 AND txn_id = $4`,
		userID, deviceID, scope, txnID).Scan(&id)
	if err != nil {
		return "", notFound(err, "txn")
	}
	return id, nil
}

// RoomEvents returns up to limit non-outlier events of the room with stream
// position in (after, upTo], in stream order (or reverse when backwards:
// then positions in [from... descending below before)).
func (s *Store) RoomEvents(ctx context.Context, roomID string, after, upTo int64, limit int, backwards bool) ([]*Event, error) {
	order := "ASC"
	if backwards {
		order = "DESC"
	}
	return scanEvents(s.read.QueryContext(ctx, `SELECT `+eventColumns+` FROM events
		WHERE room_id = $1 AND stream_ordering > $2 AND stream_ordering <= $3 AND outlier = 0 AND rejected = 0
		ORDER BY stream_ordering `+order+` LIMIT $4`, roomID, after, upTo, limit))
}

// MaxStreamPos is the newest event stream position.
func (s *Store) MaxStreamPos(ctx context.Context) (int64, error) {
	var n sql.NullInt64
	err := s.read.QueryRowContext(ctx, `SELECT MAX(stream_ordering) FROM events`).Scan(&n)
	return n.Int64, err
}

// RedactEvent replaces an event's JSON with its redacted form and records
// the redaction that caused it.
func (s *Store) RedactEvent(ctx context.Context, eventID, redactedBy string, redactedJSON []byte) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE events SET json = $1, redacted_by = $2 WHERE event_id = $3`, string(redactedJSON), redactedBy, eventID)
		if err != nil {
			return fmt.Errorf("storage: redact %s: %w", eventID, err)
		}
		return nil
	})
}
