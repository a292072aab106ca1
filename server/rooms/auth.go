package rooms

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json/jsontext"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/tidwall/gjson"
)

// ErrNotAuthorized is wrapped by every *AuthError.
var ErrNotAuthorized = errors.New("event not authorised")

// AuthError is a rejection by the authorisation rules. Rule is the rule's
// number in the spec's room version 12 list (for earlier versions the
// numbering differs slightly; the Reason says what failed).
type AuthError struct {
	Rule   string
	Reason string
}

func (e *AuthError) Error() string {
	return "auth rule " + e.Rule + ": " + e.Reason
}

func (e *AuthError) Unwrap() error { return ErrNotAuthorized }

func reject(rule, format string, args ...any) error {
	return &AuthError{Rule: rule, Reason: fmt.Sprintf(format, args...)}
}

// StateEvents is room state as events keyed by (type, state_key).
type StateEvents map[StateKey]*Event

// Get returns the state event for a key, or nil.
func (s StateEvents) Get(typ, stateKey string) *Event {
	return s[StateKey{Type: typ, StateKey: stateKey}]
}

func (s StateEvents) membership(user string) string {
	if e := s.Get(TypeMember, user); e != nil {
		if m := e.Membership(); m != "" {
			return m
		}
	}
	return MembershipLeave
}

func (s StateEvents) joinRule() string {
	if e := s.Get(TypeJoinRules, ""); e != nil {
		return contentString(e.Content(), "join_rule")
	}
	// Synapse treats a room without m.room.join_rules as invite-only.
	return JoinRuleInvite
}

// AuthEventKeys implements "Auth events selection" (server-server API): the
// state keys whose current events an event's auth_events must reference.
// The create event has none; from v12 the create event is never selected.
func AuthEventKeys(rv *RoomVersion, typ string, stateKey *string, sender string, content jsontext.Value) []StateKey {
	if typ == TypeCreate && stateKey != nil && *stateKey == "" {
		return nil
	}
	var keys []StateKey
	add := func(k StateKey) {
		for _, x := range keys {
			if x == k {
				return
			}
		}
		keys = append(keys, k)
	}
	if !rv.RoomIDFromCreateEvent {
		add(StateKey{Type: TypeCreate, StateKey: ""})
	}
	add(StateKey{Type: TypePowerLevels, StateKey: ""})
	add(StateKey{Type: TypeMember, StateKey: sender})
	if typ == TypeMember && stateKey != nil {
		add(StateKey{Type: TypeMember, StateKey: *stateKey})
		m := contentString(content, "membership")
		if m == MembershipJoin || m == MembershipInvite || m == MembershipKnock {
			add(StateKey{Type: TypeJoinRules, StateKey: ""})
		}
		if m == MembershipInvite {
			if tok := gjson.GetBytes(content, "third_party_invite.signed.token"); tok.Type == gjson.String {
				add(StateKey{Type: TypeThirdPartyInvite, StateKey: tok.Str})
			}
		}
		if m == MembershipJoin && rv.RestrictedJoins {
			if via := contentString(content, "join_authorised_via_users_server"); via != "" {
				add(StateKey{Type: TypeMember, StateKey: via})
			}
		}
	}
	return keys
}

// AuthEventKeys is AuthEventKeys for an existing event.
func (e *Event) AuthEventKeys() []StateKey {
	return AuthEventKeys(e.version, e.f.Type, e.f.StateKey, e.f.Sender, e.f.Content)
}

// SelectAuthEvents returns the IDs of the events in state that a new event
// with the given keys must list as auth_events, in key order.
func SelectAuthEvents(keys []StateKey, state StateEvents) []string {
	ids := []string{}
	for _, k := range keys {
		if e := state[k]; e != nil {
			ids = append(ids, e.ID())
		}
	}
	return ids
}

