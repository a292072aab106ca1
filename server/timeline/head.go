package timeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"hearth/server/rooms"
	"hearth/server/storage"
)

// roomHead is a room's head as building and accepting its next event needs
// it: the room row, the current state (in the builder, parsed), the group
// holding that state, and every forward extremity. It is read and changed
// only under the room's lock; received events are planned against a copy
// of the parts they need (snapshot).
type roomHead struct {
	room *storage.Room
	rv   *rooms.RoomVersion
	// builder holds the current state and the prev_events (the deepest 20
	// extremities) for the next local event.
	builder *rooms.RoomBuilder
	// group is the state group of the current state.
	group int64
	// exts are all the room's forward extremities.
	exts []storage.Extremity
	// version changes with every change of the head (Timeline.versions).
	version int64
}

// head returns the room's cached head, loading it on a miss. Call it under
// the room's lock.
func (t *Timeline) head(ctx context.Context, roomID string) (*roomHead, error) {
	if h, ok := t.heads.Get(roomID); ok {
		return h, nil
	}
	h, err := t.loadHead(ctx, roomID)
	if err != nil {
		return nil, err
	}
	t.heads.Add(roomID, h)
	return h, nil
}

// loadHead builds the room's head from the store.
func (t *Timeline) loadHead(ctx context.Context, roomID string) (*roomHead, error) {
	room, err := t.store.RoomByID(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrUnknownRoom
	}
	if err != nil {
		return nil, err
	}
	rv, ok := rooms.LookupVersion(room.RoomVersion)
	if !ok {
		return nil, fmt.Errorf("timeline: room %s has unknown version %q", roomID, room.RoomVersion)
	}
	exts, err := t.store.ForwardExtremities(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if len(exts) == 0 {
		// A room row with no timeline yet (a join through another server
		// in progress): nothing can be built on it.
		return nil, ErrUnknownRoom
	}
	group, err := t.store.RoomStateGroup(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if group == 0 {
		// Rooms from before the group was recorded per room.
		groups := make([]int64, len(exts))
		for i, x := range exts {
			groups[i] = x.StateGroup
		}
		if group, _, err = t.resolveGroups(ctx, roomID, rv, groups, nil, nil); err != nil {
			return nil, err
		}
	}
	ids, err := t.store.StateGroup(ctx, group)
	if err != nil {
		return nil, err
	}
	state, err := t.stateEvents(ctx, rv, ids)
	if err != nil {
		return nil, err
	}
	extEvents, err := t.events(ctx, rv, extIDs(exts), nil)
	if err != nil {
		return nil, err
	}
	b := rooms.ResumeRoomBuilder(rv, roomID, t.key, state, slices.Collect(maps.Values(extEvents)))
	b.Now = func() int64 { return t.now().UnixMilli() }
	return &roomHead{room: room, rv: rv, builder: b, group: group, exts: exts, version: t.versions.Add(1)}, nil
}

func extIDs(exts []storage.Extremity) []string {
	ids := make([]string, len(exts))
	for i, x := range exts {
		ids[i] = x.EventID
	}
	return ids
}

// events loads and parses stored events by ID (with their rejected flag);
// extra supplies events not stored yet. Missing events are an error.
func (t *Timeline) events(ctx context.Context, rv *rooms.RoomVersion, ids []string, extra map[string]*rooms.Event) (map[string]*rooms.Event, error) {
	out := make(map[string]*rooms.Event, len(ids))
	var need []string
	for _, id := range ids {
		if e, ok := extra[id]; ok {
			out[id] = e
		} else {
			need = append(need, id)
		}
	}
	if len(need) == 0 {
		return out, nil
	}
	stored, err := t.store.EventsByID(ctx, need)
	if err != nil {
		return nil, err
	}
	for _, se := range stored {
		e, err := parseStored(rv, se)
		if err != nil {
			return nil, err
		}
		out[se.EventID] = e
	}
	for _, id := range need {
		if out[id] == nil {
			return nil, fmt.Errorf("timeline: event %s: %w", id, storage.ErrNotFound)
		}
	}
	return out, nil
}

func parseStored(rv *rooms.RoomVersion, se *storage.Event) (*rooms.Event, error) {
	e, err := rooms.ParseStored(rv, se.JSON, se.EventID)
	if err != nil {
		return nil, fmt.Errorf("timeline: parse stored event %s: %w", se.EventID, err)
	}
	e.Rejected = se.Rejected
	return e, nil
}

// stateEvents loads the events of a state map.
func (t *Timeline) stateEvents(ctx context.Context, rv *rooms.RoomVersion, ids rooms.StateMap) (rooms.StateEvents, error) {
	evs, err := t.events(ctx, rv, slices.Collect(maps.Values(ids)), nil)
	if err != nil {
		return nil, err
	}
	state := make(rooms.StateEvents, len(ids))
	for k, id := range ids {
		state[k] = evs[id]
	}
	return state, nil
}

// provider serves events to state resolution from the store, and from
// extra for events not stored yet.
type provider struct {
	t     *Timeline
	rv    *rooms.RoomVersion
	extra map[string]*rooms.Event
}

func (p provider) Event(ctx context.Context, id string) (*rooms.Event, error) {
	if e, ok := p.extra[id]; ok {
		return e, nil
	}
	se, err := p.t.store.EventByID(ctx, id)
	if err != nil {
		return nil, err
	}
	return parseStored(p.rv, se)
}

// resolveGroups resolves the states of groups, plus states not stored as
// groups (extraStates, whose events extra supplies), into one state, and
// stores it as a group: a delta against the first group, so a fork merge
// writes what changed rather than the whole state. One state is returned
// as it is, without a new group.
func (t *Timeline) resolveGroups(ctx context.Context, roomID string, rv *rooms.RoomVersion, groups []int64,
	extraStates []rooms.StateMap, extra map[string]*rooms.Event) (int64, rooms.StateMap, error) {
	states := make([]rooms.StateMap, 0, len(groups)+len(extraStates))
	for _, g := range groups {
		m, err := t.store.StateGroup(ctx, g)
		if err != nil {
			return 0, nil, err
		}
		states = append(states, m)
	}
	states = append(states, extraStates...)
	if len(states) == 1 && len(groups) == 1 {
		return groups[0], states[0], nil
	}
	resolved, err := rooms.ResolveState(ctx, rv, states, provider{t: t, rv: rv, extra: extra})
	if err != nil {
		return 0, nil, fmt.Errorf("timeline: resolve state of %s: %w", roomID, err)
	}
	var base int64
	var baseState rooms.StateMap
	if len(groups) > 0 {
		base, baseState = groups[0], states[0]
	}
	group, err := t.store.StoreStateGroup(ctx, roomID, base, stateDiff(baseState, resolved))
	if err != nil {
		return 0, nil, err
	}
	return group, resolved, nil
}

// stateDiff is what turns from into to: changed and added keys with their
// new event, removed keys with "".
func stateDiff(from, to rooms.StateMap) map[storage.StateKey]string {
	d := map[storage.StateKey]string{}
	for k, id := range to {
		if from[k] != id {
			d[k] = id
		}
	}
	for k := range from {
		if _, ok := to[k]; !ok {
			d[k] = ""
		}
	}
	return d
}

// changesBetween lists the current-state changes from one state to
// another, in a stable order.
func changesBetween(from, to rooms.StateMap) []storage.StateChange {
	d := stateDiff(from, to)
	out := make([]storage.StateChange, 0, len(d))
	for k, id := range d {
		out = append(out, storage.StateChange{Key: k, EventID: id, PrevEventID: from[k]})
	}
	slices.SortFunc(out, func(a, b storage.StateChange) int {
		return cmp.Or(cmp.Compare(a.Key.Type, b.Key.Type), cmp.Compare(a.Key.StateKey, b.Key.StateKey))
	})
	return out
}
