package rooms

import (
	"encoding/base64"
	"encoding/json/jsontext"
	"encoding/json/v2"
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var (
	reRandomID = regexp.MustCompile(`^\$[A-Za-z0-9]{18}:example\.org$`)
	reStdB64ID = regexp.MustCompile(`^\$[A-Za-z0-9+/]{43}$`)
	reURLB64ID = regexp.MustCompile(`^\$[A-Za-z0-9_-]{43}$`)
)

func TestEventIDFormats(t *testing.T) {
	t.Parallel()
	for _, ver := range allVersions() {
		t.Run(ver, func(t *testing.T) {
			t.Parallel()
			b := baseRoom(t, ver, JoinRulePublic)
			e := mustAppend(t, b, "m.room.message", nil, bob, map[string]any{"body": "hello"})
			rv := b.Version
			var re *regexp.Regexp
			switch rv.EventIDs {
			case EventIDRandom:
				re = reRandomID
			case EventIDHashBase64:
				re = reStdB64ID
			default:
				re = reURLB64ID
			}
			if !re.MatchString(e.ID()) {
				t.Errorf("event ID %q does not match %s", e.ID(), re)
			}
			if rv.EventIDs != EventIDRandom {
				h, err := ReferenceHash(rv, e.JSON())
				if err != nil {
					t.Fatal(err)
				}
				want, _ := EventIDFromHash(rv, h)
				if e.ID() != want {
					t.Errorf("event ID %s, want reference-hash ID %s", e.ID(), want)
				}
			}
			create := b.State.Get(TypeCreate, "")
			if rv.RoomIDFromCreateEvent {
				if b.RoomID != "!"+create.ID()[1:] || e.RoomID() != b.RoomID {
					t.Errorf("v12 room ID %s, create %s, event room %s", b.RoomID, create.ID(), e.RoomID())
				}
				if strings.Contains(string(create.JSON()), `"room_id"`) {
					t.Error("v12 create event carries room_id")
				}
			}
			// Re-parsing the wire form gives the same event.
			p, err := ParseEvent(rv, e.JSON())
			if err != nil {
				t.Fatal(err)
			}
			if p.ID() != e.ID() || p.RoomID() != e.RoomID() || p.Depth() != e.Depth() || len(p.PrevEventIDs()) != 1 {
				t.Errorf("reparsed event differs: %s/%s vs %s/%s", p.ID(), p.RoomID(), e.ID(), e.RoomID())
			}
			// A stored event parses to the same event under its stored ID,
			// the create event of a v12 room included (its room ID is
			// derived from that ID).
			for _, orig := range []*Event{e, create} {
				st, err := ParseStored(rv, orig.JSON(), orig.ID())
				if err != nil || st.ID() != orig.ID() || st.RoomID() != orig.RoomID() || !slices.Equal(st.AuthEventIDs(), orig.AuthEventIDs()) {
					t.Errorf("stored event parses as %v/%v (%v), want %s/%s", st.ID(), st.RoomID(), err, orig.ID(), orig.RoomID())
				}
			}
			if _, err := ParseStored(rv, e.JSON(), ""); err == nil {
				t.Error("a stored event without an ID parsed")
			}
			// The v12 create event is never an auth event; before v12 it always is.
			hasCreate := false
			for _, id := range e.AuthEventIDs() {
				hasCreate = hasCreate || id == create.ID()
			}
			if hasCreate == rv.RoomIDFromCreateEvent {
				t.Errorf("create event in auth_events = %v for v%s", hasCreate, ver)
			}
		})
	}
}

// mutateJSON changes a built event's JSON without re-signing it.
func mutateJSON(t *testing.T, raw []byte, f func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCheckReceived(t *testing.T) {
	t.Parallel()
	key := testKey(t, "example.org")
	other := testKey(t, "other.org")
	tests := []struct {
		name       string
		versions   []string
		mutate     func(m map[string]any)
		keys       KeyLookup
		wantErr    bool
		wantRedact bool
	}{
		{name: "untouched", versions: allVersions(), keys: keyring(1<<60, key)},
		{name: "content changed: redacted, not rejected", versions: allVersions(), keys: keyring(1<<60, key),
			mutate:     func(m map[string]any) { m["content"].(map[string]any)["body"] = "forged" },
			wantRedact: true},
		{name: "unsigned may change", versions: allVersions(), keys: keyring(1<<60, key),
			mutate: func(m map[string]any) { m["unsigned"] = map[string]any{"age": 5} }},
		{name: "depth changed: signature fails", versions: allVersions(), keys: keyring(1<<60, key),
			mutate: func(m map[string]any) { m["depth"] = 999 }, wantErr: true},
		{name: "unknown key", versions: allVersions(), keys: keyring(1<<60, other), wantErr: true},
		{name: "signature stripped", versions: allVersions(), keys: keyring(1<<60, key),
			mutate: func(m map[string]any) { delete(m, "signatures") }, wantErr: true},
		{name: "expired key accepted before v5", versions: versionsUpTo(4), keys: keyring(1, key)},
		{name: "expired key refused from v5", versions: versionsFrom(5), keys: keyring(1, key), wantErr: true},
	}
	for _, tt := range tests {
		for _, ver := range tt.versions {
			t.Run(ver+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				rv := MustVersion(ver)
				b := baseRoom(t, ver, JoinRulePublic)
				e := mustAppend(t, b, "m.room.message", nil, bob, map[string]any{"body": "hello"})
				raw := e.JSON()
				if tt.mutate != nil {
					raw = mutateJSON(t, raw, tt.mutate)
				}
				p, err := ParseEvent(rv, raw)
				if err != nil {
					t.Fatal(err)
				}
				got, err := CheckReceived(p, tt.keys)
				if (err != nil) != tt.wantErr {
					t.Fatalf("err = %v, want error %v", err, tt.wantErr)
				}
				if err != nil {
					if !errors.Is(err, ErrSignature) {
						t.Errorf("error %v does not wrap ErrSignature", err)
					}
					return
				}
				redacted := gjsonBody(got) == ""
				if redacted != tt.wantRedact {
					t.Errorf("redacted = %v, want %v", redacted, tt.wantRedact)
				}
				if got.ID() != p.ID() {
					t.Errorf("event ID changed from %s to %s", p.ID(), got.ID())
				}
			})
		}
	}
}

func gjsonBody(e *Event) string { return contentString(e.Content(), "body") }

func TestRequiredSignatureServers(t *testing.T) {
	t.Parallel()
	key := testKey(t, "example.org")
	tests := []struct {
		ver     string
		typ     string
		sender  string
		content map[string]any
		want    string
	}{
		{"10", "m.room.message", zed, map[string]any{}, "other.org"},
		{"1", "m.room.message", zed, map[string]any{}, "other.org,example.org"},
		{"10", TypeMember, zed, map[string]any{"membership": "join", "join_authorised_via_users_server": alice}, "other.org,example.org"},
		{"7", TypeMember, zed, map[string]any{"membership": "join", "join_authorised_via_users_server": alice}, "other.org"},
	}
	for _, tt := range tests {
		t.Run(tt.ver+"/"+tt.typ, func(t *testing.T) {
			t.Parallel()
			rv := MustVersion(tt.ver)
			var sk *string
			if tt.typ == TypeMember {
				sk = strp(tt.sender)
			}
			e, err := BuildEvent(rv, EventTemplate{RoomID: "!r:example.org", Type: tt.typ, StateKey: sk, Sender: tt.sender,
				Content: tt.content, Depth: 1, OriginServerTS: 1}, key)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(RequiredSignatureServers(e), ","); got != tt.want {
				t.Errorf("servers = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestRedactionAlgorithms(t *testing.T) {
	t.Parallel()
	type ev struct {
		typ     string
		content string
		extra   string // extra top-level members
	}
	tests := []struct {
		name     string
		versions []string
		in       ev
		want     string // content after redaction (canonical)
		wantTop  []string
		dropTop  []string
	}{
		{"message loses content", allVersions(), ev{"m.room.message", `{"body":"x","msgtype":"m.text"}`, ""}, `{}`, nil, []string{"unsigned"}},
		{"member keeps membership", versionsUpTo(8), ev{TypeMember, `{"membership":"join","displayname":"A","join_authorised_via_users_server":"@a:x"}`, ""}, `{"membership":"join"}`, nil, nil},
		{"member keeps authoriser from v9", versionsFrom(9), ev{TypeMember, `{"membership":"join","displayname":"A","join_authorised_via_users_server":"@a:x"}`, ""}, `{"join_authorised_via_users_server":"@a:x","membership":"join"}`, nil, nil},
		{"member third_party_invite.signed only from v11", versionsFrom(11), ev{TypeMember, `{"membership":"invite","third_party_invite":{"display_name":"d","signed":{"mxid":"@a:x","token":"t"}}}`, ""}, `{"membership":"invite","third_party_invite":{"signed":{"mxid":"@a:x","token":"t"}}}`, nil, nil},
		{"member third_party_invite dropped before v11", versionsUpTo(10), ev{TypeMember, `{"membership":"invite","third_party_invite":{"display_name":"d","signed":{"mxid":"@a:x","token":"t"}}}`, ""}, `{"membership":"invite"}`, nil, nil},
		{"create keeps creator only before v11", versionsUpTo(10), ev{TypeCreate, `{"creator":"@a:x","room_version":"1","m.federate":false}`, ""}, `{"creator":"@a:x"}`, nil, nil},
		{"create keeps everything from v11", versionsFrom(11), ev{TypeCreate, `{"room_version":"11","m.federate":false}`, ""}, `{"m.federate":false,"room_version":"11"}`, nil, nil},
		{"join_rules before v8", versionsUpTo(7), ev{TypeJoinRules, `{"join_rule":"restricted","allow":[]}`, ""}, `{"join_rule":"restricted"}`, nil, nil},
		{"join_rules keeps allow from v8", versionsFrom(8), ev{TypeJoinRules, `{"join_rule":"restricted","allow":[],"x":1}`, ""}, `{"allow":[],"join_rule":"restricted"}`, nil, nil},
		{"power_levels before v11", versionsUpTo(10), ev{TypePowerLevels, `{"ban":50,"invite":0,"notifications":{"room":50},"users":{}}`, ""}, `{"ban":50,"users":{}}`, nil, nil},
		{"power_levels keeps invite from v11", versionsFrom(11), ev{TypePowerLevels, `{"ban":50,"invite":0,"notifications":{"room":50},"users":{}}`, ""}, `{"ban":50,"invite":0,"users":{}}`, nil, nil},
		{"aliases kept v1-5", versionsUpTo(5), ev{TypeAliases, `{"aliases":["#a:x"]}`, ""}, `{"aliases":["#a:x"]}`, nil, nil},
		{"aliases dropped from v6", versionsFrom(6), ev{TypeAliases, `{"aliases":["#a:x"]}`, ""}, `{}`, nil, nil},
		{"history_visibility", allVersions(), ev{TypeHistoryVis, `{"history_visibility":"shared","x":1}`, ""}, `{"history_visibility":"shared"}`, nil, nil},
		{"redaction content before v11", versionsUpTo(10), ev{TypeRedaction, `{"redacts":"$e","reason":"r"}`, ""}, `{}`, nil, nil},
		{"redaction keeps redacts from v11", versionsFrom(11), ev{TypeRedaction, `{"redacts":"$e","reason":"r"}`, ""}, `{"redacts":"$e"}`, nil, nil},
		{"origin/membership/prev_state kept before v11", versionsUpTo(10), ev{"m.room.message", `{}`, `"origin":"x","membership":"join","prev_state":[],"foo":1`}, `{}`, []string{"origin", "membership", "prev_state"}, []string{"foo"}},
		{"origin/membership/prev_state dropped from v11", versionsFrom(11), ev{"m.room.message", `{}`, `"origin":"x","membership":"join","prev_state":[],"foo":1`}, `{}`, nil, []string{"origin", "membership", "prev_state", "foo"}},
	}
	for _, tt := range tests {
		for _, ver := range tt.versions {
			t.Run(ver+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				rv := MustVersion(ver)
				raw := `{"type":"` + tt.in.typ + `","content":` + tt.in.content + `,"sender":"@a:x","room_id":"!r:x","state_key":"",` +
					`"hashes":{"sha256":"h"},"signatures":{"x":{"ed25519:1":"s"}},"depth":1,"prev_events":[],"auth_events":[],` +
					`"origin_server_ts":1,"unsigned":{"age":1}`
				if tt.in.extra != "" {
					raw += "," + tt.in.extra
				}
				raw += "}"
				out, err := Redact(rv, []byte(raw))
				if err != nil {
					t.Fatal(err)
				}
				var top map[string]jsontext.Value
				if err := json.Unmarshal(out, &top); err != nil {
					t.Fatal(err)
				}
				got, err := CanonicalJSON(top["content"])
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != tt.want {
					t.Errorf("content = %s, want %s", got, tt.want)
				}
				for _, k := range append([]string{"type", "sender", "room_id", "state_key", "hashes", "signatures", "depth", "prev_events", "auth_events", "origin_server_ts"}, tt.wantTop...) {
					if _, ok := top[k]; !ok {
						t.Errorf("top-level %q dropped", k)
					}
				}
				for _, k := range append([]string{"unsigned"}, tt.dropTop...) {
					if _, ok := top[k]; ok {
						t.Errorf("top-level %q kept", k)
					}
				}
			})
		}
	}
}

func TestBuildRedactionPlacesRedacts(t *testing.T) {
	t.Parallel()
	for _, ver := range allVersions() {
		t.Run(ver, func(t *testing.T) {
			t.Parallel()
			b := baseRoom(t, ver, JoinRulePublic)
			msg := mustAppend(t, b, "m.room.message", nil, bob, map[string]any{"body": "x"})
			red := mustAppend(t, b, TypeRedaction, nil, mod, map[string]any{"redacts": msg.ID()})
			if red.Redacts() != msg.ID() {
				t.Errorf("Redacts() = %q, want %q", red.Redacts(), msg.ID())
			}
			var top map[string]jsontext.Value
			_ = json.Unmarshal(red.JSON(), &top)
			_, hasTop := top["redacts"]
			if hasTop == b.Version.RedactsInContent {
				t.Errorf("top-level redacts present = %v in v%s", hasTop, ver)
			}
			// Redacting the redaction keeps content.redacts only from v11.
			rr, err := RedactEvent(red)
			if err != nil {
				t.Fatal(err)
			}
			if kept := rr.Redacts() == msg.ID(); kept != b.Version.RedactsInContent {
				t.Errorf("redacts survives redaction = %v in v%s", kept, ver)
			}
			if rr.ID() != red.ID() {
				t.Errorf("redaction changed the event ID: %s → %s", red.ID(), rr.ID())
			}
		})
	}
}

func TestSigningKeyPublic(t *testing.T) {
	t.Parallel()
	k := specKey(t)
	pub, err := base64.RawStdEncoding.DecodeString(k.Public())
	if err != nil || len(pub) != 32 {
		t.Fatalf("public key %q: %v", k.Public(), err)
	}
	if _, err := SigningKeyFromSeed("x", "ed25519:1", []byte("short")); err == nil {
		t.Error("short seed accepted")
	}
}

func TestEventSizeLimits(t *testing.T) {
	t.Parallel()
	key := testKey(t, "example.org")
	tests := []struct {
		name    string
		tmpl    EventTemplate
		wantErr error
	}{
		{"fits", EventTemplate{Type: "m.room.message", Content: map[string]any{"body": strings.Repeat("a", 60000)}}, nil},
		{"content too large", EventTemplate{Type: "m.room.message", Content: map[string]any{"body": strings.Repeat("a", 66000)}}, ErrEventTooLarge},
		{"type too long", EventTemplate{Type: strings.Repeat("t", 256), Content: map[string]any{}}, ErrEventTooLarge},
		{"state_key too long", EventTemplate{Type: "x", StateKey: strp(strings.Repeat("k", 256)), Content: map[string]any{}}, ErrEventTooLarge},
		{"float in content", EventTemplate{Type: "x", Content: map[string]any{"n": 1.5}}, ErrBadEvent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tmpl := tt.tmpl
			tmpl.RoomID, tmpl.Sender, tmpl.Depth, tmpl.OriginServerTS = "!r:example.org", alice, 1, 1
			_, err := BuildEvent(MustVersion("11"), tmpl, key)
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// TestReceivedFieldLimitsInCodepoints: another server's event may hold a
// state key of 255 codepoints that is longer than 255 bytes (Synapse has
// always counted codepoints, and rooms hold such events); this server's own
// events keep to 255 bytes.
func TestReceivedFieldLimitsInCodepoints(t *testing.T) {
	t.Parallel()
	key := testKey(t, "example.org")
	rv := MustVersion("11")
	build := func(stateKey string) []byte {
		t.Helper()
		obj, err := eventObject(rv, EventTemplate{Type: "my.room.breaker", StateKey: &stateKey, Content: map[string]any{},
			RoomID: "!r:example.org", Sender: alice, Depth: 1, OriginServerTS: 1})
		if err != nil {
			t.Fatal(err)
		}
		raw, _, err := signObject(rv, obj, key)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	wide := strings.Repeat("\U0001F4A5", 70) // 280 bytes, 70 codepoints
	e, err := ParseEvent(rv, build(wide))
	if err != nil {
		t.Fatalf("received event with a 280-byte, 70-codepoint state key: %v", err)
	}
	if sk, _ := e.StateKey(); sk != wide {
		t.Errorf("state key %q", sk)
	}
	if _, err := ParseEvent(rv, build(strings.Repeat("\u00e9", 256))); !errors.Is(err, ErrEventTooLarge) {
		t.Errorf("256-codepoint state key: err = %v, want ErrEventTooLarge", err)
	}
	_, err = BuildEvent(rv, EventTemplate{Type: "x", StateKey: &wide, Content: map[string]any{},
		RoomID: "!r:example.org", Sender: alice, Depth: 1, OriginServerTS: 1}, key)
	if !errors.Is(err, ErrEventTooLarge) {
		t.Errorf("local event with a 280-byte state key: err = %v, want ErrEventTooLarge", err)
	}
}

func TestClientEvent(t *testing.T) {
	t.Parallel()
	for _, ver := range []string{"10", "11", "12"} {
		t.Run(ver, func(t *testing.T) {
			t.Parallel()
			b := baseRoom(t, ver, JoinRulePublic)
			msg := mustAppend(t, b, "m.room.message", nil, bob, map[string]any{"body": "x"})
			red := mustAppend(t, b, TypeRedaction, nil, mod, map[string]any{"redacts": msg.ID(), "reason": "spam"})
			ce := red.ClientEvent(jsontext.Value(`{"age":1}`))
			out, err := json.Marshal(ce)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]jsontext.Value
			_ = json.Unmarshal(out, &m)
			for _, k := range []string{"content", "event_id", "origin_server_ts", "room_id", "sender", "type", "redacts", "unsigned"} {
				if _, ok := m[k]; !ok {
					t.Errorf("client event lacks %s: %s", k, out)
				}
			}
			if _, ok := m["state_key"]; ok {
				t.Error("message event has state_key")
			}
			// Before v11 redacts is top-level only in the PDU.
			inContent := contentString(red.Content(), "redacts") != ""
			if inContent != b.Version.RedactsInContent {
				t.Errorf("content.redacts present = %v in v%s", inContent, ver)
			}
			if contentString(red.Content(), "reason") != "spam" {
				t.Error("reason lost")
			}
		})
	}
}

// TestBuiltEventReparses: an event this server builds has the ID, content
// hash and signature that parsing and checking it from its JSON alone
// give, in every room version (the builder takes the event ID from the
// signing input it signed, and skips steps for keys the event lacks).
func TestBuiltEventReparses(t *testing.T) {
	t.Parallel()
	key := testKey(t, "example.org")
	for _, v := range allVersions() {
		rv := MustVersion(v)
		sk := ""
		for _, tmpl := range []EventTemplate{
			{Type: "m.room.message", Content: map[string]any{"body": "caf\u00e9 <b> \u2028", "n": 1}, RoomID: "!r:example.org",
				Sender: alice, Depth: 3, OriginServerTS: 7, PrevEvents: []string{}, AuthEvents: []string{}},
			{Type: "m.room.topic", StateKey: &sk, Content: map[string]any{"topic": "t"}, RoomID: "!r:example.org",
				Sender: alice, Depth: 4, OriginServerTS: 8},
		} {
			e, err := BuildEvent(rv, tmpl, key)
			if err != nil {
				t.Fatalf("v%s %s: build: %v", v, tmpl.Type, err)
			}
			p, err := ParseEvent(rv, e.JSON())
			if err != nil {
				t.Fatalf("v%s %s: parse: %v", v, tmpl.Type, err)
			}
			if p.ID() != e.ID() {
				t.Errorf("v%s %s: built ID %s, parsed ID %s", v, tmpl.Type, e.ID(), p.ID())
			}
			if !p.VerifyContentHash() {
				t.Errorf("v%s %s: content hash does not verify", v, tmpl.Type)
			}
			if err := VerifyServerSignature(p, "example.org", keyring(1<<62, key)); err != nil {
				t.Errorf("v%s %s: %v", v, tmpl.Type, err)
			}
		}
	}
}
