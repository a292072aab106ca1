package rooms

import (
	"encoding/json/v2"
	"testing"
)

func TestAuthThirdPartyInvite(t *testing.T) {
	t.Parallel()
	idKey := testKey(t, "id.example.org")
	wrongKey := testKey(t, "evil.example.org")
	signedFor := func(t *testing.T, k SigningKey, mxid, token string) map[string]any {
		raw, _ := json.Marshal(map[string]any{"mxid": mxid, "token": token})
		s, err := SignJSON(raw, k)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(s, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	tests := []struct {
		name    string
		setup   []step
		sender  string
		target  string
		content func(t *testing.T) map[string]any
		want    string
	}{
		{name: "valid", sender: alice, target: dave, content: func(t *testing.T) map[string]any {
			return map[string]any{"display_name": "d", "signed": signedFor(t, idKey, dave, "tok")}
		}},
		{name: "signed by an unknown key", sender: alice, target: dave, content: func(t *testing.T) map[string]any {
			return map[string]any{"display_name": "d", "signed": signedFor(t, wrongKey, dave, "tok")}
		}, want: "5.4.1.8"},
		{name: "mxid is not the state_key", sender: alice, target: eve, content: func(t *testing.T) map[string]any {
			return map[string]any{"display_name": "d", "signed": signedFor(t, idKey, dave, "tok")}
		}, want: "5.4.1.4"},
		{name: "no third party invite for the token", sender: alice, target: dave, content: func(t *testing.T) map[string]any {
			return map[string]any{"display_name": "d", "signed": signedFor(t, idKey, dave, "other")}
		}, want: "5.4.1.5"},
		{name: "sender differs from the third party invite's", sender: mod, target: dave, content: func(t *testing.T) map[string]any {
			return map[string]any{"display_name": "d", "signed": signedFor(t, idKey, dave, "tok")}
		}, want: "5.4.1.6"},
		{name: "no signed", sender: alice, target: dave, content: func(t *testing.T) map[string]any {
			return map[string]any{"display_name": "d"}
		}, want: "5.4.1.2"},
		{name: "target banned", setup: []step{memberStep(alice, dave, MembershipBan)}, sender: alice, target: dave,
			content: func(t *testing.T) map[string]any {
				return map[string]any{"display_name": "d", "signed": signedFor(t, idKey, dave, "tok")}
			}, want: "5.4.1.1"},
	}
	for _, tt := range tests {
		for _, ver := range []string{"1", "6", "11", "12"} {
			t.Run(ver+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				b := baseRoom(t, ver, JoinRuleInvite)
				mustAppend(t, b, TypeThirdPartyInvite, strp("tok"), alice, map[string]any{
					"display_name": "d***@example.org", "key_validity_url": "https://id.example.org/isvalid",
					"public_key": idKey.Public(), "public_keys": []any{map[string]any{"public_key": idKey.Public()}},
				})
				for _, s := range tt.setup {
					s(t, b)
				}
				_, err := b.Append(TypeMember, strp(tt.target), tt.sender, map[string]any{
					"membership": MembershipInvite, "third_party_invite": tt.content(t),
				})
				if got := ruleOf(err); got != tt.want {
					t.Errorf("rule = %q, want %q (%v)", got, tt.want, err)
				}
			})
		}
	}
}

func TestAuthRestrictedJoinNeedsAuthoriserSignature(t *testing.T) {
	t.Parallel()
	exampleKey, otherKey := testKey(t, "example.org"), testKey(t, "other.org")
	keys := keyring(1<<60, exampleKey, otherKey)
	tests := []struct {
		name    string
		ver     string
		cosign  bool
		keys    KeyLookup
		want    string
		servers int
	}{
		{name: "signed by the authorising server", ver: "10", cosign: true, keys: keys, servers: 2},
		{name: "not signed by the authorising server", ver: "10", keys: keys, want: "5.2.1", servers: 2},
		{name: "caller already verified signatures", ver: "10", keys: nil, servers: 2},
		{name: "v7 has no such rule: public join with the key passes unsigned", ver: "7", keys: keys, servers: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			jr := JoinRuleRestricted
			if !MustVersion(tt.ver).RestrictedJoins {
				jr = JoinRulePublic
			}
			b := baseRoom(t, tt.ver, jr)
			e, err := BuildEvent(b.Version, EventTemplate{RoomID: b.RoomID, Type: TypeMember, StateKey: strp(zed), Sender: zed,
				Content:    map[string]any{"membership": MembershipJoin, "join_authorised_via_users_server": alice},
				PrevEvents: b.Extremities, AuthEvents: SelectAuthEvents(AuthEventKeys(b.Version, TypeMember, strp(zed), zed, []byte(`{"membership":"join","join_authorised_via_users_server":"`+alice+`"}`)), b.State),
				Depth: b.Depth + 1, OriginServerTS: 2e12, RefHashes: b.refHashes}, otherKey)
			if err != nil {
				t.Fatal(err)
			}
			if tt.cosign {
				raw, err := SignEvent(b.Version, e.JSON(), exampleKey)
				if err != nil {
					t.Fatal(err)
				}
				if e, err = ParseEvent(b.Version, raw); err != nil {
					t.Fatal(err)
				}
			}
			if n := len(RequiredSignatureServers(e)); n != tt.servers {
				t.Errorf("%d required signature servers, want %d", n, tt.servers)
			}
			if got := ruleOf(AuthorizeAgainstState(e, b.State, tt.keys)); got != tt.want {
				t.Errorf("rule = %q, want %q", got, tt.want)
			}
		})
	}
}
