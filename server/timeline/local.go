package timeline

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/tidwall/gjson"

	"hearth/server/rooms"
	"hearth/server/storage"
)

// NewEvent is one event a local user, or the server on a user's behalf,
// asks for.
type NewEvent struct {
	Type     string
	StateKey *string
	Sender   string
	Content  any
	// DeviceID, TxnID and TxnScope make client sends idempotent and fill
	// unsigned.transaction_id for the sending device.
	DeviceID, TxnID, TxnScope string
	// IgnoreBlock lets the event into a blocked room: the leaves an
	// admin's room deletion sends for local users after blocking it.
	IgnoreBlock bool
}

// Send builds, signs, authorises and persists events in a room, in order,
// on its current head. An event that cannot be built (the auth rules refuse
// it: *rooms.AuthError; too large: rooms.ErrEventTooLarge; not canonical
// JSON: rooms.ErrBadEvent; ErrRoomBlocked) stops the batch: the events
// before it are persisted and returned with the error, the room is
// unchanged from that event on.
func (t *Timeline) Send(ctx context.Context, roomID string, evs ...NewEvent) ([]*storage.Event, error) {
	unlock := t.locks.lock(roomID)
	persisted, err := t.send(ctx, roomID, evs)
	unlock()
	t.tell(persisted)
	out := make([]*storage.Event, len(persisted))
	for i, p := range persisted {
		out[i] = p.Event
	}
	return out, err
}

// send is Send under the room's lock.
func (t *Timeline) send(ctx context.Context, roomID string, evs []NewEvent) ([]*Persisted, error) {
	h, err := t.head(ctx, roomID)
	if err != nil {
		return nil, err
	}
	b := h.builder
	prevs := b.Extremities
	var (
		batch    []*storage.NewEvent
		pdus     []*rooms.Event
		buildErr error
	)
	for _, ne := range evs {
		if h.room.Blocked && !ne.IgnoreBlock {
			buildErr = ErrRoomBlocked
			break
		}
		var replaces string
		if ne.StateKey != nil {
			if prev := b.State.Get(ne.Type, *ne.StateKey); prev != nil {
				replaces = prev.ID()
			}
		}
		// Append advances the builder only for an event it accepts.
		e, err := b.Append(ne.Type, ne.StateKey, ne.Sender, ne.Content)
		if err != nil {
			buildErr = err
			break
		}
		se := storageEvent(e)
		se.ReplacesState = replaces
		if ne.DeviceID != "" && ne.TxnID != "" {
			se.SenderDevice, se.TxnID, se.TxnScope = ne.DeviceID, ne.TxnID, ne.TxnScope
		}
		batch = append(batch, &storage.NewEvent{Event: *se, PrevEvents: e.PrevEventIDs(), StateBefore: h.group, ChainState: len(batch) > 0, Outbound: true})
		pdus = append(pdus, e)
	}
	if len(batch) == 0 {
		return nil, buildErr
	}
	head, err := t.localHead(ctx, h, prevs, batch, pdus)
	if err == nil {
		err = t.store.PersistEvents(ctx, batch, head.update)
	}
	if err != nil {
		// The builder is ahead of the store now: reload it next time.
		t.heads.Remove(roomID)
		return nil, err
	}
	t.advance(h, head, batch[len(batch)-1])
	out := make([]*Persisted, len(batch))
	for i, ne := range batch {
		out[i] = &Persisted{Event: &ne.Event, PDU: pdus[i], Local: true}
		if ne.IsState() {
			out[i].Changes = []storage.StateChange{{Key: pdus[i].Key(), EventID: ne.EventID, PrevEventID: ne.ReplacesState, StreamPos: ne.StreamPos}}
		}
	}
	return out, buildErr
}

// newHead is a head change about to be persisted.
type newHead struct {
	update *storage.HeadUpdate
	// exts are the extremities after it; the last one's state group is
	// known only once persisted when state is 0.
	exts []storage.Extremity
	// state is the new current state when a resolution changed it beyond
	// the batch's own events (nil: the builder already holds it), and
	// extEvents the events of exts to rebuild the builder on.
	state     rooms.StateEvents
	extEvents []*rooms.Event
}

