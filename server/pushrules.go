package server

import (
	"net/http"
	"strings"

	"hearth/server/matrix"
)

// Push rules (spec: Client-Server API, "Push Rules"). Hearth serves the
// spec's predefined ruleset, read-only for now: clients (Element first of
// all) fetch it before their first /sync. Changing rules (PUT, DELETE,
// enabled, actions) answers 400 M_UNRECOGNIZED until rules are stored.

// pushRule is the spec's PushRule.
type pushRule struct {
	RuleID     string          `json:"rule_id"`
	Default    bool            `json:"default"`
	Enabled    bool            `json:"enabled"`
	Pattern    string          `json:"pattern,omitempty"`
	Conditions []pushCondition `json:"conditions,omitzero"` // nil for content rules; [] for the master rule
	Actions    []any           `json:"actions"`
}

// pushCondition is the spec's PushCondition.
type pushCondition struct {
	Kind    string `json:"kind"`
	Key     string `json:"key,omitempty"`
	Pattern string `json:"pattern,omitempty"`
	Is      string `json:"is,omitempty"`
	Value   any    `json:"value,omitempty"`
}

// pushRuleset is the spec's Ruleset, one list per kind.
type pushRuleset struct {
	Override  []pushRule `json:"override"`
	Content   []pushRule `json:"content"`
	Room      []pushRule `json:"room"`
	Sender    []pushRule `json:"sender"`
	Underride []pushRule `json:"underride"`
}

// Actions and conditions the predefined rules share.
var (
	actNotify       = "notify"
	tweakSound      = map[string]any{"set_tweak": "sound", "value": "default"}
	tweakRing       = map[string]any{"set_tweak": "sound", "value": "ring"}
	tweakHighlight  = map[string]any{"set_tweak": "highlight"}
	notifySound     = []any{actNotify, tweakSound}
	notifySoundHigh = []any{actNotify, tweakSound, tweakHighlight}
)

func typeIs(t string) pushCondition {
	return pushCondition{Kind: "event_match", Key: "type", Pattern: t}
}

func match(key, pattern string) pushCondition {
	return pushCondition{Kind: "event_match", Key: key, Pattern: pattern}
}

// defaultPushRules is the spec's predefined ruleset for userID, each kind in
// the spec's order ("Predefined Rules": default override, content and
// underride rules; there are no default room or sender rules).
func defaultPushRules(userID string) map[string]pushRuleset {
	localpart, _, _ := matrix.SplitUserID(userID)
	rule := func(id string, actions []any, conds ...pushCondition) pushRule {
		if actions == nil {
			actions = []any{}
		}
		return pushRule{RuleID: id, Default: true, Enabled: true, Conditions: conds, Actions: actions}
	}
	master := rule(".m.rule.master", nil)
	master.Enabled = false
	master.Conditions = []pushCondition{}
	rs := pushRuleset{
		Override: []pushRule{
			master,
			rule(".m.rule.suppress_notices", nil, match("content.msgtype", "m.notice")),
			rule(".m.rule.invite_for_me", notifySound,
				typeIs("m.room.member"), match("content.membership", "invite"), match("state_key", userID)),
			rule(".m.rule.member_event", nil, typeIs("m.room.member")),
			rule(".m.rule.is_user_mention", notifySoundHigh,
				pushCondition{Kind: "event_property_contains", Key: `content.m\.mentions.user_ids`, Value: userID}),
			rule(".m.rule.contains_display_name", notifySoundHigh, pushCondition{Kind: "contains_display_name"}),
			rule(".m.rule.is_room_mention", []any{actNotify, tweakHighlight},
				pushCondition{Kind: "event_property_is", Key: `content.m\.mentions.room`, Value: true},
				pushCondition{Kind: "sender_notification_permission", Key: "room"}),
			rule(".m.rule.roomnotif", []any{actNotify, tweakHighlight},
				pushCondition{Kind: "sender_notification_permission", Key: "room"}, match("content.body", "@room")),
			rule(".m.rule.tombstone", []any{actNotify, tweakHighlight}, typeIs("m.room.tombstone"), match("state_key", "")),
			rule(".m.rule.reaction", nil, typeIs("m.reaction")),
			rule(".m.rule.room.server_acl", nil, typeIs("m.room.server_acl"), match("state_key", "")),
			rule(".m.rule.suppress_edits", nil,
				pushCondition{Kind: "event_property_is", Key: `content.m\.relates_to.rel_type`, Value: "m.replace"}),
		},
		Content: []pushRule{
			{RuleID: ".m.rule.contains_user_name", Default: true, Enabled: true, Pattern: localpart, Actions: notifySoundHigh},
		},
		Room:   []pushRule{},
		Sender: []pushRule{},
		Underride: []pushRule{
			rule(".m.rule.call", []any{actNotify, tweakRing}, typeIs("m.call.invite")),
			rule(".m.rule.encrypted_room_one_to_one", notifySound,
				pushCondition{Kind: "room_member_count", Is: "2"}, typeIs("m.room.encrypted")),
			rule(".m.rule.room_one_to_one", notifySound,
				pushCondition{Kind: "room_member_count", Is: "2"}, typeIs("m.room.message")),
			rule(".m.rule.message", []any{actNotify}, typeIs("m.room.message")),
			rule(".m.rule.encrypted", []any{actNotify}, typeIs("m.room.encrypted")),
		},
	}
	return map[string]pushRuleset{"global": rs}
}

