// Package push is Hearth's push notification machinery (spec: Client-Server
// API, "Push Notifications"): push rules and their evaluation (this file,
// eval.go), the evaluator that runs them on every event for every local
// member and records the notifications (evaluator.go), and the pushers
// that deliver those to push gateways (pusher.go).
//
// A user's rules are the spec's server-default rules (defaults.go), with
// the user's changes to them (enabled, actions), and the rules the user
// defined, stored per kind in priority order. Ruleset renders them as
// clients see them (GET /pushrules/, the m.push_rules account data);
// Compile turns them into the form the evaluator matches events against.
package push

import (
	"encoding/json"
	"fmt"
	"strings"

	"hearth/server/storage"
)

// Kinds are the rule kinds in the order they are checked (spec: "Push
// Rules"; postcontent is MSC4306's, between content and room rules, as
// Synapse orders it).
var Kinds = []string{"override", "content", "postcontent", "room", "sender", "underride"}

// ValidKind reports whether kind names a kind of rule.
func ValidKind(kind string) bool {
	for _, k := range Kinds {
		if k == kind {
			return true
		}
	}
	return false
}

// Rule is the spec's PushRule as clients see it.
type Rule struct {
	RuleID  string `json:"rule_id"`
	Default bool   `json:"default"`
	Enabled bool   `json:"enabled"`
	// Pattern is set for content rules.
	Pattern *string `json:"pattern,omitempty"`
	// Conditions are set for override, postcontent and underride rules
	// (the master rule's is an empty list), kept as the client sent them:
	// an unknown condition is shown back unchanged and never matches.
	Conditions []json.RawMessage `json:"conditions,omitzero"`
	Actions    []json.RawMessage `json:"actions"`
}

// Condition is the spec's PushCondition, as far as the known kinds go.
type Condition struct {
	Kind    string          `json:"kind"`
	Key     string          `json:"key,omitempty"`
	Pattern *string         `json:"pattern,omitempty"`
	Is      string          `json:"is,omitempty"`
	Value   json.RawMessage `json:"value,omitempty"`
	// Subscribed is MSC4306's thread_subscription condition's.
	Subscribed *bool `json:"subscribed,omitempty"`
}

// CondThreadSubscription is MSC4306's condition kind: whether the event is
// in a thread the user is (subscribed: true) or is not (false) subscribed
// to; an event outside threads matches neither.
const CondThreadSubscription = "io.element.msc4306.thread_subscription"

// Ruleset is the global ruleset: each kind's rules in priority order.
type Ruleset map[string][]Rule

// Rulesets is the body of GET /pushrules/ and the content of m.push_rules.
type Rulesets struct {
	Global Ruleset `json:"global"`
}

// Find returns the rule of kind with ruleID, or nil.
func (rs Ruleset) Find(kind, ruleID string) *Rule {
	for i, r := range rs[kind] {
		if r.RuleID == ruleID {
			return &rs[kind][i]
		}
	}
	return nil
}

// BuildRuleset merges the server-default rules for userID with the user's
// stored rules and changes: the master rule first, then per kind the
// user's rules (highest priority first) before the defaults of that kind.
// legacy includes the body-mention rules spec v1.17 removed (defaults.go).
func BuildRuleset(userID string, stored *storage.PushRules, d Defaults) Ruleset {
	rs := Ruleset{}
	for _, k := range Kinds {
		rs[k] = []Rule{}
	}
	defs := defaultRules(userID, d)
	changes := map[string]storage.PushRuleDefault{}
	if stored != nil {
		for _, d := range stored.Defaults {
			changes[d.Kind+"/"+d.RuleID] = d
		}
	}
	applyChanges := func(d defaultRule) Rule {
		r := d.rule()
		if c, ok := changes[d.kind+"/"+d.id]; ok {
			if c.Enabled != nil {
				r.Enabled = *c.Enabled
			}
			if c.Actions != "" {
				var acts []json.RawMessage
				if json.Unmarshal([]byte(c.Actions), &acts) == nil {
					r.Actions = acts
				}
			}
		}
		return r
	}
	// .m.rule.master comes before every other rule, user rules included.
	rs["override"] = append(rs["override"], applyChanges(defs[0]))
	if stored != nil {
		for _, u := range stored.Rules {
			rs[u.Kind] = append(rs[u.Kind], userRule(u))
		}
	}
	for _, d := range defs[1:] {
		rs[d.kind] = append(rs[d.kind], applyChanges(d))
	}
	return rs
}

