package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// CreateFilter stores a user's filter definition and returns its ID.
func (s *Store) CreateFilter(ctx context.Context, userID string, def []byte) (int64, error) {
	var id int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `INSERT INTO filters (user_id, json) VALUES ($1, $2) RETURNING id`, userID, string(def)).Scan(&id); err != nil {
			return fmt.Errorf("storage: create filter: %w", err)
		}
		return nil
	})
	return id, err
}

// Filter returns a filter the user created, or ErrNotFound.
func (s *Store) Filter(ctx context.Context, userID string, id int64) ([]byte, error) {
	var def string
	err := s.read.QueryRowContext(ctx, `SELECT json FROM filters WHERE id = $1 AND user_id = $2`, id, userID).Scan(&def)
	if err != nil {
		return nil, notFound(err, "filter")
	}
	return []byte(def), nil
}
