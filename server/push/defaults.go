package push

import (
	"encoding/json"
	"strings"
)

// The server-default rules (spec v1.19, "Predefined Rules"), in the spec's
// order per kind. Spec v1.17 (MSC4210) removed the legacy rules that looked
// for mentions in the body (.m.rule.contains_display_name,
// .m.rule.roomnotif, .m.rule.contains_user_name), so by default there are
// no content rules; with legacy (push.legacy_mention_rules) they are back
// where Synapse, which still has them unless msc4210_enabled, puts them:
// for clients and bots that mention without m.mentions. Added as Synapse
// does with msc3381_polls_enabled: the poll rules of MSC3930 under their
// unstable IDs, for the unstable event types clients send today
// (org.matrix.msc3381.poll.*). .m.rule.master stays first: it takes
// precedence over every rule, user rules included.

// defaultRule is one server-default rule.
type defaultRule struct {
	kind, id string
	enabled  bool
	conds    []Condition
	pattern  string // content rules
	actions  []json.RawMessage
}

// rule renders it as clients see it.
func (d defaultRule) rule() Rule {
	r := Rule{RuleID: d.id, Default: true, Enabled: d.enabled, Actions: append([]json.RawMessage{}, d.actions...)}
	if d.kind == "content" {
		p := d.pattern
		r.Pattern = &p
	}
	if d.kind == "override" || d.kind == "underride" || d.kind == "postcontent" {
		r.Conditions = make([]json.RawMessage, 0, len(d.conds))
		for _, c := range d.conds {
			raw, _ := json.Marshal(c)
			r.Conditions = append(r.Conditions, raw)
		}
	}
	return r
}

var (
	actNotify       = json.RawMessage(`"notify"`)
	tweakSound      = json.RawMessage(`{"set_tweak":"sound","value":"default"}`)
	tweakRing       = json.RawMessage(`{"set_tweak":"sound","value":"ring"}`)
	tweakHighlight  = json.RawMessage(`{"set_tweak":"highlight"}`)
	notifyOnly      = []json.RawMessage{actNotify}
	notifySound     = []json.RawMessage{actNotify, tweakSound}
	notifyHighlight = []json.RawMessage{actNotify, tweakHighlight}
	noActions       = []json.RawMessage{}
)

func str(s string) *string { return &s }

func eventMatch(key, pattern string) Condition {
	return Condition{Kind: "event_match", Key: key, Pattern: str(pattern)}
}

func typeIs(t string) Condition { return eventMatch("type", t) }

func memberCount(is string) Condition { return Condition{Kind: "room_member_count", Is: is} }

// Defaults chooses among the optional server-default rules.
type Defaults struct {
	// LegacyMentions adds the body-mention rules spec v1.17 removed
	// (push.legacy_mention_rules).
	LegacyMentions bool
	// ThreadSubscriptions adds MSC4306's postcontent rules: a message in a
	// thread notifies the users subscribed to it and nobody else
	// (experimental_features.msc4306_enabled).
	ThreadSubscriptions bool
}

// defaultRules returns the server-default rules for userID: .m.rule.master
// first, then the other rules of every kind, with the optional ones d
// asks for.
func defaultRules(userID string, d Defaults) []defaultRule {
	legacy := d.LegacyMentions
	uid, _ := json.Marshal(userID)
	r := func(kind, id string, actions []json.RawMessage, conds ...Condition) defaultRule {
		return defaultRule{kind: kind, id: id, enabled: true, conds: conds, actions: actions}
	}
	master := r("override", ".m.rule.master", noActions)
	master.enabled = false
	soundHighlight := []json.RawMessage{actNotify, tweakSound, tweakHighlight}
	rules := []defaultRule{
		master,
		r("override", ".m.rule.suppress_notices", noActions, eventMatch("content.msgtype", "m.notice")),
		r("override", ".m.rule.invite_for_me", notifySound,
			typeIs("m.room.member"), eventMatch("content.membership", "invite"), eventMatch("state_key", userID)),
		r("override", ".m.rule.member_event", noActions, typeIs("m.room.member")),
		r("override", ".m.rule.is_user_mention", soundHighlight,
			Condition{Kind: "event_property_contains", Key: `content.m\.mentions.user_ids`, Value: uid}),
	}
	if legacy {
		rules = append(rules, r("override", ".m.rule.contains_display_name", soundHighlight, Condition{Kind: "contains_display_name"}))
	}
	rules = append(rules,
		r("override", ".m.rule.is_room_mention", notifyHighlight,
			Condition{Kind: "event_property_is", Key: `content.m\.mentions.room`, Value: json.RawMessage(`true`)},
			Condition{Kind: "sender_notification_permission", Key: "room"}))
	if legacy {
		rules = append(rules, r("override", ".m.rule.roomnotif", notifyHighlight,
			Condition{Kind: "sender_notification_permission", Key: "room"}, eventMatch("content.body", "@room")))
	}
	rules = append(rules,
		r("override", ".m.rule.tombstone", notifyHighlight, typeIs("m.room.tombstone"), eventMatch("state_key", "")),
		r("override", ".m.rule.reaction", noActions, typeIs("m.reaction")),
		r("override", ".m.rule.room.server_acl", noActions, typeIs("m.room.server_acl"), eventMatch("state_key", "")),
		r("override", ".m.rule.suppress_edits", noActions,
			Condition{Kind: "event_property_is", Key: `content.m\.relates_to.rel_type`, Value: json.RawMessage(`"m.replace"`)}),
		r("override", ".org.matrix.msc3930.rule.poll_response", noActions, typeIs("org.matrix.msc3381.poll.response")))
	if legacy {
		localpart, _, _ := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
		rules = append(rules, defaultRule{kind: "content", id: ".m.rule.contains_user_name", enabled: true, pattern: localpart,
			actions: soundHighlight})
	}
	if d.ThreadSubscriptions {
		rules = append(rules,
			r("postcontent", ".io.element.msc4306.rule.unsubscribed_thread", noActions,
				Condition{Kind: CondThreadSubscription, Subscribed: new(false)}),
			r("postcontent", ".io.element.msc4306.rule.subscribed_thread", notifySound,
				Condition{Kind: CondThreadSubscription, Subscribed: new(true)}))
	}
	return append(rules,
		r("underride", ".m.rule.call", []json.RawMessage{actNotify, tweakRing}, typeIs("m.call.invite")),
		r("underride", ".m.rule.encrypted_room_one_to_one", notifySound, memberCount("2"), typeIs("m.room.encrypted")),
		r("underride", ".m.rule.room_one_to_one", notifySound, memberCount("2"), typeIs("m.room.message")),
		r("underride", ".m.rule.message", notifyOnly, typeIs("m.room.message")),
		r("underride", ".m.rule.encrypted", notifyOnly, typeIs("m.room.encrypted")),
		r("underride", ".org.matrix.msc3930.rule.poll_start_one_to_one", notifySound,
			memberCount("2"), typeIs("org.matrix.msc3381.poll.start")),
		r("underride", ".org.matrix.msc3930.rule.poll_start", notifyOnly, typeIs("org.matrix.msc3381.poll.start")),
		r("underride", ".org.matrix.msc3930.rule.poll_end_one_to_one", notifySound,
			memberCount("2"), typeIs("org.matrix.msc3381.poll.end")),
		r("underride", ".org.matrix.msc3930.rule.poll_end", notifyOnly, typeIs("org.matrix.msc3381.poll.end")),
	)
}
