package server

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/tidwall/gjson"

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
	// shared holds the formatted events every viewer shares (sync_shared.go;
	// nil: none).
	shared *syncShared
	// peekShared reads shared's formatted events but adds none: an initial
	// sync's thousands of events would push out what every long poll
	// shares.
	peekShared bool
	// membershipAt, when set, is the viewer's membership at a state group
	// ("" when none); nil reads it from the store.
	membershipAt func(ctx context.Context, group int64) (string, error)
}

// formatterFor is the formatter for a user's view of events, bundled
// events filtered as the events themselves are.
func (s *Server) formatterFor(viewer *Device) *eventFormatter {
	return &eventFormatter{store: s.store, viewer: viewer, now: s.now(), shared: s.shared, visible: func(ctx context.Context, evs []*storage.Event) ([]*storage.Event, error) {
		return s.visibleAcrossRooms(ctx, viewer.UserID, evs)
	}, membershipAt: func(ctx context.Context, group int64) (string, error) {
		// What history visibility read for the same events (cached).
		v, err := s.cachedVisibility(ctx, group, viewer.UserID)
		return v.membership, err
	}}
}

// format renders a batch of events in order.
func (f *eventFormatter) format(ctx context.Context, evs []*storage.Event) ([]clientEvent, error) {
	p, err := f.prepare(ctx, evs)
	if err != nil {
		return nil, err
	}
	out := make([]clientEvent, 0, len(evs))
	for _, e := range evs {
		ce := f.core(e)
		if ce.Unsigned, err = f.unsignedFor(ctx, nil, e, p); err != nil {
			return nil, err
		}
		out = append(out, ce)
	}
	return out, nil
}

// formatPrep is what a batch's unsigned needs, read once per batch.
type formatPrep struct {
	extra       map[string]*storage.Event // replaced state, redactions
	bundles     map[string]map[string]any
	memberships map[int64]string // state group → viewer's membership
}

