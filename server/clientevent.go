package server

import (
	"context"
	"encoding/json"
	"time"

	"hearth/server/storage"
)

// clientEvent renders a stored PDU in the Client-Server API's ClientEvent
// format (spec: "Room Events" → ClientEvent): the federation-only keys
// (auth_events, prev_events, hashes, signatures, depth) are dropped and
// unsigned is filled for the viewer.
type clientEvent struct {
	Content        json.RawMessage `json:"content"`
	EventID        string          `json:"event_id"`
	OriginServerTS int64           `json:"origin_server_ts"`
	RoomID         string          `json:"room_id,omitempty"`
	Sender         string          `json:"sender"`
	StateKey       *string         `json:"state_key,omitempty"`
	Type           string          `json:"type"`
	Redacts        string          `json:"redacts,omitempty"`
	Unsigned       map[string]any  `json:"unsigned,omitempty"`
}

// eventFormatter renders events for one viewer, fetching the extra events
// unsigned needs (replaced state, redactions) once per batch.
type eventFormatter struct {
	store  *storage.Store
	viewer *Device
	now    time.Time
	// omitRoomID is set for /sync, whose events sit under their room.
	omitRoomID bool
	// noBundles leaves out unsigned.m.relations (client_relations.go), for
	// events shown inside another event's bundle.
	noBundles bool
	// visible applies the viewer's history visibility and erasure
	// (filterVisible) to the events bundled into others: edits and thread
	// summaries. nil shows them as stored (admins).
	visible func(ctx context.Context, evs []*storage.Event) ([]*storage.Event, error)
}

// formatterFor is the formatter for a user's view of events, bundled
// events filtered as the events themselves are.
func (s *Server) formatterFor(viewer *Device) *eventFormatter {
	return &eventFormatter{store: s.store, viewer: viewer, now: s.now(), visible: func(ctx context.Context, evs []*storage.Event) ([]*storage.Event, error) {
		return s.visibleAcrossRooms(ctx, viewer.UserID, evs)
	}}
}

// format renders a batch of events in order.
func (f *eventFormatter) format(ctx context.Context, evs []*storage.Event) ([]clientEvent, error) {
	var need []string
	for _, e := range evs {
		if e.ReplacesState != "" {
			need = append(need, e.ReplacesState)
		}
		if e.RedactedBy != "" {
			need = append(need, e.RedactedBy)
		}
	}
	extra := map[string]*storage.Event{}
	if len(need) > 0 {
		got, err := f.store.EventsByID(ctx, need)
		if err != nil {
			return nil, err
		}
		for _, e := range got {
			extra[e.EventID] = e
		}
	}
	var bundles map[string]map[string]any
	if !f.noBundles {
		var err error
		if bundles, err = f.bundledAggregations(ctx, evs); err != nil {
			return nil, err
		}
	}
	out := make([]clientEvent, 0, len(evs))
	memberships := map[int64]string{} // state group → viewer's membership
	for _, e := range evs {
		ce, err := f.one(e, extra)
		if err != nil {
			return nil, err
		}
		if b := bundles[e.EventID]; b != nil {
			ce.Unsigned["m.relations"] = b
		}
		if f.viewer != nil {
			m, ok := memberships[e.StateGroup]
			if !ok {
				if m, err = f.store.MembershipInGroup(ctx, e.StateGroup, f.viewer.UserID); err != nil {
					return nil, err
				}
				memberships[e.StateGroup] = m
			}
			// unsigned.membership (spec v1.11): the viewer's membership
			// at the event, "leave" when they had none.
			if m == "" {
				m = "leave"
			}
			ce.Unsigned["membership"] = m
		}
		out = append(out, ce)
	}
	return out, nil
}

// pduFields are the PDU keys the client format keeps.
type pduFields struct {
	Content json.RawMessage `json:"content"`
	Redacts string          `json:"redacts"`
}

func (f *eventFormatter) one(e *storage.Event, extra map[string]*storage.Event) (clientEvent, error) {
	var p pduFields
	if err := json.Unmarshal(e.JSON, &p); err != nil {
		return clientEvent{}, err
	}
	if len(p.Content) == 0 {
		p.Content = json.RawMessage("{}")
	}
	ce := clientEvent{Content: p.Content, EventID: e.EventID, OriginServerTS: e.OriginServerTS, Sender: e.Sender,
		StateKey: e.StateKey, Type: e.Type, Redacts: p.Redacts}
	if !f.omitRoomID {
		ce.RoomID = e.RoomID
	}
	if ce.Redacts == "" && e.Type == "m.room.redaction" {
		// v11+ carry redacts in content; clients still read the top level.
		var c struct {
			Redacts string `json:"redacts"`
		}
		_ = json.Unmarshal(p.Content, &c)
		ce.Redacts = c.Redacts
	}
	u := map[string]any{"age": max(f.now.UnixMilli()-e.OriginServerTS, 0)}
	if f.viewer != nil && e.TxnID != "" && e.Sender == f.viewer.UserID && e.SenderDevice == f.viewer.DeviceID {
		if delayID, ok := delayIDOfTxn(e.TxnID); ok {
			u["org.matrix.msc4140.delay_id"] = delayID
		} else {
			u["transaction_id"] = e.TxnID
		}
	}
	if e.ReplacesState != "" {
		u["replaces_state"] = e.ReplacesState
		if prev, ok := extra[e.ReplacesState]; ok {
			var pp pduFields
			if json.Unmarshal(prev.JSON, &pp) == nil && len(pp.Content) > 0 {
				u["prev_content"] = pp.Content
				u["prev_sender"] = prev.Sender
			}
		}
	}
	if e.RedactedBy != "" {
		if r, ok := extra[e.RedactedBy]; ok {
			sub := &eventFormatter{store: f.store, viewer: f.viewer, now: f.now, omitRoomID: f.omitRoomID, visible: f.visible}
			if rc, err := sub.one(r, nil); err == nil {
				u["redacted_because"] = rc
			}
		}
	}
	ce.Unsigned = u
	return ce, nil
}
