package rooms

import (
	"strings"
	"testing"
)

// step is a setup action on a base room that must succeed.
type step func(t testing.TB, b *RoomBuilder)

func setPL(override map[string]any) step {
	return func(t testing.TB, b *RoomBuilder) {
		mustAppend(t, b, TypePowerLevels, strp(""), alice, basePL(b.Version, override))
	}
}

func setUsers(kv ...any) step {
	return func(t testing.TB, b *RoomBuilder) {
		mustAppend(t, b, TypePowerLevels, strp(""), alice, basePL(b.Version, map[string]any{"users": usersWith(b.Version, kv...)}))
	}
}

func memberStep(sender, target, membership string, extra ...any) step {
	return func(t testing.TB, b *RoomBuilder) { member(t, b, sender, target, membership, extra...) }
}

// candidate is the event whose authorisation the test checks.
type candidate struct {
	typ, sender string
	stateKey    *string
	content     map[string]any
}

func mem(sender, target, membership string, extra ...any) candidate {
	c := map[string]any{"membership": membership}
	for i := 0; i+1 < len(extra); i += 2 {
		c[extra[i].(string)] = extra[i+1]
	}
	return candidate{TypeMember, sender, strp(target), c}
}

func pl(sender string, override map[string]any) func(rv *RoomVersion) candidate {
	return func(rv *RoomVersion) candidate {
		return candidate{TypePowerLevels, sender, strp(""), basePL(rv, override)}
	}
}

func fixed(c candidate) func(*RoomVersion) candidate {
	return func(*RoomVersion) candidate { return c }
}

func usersWith(rv *RoomVersion, kv ...any) map[string]any {
	u := map[string]any{mod: 50}
	if !rv.PrivilegedCreators {
		u[alice] = 100
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(u, kv[i].(string))
		} else {
			u[kv[i].(string)] = kv[i+1]
		}
	}
	return u
}

func plUsers(sender string, kv ...any) func(rv *RoomVersion) candidate {
	return func(rv *RoomVersion) candidate {
		return candidate{TypePowerLevels, sender, strp(""), basePL(rv, map[string]any{"users": usersWith(rv, kv...)})}
	}
}