// prepare fetches the extra events unsigned needs (replaced state,
// redactions) and the bundled aggregations of a batch.
func (f *eventFormatter) prepare(ctx context.Context, evs []*storage.Event) (*formatPrep, error) {
	var need []string
	for _, e := range evs {
		if e.ReplacesState != "" {
			need = append(need, e.ReplacesState)
		}
		if e.RedactedBy != "" {
			need = append(need, e.RedactedBy)
		}
	}
	p := &formatPrep{extra: map[string]*storage.Event{}, memberships: map[int64]string{}}
	if len(need) > 0 {
		got, err := f.store.EventsByID(ctx, need)
		if err != nil {
			return nil, err
		}
		for _, e := range got {
			p.extra[e.EventID] = e
		}
	}
	if !f.noBundles {
		var err error
		if p.bundles, err = f.bundledAggregations(ctx, evs); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// unsignedFor is e's unsigned for the viewer: its own fields, bundled
// relations and the viewer's membership at it, written into u, emptied
// first, unless u is nil (formatJSON's one map for a batch's events, each
// written out before the next).
func (f *eventFormatter) unsignedFor(ctx context.Context, u map[string]any, e *storage.Event, p *formatPrep) (map[string]any, error) {
	u = f.unsigned(u, e, p.extra)
	if b := p.bundles[e.EventID]; b != nil {
		u["m.relations"] = b
	}
	if f.viewer != nil {
		m, ok := p.memberships[e.StateGroup]
		if !ok {
			var err error
			if f.membershipAt != nil {
				m, err = f.membershipAt(ctx, e.StateGroup)
			} else {
				m, err = f.store.MembershipInGroup(ctx, e.StateGroup, f.viewer.UserID)
			}
			if err != nil {
				return nil, err
			}
			p.memberships[e.StateGroup] = m
		}
		// unsigned.membership (spec v1.11): the viewer's membership
		// at the event, "leave" when they had none.
		if m == "" {
			m = "leave"
		}
		u["membership"] = m
	}
	return u, nil
}

// pduFields are the PDU keys the client format keeps.
type pduFields struct {
	Content json.RawMessage `json:"content"`
	Redacts string          `json:"redacts"`
}

func (f *eventFormatter) one(e *storage.Event, extra map[string]*storage.Event) clientEvent {
	ce := f.core(e)
	ce.Unsigned = f.unsigned(nil, e, extra)
	return ce
}

// core is e's client format without unsigned: the same for every viewer.
func (f *eventFormatter) core(e *storage.Event) clientEvent {
	content, redacts := pduContent(e)
	ce := clientEvent{Content: content, EventID: e.EventID, OriginServerTS: e.OriginServerTS, Sender: e.Sender,
		StateKey: e.StateKey, Type: e.Type, Redacts: redacts}
	if !f.omitRoomID {
		ce.RoomID = e.RoomID
	}
	return ce
}

// pduContent is e's content as stored ({} when it has none) and, for a
// redaction, the event it redacts: the top-level key of room versions
// 1-10, or content's since version 11 (clients still read the top level).
// The stored JSON was checked when the event arrived, so the keys are
// looked up, not the whole PDU decoded: for the client format that was
// most of an initial sync's CPU. Content shares e.JSON's bytes, capped so
// an append cannot reach past it.
func pduContent(e *storage.Event) (json.RawMessage, string) {
	content := json.RawMessage("{}")
	if c := gjson.GetBytes(e.JSON, "content"); c.Exists() {
		if c.Index > 0 && c.Index+len(c.Raw) <= len(e.JSON) {
			end := c.Index + len(c.Raw)
			content = e.JSON[c.Index:end:end]
		} else {
			content = json.RawMessage(c.Raw)
		}
	}
	if e.Type != "m.room.redaction" {
		return content, ""
	}
	if r := gjson.GetBytes(e.JSON, "redacts"); r.Type == gjson.String {
		return content, r.Str
	}
	if r := gjson.GetBytes(content, "redacts"); r.Type == gjson.String {
		return content, r.Str
	}
	return content, ""
}

// appendCore appends ce without unsigned as json.Marshal writes it (its
// fields in order, strings and content HTML-escaped; content that is
// already so goes as it is).
func appendCore(dst []byte, ce *clientEvent) ([]byte, error) {
	dst = append(dst, `{"content":`...)
	if marshalledJSON(ce.Content) {
		dst = append(dst, ce.Content...)
	} else {
		c, err := json.Marshal(ce.Content)
		if err != nil {
			return nil, err
		}
		dst = append(dst, c...)
	}
	dst = append(dst, `,"event_id":`...)
	dst = appendJSONString(dst, ce.EventID)
	dst = append(dst, `,"origin_server_ts":`...)
	dst = strconv.AppendInt(dst, ce.OriginServerTS, 10)
	if ce.RoomID != "" {
		dst = append(dst, `,"room_id":`...)
		dst = appendJSONString(dst, ce.RoomID)
	}
	dst = append(dst, `,"sender":`...)
	dst = appendJSONString(dst, ce.Sender)
	if ce.StateKey != nil {
		dst = append(dst, `,"state_key":`...)
		dst = appendJSONString(dst, *ce.StateKey)
	}
	dst = append(dst, `,"type":`...)
	dst = appendJSONString(dst, ce.Type)
	if ce.Redacts != "" {
		dst = append(dst, `,"redacts":`...)
		dst = appendJSONString(dst, ce.Redacts)
	}
	return append(dst, '}'), nil
}

// unsigned is e's unsigned without bundles and membership: its age, the
// transaction ID for the sender's own device, and what the extra events
// give (prev_content, redacted_because); written into u, emptied first,
// or into a new map when u is nil.
func (f *eventFormatter) unsigned(u map[string]any, e *storage.Event, extra map[string]*storage.Event) map[string]any {
	if u == nil {
		u = make(map[string]any, 2)
	} else {
		clear(u)
	}
	u["age"] = max(f.now.UnixMilli()-e.OriginServerTS, 0)
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
			sub := &eventFormatter{store: f.store, viewer: f.viewer, now: f.now, omitRoomID: f.omitRoomID, visible: f.visible, shared: f.shared, membershipAt: f.membershipAt}
			u["redacted_because"] = sub.one(r, nil)
		}
	}
	return u
}
