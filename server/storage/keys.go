package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
)

// End-to-end encryption keys (server/keys.go). Every change to what
// /keys/query answers for a user records a device list change on the aux
// stream, so /sync and /keys/changes can tell the user's peers.

// markDeviceListChange records, inside tx, that userID's device list
// changed, at a new aux stream position. devices names the local user's
// devices whose keys changed ("" for the cross-signing keys): the other
// servers sharing a room with the user are sent them (devicelists.go).
// Without devices (a remote user's list, a signature only its signer sees)
// no other server is told.
//
// Each device takes a position of its own: an m.device_list_update's
// stream_id names one device's change, and the next one's prev_id must
// differ from it.
func (s *Store) markDeviceListChange(ctx context.Context, tx *sql.Tx, userID string, devices ...string) (int64, error) {
	var dests []string
	if len(devices) > 0 {
		var err error
		if dests, err = pokeDestinations(ctx, tx, userID); err != nil {
			return 0, err
		}
	}
	var id int64
	for i := 0; i == 0 || i < len(devices); i++ {
		var err error
		if id, err = s.nextAuxID(ctx, tx, "device_list"); err != nil {
			return 0, err
		}
		if i < len(devices) && len(dests) > 0 {
			if err := s.queueDeviceListPoke(ctx, tx, dests, userID, devices[i], id); err != nil {
				return 0, err
			}
		}
	}
	s.deviceListMarks.raise("", id) // before the commit (auxmarks.go)
	if _, err := tx.ExecContext(ctx, `INSERT INTO device_list_changes (user_id, stream_id) VALUES ($1, $2)
		ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id`, userID, id); err != nil {
		return 0, fmt.Errorf("storage: mark device list change: %w", err)
	}
	return id, nil
}

// DeviceListStreamID is the stream position of userID's newest device list
// change (0: none): the stream_id GET /user/devices answers, in the same
// sequence as the m.device_list_update EDUs.
func (s *Store) DeviceListStreamID(ctx context.Context, userID string) (int64, error) {
	var id int64
	err := s.read.QueryRowContext(ctx, `SELECT stream_id FROM device_list_changes WHERE user_id = $1`, userID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("storage: device list stream id: %w", err)
	}
	return id, nil
}

// MarkDeviceListChange records that userID's device list changed, telling
// no other server.
func (s *Store) MarkDeviceListChange(ctx context.Context, userID string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := s.markDeviceListChange(ctx, tx, userID)
		return err
	})
}

