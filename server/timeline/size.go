package timeline

// headSize estimates a cached room head (room_builders): the builder's
// current state events dominate it.
func headSize(roomID string, h *roomHead) int64 {
	n := int64(16+len(roomID)) + 256
	if h.builder != nil {
		n += h.builder.State.ApproxSize()
		for _, x := range h.builder.Extremities {
			n += 16 + int64(len(x))
		}
	}
	for _, x := range h.exts {
		n += 40 + int64(len(x.EventID))
	}
	return n
}
