package rooms

import (
	"encoding/json/jsontext"
	"encoding/json/v2"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/tidwall/gjson"

	"hearth/server/matrix"
)

// StateKey identifies an entry of room state (matrix.StateKey, shared
// with storage).
type StateKey = matrix.StateKey

// Event is a PDU of a known room version. It keeps the JSON exactly as built
// or received (hashes and signatures are computed over it) plus the parsed
// fields the auth rules and state resolution need. Events are immutable;
// Rejected is metadata kept by storage, not part of the PDU.
type Event struct {
	raw     jsontext.Value
	id      string
	roomID  string
	version *RoomVersion
	f       eventFields
	prev    []string
	auth    []string

	// Rejected marks an event that failed the checks on receipt of a PDU.
	// Rejected events are never used as auth events.
	Rejected bool

	// levels is what EffectivePowerLevels made of this power levels
	// event, kept for the next call (every event sent into the room).
	levels atomic.Pointer[levelsMemo]
}

type eventFields struct {
	RoomID         string                       `json:"room_id"`
	Sender         string                       `json:"sender"`
	Type           string                       `json:"type"`
	StateKey       *string                      `json:"state_key"`
	Content        jsontext.Value               `json:"content"`
	PrevEvents     jsontext.Value               `json:"prev_events"`
	AuthEvents     jsontext.Value               `json:"auth_events"`
	Depth          int64                        `json:"depth"`
	OriginServerTS int64                        `json:"origin_server_ts"`
	Redacts        string                       `json:"redacts"`
	EventID        string                       `json:"event_id"`
	Hashes         map[string]string            `json:"hashes"`
	Signatures     map[string]map[string]string `json:"signatures"`
}

// ErrBadEvent wraps every structural problem found when parsing a PDU.
var ErrBadEvent = errors.New("malformed event")

// ErrEventTooLarge is wrapped when a PDU exceeds the spec's size limits
// (65536 bytes of canonical JSON; 255 bytes for sender, room_id, type,
// state_key and event_id, counted in codepoints for other servers' events).
// Client endpoints map it to M_TOO_LARGE.
var ErrEventTooLarge = errors.New("event too large")

const (
	maxPDUSize   = 65536
	maxFieldSize = 255
)

// idFields are the fields the spec limits to 255 bytes, by name.
func (e *Event) idFields() map[string]string {
	sk := ""
	if e.f.StateKey != nil {
		sk = *e.f.StateKey
	}
	return map[string]string{"sender": e.f.Sender, "room_id": e.f.RoomID, "type": e.f.Type, "state_key": sk, "event_id": e.f.EventID}
}

// checkFieldBytes holds an event this server builds to the spec's limit:
// 255 bytes for sender, room_id, type, state_key and event_id.
func (e *Event) checkFieldBytes() error {
	for name, v := range e.idFields() {
		if len(v) > maxFieldSize {
			return fmt.Errorf("%w: %s is %d bytes", ErrEventTooLarge, name, len(v))
		}
	}
	return nil
}

// checkNoNUL refuses an event whose sender, room ID, type, state key or
// event ID has a NUL character. No ID has one, and PostgreSQL cannot hold
// one in text: such an event is refused on both engines alike, before a
// store can take it on one and fail it on the other. (Content may hold
// one: it is kept as JSON, escaped.) Events stored already are not held
// to it, so that a room never loses one it has.
func (e *Event) checkNoNUL() error {
	for name, v := range e.idFields() {
		if strings.IndexByte(v, 0) >= 0 {
			return fmt.Errorf("%w: %s has a NUL character", ErrBadEvent, name)
		}
	}
	return nil
}

// ParseEvent parses a PDU in the given room version. It checks the shape of
// the event and that it is canonical-JSON encodable (integers only within
// ±(2^53-1) for v6+), and computes its event ID. It does not check hashes,
// signatures or auth rules.
func ParseEvent(rv *RoomVersion, raw []byte) (*Event, error) {
	return parseEvent(rv, raw, "", false)
}

// ParseStored parses an event this server checked when it stored it, under
// the ID it was stored with: it is neither canonicalised nor hashed again,
// which is most of the cost of parsing (the timeline reads many stored
// events for each one it receives).
func ParseStored(rv *RoomVersion, raw []byte, eventID string) (*Event, error) {
	if eventID == "" {
		return nil, fmt.Errorf("%w: a stored event without its ID", ErrBadEvent)
	}
	return parseEvent(rv, raw, eventID, true)
}

