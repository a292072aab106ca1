package server

// SyncWaiters is the number of /sync requests parked in a long poll.
func SyncWaiters(s *Server) int64 { return s.notifier.waiting.Load() }
