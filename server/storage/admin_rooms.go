package storage

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// Room administration (Synapse admin API, dashboard): the room list, blocking,
// purging and the persisted state of room deletions.

// RoomInfo is a room with the current state and counts the admin API lists.
type RoomInfo struct {
	Room
	// Content holds the content (JSON) of each current state event with an
	// empty state key among the types RoomInfos reads (adminRoomTypes: create,
	// name, topic, avatar, canonical alias, encryption, join rules, guest
	// access and history visibility), keyed by type.
	Content            map[string][]byte
	JoinedMembers      int
	JoinedLocalMembers int
	StateEvents        int
}

// adminRoomTypes are the state types RoomInfos reads.
var adminRoomTypes = []string{"m.room.create", "m.room.name", "m.room.topic", "m.room.avatar", "m.room.canonical_alias",
	"m.room.encryption", "m.room.join_rules", "m.room.guest_access", "m.room.history_visibility"}

// AllRoomIDs lists every room this server has a row for.
func (s *Store) AllRoomIDs(ctx context.Context) ([]string, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT room_id FROM rooms ORDER BY room_id`)
	if err != nil {
		return nil, fmt.Errorf("storage: list rooms: %w", err)
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

// RoomInfos reads the rooms' rows, member and state counts, and the
// current state events of adminRoomTypes. localServer decides which joined
// members are local. Rooms without a row are left out.
func (s *Store) RoomInfos(ctx context.Context, roomIDs []string, localServer string) (map[string]*RoomInfo, error) {
	out := make(map[string]*RoomInfo, len(roomIDs))
	suffix := "%:" + escapeLike(localServer)
	for start := 0; start < len(roomIDs); start += 400 {
		chunk := roomIDs[start:min(start+400, len(roomIDs))]
		args := make([]any, 0, len(chunk)+len(adminRoomTypes)+1)
		for _, id := range chunk {
			args = append(args, id)
		}
		in := inList(1, len(chunk))
		rows, err := s.read.QueryContext(ctx, `SELECT room_id, room_version, creator, is_public, blocked, created_ts FROM rooms WHERE room_id IN (`+in+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("storage: room rows: %w", err)
		}
		for rows.Next() {
			ri := &RoomInfo{Content: map[string][]byte{}}
			var pub, blocked int
			if err := rows.Scan(&ri.RoomID, &ri.RoomVersion, &ri.Creator, &pub, &blocked, &ri.CreatedTS); err != nil {
				rows.Close()
				return nil, err
			}
			ri.IsPublic, ri.Blocked = pub != 0, blocked != 0
			out[ri.RoomID] = ri
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		rows, err = s.read.QueryContext(ctx, `SELECT room_id, COUNT(*),
				SUM(CASE WHEN type = 'm.room.member' AND membership = 'join' THEN 1 ELSE 0 END),
				SUM(CASE WHEN type = 'm.room.member' AND membership = 'join' AND state_key LIKE $`+fmt.Sprint(len(chunk)+1)+` ESCAPE '\' THEN 1 ELSE 0 END)
			FROM current_state WHERE room_id IN (`+in+`) GROUP BY room_id`, append(args, suffix)...)
		if err != nil {
			return nil, fmt.Errorf("storage: room counts: %w", err)
		}
		for rows.Next() {
			var id string
			var n, joined, local int
			if err := rows.Scan(&id, &n, &joined, &local); err != nil {
				rows.Close()
				return nil, err
			}
			if ri := out[id]; ri != nil {
				ri.StateEvents, ri.JoinedMembers, ri.JoinedLocalMembers = n, joined, local
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		for _, t := range adminRoomTypes {
			args = append(args, t)
		}
		rows, err = s.read.QueryContext(ctx, `SELECT c.room_id, c.type, e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
			WHERE c.room_id IN (`+in+`) AND c.type IN (`+inList(len(chunk)+1, len(adminRoomTypes))+`) AND c.state_key = ''`, args...)
		if err != nil {
			return nil, fmt.Errorf("storage: room state: %w", err)
		}
		for rows.Next() {
			var id, typ, js string
			if err := rows.Scan(&id, &typ, &js); err != nil {
				rows.Close()
				return nil, err
			}
			if ri := out[id]; ri != nil {
				ri.Content[typ] = []byte(js)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// RoomBlock is an admin's block on a room.
type RoomBlock struct {
	RoomID    string
	UserID    string
	BlockedTS int64
}

// BlockedRoom returns the block on a room, or ErrNotFound when it is not
// blocked.
func (s *Store) BlockedRoom(ctx context.Context, roomID string) (*RoomBlock, error) {
	b := &RoomBlock{}
	err := s.read.QueryRowContext(ctx, `SELECT room_id, user_id, blocked_ts FROM blocked_rooms WHERE room_id = $1`, roomID).
		Scan(&b.RoomID, &b.UserID, &b.BlockedTS)
	if err != nil {
		return nil, notFound(err, "blocked room")
	}
	return b, nil
}

// SetRoomBlocked blocks (by the admin userID) or unblocks a room, known to
// this server or not. The caller drops its cached copy of the room row.
func (s *Store) SetRoomBlocked(ctx context.Context, roomID, userID string, blocked bool) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		if blocked {
			_, err = tx.ExecContext(ctx, `INSERT INTO blocked_rooms (room_id, user_id, blocked_ts) VALUES ($1, $2, $3)
				ON CONFLICT (room_id) DO NOTHING`, roomID, userID, nowMS())
		} else {
			_, err = tx.ExecContext(ctx, `DELETE FROM blocked_rooms WHERE room_id = $1`, roomID)
		}
		if err != nil {
			return fmt.Errorf("storage: block room: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE rooms SET blocked = $1 WHERE room_id = $2`, boolInt(blocked), roomID); err != nil {
			return fmt.Errorf("storage: block room: %w", err)
		}
		return nil
	})
}

