package storage

import (
	"context"
	"database/sql"
)

// DB is the writer's pool, for tests that change the schema underneath.
func (s *Store) DB() *sql.DB { return s.write }

// ReadDB is the read pool, for tests that check it cannot write.
func (s *Store) ReadDB() *sql.DB { return s.read.DB }

// CumAt is cumAt, for tests of its cache.
func (s *Store) CumAt(ctx context.Context, user, room, thread string, pos int64) (int64, int64, error) {
	return s.cumAt(ctx, ThreadHead{UserID: user, RoomID: room, ThreadID: thread}, pos)
}
