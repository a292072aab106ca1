package rooms

import (
	"cmp"
	"encoding/json/jsontext"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// maxPrevEvents is the spec's limit on prev_events in a PDU.
const maxPrevEvents = 20

// RoomBuilder appends locally created events to a room: it picks
// prev_events (the builder's forward extremities), depth, and auth_events
// (by the auth events selection over its state), builds and signs each
// event and authorises it against the state before it. It is what
// createRoom and send use; it is not safe for concurrent use.
type RoomBuilder struct {
	Version *RoomVersion
	RoomID  string
	Key     SigningKey
	// State is the room state after the last appended event.
	State StateEvents
	// Extremities are the prev_events for the next event.
	Extremities []string
	// Depth is the depth of the last appended event.
	Depth int64
	// Now returns origin_server_ts in milliseconds; time.Now if nil.
	Now func() int64
	// Sink, if set, is called with every event the builder accepts (for
	// example to persist it).
	Sink func(*Event)

	refHashes map[string]string
}

// NewRoomBuilder starts a new room. For v1–11 roomID is required
// ("!opaque:server"); for v12 it is derived from the create event and
// must be empty.
func NewRoomBuilder(rv *RoomVersion, roomID string, key SigningKey) *RoomBuilder {
	return &RoomBuilder{Version: rv, RoomID: roomID, Key: key, State: StateEvents{}, refHashes: map[string]string{}}
}

// ResumeRoomBuilder continues an existing room from its current state and
// forward extremities (depth is the greatest depth among them).
func ResumeRoomBuilder(rv *RoomVersion, roomID string, key SigningKey, state StateEvents, extremities []*Event) *RoomBuilder {
	b := NewRoomBuilder(rv, roomID, key)
	b.State = maps.Clone(state)
	if len(extremities) > maxPrevEvents {
		// The spec caps prev_events at 20; keep the deepest extremities.
		extremities = slices.Clone(extremities)
		slices.SortFunc(extremities, func(x, y *Event) int { return cmp.Compare(y.Depth(), x.Depth()) })
		extremities = extremities[:maxPrevEvents]
	}
	for _, e := range extremities {
		b.Extremities = append(b.Extremities, e.ID())
		b.Depth = max(b.Depth, e.Depth())
		b.rememberRef(e)
	}
	for _, e := range state {
		b.rememberRef(e)
	}
	return b
}

// Fork returns an independent copy, for building concurrent branches.
func (b *RoomBuilder) Fork() *RoomBuilder {
	c := *b
	c.State = maps.Clone(b.State)
	c.Extremities = append([]string(nil), b.Extremities...)
	c.refHashes = maps.Clone(b.refHashes)
	return &c
}

func (b *RoomBuilder) rememberRef(e *Event) {
	if b.Version.EventIDs == EventIDRandom {
		if h, err := e.ReferenceHashB64(); err == nil {
			b.refHashes[e.ID()] = h
		}
	}
}

// Append builds, signs and authorises a new event on top of the builder's
// extremities and, if allowed, advances the builder. A rejected event is
// returned with an *AuthError and does not change the builder.
func (b *RoomBuilder) Append(typ string, stateKey *string, sender string, content any) (*Event, error) {
	t, err := b.Template(typ, stateKey, sender, content)
	if err != nil {
		return nil, err
	}
	e, err := BuildEvent(b.Version, t, b.Key)
	if err != nil {
		return nil, err
	}
	if err := AuthorizeAgainstState(e, b.State, nil); err != nil {
		return e, err
	}
	if e.IsCreate() {
		b.RoomID = e.RoomID()
	}
	b.Accept(e)
	return e, nil
}

// Template is the template of the builder's next event: prev_events,
// depth and auth_events as Append would choose them.
func (b *RoomBuilder) Template(typ string, stateKey *string, sender string, content any) (EventTemplate, error) {
	c, err := marshalContent(content)
	if err != nil {
		return EventTemplate{}, err
	}
	isCreate := typ == TypeCreate && stateKey != nil && *stateKey == ""
	if isCreate && len(b.Extremities) > 0 {
		// A client's PUT of m.room.create into an existing room: a bad
		// request, not a failure of the server.
		return EventTemplate{}, fmt.Errorf("%w: m.room.create must be the first event of a room", ErrBadEvent)
	}
	if !isCreate && b.RoomID == "" {
		return EventTemplate{}, errors.New("rooms: no room ID (append m.room.create first)")
	}
	now := b.Now
	if now == nil {
		now = func() int64 { return time.Now().UnixMilli() }
	}
	t := EventTemplate{
		RoomID:         b.RoomID,
		Type:           typ,
		StateKey:       stateKey,
		Sender:         sender,
		Content:        c,
		PrevEvents:     b.Extremities,
		AuthEvents:     SelectAuthEvents(AuthEventKeys(b.Version, typ, stateKey, sender, c), b.State),
		Depth:          b.Depth + 1,
		OriginServerTS: now(),
		RefHashes:      b.refHashes,
	}
	if typ == TypeRedaction {
		t.Redacts = contentString(c, "redacts")
	}
	return t, nil
}

// Proto is the unsigned event a server answers make_join (make_leave,
// make_knock) with, for sender (a user of another server) on the builder's
// head. The auth rules must allow it as the state stands; the builder does
// not change.
func (b *RoomBuilder) Proto(typ string, stateKey *string, sender string, content any) (jsontext.Value, error) {
	t, err := b.Template(typ, stateKey, sender, content)
	if err != nil {
		return nil, err
	}
	// The auth rules judge a signed event: sign it with this server's key
	// to check, then hand out the template unsigned.
	e, err := BuildEvent(b.Version, t, b.Key)
	if err != nil {
		return nil, err
	}
	if err := AuthorizeAgainstState(e, b.State, nil); err != nil {
		return nil, err
	}
	return BuildProto(b.Version, t)
}

// Accept advances the builder past an event that was authorised elsewhere
// (for example one received over federation on a linear history).
func (b *RoomBuilder) Accept(e *Event) {
	if e.IsState() {
		b.State[e.Key()] = e
	}
	b.Extremities = []string{e.ID()}
	b.Depth = max(b.Depth, e.Depth())
	b.rememberRef(e)
	if b.Sink != nil {
		b.Sink(e)
	}
}
