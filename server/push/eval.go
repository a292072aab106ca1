package push

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"hearth/server/storage"
)

// Evaluation (spec: "Push Rules", "Conditions"). An event is flattened once
// into its dot-separated property paths (Event); each user's rules are
// compiled once (Compile) and cached by the evaluator until they change;
// matching a compiled rule against a flattened event touches no JSON and
// allocates nothing, which is what makes a message in a 1,000-member room
// cheap: one flattening and 1,000 walks down short rule lists, most rules
// failing on their first condition (the event type).

// valueKind is the JSON type of a flattened property.
type valueKind uint8

const (
	kindString valueKind = iota + 1
	kindInt
	kindBool
	kindNull
	kindArray
)

// value is one flattened property: a string, an integer, a boolean, null,
// or an array of those (other array elements are dropped).
type value struct {
	kind valueKind
	s    string
	i    int64
	b    bool
	arr  []value
}

func (v value) equal(w value) bool {
	if v.kind != w.kind {
		return false
	}
	switch v.kind {
	case kindString:
		return v.s == w.s
	case kindInt:
		return v.i == w.i
	case kindBool:
		return v.b == w.b
	case kindNull:
		return true
	}
	return false
}

// scalarOf converts a JSON value to a property value; ok is false for
// objects, arrays and non-integer numbers (canonical JSON has none; the
// spec's event_property_* conditions only compare the simple types).
func scalarOf(r gjson.Result) (value, bool) {
	switch r.Type {
	case gjson.String:
		return value{kind: kindString, s: r.Str}, true
	case gjson.Number:
		n, err := strconv.ParseInt(r.Raw, 10, 64)
		if err != nil {
			return value{}, false
		}
		return value{kind: kindInt, i: n}, true
	case gjson.True, gjson.False:
		return value{kind: kindBool, b: r.Type == gjson.True}, true
	case gjson.Null:
		return value{kind: kindNull}, true
	}
	return value{}, false
}

// Event is an event flattened for matching: property path → value, with
// path segments escaped as the spec's dot-separated paths are ("." as
// "\.", "\" as "\\").
type Event struct {
	props  map[string]value
	Sender string
	Type   string
}

// skipTop are the top-level PDU keys no rule looks at.
var skipTop = map[string]bool{"signatures": true, "hashes": true, "unsigned": true, "auth_events": true,
	"prev_events": true, "depth": true}

// NewEvent flattens an event's JSON (a PDU or a client event).
func NewEvent(raw []byte) *Event {
	// Room for a plain message's properties (type, sender, room_id,
	// origin_server_ts, content.body, content.msgtype) in the map's first
	// group; a hint of 16 allocated a table of 2.5 KB for every event.
	e := &Event{props: make(map[string]value, 8)}
	gjson.ParseBytes(raw).ForEach(func(k, v gjson.Result) bool {
		if !skipTop[k.Str] {
			e.flatten(escapeKey(k.Str), v)
		}
		return true
	})
	if v, ok := e.props["sender"]; ok && v.kind == kindString {
		e.Sender = v.s
	}
	if v, ok := e.props["type"]; ok && v.kind == kindString {
		e.Type = v.s
	}
	return e
}

func (e *Event) flatten(path string, v gjson.Result) {
	switch {
	case v.IsObject():
		v.ForEach(func(k, c gjson.Result) bool {
			e.flatten(path+"."+escapeKey(k.Str), c)
			return true
		})
	case v.IsArray():
		var arr []value
		for _, c := range v.Array() {
			if s, ok := scalarOf(c); ok {
				arr = append(arr, s)
			}
		}
		e.props[path] = value{kind: kindArray, arr: arr}
	default:
		if s, ok := scalarOf(v); ok {
			e.props[path] = s
		}
	}
}