// CheckAuthEvents applies the rules about an event's auth_events list
// (v12 rule 3; v1–11 rule 2): no duplicate keys, only selected keys, none
// rejected, all in the same room, and (before v12) the create event present.
// authEvents are the events named by e.AuthEventIDs(), in any order.
func CheckAuthEvents(e *Event, authEvents []*Event) error {
	if len(authEvents) != len(e.auth) {
		return reject("3", "%d auth events given for %d auth_events", len(authEvents), len(e.auth))
	}
	allowed := map[StateKey]bool{}
	for _, k := range e.AuthEventKeys() {
		allowed[k] = true
	}
	seen := map[StateKey]bool{}
	hasCreate := false
	for _, a := range authEvents {
		if a == nil {
			return reject("3", "missing auth event")
		}
		if !a.IsState() {
			return reject("3.2", "auth event %s is not a state event", a.ID())
		}
		k := a.Key()
		if seen[k] {
			return reject("3.1", "duplicate auth event for (%s, %q)", k.Type, k.StateKey)
		}
		seen[k] = true
		if !allowed[k] {
			return reject("3.2", "auth event %s (%s, %q) is not selected by the auth events selection", a.ID(), k.Type, k.StateKey)
		}
		if a.Rejected {
			return reject("3.3", "auth event %s was rejected", a.ID())
		}
		if a.RoomID() != e.RoomID() {
			return reject("3.5", "auth event %s is in room %s", a.ID(), a.RoomID())
		}
		if a.IsCreate() {
			hasCreate = true
		}
	}
	if !e.version.RoomIDFromCreateEvent && !hasCreate && !e.IsCreate() {
		return reject("3.4", "no m.room.create event among the auth events")
	}
	return nil
}

// AuthorizeByAuthEvents authorises an event against its own auth_events
// (step 4 of the checks on receipt of a PDU). For v12 the create event,
// whose ID is the room ID, must be passed as create; earlier versions take
// it from authEvents and create may be nil.
func AuthorizeByAuthEvents(e *Event, authEvents []*Event, create *Event, keys KeyLookup) error {
	if e.IsCreate() {
		return Authorize(e, nil, keys)
	}
	if err := CheckAuthEvents(e, authEvents); err != nil {
		return err
	}
	state := make(StateEvents, len(authEvents)+1)
	for _, a := range authEvents {
		state[a.Key()] = a
	}
	if e.version.RoomIDFromCreateEvent && create != nil {
		state[StateKey{Type: TypeCreate, StateKey: ""}] = create
	}
	return Authorize(e, state, keys)
}

// AuthorizeAgainstState authorises an event against room state (the state
// before the event, or the current state): only the keys the auth events
// selection names are consulted, as the spec requires. For v12 the state
// must include the create event.
func AuthorizeAgainstState(e *Event, state StateEvents, keys KeyLookup) error {
	sel := make(StateEvents, 8)
	for _, k := range e.AuthEventKeys() {
		if ev := state[k]; ev != nil {
			sel[k] = ev
		}
	}
	if c := state.Get(TypeCreate, ""); c != nil {
		sel[StateKey{Type: TypeCreate, StateKey: ""}] = c
	}
	return Authorize(e, sel, keys)
}

