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

// TakeAuxInTx takes an aux stream position in a write transaction and
// calls inside with it while the transaction is open; the transaction
// commits unless inside returns an error.
func (s *Store) TakeAuxInTx(ctx context.Context, inside func(id int64) error) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		id, err := s.nextAuxID(ctx, tx, "test")
		if err != nil {
			return err
		}
		return inside(id)
	})
}

// NoDeltasAfter is noDeltasAfter (statedeltas.go).
func (s *Store) NoDeltasAfter(pos int64) bool { return s.noDeltasAfter(pos) }
