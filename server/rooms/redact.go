package rooms

import (
	"encoding/json/jsontext"
	"encoding/json/v2"
	"fmt"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// Top-level keys kept by the redaction algorithm (spec "Redactions" of each
// room version): v1–10 also keep prev_state, origin and membership.
var (
	redactKeepV1  = []string{"event_id", "type", "room_id", "sender", "state_key", "content", "hashes", "signatures", "depth", "prev_events", "prev_state", "auth_events", "origin", "origin_server_ts", "membership"}
	redactKeepV11 = []string{"event_id", "type", "room_id", "sender", "state_key", "content", "hashes", "signatures", "depth", "prev_events", "auth_events", "origin_server_ts"}
)

// redactKeep is the top-level keys the room version's redaction keeps.
func (rv *RoomVersion) redactKeep() []string {
	if rv.Redaction >= RedactV11 {
		return redactKeepV11
	}
	return redactKeepV1
}

// Redact applies the room version's redaction algorithm to a PDU and returns
// the redacted JSON (unsigned is dropped, signatures and hashes are kept).
//
// The content rules come from mautrix's pdu.RedactContent, which implements
// the per-version content allow-lists of the spec (checked in
// redact_test.go); the top-level rule is done here on the raw object so
// that keys the mautrix PDU struct does not model are handled exactly.
func Redact(rv *RoomVersion, raw []byte) (jsontext.Value, error) {
	var obj map[string]jsontext.Value
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadEvent, err)
	}
	keep := rv.redactKeep()
	out := make(map[string]jsontext.Value, len(keep))
	for _, k := range keep {
		if v, ok := obj[k]; ok {
			out[k] = v
		}
	}
	var typ string
	if t, ok := obj["type"]; ok {
		if err := json.Unmarshal(t, &typ); err != nil {
			return nil, fmt.Errorf("%w: type: %w", ErrBadEvent, err)
		}
	}
	if c, ok := obj["content"]; ok {
		out["content"] = pdu.RedactContent(typ, c, id.RoomVersion(rv.ID))
	}
	return json.Marshal(out, json.Deterministic(true))
}

// RedactEvent returns the redacted form of an event, for serving an event
// whose redaction has been accepted or whose content hash does not match.
func RedactEvent(e *Event) (*Event, error) {
	raw, err := Redact(e.version, e.raw)
	if err != nil {
		return nil, err
	}
	r, err := ParseEvent(e.version, raw)
	if err != nil {
		return nil, err
	}
	r.Rejected = e.Rejected
	return r, nil
}
