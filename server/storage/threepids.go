package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// ThreePID is a third-party identifier on an account.
type ThreePID struct {
	Medium      string
	Address     string
	UserID      string
	ValidatedAt int64 // ms
	AddedAt     int64 // ms
}

// UserThreePIDs lists the user's third-party identifiers, oldest first.
func (s *Store) UserThreePIDs(ctx context.Context, userID string) ([]ThreePID, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT medium, address, user_id, validated_at, added_at
		FROM user_threepids WHERE user_id = $1 ORDER BY added_at, medium, address`, userID)
	if err != nil {
		return nil, fmt.Errorf("storage: user threepids: %w", err)
	}
	defer rows.Close()
	out := []ThreePID{}
	for rows.Next() {
		var t ThreePID
		if err := rows.Scan(&t.Medium, &t.Address, &t.UserID, &t.ValidatedAt, &t.AddedAt); err != nil {
			return nil, fmt.Errorf("storage: user threepids: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// ThreePIDUser returns the account holding the identifier, or ErrNotFound.
func (s *Store) ThreePIDUser(ctx context.Context, medium, address string) (string, error) {
	var userID string
	err := s.read.QueryRowContext(ctx, `SELECT user_id FROM user_threepids WHERE medium = $1 AND address = $2`,
		medium, address).Scan(&userID)
	if err != nil {
		return "", notFound(err, "threepid user")
	}
	return userID, nil
}

// AddThreePID puts the identifier on t.UserID's account. Adding one the
// account already holds refreshes its validation time; ErrConflict when
// another account holds it.
func (s *Store) AddThreePID(ctx context.Context, t ThreePID) error {
	return s.tx(ctx, func(tx *sql.Tx) error { return addThreePID(ctx, tx, t) })
}

func addThreePID(ctx context.Context, tx *sql.Tx, t ThreePID) error {
	var owner string
	err := tx.QueryRowContext(ctx, `SELECT user_id FROM user_threepids WHERE medium = $1 AND address = $2`,
		t.Medium, t.Address).Scan(&owner)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		_, err = tx.ExecContext(ctx, `INSERT INTO user_threepids (medium, address, user_id, validated_at, added_at)
			VALUES ($1, $2, $3, $4, $5)`, t.Medium, t.Address, t.UserID, t.ValidatedAt, t.AddedAt)
		if isUnique(err) {
			return ErrConflict
		}
		if err != nil {
			return fmt.Errorf("storage: add threepid: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("storage: add threepid: %w", err)
	case owner != t.UserID:
		return ErrConflict
	}
	if _, err := tx.ExecContext(ctx, `UPDATE user_threepids SET validated_at = $1 WHERE medium = $2 AND address = $3`,
		t.ValidatedAt, t.Medium, t.Address); err != nil {
		return fmt.Errorf("storage: add threepid: %w", err)
	}
	return nil
}

// DeleteThreePID removes the identifier from the user's account; false
// when the account did not hold it.
func (s *Store) DeleteThreePID(ctx context.Context, userID, medium, address string) (bool, error) {
	res, err := s.write.ExecContext(ctx, `DELETE FROM user_threepids WHERE user_id = $1 AND medium = $2 AND address = $3`,
		userID, medium, address)
	if err != nil {
		return false, fmt.Errorf("storage: delete threepid: %w", err)
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// SetUserThreePIDs replaces the user's identifiers with ts (the admin
// API's PUT): ErrConflict, and no change, when another account holds one.
func (s *Store) SetUserThreePIDs(ctx context.Context, userID string, ts []ThreePID) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM user_threepids WHERE user_id = $1`, userID); err != nil {
			return fmt.Errorf("storage: set threepids: %w", err)
		}
		for _, t := range ts {
			t.UserID = userID
			if err := addThreePID(ctx, tx, t); err != nil {
				return err
			}
		}
		return nil
	})
}

// ThreePIDSession is a validation session of a requestToken endpoint.
type ThreePIDSession struct {
	ID              string
	Purpose         string // register, add, password
	Medium          string
	Address         string
	ClientSecret    string
	LastSendAttempt int64
	NextLink        string
	TokenHash       string // SHA-256 of the emailed token (HashToken)
	TokenExpires    int64  // ms
	ValidatedAt     int64  // ms; 0 until validated
	Created         int64  // ms
}

