package rooms

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json/jsontext"
	"encoding/json/v2"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// SigningKey is a server's ed25519 signing key.
type SigningKey struct {
	ServerName string
	KeyID      string // "ed25519:abcd"
	Private    ed25519.PrivateKey
}

// SigningKeyFromSeed builds a signing key from a 32-byte ed25519 seed.
func SigningKeyFromSeed(serverName, keyID string, seed []byte) (SigningKey, error) {
	if len(seed) != ed25519.SeedSize {
		return SigningKey{}, fmt.Errorf("ed25519 seed must be %d bytes, got %d", ed25519.SeedSize, len(seed))
	}
	return SigningKey{ServerName: serverName, KeyID: keyID, Private: ed25519.NewKeyFromSeed(seed)}, nil
}

// Public returns the public key in unpadded base64, as published in
// /_matrix/key/v2/server.
func (k SigningKey) Public() string {
	return base64.RawStdEncoding.EncodeToString(k.Private.Public().(ed25519.PublicKey))
}

// SignJSON signs a JSON object with the spec's "Signing JSON" algorithm
// (signatures and unsigned removed, canonical JSON, ed25519) and returns the
// object with the signature added under signatures[server][keyID].
func SignJSON(raw []byte, key SigningKey) (jsontext.Value, error) {
	b, err := withoutKeys(raw, "signatures", "unsigned")
	if err != nil {
		return nil, err
	}
	c, err := canonicalBytes(nil, b)
	if err != nil {
		return nil, err
	}
	return addSignature(raw, key, ed25519.Sign(key.Private, c))
}

// VerifyJSON checks serverName's signature with key keyID on a signed JSON
// object (spec appendices, "Checking for a signature": signatures and
// unsigned removed, canonical JSON, ed25519). Every failure wraps
// ErrSignature.
func VerifyJSON(raw []byte, serverName, keyID string, pub ed25519.PublicKey) error {
	var obj struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return fmt.Errorf("%w: %w", ErrSignature, err)
	}
	sig, ok := obj.Signatures[serverName][keyID]
	if !ok {
		return fmt.Errorf("%w: no signature from %s with key %s", ErrSignature, serverName, keyID)
	}
	b, err := withoutKeys(raw, "signatures", "unsigned")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSignature, err)
	}
	c, err := canonicalBytes(nil, b)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSignature, err)
	}
	return VerifyBytes(c, sig, pub)
}

// VerifyBytes checks an unpadded base64 ed25519 signature (padding is
// tolerated) over msg. Every failure wraps ErrSignature.
func VerifyBytes(msg []byte, sig string, pub ed25519.PublicKey) error {
	raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(sig, "="))
	if err != nil || len(raw) != ed25519.SignatureSize {
		return fmt.Errorf("%w: signature is not %d bytes of base64", ErrSignature, ed25519.SignatureSize)
	}
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: public key is not %d bytes", ErrSignature, ed25519.PublicKeySize)
	}
	if !ed25519.Verify(pub, msg, raw) {
		return fmt.Errorf("%w: bad signature", ErrSignature)
	}
	return nil
}

func addSignature(raw []byte, key SigningKey, sig []byte) (jsontext.Value, error) {
	var obj map[string]jsontext.Value
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, err
	}
	sigs, err := withSignature(obj["signatures"], key, sig)
	if err != nil {
		return nil, err
	}
	obj["signatures"] = sigs
	return json.Marshal(obj, json.Deterministic(true))
}

// withSignature returns the signatures object old (nil: none yet) with
// key's signature sig added beside the others, in canonical JSON.
func withSignature(old []byte, key SigningKey, sig []byte) (jsontext.Value, error) {
	if old == nil {
		// The usual case, this server's event: the one signature written
		// as the map below would be.
		b, err := quoteCanonical(append(make([]byte, 0, 160), '{'), key.ServerName)
		if err == nil {
			b, err = quoteCanonical(append(b, ":{"...), key.KeyID)
		}
		if err != nil {
			return nil, err
		}
		b = base64.RawStdEncoding.AppendEncode(append(b, ":\""...), sig)
		return append(b, "\"}}"...), nil
	}
	var sigs map[string]map[string]string
	if err := json.Unmarshal(old, &sigs); err != nil {
		return nil, fmt.Errorf("%w: signatures: %w", ErrBadEvent, err)
	}
	if sigs == nil {
		sigs = map[string]map[string]string{}
	}
	if sigs[key.ServerName] == nil {
		sigs[key.ServerName] = map[string]string{}
	}
	sigs[key.ServerName][key.KeyID] = base64.RawStdEncoding.EncodeToString(sig)
	enc, err := json.Marshal(sigs, json.Deterministic(true))
	if err != nil {
		return nil, err
	}
	return canonicalOwned(nil, enc)
}