// deleteDeviceKeys removes, inside tx, the keys and pending to-device
// messages of devices being deleted (in is their IN list from $2, args
// starts with userID), and records the device list change.
func (s *Store) deleteDeviceKeys(ctx context.Context, tx *sql.Tx, in string, args []any) error {
	for _, table := range []string{"device_keys", "one_time_keys", "fallback_keys", "to_device"} {
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE user_id = $1 AND device_id IN (`+in+`)`, args...); err != nil {
			return fmt.Errorf("storage: delete device keys: %w", err)
		}
	}
	devices := make([]string, 0, len(args)-1)
	for _, a := range args[1:] {
		devices = append(devices, a.(string))
	}
	_, err := s.markDeviceListChange(ctx, tx, args[0].(string), devices...)
	return err
}

// OneTimeKey is an uploaded one-time or fallback key.
type OneTimeKey struct {
	Algorithm string
	KeyID     string
	JSON      []byte
}

// KeyUpload is what one POST /keys/upload stores.
type KeyUpload struct {
	// DeviceKeys replaces the device's keys when set; the device list
	// changes only if they differ from the stored ones.
	DeviceKeys   []byte
	OneTimeKeys  []OneTimeKey
	FallbackKeys []OneTimeKey
}

// ErrKeyConflict reports a one-time key ID reused with another key.
var ErrKeyConflict = fmt.Errorf("storage: one-time key already exists with different content")

// UploadKeys stores a device's keys and reports whether its device keys
// changed.
func (s *Store) UploadKeys(ctx context.Context, userID, deviceID string, u *KeyUpload) (changed bool, err error) {
	defer s.c.deviceKeys.Remove(userDevice{userID, deviceID})
	err = s.tx(ctx, func(tx *sql.Tx) error {
		changed = false
		if u.DeviceKeys != nil {
			var old string
			err := tx.QueryRowContext(ctx, `SELECT key_json FROM device_keys WHERE user_id = $1 AND device_id = $2`, userID, deviceID).Scan(&old)
			if err != nil && notFound(err, "") != ErrNotFound {
				return fmt.Errorf("storage: read device keys: %w", err)
			}
			if old != string(u.DeviceKeys) {
				if _, err := tx.ExecContext(ctx, `INSERT INTO device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3)
					ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json`, userID, deviceID, string(u.DeviceKeys)); err != nil {
					return fmt.Errorf("storage: put device keys: %w", err)
				}
				if _, err := s.markDeviceListChange(ctx, tx, userID, deviceID); err != nil {
					return err
				}
				changed = true
			}
		}
		// This upload's place in the device's upload order (the key IDs
		// are the tie-break within one upload).
		var seq int64
		if len(u.OneTimeKeys) > 0 {
			if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(upload_seq), 0) + 1 FROM one_time_keys WHERE user_id = $1 AND device_id = $2`,
				userID, deviceID).Scan(&seq); err != nil {
				return fmt.Errorf("storage: one-time key upload order: %w", err)
			}
		}
		for _, k := range u.OneTimeKeys {
			var old string
			err := tx.QueryRowContext(ctx, `SELECT key_json FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4`,
				userID, deviceID, k.Algorithm, k.KeyID).Scan(&old)
			switch {
			case err == nil:
				if old != string(k.JSON) {
					return fmt.Errorf("%w: %s:%s", ErrKeyConflict, k.Algorithm, k.KeyID)
				}
				continue
			case notFound(err, "") != ErrNotFound:
				return fmt.Errorf("storage: read one-time key: %w", err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json, upload_seq) VALUES ($1, $2, $3, $4, $5, $6)`,
				userID, deviceID, k.Algorithm, k.KeyID, string(k.JSON), seq); err != nil {
				return fmt.Errorf("storage: put one-time key: %w", err)
			}
		}
		for _, k := range u.FallbackKeys {
			// A new fallback key replaces the old one and is unused; the
			// same key uploaded again keeps its used flag.
			if _, err := tx.ExecContext(ctx, `INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) VALUES ($1, $2, $3, $4, $5, 0)
				ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json,
					used = CASE WHEN fallback_keys.key_id = excluded.key_id AND fallback_keys.key_json = excluded.key_json THEN fallback_keys.used ELSE 0 END`,
				userID, deviceID, k.Algorithm, k.KeyID, string(k.JSON)); err != nil {
				return fmt.Errorf("storage: put fallback key: %w", err)
			}
		}
		return nil
	})
	return changed, err
}

// OneTimeKeyCounts counts a device's unclaimed one-time keys per algorithm.
func (s *Store) OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, error) {
	c, err := s.deviceKeyCounts(ctx, userID, deviceID)
	return maps.Clone(c.otk), err
}

// UnusedFallbackKeyTypes lists the algorithms of a device's unused fallback keys.
func (s *Store) UnusedFallbackKeyTypes(ctx context.Context, userID, deviceID string) ([]string, error) {
	c, err := s.deviceKeyCounts(ctx, userID, deviceID)
	return slices.Clone(c.fallback), err
}

// deviceKeyCounts reads both, through the deviceKeys cache.
func (s *Store) deviceKeyCounts(ctx context.Context, userID, deviceID string) (deviceKeyCounts, error) {
	return s.c.deviceKeys.GetOrLoad(userDevice{userID, deviceID}, func() (deviceKeyCounts, error) {
		otk, err := s.oneTimeKeyCounts(ctx, userID, deviceID)
		if err != nil {
			return deviceKeyCounts{}, err
		}
		fb, err := s.unusedFallbackKeyTypes(ctx, userID, deviceID)
		return deviceKeyCounts{otk: otk, fallback: fb}, err
	})
}

func (s *Store) oneTimeKeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm`, userID, deviceID)
	if err != nil {
		return nil, fmt.Errorf("storage: one-time key counts: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var alg string
		var n int
		if err := rows.Scan(&alg, &n); err != nil {
			return nil, fmt.Errorf("storage: scan one-time key count: %w", err)
		}
		out[alg] = n
	}
	return out, rows.Err()
}

