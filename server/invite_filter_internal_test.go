package server

import "testing"

func TestMatchGlob(t *testing.T) {
	for _, c := range []struct {
		glob, s string
		want    bool
	}{
		{"@bob:hs1", "@bob:hs1", true}, {"@bob:hs1", "@bob:hs12", false}, {"@bob:*", "@bob:hs1", true},
		{"hs?", "hs1", true}, {"hs?", "hs", false}, {"*", "", true}, {"", "x", false},
		{"@user-?*", "@user-1:hs", true}, {"@user-?*", "@user-", false}, {"*a*b", "xaxxb", true}, {"*a*b", "xaxxbc", false},
		{"@Bob:*", "@bob:hs", false}, {"é?", "éü", true},
		{"a*a*a*a*a*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
	} {
		if got := matchGlob(c.glob, c.s); got != c.want {
			t.Errorf("matchGlob(%q, %q) = %v", c.glob, c.s, got)
		}
	}
}
