package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// UIA sessions (spec: Client-Server API, "User-interactive authentication
// API") live in the database so a client may finish a flow on another worker
// or after a restart. The server owns the JSON in data; storage only keeps it.

// SaveUIASession creates the session, or replaces its data when it exists
// (created_ts is kept, so a session's age counts from its first request).
func (s *Store) SaveUIASession(ctx context.Context, id, data string, createdMS int64) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO uia_sessions (session_id, created_ts, data) VALUES ($1, $2, $3)
			ON CONFLICT (session_id) DO UPDATE SET data = excluded.data`, id, createdMS, data)
		if err != nil {
			return fmt.Errorf("storage: save UIA session: %w", err)
		}
		return nil
	})
}

// UIASession returns a session's data and creation time, or ErrNotFound.
func (s *Store) UIASession(ctx context.Context, id string) (data string, createdMS int64, err error) {
	err = s.read.QueryRowContext(ctx, `SELECT data, created_ts FROM uia_sessions WHERE session_id = $1`, id).Scan(&data, &createdMS)
	if err != nil {
		return "", 0, notFound(err, "UIA session")
	}
	return data, createdMS, nil
}

// DeleteUIASession removes a session (absent is fine).
func (s *Store) DeleteUIASession(ctx context.Context, id string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM uia_sessions WHERE session_id = $1`, id); err != nil {
			return fmt.Errorf("storage: delete UIA session: %w", err)
		}
		return nil
	})
}

// ExpireUIASessions deletes the sessions created before beforeMS and returns
// their data, so the caller can release what they held (a reserved
// registration token).
func (s *Store) ExpireUIASessions(ctx context.Context, beforeMS int64) ([]string, error) {
	var out []string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `DELETE FROM uia_sessions WHERE created_ts < $1 RETURNING data`, beforeMS)
		if err != nil {
			return fmt.Errorf("storage: expire UIA sessions: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var d string
			if err := rows.Scan(&d); err != nil {
				return fmt.Errorf("storage: expire UIA sessions: %w", err)
			}
			out = append(out, d)
		}
		return rows.Err()
	})
	return out, err
}

// ReleaseRegistrationToken gives back a pending use that never completed
// (its UIA session expired), so the use can be taken again.
func (s *Store) ReleaseRegistrationToken(ctx context.Context, token string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE registration_tokens SET pending = pending - 1 WHERE token = $1 AND pending > 0`, token)
		if err != nil {
			return fmt.Errorf("storage: release registration token: %w", err)
		}
		return nil
	})
}

// MaxNumericLocalpart returns the largest all-digit localpart in use, or 0.
// Registration without a username takes the next number, as Synapse does.
func (s *Store) MaxNumericLocalpart(ctx context.Context) (int64, error) {
	// "All digits" portably: nothing is left once every digit is removed.
	// (Range comparisons would depend on the PostgreSQL collation.)
	expr := "localpart"
	for d := '0'; d <= '9'; d++ {
		expr = "REPLACE(" + expr + ", '" + string(d) + "', '')"
	}
	rows, err := s.read.QueryContext(ctx, `SELECT localpart FROM users WHERE `+expr+` = ''`)
	if err != nil {
		return 0, fmt.Errorf("storage: numeric localparts: %w", err)
	}
	defer rows.Close()
	var max int64
	for rows.Next() {
		var lp string
		if err := rows.Scan(&lp); err != nil {
			return 0, fmt.Errorf("storage: numeric localparts: %w", err)
		}
		if len(lp) > 18 { // would overflow; nobody registers that many
			continue
		}
		var n int64
		for _, c := range lp {
			n = n*10 + int64(c-'0')
		}
		if n > max {
			max = n
		}
	}
	return max, rows.Err()
}