const threePIDSessionCols = `session_id, purpose, medium, address, client_secret, last_send_attempt, next_link,
	token_hash, token_expires, validated_at, created`

func scanThreePIDSession(row interface{ Scan(...any) error }) (*ThreePIDSession, error) {
	t := &ThreePIDSession{}
	err := row.Scan(&t.ID, &t.Purpose, &t.Medium, &t.Address, &t.ClientSecret, &t.LastSendAttempt, &t.NextLink,
		&t.TokenHash, &t.TokenExpires, &t.ValidatedAt, &t.Created)
	return t, err
}

// ThreePIDSessionByID returns a session, or ErrNotFound.
func (s *Store) ThreePIDSessionByID(ctx context.Context, id string) (*ThreePIDSession, error) {
	t, err := scanThreePIDSession(s.read.QueryRowContext(ctx, `SELECT `+threePIDSessionCols+`
		FROM threepid_sessions WHERE session_id = $1`, id))
	if err != nil {
		return nil, notFound(err, "threepid session")
	}
	return t, nil
}

// ThreePIDSessionBySecret returns the session a client started for the
// address with its client secret, or ErrNotFound.
func (s *Store) ThreePIDSessionBySecret(ctx context.Context, purpose, medium, address, clientSecret string) (*ThreePIDSession, error) {
	t, err := scanThreePIDSession(s.read.QueryRowContext(ctx, `SELECT `+threePIDSessionCols+`
		FROM threepid_sessions WHERE purpose = $1 AND medium = $2 AND address = $3 AND client_secret = $4`,
		purpose, medium, address, clientSecret))
	if err != nil {
		return nil, notFound(err, "threepid session")
	}
	return t, nil
}

// CreateThreePIDSession stores a new session; ErrConflict when the
// client already has one for the address (a concurrent request made it).
func (s *Store) CreateThreePIDSession(ctx context.Context, t *ThreePIDSession) error {
	_, err := s.write.ExecContext(ctx, `INSERT INTO threepid_sessions (`+threePIDSessionCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		t.ID, t.Purpose, t.Medium, t.Address, t.ClientSecret, t.LastSendAttempt, t.NextLink,
		t.TokenHash, t.TokenExpires, t.ValidatedAt, t.Created)
	if isUnique(err) {
		return ErrConflict
	}
	if err != nil {
		return fmt.Errorf("storage: create threepid session: %w", err)
	}
	return nil
}

// RenewThreePIDSessionToken records a new send attempt with a new token.
// It applies only while sendAttempt is above the stored one, so of two
// concurrent requests with the same attempt one sends; false when it did
// not apply.
func (s *Store) RenewThreePIDSessionToken(ctx context.Context, id string, sendAttempt int64, nextLink, tokenHash string, expires int64) (bool, error) {
	res, err := s.write.ExecContext(ctx, `UPDATE threepid_sessions SET last_send_attempt = $1, next_link = $2,
		token_hash = $3, token_expires = $4 WHERE session_id = $5 AND last_send_attempt < $1`,
		sendAttempt, nextLink, tokenHash, expires, id)
	if err != nil {
		return false, fmt.Errorf("storage: renew threepid token: %w", err)
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// MarkThreePIDSessionValidated records that the session's token came back.
func (s *Store) MarkThreePIDSessionValidated(ctx context.Context, id string, nowMS int64) error {
	if _, err := s.write.ExecContext(ctx, `UPDATE threepid_sessions SET validated_at = $1
		WHERE session_id = $2 AND validated_at = 0`, nowMS, id); err != nil {
		return fmt.Errorf("storage: validate threepid session: %w", err)
	}
	return nil
}

// DeleteThreePIDSession removes a session, once used; false when it was
// already gone (another request used it first).
func (s *Store) DeleteThreePIDSession(ctx context.Context, id string) (bool, error) {
	res, err := s.write.ExecContext(ctx, `DELETE FROM threepid_sessions WHERE session_id = $1`, id)
	if err != nil {
		return false, fmt.Errorf("storage: delete threepid session: %w", err)
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// ExpireThreePIDSessions drops sessions created before beforeMS.
func (s *Store) ExpireThreePIDSessions(ctx context.Context, beforeMS int64) error {
	if _, err := s.write.ExecContext(ctx, `DELETE FROM threepid_sessions WHERE created < $1`, beforeMS); err != nil {
		return fmt.Errorf("storage: expire threepid sessions: %w", err)
	}
	return nil
}
