package server

import "context"

// PushWait waits until the push evaluator has recorded the notifications of
// every event up to pos.
func PushWait(ctx context.Context, s *Server, pos int64) { s.push.WaitFor(ctx, pos) }
