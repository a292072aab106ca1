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

// GroupAuxTx is groupTx with an aux stream position taken in the write
// and handed to inside with the transaction.
func (s *Store) GroupAuxTx(ctx context.Context, inside func(tx *sql.Tx, id int64) error, committed func()) error {
	return s.groupTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		id, err := s.nextAuxID(ctx, tx, "test")
		if err != nil {
			return err
		}
		return inside(tx, id)
	}, committed)
}

// QueuedWrites is how many writes wait for the committer.
func (s *Store) QueuedWrites() int { return len(s.commit.queue) }
