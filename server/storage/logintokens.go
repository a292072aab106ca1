package storage

import (
	"context"
	"fmt"
)

// AddLoginToken stores an m.login.token token for the user, valid until
// expiresTS; expired tokens are dropped on the way.
func (s *Store) AddLoginToken(ctx context.Context, token, userID string, expiresTS, nowTS int64) error {
	if _, err := s.write.ExecContext(ctx, `DELETE FROM login_tokens WHERE expires_ts <= $1`, nowTS); err != nil {
		return fmt.Errorf("storage: expire login tokens: %w", err)
	}
	if _, err := s.write.ExecContext(ctx, `INSERT INTO login_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)`,
		HashToken(token), userID, expiresTS); err != nil {
		return fmt.Errorf("storage: add login token: %w", err)
	}
	return nil
}

// ConsumeLoginToken spends a login token: it returns the user it logs in,
// once, and ErrNotFound for a token that is unknown, already used or
// expired at nowTS. Deleting the row is what spends it, so two logins
// racing with one token cannot both succeed.
func (s *Store) ConsumeLoginToken(ctx context.Context, token string, nowTS int64) (string, error) {
	var userID string
	var expires int64
	err := s.write.QueryRowContext(ctx, `DELETE FROM login_tokens WHERE token_hash = $1 RETURNING user_id, expires_ts`,
		HashToken(token)).Scan(&userID, &expires)
	if err != nil {
		return "", notFound(err, "login token")
	}
	if expires <= nowTS {
		return "", ErrNotFound
	}
	return userID, nil
}
