package storage

import (
	"context"
	"fmt"
)

// CountRooms counts the rooms this server knows.
func (s *Store) CountRooms(ctx context.Context) (int64, error) {
	return s.count(ctx, `SELECT COUNT(*) FROM rooms`, "rooms")
}

// CountEvents counts stored events, outliers included.
func (s *Store) CountEvents(ctx context.Context) (int64, error) {
	return s.count(ctx, `SELECT COUNT(*) FROM events`, "events")
}

func (s *Store) count(ctx context.Context, q, what string) (int64, error) {
	var n int64
	if err := s.read.QueryRowContext(ctx, q).Scan(&n); err != nil {
		return 0, fmt.Errorf("storage: count %s: %w", what, err)
	}
	return n, nil
}

// DatabaseSize is the database's size on disk in bytes: SQLite's pages in
// use plus free pages (the main file; the WAL comes and goes), or
// PostgreSQL's pg_database_size.
func (s *Store) DatabaseSize(ctx context.Context) (int64, error) {
	var n int64
	var err error
	if s.d.Name == "postgres" {
		err = s.read.QueryRowContext(ctx, `SELECT pg_database_size(current_database())`).Scan(&n)
	} else {
		err = s.read.QueryRowContext(ctx, `SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()`).Scan(&n)
	}
	if err != nil {
		return 0, fmt.Errorf("storage: database size: %w", err)
	}
	return n, nil
}
