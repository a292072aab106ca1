package rooms

// ApproxSize estimates the memory an event holds, for cache accounting:
// its JSON, about as much again for the fields parsed from it, and the
// struct. Not exact; good enough to see which cache holds the memory.
func (e *Event) ApproxSize() int64 {
	if e == nil {
		return 0
	}
	return 256 + 2*int64(len(e.raw))
}

// ApproxSize estimates a state map's memory: map slots and keys plus
// every event it holds.
func (s StateEvents) ApproxSize() int64 {
	n := int64(48)
	for k, e := range s {
		n += 80 + int64(len(k.Type)+len(k.StateKey)) + e.ApproxSize()
	}
	return n
}