// PurgeRoom removes everything stored about a room: its row, events, DAG,
// state groups, current state and its deltas, aliases, receipts, account
// data, reports, its place as someone's server-notices room, and the
// transaction IDs of its events. What stays is the block (blocked_rooms)
// and the record of the deletion (room_deletes).
//
// The room's row, current state and every small table go first, in one
// transaction: from then on the room is gone for readers. The large tables
// (events, state groups, deltas, edges) follow in chunks of their own
// transactions, so purging a big room never holds the database's writer
// for long and other rooms' sends go on. A purge cut short is finished by
// running it again (room deletions are resumed at start-up).
func (s *Store) PurgeRoom(ctx context.Context, roomID string) error {
	// Staged notifications are written first, so none of the room's is
	// written after its rows are deleted.
	if err := s.waitWritten(ctx); err != nil {
		return err
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		for _, q := range []string{
			`DELETE FROM forward_extremities WHERE room_id = $1`,
			`DELETE FROM current_state WHERE room_id = $1`,
			`DELETE FROM room_aliases WHERE room_id = $1`,
			`DELETE FROM forgotten_rooms WHERE room_id = $1`,
			`DELETE FROM account_data WHERE room_id = $1`,
			`DELETE FROM receipts WHERE room_id = $1`,
			`DELETE FROM event_reports WHERE room_id = $1`,
			`DELETE FROM room_reports WHERE room_id = $1`,
			`DELETE FROM server_notice_rooms WHERE room_id = $1`,
			`DELETE FROM federation_destination_rooms WHERE room_id = $1`,
			`DELETE FROM out_of_room_memberships WHERE room_id = $1`,
			`DELETE FROM pending_redactions WHERE room_id = $1`,
			`DELETE FROM room_bump_stamps WHERE room_id = $1`,
			`DELETE FROM rooms WHERE room_id = $1`,
		} {
			if _, err := tx.ExecContext(ctx, q, roomID); err != nil {
				return fmt.Errorf("storage: purge room %s: %s: %w", roomID, strings.Fields(q)[2], err)
			}
		}
		return nil
	})
	// The room's members are not known any more: every user's rooms go,
	// and so do reads of its events.
	s.c.roomsOfUser.Purge()
	s.c.unread.Purge() // its receipts
	s.rowVersions.bump(roomID)
	if err != nil {
		return err
	}
	s.bumps.drop(roomID)
	s.currentStateChanged(roomID)
	// Index rows still queued go into the index first, where the chunks
	// below delete them.
	if err := s.flushSearch(ctx); err != nil {
		return err
	}
	for _, chunk := range [][]string{
		// Notifications, found through the heads of the room's threads
		// (push_notifications is indexed by user and position alone),
		// then the heads.
		{`DELETE FROM push_notifications WHERE (user_id, stream_ordering) IN (SELECT n.user_id, n.stream_ordering
			FROM push_thread_heads h JOIN push_notifications n ON n.user_id = h.user_id AND n.room_id = h.room_id
			WHERE h.room_id = $1 LIMIT 500)`},
		{`DELETE FROM push_thread_heads WHERE room_id = $1`},
		{`DELETE FROM event_txn_ids WHERE stream_ordering IN (SELECT stream_ordering FROM events WHERE room_id = $1 ORDER BY stream_ordering LIMIT 500)`,
			`DELETE FROM event_search WHERE ` + s.searchRowID() + ` IN (SELECT stream_ordering FROM events WHERE room_id = $1 ORDER BY stream_ordering LIMIT 500)`,
			`DELETE FROM event_edges WHERE stream_ordering IN (SELECT stream_ordering FROM events WHERE room_id = $1 ORDER BY stream_ordering LIMIT 500)`,
			`DELETE FROM events WHERE stream_ordering IN (SELECT stream_ordering FROM events WHERE room_id = $1 ORDER BY stream_ordering LIMIT 500)`},
		{`DELETE FROM state_group_entries WHERE group_id IN (SELECT id FROM state_groups WHERE room_id = $1 ORDER BY id LIMIT 50)`,
			`DELETE FROM state_groups WHERE id IN (SELECT id FROM state_groups WHERE room_id = $1 ORDER BY id LIMIT 50)`},
		{`DELETE FROM current_state_deltas WHERE room_id = $1 AND stream_ordering IN
			(SELECT stream_ordering FROM current_state_deltas WHERE room_id = $1 ORDER BY stream_ordering LIMIT 500)`},
	} {
		for {
			var n int64
			err := s.tx(ctx, func(tx *sql.Tx) error {
				for _, q := range chunk {
					res, err := tx.ExecContext(ctx, q, roomID)
					if err != nil {
						return fmt.Errorf("storage: purge room %s: %s: %w", roomID, strings.Fields(q)[2], err)
					}
					m, _ := res.RowsAffected()
					n += m
				}
				return nil
			})
			if err != nil {
				return err
			}
			if n == 0 {
				break
			}
		}
	}
	// Totals read before the notifications went (cumAt) are no more, nor
	// the thread heads.
	s.c.notifTotals.Purge()
	s.c.unread.Purge()
	s.c.threadHeads.Purge()
	return nil
}

