package server

import (
	"context"
	"encoding/json"

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
	state, err := s.store.StateGroup(ctx, group)
	if err != nil {
		return visibilityAt{}, err
	}
	v := visibilityAt{visibility: "shared", membership: rooms.MembershipLeave}
	var ids []string
	hv, hasHV := state[storage.StateKey{Type: rooms.TypeHistoryVis}]
	mem, hasMem := state[storage.StateKey{Type: rooms.TypeMember, StateKey: userID}]
	if hasHV {
		ids = append(ids, hv)
	}
	if hasMem {
		ids = append(ids, mem)
	}
	evs, err := s.store.EventsByID(ctx, ids)
	if err != nil {
		return v, err
	}
	for _, e := range evs {
		switch e.EventID {
		case hv:
			var c struct {
				HistoryVisibility string `json:"history_visibility"`
			}
			if json.Unmarshal(contentOf(e.JSON), &c) == nil && c.HistoryVisibility != "" {
				v.visibility = c.HistoryVisibility
			}
		case mem:
			v.membership = e.Membership
		}
	}
	return v, nil
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
	current, err := s.store.Membership(ctx, e.RoomID, userID)
	if err != nil {
		return false, err
	}
	v, err := s.visibilityOfGroup(ctx, e.StateGroup, userID)
	if err != nil {
		return false, err
	}
	return v.allows(current), nil
}

// filterVisible keeps the events userID may see, reading each state group
// once.
func (s *Server) filterVisible(ctx context.Context, userID string, evs []*storage.Event) ([]*storage.Event, error) {
	if len(evs) == 0 {
		return evs, nil
	}
	current, err := s.store.Membership(ctx, evs[0].RoomID, userID)
	if err != nil {
		return nil, err
	}
	byGroup := map[int64]visibilityAt{}
	out := evs[:0:0]
	for _, e := range evs {
		v, ok := byGroup[e.StateGroup]
		if !ok {
			if v, err = s.visibilityOfGroup(ctx, e.StateGroup, userID); err != nil {
				return nil, err
			}
			byGroup[e.StateGroup] = v
		}
		if v.allows(current) {
			out = append(out, e)
		}
	}
	return out, nil
}

// contentOf returns the content of a PDU's JSON ("{}" if absent).
func contentOf(pdu []byte) json.RawMessage {
	var p pduFields
	if json.Unmarshal(pdu, &p) != nil || len(p.Content) == 0 {
		return json.RawMessage("{}")
	}
	return p.Content
}
