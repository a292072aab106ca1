package rooms

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json/jsontext"
	"encoding/json/v2"
	"errors"
	"fmt"

	"maunium.net/go/mautrix/crypto/canonicaljson"
)

// canonicalBytes encodes JSON per the spec's Canonical JSON (sorted keys by
// code point, no insignificant whitespace, integers only). mautrix's
// canonicaljson also enforces the v6+ integer range and rejects floats.
func canonicalBytes(rv *RoomVersion, raw []byte) ([]byte, error) {
	return canonicalOwned(rv, append([]byte(nil), raw...))
}

// canonicalOwned is canonicalBytes of JSON the caller hands over: raw's
// memory is reused.
func canonicalOwned(_ *RoomVersion, raw []byte) ([]byte, error) {
	v := jsontext.Value(raw)
	if err := canonicaljson.Canonicalize(&v); err != nil {
		return nil, fmt.Errorf("%w: not canonical-JSON encodable: %w", ErrBadEvent, err)
	}
	return v, nil
}

// CanonicalJSON returns the canonical JSON encoding of raw JSON.
func CanonicalJSON(raw []byte) ([]byte, error) { return canonicalBytes(nil, raw) }

func withoutKeys(raw []byte, keys ...string) ([]byte, error) {
	var obj map[string]jsontext.Value
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadEvent, err)
	}
	if obj == nil {
		return nil, fmt.Errorf("%w: not an object", ErrBadEvent)
	}
	for _, k := range keys {
		delete(obj, k)
	}
	return json.Marshal(obj, json.Deterministic(true))
}

// ContentHash computes the SHA-256 content hash of a PDU (spec "Calculating
// the content hash for an event": the event without unsigned, signatures
// and hashes, canonical JSON).
func ContentHash(raw []byte) ([32]byte, error) {
	b, err := withoutKeys(raw, "unsigned", "signatures", "hashes")
	if err != nil {
		return [32]byte{}, err
	}
	c, err := canonicalBytes(nil, b)
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(c), nil
}

// signingInput returns the bytes that are signed and hashed for the
// reference hash: the redacted event without signatures and unsigned, in
// canonical JSON.
func signingInput(rv *RoomVersion, raw []byte) ([]byte, error) {
	red, err := Redact(rv, raw)
	if err != nil {
		return nil, err
	}
	b, err := withoutKeys(red, "signatures", "unsigned")
	if err != nil {
		return nil, err
	}
	return canonicalBytes(rv, b)
}

// ReferenceHash computes the reference hash of a PDU (spec "Calculating the
// reference hash for an event"), from which v3+ event IDs are derived.
func ReferenceHash(rv *RoomVersion, raw []byte) ([32]byte, error) {
	in, err := signingInput(rv, raw)
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(in), nil
}

func encodeHash(rv *RoomVersion, h [32]byte) string {
	if rv.EventIDs == EventIDHashBase64 {
		return base64.RawStdEncoding.EncodeToString(h[:])
	}
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// EventIDFromHash returns the event ID for a reference hash in room
// versions 3+.
func EventIDFromHash(rv *RoomVersion, h [32]byte) (string, error) {
	if rv.EventIDs == EventIDRandom {
		return "", errors.New("room version " + rv.ID + " uses event IDs chosen by the origin server")
	}
	return "$" + encodeHash(rv, h), nil
}

// VerifyContentHash reports whether hashes.sha256 matches the event. A
// mismatch means the event must be redacted before use (not rejected).
func (e *Event) VerifyContentHash() bool {
	want, err := base64.RawStdEncoding.DecodeString(e.f.Hashes["sha256"])
	if err != nil || len(want) != sha256.Size {
		return false
	}
	got, err := ContentHash(e.raw)
	if err != nil {
		return false
	}
	return [32]byte(want) == got
}

// ReferenceHashB64 returns the event's reference hash in unpadded base64,
// as used in v1/v2 [event_id, {"sha256": …}] references.
func (e *Event) ReferenceHashB64() (string, error) {
	h, err := ReferenceHash(e.version, e.raw)
	if err != nil {
		return "", err
	}
	return base64.RawStdEncoding.EncodeToString(h[:]), nil
}