func TestAuthRules(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		versions []string
		joinRule string
		setup    []step
		event    func(*RoomVersion) candidate
		want     string // rule number of the rejection, "" if allowed
	}{
		// Power levels.
		{name: "non-admin without PL permission cannot send power_levels", versions: allVersions(),
			event: plUsers(bob, bob, 100), want: "8"},
		{name: "mod raising own level above own", versions: allVersions(),
			event: plUsers(mod, mod, 75), want: "10.10.1"},
		{name: "mod lowering own level", versions: allVersions(),
			event: plUsers(mod, mod, 10)},
		{name: "mod promoting bob to own level", versions: allVersions(),
			event: plUsers(mod, bob, 50)},
		{name: "mod promoting bob above own level", versions: allVersions(),
			event: plUsers(mod, bob, 51), want: "10.10.1"},
		{name: "mod demoting an equal mod", versions: allVersions(),
			setup: []step{setUsers(dave, 50)},
			event: plUsers(mod, dave, 0), want: "10.9.1"},
		{name: "mod removing alice (100) from users", versions: versionsUpTo(11),
			event: plUsers(mod, alice, nil), want: "10.9.1"},
		{name: "mod removing an equal-level entry", versions: versionsUpTo(11),
			setup: []step{setUsers(dave, 50)},
			event: plUsers(mod, dave, nil), want: "10.9.1"},
		{name: "top-level ban within sender level", versions: allVersions(),
			event: pl(mod, map[string]any{"ban": 40})},
		{name: "top-level ban above sender level", versions: allVersions(),
			event: pl(mod, map[string]any{"ban": 60}), want: "10.6.2"},
		{name: "top-level kick currently above sender", versions: allVersions(),
			setup: []step{setPL(map[string]any{"kick": 75})},
			event: pl(mod, map[string]any{"kick": 40}), want: "10.6.1"},
		{name: "events entry raised above sender level", versions: allVersions(),
			event: pl(mod, map[string]any{"events": map[string]any{TypePowerLevels: 100, TypeName: 50}}), want: "10.8.1"},
		{name: "events entry currently above sender removed", versions: allVersions(),
			setup: []step{setPL(map[string]any{"events": map[string]any{TypePowerLevels: 50, TypeName: 50, "m.room.tombstone": 100}})},
			event: pl(mod, nil), want: "10.7.1"},
		{name: "events_default raised to sender level", versions: allVersions(),
			event: pl(mod, map[string]any{"events_default": 50})},
		{name: "stringy level accepted before v10", versions: versionsUpTo(9),
			event: pl(alice, map[string]any{"ban": "40"})},
		{name: "stringy level refused from v10", versions: versionsFrom(10),
			event: pl(alice, map[string]any{"ban": "40"}), want: "10.1"},
		{name: "stringy events value refused from v10", versions: versionsFrom(10),
			event: pl(alice, map[string]any{"events": map[string]any{TypeName: "50"}}), want: "10.2"},
		{name: "users key not a user ID", versions: allVersions(),
			event: plUsers(alice, "bob", 10), want: "10.3"},
		{name: "creator in users refused in v12", versions: versionsFrom(12),
			event: plUsers(mod, alice, 50), want: "10.4"},
		{name: "users_default lets bob send state", versions: allVersions(),
			setup: []step{setPL(map[string]any{"users_default": 50})},
			event: fixed(candidate{TypeTopic, bob, strp(""), map[string]any{"topic": "x"}})},
		{name: "state_default blocks bob", versions: allVersions(),
			event: fixed(candidate{"org.example.state", bob, strp(""), map[string]any{}}), want: "8"},
		{name: "state_default 0 allows bob", versions: allVersions(),
			setup: []step{setPL(map[string]any{"state_default": 0})},
			event: fixed(candidate{"org.example.state", bob, strp(""), map[string]any{}})},
		{name: "events_default blocks messages", versions: allVersions(),
			setup: []step{setPL(map[string]any{"events_default": 10})},
			event: fixed(candidate{"m.room.message", bob, nil, map[string]any{"body": "hi"}}), want: "8"},
		{name: "message at events_default 0", versions: allVersions(),
			event: fixed(candidate{"m.room.message", bob, nil, map[string]any{"body": "hi"}})},
		{name: "state_key of another user", versions: allVersions(),
			setup: []step{setPL(map[string]any{"state_default": 0})},
			event: fixed(candidate{"org.example.state", bob, strp(alice), map[string]any{}}), want: "9"},
		{name: "state_key of the sender", versions: allVersions(),
			setup: []step{setPL(map[string]any{"state_default": 0})},
			event: fixed(candidate{"org.example.state", bob, strp(bob), map[string]any{}})},
		{name: "non-member message", versions: allVersions(),
			event: fixed(candidate{"m.room.message", dave, nil, map[string]any{"body": "hi"}}), want: "6"},

		// Join rules.
		{name: "join public room", versions: allVersions(), event: fixed(mem(dave, dave, MembershipJoin))},
		{name: "join invite-only room uninvited", versions: allVersions(), joinRule: JoinRuleInvite,
			event: fixed(mem(dave, dave, MembershipJoin)), want: "5.3.4"},
		{name: "join invite-only room after invite", versions: allVersions(), joinRule: JoinRuleInvite,
			setup: []step{memberStep(bob, dave, MembershipInvite)},
			event: fixed(mem(dave, dave, MembershipJoin))},
		{name: "join on behalf of someone else", versions: allVersions(),
			event: fixed(mem(bob, dave, MembershipJoin)), want: "5.3.2"},
		{name: "knock on knock room", versions: versionsFrom(7), joinRule: JoinRuleKnock,
			event: fixed(mem(dave, dave, MembershipKnock))},
		{name: "knock on invite room", versions: versionsFrom(7), joinRule: JoinRuleInvite,
			event: fixed(mem(dave, dave, MembershipKnock)), want: "5.7.1"},
		{name: "knock for someone else", versions: versionsFrom(7), joinRule: JoinRuleKnock,
			event: fixed(mem(bob, dave, MembershipKnock)), want: "5.7.2"},
		{name: "knock while joined", versions: versionsFrom(7), joinRule: JoinRuleKnock,
			event: fixed(mem(bob, bob, MembershipKnock)), want: "5.7.4"},
		{name: "knock membership unknown before v7", versions: versionsUpTo(6), joinRule: JoinRuleInvite,
			event: fixed(mem(dave, dave, MembershipKnock)), want: "5.8"},
		{name: "knock join rule unknown before v7", versions: versionsUpTo(6), joinRule: JoinRuleKnock,
			event: fixed(mem(dave, dave, MembershipJoin)), want: "5.3.7"},
		{name: "knocker may retract", versions: versionsFrom(7), joinRule: JoinRuleKnock,
			setup: []step{memberStep(dave, dave, MembershipKnock)},
			event: fixed(mem(dave, dave, MembershipLeave))},
		{name: "restricted join authorised by alice", versions: versionsFrom(8), joinRule: JoinRuleRestricted,
			event: fixed(mem(dave, dave, MembershipJoin, "join_authorised_via_users_server", alice))},
		{name: "restricted join without authoriser", versions: versionsFrom(8), joinRule: JoinRuleRestricted,
			event: fixed(mem(dave, dave, MembershipJoin)), want: "5.3.5.2"},
		{name: "restricted join authorised by user who cannot invite", versions: versionsFrom(8), joinRule: JoinRuleRestricted,
			setup: []step{setPL(map[string]any{"invite": 50})},
			event: fixed(mem(dave, dave, MembershipJoin, "join_authorised_via_users_server", bob)), want: "5.3.5.2"},
		{name: "restricted join authorised by non-member", versions: versionsFrom(8), joinRule: JoinRuleRestricted,
			event: fixed(mem(dave, dave, MembershipJoin, "join_authorised_via_users_server", eve)), want: "5.3.5.2"},
		{name: "restricted join rule unknown before v8", versions: versionsUpTo(7), joinRule: JoinRuleRestricted,
			event: fixed(mem(dave, dave, MembershipJoin, "join_authorised_via_users_server", alice)), want: "5.3.7"},
		{name: "knock_restricted join with authoriser", versions: versionsFrom(10), joinRule: JoinRuleKnockRestricted,
			event: fixed(mem(dave, dave, MembershipJoin, "join_authorised_via_users_server", alice))},
		{name: "knock_restricted knock", versions: versionsFrom(10), joinRule: JoinRuleKnockRestricted,
			event: fixed(mem(dave, dave, MembershipKnock))},
		{name: "knock_restricted unknown in v9", versions: []string{"9"}, joinRule: JoinRuleKnockRestricted,
			event: fixed(mem(dave, dave, MembershipKnock)), want: "5.7.1"},

		// Membership transitions.
		{name: "banned user cannot join", versions: allVersions(),
			setup: []step{memberStep(alice, dave, MembershipBan)},
			event: fixed(mem(dave, dave, MembershipJoin)), want: "5.3.3"},
		{name: "banned user cannot be invited", versions: allVersions(),
			setup: []step{memberStep(alice, dave, MembershipBan)},
			event: fixed(mem(alice, dave, MembershipInvite)), want: "5.4.3"},
		{name: "joined user cannot be invited", versions: allVersions(),
			event: fixed(mem(alice, bob, MembershipInvite)), want: "5.4.3"},
		{name: "invite by non-member", versions: allVersions(),
			event: fixed(mem(dave, eve, MembershipInvite)), want: "5.4.2"},
		{name: "invite below invite level", versions: allVersions(),
			setup: []step{setPL(map[string]any{"invite": 50})},
			event: fixed(mem(bob, dave, MembershipInvite)), want: "5.4.5"},
		{name: "invitee rejects invite", versions: allVersions(), joinRule: JoinRuleInvite,
			setup: []step{memberStep(bob, dave, MembershipInvite)},
			event: fixed(mem(dave, dave, MembershipLeave))},
		{name: "member leaves", versions: allVersions(), event: fixed(mem(bob, bob, MembershipLeave))},
		{name: "leave when not in room", versions: allVersions(),
			event: fixed(mem(dave, dave, MembershipLeave)), want: "5.5.1"},
		{name: "kick by non-member", versions: allVersions(),
			event: fixed(mem(dave, bob, MembershipLeave)), want: "5.5.2"},
		{name: "kick below kick level", versions: allVersions(),
			event: fixed(mem(bob, mod, MembershipLeave)), want: "5.5.5"},
		{name: "mod kicks bob", versions: allVersions(), event: fixed(mem(mod, bob, MembershipLeave))},
		{name: "mod cannot kick alice", versions: allVersions(),
			event: fixed(mem(mod, alice, MembershipLeave)), want: "5.5.5"},
		{name: "unban below ban level", versions: allVersions(),
			setup: []step{memberStep(alice, dave, MembershipBan), setPL(map[string]any{"kick": 0})},
			event: fixed(mem(bob, dave, MembershipLeave)), want: "5.5.3"},
		{name: "mod unbans", versions: allVersions(),
			setup: []step{memberStep(alice, dave, MembershipBan)},
			event: fixed(mem(mod, dave, MembershipLeave))},
		{name: "ban below ban level", versions: allVersions(),
			event: fixed(mem(bob, dave, MembershipBan)), want: "5.6.3"},
		{name: "mod cannot ban alice", versions: allVersions(),
			event: fixed(mem(mod, alice, MembershipBan)), want: "5.6.3"},
		{name: "ban by non-member", versions: allVersions(),
			event: fixed(mem(dave, bob, MembershipBan)), want: "5.6.1"},
		{name: "unknown membership", versions: allVersions(),
			event: fixed(mem(bob, bob, "dance")), want: "5.8"},
		{name: "member event without membership", versions: allVersions(),
			event: fixed(candidate{TypeMember, bob, strp(bob), map[string]any{}}), want: "5.1"},

		// Redactions.
		{name: "v1-2 redaction of another server's event below redact level", versions: versionsUpTo(2),
			event: fixed(candidate{TypeRedaction, bob, nil, map[string]any{"redacts": "$abc:other.org"}}), want: "11 (v1-2)"},
		{name: "v1-2 redaction of a same-server event", versions: versionsUpTo(2),
			event: fixed(candidate{TypeRedaction, bob, nil, map[string]any{"redacts": "$abc:example.org"}})},
		{name: "v1-2 redaction at redact level", versions: versionsUpTo(2),
			event: fixed(candidate{TypeRedaction, mod, nil, map[string]any{"redacts": "$abc:other.org"}})},
		{name: "v3+ redaction is not limited by redact level", versions: versionsFrom(3),
			event: fixed(candidate{TypeRedaction, bob, nil, map[string]any{"redacts": "$abcdefghijklmnopqrstuvwxyzabcdefghijklmnopq"}})},
		{name: "v3+ redaction limited by events level", versions: versionsFrom(3),
			setup: []step{setPL(map[string]any{"events": map[string]any{TypePowerLevels: 50, TypeRedaction: 50}})},
			event: fixed(candidate{TypeRedaction, bob, nil, map[string]any{"redacts": "$abcdefghijklmnopqrstuvwxyzabcdefghijklmnopq"}}), want: "8"},

		// Aliases (v1–5 special case).
		{name: "v1-5 aliases for own domain bypass power levels", versions: versionsUpTo(5),
			event: fixed(candidate{TypeAliases, bob, strp("example.org"), map[string]any{"aliases": []string{"#a:example.org"}}})},
		{name: "v1-5 aliases for another domain", versions: versionsUpTo(5),
			event: fixed(candidate{TypeAliases, alice, strp("other.org"), map[string]any{"aliases": []string{}}}), want: "4.2 (v1-5)"},
		{name: "v6+ aliases are ordinary state", versions: versionsFrom(6),
			event: fixed(candidate{TypeAliases, bob, strp("example.org"), map[string]any{"aliases": []string{}}}), want: "8"},

		// Third-party invites need the invite level.
		{name: "third_party_invite below invite level", versions: allVersions(),
			setup: []step{setPL(map[string]any{"invite": 50})},
			event: fixed(candidate{TypeThirdPartyInvite, bob, strp("tok"), map[string]any{"display_name": "x"}}), want: "7.1"},
	}
	for _, tt := range tests {
		for _, ver := range tt.versions {
			t.Run(ver+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				jr := tt.joinRule
				if jr == "" {
					jr = JoinRulePublic
				}
				b := baseRoom(t, ver, jr)
				for _, s := range tt.setup {
					s(t, b)
				}
				c := tt.event(b.Version)
				_, err := b.Append(c.typ, c.stateKey, c.sender, c.content)
				if got := ruleOf(err); got != tt.want {
					t.Errorf("rule = %q, want %q (err: %v)", got, tt.want, err)
				}
			})
		}
	}
}