// localHead computes the head after a batch of local events built on
// prevs. Almost always the events extend every extremity, and the current
// state is the state after the last of them. When the room had more
// extremities than one event may reference (20), the others stay
// extremities and the current state is resolved, here, under the lock: a
// rare path for rooms that federation forked widely.
func (t *Timeline) localHead(ctx context.Context, h *roomHead, prevs []string, batch []*storage.NewEvent, pdus []*rooms.Event) (*newHead, error) {
	last := batch[len(batch)-1]
	var changes []storage.StateChange
	seen := map[storage.StateKey]int{}
	for _, ne := range batch {
		if !ne.IsState() {
			continue
		}
		k := storage.StateKey{Type: ne.Type, StateKey: *ne.StateKey}
		if i, ok := seen[k]; ok {
			changes[i].EventID = ne.EventID
			continue
		}
		seen[k] = len(changes)
		changes = append(changes, storage.StateChange{Key: k, EventID: ne.EventID, PrevEventID: ne.ReplacesState})
	}
	var others []storage.Extremity
	for _, x := range h.exts {
		if !slices.Contains(prevs, x.EventID) {
			others = append(others, x)
		}
	}
	exts := append(others, storage.Extremity{EventID: last.EventID, Depth: last.Depth})
	nh := &newHead{update: &storage.HeadUpdate{Extremities: extIDs(exts), Changes: changes}, exts: exts}
	if len(others) == 0 {
		return nh, nil
	}
	t.log.Warn("room has more forward extremities than one event can reference; resolving its state", "room_id", h.room.RoomID, "extremities", len(h.exts))
	after := h.builder.State.IDs() // the builder already holds the state after the batch
	groups := make([]int64, len(others))
	for i, x := range others {
		groups[i] = x.StateGroup
	}
	extra := map[string]*rooms.Event{}
	for _, e := range pdus {
		extra[e.ID()] = e
	}
	group, resolved, err := t.resolveGroups(ctx, h.room.RoomID, h.rv, groups, []rooms.StateMap{after}, extra)
	if err != nil {
		return nil, err
	}
	old, err := t.store.StateGroup(ctx, h.group)
	if err != nil {
		return nil, err
	}
	state, err := t.stateEvents(ctx, h.rv, resolved)
	if err != nil {
		return nil, err
	}
	extEvents, err := t.events(ctx, h.rv, extIDs(others), nil)
	if err != nil {
		return nil, err
	}
	nh.extEvents = append(slices.Collect(maps.Values(extEvents)), pdus[len(pdus)-1])
	nh.update.StateGroup, nh.update.Changes, nh.state = group, changesBetween(old, resolved), state
	for i, c := range nh.update.Changes {
		if j, ok := seen[c.Key]; ok && changes[j].EventID == c.EventID {
			nh.update.Changes[i].PrevEventID = changes[j].PrevEventID
		}
	}
	return nh, nil
}

// advance moves the cached head past a persisted batch whose last event is
// last. The builder was advanced by Append already, unless the state was
// resolved with other extremities: then it is rebuilt on that state.
func (t *Timeline) advance(h *roomHead, nh *newHead, last *storage.NewEvent) {
	if nh.update.StateGroup != 0 {
		h.group = nh.update.StateGroup
	} else {
		h.group = last.StateGroup
	}
	nh.exts[len(nh.exts)-1].StateGroup = last.StateGroup
	h.exts = nh.exts
	if nh.state != nil {
		t.rebuild(h, nh.state, nh.extEvents)
	}
	h.version = t.versions.Add(1)
}

// rebuild replaces the head's builder: current state and extremities.
func (t *Timeline) rebuild(h *roomHead, state rooms.StateEvents, exts []*rooms.Event) {
	b := rooms.ResumeRoomBuilder(h.rv, h.room.RoomID, t.key, state, exts)
	b.Now = func() int64 { return t.now().UnixMilli() }
	h.builder = b
}

// CreateRoom persists a room built by rooms.CreateRoom: its row, then its
// events, in one transaction, and keeps b (the builder after the last of
// them) as the room's head.
func (t *Timeline) CreateRoom(ctx context.Context, room *storage.Room, events []*rooms.Event, b *rooms.RoomBuilder) error {
	unlock := t.locks.lock(room.RoomID)
	persisted, err := t.createRoom(ctx, room, events, b)
	unlock()
	t.tell(persisted)
	return err
}

func (t *Timeline) createRoom(ctx context.Context, room *storage.Room, events []*rooms.Event, b *rooms.RoomBuilder) ([]*Persisted, error) {
	if len(events) == 0 {
		return nil, fmt.Errorf("timeline: room %s has no events", room.RoomID)
	}
	if err := t.store.CreateRoom(ctx, room); err != nil {
		return nil, err
	}
	batch := make([]*storage.NewEvent, len(events))
	update := &storage.HeadUpdate{}
	state := map[storage.StateKey]string{}
	for i, e := range events {
		se := storageEvent(e)
		if e.IsState() {
			se.ReplacesState = state[e.Key()]
			state[e.Key()] = e.ID()
		}
		batch[i] = &storage.NewEvent{Event: *se, PrevEvents: e.PrevEventIDs(), ChainState: i > 0, Outbound: true}
	}
	update.Changes = changesBetween(nil, state)
	last := batch[len(batch)-1]
	update.Extremities = []string{last.EventID}
	if err := t.store.PersistEvents(ctx, batch, update); err != nil {
		return nil, err
	}
	b.Now = func() int64 { return t.now().UnixMilli() }
	t.heads.Add(room.RoomID, &roomHead{room: room, rv: b.Version, builder: b, group: last.StateGroup,
		exts: []storage.Extremity{{EventID: last.EventID, Depth: last.Depth, StateGroup: last.StateGroup}}, version: t.versions.Add(1)})
	out := make([]*Persisted, len(batch))
	for i, ne := range batch {
		out[i] = &Persisted{Event: &ne.Event, PDU: events[i], Local: true}
		if ne.IsState() {
			out[i].Changes = []storage.StateChange{{Key: events[i].Key(), EventID: ne.EventID, PrevEventID: ne.ReplacesState, StreamPos: ne.StreamPos}}
		}
	}
	return out, nil
}

// storageEvent extracts the columns the store indexes from a PDU.
func storageEvent(e *rooms.Event) *storage.Event {
	se := &storage.Event{EventID: e.ID(), RoomID: e.RoomID(), Type: e.Type(), Sender: e.Sender(), Depth: e.Depth(),
		OriginServerTS: e.OriginServerTS(), JSON: e.JSON(), Membership: e.Membership(), Rejected: e.Rejected}
	if sk, ok := e.StateKey(); ok {
		se.StateKey = &sk
	}
	rel := gjson.GetBytes(e.Content(), `m\.relates_to`)
	se.RelatesTo, se.RelType = rel.Get("event_id").String(), rel.Get("rel_type").String()
	return se
}