// GET /_matrix/client/v3/pushrules/
func (s *Server) getPushRules(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, defaultPushRules(deviceFrom(r.Context()).UserID))
}

// GET /_matrix/client/v3/pushrules/global/
func (s *Server) getPushRulesGlobal(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, defaultPushRules(deviceFrom(r.Context()).UserID)["global"])
}

// findPushRule resolves {kind}/{ruleId} to a predefined rule.
func findPushRule(r *http.Request) (*pushRule, error) {
	kind, err := pathParam(r, "kind")
	if err != nil {
		return nil, err
	}
	ruleID, err := pathParam(r, "ruleId")
	if err != nil {
		return nil, err
	}
	rs := defaultPushRules(deviceFrom(r.Context()).UserID)["global"]
	var list []pushRule
	switch kind {
	case "override":
		list = rs.Override
	case "content":
		list = rs.Content
	case "room":
		list = rs.Room
	case "sender":
		list = rs.Sender
	case "underride":
		list = rs.Underride
	default:
		return nil, matrix.InvalidParam("unknown push rule kind %q", kind)
	}
	for i := range list {
		if list[i].RuleID == ruleID {
			return &list[i], nil
		}
	}
	return nil, matrix.NotFound("no push rule %s/%s", kind, ruleID)
}

// GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}
func (s *Server) getPushRule(w http.ResponseWriter, r *http.Request) error {
	rule, err := findPushRule(r)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rule)
}

// GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled
func (s *Server) getPushRuleEnabled(w http.ResponseWriter, r *http.Request) error {
	rule, err := findPushRule(r)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]bool{"enabled": rule.Enabled})
}

// GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions
func (s *Server) getPushRuleActions(w http.ResponseWriter, r *http.Request) error {
	rule, err := findPushRule(r)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"actions": rule.Actions})
}

// PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId} (and /enabled,
// /actions); DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}
//
// Rules are not stored yet: an unknown rule is 404 M_NOT_FOUND, any change
// to a known one 400 M_UNRECOGNIZED.
func (s *Server) changePushRule(w http.ResponseWriter, r *http.Request) error {
	editsExisting := r.Method == http.MethodDelete ||
		strings.HasSuffix(r.URL.Path, "/enabled") || strings.HasSuffix(r.URL.Path, "/actions")
	if _, err := findPushRule(r); err != nil && editsExisting {
		return err
	}
	return &matrix.Error{Code: "M_UNRECOGNIZED", Msg: "changing push rules is not supported yet", Status: http.StatusBadRequest}
}
