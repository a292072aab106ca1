package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"hearth/server/rooms"
	"hearth/server/storage"
)

// History visibility (spec: Client-Server API, "History visibility"): who
// may see an event depends on m.room.history_visibility and the viewer's
// membership at the event.

// visibilityAt is what the rules need from the state at one event.
type visibilityAt struct {
	visibility string // world_readable, shared, invited, joined
	membership string // the viewer's membership at the event
}

// visibilityOfGroup reads history visibility and the user's membership from
// a state group.
func (s *Server) visibilityOfGroup(ctx context.Context, group int64, userID string) (visibilityAt, error) {
	vs, err := s.visibilityOfGroups(ctx, []int64{group}, userID)
	return vs[group], err
}

// visibilityOfGroups is visibilityOfGroup for several groups, reading the
// events it needs in one query.
func (s *Server) visibilityOfGroups(ctx context.Context, groups []int64, userID string) (map[int64]visibilityAt, error) {
	type keys struct{ hv, mem string }
	want := make(map[int64]keys, len(groups))
	var ids []string
	for _, g := range groups {
		if _, ok := want[g]; ok {
			continue
		}
		entries, err := s.store.StateGroupEntries(ctx, g, storage.StateKey{Type: rooms.TypeHistoryVis}, storage.StateKey{Type: rooms.TypeMember, StateKey: userID})
		if err != nil {
			return nil, err
		}
		k := keys{hv: entries[0], mem: entries[1]}
		for _, id := range []string{k.hv, k.mem} {
			if id != "" {
				ids = append(ids, id)
			}
		}
		want[g] = k
	}
	vals, err := s.visibilityValues(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[int64]visibilityAt, len(want))
	for g, k := range want {
		v := visibilityAt{visibility: "shared", membership: rooms.MembershipLeave}
		if hv := vals[k.hv]; hv != "" {
			v.visibility = hv
		}
		if m, ok := vals[k.mem]; ok {
			v.membership = m
		}
		out[g] = v
	}
	return out, nil
}

// visibilityValues reads what the visibility rules take from each event:
// an m.room.history_visibility event's history_visibility, an
// m.room.member event's membership. Both survive redaction, so an event's
// value never changes and is kept by event ID (visibilityValues cache): a
// crowd's members each see every other member's join, which makes one
// (state group, viewer) pair per two members, but only one value per
// member.
func (s *Server) visibilityValues(ctx context.Context, ids []string) (map[string]string, error) {
	out := make(map[string]string, len(ids))
	var miss []string
	for _, id := range ids {
		if v, ok := s.shared.visValues.Get(id); ok {
			out[id] = v
		} else {
			miss = append(miss, id)
		}
	}
	evs, err := s.store.EventsByID(ctx, miss)
	if err != nil {
		return nil, err
	}
	for _, e := range evs {
		var v string
		switch e.Type {
		case rooms.TypeHistoryVis:
			var c struct {
				HistoryVisibility string `json:"history_visibility"`
			}
			if json.Unmarshal(contentOf(e.JSON), &c) == nil {
				v = c.HistoryVisibility
			}
		case rooms.TypeMember:
			v = e.Membership
		}
		out[e.EventID] = v
		s.shared.visValues.Add(e.EventID, v)
	}
	return out, nil
}

// visibilityBefore is the visibility of e on the state before it, for the
// events the spec lets a user see on either side: their own m.room.member
// events and m.room.history_visibility events. after is the visibility on
// the state after e (its state group); nil for other events.
func (s *Server) visibilityBefore(ctx context.Context, e *storage.Event, after visibilityAt, userID string) (*visibilityAt, error) {
	own := e.Type == rooms.TypeMember && e.StateKey != nil && *e.StateKey == userID
	hv := e.Type == rooms.TypeHistoryVis && e.StateKey != nil && *e.StateKey == ""
	if !own && !hv {
		return nil, nil
	}
	before := after
	if own {
		before.membership = rooms.MembershipLeave
	} else {
		before.visibility = "shared"
	}
	if e.ReplacesState == "" {
		return &before, nil
	}
	prev, err := s.store.EventByID(ctx, e.ReplacesState)
	if errors.Is(err, storage.ErrNotFound) {
		return &before, nil
	}
	if err != nil {
		return nil, err
	}
	if own {
		before.membership = prev.Membership
	} else {
		var c struct {
			HistoryVisibility string `json:"history_visibility"`
		}
		if json.Unmarshal(contentOf(prev.JSON), &c) == nil && c.HistoryVisibility != "" {
			before.visibility = c.HistoryVisibility
		}
	}
	return &before, nil
}

// allows applies the visibility rules, given the viewer's current membership.
func (v visibilityAt) allows(currentMembership string) bool {
	switch {
	case v.visibility == "world_readable":
		return true
	case v.membership == rooms.MembershipJoin:
		return true
	case v.visibility == "shared" && currentMembership == rooms.MembershipJoin:
		return true
	case v.visibility == "invited" && v.membership == rooms.MembershipInvite:
		return true
	}
	return false
}

// canSeeEvent reports whether userID may see e.
func (s *Server) canSeeEvent(ctx context.Context, userID string, e *storage.Event) (bool, error) {
	seen, err := s.visibleEvent(ctx, userID, e)
	return seen != nil, err
}

