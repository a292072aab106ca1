package push

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"hearth/server/storage"
)

const me = "@alice:example.org"

// ruleIDs lists a ruleset's rule IDs per kind.
func ruleIDs(rs Ruleset) map[string][]string {
	out := map[string][]string{}
	for _, k := range Kinds {
		out[k] = []string{}
		for _, r := range rs[k] {
			out[k] = append(out[k], r.RuleID)
		}
	}
	return out
}

// TestDefaultRulesAreTheSpecs checks the default ruleset against spec v1.19
// ("Predefined Rules"), plus MSC3930's poll rules, in order.
func TestDefaultRulesAreTheSpecs(t *testing.T) {
	got := ruleIDs(BuildRuleset(me, nil, Defaults{}))
	want := map[string][]string{
		"override": {".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
			".m.rule.is_user_mention", ".m.rule.is_room_mention", ".m.rule.tombstone", ".m.rule.reaction",
			".m.rule.room.server_acl", ".m.rule.suppress_edits", ".org.matrix.msc3930.rule.poll_response"},
		"content":     {},
		"postcontent": {},
		"room":        {},
		"sender":      {},
		"underride": {".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one", ".m.rule.message",
			".m.rule.encrypted", ".org.matrix.msc3930.rule.poll_start_one_to_one", ".org.matrix.msc3930.rule.poll_start",
			".org.matrix.msc3930.rule.poll_end_one_to_one", ".org.matrix.msc3930.rule.poll_end"},
	}
	for _, k := range Kinds {
		if !slices.Equal(got[k], want[k]) {
			t.Errorf("%s: %v, want %v", k, got[k], want[k])
		}
	}
	legacy := ruleIDs(BuildRuleset(me, nil, Defaults{LegacyMentions: true}))
	if !slices.Contains(legacy["override"], ".m.rule.contains_display_name") || !slices.Contains(legacy["override"], ".m.rule.roomnotif") ||
		!slices.Equal(legacy["content"], []string{".m.rule.contains_user_name"}) {
		t.Errorf("legacy rules: %v", legacy)
	}
	// The spec's JSON of two rules, byte for byte where it matters.
	rs := BuildRuleset(me, nil, Defaults{})
	raw, _ := json.Marshal(rs.Find("override", ".m.rule.is_user_mention"))
	if string(raw) != `{"rule_id":".m.rule.is_user_mention","default":true,"enabled":true,"conditions":[{"kind":"event_property_contains","key":"content.m\\.mentions.user_ids","value":"@alice:example.org"}],"actions":["notify",{"set_tweak":"sound","value":"default"},{"set_tweak":"highlight"}]}` {
		t.Errorf("is_user_mention: %s", raw)
	}
	raw, _ = json.Marshal(rs.Find("override", ".m.rule.master"))
	if string(raw) != `{"rule_id":".m.rule.master","default":true,"enabled":false,"conditions":[],"actions":[]}` {
		t.Errorf("master: %s", raw)
	}
	raw, _ = json.Marshal(rs.Find("override", ".m.rule.tombstone"))
	if string(raw) != `{"rule_id":".m.rule.tombstone","default":true,"enabled":true,"conditions":[{"kind":"event_match","key":"type","pattern":"m.room.tombstone"},{"kind":"event_match","key":"state_key","pattern":""}],"actions":["notify",{"set_tweak":"highlight"}]}` {
		t.Errorf("tombstone: %s", raw)
	}
}

func ev(t testing.TB, v map[string]any) *Event {
	t.Helper()
	if _, ok := v["sender"]; !ok {
		v["sender"] = "@bob:example.org"
	}
	if _, ok := v["room_id"]; !ok {
		v["room_id"] = "!room:example.org"
	}
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return NewEvent(raw)
}

func msg(body string, extra map[string]any) map[string]any {
	c := map[string]any{"msgtype": "m.text", "body": body}
	for k, v := range extra {
		c[k] = v
	}
	return map[string]any{"type": "m.room.message", "content": c}
}

// stored builds a user's stored rules from (kind, id, json) triples.
func stored(rules ...storage.PushRule) *storage.PushRules { return &storage.PushRules{Rules: rules} }

