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
	// RefreshTokenID is the refresh token issued with this access token
	// (0: none). FirstUse is set while the refresh token this pair replaced
	// is still kept for a retry: the first request with this token retires
	// it (RetireReplacedRefreshToken).
	RefreshTokenID int64
	FirstUse       bool
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
		_, err := insertTokens(ctx, tx, l)
		return err
	})
}

// insertTokens inserts the access token and, when there is one, the
// refresh token; it returns the refresh token's ID (0: none).
func insertTokens(ctx context.Context, tx *sql.Tx, l NewLogin) (int64, error) {
	var refreshID sql.NullInt64
	if l.RefreshToken != "" {
		err := tx.QueryRowContext(ctx, `INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts, expires_ts)
			VALUES ($1, $2, $3, $4, $5) RETURNING id`, HashToken(l.RefreshToken), l.UserID, l.DeviceID, nowMS(), nullInt(l.RefreshExpiresTS)).Scan(&refreshID)
		if err != nil {
			return 0, fmt.Errorf("storage: insert refresh token: %w", err)
		}
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts, refresh_token_id, puppet_by)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, HashToken(l.AccessToken), l.UserID, l.DeviceID, nowMS(), nullInt(l.AccessExpiresTS), refreshID, nullStr(l.PuppetBy))
	if err != nil {
		return 0, fmt.Errorf("storage: insert access token: %w", err)
	}
	return refreshID.Int64, nil
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
	var exp, refresh sql.NullInt64
	var puppet sql.NullString
	var firstUse int
	err := s.read.QueryRowContext(ctx, `SELECT a.id, a.user_id, a.device_id, a.expires_ts, a.puppet_by, a.refresh_token_id,
			CASE WHEN a.refresh_token_id IS NOT NULL AND EXISTS (SELECT 1 FROM refresh_tokens p WHERE p.next_token_id = a.refresh_token_id)
			THEN 1 ELSE 0 END
		FROM access_tokens a WHERE a.token_hash = $1`,
		HashToken(token)).Scan(&se.TokenID, &se.UserID, &se.DeviceID, &exp, &puppet, &refresh, &firstUse)
	if err != nil {
		return nil, notFound(err, "access token")
	}
	se.ExpiresTS, se.PuppetBy, se.RefreshTokenID, se.FirstUse = exp.Int64, puppet.String, refresh.Int64, firstUse == 1
	return se, nil
}

// RetireReplacedRefreshToken forgets the refresh token that the session's
// pair replaced, now that the new pair has been used: from here on the old
// refresh token no longer works (see RefreshSession). token is the access
// token, whose cached session is reloaded on its next use.
func (s *Store) RetireReplacedRefreshToken(ctx context.Context, token string, refreshID int64) error {
	defer s.c.sessions.Remove(HashToken(token))
	if _, err := s.write.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE next_token_id = $1`, refreshID); err != nil {
		return fmt.Errorf("storage: retire replaced refresh token: %w", err)
	}
	return nil
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

// RefreshSession exchanges a refresh token for a new pair. The access
// token issued with the old refresh token is revoked at once; the old
// refresh token itself is kept, marked with the pair it was exchanged for,
// until that pair is first used (RetireReplacedRefreshToken, or its refresh
// token exchanged here). Until then
// presenting it again — a client retrying a refresh whose response it lost
// (spec: "it MUST ensure that the client is able to retry the refresh
// request") — replaces that unused pair with a new one; afterwards it is
// unknown.
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
		if exp.Valid && exp.Int64 <= nowMS() {
			return ErrRefreshExpired
		}
		// Using this token retires the one it replaced, if still kept.
		if _, err := tx.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE next_token_id = $1`, id); err != nil {
			return fmt.Errorf("storage: retire replaced refresh token: %w", err)
		}
		// The pair to replace: the one issued with this token, or, on a
		// retry, the unused one it was already exchanged for.
		replaced := id
		if used.Valid {
			replaced = used.Int64
			if _, err := tx.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE id = $1`, replaced); err != nil {
				return fmt.Errorf("storage: revoke unused refresh token: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM access_tokens WHERE refresh_token_id = $1`, replaced); err != nil {
			return fmt.Errorf("storage: revoke old access token: %w", err)
		}
		next.UserID, next.DeviceID = userID, deviceID
		newID, err := insertTokens(ctx, tx, next)
		if err != nil {
			return err
		}
		if newID == 0 {
			// Not refreshable any more: the old token has nothing to wait for.
			_, err = tx.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE id = $1`, id)
		} else {
			_, err = tx.ExecContext(ctx, `UPDATE refresh_tokens SET next_token_id = $1 WHERE id = $2`, newID, id)
		}
		if err != nil {
			return fmt.Errorf("storage: mark refresh token exchanged: %w", err)
		}
		return nil
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
