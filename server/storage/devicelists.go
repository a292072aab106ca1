package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// Device lists across servers (Server-Server API, "Device management" and
// "End-to-End Encryption"), and the persisted EDUs that carry them and
// to-device messages to other servers (migration 0013).
//
// Outbound, every change of a local user's keys records, in the
// transaction that makes it, a poke per server sharing a room with the
// user (device_list_outbound_pokes); the federation sender turns pokes into
// m.device_list_update and m.signing_key_update EDUs when it sends them.
// Inbound, the device lists of remote users who share a room with a local
// user are cached (remote_device_*), and changes to them take aux stream
// positions in device_list_changes like local ones, so /sync and
// /keys/changes report them the same way.

// pokeDestinations lists, inside tx, the servers to tell about a change of
// the local user userID's keys: every other server with a member in a
// room userID is joined to. The user's own server is the one in their ID.
func pokeDestinations(ctx context.Context, tx *sql.Tx, userID string) ([]string, error) {
	_, own, ok := strings.Cut(userID, ":")
	if !ok {
		return nil, nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT DISTINCT b.state_key FROM current_state a
		JOIN current_state b ON b.room_id = a.room_id AND b.type = 'm.room.member' AND b.membership = 'join'
		WHERE a.type = 'm.room.member' AND a.state_key = $1 AND a.membership = 'join'`, userID)
	if err != nil {
		return nil, fmt.Errorf("storage: servers sharing a room with %s: %w", userID, err)
	}
	defer rows.Close()
	seen := map[string]bool{own: true}
	var dests []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("storage: scan member: %w", err)
		}
		if _, server, ok := strings.Cut(u, ":"); ok && !seen[server] {
			seen[server] = true
			dests = append(dests, server)
		}
	}
	return dests, rows.Err()
}

// queueDeviceListPoke records, inside tx, that device of userID ("" for
// the cross-signing keys) changed at streamID, for each of dests.
func (s *Store) queueDeviceListPoke(ctx context.Context, tx *sql.Tx, dests []string, userID, device string, streamID int64) error {
	args := make([]any, 0, 4*len(dests))
	for _, d := range dests {
		args = append(args, d, userID, device, streamID)
	}
	if err := s.bulkExec(ctx, tx, `INSERT INTO device_list_outbound_pokes (destination, user_id, device_id, stream_id) VALUES `, 4,
		` ON CONFLICT (destination, user_id, device_id) DO UPDATE SET stream_id = excluded.stream_id`, args); err != nil {
		return fmt.Errorf("storage: queue device list pokes: %w", err)
	}
	return nil
}

// DeviceListPoke is a change of a local user's device (DeviceID "" for the
// cross-signing keys) not yet sent to a destination.
type DeviceListPoke struct {
	UserID, DeviceID string
	StreamID         int64
	// LastSent is the stream_id of the newest update for the user the
	// destination was sent (0: none).
	LastSent int64
}

// DeviceListPokes returns up to limit of destination's pokes, oldest first.
func (s *Store) DeviceListPokes(ctx context.Context, destination string, limit int) ([]DeviceListPoke, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT p.user_id, p.device_id, p.stream_id, COALESCE(l.stream_id, 0) FROM device_list_outbound_pokes p
		LEFT JOIN device_list_outbound_last l ON l.destination = p.destination AND l.user_id = p.user_id
		WHERE p.destination = $1 ORDER BY p.stream_id, p.user_id, p.device_id LIMIT $2`, destination, limit)
	if err != nil {
		return nil, fmt.Errorf("storage: device list pokes: %w", err)
	}
	defer rows.Close()
	var out []DeviceListPoke
	for rows.Next() {
		var p DeviceListPoke
		if err := rows.Scan(&p.UserID, &p.DeviceID, &p.StreamID, &p.LastSent); err != nil {
			return nil, fmt.Errorf("storage: scan device list poke: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// DeviceListPokesSent records that destination received the updates for
// pokes: each is removed unless a newer change replaced it meanwhile, and
// the newest stream_id per user becomes the next update's prev_id.
func (s *Store) DeviceListPokesSent(ctx context.Context, destination string, pokes []DeviceListPoke) error {
	if len(pokes) == 0 {
		return nil
	}
	newest := map[string]int64{}
	for _, p := range pokes {
		if p.DeviceID != "" { // cross-signing updates carry no stream_id
			newest[p.UserID] = max(newest[p.UserID], p.StreamID)
		}
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		for _, p := range pokes {
			if _, err := tx.ExecContext(ctx, `DELETE FROM device_list_outbound_pokes WHERE destination = $1 AND user_id = $2 AND device_id = $3 AND stream_id = $4`,
				destination, p.UserID, p.DeviceID, p.StreamID); err != nil {
				return fmt.Errorf("storage: delete device list poke: %w", err)
			}
		}
		for u, id := range newest {
			if _, err := tx.ExecContext(ctx, `INSERT INTO device_list_outbound_last (destination, user_id, stream_id) VALUES ($1, $2, $3)
				ON CONFLICT (destination, user_id) DO UPDATE SET stream_id = excluded.stream_id
				WHERE excluded.stream_id > device_list_outbound_last.stream_id`, destination, u, id); err != nil {
				return fmt.Errorf("storage: record device list update sent: %w", err)
			}
		}
		return nil
	})
}

// OutboxEDU is an EDU with fixed content queued for a destination.
type OutboxEDU struct {
	ID          int64 // set when read
	Destination string
	Type        string
	Content     []byte
}

// queueOutboxEDUs queues edus inside tx.
func (s *Store) queueOutboxEDUs(ctx context.Context, tx *sql.Tx, edus []OutboxEDU) error {
	now := nowMS()
	for _, e := range edus {
		if _, err := tx.ExecContext(ctx, `INSERT INTO federation_edu_outbox (destination, edu_type, content, created_ts) VALUES ($1, $2, $3, $4)`,
			e.Destination, e.Type, string(e.Content), now); err != nil {
			return fmt.Errorf("storage: queue EDU for %s: %w", e.Destination, err)
		}
	}
	return nil
}

// OutboxEDUs returns up to limit of the EDUs queued for destination, in
// the order they were queued.
func (s *Store) OutboxEDUs(ctx context.Context, destination string, limit int) ([]OutboxEDU, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT id, edu_type, content FROM federation_edu_outbox WHERE destination = $1 ORDER BY id LIMIT $2`,
		destination, limit)
	if err != nil {
		return nil, fmt.Errorf("storage: outbox EDUs: %w", err)
	}
	defer rows.Close()
	var out []OutboxEDU
	for rows.Next() {
		e := OutboxEDU{Destination: destination}
		var c string
		if err := rows.Scan(&e.ID, &e.Type, &c); err != nil {
			return nil, fmt.Errorf("storage: scan outbox EDU: %w", err)
		}
		e.Content = []byte(c)
		out = append(out, e)
	}
	return out, rows.Err()
}

// DeleteOutboxEDUs removes delivered EDUs. They go by ID, not "up to": on
// PostgreSQL a lower ID may commit after a higher one was read.
func (s *Store) DeleteOutboxEDUs(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		for start := 0; start < len(ids); start += s.d.InChunk {
			chunk := ids[start:min(start+s.d.InChunk, len(ids))]
			args := make([]any, len(chunk))
			for i, id := range chunk {
				args[i] = id
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM federation_edu_outbox WHERE id IN (`+inList(1, len(chunk))+`)`, args...); err != nil {
				return fmt.Errorf("storage: delete delivered EDUs: %w", err)
			}
		}
		return nil
	})
}