// Authorize applies the authorisation rules of e's room version to e given
// the auth state (the events the rules consult, keyed by type/state_key,
// including the m.room.create event). It does not check the auth_events
// list itself (see CheckAuthEvents).
//
// keys is used for rule 5.2 (the join_authorised_via_users_server's
// server must have signed the event). Pass nil only when the signatures of
// RequiredSignatureServers were already verified on receipt, as they are
// for events built locally.
func Authorize(e *Event, state StateEvents, keys KeyLookup) error {
	rv := e.version
	if e.Type() == TypeCreate {
		return authorizeCreate(e)
	}
	create := state.Get(TypeCreate, "")
	if create == nil {
		return reject("3.4", "no m.room.create event")
	}
	if rv.RoomIDFromCreateEvent {
		if create.Rejected || "!"+strings.TrimPrefix(create.ID(), "$") != e.RoomID() {
			return reject("2", "room ID %s is not the ID of an accepted m.room.create event", e.RoomID())
		}
	}
	if f := gjson.GetBytes(create.Content(), `m\.federate`); f.Type == gjson.False && serverOf(create.Sender()) != serverOf(e.Sender()) {
		return reject("4", "room is not federated and %s is not on %s", e.Sender(), serverOf(create.Sender()))
	}
	if rv.SpecialCasedAliases && e.Type() == TypeAliases {
		sk, ok := e.StateKey()
		if !ok {
			return reject("4.1 (v1-5)", "m.room.aliases without state_key")
		}
		if sk != serverOf(e.Sender()) {
			return reject("4.2 (v1-5)", "m.room.aliases state_key %q is not the sender's domain", sk)
		}
		return nil
	}
	if e.Type() == TypeMember {
		return authorizeMember(e, state, create, keys)
	}
	if m := state.membership(e.Sender()); m != MembershipJoin {
		return reject("6", "sender %s is not joined (membership %s)", e.Sender(), m)
	}
	pl := EffectivePowerLevels(rv, state.Get(TypePowerLevels, ""), create)
	senderLevel := pl.UserLevel(e.Sender())
	if e.Type() == TypeThirdPartyInvite {
		if senderLevel >= pl.Invite {
			return nil
		}
		return reject("7.1", "sender level %d below invite level %d", senderLevel, pl.Invite)
	}
	if need := pl.EventLevel(e.Type(), e.IsState()); need > senderLevel {
		return reject("8", "%s needs power level %d, sender has %d", e.Type(), need, senderLevel)
	}
	if sk, ok := e.StateKey(); ok && strings.HasPrefix(sk, "@") && sk != e.Sender() {
		return reject("9", "state_key %s starts with @ and is not the sender", sk)
	}
	if e.Type() == TypePowerLevels {
		return authorizePowerLevels(e, state, create, pl, senderLevel)
	}
	if rv.RedactionAuthRule && e.Type() == TypeRedaction {
		if senderLevel >= pl.Redact {
			return nil
		}
		if serverOf(e.Redacts()) != "" && serverOf(e.Redacts()) == serverOf(e.ID()) {
			return nil
		}
		return reject("11 (v1-2)", "sender level %d below redact level %d and redacted event is from another server", senderLevel, pl.Redact)
	}
	return nil
}

// serverNameRe is the spec's server name grammar (appendices, "Server
// name"): additional_creators must be user IDs by the grammar, server
// name included (v12's rule 1.4, as Synapse checks it); elsewhere the
// auth rules only look at a user ID's shape.
var serverNameRe = regexp.MustCompile(`^(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]{1,255})(:[0-9]{1,5})?$`)

func validUserID(s string) bool {
	if len(s) > 255 || !strings.HasPrefix(s, "@") {
		return false
	}
	i := strings.IndexByte(s, ':')
	return i > 1 && i < len(s)-1
}

func authorizeCreate(e *Event) error {
	rv := e.version
	if len(e.prev) > 0 {
		return reject("1.1", "m.room.create has prev_events")
	}
	if rv.RoomIDFromCreateEvent {
		if e.f.RoomID != "" {
			return reject("1.2", "m.room.create has a room_id")
		}
	} else if serverOf(e.RoomID()) != serverOf(e.Sender()) {
		return reject("1.2", "room ID %s is not on the sender's server", e.RoomID())
	}
	if v := gjson.GetBytes(e.Content(), "room_version"); v.Exists() {
		if _, ok := LookupVersion(v.String()); !ok || v.Type != gjson.String {
			return reject("1.3", "unknown room_version %s", v.Raw)
		}
	}
	if rv.PrivilegedCreators {
		if ac := gjson.GetBytes(e.Content(), "additional_creators"); ac.Exists() {
			if !ac.IsArray() {
				return reject("1.4", "additional_creators is not an array")
			}
			for _, u := range ac.Array() {
				if u.Type != gjson.String || !validUserID(u.Str) || !serverNameRe.MatchString(serverOf(u.Str)) {
					return reject("1.4", "additional_creators entry %s is not a user ID", u.Raw)
				}
			}
		}
	}
	if rv.CreatorInContent && !gjson.GetBytes(e.Content(), "creator").Exists() {
		return reject("1.4 (v1-10)", "m.room.create content has no creator")
	}
	return nil
}

