package rooms

import "encoding/json/jsontext"

// ClientEvent is the client-server API format of an event (ClientEvent in
// the spec; room_id is omitted by /sync's ClientEventWithoutRoomID by
// leaving RoomID empty).
type ClientEvent struct {
	Content        jsontext.Value `json:"content"`
	EventID        string         `json:"event_id"`
	OriginServerTS int64          `json:"origin_server_ts"`
	RoomID         string         `json:"room_id,omitempty"`
	Sender         string         `json:"sender"`
	StateKey       *string        `json:"state_key,omitempty"`
	Type           string         `json:"type"`
	Redacts        string         `json:"redacts,omitempty"`
	Unsigned       jsontext.Value `json:"unsigned,omitempty"`
}

// ClientEvent converts the event for clients. unsigned is supplied by the
// caller (age, transaction_id, redacted_because, ...); nil omits it. For
// redactions, redacts is given at the top level in every room version, as
// clients of v11+ rooms also expect it there for compatibility.
func (e *Event) ClientEvent(unsigned jsontext.Value) ClientEvent {
	return ClientEvent{
		Content:        e.Content(),
		EventID:        e.ID(),
		OriginServerTS: e.OriginServerTS(),
		RoomID:         e.RoomID(),
		Sender:         e.Sender(),
		StateKey:       e.f.StateKey,
		Type:           e.Type(),
		Redacts:        e.Redacts(),
		Unsigned:       unsigned,
	}
}