// OutboxDestinations lists the destinations with persisted EDUs or device
// list pokes waiting.
func (s *Store) OutboxDestinations(ctx context.Context) ([]string, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT destination FROM federation_edu_outbox
		UNION SELECT destination FROM device_list_outbound_pokes ORDER BY destination`)
	if err != nil {
		return nil, fmt.Errorf("storage: outbox destinations: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, fmt.Errorf("storage: scan outbox destination: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// SharesRoomWithLocalUser reports whether userID is joined to a room a
// local user (one with an account here) is joined to: whether this server
// tracks their device list.
func (s *Store) SharesRoomWithLocalUser(ctx context.Context, userID string) (bool, error) {
	var one int
	err := s.read.QueryRowContext(ctx, `SELECT 1 FROM current_state a
		JOIN current_state b ON b.room_id = a.room_id AND b.type = 'm.room.member' AND b.membership = 'join'
		JOIN users u ON u.user_id = b.state_key
		WHERE a.type = 'm.room.member' AND a.state_key = $1 AND a.membership = 'join' LIMIT 1`, userID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("storage: does %s share a room with a local user: %w", userID, err)
	}
	return true, nil
}

// RemoteDevice is a cached device of a remote user.
type RemoteDevice struct {
	DeviceID    string
	DisplayName string
	Keys        []byte // nil: the device has no keys
}

// RemoteDeviceList is the cached device list of a remote user.
type RemoteDeviceList struct {
	UserID string
	// StreamID is the last update applied; 0 when unknown (the list came
	// from a keys query, which carries none).
	StreamID     int64
	Devices      []RemoteDevice
	CrossSigning map[string]*CrossSigningKey // master, self_signing
}

// RemoteDeviceListOf returns userID's cached device list, or ErrNotFound.
func (s *Store) RemoteDeviceListOf(ctx context.Context, userID string) (*RemoteDeviceList, error) {
	l := &RemoteDeviceList{UserID: userID, CrossSigning: map[string]*CrossSigningKey{}}
	var sid sql.NullInt64
	if err := s.read.QueryRowContext(ctx, `SELECT stream_id FROM remote_device_lists WHERE user_id = $1`, userID).Scan(&sid); err != nil {
		return nil, notFound(err, "remote device list")
	}
	l.StreamID = sid.Int64
	rows, err := s.read.QueryContext(ctx, `SELECT device_id, COALESCE(display_name, ''), key_json FROM remote_device_keys WHERE user_id = $1 ORDER BY device_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("storage: remote device keys: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var d RemoteDevice
		var keys sql.NullString
		if err := rows.Scan(&d.DeviceID, &d.DisplayName, &keys); err != nil {
			return nil, fmt.Errorf("storage: scan remote device: %w", err)
		}
		if keys.Valid {
			d.Keys = []byte(keys.String)
		}
		l.Devices = append(l.Devices, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: remote device keys: %w", err)
	}
	cs, err := s.read.QueryContext(ctx, `SELECT key_type, public_key, key_json FROM remote_cross_signing_keys WHERE user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("storage: remote cross-signing keys: %w", err)
	}
	defer cs.Close()
	for cs.Next() {
		var k CrossSigningKey
		var js string
		if err := cs.Scan(&k.Type, &k.PublicKey, &js); err != nil {
			return nil, fmt.Errorf("storage: scan remote cross-signing key: %w", err)
		}
		k.JSON = []byte(js)
		l.CrossSigning[k.Type] = &k
	}
	return l, cs.Err()
}

// writeRemoteDeviceList replaces, inside tx, everything cached of l's user.
func writeRemoteDeviceList(ctx context.Context, tx *sql.Tx, l *RemoteDeviceList) error {
	for _, table := range []string{"remote_device_keys", "remote_cross_signing_keys"} {
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE user_id = $1`, l.UserID); err != nil {
			return fmt.Errorf("storage: clear remote device list: %w", err)
		}
	}
	var sid any
	if l.StreamID != 0 {
		sid = l.StreamID
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO remote_device_lists (user_id, stream_id, updated_ts) VALUES ($1, $2, $3)
		ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id, updated_ts = excluded.updated_ts`, l.UserID, sid, nowMS()); err != nil {
		return fmt.Errorf("storage: put remote device list: %w", err)
	}
	for _, d := range l.Devices {
		if hasNUL(d.DeviceID) {
			continue // see below
		}
		if hasNUL(d.DisplayName) {
			d.DisplayName = ""
		}
		if err := putRemoteDevice(ctx, tx, l.UserID, &d); err != nil {
			return err
		}
	}
	for _, k := range l.CrossSigning {
		if hasNUL(k.Type) || hasNUL(k.PublicKey) {
			continue
		}
		if err := putRemoteCrossSigningKey(ctx, tx, l.UserID, k); err != nil {
			return err
		}
	}
	return nil
}

// hasNUL reports whether s has a NUL character. Another server's device
// list may name a device, or a key, with one: no client could use it, and
// PostgreSQL cannot store it in text, so it is left out (a display name
// with one is dropped) on both engines alike.
func hasNUL(s string) bool { return strings.IndexByte(s, 0) >= 0 }

func putRemoteDevice(ctx context.Context, tx *sql.Tx, userID string, d *RemoteDevice) error {
	var keys any
	if d.Keys != nil {
		keys = string(d.Keys)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO remote_device_keys (user_id, device_id, display_name, key_json) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = excluded.display_name, key_json = excluded.key_json`,
		userID, d.DeviceID, nullStr(d.DisplayName), keys); err != nil {
		return fmt.Errorf("storage: put remote device: %w", err)
	}
	return nil
}

