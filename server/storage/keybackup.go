package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// Server-side key backups (spec: "Server-side key backups"): versions of a
// user's backup, and the encrypted Megolm session keys in each. Each change
// to a version's keys bumps its etag.

// BackupVersion is one backup version.
type BackupVersion struct {
	Version   int64
	Algorithm string
	AuthData  []byte
	ETag      int64
	Count     int64
}

// BackupKey is one backed-up session key.
type BackupKey struct {
	RoomID, SessionID string
	FirstMessageIndex int64
	ForwardedCount    int64
	IsVerified        bool
	SessionData       []byte
}

// CreateBackupVersion adds a version, numbered after every earlier one,
// deleted or not, and returns its number.
func (s *Store) CreateBackupVersion(ctx context.Context, userID, algorithm string, authData []byte) (int64, error) {
	var v int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var max sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT MAX(version) FROM backup_versions WHERE user_id = $1`, userID).Scan(&max); err != nil {
			return fmt.Errorf("storage: backup versions: %w", err)
		}
		v = max.Int64 + 1
		if _, err := tx.ExecContext(ctx, `INSERT INTO backup_versions (user_id, version, algorithm, auth_data) VALUES ($1, $2, $3, $4)`,
			userID, v, algorithm, string(authData)); err != nil {
			return fmt.Errorf("storage: create backup version: %w", err)
		}
		return nil
	})
	return v, err
}

// BackupVersionOf returns a version, or the newest when version is 0;
// ErrNotFound when there is none or it was deleted.
func (s *Store) BackupVersionOf(ctx context.Context, userID string, version int64) (*BackupVersion, error) {
	q := `SELECT version, algorithm, auth_data, etag FROM backup_versions WHERE user_id = $1 AND deleted = 0 AND version = $2`
	args := []any{userID, version}
	if version == 0 {
		q = `SELECT version, algorithm, auth_data, etag FROM backup_versions WHERE user_id = $1 AND deleted = 0 ORDER BY version DESC LIMIT 1`
		args = args[:1]
	}
	var b BackupVersion
	var auth string
	if err := s.read.QueryRowContext(ctx, q, args...).Scan(&b.Version, &b.Algorithm, &auth, &b.ETag); err != nil {
		return nil, notFound(err, "backup version")
	}
	b.AuthData = []byte(auth)
	if err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM backup_keys WHERE user_id = $1 AND version = $2`, userID, b.Version).Scan(&b.Count); err != nil {
		return nil, fmt.Errorf("storage: count backup keys: %w", err)
	}
	return &b, nil
}

// UpdateBackupAuthData replaces a live version's auth_data.
func (s *Store) UpdateBackupAuthData(ctx context.Context, userID string, version int64, authData []byte) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE backup_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2 AND deleted = 0`,
			userID, version, string(authData))
		if err != nil {
			return fmt.Errorf("storage: update backup version: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// DeleteBackupVersion marks a version deleted and drops its keys.
func (s *Store) DeleteBackupVersion(ctx context.Context, userID string, version int64) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE backup_versions SET deleted = 1 WHERE user_id = $1 AND version = $2 AND deleted = 0`, userID, version)
		if err != nil {
			return fmt.Errorf("storage: delete backup version: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM backup_keys WHERE user_id = $1 AND version = $2`, userID, version); err != nil {
			return fmt.Errorf("storage: delete backup keys: %w", err)
		}
		return nil
	})
}

// betterBackupKey reports whether n should replace old (spec: "Storing
// keys"): a verified key beats an unverified one; then the lower
// first_message_index wins; then the lower forwarded_count.
func betterBackupKey(n, old *BackupKey) bool {
	if n.IsVerified != old.IsVerified {
		return n.IsVerified
	}
	if n.FirstMessageIndex != old.FirstMessageIndex {
		return n.FirstMessageIndex < old.FirstMessageIndex
	}
	return n.ForwardedCount < old.ForwardedCount
}

// PutBackupKeys stores keys in a version, each replacing the stored key of
// its session only when it is better, and bumps the etag if anything
// changed.
func (s *Store) PutBackupKeys(ctx context.Context, userID string, version int64, keys []BackupKey) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		changed := false
		for i := range keys {
			k := &keys[i]
			old := BackupKey{}
			var verified int
			err := tx.QueryRowContext(ctx, `SELECT first_message_index, forwarded_count, is_verified FROM backup_keys
				WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4`, userID, version, k.RoomID, k.SessionID).
				Scan(&old.FirstMessageIndex, &old.ForwardedCount, &verified)
			switch {
			case err == nil:
				old.IsVerified = verified != 0
				if !betterBackupKey(k, &old) {
					continue
				}
			case notFound(err, "") != ErrNotFound:
				return fmt.Errorf("storage: read backup key: %w", err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO backup_keys (user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
				ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET first_message_index = excluded.first_message_index,
					forwarded_count = excluded.forwarded_count, is_verified = excluded.is_verified, session_data = excluded.session_data`,
				userID, version, k.RoomID, k.SessionID, k.FirstMessageIndex, k.ForwardedCount, boolInt(k.IsVerified), string(k.SessionData)); err != nil {
				return fmt.Errorf("storage: put backup key: %w", err)
			}
			changed = true
		}
		if changed {
			if _, err := tx.ExecContext(ctx, `UPDATE backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2`, userID, version); err != nil {
				return fmt.Errorf("storage: bump backup etag: %w", err)
			}
		}
		return nil
	})
}

// BackupKeys lists a version's keys, optionally of one room or one session.
func (s *Store) BackupKeys(ctx context.Context, userID string, version int64, roomID, sessionID string) ([]BackupKey, error) {
	q := `SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data FROM backup_keys
		WHERE user_id = $1 AND version = $2`
	args := []any{userID, version}
	if roomID != "" {
		q += ` AND room_id = $3`
		args = append(args, roomID)
		if sessionID != "" {
			q += ` AND session_id = $4`
			args = append(args, sessionID)
		}
	}
	rows, err := s.read.QueryContext(ctx, q+` ORDER BY room_id, session_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: backup keys: %w", err)
	}
	defer rows.Close()
	var out []BackupKey
	for rows.Next() {
		var k BackupKey
		var verified int
		var data string
		if err := rows.Scan(&k.RoomID, &k.SessionID, &k.FirstMessageIndex, &k.ForwardedCount, &verified, &data); err != nil {
			return nil, fmt.Errorf("storage: scan backup key: %w", err)
		}
		k.IsVerified, k.SessionData = verified != 0, []byte(data)
		out = append(out, k)
	}
	return out, rows.Err()
}

// DeleteBackupKeys deletes a version's keys, optionally of one room or one
// session, and bumps the etag.
func (s *Store) DeleteBackupKeys(ctx context.Context, userID string, version int64, roomID, sessionID string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		q := `DELETE FROM backup_keys WHERE user_id = $1 AND version = $2`
		args := []any{userID, version}
		if roomID != "" {
			q += ` AND room_id = $3`
			args = append(args, roomID)
			if sessionID != "" {
				q += ` AND session_id = $4`
				args = append(args, sessionID)
			}
		}
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("storage: delete backup keys: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2`, userID, version); err != nil {
			return fmt.Errorf("storage: bump backup etag: %w", err)
		}
		return nil
	})
}
