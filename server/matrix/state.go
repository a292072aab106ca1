package matrix

// StateKey identifies an entry of room state: an event type and a state
// key. It is the one key type of state maps everywhere (rooms, storage,
// timeline, handlers).
type StateKey struct {
	Type     string
	StateKey string
}

func (k StateKey) String() string { return k.Type + "|" + k.StateKey }
