package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// CreateAlias maps an alias to a room; ErrConflict when it is taken.
func (s *Store) CreateAlias(ctx context.Context, alias, roomID, creator string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)`, alias, roomID, creator)
		if isUnique(err) {
			return ErrConflict
		}
		if err != nil {
			return fmt.Errorf("storage: create alias: %w", err)
		}
		return nil
	})
}

// AliasRoom resolves an alias; ErrNotFound when unknown.
func (s *Store) AliasRoom(ctx context.Context, alias string) (roomID, creator string, err error) {
	err = s.read.QueryRowContext(ctx, `SELECT room_id, creator FROM room_aliases WHERE alias = $1`, alias).Scan(&roomID, &creator)
	if err != nil {
		return "", "", notFound(err, "alias")
	}
	return roomID, creator, nil
}

// DeleteAlias removes an alias; ErrNotFound when unknown.
func (s *Store) DeleteAlias(ctx context.Context, alias string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM room_aliases WHERE alias = $1`, alias)
		if err != nil {
			return fmt.Errorf("storage: delete alias: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// RoomAliases lists the local aliases of a room.
func (s *Store) RoomAliases(ctx context.Context, roomID string) ([]string, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias`, roomID)
	if err != nil {
		return nil, fmt.Errorf("storage: room aliases: %w", err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// MoveAliases points every local alias of a room at another room (a room
// upgrade).
func (s *Store) MoveAliases(ctx context.Context, fromRoom, toRoom string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE room_aliases SET room_id = $1 WHERE room_id = $2`, toRoom, fromRoom); err != nil {
			return fmt.Errorf("storage: move aliases: %w", err)
		}
		return nil
	})
}

// ForgetRoom records that the user forgot the room.
func (s *Store) ForgetRoom(ctx context.Context, userID, roomID string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO forgotten_rooms (user_id, room_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, userID, roomID)
		if err != nil {
			return fmt.Errorf("storage: forget room: %w", err)
		}
		return nil
	})
}

// IsForgotten reports whether the user forgot the room.
func (s *Store) IsForgotten(ctx context.Context, userID, roomID string) (bool, error) {
	var n int
	err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2`, userID, roomID).Scan(&n)
	return n > 0, err
}