func putRemoteCrossSigningKey(ctx context.Context, tx *sql.Tx, userID string, k *CrossSigningKey) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO remote_cross_signing_keys (user_id, key_type, public_key, key_json) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id, key_type) DO UPDATE SET public_key = excluded.public_key, key_json = excluded.key_json`,
		userID, k.Type, k.PublicKey, string(k.JSON)); err != nil {
		return fmt.Errorf("storage: put remote cross-signing key: %w", err)
	}
	return nil
}

// CacheRemoteDeviceList caches a device list fetched for a client's keys
// query, unless one is cached already (an update or resync that raced the
// query knows better); it reports whether it stored l.
func (s *Store) CacheRemoteDeviceList(ctx context.Context, l *RemoteDeviceList) (bool, error) {
	stored := false
	err := s.tx(ctx, func(tx *sql.Tx) error {
		stored = false
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM remote_device_lists WHERE user_id = $1`, l.UserID).Scan(&one)
		if err == nil {
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("storage: remote device list: %w", err)
		}
		stored = true
		return writeRemoteDeviceList(ctx, tx, l)
	})
	return stored, err
}

// ResyncRemoteDeviceList replaces the cached device list of l's user with
// a snapshot from their server (GET /user/devices) and records the change.
// A snapshot older than the updates applied since it was taken is not
// stored.
func (s *Store) ResyncRemoteDeviceList(ctx context.Context, l *RemoteDeviceList) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		var sid sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT stream_id FROM remote_device_lists WHERE user_id = $1`, l.UserID).Scan(&sid)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("storage: remote device list: %w", err)
		}
		if sid.Valid && sid.Int64 > l.StreamID {
			return nil
		}
		if err := writeRemoteDeviceList(ctx, tx, l); err != nil {
			return err
		}
		_, err = s.markDeviceListChange(ctx, tx, l.UserID)
		return err
	})
}

// RemoteDeviceUpdate is one m.device_list_update.
type RemoteDeviceUpdate struct {
	UserID, DeviceID, DisplayName string
	StreamID                      int64
	PrevIDs                       []int64
	Deleted                       bool
	Keys                          []byte // nil: none
}

// DeviceUpdateResult is what ApplyRemoteDeviceUpdate did.
type DeviceUpdateResult int

const (
	// UpdateApplied: the cache was updated and the change recorded.
	UpdateApplied DeviceUpdateResult = iota
	// UpdateKnown: the update is not newer than the cache; nothing done.
	UpdateKnown
	// UpdateGap: the user is not cached, or the update follows one this
	// server missed; the list must be fetched again.
	UpdateGap
)

// ApplyRemoteDeviceUpdate applies u to the cached device list of its user
// when its prev_id names the last update applied (spec: "Device
// management": otherwise an update was lost).
func (s *Store) ApplyRemoteDeviceUpdate(ctx context.Context, u *RemoteDeviceUpdate) (DeviceUpdateResult, error) {
	res := UpdateGap
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res = UpdateGap
		var sid sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT stream_id FROM remote_device_lists WHERE user_id = $1`, u.UserID).Scan(&sid)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && !sid.Valid) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("storage: remote device list: %w", err)
		}
		if u.StreamID <= sid.Int64 {
			res = UpdateKnown
			return nil
		}
		if len(u.PrevIDs) == 0 {
			return nil // no chain to check: Synapse resyncs too
		}
		for _, p := range u.PrevIDs {
			if p != sid.Int64 {
				return nil
			}
		}
		if u.Deleted {
			if _, err := tx.ExecContext(ctx, `DELETE FROM remote_device_keys WHERE user_id = $1 AND device_id = $2`, u.UserID, u.DeviceID); err != nil {
				return fmt.Errorf("storage: delete remote device: %w", err)
			}
		} else if err := putRemoteDevice(ctx, tx, u.UserID, &RemoteDevice{DeviceID: u.DeviceID, DisplayName: u.DisplayName, Keys: u.Keys}); err != nil {
			return err
		}
		// Compare and set: on PostgreSQL a concurrent update of the same
		// user may have moved the list on since it was read.
		r, err := tx.ExecContext(ctx, `UPDATE remote_device_lists SET stream_id = $2, updated_ts = $3 WHERE user_id = $1 AND stream_id = $4`,
			u.UserID, u.StreamID, nowMS(), sid.Int64)
		if err != nil {
			return fmt.Errorf("storage: advance remote device list: %w", err)
		}
		if n, _ := r.RowsAffected(); n != 1 {
			return errUpdateRaced
		}
		if _, err := s.markDeviceListChange(ctx, tx, u.UserID); err != nil {
			return err
		}
		res = UpdateApplied
		return nil
	})
	if errors.Is(err, errUpdateRaced) {
		return UpdateGap, nil
	}
	return res, err
}