func TestAuthCreateEvent(t *testing.T) {
	t.Parallel()
	key := testKey(t, "example.org")
	tests := []struct {
		name     string
		versions []string
		roomID   string
		sender   string
		content  map[string]any
		prev     []string
		want     string
	}{
		{name: "valid v1-10", versions: versionsUpTo(10), roomID: "!r:example.org", sender: alice,
			content: map[string]any{"creator": alice}},
		{name: "missing creator v1-10", versions: versionsUpTo(10), roomID: "!r:example.org", sender: alice,
			content: map[string]any{}, want: "1.4 (v1-10)"},
		{name: "no creator needed v11+", versions: versionsFrom(11), roomID: "!r:example.org", sender: alice,
			content: map[string]any{"room_version": "11"}},
		{name: "room on another server", versions: versionsUpTo(11), roomID: "!r:other.org", sender: alice,
			content: map[string]any{"creator": alice}, want: "1.2"},
		{name: "has prev_events", versions: versionsFrom(3), roomID: "!r:example.org", sender: alice,
			content: map[string]any{"creator": alice}, prev: []string{"$x"}, want: "1.1"},
		{name: "unknown room_version", versions: versionsFrom(3), roomID: "!r:example.org", sender: alice,
			content: map[string]any{"creator": alice, "room_version": "999"}, want: "1.3"},
		{name: "additional_creators valid", versions: versionsFrom(12), sender: alice,
			content: map[string]any{"room_version": "12", "additional_creators": []string{bob}}},
		{name: "additional_creators not an array", versions: versionsFrom(12), sender: alice,
			content: map[string]any{"room_version": "12", "additional_creators": bob}, want: "1.4"},
		{name: "additional_creators not user IDs", versions: versionsFrom(12), sender: alice,
			content: map[string]any{"room_version": "12", "additional_creators": []any{"bob", 3}}, want: "1.4"},
	}
	for _, tt := range tests {
		for _, ver := range tt.versions {
			t.Run(ver+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				rv := MustVersion(ver)
				roomID := tt.roomID
				if rv.RoomIDFromCreateEvent {
					roomID = ""
				}
				e, err := BuildEvent(rv, EventTemplate{RoomID: roomID, Type: TypeCreate, StateKey: strp(""),
					Sender: tt.sender, Content: tt.content, PrevEvents: tt.prev, Depth: 1, OriginServerTS: 1,
					RefHashes: map[string]string{"$x": "aGFzaA"}}, key)
				if err != nil {
					t.Fatal(err)
				}
				if got := ruleOf(AuthorizeByAuthEvents(e, nil, nil, nil)); got != tt.want {
					t.Errorf("rule = %q, want %q", got, tt.want)
				}
			})
		}
	}
}

