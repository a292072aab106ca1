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
