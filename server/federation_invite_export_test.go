package server

import (
	"context"
	"encoding/json"
)

// InviteRoomState is the invite_room_state s sends with an invite to
// roomID.
func InviteRoomState(s *Server, ctx context.Context, roomID string) ([]json.RawMessage, error) {
	return s.inviteRoomState(ctx, roomID)
}