// userRule renders a stored user-defined rule.
func userRule(u storage.PushRule) Rule {
	r := Rule{RuleID: u.RuleID, Enabled: u.Enabled, Actions: []json.RawMessage{}}
	if u.Kind == "content" {
		p := u.Pattern
		r.Pattern = &p
	}
	if u.Conditions != "" {
		var conds []json.RawMessage
		if json.Unmarshal([]byte(u.Conditions), &conds) == nil {
			r.Conditions = conds
		}
		if r.Conditions == nil {
			r.Conditions = []json.RawMessage{}
		}
	}
	var acts []json.RawMessage
	if json.Unmarshal([]byte(u.Actions), &acts) == nil && acts != nil {
		r.Actions = acts
	}
	return r
}

// IsDefault reports whether ruleID names a server-default rule of kind
// (rule IDs starting with "." are reserved for them).
func IsDefault(kind, ruleID string, defs Defaults) bool {
	for _, d := range defaultRules("", defs) {
		if d.kind == kind && d.id == ruleID {
			return true
		}
	}
	return false
}

// CheckActions validates a rule's actions as Synapse does: "notify", the
// historical "dont_notify" and "coalesce" (accepted, then ignored), or an
// object with set_tweak.
func CheckActions(actions []json.RawMessage) error {
	for _, a := range actions {
		var s string
		if json.Unmarshal(a, &s) == nil {
			switch s {
			case "notify", "dont_notify", "coalesce":
				continue
			}
			return fmt.Errorf("unrecognised action %q", s)
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(a, &obj) != nil {
			return fmt.Errorf("unrecognised action %s", a)
		}
		var tweak string
		if json.Unmarshal(obj["set_tweak"], &tweak) != nil || tweak == "" {
			return fmt.Errorf("unrecognised action %s: an object needs a set_tweak string", a)
		}
	}
	return nil
}

// CheckConditions validates the conditions of an override or underride
// rule: each must be an object with a kind. Unknown kinds are allowed
// (they never match, spec: "Conditions").
func CheckConditions(conds []json.RawMessage) error {
	for _, c := range conds {
		var cond struct {
			Kind *string `json:"kind"`
		}
		if err := json.Unmarshal(c, &cond); err != nil {
			return fmt.Errorf("condition %s is not an object", c)
		}
		if cond.Kind == nil || *cond.Kind == "" {
			return fmt.Errorf("condition %s has no kind", c)
		}
	}
	return nil
}

// ValidRuleID reports why a client may not create a rule with this ID, or
// nil: no slashes (Synapse keys rules by kind/id) and no leading dot
// (reserved for server-default rules).
func ValidRuleID(ruleID string) error {
	if ruleID == "" {
		return fmt.Errorf("rule_id may not be empty")
	}
	if strings.ContainsAny(ruleID, `/\`) {
		return fmt.Errorf("rule_id may not contain slashes")
	}
	if strings.HasPrefix(ruleID, ".") {
		return fmt.Errorf("cannot add new rule_ids that start with '.'")
	}
	return nil
}

// RoomRuleCopy is r made for newRoomID when r is an enabled rule about
// oldRoomID (a room rule for it, or a rule with a room_id condition naming
// it), as Synapse copies rules on a room upgrade: the room_id conditions
// name the new room and the rule ID is the new room's ID.
func RoomRuleCopy(r storage.PushRule, oldRoomID, newRoomID string) (storage.PushRule, bool) {
	if !r.Enabled {
		return r, false
	}
	switch r.Kind {
	case "room":
		if r.RuleID != oldRoomID {
			return r, false
		}
		r.RuleID = newRoomID
		return r, true
	case "override", "underride":
		var conds []map[string]any
		if json.Unmarshal([]byte(r.Conditions), &conds) != nil {
			return r, false
		}
		found := false
		for _, c := range conds {
			if c["key"] == "room_id" && c["pattern"] == oldRoomID {
				c["pattern"] = newRoomID
				found = true
			}
		}
		if !found {
			return r, false
		}
		raw, err := json.Marshal(conds)
		if err != nil {
			return r, false
		}
		r.Conditions, r.RuleID = string(raw), newRoomID
		return r, true
	}
	return r, false
}