func TestAuthV12Creators(t *testing.T) {
	t.Parallel()
	rv := MustVersion("12")
	newRoom := func(t *testing.T, additional []string) *RoomBuilder {
		b := NewRoomBuilder(rv, "", testKey(t, "example.org"))
		b.Now = clock()
		c := map[string]any{"room_version": "12"}
		if additional != nil {
			c["additional_creators"] = additional
		}
		mustAppend(t, b, TypeCreate, strp(""), alice, c)
		member(t, b, alice, alice, MembershipJoin)
		mustAppend(t, b, TypeJoinRules, strp(""), alice, map[string]any{"join_rule": JoinRulePublic})
		mustAppend(t, b, TypePowerLevels, strp(""), alice, map[string]any{"users": map[string]any{mod: 100}})
		member(t, b, bob, bob, MembershipJoin)
		member(t, b, mod, mod, MembershipJoin)
		return b
	}
	tests := []struct {
		name       string
		additional []string
		event      candidate
		want       string
	}{
		{name: "additional creator can change power levels", additional: []string{bob},
			event: candidate{TypePowerLevels, bob, strp(""), map[string]any{"users": map[string]any{dave: 100}}}},
		{name: "ordinary member cannot change power levels",
			event: candidate{TypePowerLevels, bob, strp(""), map[string]any{"users": map[string]any{dave: 100}}}, want: "8"},
		{name: "additional creator cannot be listed in users", additional: []string{bob},
			event: candidate{TypePowerLevels, alice, strp(""), map[string]any{"users": map[string]any{bob: 100}}}, want: "10.4"},
		{name: "admin at 100 cannot ban a creator",
			event: candidate{TypeMember, mod, strp(alice), map[string]any{"membership": MembershipBan}}, want: "5.6.3"},
		{name: "creator can ban an admin at 100",
			event: candidate{TypeMember, alice, strp(mod), map[string]any{"membership": MembershipBan}}},
		{name: "admin at 100 cannot kick an additional creator", additional: []string{bob},
			event: candidate{TypeMember, mod, strp(bob), map[string]any{"membership": MembershipLeave}}, want: "5.5.5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := newRoom(t, tt.additional)
			_, err := b.Append(tt.event.typ, tt.event.stateKey, tt.event.sender, tt.event.content)
			if got := ruleOf(err); got != tt.want {
				t.Errorf("rule = %q, want %q (%v)", got, tt.want, err)
			}
		})
	}
}

