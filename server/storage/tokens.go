package storage

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
)

// HashToken is how tokens are stored: hex SHA-256. Tokens are 256-bit random
// values, so a plain hash is enough; a database leak does not leak sessions.
func HashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// Session is what an access token resolves to.
type Session struct {
	TokenID   int64
	UserID    string
	DeviceID  string
	ExpiresTS int64 // 0: never
	PuppetBy  string
}

// NewLogin describes a login: the device to create or reuse and the tokens
// to issue for it.
type NewLogin struct {
	UserID, DeviceID, DeviceDisplayName string
	IP, UserAgent                       string
	AccessToken                         string
	AccessExpiresTS                     int64  // 0: never
	RefreshToken                        string // "": not refreshable
	RefreshExpiresTS                    int64
	PuppetBy                            string
	// ReplaceDevice: when the client reuses a device ID, its old tokens are
	// revoked (spec: logging in with an existing device_id invalidates the
	// previous access token for that device).
	ReplaceDevice bool
	// Grant, for a session obtained through the OAuth 2.0 API, records the
	// client and scope it was granted to (oauth.go).
	Grant *OAuthGrant
}

// CreateLogin creates or reuses the device and issues its tokens atomically.
func (s *Store) CreateLogin(ctx context.Context, l NewLogin) error {
	if l.ReplaceDevice {
		defer s.tokensRevoked(l.UserID, l.DeviceID)
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		if err := upsertDevice(ctx, tx, &Device{UserID: l.UserID, DeviceID: l.DeviceID, DisplayName: l.DeviceDisplayName,
			LastSeenIP: l.IP, LastSeenUserAgent: l.UserAgent}); err != nil {
			return err
		}
		if l.ReplaceDevice {
			for _, t := range []string{"access_tokens", "refresh_tokens"} {
				if _, err := tx.ExecContext(ctx, `DELETE FROM `+t+` WHERE user_id = $1 AND device_id = $2`, l.UserID, l.DeviceID); err != nil {
					return fmt.Errorf("storage: revoke device tokens: %w", err)
				}
			}
		}
		if l.Grant != nil {
			g := *l.Grant
			g.UserID, g.DeviceID = l.UserID, l.DeviceID
			if err := upsertOAuthGrant(ctx, tx, &g); err != nil {
				return err
			}
		}
		return insertTokens(ctx, tx, l)
	})
}

func insertTokens(ctx context.Context, tx *sql.Tx, l NewLogin) error {
	var refreshID sql.NullInt64
	if l.RefreshToken != "" {
		err := tx.QueryRowContext(ctx, `INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts, expires_ts)
			VALUES ($1, $2, $3, $4, $5) RETURNING id`, HashToken(l.RefreshToken), l.UserID, l.DeviceID, nowMS(), nullInt(l.RefreshExpiresTS)).Scan(&refreshID)
		if err != nil {
			return fmt.Errorf("storage: insert refresh token: %w", err)
		}
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts, refresh_token_id, puppet_by)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, HashToken(l.AccessToken), l.UserID, l.DeviceID, nowMS(), nullInt(l.AccessExpiresTS), refreshID, nullStr(l.PuppetBy))
	if err != nil {
		return fmt.Errorf("storage: insert access token: %w", err)
	}
	return nil
}

// SessionByToken resolves an access token, through the access_tokens cache.
func (s *Store) SessionByToken(ctx context.Context, token string) (*Session, error) {
	se, err := s.c.sessions.GetOrLoad(HashToken(token), func() (Session, error) {
		se, err := s.sessionByToken(ctx, token)
		if err != nil {
			return Session{}, err
		}
		return *se, nil
	})
	if err != nil {
		return nil, err
	}
	return &se, nil
}

func (s *Store) sessionByToken(ctx context.Context, token string) (*Session, error) {
	se := &Session{}
	var exp sql.NullInt64
	var puppet sql.NullString
	err := s.read.QueryRowContext(ctx, `SELECT id, user_id, device_id, expires_ts, puppet_by FROM access_tokens WHERE token_hash = $1`,
		HashToken(token)).Scan(&se.TokenID, &se.UserID, &se.DeviceID, &exp, &puppet)
	if err != nil {
		return nil, notFound(err, "access token")
	}
	se.ExpiresTS, se.PuppetBy = exp.Int64, puppet.String
	return se, nil
}

// DeleteAccessToken revokes one access token and the refresh token issued
// with it (logout).
func (s *Store) DeleteAccessToken(ctx context.Context, tokenID int64) error {
	defer s.c.sessions.RemoveFunc(func(_ string, se Session) bool { return se.TokenID == tokenID })
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE id IN (SELECT refresh_token_id FROM access_tokens WHERE id = $1)`, tokenID); err != nil {
			return fmt.Errorf("storage: revoke refresh token: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM access_tokens WHERE id = $1`, tokenID); err != nil {
			return fmt.Errorf("storage: revoke access token: %w", err)
		}
		return nil
	})
}

// ErrRefreshExpired is returned when a refresh token exists but has expired.
var ErrRefreshExpired = errors.New("storage: refresh token expired")

// RefreshSession exchanges a refresh token for a new pair. Hearth makes a
// refresh token single-use and revokes the access token issued with it in
// the same transaction. (The spec lets the old refresh token live until the
// new pair is first used; that grace is not implemented yet.)
func (s *Store) RefreshSession(ctx context.Context, oldRefresh string, next NewLogin) (userID, deviceID string, err error) {
	err = s.tx(ctx, func(tx *sql.Tx) error {
		var id int64
		var exp sql.NullInt64
		var used sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT id, user_id, device_id, expires_ts, next_token_id FROM refresh_tokens WHERE token_hash = $1`,
			HashToken(oldRefresh)).Scan(&id, &userID, &deviceID, &exp, &used)
		if err != nil {
			return notFound(err, "refresh token")
		}
		if used.Valid {
			return ErrNotFound
		}
		if exp.Valid && exp.Int64 <= nowMS() {
			return ErrRefreshExpired
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM access_tokens WHERE refresh_token_id = $1`, id); err != nil {
			return fmt.Errorf("storage: revoke old access token: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE id = $1`, id); err != nil {
			return fmt.Errorf("storage: revoke old refresh token: %w", err)
		}
		next.UserID, next.DeviceID = userID, deviceID
		return insertTokens(ctx, tx, next)
	})
	if userID != "" {
		s.tokensRevoked(userID, deviceID)
	}
	return userID, deviceID, err
}

// DeleteUserTokens revokes every token of a user, optionally keeping one
// device's (password change with logout_devices keeps the caller's).
// When deleteDevices is set the devices go too.
func (s *Store) DeleteUserTokens(ctx context.Context, userID, keepDevice string, deleteDevices bool) error {
	defer s.tokensRevoked(userID) // the kept device's session is simply reloaded
	return s.tx(ctx, func(tx *sql.Tx) error {
		// The devices' pushers go even when the devices stay (an admin's
		// password reset): Synapse deletes them with the sessions.
		tables := []string{"access_tokens", "refresh_tokens", "pushers"}
		if deleteDevices {
			tables = append(tables, "devices", "oauth_grants")
		}
		for _, t := range tables {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+t+` WHERE user_id = $1 AND device_id <> $2`, userID, keepDevice); err != nil {
				return fmt.Errorf("storage: revoke tokens of %s: %w", userID, err)
			}
		}
		return nil
	})
}

func nullInt(v int64) any {
	if v == 0 {
		return nil
	}
	return v
}
