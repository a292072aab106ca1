package storage

// registerBuffers lists the store's buffers on the caches page: the
// committer's queue of event writes, the read pool's prepared statements,
// and, on SQLite, the connections' page caches, which live outside the Go
// heap.
func (s *Store) registerBuffers() {
	r := s.cacheRegistry
	r.RegisterBuffer("commit_queue", "event writes waiting for the committer (group commit)", func() (int, int64) {
		return len(s.commit.queue), -1
	})
	r.RegisterBuffer("aux_marks", "per room, user or kind, the newest aux stream position written (a /sync reads only what moved)", func() (int, int64) {
		var n int
		var b int64
		for _, m := range s.auxMarks() {
			mn, mb := m.size()
			n, b = n+mn, b+mb
		}
		return n, b
	})
	r.RegisterBuffer("bump_stamps", "every room's bump stamp, sliding sync's room order (one entry a room)", s.bumps.size)
	if s.read.stmts != nil {
		r.RegisterBuffer("read_statements", "queries kept prepared on the read pool (their memory is in SQLite, not the Go heap)", func() (int, int64) {
			s.read.stmts.mu.Lock()
			defer s.read.stmts.mu.Unlock()
			return len(s.read.stmts.m), -1
		})
	}
	if s.d.Name == "sqlite" {
		r.RegisterBuffer("sqlite_page_caches", "SQLite's page caches, outside the Go heap (entries: open connections; memory: the most they may hold, cache_size each)", func() (int, int64) {
			w, rd := s.write.Stats().OpenConnections, s.read.Stats().OpenConnections
			return w + rd, int64(w*writerCacheKiB+rd*readerCacheKiB) << 10
		})
	}
}