func (s *Store) unusedFallbackKeyTypes(ctx context.Context, userID, deviceID string) ([]string, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT algorithm FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND used = 0 ORDER BY algorithm`, userID, deviceID)
	if err != nil {
		return nil, fmt.Errorf("storage: fallback key types: %w", err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var alg string
		if err := rows.Scan(&alg); err != nil {
			return nil, fmt.Errorf("storage: scan fallback key type: %w", err)
		}
		out = append(out, alg)
	}
	return out, rows.Err()
}

// DeviceKeys returns the stored device keys of a user's devices, by device
// ID; devices without keys are absent.
func (s *Store) DeviceKeys(ctx context.Context, userID string) (map[string][]byte, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT k.device_id, k.key_json FROM device_keys k
		JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id WHERE k.user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("storage: device keys: %w", err)
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var dev, js string
		if err := rows.Scan(&dev, &js); err != nil {
			return nil, fmt.Errorf("storage: scan device keys: %w", err)
		}
		out[dev] = []byte(js)
	}
	return out, rows.Err()
}

// ClaimOneTimeKey takes the device's oldest one-time key of algorithm (in
// upload order, MSC4225), deleting it, so each key is handed out exactly once even to concurrent
// claimers. Without one it hands out the device's fallback key, marking it
// used. It returns ErrNotFound when the device has neither.
func (s *Store) ClaimOneTimeKey(ctx context.Context, userID, deviceID, algorithm string) (*OneTimeKey, error) {
	var out *OneTimeKey
	defer s.c.deviceKeys.Remove(userDevice{userID, deviceID})
	err := s.tx(ctx, func(tx *sql.Tx) error {
		out = nil
		// Keys of a device that no longer exists (an account deactivated
		// without deleting them) are never handed out.
		var one int
		if err := tx.QueryRowContext(ctx, `SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID).Scan(&one); err != nil {
			return notFound(err, "claim one-time key")
		}
		for {
			k := OneTimeKey{Algorithm: algorithm}
			var js string
			err := tx.QueryRowContext(ctx, `SELECT key_id, key_json FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
				ORDER BY upload_seq, key_id LIMIT 1`, userID, deviceID, algorithm).Scan(&k.KeyID, &js)
			if notFound(err, "") == ErrNotFound {
				break
			}
			if err != nil {
				return fmt.Errorf("storage: claim one-time key: %w", err)
			}
			// On PostgreSQL a concurrent claimer may have deleted the row
			// after our read: the DELETE then waits for it and removes
			// nothing, and we take the next key.
			res, err := tx.ExecContext(ctx, `DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4`,
				userID, deviceID, algorithm, k.KeyID)
			if err != nil {
				return fmt.Errorf("storage: claim one-time key: %w", err)
			}
			if n, _ := res.RowsAffected(); n == 1 {
				k.JSON = []byte(js)
				out = &k
				return nil
			}
		}
		k := OneTimeKey{Algorithm: algorithm}
		var js string
		err := tx.QueryRowContext(ctx, `SELECT key_id, key_json FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3`,
			userID, deviceID, algorithm).Scan(&k.KeyID, &js)
		if err != nil {
			return notFound(err, "claim fallback key")
		}
		if _, err := tx.ExecContext(ctx, `UPDATE fallback_keys SET used = 1 WHERE user_id = $1 AND device_id = $2 AND algorithm = $3`,
			userID, deviceID, algorithm); err != nil {
			return fmt.Errorf("storage: mark fallback key used: %w", err)
		}
		k.JSON = []byte(js)
		out = &k
		return nil
	})
	return out, err
}

// CrossSigningKey is one of a user's cross-signing keys.
type CrossSigningKey struct {
	Type      string // master, self_signing, user_signing
	PublicKey string
	JSON      []byte
}