// Delete statuses of a room deletion (Synapse's names).
const (
	DeleteShuttingDown = "shutting_down"
	DeletePurging      = "purging"
	DeleteComplete     = "complete"
	DeleteFailed       = "failed"
)

// RoomDelete is one asynchronous room deletion.
type RoomDelete struct {
	DeleteID  string
	RoomID    string
	Status    string
	Error     string
	Params    []byte // the request, JSON
	Result    []byte // shutdown_room, JSON
	CreatedTS int64
	UpdatedTS int64
}

const roomDeleteColumns = `delete_id, room_id, status, error, params, result, created_ts, updated_ts`

func scanRoomDelete(row interface{ Scan(...any) error }) (*RoomDelete, error) {
	d := &RoomDelete{}
	var params, result string
	if err := row.Scan(&d.DeleteID, &d.RoomID, &d.Status, &d.Error, &params, &result, &d.CreatedTS, &d.UpdatedTS); err != nil {
		return nil, err
	}
	d.Params, d.Result = []byte(params), []byte(result)
	return d, nil
}

// CreateRoomDelete records a new deletion.
func (s *Store) CreateRoomDelete(ctx context.Context, d *RoomDelete) error {
	if d.CreatedTS == 0 {
		d.CreatedTS = nowMS()
	}
	d.UpdatedTS = d.CreatedTS
	if len(d.Result) == 0 {
		d.Result = []byte("{}")
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO room_deletes (`+roomDeleteColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			d.DeleteID, d.RoomID, d.Status, d.Error, string(d.Params), string(d.Result), d.CreatedTS, d.UpdatedTS)
		if isUnique(err) {
			return ErrConflict
		}
		if err != nil {
			return fmt.Errorf("storage: create room delete: %w", err)
		}
		return nil
	})
}

// UpdateRoomDelete sets a deletion's status, error and result (nil result:
// unchanged).
func (s *Store) UpdateRoomDelete(ctx context.Context, deleteID, status, errText string, result []byte) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		if result != nil {
			_, err = tx.ExecContext(ctx, `UPDATE room_deletes SET status = $1, error = $2, result = $3, updated_ts = $4 WHERE delete_id = $5`,
				status, errText, string(result), nowMS(), deleteID)
		} else {
			_, err = tx.ExecContext(ctx, `UPDATE room_deletes SET status = $1, error = $2, updated_ts = $3 WHERE delete_id = $4`,
				status, errText, nowMS(), deleteID)
		}
		if err != nil {
			return fmt.Errorf("storage: update room delete: %w", err)
		}
		return nil
	})
}

// RoomDeleteByID returns one deletion, or ErrNotFound.
func (s *Store) RoomDeleteByID(ctx context.Context, deleteID string) (*RoomDelete, error) {
	d, err := scanRoomDelete(s.read.QueryRowContext(ctx, `SELECT `+roomDeleteColumns+` FROM room_deletes WHERE delete_id = $1`, deleteID))
	if err != nil {
		return nil, notFound(err, "room delete")
	}
	return d, nil
}

// RoomDeletes lists the deletions of a room (every room when roomID is
// ""), oldest first; unfinished limits them to those not complete or failed.
func (s *Store) RoomDeletes(ctx context.Context, roomID string, unfinished bool) ([]*RoomDelete, error) {
	q := `SELECT ` + roomDeleteColumns + ` FROM room_deletes WHERE ($1 = '' OR room_id = $1)`
	if unfinished {
		q += ` AND status NOT IN ('complete', 'failed')`
	}
	rows, err := s.read.QueryContext(ctx, q+` ORDER BY created_ts, delete_id`, roomID)
	if err != nil {
		return nil, fmt.Errorf("storage: room deletes: %w", err)
	}
	defer rows.Close()
	var out []*RoomDelete
	for rows.Next() {
		d, err := scanRoomDelete(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// ServerNoticeRoom returns the user's server-notices room, or ErrNotFound.
func (s *Store) ServerNoticeRoom(ctx context.Context, userID string) (string, error) {
	var id string
	err := s.read.QueryRowContext(ctx, `SELECT room_id FROM server_notice_rooms WHERE user_id = $1`, userID).Scan(&id)
	if err != nil {
		return "", notFound(err, "server notice room")
	}
	return id, nil
}

// IsServerNoticeRoom reports whether the room is some user's notices room.
func (s *Store) IsServerNoticeRoom(ctx context.Context, roomID string) (bool, error) {
	var n int
	err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM server_notice_rooms WHERE room_id = $1`, roomID).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("storage: is server notice room: %w", err)
	}
	return n > 0, nil
}

// SetServerNoticeRoom records the user's server-notices room.
func (s *Store) SetServerNoticeRoom(ctx context.Context, userID, roomID string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO server_notice_rooms (user_id, room_id) VALUES ($1, $2)
			ON CONFLICT (user_id) DO UPDATE SET room_id = excluded.room_id`, userID, roomID)
		if err != nil {
			return fmt.Errorf("storage: set server notice room: %w", err)
		}
		return nil
	})
}