var errUpdateRaced = errors.New("storage: remote device list changed concurrently")

// PutRemoteCrossSigningKeys stores a remote user's new cross-signing keys
// (m.signing_key_update) when their device list is cached, and records the
// change either way. It reports whether the list was cached.
func (s *Store) PutRemoteCrossSigningKeys(ctx context.Context, userID string, keys []*CrossSigningKey) (bool, error) {
	cached := false
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM remote_device_lists WHERE user_id = $1`, userID).Scan(&one)
		cached = err == nil
		switch {
		case err == nil:
			for _, k := range keys {
				if err := putRemoteCrossSigningKey(ctx, tx, userID, k); err != nil {
					return err
				}
			}
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("storage: remote device list: %w", err)
		}
		_, err = s.markDeviceListChange(ctx, tx, userID)
		return err
	})
	return cached, err
}

// ForgetUntrackedDeviceLists drops the cached device lists of those among
// candidates who no longer share a room with a local user: their servers
// stop sending this one updates, so the cache would go stale unnoticed.
func (s *Store) ForgetUntrackedDeviceLists(ctx context.Context, candidates []string) ([]string, error) {
	var cached []string
	for start := 0; start < len(candidates); start += s.d.InChunk {
		chunk := candidates[start:min(start+s.d.InChunk, len(candidates))]
		args := make([]any, len(chunk))
		for i, u := range chunk {
			args[i] = u
		}
		rows, err := s.read.QueryContext(ctx, `SELECT user_id FROM remote_device_lists WHERE user_id IN (`+inList(1, len(chunk))+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("storage: cached device lists: %w", err)
		}
		for rows.Next() {
			var u string
			if err := rows.Scan(&u); err != nil {
				rows.Close()
				return nil, fmt.Errorf("storage: scan cached device list: %w", err)
			}
			cached = append(cached, u)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	var forgot []string
	for _, u := range cached {
		tracked, err := s.SharesRoomWithLocalUser(ctx, u)
		if err != nil {
			return forgot, err
		}
		if tracked {
			continue
		}
		if err := s.ForgetRemoteDeviceList(ctx, u); err != nil {
			return forgot, err
		}
		forgot = append(forgot, u)
	}
	return forgot, nil
}

// ForgetRemoteDeviceList drops userID's cached device list.
func (s *Store) ForgetRemoteDeviceList(ctx context.Context, userID string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		for _, table := range []string{"remote_device_lists", "remote_device_keys", "remote_cross_signing_keys"} {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE user_id = $1`, userID); err != nil {
				return fmt.Errorf("storage: forget remote device list: %w", err)
			}
		}
		return nil
	})
}