// SignEvent signs the redacted form of a PDU (spec "Signing events") and
// returns the PDU with the signature added. hashes must already be set.
func SignEvent(rv *RoomVersion, raw []byte, key SigningKey) (jsontext.Value, error) {
	in, err := signingInput(rv, raw)
	if err != nil {
		return nil, err
	}
	return addSignature(raw, key, ed25519.Sign(key.Private, in))
}

// KeyLookup returns a server's public ed25519 key for a key ID, and the
// key's valid_until_ts in milliseconds (0 if unknown). minValidTS is the
// event's origin_server_ts, a hint for which key version is needed.
type KeyLookup func(serverName, keyID string, minValidTS int64) (ed25519.PublicKey, int64, error)

// ErrSignature is wrapped by every signature verification failure.
var ErrSignature = errors.New("signature check failed")

// RequiredSignatureServers lists the servers whose signatures an event must
// carry (server-server spec "Validating hashes and signatures on received
// events"): the sender's server; for v1/v2 the server of the event ID; and
// for v8+ joins authorised via join_authorised_via_users_server, that user's
// server.
func RequiredSignatureServers(e *Event) []string {
	servers := []string{serverOf(e.Sender())}
	add := func(s string) {
		for _, x := range servers {
			if x == s {
				return
			}
		}
		servers = append(servers, s)
	}
	if e.version.EventIDs == EventIDRandom {
		add(serverOf(e.id))
	}
	if e.version.RestrictedJoins && e.Type() == TypeMember && e.Membership() == MembershipJoin {
		if via := contentString(e.Content(), "join_authorised_via_users_server"); via != "" {
			add(serverOf(via))
		}
	}
	return servers
}

// VerifyServerSignature checks that the event carries at least one valid
// ed25519 signature from serverName over its redacted form. For v5+ the key
// must be valid at the event's origin_server_ts.
func VerifyServerSignature(e *Event, serverName string, keys KeyLookup) error {
	sigs := e.f.Signatures[serverName]
	if len(sigs) == 0 {
		return fmt.Errorf("%w: no signature from %s", ErrSignature, serverName)
	}
	in, err := signingInput(e.version, e.raw)
	if err != nil {
		return err
	}
	var errs []error
	for keyID, sig := range sigs {
		if !strings.HasPrefix(keyID, "ed25519:") {
			continue
		}
		pub, validUntil, err := keys(serverName, keyID, e.f.OriginServerTS)
		if err != nil {
			errs = append(errs, fmt.Errorf("key %s of %s: %w", keyID, serverName, err))
			continue
		}
		if e.version.EnforceKeyValidity && validUntil < e.f.OriginServerTS {
			errs = append(errs, fmt.Errorf("key %s of %s expired at %d, before the event (%d)", keyID, serverName, validUntil, e.f.OriginServerTS))
			continue
		}
		raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(sig, "="))
		if err != nil || len(pub) != ed25519.PublicKeySize {
			errs = append(errs, fmt.Errorf("key %s of %s: undecodable signature or key", keyID, serverName))
			continue
		}
		if ed25519.Verify(pub, in, raw) {
			return nil
		}
		errs = append(errs, fmt.Errorf("key %s of %s: bad signature", keyID, serverName))
	}
	return fmt.Errorf("%w: no valid signature from %s: %w", ErrSignature, serverName, errors.Join(errs...))
}

// VerifySignatures checks the signatures of every required server.
func VerifySignatures(e *Event, keys KeyLookup) error {
	for _, s := range RequiredSignatureServers(e) {
		if err := VerifyServerSignature(e, s, keys); err != nil {
			return err
		}
	}
	return nil
}