// CrossSigningKeys returns a user's cross-signing keys by type.
func (s *Store) CrossSigningKeys(ctx context.Context, userID string) (map[string]*CrossSigningKey, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT key_type, public_key, key_json FROM cross_signing_keys WHERE user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("storage: cross-signing keys: %w", err)
	}
	defer rows.Close()
	out := map[string]*CrossSigningKey{}
	for rows.Next() {
		var k CrossSigningKey
		var js string
		if err := rows.Scan(&k.Type, &k.PublicKey, &js); err != nil {
			return nil, fmt.Errorf("storage: scan cross-signing key: %w", err)
		}
		k.JSON = []byte(js)
		out[k.Type] = &k
	}
	return out, rows.Err()
}

// PutCrossSigningKeys stores a user's new cross-signing keys and records
// the device list change.
func (s *Store) PutCrossSigningKeys(ctx context.Context, userID string, keys []*CrossSigningKey) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		for _, k := range keys {
			if _, err := tx.ExecContext(ctx, `INSERT INTO cross_signing_keys (user_id, key_type, public_key, key_json) VALUES ($1, $2, $3, $4)
				ON CONFLICT (user_id, key_type) DO UPDATE SET public_key = excluded.public_key, key_json = excluded.key_json`,
				userID, k.Type, k.PublicKey, string(k.JSON)); err != nil {
				return fmt.Errorf("storage: put cross-signing key: %w", err)
			}
		}
		_, err := s.markDeviceListChange(ctx, tx, userID, "")
		return err
	})
}

// KeySignature is a signature uploaded on another key.
type KeySignature struct {
	TargetUser, TargetKey string
	SignerUser, SignerKey string
	Signature             string
}

// PutKeySignatures stores signatures and records a device list change for
// each target user. Signatures users make on their own keys (a device by
// the self-signing key, the master key by a device) are sent to the
// servers sharing a room with them; those on another user's key are for
// the signer's eyes only and are not.
func (s *Store) PutKeySignatures(ctx context.Context, sigs []KeySignature) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		users := map[string][]string{}
		for _, k := range sigs {
			if _, err := tx.ExecContext(ctx, `INSERT INTO key_signatures (target_user, target_key, signer_user, signer_key, signature) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (target_user, target_key, signer_user, signer_key) DO UPDATE SET signature = excluded.signature`,
				k.TargetUser, k.TargetKey, k.SignerUser, k.SignerKey, k.Signature); err != nil {
				return fmt.Errorf("storage: put key signature: %w", err)
			}
			devs, ok := users[k.TargetUser]
			if !ok {
				users[k.TargetUser] = nil
			}
			if k.SignerUser != k.TargetUser {
				continue
			}
			// The target is a device, or a cross-signing key ("").
			dev := k.TargetKey
			var one int
			err := tx.QueryRowContext(ctx, `SELECT 1 FROM cross_signing_keys WHERE user_id = $1 AND public_key = $2`, k.TargetUser, k.TargetKey).Scan(&one)
			if err == nil {
				dev = ""
			} else if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("storage: signed key: %w", err)
			}
			if !slices.Contains(devs, dev) {
				users[k.TargetUser] = append(devs, dev)
			}
		}
		for u, devs := range users {
			if _, err := s.markDeviceListChange(ctx, tx, u, devs...); err != nil {
				return err
			}
		}
		return nil
	})
}

