package storage

import "database/sql"

// DB is the writer's pool, for tests that change the schema underneath.
func (s *Store) DB() *sql.DB { return s.write }