// CheckReceived performs steps 2–3 of "Checks performed on receipt of a PDU"
// on a parsed event: signatures must verify (else the event is dropped with
// an error); if the content hash does not match, the redacted event is
// returned in its place, as the spec requires.
func CheckReceived(e *Event, keys KeyLookup) (*Event, error) {
	if err := VerifySignatures(e, keys); err != nil {
		return nil, err
	}
	if e.VerifyContentHash() {
		return e, nil
	}
	return RedactEvent(e)
}

// EventTemplate is everything a local event needs before hashing and signing.
type EventTemplate struct {
	RoomID   string // ignored for a v12 m.room.create (its room ID is derived)
	Type     string
	StateKey *string
	Sender   string
	Content  any // marshalled to a JSON object; jsontext.Value is used as is
	// Redacts is the target of an m.room.redaction; placed at the top level
	// before v11 and into content from v11.
	Redacts        string
	PrevEvents     []string
	AuthEvents     []string
	Depth          int64
	OriginServerTS int64
	// RefHashes supplies, for v1/v2 rooms only, the unpadded base64
	// reference hash of every event named in PrevEvents and AuthEvents.
	RefHashes map[string]string
}

// BuildEvent creates a local event: fills hashes.sha256, signs the redacted
// form with key and derives the event ID for the room version.
func BuildEvent(rv *RoomVersion, t EventTemplate, key SigningKey) (*Event, error) {
	obj, err := eventObject(rv, t)
	if err != nil {
		return nil, err
	}
	return finishEvent(rv, obj, key)
}

// CompleteProto turns the unsigned event another server made for this one
// (the answer to make_join, make_leave, make_knock) into this server's
// event: content replaces the template's when not nil, then the event ID
// (v1/v2), hashes and this server's signature are added.
func CompleteProto(rv *RoomVersion, proto []byte, content any, key SigningKey) (*Event, error) {
	var obj map[string]any
	if err := json.Unmarshal(proto, &obj); err != nil {
		return nil, fmt.Errorf("%w: template: %w", ErrBadEvent, err)
	}
	delete(obj, "hashes")
	delete(obj, "signatures")
	delete(obj, "unsigned")
	delete(obj, "event_id")
	if content != nil {
		c, err := marshalContent(content)
		if err != nil {
			return nil, err
		}
		obj["content"] = c
	}
	return finishEvent(rv, obj, key)
}

// finishEvent adds the event ID (v1/v2), the content hash and key's
// signature to an event object, and holds it to the spec's size limits.
func finishEvent(rv *RoomVersion, obj map[string]any, key SigningKey) (*Event, error) {
	raw, in, err := signObject(rv, obj, key)
	if err != nil {
		return nil, err
	}
	// The reference hash is of the signing input just signed: the signature
	// added since is left out of it, so it need not be computed again.
	var id string
	if rv.EventIDs != EventIDRandom {
		id = "$" + encodeHash(rv, sha256.Sum256(in))
	}
	// raw is canonical JSON already, so its length is the one the size
	// limit counts, and parseEvent need not encode it again.
	if len(raw) > maxPDUSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrEventTooLarge, len(raw))
	}
	e, err := parseEvent(rv, raw, id, true)
	if err != nil {
		return nil, err
	}
	if err := e.checkNoNUL(); err != nil {
		return nil, err
	}
	if err := e.checkFieldBytes(); err != nil {
		return nil, err
	}
	return e, nil
}

// signObject adds the event ID (random IDs), the content hash and key's
// signature to an event object and returns its canonical JSON, and the
// signing input (signingInput) it signed. Each member is made canonical
// once (canonicalMembers); the content hash, the signing input and the
// signed event are then put together from them, which is canonical JSON
// again: members in the same order, none encoded twice.
func signObject(rv *RoomVersion, obj map[string]any, key SigningKey) (raw, in []byte, err error) {
	if rv.EventIDs == EventIDRandom {
		obj["event_id"] = "$" + randomString(18) + ":" + key.ServerName
	}
	ms, err := canonicalMembers(obj)
	if err != nil {
		return nil, nil, err
	}
	h := sha256.Sum256(ms.join(nil, "unsigned", "signatures", "hashes"))
	ms = ms.set("hashes", []byte(`{"sha256":"`+base64.RawStdEncoding.EncodeToString(h[:])+`"}`))
	if in, err = ms.signingInput(rv); err != nil {
		return nil, nil, err
	}
	old, _ := ms.get("signatures") // others' signatures, kept beside this server's
	sigs, err := withSignature(old, key, ed25519.Sign(key.Private, in))
	if err != nil {
		return nil, nil, err
	}
	return ms.set("signatures", sigs).join(nil), in, nil
}