func authorizeMember(e *Event, state StateEvents, create *Event, keys KeyLookup) error {
	rv := e.version
	target, ok := e.StateKey()
	membership := gjson.GetBytes(e.Content(), "membership")
	if !ok || membership.Type != gjson.String {
		return reject("5.1", "m.room.member without state_key or membership")
	}
	if rv.RestrictedJoins {
		if via := contentString(e.Content(), "join_authorised_via_users_server"); via != "" && keys != nil {
			if err := VerifyServerSignature(e, serverOf(via), keys); err != nil {
				return reject("5.2.1", "not signed by the server of %s: %v", via, err)
			}
		}
	}
	sender := e.Sender()
	senderMembership := state.membership(sender)
	targetMembership := state.membership(target)
	levels := func() *PowerLevels { return EffectivePowerLevels(rv, state.Get(TypePowerLevels, ""), create) }
	switch membership.Str {
	case MembershipJoin:
		creators := Creators(create)
		if len(e.prev) == 1 && e.prev[0] == create.ID() && len(creators) > 0 && target == creators[0] {
			return nil
		}
		if sender != target {
			return reject("5.3.2", "sender %s cannot join %s", sender, target)
		}
		if senderMembership == MembershipBan {
			return reject("5.3.3", "%s is banned", sender)
		}
		rule := state.joinRule()
		switch {
		case rule == JoinRuleInvite || (rule == JoinRuleKnock && rv.Knocking):
			if targetMembership == MembershipInvite || targetMembership == MembershipJoin {
				return nil
			}
			return reject("5.3.4", "join rule %s and %s is not invited", rule, target)
		case (rule == JoinRuleRestricted && rv.RestrictedJoins) || (rule == JoinRuleKnockRestricted && rv.KnockRestricted):
			if targetMembership == MembershipInvite || targetMembership == MembershipJoin {
				return nil
			}
			via := contentString(e.Content(), "join_authorised_via_users_server")
			if via == "" {
				return reject("5.3.5.2", "restricted join without join_authorised_via_users_server")
			}
			pl := levels()
			if pl.UserLevel(via) < pl.Invite {
				return reject("5.3.5.2", "authorising user %s cannot invite", via)
			}
			if state.membership(via) != MembershipJoin {
				return reject("5.3.5.2", "authorising user %s is not joined", via)
			}
			return nil
		case rule == JoinRulePublic:
			return nil
		}
		return reject("5.3.7", "join rule %q does not allow joining", rule)
	case MembershipInvite:
		if tpi := gjson.GetBytes(e.Content(), "third_party_invite"); tpi.Exists() {
			return authorizeThirdPartyInvite(e, state, target, targetMembership, tpi)
		}
		if senderMembership != MembershipJoin {
			return reject("5.4.2", "inviter %s is not joined", sender)
		}
		if targetMembership == MembershipJoin || targetMembership == MembershipBan {
			return reject("5.4.3", "invitee %s is %s", target, targetMembership)
		}
		pl := levels()
		if pl.UserLevel(sender) >= pl.Invite {
			return nil
		}
		return reject("5.4.5", "inviter level %d below invite level %d", pl.UserLevel(sender), pl.Invite)
	case MembershipLeave:
		if sender == target {
			switch senderMembership {
			case MembershipInvite, MembershipJoin:
				return nil
			case MembershipKnock:
				if rv.Knocking {
					return nil
				}
			}
			return reject("5.5.1", "%s cannot leave from membership %s", sender, senderMembership)
		}
		if senderMembership != MembershipJoin {
			return reject("5.5.2", "kicker %s is not joined", sender)
		}
		pl := levels()
		sl, tl := pl.UserLevel(sender), pl.UserLevel(target)
		if targetMembership == MembershipBan && sl < pl.Ban {
			return reject("5.5.3", "unban needs ban level %d, sender has %d", pl.Ban, sl)
		}
		if sl >= pl.Kick && tl < sl {
			return nil
		}
		return reject("5.5.5", "kick needs level >= %d and above target's %d, sender has %d", pl.Kick, tl, sl)
	case MembershipBan:
		if senderMembership != MembershipJoin {
			return reject("5.6.1", "banner %s is not joined", sender)
		}
		pl := levels()
		sl, tl := pl.UserLevel(sender), pl.UserLevel(target)
		if sl >= pl.Ban && tl < sl {
			return nil
		}
		return reject("5.6.3", "ban needs level >= %d and above target's %d, sender has %d", pl.Ban, tl, sl)
	case MembershipKnock:
		if !rv.Knocking {
			break
		}
		rule := state.joinRule()
		if rule != JoinRuleKnock && !(rule == JoinRuleKnockRestricted && rv.KnockRestricted) {
			return reject("5.7.1", "join rule %q does not allow knocking", rule)
		}
		if sender != target {
			return reject("5.7.2", "%s cannot knock for %s", sender, target)
		}
		switch senderMembership {
		case MembershipBan, MembershipInvite, MembershipJoin:
			return reject("5.7.4", "cannot knock with membership %s", senderMembership)
		}
		return nil
	}
	return reject("5.8", "unknown membership %q", membership.Str)
}

