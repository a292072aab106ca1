package server

import "testing"

func TestServerACL(t *testing.T) {
	acl := `{"allow": ["*"], "deny": ["evil.example", "*.evil.example", "b?d.test"], "allow_ip_literals": false}`
	for _, tc := range []struct {
		server string
		want   bool
	}{
		{"good.example", true},
		{"good.example:8448", true},
		{"evil.example", false},
		{"EVIL.example", false},
		{"sub.evil.example", false},
		{"notevil.example", true},
		{"bad.test", false},
		{"baad.test", true},
		{"1.2.3.4", false},
		{"[::1]:8448", false},
	} {
		if got := aclAllows([]byte(acl), tc.server); got != tc.want {
			t.Errorf("%s: allowed %t, want %t", tc.server, got, tc.want)
		}
	}
	// Allow lists are exhaustive; IP literals are allowed by default.
	only := `{"allow": ["*.friends.test"]}`
	for server, want := range map[string]bool{"a.friends.test": true, "friends.test": false, "other.test": false, "[2001:db8::1]": false} {
		if got := aclAllows([]byte(only), server); got != want {
			t.Errorf("allow-only: %s allowed %t, want %t", server, got, want)
		}
	}
	if !aclAllows([]byte(`{"allow": ["*"]}`), "10.0.0.1") {
		t.Error("IP literals are allowed unless allow_ip_literals is false")
	}
	if aclAllows([]byte(`{}`), "anyone.test") {
		t.Error("an ACL with no allow entry allows nobody")
	}
}