// visibleEvent returns e as userID may see it (see filterVisible), or nil
// when they may not.
func (s *Server) visibleEvent(ctx context.Context, userID string, e *storage.Event) (*storage.Event, error) {
	out, err := s.filterVisible(ctx, userID, []*storage.Event{e})
	if err != nil || len(out) == 0 {
		return nil, err
	}
	return out[0], nil
}

// filterVisible keeps the events of one room userID may see, reading each
// state group once, and is the one place where an erased user's events
// are hidden: /sync timelines, /messages, /context, /event and relations
// all come through here. An event whose sender was deactivated with erase
// is served redacted (as the redaction algorithm leaves it) to a viewer
// who was not joined to the room when it was sent, as Synapse does: those
// who were in the room with the user saw it then, later members do not.
func (s *Server) filterVisible(ctx context.Context, userID string, evs []*storage.Event) ([]*storage.Event, error) {
	return s.filterVisibleKnown(ctx, userID, nil, evs)
}

// knownVisibility is what a batch (an initial /sync's, sync_initial.go)
// already read for filterVisible, for one viewer.
type knownVisibility struct {
	current map[string]string      // room → the viewer's membership now
	groups  map[int64]visibilityAt // state group → visibility for the viewer
}

// filterVisibleKnown is filterVisible reading only what known (which may
// be nil) does not hold.
func (s *Server) filterVisibleKnown(ctx context.Context, userID string, known *knownVisibility, evs []*storage.Event) ([]*storage.Event, error) {
	if len(evs) == 0 {
		return evs, nil
	}
	current, ok := "", false
	if known != nil {
		current, ok = known.current[evs[0].RoomID]
	}
	if !ok {
		var err error
		if current, err = s.store.Membership(ctx, evs[0].RoomID, userID); err != nil {
			return nil, err
		}
	}
	var err error
	byGroup := map[int64]visibilityAt{}
	erased := map[string]bool{}
	var rv *rooms.RoomVersion
	out := evs[:0:0]
	for _, e := range evs {
		v, ok := byGroup[e.StateGroup]
		if !ok && known != nil {
			v, ok = known.groups[e.StateGroup]
		}
		if !ok {
			if v, err = s.cachedVisibility(ctx, e.StateGroup, userID); err != nil {
				return nil, err
			}
			byGroup[e.StateGroup] = v
		}
		if !v.allows(current) {
			// The user's own membership events and history visibility
			// events may also be seen on the state before them (spec:
			// "History visibility"): a user sees their own leave.
			before, err := s.visibilityBefore(ctx, e, v, userID)
			if err != nil {
				return nil, err
			}
			if before == nil || !before.allows(current) {
				continue
			}
		}
		if v.membership != rooms.MembershipJoin && e.Sender != userID && s.isLocalUser(e.Sender) {
			gone, ok := erased[e.Sender]
			if !ok {
				u, err := s.store.UserByID(ctx, e.Sender)
				if err != nil && !errors.Is(err, storage.ErrNotFound) {
					return nil, err
				}
				gone = u != nil && u.Erased
				erased[e.Sender] = gone
			}
			if gone {
				if rv == nil {
					if rv, err = s.roomVersion(ctx, e.RoomID); err != nil {
						return nil, err
					}
				}
				if e, err = prunedEvent(rv, e); err != nil {
					return nil, err
				}
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// visibleAcrossRooms is filterVisible for events of several rooms, in
// their order.
func (s *Server) visibleAcrossRooms(ctx context.Context, userID string, evs []*storage.Event) ([]*storage.Event, error) {
	byRoom := map[string][]*storage.Event{}
	for _, e := range evs {
		byRoom[e.RoomID] = append(byRoom[e.RoomID], e)
	}
	shown := map[string]*storage.Event{}
	for _, list := range byRoom {
		vis, err := s.filterVisible(ctx, userID, list)
		if err != nil {
			return nil, err
		}
		for _, e := range vis {
			shown[e.EventID] = e
		}
	}
	out := evs[:0:0]
	for _, e := range evs {
		if v := shown[e.EventID]; v != nil {
			out = append(out, v)
		}
	}
	return out, nil
}

// visibleByID indexes what filterVisible returned: the events as the
// viewer sees them, for callers that walk the unfiltered list.
func visibleByID(visible []*storage.Event) map[string]*storage.Event {
	m := make(map[string]*storage.Event, len(visible))
	for _, e := range visible {
		m[e.EventID] = e
	}
	return m
}

// prunedEvent is a copy of e with its JSON redacted.
func prunedEvent(rv *rooms.RoomVersion, e *storage.Event) (*storage.Event, error) {
	redacted, err := rooms.Redact(rv, e.JSON)
	if err != nil {
		return nil, err
	}
	c := *e
	c.JSON = redacted
	return &c, nil
}

// roomVersion is the version of a room this server knows.
func (s *Server) roomVersion(ctx context.Context, roomID string) (*rooms.RoomVersion, error) {
	room, err := s.store.RoomByID(ctx, roomID)
	if err != nil {
		return nil, err
	}
	rv, ok := rooms.LookupVersion(room.RoomVersion)
	if !ok {
		return nil, fmt.Errorf("room %s has unknown version %q", roomID, room.RoomVersion)
	}
	return rv, nil
}

// contentOf returns the content of a PDU's JSON ("{}" if absent).
func contentOf(pdu []byte) json.RawMessage {
	var p pduFields
	if json.Unmarshal(pdu, &p) != nil || len(p.Content) == 0 {
		return json.RawMessage("{}")
	}
	return p.Content
}
