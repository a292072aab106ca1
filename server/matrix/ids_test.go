package matrix

import "testing"

func TestValidUserID(t *testing.T) {
	t.Parallel()
	for id, want := range map[string]bool{
		"@alice:example.org":          true,
		"@Historical_Caps!:host:8448": true,
		"@a:[::1]:8448":               true,
		"@a:127.0.0.1":                true,
		"alice:example.org":           false,
		"@:example.org":               false,
		"@alice":                      false,
		"@alice:":                     false,
		"@invalid:dom$ain$.com":       false,
		"@sp ace:example.org":         false,
		"@a:b:c:d":                    false,
	} {
		if got := ValidUserID(id); got != want {
			t.Errorf("ValidUserID(%q) = %v, want %v", id, got, want)
		}
	}
}