// KeySignatures lists the signatures uploaded on a user's keys.
func (s *Store) KeySignatures(ctx context.Context, targetUser string) ([]KeySignature, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT target_key, signer_user, signer_key, signature FROM key_signatures WHERE target_user = $1`, targetUser)
	if err != nil {
		return nil, fmt.Errorf("storage: key signatures: %w", err)
	}
	defer rows.Close()
	var out []KeySignature
	for rows.Next() {
		k := KeySignature{TargetUser: targetUser}
		if err := rows.Scan(&k.TargetKey, &k.SignerUser, &k.SignerKey, &k.Signature); err != nil {
			return nil, fmt.Errorf("storage: scan key signature: %w", err)
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// DeviceListChangedUsers lists every user whose device list changed in
// (after, upTo]: one row a user, so no more than the users known; without
// a change after after, no query (auxmarks.go).
func (s *Store) DeviceListChangedUsers(ctx context.Context, after, upTo int64) ([]string, error) {
	if !s.deviceListMarks.after("", after) {
		return nil, nil
	}
	out, err := queryStrings(ctx, s.read, `SELECT user_id FROM device_list_changes
		WHERE stream_id > $1 AND stream_id <= $2`, after, upTo)
	if err != nil {
		return nil, fmt.Errorf("storage: device list changes: %w", err)
	}
	return out, nil
}

// UsersSharingRooms lists the users joined to a room userID is joined to,
// userID included. It reads every member of every room of userID's: for
// a few users, UsersSharingRoomWith costs less.
func (s *Store) UsersSharingRooms(ctx context.Context, userID string) ([]string, error) {
	out, err := queryStrings(ctx, s.read, `SELECT DISTINCT b.state_key FROM current_state a
		JOIN current_state b ON b.room_id = a.room_id AND b.type = 'm.room.member' AND b.membership = 'join'
		WHERE a.type = 'm.room.member' AND a.state_key = $1 AND a.membership = 'join'`, userID)
	if err != nil {
		return nil, fmt.Errorf("storage: users sharing rooms: %w", err)
	}
	if out == nil {
		out = []string{}
	}
	return out, nil
}

// UsersSharingRoomWith lists the users among candidates who are joined to
// a room userID is joined to (userID too, if among them and joined
// anywhere). It reads the candidates' rooms, not userID's: its cost does
// not grow with how many rooms, or room-mates, userID has.
func (s *Store) UsersSharingRoomWith(ctx context.Context, userID string, candidates []string) ([]string, error) {
	if len(candidates) == 0 {
		return nil, nil
	}
	cond, arg := s.inSet("b.state_key", 2, candidates)
	out, err := queryStrings(ctx, s.read, `SELECT DISTINCT b.state_key FROM current_state b
		WHERE b.type = 'm.room.member' AND b.membership = 'join' AND `+cond+`
		AND EXISTS (SELECT 1 FROM current_state a
			WHERE a.room_id = b.room_id AND a.type = 'm.room.member' AND a.state_key = $1 AND a.membership = 'join')`, userID, arg)
	if err != nil {
		return nil, fmt.Errorf("storage: users sharing a room: %w", err)
	}
	return out, nil
}

// MembershipChange is a change of a user's membership in a room's current
// state.
type MembershipChange struct {
	RoomID, UserID, Membership string
}

// MembershipChangesBetween lists the membership changes of the rooms' current
// state in (after, upTo], in stream order: membership events, and changes
// state resolution made (a member removed from the state counts as a
// leave).
func (s *Store) MembershipChangesBetween(ctx context.Context, roomIDs []string, after, upTo int64) ([]MembershipChange, error) {
	var out []MembershipChange
	if s.noDeltasAfter(after) {
		return out, nil
	}
	for start := 0; start < len(roomIDs); start += 500 {
		chunk := roomIDs[start:min(start+500, len(roomIDs))]
		args := []any{after, upTo}
		for _, r := range chunk {
			args = append(args, r)
		}
		rows, err := s.read.QueryContext(ctx, `SELECT d.room_id, d.state_key, COALESCE(e.membership, 'leave') FROM current_state_deltas d
			LEFT JOIN events e ON e.event_id = d.event_id
			WHERE d.type = 'm.room.member' AND d.stream_ordering > $1 AND d.stream_ordering <= $2 AND d.room_id IN (`+inList(3, len(chunk))+`)
			ORDER BY d.stream_ordering`, args...)
		if err != nil {
			return nil, fmt.Errorf("storage: membership changes: %w", err)
		}
		for rows.Next() {
			var m MembershipChange
			if err := rows.Scan(&m.RoomID, &m.UserID, &m.Membership); err != nil {
				rows.Close()
				return nil, fmt.Errorf("storage: scan membership change: %w", err)
			}
			out = append(out, m)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}