func TestCheckAuthEvents(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		versions []string
		mutate   func(b *RoomBuilder) []string // returns the auth_events to use
		want     string
	}{
		{name: "correct selection", versions: allVersions(), mutate: func(b *RoomBuilder) []string {
			return SelectAuthEvents(AuthEventKeys(b.Version, "m.room.message", nil, bob, []byte(`{}`)), b.State)
		}},
		{name: "unexpected join_rules", versions: allVersions(), mutate: func(b *RoomBuilder) []string {
			ids := SelectAuthEvents(AuthEventKeys(b.Version, "m.room.message", nil, bob, []byte(`{}`)), b.State)
			return append(ids, b.State.Get(TypeJoinRules, "").ID())
		}, want: "3.2"},
		{name: "duplicate key", versions: allVersions(), mutate: func(b *RoomBuilder) []string {
			ids := SelectAuthEvents(AuthEventKeys(b.Version, "m.room.message", nil, bob, []byte(`{}`)), b.State)
			return append(ids, b.State.Get(TypeMember, bob).ID())
		}, want: "3.1"},
		{name: "create event omitted before v12", versions: versionsUpTo(11), mutate: func(b *RoomBuilder) []string {
			return []string{b.State.Get(TypePowerLevels, "").ID(), b.State.Get(TypeMember, bob).ID()}
		}, want: "3.4"},
		{name: "create event selected in v12", versions: versionsFrom(12), mutate: func(b *RoomBuilder) []string {
			ids := SelectAuthEvents(AuthEventKeys(b.Version, "m.room.message", nil, bob, []byte(`{}`)), b.State)
			return append(ids, b.State.Get(TypeCreate, "").ID())
		}, want: "3.2"},
	}
	for _, tt := range tests {
		for _, ver := range tt.versions {
			t.Run(ver+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				b := baseRoom(t, ver, JoinRulePublic)
				authIDs := tt.mutate(b)
				e, err := BuildEvent(b.Version, EventTemplate{RoomID: b.RoomID, Type: "m.room.message", Sender: bob,
					Content: map[string]any{"body": "x"}, PrevEvents: b.Extremities, AuthEvents: authIDs,
					Depth: b.Depth + 1, OriginServerTS: 2e12, RefHashes: b.refHashes}, b.Key)
				if err != nil {
					t.Fatal(err)
				}
				byID := map[string]*Event{}
				for _, s := range b.State {
					byID[s.ID()] = s
				}
				var auth []*Event
				for _, id := range e.AuthEventIDs() {
					auth = append(auth, byID[id])
				}
				got := ruleOf(AuthorizeByAuthEvents(e, auth, b.State.Get(TypeCreate, ""), nil))
				if got != tt.want {
					t.Errorf("rule = %q, want %q", got, tt.want)
				}
			})
		}
	}
}

