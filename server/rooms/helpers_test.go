package rooms

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"testing"
)

const (
	alice = "@alice:example.org"
	bob   = "@bob:example.org"
	mod   = "@mod:example.org"
	dave  = "@dave:example.org"
	eve   = "@eve:example.org"
	zed   = "@zed:other.org"
)

func testKey(t testing.TB, server string) SigningKey {
	t.Helper()
	seed := make([]byte, ed25519.SeedSize)
	copy(seed, server)
	k, err := SigningKeyFromSeed(server, "ed25519:a_test", seed)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// keyring is a KeyLookup over known keys.
func keyring(validUntil int64, keys ...SigningKey) KeyLookup {
	return func(server, keyID string, _ int64) (ed25519.PublicKey, int64, error) {
		for _, k := range keys {
			if k.ServerName == server && k.KeyID == keyID {
				return k.Private.Public().(ed25519.PublicKey), validUntil, nil
			}
		}
		return nil, 0, fmt.Errorf("no key %s for %s", keyID, server)
	}
}

func allVersions() []string { return KnownVersions() }

func versionsFrom(n int) []string { return KnownVersions()[n-1:] }

func versionsUpTo(n int) []string { return KnownVersions()[:n] }

// clock returns a deterministic, increasing origin_server_ts.
func clock() func() int64 {
	ts := int64(1_700_000_000_000)
	return func() int64 { ts++; return ts }
}

func roomIDFor(rv *RoomVersion) string {
	if rv.RoomIDFromCreateEvent {
		return ""
	}
	return "!room:example.org"
}

// mustAppend appends an event that the test expects to be allowed.
func mustAppend(t testing.TB, b *RoomBuilder, typ string, sk *string, sender string, content any) *Event {
	t.Helper()
	e, err := b.Append(typ, sk, sender, content)
	if err != nil {
		t.Fatalf("setup: %s from %s: %v", typ, sender, err)
	}
	return e
}

func member(t testing.TB, b *RoomBuilder, sender, target, membership string, extra ...any) *Event {
	t.Helper()
	c := map[string]any{"membership": membership}
	for i := 0; i+1 < len(extra); i += 2 {
		c[extra[i].(string)] = extra[i+1]
	}
	return mustAppend(t, b, TypeMember, strp(target), sender, c)
}

// basePL is the power levels of the test rooms: alice 100 (v1–11; she is
// the creator in v12), mod 50; power_levels events need 50 so that mod's
// changes exercise rule 10.
func basePL(rv *RoomVersion, override map[string]any) map[string]any {
	users := map[string]any{mod: 50}
	if !rv.PrivilegedCreators {
		users[alice] = 100
	}
	pl := map[string]any{
		"users": users, "users_default": 0, "events_default": 0, "state_default": 50,
		"ban": 50, "kick": 50, "redact": 50, "invite": 0,
		"events": map[string]any{TypePowerLevels: 50, TypeName: 50},
	}
	for k, v := range override {
		pl[k] = v
	}
	return pl
}

// baseRoom: alice creates the room, bob and mod join; then the join rule
// is set to joinRule.
func baseRoom(t testing.TB, ver, joinRule string) *RoomBuilder {
	t.Helper()
	return baseRoomInto(t, ver, joinRule, nil)
}

// baseRoomInto is baseRoom recording every event into m (if not nil).
func baseRoomInto(t testing.TB, ver, joinRule string, m EventMap) *RoomBuilder {
	t.Helper()
	rv := MustVersion(ver)
	b := NewRoomBuilder(rv, roomIDFor(rv), testKey(t, "example.org"))
	b.Now = clock()
	if m != nil {
		b.Sink = func(e *Event) { m.Add(e) }
	}
	create := map[string]any{"room_version": ver}
	if rv.CreatorInContent {
		create["creator"] = alice
	}
	mustAppend(t, b, TypeCreate, strp(""), alice, create)
	member(t, b, alice, alice, MembershipJoin)
	mustAppend(t, b, TypePowerLevels, strp(""), alice, basePL(rv, nil))
	mustAppend(t, b, TypeJoinRules, strp(""), alice, map[string]any{"join_rule": JoinRulePublic})
	member(t, b, bob, bob, MembershipJoin)
	member(t, b, mod, mod, MembershipJoin)
	if joinRule != JoinRulePublic {
		mustAppend(t, b, TypeJoinRules, strp(""), alice, map[string]any{"join_rule": joinRule})
	}
	return b
}

func ruleOf(err error) string {
	if err == nil {
		return ""
	}
	var ae *AuthError
	if errors.As(err, &ae) {
		return ae.Rule
	}
	return "error: " + err.Error()
}