func authorizeThirdPartyInvite(e *Event, state StateEvents, target, targetMembership string, tpi gjson.Result) error {
	if targetMembership == MembershipBan {
		return reject("5.4.1.1", "invitee %s is banned", target)
	}
	signed := tpi.Get("signed")
	if !signed.IsObject() {
		return reject("5.4.1.2", "third_party_invite has no signed object")
	}
	mxid, token := signed.Get("mxid"), signed.Get("token")
	if mxid.Type != gjson.String || token.Type != gjson.String {
		return reject("5.4.1.3", "signed has no mxid or token")
	}
	if mxid.Str != target {
		return reject("5.4.1.4", "signed mxid %s is not the state_key %s", mxid.Str, target)
	}
	inv := state.Get(TypeThirdPartyInvite, token.Str)
	if inv == nil {
		return reject("5.4.1.5", "no m.room.third_party_invite for token")
	}
	if inv.Sender() != e.Sender() {
		return reject("5.4.1.6", "sender differs from the third party invite's sender")
	}
	var pubKeys []string
	if k := gjson.GetBytes(inv.Content(), "public_key"); k.Type == gjson.String {
		pubKeys = append(pubKeys, k.Str)
	}
	for _, k := range gjson.GetBytes(inv.Content(), "public_keys").Array() {
		if pk := k.Get("public_key"); pk.Type == gjson.String {
			pubKeys = append(pubKeys, pk.Str)
		}
	}
	msg, err := withoutKeys([]byte(signed.Raw), "signatures", "unsigned")
	if err == nil {
		msg, err = canonicalBytes(nil, msg)
	}
	if err != nil {
		return reject("5.4.1.8", "signed is not canonical JSON: %v", err)
	}
	var ok bool
	signed.Get("signatures").ForEach(func(_, byKey gjson.Result) bool {
		byKey.ForEach(func(_, sig gjson.Result) bool {
			s := decodeB64(sig.Str)
			for _, pk := range pubKeys {
				if p := decodeB64(pk); len(p) == ed25519.PublicKeySize && ed25519.Verify(p, msg, s) {
					ok = true
					return false
				}
			}
			return true
		})
		return !ok
	})
	if ok {
		return nil
	}
	return reject("5.4.1.8", "no signature in signed matches a public key of the third party invite")
}

func decodeB64(s string) []byte {
	s = strings.TrimRight(s, "=")
	if b, err := base64.RawStdEncoding.DecodeString(s); err == nil {
		return b
	}
	b, _ := base64.RawURLEncoding.DecodeString(s)
	return b
}

var plTopLevel = []string{"users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"}

