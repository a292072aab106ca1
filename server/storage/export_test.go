package storage

import "database/sql"

// DB is the writer's pool, for tests that change the schema underneath.
func (s *Store) DB() *sql.DB { return s.write }

// ReadDB is the read pool, for tests that check it cannot write.
func (s *Store) ReadDB() *sql.DB { return s.read.DB }
