package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// RegistrationToken is a token that lets someone register while
// registration_requires_token is set (spec: m.login.registration_token;
// admin API: /_synapse/admin/v1/registration_tokens).
type RegistrationToken struct {
	Token       string
	UsesAllowed *int   // nil: unlimited
	Pending     int    // registrations that validated the token and are still in UIA
	Completed   int    // registrations finished with it
	ExpiryTime  *int64 // ms; nil: never
}

// Valid reports whether the token can still be used at nowMS.
func (t *RegistrationToken) Valid(nowMS int64) bool {
	if t.ExpiryTime != nil && *t.ExpiryTime <= nowMS {
		return false
	}
	if t.UsesAllowed != nil && t.Pending+t.Completed >= *t.UsesAllowed {
		return false
	}
	return true
}

func scanRegToken(row interface{ Scan(...any) error }) (*RegistrationToken, error) {
	t := &RegistrationToken{}
	var uses, exp sql.NullInt64
	if err := row.Scan(&t.Token, &uses, &t.Pending, &t.Completed, &exp); err != nil {
		return nil, err
	}
	if uses.Valid {
		n := int(uses.Int64)
		t.UsesAllowed = &n
	}
	if exp.Valid {
		e := exp.Int64
		t.ExpiryTime = &e
	}
	return t, nil
}

const regTokenColumns = `token, uses_allowed, pending, completed, expiry_time`

// CreateRegistrationToken inserts a token; ErrConflict when it exists.
func (s *Store) CreateRegistrationToken(ctx context.Context, t *RegistrationToken) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO registration_tokens (token, uses_allowed, pending, completed, expiry_time)
			VALUES ($1, $2, 0, 0, $3)`, t.Token, intPtr(t.UsesAllowed), int64Ptr(t.ExpiryTime))
		if isUnique(err) {
			return ErrConflict
		}
		if err != nil {
			return fmt.Errorf("storage: create registration token: %w", err)
		}
		return nil
	})
}

// RegistrationTokenByID returns one token.
func (s *Store) RegistrationTokenByID(ctx context.Context, token string) (*RegistrationToken, error) {
	t, err := scanRegToken(s.read.QueryRowContext(ctx, `SELECT `+regTokenColumns+` FROM registration_tokens WHERE token = $1`, token))
	if err != nil {
		return nil, notFound(err, "registration token")
	}
	return t, nil
}

// RegistrationTokens lists every token, by name.
func (s *Store) RegistrationTokens(ctx context.Context) ([]*RegistrationToken, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT `+regTokenColumns+` FROM registration_tokens ORDER BY token`)
	if err != nil {
		return nil, fmt.Errorf("storage: list registration tokens: %w", err)
	}
	defer rows.Close()
	var out []*RegistrationToken
	for rows.Next() {
		t, err := scanRegToken(rows)
		if err != nil {
			return nil, fmt.Errorf("storage: list registration tokens: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// UpdateRegistrationToken sets uses_allowed and expiry_time.
func (s *Store) UpdateRegistrationToken(ctx context.Context, token string, usesAllowed *int, expiry *int64) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE registration_tokens SET uses_allowed = $1, expiry_time = $2 WHERE token = $3`,
			intPtr(usesAllowed), int64Ptr(expiry), token)
		if err != nil {
			return fmt.Errorf("storage: update registration token: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// DeleteRegistrationToken removes a token.
func (s *Store) DeleteRegistrationToken(ctx context.Context, token string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM registration_tokens WHERE token = $1`, token)
		if err != nil {
			return fmt.Errorf("storage: delete registration token: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// ReserveRegistrationToken counts a pending use if the token is still valid,
// atomically, so two registrations cannot both take the last use.
func (s *Store) ReserveRegistrationToken(ctx context.Context, token string, nowMS int64) (bool, error) {
	ok := false
	err := s.tx(ctx, func(tx *sql.Tx) error {
		t, err := scanRegToken(tx.QueryRowContext(ctx, `SELECT `+regTokenColumns+` FROM registration_tokens WHERE token = $1`, token))
		if err != nil {
			if notFound(err, "") == ErrNotFound {
				return nil
			}
			return fmt.Errorf("storage: reserve registration token: %w", err)
		}
		if !t.Valid(nowMS) {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE registration_tokens SET pending = pending + 1 WHERE token = $1`, token); err != nil {
			return fmt.Errorf("storage: reserve registration token: %w", err)
		}
		ok = true
		return nil
	})
	return ok, err
}

// CompleteRegistrationToken turns a pending use into a completed one.
func (s *Store) CompleteRegistrationToken(ctx context.Context, token string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE registration_tokens SET pending = CASE WHEN pending > 0 THEN pending - 1 ELSE 0 END,
			completed = completed + 1 WHERE token = $1`, token)
		if err != nil {
			return fmt.Errorf("storage: complete registration token: %w", err)
		}
		return nil
	})
}

func intPtr(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

func int64Ptr(p *int64) any {
	if p == nil {
		return nil
	}
	return *p
}