func authorizePowerLevels(e *Event, state StateEvents, create *Event, pl *PowerLevels, senderLevel int64) error {
	rv := e.version
	c := e.Content()
	if rv.IntegerPowerLevels {
		for _, k := range plTopLevel {
			if v := gjson.GetBytes(c, k); v.Exists() {
				if _, ok := parseLevel(rv, v); !ok {
					return reject("10.1", "%s is not an integer", k)
				}
			}
		}
		for _, k := range []string{"events", "notifications"} {
			v := gjson.GetBytes(c, k)
			if !v.Exists() {
				continue
			}
			if !v.IsObject() {
				return reject("10.2", "%s is not an object", k)
			}
			var bad string
			v.ForEach(func(kk, vv gjson.Result) bool {
				if _, ok := parseLevel(rv, vv); !ok {
					bad = kk.Str
				}
				return bad == ""
			})
			if bad != "" {
				return reject("10.2", "%s.%s is not an integer", k, bad)
			}
		}
	}
	if users := gjson.GetBytes(c, "users"); users.Exists() {
		if !users.IsObject() {
			return reject("10.3", "users is not an object")
		}
		var err error
		creators := pl.Creators
		users.ForEach(func(k, v gjson.Result) bool {
			if !validUserID(k.Str) {
				err = reject("10.3", "users key %q is not a user ID", k.Str)
			} else if _, ok := parseLevel(rv, v); !ok {
				err = reject("10.3", "users.%s is not an integer", k.Str)
			} else {
				for _, cr := range creators {
					if cr == k.Str {
						err = reject("10.4", "room creator %s must not be in users", k.Str)
					}
				}
			}
			return err == nil
		})
		if err != nil {
			return err
		}
	}
	old := state.Get(TypePowerLevels, "")
	if old == nil {
		return nil
	}
	oc := old.Content()
	level := func(content jsontext.Value, path string) (int64, bool) {
		return parseLevel(rv, gjson.GetBytes(content, path))
	}
	for _, k := range plTopLevel {
		ov, oOK := level(oc, k)
		nv, nOK := level(c, k)
		if oOK == nOK && ov == nv {
			continue
		}
		if oOK && ov > senderLevel {
			return reject("10.6.1", "cannot change %s from %d with level %d", k, ov, senderLevel)
		}
		if nOK && nv > senderLevel {
			return reject("10.6.2", "cannot set %s to %d with level %d", k, nv, senderLevel)
		}
	}
	maps := []string{"events"}
	if rv.NotificationsPowerLevels {
		maps = append(maps, "notifications")
	}
	for _, m := range maps {
		if err := checkLevelMap(rv, m, gjson.GetBytes(oc, m), gjson.GetBytes(c, m), senderLevel, "", "10.7", "10.8"); err != nil {
			return err
		}
	}
	return checkLevelMap(rv, "users", gjson.GetBytes(oc, "users"), gjson.GetBytes(c, "users"), senderLevel, e.Sender(), "10.9", "10.10")
}

// checkLevelMap applies the rules for entries of events/notifications
// (self == "") or users (self == sender): an entry changed or removed must
// have had a current value not above (users: below) the sender's level,
// other than the sender's own users entry; an entry added or changed must
// not get a value above the sender's level.
func checkLevelMap(rv *RoomVersion, name string, oldMap, newMap gjson.Result, senderLevel int64, self, ruleOld, ruleNew string) error {
	oldVals, newVals := map[string]int64{}, map[string]int64{}
	oldMap.ForEach(func(k, v gjson.Result) bool {
		if n, ok := parseLevel(rv, v); ok {
			oldVals[k.Str] = n
		}
		return true
	})
	newMap.ForEach(func(k, v gjson.Result) bool {
		if n, ok := parseLevel(rv, v); ok {
			newVals[k.Str] = n
		}
		return true
	})
	for k, ov := range oldVals {
		nv, still := newVals[k]
		if still && nv == ov {
			continue
		}
		if self == "" {
			if ov > senderLevel {
				return reject(ruleOld+".1", "cannot change %s.%s from %d with level %d", name, k, ov, senderLevel)
			}
		} else if k != self && ov >= senderLevel {
			return reject(ruleOld+".1", "cannot change %s.%s from %d with level %d", name, k, ov, senderLevel)
		}
	}
	for k, nv := range newVals {
		if ov, had := oldVals[k]; had && ov == nv {
			continue
		}
		if nv > senderLevel {
			return reject(ruleNew+".1", "cannot set %s.%s to %d with level %d", name, k, nv, senderLevel)
		}
	}
	return nil
}
