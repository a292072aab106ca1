package server

// SyncWaiters is the number of /sync requests parked in a long poll.
func SyncWaiters(s *Server) int64 { return s.notifier.waiting.Load() }

// SetInitialSyncPerRoom makes initial syncs read room by room (on) or in
// batches (off, the default).
func SetInitialSyncPerRoom(s *Server, on bool) { s.initialPerRoom.Store(on) }

// SetInitialSyncChunk makes initial syncs build n rooms at a time (0: the
// default).
func SetInitialSyncChunk(s *Server, n int) { s.initialChunk.Store(int32(n)) }
