package server

import "context"

// SetMutualRoomsBatch makes /mutual_rooms answer n rooms at a time, so
// pagination can be tested without creating a hundred rooms.
func SetMutualRoomsBatch(s *Server, n int) { s.mutualBatch = n }

// ClaimDelayedForTest leaves a delayed event as a process stopped while
// sending it would: claimed, and with sent, its event sent but its row not
// deleted.
func ClaimDelayedForTest(s *Server, ctx context.Context, delayID string, sent bool) error {
	d, err := s.store.ClaimDelayedEvent(ctx, delayID)
	if err != nil || !sent {
		return err
	}
	return s.deliverDelayed(ctx, d)
}