// canonicalMembers is the members of obj in canonical JSON, in canonical
// order: joined, the object encoded whole and made canonical
// (canonicalOwned of json.Marshal), without encoding and parsing the
// whole event to get there. What an event template holds
// (strings, integers, lists of strings) is written as it is, its content
// made canonical on its own, and anything else (another server's
// template, signatures, unsigned) through json.Marshal first. Names sort
// by their UTF-8 bytes, as Go compares strings.
func canonicalMembers(obj map[string]any) (objMembers, error) {
	names := slices.Sorted(maps.Keys(obj))
	// Room for an event's members and the two signObject adds.
	ms := make(objMembers, 0, max(16, len(names)+2))
	for _, name := range names {
		rawName, err := quoteCanonical(nil, name)
		if err != nil {
			return nil, err
		}
		value, err := canonicalValue(obj[name])
		if err != nil {
			return nil, err
		}
		ms = append(ms, objMember{name: name, rawName: rawName, value: value})
	}
	return ms, nil
}

// canonicalValue is v in canonical JSON.
func canonicalValue(v any) ([]byte, error) {
	switch v := v.(type) {
	case string:
		return quoteCanonical(nil, v)
	case int64:
		// Canonical JSON's integers: -(2^53)+1 to 2^53-1.
		if v <= -1<<53 || v >= 1<<53 {
			return nil, fmt.Errorf("%w: not canonical-JSON encodable: number too large: %d", ErrBadEvent, v)
		}
		return strconv.AppendInt(nil, v, 10), nil
	case []string:
		b := append(make([]byte, 0, 64), '[')
		for i, s := range v {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = quoteCanonical(b, s); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	case jsontext.Value:
		// canonicalOwned formats in place: the content may be a
		// request's body.
		return canonicalBytes(nil, v)
	}
	enc, err := json.Marshal(v, json.Deterministic(true))
	if err != nil {
		return nil, fmt.Errorf("%w: not canonical-JSON encodable: %w", ErrBadEvent, err)
	}
	return canonicalOwned(nil, enc)
}

// quoteCanonical appends s as a canonical JSON string: the shortest
// escaping, which is what making a value canonical gives its strings.
func quoteCanonical(dst []byte, s string) ([]byte, error) {
	b, err := jsontext.AppendQuote(dst, s)
	if err != nil {
		return nil, fmt.Errorf("%w: not canonical-JSON encodable: %w", ErrBadEvent, err)
	}
	return b, nil
}

// objMember is one member of a JSON object in canonical form: its name
// unquoted, and its name and value as they appear in the object.
type objMember struct {
	name           string
	rawName, value []byte
}

// objMembers are the members of a canonical JSON object, in its order
// (names sorted by their UTF-8 bytes).
type objMembers []objMember

// get returns the value of the member called name.
func (ms objMembers) get(name string) ([]byte, bool) {
	for _, m := range ms {
		if m.name == name {
			return m.value, true
		}
	}
	return nil, false
}

// set returns ms with the member called name (a plain ASCII name) given
// the canonical value, replaced in place or added in order.
func (ms objMembers) set(name string, value []byte) objMembers {
	i := 0
	for ; i < len(ms) && ms[i].name < name; i++ {
	}
	if i < len(ms) && ms[i].name == name {
		ms[i].value = value
		return ms
	}
	return slices.Insert(ms, i, objMember{name: name, rawName: []byte(strconv.Quote(name)), value: value})
}

// join appends the object of ms, less the members named in omit, to dst.
func (ms objMembers) join(dst []byte, omit ...string) []byte {
	n := len(dst) + 2
	for _, m := range ms {
		n += len(m.rawName) + len(m.value) + 2
	}
	dst = slices.Grow(dst, n-len(dst))
	dst = append(dst, '{')
	first := true
	for _, m := range ms {
		if slices.Contains(omit, m.name) {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(append(append(dst, m.rawName...), ':'), m.value...)
	}
	return append(dst, '}')
}

// signingInput is signingInput of the event ms holds: the redaction
// algorithm's members, the content redacted, without signatures. An event
// without a content object or a string type takes the long way.
func (ms objMembers) signingInput(rv *RoomVersion) ([]byte, error) {
	content, ok := ms.get("content")
	rawType, typed := ms.get("type")
	var typ string
	if !ok || !typed || json.Unmarshal(rawType, &typ) != nil || jsontext.Value(content).Kind() != '{' {
		return signingInput(rv, ms.join(nil))
	}
	keep := rv.redactKeep()
	red := pdu.RedactContent(typ, jsontext.Value(content), id.RoomVersion(rv.ID))
	if !bytes.Equal(red, content) && string(red) != "{}" {
		var err error
		if red, err = canonicalBytes(rv, red); err != nil {
			return nil, err
		}
	}
	kept := make(objMembers, 0, len(keep))
	for _, m := range ms {
		switch {
		case m.name == "signatures" || !slices.Contains(keep, m.name):
		case m.name == "content":
			kept = append(kept, objMember{name: m.name, rawName: m.rawName, value: red})
		default:
			kept = append(kept, m)
		}
	}
	return kept.join(nil), nil
}

// BuildProto renders an event template as the unsigned event a server
// answers make_join, make_leave and make_knock with: no hashes, no
// signatures and no event ID (the joining server adds them).
func BuildProto(rv *RoomVersion, t EventTemplate) (jsontext.Value, error) {
	obj, err := eventObject(rv, t)
	if err != nil {
		return nil, err
	}
	return json.Marshal(obj, json.Deterministic(true))
}

// eventObject is the event of a template as a JSON object, before hashes,
// signatures and (v1/v2) the event ID.
func eventObject(rv *RoomVersion, t EventTemplate) (map[string]any, error) {
	content, err := marshalContent(t.Content)
	if err != nil {
		return nil, err
	}
	if t.Redacts != "" {
		// v11+ carries redacts in content; earlier versions at the top level only.
		var c map[string]jsontext.Value
		if err := json.Unmarshal(content, &c); err != nil {
			return nil, err
		}
		if rv.RedactsInContent {
			c["redacts"], _ = json.Marshal(t.Redacts)
		} else {
			delete(c, "redacts")
		}
		if content, err = json.Marshal(c, json.Deterministic(true)); err != nil {
			return nil, err
		}
	}
	obj := map[string]any{
		"type":             t.Type,
		"sender":           t.Sender,
		"content":          content,
		"depth":            t.Depth,
		"origin_server_ts": t.OriginServerTS,
	}
	if t.StateKey != nil {
		obj["state_key"] = *t.StateKey
	}
	if t.Redacts != "" && !rv.RedactsInContent {
		obj["redacts"] = t.Redacts
	}
	isV12Create := rv.RoomIDFromCreateEvent && t.Type == TypeCreate && t.StateKey != nil && *t.StateKey == ""
	if !isV12Create {
		if t.RoomID == "" {
			return nil, errors.New("rooms: BuildEvent needs a room ID")
		}
		obj["room_id"] = t.RoomID
	}
	if rv.EventIDs == EventIDRandom {
		ref := func(ids []string) ([]any, error) {
			out := make([]any, 0, len(ids))
			for _, id := range ids {
				h, ok := t.RefHashes[id]
				if !ok {
					return nil, fmt.Errorf("rooms: no reference hash for %s", id)
				}
				out = append(out, []any{id, map[string]string{"sha256": h}})
			}
			return out, nil
		}
		var err error
		if obj["prev_events"], err = ref(t.PrevEvents); err != nil {
			return nil, err
		}
		if obj["auth_events"], err = ref(t.AuthEvents); err != nil {
			return nil, err
		}
	} else {
		obj["prev_events"] = nonNil(t.PrevEvents)
		obj["auth_events"] = nonNil(t.AuthEvents)
	}
	return obj, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func marshalContent(c any) (jsontext.Value, error) {
	var raw jsontext.Value
	switch v := c.(type) {
	case nil:
		return jsontext.Value("{}"), nil
	case jsontext.Value:
		raw = v
	case []byte:
		raw = v
	default:
		var err error
		if raw, err = json.Marshal(v, json.Deterministic(true)); err != nil {
			return nil, err
		}
	}
	if raw.Kind() != '{' {
		return nil, errors.New("rooms: content must be a JSON object")
	}
	return raw, nil
}

const idAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

func randomString(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = idAlphabet[int(b[i])%len(idAlphabet)]
	}
	return string(b)
}