// parseEvent parses an event. id, when not "", is its ID (not derived from
// raw again); stored says it was checked when stored, so is not
// canonicalised again.
func parseEvent(rv *RoomVersion, raw []byte, id string, stored bool) (*Event, error) {
	if rv == nil {
		return nil, fmt.Errorf("%w: no room version", ErrBadEvent)
	}
	raw = append([]byte(nil), raw...)
	var err error
	if !stored {
		canon, err := canonicalBytes(rv, raw)
		if err != nil {
			return nil, err
		}
		if len(canon) > maxPDUSize {
			return nil, fmt.Errorf("%w: %d bytes", ErrEventTooLarge, len(canon))
		}
	}
	e := &Event{raw: raw, version: rv}
	if err := json.Unmarshal(raw, &e.f); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadEvent, err)
	}
	// Other servers' events are held to 255 codepoints, not bytes: Synapse
	// has always counted codepoints, rooms hold events it let through, and
	// refusing one (a prev event, a piece of state) would cut this server
	// off from the room. This server's own events keep to the spec's bytes
	// (finishEvent).
	for name, v := range e.idFields() {
		if n := utf8.RuneCountInString(v); n > maxFieldSize {
			return nil, fmt.Errorf("%w: %s is %d codepoints", ErrEventTooLarge, name, n)
		}
	}
	if !stored {
		if err := e.checkNoNUL(); err != nil {
			return nil, err
		}
	}
	if e.f.Type == "" || e.f.Sender == "" {
		return nil, fmt.Errorf("%w: missing type or sender", ErrBadEvent)
	}
	if len(e.f.Content) == 0 || e.f.Content.Kind() != '{' {
		return nil, fmt.Errorf("%w: content is not an object", ErrBadEvent)
	}
	if e.prev, err = parseRefs(rv, e.f.PrevEvents); err != nil {
		return nil, fmt.Errorf("%w: prev_events: %w", ErrBadEvent, err)
	}
	if e.auth, err = parseRefs(rv, e.f.AuthEvents); err != nil {
		return nil, fmt.Errorf("%w: auth_events: %w", ErrBadEvent, err)
	}
	switch {
	case id != "":
		e.id = id
	case rv.EventIDs == EventIDRandom:
		if !strings.HasPrefix(e.f.EventID, "$") || !strings.Contains(e.f.EventID, ":") {
			return nil, fmt.Errorf("%w: v%s event needs an event_id of the form $opaque:server", ErrBadEvent, rv.ID)
		}
		e.id = e.f.EventID
	default:
		h, err := ReferenceHash(rv, raw)
		if err != nil {
			return nil, err
		}
		e.id = "$" + encodeHash(rv, h)
	}
	e.roomID = e.f.RoomID
	if rv.RoomIDFromCreateEvent && e.IsCreate() {
		if e.f.RoomID != "" {
			return nil, fmt.Errorf("%w: v%s m.room.create must not have room_id", ErrBadEvent, rv.ID)
		}
		e.roomID = "!" + e.id[1:]
	}
	if e.roomID == "" {
		return nil, fmt.Errorf("%w: missing room_id", ErrBadEvent)
	}
	return e, nil
}

func parseRefs(rv *RoomVersion, v jsontext.Value) ([]string, error) {
	if len(v) == 0 || v.Kind() == 'n' {
		return nil, nil
	}
	if rv.EventIDs != EventIDRandom {
		var ids []string
		err := json.Unmarshal(v, &ids)
		return ids, err
	}
	var pairs [][]jsontext.Value
	if err := json.Unmarshal(v, &pairs); err != nil {
		return nil, err
	}
	ids := make([]string, len(pairs))
	for i, p := range pairs {
		if len(p) != 2 {
			return nil, fmt.Errorf("reference %d is not an [event_id, hashes] pair", i)
		}
		if err := json.Unmarshal(p[0], &ids[i]); err != nil {
			return nil, err
		}
	}
	return ids, nil
}

// ID is the event ID ("$…").
func (e *Event) ID() string { return e.id }

// RoomID is the room ID; for v12 create events it is derived from the event ID.
func (e *Event) RoomID() string { return e.roomID }

// Version is the event's room version.
func (e *Event) Version() *RoomVersion { return e.version }

// JSON returns the PDU as built or received. Callers must not modify it.
func (e *Event) JSON() jsontext.Value { return e.raw }

func (e *Event) Type() string              { return e.f.Type }
func (e *Event) Sender() string            { return e.f.Sender }
func (e *Event) Content() jsontext.Value   { return e.f.Content }
func (e *Event) Depth() int64              { return e.f.Depth }
func (e *Event) OriginServerTS() int64     { return e.f.OriginServerTS }
func (e *Event) PrevEventIDs() []string    { return e.prev }
func (e *Event) AuthEventIDs() []string    { return e.auth }
func (e *Event) Hashes() map[string]string { return e.f.Hashes }

// Signatures returns server name → key ID → unpadded base64 signature.
func (e *Event) Signatures() map[string]map[string]string { return e.f.Signatures }

// StateKey returns the state key and whether the event is a state event.
func (e *Event) StateKey() (string, bool) {
	if e.f.StateKey == nil {
		return "", false
	}
	return *e.f.StateKey, true
}

// IsState reports whether the event has a state_key.
func (e *Event) IsState() bool { return e.f.StateKey != nil }

// Key returns the state key pair; only meaningful for state events.
func (e *Event) Key() StateKey {
	sk, _ := e.StateKey()
	return StateKey{Type: e.f.Type, StateKey: sk}
}

// IsCreate reports whether this is the room's m.room.create event.
func (e *Event) IsCreate() bool {
	return e.f.Type == TypeCreate && e.f.StateKey != nil && *e.f.StateKey == ""
}

// Redacts returns the event ID an m.room.redaction targets: the top-level
// redacts key before v11, content.redacts from v11.
func (e *Event) Redacts() string {
	if e.version.RedactsInContent {
		return gjson.GetBytes(e.f.Content, "redacts").Str
	}
	return e.f.Redacts
}

// Membership returns content.membership of an m.room.member event.
func (e *Event) Membership() string {
	return contentString(e.f.Content, "membership")
}

// contentString reads a top-level string field of content; it does not
// interpret dots in key names.
func contentString(content jsontext.Value, key string) string {
	r := gjson.GetBytes(content, gjsonKey(key))
	if r.Type != gjson.String {
		return ""
	}
	return r.Str
}

// gjsonKey escapes a literal object key for use as a gjson path.
func gjsonKey(k string) string {
	var b strings.Builder
	for _, c := range k {
		switch c {
		case '.', '*', '?', '|', '#', '@', '\\', '!', '=', '<', '>', '%', ':':
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// serverOf returns the server name of a user or room ID ("@u:server" → "server").
func serverOf(id string) string {
	if i := strings.IndexByte(id, ':'); i >= 0 {
		return id[i+1:]
	}
	return ""
}