func TestEvaluate(t *testing.T) {
	group := &Room{MemberCount: 5, SenderPower: 0}
	dm := &Room{MemberCount: 2, SenderPower: 0}
	mod := &Room{MemberCount: 5, SenderPower: 50}
	tests := []struct {
		name     string
		rules    *storage.PushRules
		legacy   bool
		event    map[string]any
		room     *Room
		display  string
		notify   bool
		highlite bool
		rule     string // a tweak to look for: "sound" or ""
	}{
		{name: "message in a group", event: msg("hi", nil), room: group, notify: true},
		{name: "message in a DM makes a sound", event: msg("hi", nil), room: dm, notify: true, rule: "sound"},
		{name: "notice is silent", event: map[string]any{"type": "m.room.message", "content": map[string]any{"msgtype": "m.notice", "body": "x"}}, room: group},
		{name: "user mention highlights", event: msg("hey", map[string]any{"m.mentions": map[string]any{"user_ids": []string{me}}}), room: group, notify: true, highlite: true, rule: "sound"},
		{name: "someone else's mention does not", event: msg("hey", map[string]any{"m.mentions": map[string]any{"user_ids": []string{"@carol:example.org"}}}), room: group, notify: true},
		{name: "body mention without m.mentions does not (spec v1.17)", event: msg("hey alice", nil), room: group, display: "alice", notify: true},
		{name: "legacy: body mention of the display name highlights", legacy: true, event: msg("hey Alice!", nil), room: group, display: "Alice", notify: true, highlite: true},
		{name: "legacy: the localpart in the body highlights", legacy: true, event: msg("ping ALICE please", nil), room: group, notify: true, highlite: true},
		{name: "legacy: not inside a word", legacy: true, event: msg("malice", nil), room: group, display: "alice", notify: true},
		{name: "legacy: @room from a moderator", legacy: true, event: msg("@room look", nil), room: mod, notify: true, highlite: true},
		{name: "room mention from a moderator", event: msg("all", map[string]any{"m.mentions": map[string]any{"room": true}}), room: mod, notify: true, highlite: true},
		{name: "room mention without the power", event: msg("all", map[string]any{"m.mentions": map[string]any{"room": true}}), room: group, notify: true},
		{name: "reaction is silent", event: map[string]any{"type": "m.reaction", "content": map[string]any{}}, room: group},
		{name: "edit is silent", event: msg("* x", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": "$e"}}), room: group},
		{name: "invite for me", event: map[string]any{"type": "m.room.member", "state_key": me, "content": map[string]any{"membership": "invite"}}, room: group, notify: true, rule: "sound"},
		{name: "someone else's invite", event: map[string]any{"type": "m.room.member", "state_key": "@carol:example.org", "content": map[string]any{"membership": "invite"}}, room: group},
		{name: "tombstone", event: map[string]any{"type": "m.room.tombstone", "state_key": "", "content": map[string]any{"body": "moved"}}, room: group, notify: true, highlite: true},
		{name: "tombstone must be state", event: map[string]any{"type": "m.room.tombstone", "content": map[string]any{"body": "moved"}}, room: group},
		{name: "encrypted in a DM", event: map[string]any{"type": "m.room.encrypted", "content": map[string]any{}}, room: dm, notify: true, rule: "sound"},
		{name: "encrypted in a group", event: map[string]any{"type": "m.room.encrypted", "content": map[string]any{}}, room: group, notify: true},
		{name: "call rings", event: map[string]any{"type": "m.call.invite", "content": map[string]any{}}, room: group, notify: true, rule: "sound"},
		{name: "poll start", event: map[string]any{"type": "org.matrix.msc3381.poll.start", "content": map[string]any{}}, room: group, notify: true},
		{name: "poll response is silent", event: map[string]any{"type": "org.matrix.msc3381.poll.response", "content": map[string]any{}}, room: group},
		{name: "other event types are silent", event: map[string]any{"type": "m.room.topic", "state_key": "", "content": map[string]any{"topic": "x"}}, room: group},
		{name: "master rule on mutes everything",
			rules: &storage.PushRules{Defaults: []storage.PushRuleDefault{{Kind: "override", RuleID: ".m.rule.master", Enabled: ptr(true)}}},
			event: msg("hi", map[string]any{"m.mentions": map[string]any{"user_ids": []string{me}}}), room: group},
		{name: "a disabled default is skipped",
			rules: &storage.PushRules{Defaults: []storage.PushRuleDefault{{Kind: "underride", RuleID: ".m.rule.message", Enabled: ptr(false)}}},
			event: msg("hi", nil), room: group},
		{name: "changed default actions",
			rules: &storage.PushRules{Defaults: []storage.PushRuleDefault{{Kind: "underride", RuleID: ".m.rule.message", Actions: `["notify",{"set_tweak":"highlight","value":true}]`}}},
			event: msg("hi", nil), room: group, notify: true, highlite: true},
		{name: "room rule silences a room", rules: stored(storage.PushRule{Kind: "room", RuleID: "!room:example.org", Actions: `[]`, Enabled: true}),
			event: msg("hi", nil), room: group},
		{name: "room rule for another room", rules: stored(storage.PushRule{Kind: "room", RuleID: "!other:example.org", Actions: `[]`, Enabled: true}),
			event: msg("hi", nil), room: group, notify: true},
		{name: "sender rule", rules: stored(storage.PushRule{Kind: "sender", RuleID: "@bob:example.org", Actions: `["notify",{"set_tweak":"sound","value":"bob.wav"}]`, Enabled: true}),
			event: map[string]any{"type": "m.sticker", "content": map[string]any{}}, room: group, notify: true, rule: "sound"},
		{name: "dont_notify is no notification", rules: stored(storage.PushRule{Kind: "sender", RuleID: "@bob:example.org", Actions: `["dont_notify"]`, Enabled: true}),
			event: msg("hi", nil), room: group},
		{name: "content rule at word boundaries", rules: stored(storage.PushRule{Kind: "content", RuleID: "cake", Pattern: "ca?e", Actions: `["notify",{"set_tweak":"highlight"}]`, Enabled: true}),
			event: msg("I want CAKE, now", nil), room: group, notify: true, highlite: true},
		{name: "content rule inside a word", rules: stored(storage.PushRule{Kind: "content", RuleID: "cake", Pattern: "cake", Actions: `["notify",{"set_tweak":"highlight"}]`, Enabled: true}),
			event: msg("pancakes", nil), room: group, notify: true},
		{name: "content glob spans words", rules: stored(storage.PushRule{Kind: "content", RuleID: "ex", Pattern: "ex*ple", Actions: `["notify",{"set_tweak":"highlight"}]`, Enabled: true}),
			event: msg("An exciting triple-whammy", nil), room: group, notify: true, highlite: true},
		{name: "override with a glob on another key", rules: stored(storage.PushRule{Kind: "override", RuleID: "topic",
			Conditions: `[{"kind":"event_match","key":"content.topic","pattern":"lunc?*"}]`, Actions: `["notify"]`, Enabled: true}),
			event: map[string]any{"type": "m.room.topic", "state_key": "", "content": map[string]any{"topic": "Lunch plans"}}, room: group, notify: true},
		{name: "event_match needs the whole value", rules: stored(storage.PushRule{Kind: "override", RuleID: "topic",
			Conditions: `[{"kind":"event_match","key":"content.topic","pattern":"lunc?*"}]`, Actions: `["notify"]`, Enabled: true}),
			event: map[string]any{"type": "m.room.topic", "state_key": "", "content": map[string]any{"topic": " lunch"}}, room: group},
		{name: "event_match does not match a non-string", rules: stored(storage.PushRule{Kind: "override", RuleID: "n",
			Conditions: `[{"kind":"event_match","key":"content.n","pattern":"*"}]`, Actions: `["notify"]`, Enabled: true}),
			event: map[string]any{"type": "x.y", "content": map[string]any{"n": 1}}, room: group},
		{name: "event_property_is with an integer and an escaped key", rules: stored(storage.PushRule{Kind: "override", RuleID: "n",
			Conditions: `[{"kind":"event_property_is","key":"content.a\\.b","value":3}]`, Actions: `["notify"]`, Enabled: true}),
			event: map[string]any{"type": "x.y", "content": map[string]any{"a.b": 3}}, room: group, notify: true},
		{name: "event_property_is does not cast", rules: stored(storage.PushRule{Kind: "override", RuleID: "n",
			Conditions: `[{"kind":"event_property_is","key":"content.f","value":true}]`, Actions: `["notify"]`, Enabled: true}),
			event: map[string]any{"type": "x.y", "content": map[string]any{"f": "true"}}, room: group},
		{name: "event_property_is null", rules: stored(storage.PushRule{Kind: "override", RuleID: "n",
			Conditions: `[{"kind":"event_property_is","key":"content.f","value":null}]`, Actions: `["notify"]`, Enabled: true}),
			event: map[string]any{"type": "x.y", "content": map[string]any{"f": nil}}, room: group, notify: true},
		{name: "event_property_contains", rules: stored(storage.PushRule{Kind: "override", RuleID: "n",
			Conditions: `[{"kind":"event_property_contains","key":"content.alt_aliases","value":"#a:example.com"}]`, Actions: `["notify"]`, Enabled: true}),
			event: map[string]any{"type": "m.room.canonical_alias", "state_key": "", "content": map[string]any{"alt_aliases": []string{"#b:x", "#a:example.com"}}}, room: group, notify: true},
		{name: "an unknown condition never matches", rules: stored(storage.PushRule{Kind: "override", RuleID: "u",
			Conditions: `[{"kind":"org.example.unknown"}]`, Actions: `["notify",{"set_tweak":"highlight"}]`, Enabled: true}),
			event: msg("hi", nil), room: group, notify: true},
		{name: "no conditions always match", rules: stored(storage.PushRule{Kind: "override", RuleID: "all",
			Conditions: `[]`, Actions: `["notify",{"set_tweak":"highlight"}]`, Enabled: true}),
			event: msg("hi", nil), room: group, notify: true, highlite: true},
		{name: "a disabled user rule is skipped", rules: stored(storage.PushRule{Kind: "override", RuleID: "all",
			Conditions: `[]`, Actions: `["notify",{"set_tweak":"highlight"}]`, Enabled: false}),
			event: msg("hi", nil), room: group, notify: true},
		{name: "room_member_count <=", rules: stored(storage.PushRule{Kind: "override", RuleID: "small",
			Conditions: `[{"kind":"room_member_count","is":"<=10"}]`, Actions: `["notify",{"set_tweak":"highlight"}]`, Enabled: true}),
			event: msg("hi", nil), room: group, notify: true, highlite: true},
		{name: "room_member_count >", rules: stored(storage.PushRule{Kind: "override", RuleID: "big",
			Conditions: `[{"kind":"room_member_count","is":">10"}]`, Actions: `["notify",{"set_tweak":"highlight"}]`, Enabled: true}),
			event: msg("hi", nil), room: group, notify: true},
		{name: "user override beats default override", rules: stored(storage.PushRule{Kind: "override", RuleID: "mute-bob",
			Conditions: `[{"kind":"event_match","key":"sender","pattern":"@bob:*"}]`, Actions: `[]`, Enabled: true}),
			event: msg("hey", map[string]any{"m.mentions": map[string]any{"user_ids": []string{me}}}), room: group},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rules := CompileStored(me, tc.rules, Defaults{LegacyMentions: tc.legacy})
			acts, _ := rules.Evaluate(ev(t, tc.event), tc.room, tc.display, NotInThread)
			if acts.Notify != tc.notify || acts.Highlight != tc.highlite {
				t.Fatalf("notify=%v highlight=%v, want %v %v (actions %s)", acts.Notify, acts.Highlight, tc.notify, tc.highlite, acts.Raw)
			}
			if tc.rule != "" && acts.Tweaks()[tc.rule] == nil {
				t.Fatalf("no %s tweak in %s", tc.rule, acts.Raw)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestGlob(t *testing.T) {
	tests := []struct {
		pattern, value string
		words, want    bool
	}{
		{"m.room.message", "M.Room.Message", false, true},
		{"m.room.*", "m.room.member", false, true},
		{"m.room.*", "xm.room.member", false, false},
		{"lunc?*", "LUNCH", false, true},
		{"lunc?*", "lunc", false, false},
		{"", "", false, true},
		{"", "x", false, false},
		{"a.b", "axb", false, false}, // a literal dot
		{"ex*ple", "exple", true, true},
		{"ex*ple", "An example event.", true, true},
		{"cake", "pancake", true, false},
		{"cake", "cake_", true, false}, // _ is a word character
		{"cake", "cake-", true, true},
		{"café", "Un CAFÉ noir", true, true},
		{"[x]", "a [x] b", true, true}, // no character classes
	}
	for _, tc := range tests {
		if got := compileGlob(tc.pattern, tc.words).match(tc.value); got != tc.want {
			t.Errorf("glob %q (words %v) on %q: %v", tc.pattern, tc.words, tc.value, got)
		}
	}
}

func TestFlattenEscapesKeys(t *testing.T) {
	e := NewEvent([]byte(`{"type":"t","content":{"m.relates_to":{"rel_type":"m.thread"},"a\\b":"x","list":[1,"s",{"no":1},true,null,1.5]}}`))
	if v, _ := e.Str(`content.m\.relates_to.rel_type`); v != "m.thread" {
		t.Errorf("dotted key: %q", v)
	}
	if v, _ := e.Str(`content.a\\b`); v != "x" {
		t.Errorf("backslash key: %q", v)
	}
	if l := e.props["content.list"]; l.kind != kindArray || len(l.arr) != 4 {
		t.Errorf("array keeps the simple values: %+v", l)
	}
}

func TestCheckActions(t *testing.T) {
	for _, ok := range []string{`[]`, `["notify"]`, `["dont_notify","coalesce"]`, `[{"set_tweak":"sound","value":"x"}]`} {
		var a []json.RawMessage
		_ = json.Unmarshal([]byte(ok), &a)
		if err := CheckActions(a); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{`["ring"]`, `[1]`, `[{"value":"x"}]`, `[{"set_tweak":1}]`} {
		var a []json.RawMessage
		_ = json.Unmarshal([]byte(bad), &a)
		if err := CheckActions(a); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestRoomRuleCopy(t *testing.T) {
	r, ok := RoomRuleCopy(storage.PushRule{Kind: "room", RuleID: "!old:x", Actions: `[]`, Enabled: true}, "!old:x", "!new:x")
	if !ok || r.RuleID != "!new:x" {
		t.Errorf("room rule: %+v %v", r, ok)
	}
	r, ok = RoomRuleCopy(storage.PushRule{Kind: "override", RuleID: "mine", Enabled: true,
		Conditions: `[{"kind":"event_match","key":"room_id","pattern":"!old:x"},{"kind":"event_match","key":"type","pattern":"m.room.message"}]`},
		"!old:x", "!new:x")
	if !ok || r.RuleID != "!new:x" || r.Conditions != `[{"key":"room_id","kind":"event_match","pattern":"!new:x"},{"key":"type","kind":"event_match","pattern":"m.room.message"}]` {
		t.Errorf("override: %+v %v", r, ok)
	}
	if _, ok := RoomRuleCopy(storage.PushRule{Kind: "room", RuleID: "!old:x", Enabled: false}, "!old:x", "!new:x"); ok {
		t.Error("a disabled rule is copied")
	}
	if _, ok := RoomRuleCopy(storage.PushRule{Kind: "sender", RuleID: "@a:x", Enabled: true}, "!old:x", "!new:x"); ok {
		t.Error("a sender rule is copied")
	}
}

// BenchmarkEvaluate1000Members is the rule matching of one message for the
// members of a 1,000-member room: each with the default rules, one with a
// few rules of their own, one mentioned.
func BenchmarkEvaluate1000Members(b *testing.B) {
	users := make([]*Rules, 1000)
	for i := range users {
		var st *storage.PushRules
		if i%10 == 0 {
			st = stored(
				storage.PushRule{Kind: "room", RuleID: "!other:example.org", Actions: `[]`, Enabled: true},
				storage.PushRule{Kind: "content", RuleID: "kw", Pattern: "deploy*", Actions: `["notify",{"set_tweak":"highlight"}]`, Enabled: true},
				storage.PushRule{Kind: "sender", RuleID: "@spam:example.org", Actions: `[]`, Enabled: true})
		}
		users[i] = CompileStored(fmt.Sprintf("@u%d:example.org", i), st, Defaults{})
	}
	raw, _ := json.Marshal(map[string]any{"type": "m.room.message", "sender": "@bob:example.org", "room_id": "!room:example.org",
		"content": map[string]any{"msgtype": "m.text", "body": "hello @u7 about the release",
			"m.mentions": map[string]any{"user_ids": []string{"@u7:example.org"}}}})
	room := &Room{MemberCount: 1000}
	b.ReportAllocs()
	for b.Loop() {
		e := NewEvent(raw)
		n := 0
		for _, u := range users {
			if a, _ := u.Evaluate(e, room, "", NotInThread); a.Notify {
				n++
			}
		}
		if n != 1000 {
			b.Fatalf("%d notified", n)
		}
	}
}
