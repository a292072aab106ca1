package rooms

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/json/jsontext"
	jsonv2 "encoding/json/v2"
	"errors"
	"io"
	"maps"
	"reflect"
	"slices"
	"testing"
	"unicode/utf8"
)

// Fuzz targets for what other servers control: canonical JSON, event
// parsing per room version, the auth rules and state resolution. Their
// seeds (f.Add) run in every go test; `make fuzz` runs each for FUZZTIME.
// Each checks properties, not only the absence of panics.

// FuzzCanonicalJSON: whatever is accepted comes out as valid JSON with
// the same meaning, object keys sorted by code point, no insignificant
// whitespace, and canonicalising it again changes nothing.
func FuzzCanonicalJSON(f *testing.F) {
	for _, s := range []string{
		`{}`, `[]`, `{"b":1,"a":[1,2,{"d":null,"c":true}]}`, ` { "a" : "\u00e9\u0000\ud83d\ude00" } `,
		`{"big":9007199254740991,"neg":-9007199254740991}`, `{"f":1.5}`, `{"e":1e2}`, `{"z":-0}`,
		`{"dup":1,"dup":2}`, `{"\ud800":1}`, `"\u001f"`, `{"日本":"語","a":"\"\\\/\b\f\n\r\t"}`,
		`[9007199254740992]`, `{"a":{"b":{"c":{"d":[[[[]]]]}}}}`, `{"€":1,"é":2,"z":3,"😀":4}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := CanonicalJSON(in)
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("not valid JSON: %q -> %q", in, out)
		}
		again, err := CanonicalJSON(out)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("not idempotent: %q -> %q -> %q (%v)", in, out, again, err)
		}
		checkCanonicalForm(t, out)
		if utf8.Valid(in) {
			var a, b any
			da, db := json.NewDecoder(bytes.NewReader(in)), json.NewDecoder(bytes.NewReader(out))
			da.UseNumber()
			db.UseNumber()
			if da.Decode(&a) == nil && db.Decode(&b) == nil && !reflect.DeepEqual(normNumbers(a), normNumbers(b)) {
				t.Fatalf("meaning changed: %q -> %q", in, out)
			}
		}
	})
}

// normNumbers turns json.Numbers into their float64 values, so 1e2 and
// 100 compare equal.
func normNumbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return x.String()
		}
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = normNumbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = normNumbers(e)
		}
	}
	return v
}

// checkCanonicalForm walks the tokens of out: object keys strictly
// increasing (by code point, which is UTF-8 byte order), no whitespace
// between tokens, no number with a fraction or exponent.
func checkCanonicalForm(t *testing.T, out []byte) {
	t.Helper()
	if bytes.ContainsAny(out, " \n\r\t") {
		// Whitespace may only appear inside strings.
		dec := jsontext.NewDecoder(bytes.NewReader(out))
		for {
			tok, err := dec.ReadToken()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("re-read %q: %v", out, err)
			}
			_ = tok
		}
		compact := jsontext.Value(slices.Clone(out))
		if err := compact.Compact(); err != nil || !bytes.Equal(compact, out) {
			t.Fatalf("insignificant whitespace in %q", out)
		}
	}
	dec := jsontext.NewDecoder(bytes.NewReader(out))
	type frame struct {
		object  bool
		lastKey *string
		wantKey bool
	}
	var stack []frame
	for {
		tok, err := dec.ReadToken()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("re-read %q: %v", out, err)
		}
		top := len(stack) - 1
		isKey := top >= 0 && stack[top].object && stack[top].wantKey && tok.Kind() == '"'
		if isKey {
			k := tok.String()
			if stack[top].lastKey != nil && *stack[top].lastKey >= k {
				t.Fatalf("keys out of order (%q then %q) in %q", *stack[top].lastKey, k, out)
			}
			stack[top].lastKey = &k
			stack[top].wantKey = false
			continue
		}
		if top >= 0 && stack[top].object {
			stack[top].wantKey = true
		}
		switch tok.Kind() {
		case '{':
			stack = append(stack, frame{object: true, wantKey: true})
		case '[':
			stack = append(stack, frame{})
		case '}', ']':
			stack = stack[:top]
			if len(stack) > 0 && stack[len(stack)-1].object {
				stack[len(stack)-1].wantKey = true
			}
		case '0':
			if bytes.ContainsAny([]byte(tok.String()), ".eE") {
				t.Fatalf("number %s is not an integer in %q", tok.String(), out)
			}
		}
	}
}

// seedEvents are real signed events of a small room, in every room
// version: the seeds of the event fuzzers.
func seedEvents(f *testing.F) [][]byte {
	var out [][]byte
	for _, ver := range allVersions() {
		b := baseRoom(f, ver, JoinRuleInvite)
		e := mustAppend(f, b, "m.room.message", nil, bob, map[string]any{"body": "hi", "msgtype": "m.text"})
		out = append(out, e.JSON())
		for _, se := range b.State {
			out = append(out, se.JSON())
		}
	}
	return out
}

// FuzzParseEvent: an event parsed in some room version keeps its ID when
// parsed again from its own JSON and when redacted (the ID is the hash
// of the redacted form, or a field redaction keeps), and redaction is
// idempotent.
func FuzzParseEvent(f *testing.F) {
	for _, raw := range seedEvents(f) {
		f.Add(raw)
	}
	f.Add([]byte(`{"type":"m.room.member","state_key":"@a:b","content":{"membership":"join"},"prev_events":[],"auth_events":[]}`))
	f.Add([]byte(`{"event_id":"$x:y","prev_events":[["$a:b",{"sha256":"x"}]],"depth":-1}`))
	versions := allVersions()
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, ver := range versions {
			rv := MustVersion(ver)
			e, err := ParseEvent(rv, raw)
			if err != nil {
				continue
			}
			again, err := ParseEvent(rv, e.JSON())
			if err != nil || again.ID() != e.ID() {
				t.Fatalf("v%s: reparse of %q: id %q vs %q, %v", ver, raw, e.ID(), idOf(again), err)
			}
			red, err := RedactEvent(e)
			if err != nil {
				// Content that is not an object, say: redaction may refuse
				// what parsing let through only if parsing then refuses the
				// redacted form too; it must not be a server error.
				if !errors.Is(err, ErrBadEvent) {
					t.Fatalf("v%s: redact of %q: %v", ver, raw, err)
				}
				continue
			}
			if red.ID() != e.ID() {
				t.Fatalf("v%s: redaction changed the event ID %q -> %q for %q", ver, e.ID(), red.ID(), raw)
			}
			twice, err := Redact(rv, red.JSON())
			if err != nil || !bytes.Equal(twice, red.JSON()) {
				t.Fatalf("v%s: redaction not idempotent for %q: %q vs %q (%v)", ver, raw, red.JSON(), twice, err)
			}
		}
	})
}

func idOf(e *Event) string {
	if e == nil {
		return "<nil>"
	}
	return e.ID()
}

// FuzzAuthRules: any event a room member or stranger builds on a real
// room (fuzzed type, state key, sender, content) is judged the same way
// twice; an allowed event from a sender who is not joined is a membership
// change; and allowed power level changes never raise anyone above the
// sender's own level.
func FuzzAuthRules(f *testing.F) {
	versions := allVersions()
	heads := make([]*RoomBuilder, len(versions))
	for i, ver := range versions {
		heads[i] = baseRoom(f, ver, JoinRuleInvite)
	}
	seeds := []struct {
		typ, sk string
		state   bool
		sender  string
		content string
	}{
		{"m.room.message", "", false, bob, `{"body":"x"}`},
		{TypeTopic, "", true, mod, `{"topic":"t"}`},
		{TypeName, "", true, bob, `{"name":"n"}`},
		{TypeMember, dave, true, dave, `{"membership":"join"}`},
		{TypeMember, bob, true, mod, `{"membership":"ban"}`},
		{TypeMember, alice, true, mod, `{"membership":"leave"}`},
		{TypeMember, eve, true, bob, `{"membership":"invite"}`},
		{TypePowerLevels, "", true, mod, `{"users":{"@mod:example.org":100}}`},
		{TypePowerLevels, "", true, alice, `{"users":{"@bob:example.org":"50"},"state_default":1.5}`},
		{TypeJoinRules, "", true, alice, `{"join_rule":"public"}`},
		{TypeRedaction, "", false, mod, `{"redacts":"$abc"}`},
		{TypeCreate, "", true, alice, `{}`},
		{"m.room.third_party_invite", "tok", true, bob, `{"display_name":"x","key_validity_url":"u","public_key":"k"}`},
		{TypeMember, zed, true, zed, `{"membership":"knock"}`},
	}
	for i, s := range seeds {
		f.Add(uint8(i), s.typ, s.sk, s.state, s.sender, []byte(s.content))
	}
	f.Fuzz(func(t *testing.T, vi uint8, typ, sk string, state bool, sender string, content []byte) {
		b := heads[int(vi)%len(heads)]
		var skp *string
		if state {
			skp = &sk
		}
		if !json.Valid(content) {
			return
		}
		tmpl, err := b.Template(typ, skp, sender, json.RawMessage(content))
		if err != nil {
			return
		}
		e, err := BuildEvent(b.Version, tmpl, b.Key)
		if err != nil {
			return
		}
		err1 := AuthorizeAgainstState(e, b.State, nil)
		err2 := AuthorizeAgainstState(e, b.State, nil)
		if ruleOf(err1) != ruleOf(err2) {
			t.Fatalf("judged twice differently: %v / %v", err1, err2)
		}
		if err1 != nil {
			var ae *AuthError
			if !errors.As(err1, &ae) && !errors.Is(err1, ErrBadEvent) {
				t.Fatalf("refusal is neither an auth error nor a bad event: %v", err1)
			}
			return
		}
		if b.State.membership(sender) != MembershipJoin && typ != TypeMember {
			t.Fatalf("v%s: %s from %s (membership %q) allowed", b.Version.ID, typ, sender, b.State.membership(sender))
		}
		if typ == TypePowerLevels && state && sk == "" {
			create := b.State.Get(TypeCreate, "")
			old := EffectivePowerLevels(b.Version, b.State.Get(TypePowerLevels, ""), create)
			pl := EffectivePowerLevels(b.Version, e, create)
			senderLevel := old.UserLevel(sender)
			for u := range pl.Users {
				if pl.UserLevel(u) > senderLevel && old.UserLevel(u) != pl.UserLevel(u) {
					t.Fatalf("v%s: %s (level %d) raised %s to %d", b.Version.ID, sender, senderLevel, u, pl.UserLevel(u))
				}
			}
		}
	})
}

// FuzzStateRes: forks of a real room grow by fuzz-chosen operations;
// resolving their states gives the same state whatever the order of the
// forks and with a fork repeated, and keeps every unconflicted entry.
func FuzzStateRes(f *testing.F) {
	f.Add(uint8(0), []byte{0, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Add(uint8(1), []byte{9, 10, 11, 12, 13, 14, 15, 16, 17, 18})
	f.Add(uint8(5), []byte{2, 5, 8, 11, 14, 17, 20, 23})
	f.Add(uint8(11), []byte{1, 1, 1, 4, 4, 4, 7, 7, 7, 30, 60, 90})
	versions := stateResVersions
	ops := []struct {
		typ     string
		sk      *string
		sender  string
		content map[string]any
	}{
		{TypeTopic, strp(""), alice, map[string]any{"topic": "alice"}},
		{TypeTopic, strp(""), mod, map[string]any{"topic": "mod"}},
		{TypeMember, strp(bob), mod, map[string]any{"membership": "ban"}},
		{TypeMember, strp(mod), alice, map[string]any{"membership": "leave"}},
		{TypeMember, strp(bob), bob, map[string]any{"membership": "leave"}},
		{TypeJoinRules, strp(""), alice, map[string]any{"join_rule": "public"}},
		{TypeMember, strp(dave), alice, map[string]any{"membership": "invite"}},
		{TypeMember, strp(dave), dave, map[string]any{"membership": "join"}},
		{TypeName, strp(""), mod, map[string]any{"name": "mod"}},
		{TypeName, strp(""), alice, map[string]any{"name": "alice"}},
		{"org.example.s", strp("k"), mod, map[string]any{"v": 1}},
		{"org.example.s", strp("k"), alice, map[string]any{"v": 2}},
	}
	// The base rooms are built once: signing them is most of the cost.
	bases := make([]*RoomBuilder, len(versions))
	baseEvents := make([]EventMap, len(versions))
	for i, ver := range versions {
		baseEvents[i] = EventMap{}
		bases[i] = baseRoomInto(f, ver, JoinRulePublic, baseEvents[i])
	}
	f.Fuzz(func(t *testing.T, vi uint8, script []byte) {
		if len(script) > 16 {
			script = script[:16]
		}
		i := int(vi) % len(versions)
		events := maps.Clone(baseEvents[i])
		base := bases[i].Fork()
		base.Sink = func(e *Event) { events.Add(e) }
		powerOps := []map[string]any{
			basePL(base.Version, map[string]any{"state_default": 0}),
			basePL(base.Version, map[string]any{"users": map[string]any{mod: 0}}),
			basePL(base.Version, map[string]any{"users": map[string]any{mod: 50, bob: 50}}),
		}
		forks := []*RoomBuilder{base.Fork(), base.Fork(), base.Fork()}
		for i, fk := range forks {
			at(fk, int64(2_000_000_000_000+i*7))
		}
		for i, c := range script {
			fk := forks[int(c)%len(forks)]
			n := int(c) / len(forks) % (len(ops) + len(powerOps))
			var err error
			if n < len(ops) {
				op := ops[n]
				_, err = fk.Append(op.typ, op.sk, op.sender, op.content)
			} else {
				sender := alice
				if i%2 == 1 {
					sender = mod
				}
				_, err = fk.Append(TypePowerLevels, strp(""), sender, powerOps[n-len(ops)])
			}
			var ae *AuthError
			if err != nil && !errors.As(err, &ae) {
				t.Fatalf("append: %v", err)
			}
		}
		states := []StateMap{stateOf(forks[0]), stateOf(forks[1]), stateOf(forks[2])}
		got, err := ResolveState(t.Context(), base.Version, states, events)
		if err != nil {
			t.Fatalf("resolve: %v", err)
		}
		for _, order := range [][]int{{2, 1, 0}, {1, 0, 2, 1}} {
			var in []StateMap
			for _, i := range order {
				in = append(in, states[i])
			}
			other, err := ResolveState(t.Context(), base.Version, in, events)
			if err != nil {
				t.Fatalf("resolve %v: %v", order, err)
			}
			if !reflect.DeepEqual(got, other) {
				t.Fatalf("v%s: order %v resolves differently:\n%v\n%v", base.Version.ID, order, got, other)
			}
		}
		for k, id := range states[0] {
			if states[1][k] == id && states[2][k] == id && got[k] != id {
				t.Fatalf("unconflicted %v changed from %s to %s", k, id, got[k])
			}
		}
	})
}

// FuzzBuildEvent: an event this server builds or completes (fuzzed room
// version, type, state key and content, with or without another server's
// signature and unsigned data in the object) is canonical JSON; the
// signing input it signed, its content hash and its event ID are what the
// spec's algorithms compute from that JSON (signingInput, ContentHash);
// its signature verifies; and another server's signature is kept.
func FuzzBuildEvent(f *testing.F) {
	f.Add(uint8(10), "m.room.message", "", false, []byte(`{"body":"hi","msgtype":"m.text"}`), false)
	f.Add(uint8(0), "m.room.member", "@a:example.org", true, []byte(`{"membership":"join","displayname":"Ä\u0001\u007f","avatar_url":null}`), true)
	f.Add(uint8(5), "m.room.power_levels", "", true, []byte(`{"users":{"@b:x":100,"@a:x":50},"ban":50,"zzz":[1,{"b":1,"a":2}]}`), true)
	f.Add(uint8(11), "m.room.join_rules", "", true, []byte(`{"join_rule":"restricted","allow":[{"type":"m.room_membership","room_id":"!r:x"}]}`), false)
	f.Add(uint8(2), "m.room.create", "", true, []byte(`{"creator":"@a:x","room_version":"3","€":"\ud83d\ude00","a":-9007199254740991}`), false)
	f.Add(uint8(10), "m.room.create", "", true, []byte(`{"room_version":"11","é":{"z":[],"a":{}}}`), true)
	f.Add(uint8(10), "x\u2028y<&>", "\"quote\\/", true, []byte(` { "b" : 1 , "a" : "\u00e9\/" } `), true)
	f.Add(uint8(1), "m.room.redaction", "", false, []byte(`{"redacts":"$x","reason":"\t"}`), false)
	f.Add(uint8(10), "m.room.message", "", false, []byte(`{"n":1.5}`), false)
	f.Add(uint8(10), "m.room.message", "", false, []byte(`[]`), false)
	f.Add(uint8(10), "m.room.member", "bad \xff utf8", true, []byte(`{"membership":"join"}`), false)
	f.Add(uint8(10), "m.room.message", "", false, []byte(`{"body":"\u0041\u00e9\ud83d\ude00\/\u2028","n":1E2,"dup":1,"a":{"z":1,"y":[{"b":0,"a":-0}]}}`), false)
	key := testKey(f, "example.org")
	pub := key.Private.Public().(ed25519.PublicKey)
	versions := allVersions()
	f.Fuzz(func(t *testing.T, v uint8, typ, stateKey string, state bool, content []byte, others bool) {
		rv := MustVersion(versions[int(v)%len(versions)])
		tmpl := EventTemplate{RoomID: "!r:example.org", Type: typ, Sender: "@a:example.org", Content: jsontext.Value(content),
			PrevEvents: []string{"$p"}, AuthEvents: []string{"$p"}, Depth: 3, OriginServerTS: 1_700_000_000_000}
		if rv.EventIDs == EventIDRandom {
			tmpl.PrevEvents, tmpl.AuthEvents = []string{"$p:example.org"}, []string{"$p:example.org"}
			tmpl.RefHashes = map[string]string{"$p:example.org": "aGFzaA"}
		}
		if state {
			tmpl.StateKey = &stateKey
		}
		obj, err := eventObject(rv, tmpl)
		if err != nil {
			return
		}
		if others {
			obj["signatures"] = map[string]map[string]string{"other.example": {"ed25519:x": "c2ln"}}
			obj["unsigned"] = map[string]any{"age": 5}
		}
		checkCanonicalMembers(t, obj)
		raw, in, err := signObject(rv, obj, key)
		if err != nil {
			return // not encodable (a float, invalid JSON or UTF-8, content not an object)
		}
		if c, err := canonicalBytes(rv, raw); err != nil || !bytes.Equal(c, raw) {
			t.Fatalf("v%s: not canonical JSON: %s (%v)", rv.ID, raw, err)
		}
		if want, err := signingInput(rv, raw); err != nil || !bytes.Equal(in, want) {
			t.Fatalf("v%s: signed %s, the signing input of %s is %s (%v)", rv.ID, in, raw, want, err)
		}
		var got struct {
			Hashes     map[string]string            `json:"hashes"`
			Signatures map[string]map[string]string `json:"signatures"`
			Unsigned   map[string]any               `json:"unsigned"`
		}
		if err := json.Unmarshal(raw, &got); err != nil {
			t.Fatal(err)
		}
		if h, err := ContentHash(raw); err != nil || got.Hashes["sha256"] != base64.RawStdEncoding.EncodeToString(h[:]) {
			t.Fatalf("v%s: hashes %v, content hash of %s is %x (%v)", rv.ID, got.Hashes, raw, h, err)
		}
		if err := VerifyBytes(in, got.Signatures["example.org"][key.KeyID], pub); err != nil {
			t.Fatalf("v%s: %v in %s", rv.ID, err, raw)
		}
		if others && (got.Signatures["other.example"]["ed25519:x"] != "c2ln" || got.Unsigned["age"] != 5.0) {
			t.Fatalf("v%s: another server's signature or unsigned lost: %s", rv.ID, raw)
		}
		if e, err := ParseEvent(rv, raw); err == nil && rv.EventIDs != EventIDRandom {
			if want := "$" + encodeHash(rv, sha256.Sum256(in)); e.ID() != want {
				t.Fatalf("v%s: event ID %s, reference hash gives %s", rv.ID, e.ID(), want)
			}
		}
	})
}

// checkCanonicalMembers: the members canonicalMembers makes of obj, joined,
// are the object encoded whole and made canonical, or both fail.
func checkCanonicalMembers(t *testing.T, obj map[string]any) {
	t.Helper()
	ms, err := canonicalMembers(obj)
	var want []byte
	enc, wantErr := jsonv2.Marshal(obj, jsonv2.Deterministic(true))
	if wantErr == nil {
		want, wantErr = canonicalOwned(nil, enc)
	}
	switch {
	case (err == nil) != (wantErr == nil):
		t.Fatalf("canonicalMembers of %v: error %v, encoding it whole: %v", obj, err, wantErr)
	case err == nil && !bytes.Equal(ms.join(nil), want):
		t.Fatalf("canonicalMembers of %v:\n got %s\nwant %s", obj, ms.join(nil), want)
	case err != nil && !errors.Is(err, ErrBadEvent):
		t.Fatalf("canonicalMembers of %v: %v is not ErrBadEvent", obj, err)
	}
}