var keyEscaper = strings.NewReplacer(`\`, `\\`, `.`, `\.`)

func escapeKey(k string) string {
	if !strings.ContainsAny(k, `.\`) {
		return k
	}
	return keyEscaper.Replace(k)
}

// Str returns a string property ("" and false when absent or not a string).
func (e *Event) Str(path string) (string, bool) {
	v, ok := e.props[path]
	if !ok || v.kind != kindString {
		return "", false
	}
	return v.s, true
}

// Room is what conditions need to know about the room at the event.
type Room struct {
	// MemberCount is the number of joined members.
	MemberCount int
	// SenderPower is the sender's power level.
	SenderPower int64
	// NotificationLevels is power_levels.notifications (each key defaults
	// to 50, as "room" does in the spec).
	NotificationLevels map[string]int64
}

func (r *Room) notificationLevel(key string) int64 {
	if n, ok := r.NotificationLevels[key]; ok {
		return n
	}
	return 50
}

// Actions is what a matching rule asks for.
type Actions struct {
	Notify    bool
	Highlight bool
	// Raw are the rule's actions as stored, for GET /notifications and
	// the pushers' tweaks; JSON is Raw as one JSON array.
	Raw  []json.RawMessage
	JSON string
}

// Tweaks returns the set_tweak actions as a map (a tweak without a value
// is true, spec: "Actions").
func (a Actions) Tweaks() map[string]any {
	t := map[string]any{}
	for _, raw := range a.Raw {
		var obj map[string]any
		if json.Unmarshal(raw, &obj) != nil {
			continue
		}
		name, ok := obj["set_tweak"].(string)
		if !ok {
			continue
		}
		if v, ok := obj["value"]; ok && v != nil {
			t[name] = v
		} else {
			t[name] = true
		}
	}
	return t
}

func parseActions(raw []json.RawMessage) Actions {
	a := Actions{Raw: raw, JSON: "[]"}
	if j, err := json.Marshal(raw); err == nil && len(raw) > 0 {
		a.JSON = string(j)
	}
	for _, r := range raw {
		var s string
		if json.Unmarshal(r, &s) == nil {
			a.Notify = a.Notify || s == "notify"
			continue
		}
		var obj struct {
			SetTweak string          `json:"set_tweak"`
			Value    json.RawMessage `json:"value"`
		}
		if json.Unmarshal(r, &obj) == nil && obj.SetTweak == "highlight" {
			// No value (or null, as some clients send it) means true.
			v := strings.TrimSpace(string(obj.Value))
			a.Highlight = v == "" || v == "true" || v == "null"
		}
	}
	return a
}

// condKind enumerates the condition kinds the evaluator knows.
type condKind uint8

const (
	condUnknown condKind = iota
	condEventMatch
	condPropertyIs
	condPropertyContains
	condDisplayName
	condMemberCount
	condSenderPermission
	condThreadSubscription
)

// ThreadState is where an event stands for one user among thread
// subscriptions (MSC4306).
type ThreadState int8

const (
	// NotInThread: the event is not in a thread (or MSC4306 is off).
	NotInThread ThreadState = iota
	// InSubscribedThread: in a thread the user is subscribed to.
	InSubscribedThread
	// InUnsubscribedThread: in a thread the user is not subscribed to.
	InUnsubscribedThread
)

// cond is a compiled condition.
type cond struct {
	kind  condKind
	key   string
	glob  *glob
	value value
	// room_member_count: op is one of "==", "<", ">", "<=", ">=".
	op string
	n  int
	// thread_subscription: the state it asks for.
	thread ThreadState
}

// rule is a compiled rule.
type rule struct {
	kind, id string
	enabled  bool
	conds    []cond
	actions  Actions
	// eventType is set when a condition requires this exact event type
	// (most rules have one): a rule for another type is passed over with
	// one string comparison.
	eventType string
}

// Rules are a user's compiled rules, in evaluation order.
type Rules struct {
	UserID string
	rules  []rule
	// usesDisplayName: some enabled rule has contains_display_name (only
	// then does the evaluator need the user's display name in the room).
	usesDisplayName bool
	// usesThreads: some enabled rule has a thread_subscription condition.
	usesThreads bool
}

// UsesDisplayName reports whether evaluating needs the user's display name.
func (rs *Rules) UsesDisplayName() bool { return rs.usesDisplayName }

// Compile compiles a user's ruleset (as BuildRuleset renders it).
func Compile(userID string, rs Ruleset) *Rules {
	n := 0
	for _, kind := range Kinds {
		n += len(rs[kind])
	}
	// Sized once: every user's rules are cached (push_users), so append's
	// spare capacity would be kept for each of them.
	out := &Rules{UserID: userID, rules: make([]rule, 0, n)}
	for _, kind := range Kinds {
		for _, r := range rs[kind] {
			c := rule{kind: kind, id: r.RuleID, enabled: r.Enabled, actions: parseActions(r.Actions)}
			switch kind {
			case "content":
				p := ""
				if r.Pattern != nil {
					p = *r.Pattern
				}
				c.conds = []cond{{kind: condEventMatch, key: "content.body", glob: compileGlob(p, true)}}
			case "room":
				c.conds = []cond{{kind: condEventMatch, key: "room_id", glob: compileGlob(r.RuleID, false)}}
			case "sender":
				c.conds = []cond{{kind: condEventMatch, key: "sender", glob: compileGlob(r.RuleID, false)}}
			default:
				c.conds = make([]cond, 0, len(r.Conditions))
				for _, raw := range r.Conditions {
					cc := compileCond(raw)
					c.conds = append(c.conds, cc)
					if cc.kind == condDisplayName && r.Enabled {
						out.usesDisplayName = true
					}
					if cc.kind == condThreadSubscription && r.Enabled {
						out.usesThreads = true
					}
				}
			}
			for _, cc := range c.conds {
				if cc.kind == condEventMatch && cc.key == "type" && cc.glob.isLit {
					c.eventType = cc.glob.literal
				}
			}
			out.rules = append(out.rules, c)
		}
	}
	return out
}

func compileCond(raw json.RawMessage) cond {
	var c Condition
	if json.Unmarshal(raw, &c) != nil {
		return cond{kind: condUnknown}
	}
	switch c.Kind {
	case "event_match":
		if c.Pattern == nil || c.Key == "" {
			return cond{kind: condUnknown}
		}
		// content.body matches at word boundaries (spec: "event_match").
		return cond{kind: condEventMatch, key: c.Key, glob: compileGlob(*c.Pattern, c.Key == "content.body")}
	case "event_property_is", "event_property_contains":
		v, ok := scalarOf(gjson.ParseBytes(c.Value))
		if !ok || len(c.Value) == 0 || c.Key == "" {
			return cond{kind: condUnknown}
		}
		k := condPropertyIs
		if c.Kind == "event_property_contains" {
			k = condPropertyContains
		}
		return cond{kind: k, key: c.Key, value: v}
	case "contains_display_name":
		return cond{kind: condDisplayName}
	case "room_member_count":
		op, n, ok := parseMemberCount(c.Is)
		if !ok {
			return cond{kind: condUnknown}
		}
		return cond{kind: condMemberCount, op: op, n: n}
	case "sender_notification_permission":
		if c.Key == "" {
			return cond{kind: condUnknown}
		}
		return cond{kind: condSenderPermission, key: c.Key}
	case CondThreadSubscription:
		if c.Subscribed == nil {
			return cond{kind: condUnknown}
		}
		if *c.Subscribed {
			return cond{kind: condThreadSubscription, thread: InSubscribedThread}
		}
		return cond{kind: condThreadSubscription, thread: InUnsubscribedThread}
	}
	return cond{kind: condUnknown}
}

// parseMemberCount parses room_member_count's is: a decimal integer,
// optionally after ==, <, >, >= or <=.
func parseMemberCount(is string) (string, int, bool) {
	op := "=="
	for _, p := range []string{"==", "<=", ">=", "<", ">"} {
		if strings.HasPrefix(is, p) {
			op, is = p, is[len(p):]
			break
		}
	}
	n, err := strconv.Atoi(is)
	if err != nil || n < 0 {
		return "", 0, false
	}
	return op, n, true
}

// Evaluate returns the actions of the first enabled rule matching e for
// the user, and whether any matched. displayName is the user's display
// name in the room ("" if none: contains_display_name then never matches);
// thread is where e stands among the user's thread subscriptions.
func (rs *Rules) Evaluate(e *Event, room *Room, displayName string, thread ThreadState) (Actions, bool) {
	for i := range rs.rules {
		r := &rs.rules[i]
		if !r.enabled || (r.eventType != "" && !strings.EqualFold(r.eventType, e.Type)) {
			continue
		}
		if r.matches(e, room, displayName, thread) {
			return r.actions, true
		}
	}
	return Actions{}, false
}

func (r *rule) matches(e *Event, room *Room, displayName string, thread ThreadState) bool {
	for i := range r.conds {
		if !r.conds[i].matches(e, room, displayName, thread) {
			return false
		}
	}
	return true
}

func (c *cond) matches(e *Event, room *Room, displayName string, thread ThreadState) bool {
	switch c.kind {
	case condEventMatch:
		s, ok := e.Str(c.key)
		return ok && c.glob.match(s)
	case condPropertyIs:
		v, ok := e.props[c.key]
		return ok && v.equal(c.value)
	case condPropertyContains:
		v, ok := e.props[c.key]
		if !ok || v.kind != kindArray {
			return false
		}
		for _, x := range v.arr {
			if x.equal(c.value) {
				return true
			}
		}
		return false
	case condDisplayName:
		body, ok := e.Str("content.body")
		return ok && displayName != "" && containsWord(body, displayName)
	case condMemberCount:
		n := room.MemberCount
		switch c.op {
		case "<":
			return n < c.n
		case ">":
			return n > c.n
		case "<=":
			return n <= c.n
		case ">=":
			return n >= c.n
		}
		return n == c.n
	case condSenderPermission:
		return room.SenderPower >= room.notificationLevel(c.key)
	case condThreadSubscription:
		return thread == c.thread
	}
	return false // unrecognised conditions never match
}

// glob is a compiled glob pattern (spec appendix "Glob-style matching": *
// any run of characters, ? one character), matched case-insensitively
// against the whole value, or, for content.body, against any run of it
// that starts and ends at a word boundary.
type glob struct {
	literal string // set when the pattern has no wildcards and matches whole values
	isLit   bool
	re      *regexp.Regexp
}

func compileGlob(pattern string, words bool) *glob {
	if !words && !strings.ContainsAny(pattern, "*?") {
		return &glob{literal: pattern, isLit: true}
	}
	var b strings.Builder
	b.WriteString(`(?is)`)
	if words {
		b.WriteString(`(?:\A|\W)`)
	} else {
		b.WriteString(`\A`)
	}
	for _, r := range pattern {
		switch r {
		case '*':
			b.WriteString(`.*`)
		case '?':
			b.WriteString(`.`)
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	if words {
		b.WriteString(`(?:\W|\z)`)
	} else {
		b.WriteString(`\z`)
	}
	re, err := regexp.Compile(b.String())
	if err != nil {
		return &glob{literal: "\x00never", isLit: true}
	}
	return &glob{re: re}
}

func (g *glob) match(s string) bool {
	if g.isLit {
		return strings.EqualFold(s, g.literal)
	}
	return g.re.MatchString(s)
}

// isWordByte reports whether b is in [A-Za-z0-9_] (spec: a word boundary is
// any other character, or the start or end of the value).
func isWordByte(b byte) bool {
	return b == '_' || b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z'
}

// containsWord reports whether word occurs in s, case-insensitively, as a
// run starting and ending at word boundaries.
func containsWord(s, word string) bool {
	ls, lw := strings.ToLower(s), strings.ToLower(word)
	if lw == "" {
		return false
	}
	for off := 0; off <= len(ls)-len(lw); {
		i := strings.Index(ls[off:], lw)
		if i < 0 {
			return false
		}
		i += off
		end := i + len(lw)
		before := i == 0 || !isWordByte(ls[i-1])
		after := end == len(ls) || !isWordByte(ls[end])
		if before && after {
			return true
		}
		off = i + 1
	}
	return false
}

// CompileStored builds and compiles a user's rules from what is stored.
func CompileStored(userID string, stored *storage.PushRules, d Defaults) *Rules {
	return Compile(userID, BuildRuleset(userID, stored, d))
}