func TestAuthFederateAndRoomID(t *testing.T) {
	t.Parallel()
	for _, ver := range []string{"10", "11", "12"} {
		t.Run(ver, func(t *testing.T) {
			t.Parallel()
			rv := MustVersion(ver)
			b := NewRoomBuilder(rv, roomIDFor(rv), testKey(t, "example.org"))
			b.Now = clock()
			c := map[string]any{"room_version": ver, "m.federate": false}
			if rv.CreatorInContent {
				c["creator"] = alice
			}
			mustAppend(t, b, TypeCreate, strp(""), alice, c)
			member(t, b, alice, alice, MembershipJoin)
			mustAppend(t, b, TypeJoinRules, strp(""), alice, map[string]any{"join_rule": JoinRulePublic})
			_, err := b.Append(TypeMember, strp(zed), zed, map[string]any{"membership": MembershipJoin})
			if got := ruleOf(err); got != "4" {
				t.Errorf("remote join into unfederated room: rule %q, want 4", got)
			}
			if rv.RoomIDFromCreateEvent {
				// An event claiming a room whose create event is a different one.
				other := NewRoomBuilder(rv, "", testKey(t, "example.org"))
				other.Now = clock()
				mustAppend(t, other, TypeCreate, strp(""), alice, map[string]any{"room_version": ver})
				e, err := BuildEvent(rv, EventTemplate{RoomID: other.RoomID, Type: TypeMember, StateKey: strp(bob), Sender: bob,
					Content: map[string]any{"membership": "join"}, PrevEvents: b.Extremities, Depth: 9, OriginServerTS: 9}, b.Key)
				if err != nil {
					t.Fatal(err)
				}
				if got := ruleOf(Authorize(e, b.State, nil)); got != "2" {
					t.Errorf("foreign room ID: rule %q, want 2", got)
				}
				if !strings.HasPrefix(b.RoomID, "!") || len(b.RoomID) != 44 {
					t.Errorf("v12 room ID %q is not ! + 43 chars of hash", b.RoomID)
				}
			}
		})
	}
}
