package server

// SetMutualRoomsBatch makes /mutual_rooms answer n rooms at a time, so
// pagination can be tested without creating a hundred rooms.
func SetMutualRoomsBatch(s *Server, n int) { s.mutualBatch = n }
