package storage

import (
	"context"
	"fmt"
)

// AddOpenIDToken stores an OpenID token of the user, valid until
// expiresTS; expired ones are dropped on the way.
func (s *Store) AddOpenIDToken(ctx context.Context, token, userID string, expiresTS, nowTS int64) error {
	if _, err := s.write.ExecContext(ctx, `DELETE FROM openid_tokens WHERE expires_ts <= $1`, nowTS); err != nil {
		return fmt.Errorf("storage: expire openid tokens: %w", err)
	}
	if _, err := s.write.ExecContext(ctx, `INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)`,
		HashToken(token), userID, expiresTS); err != nil {
		return fmt.Errorf("storage: add openid token: %w", err)
	}
	return nil
}

// OpenIDTokenUser returns the user an OpenID token still valid at nowTS
// belongs to, or ErrNotFound.
func (s *Store) OpenIDTokenUser(ctx context.Context, token string, nowTS int64) (string, error) {
	var userID string
	err := s.read.QueryRowContext(ctx, `SELECT user_id FROM openid_tokens WHERE token_hash = $1 AND expires_ts > $2`,
		HashToken(token), nowTS).Scan(&userID)
	if err != nil {
		return "", notFound(err, "openid token")
	}
	return userID, nil
}
