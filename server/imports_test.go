package server_test

import (
	"go/build"
	"slices"
	"testing"
)

// TestImportRules keeps the layout's dependency rules (pipeline review §6):
// the pure packages stay pure, storage knows nothing of events' rules, and
// the room pipeline knows nothing of HTTP or the handlers. Direct imports
// are checked; each rule names what a package must not import.
func TestImportRules(t *testing.T) {
	rules := []struct {
		pkg       string
		forbidden []string
	}{
		{"hearth/server/matrix", []string{"hearth/server/rooms", "hearth/server/storage", "hearth/server/timeline", "hearth/server"}},
		{"hearth/server/rooms", []string{"net/http", "database/sql", "hearth/server/storage", "hearth/server/timeline", "hearth/server"}},
		{"hearth/server/storage", []string{"net/http", "hearth/server/rooms", "hearth/server/timeline", "hearth/server"}},
		{"hearth/server/timeline", []string{"net/http", "hearth/server", "hearth/server/federation", "hearth/web"}},
		{"hearth/server/push", []string{"hearth/server", "hearth/server/timeline", "hearth/server/federation", "hearth/web"}},
	}
	for _, r := range rules {
		p, err := build.Import(r.pkg, ".", 0)
		if err != nil {
			t.Fatalf("%s: %v", r.pkg, err)
		}
		if len(p.Imports) == 0 {
			t.Fatalf("%s: no imports found; is the package loaded?", r.pkg)
		}
		for _, imp := range p.Imports {
			if slices.Contains(r.forbidden, imp) {
				t.Errorf("%s imports %s", r.pkg, imp)
			}
		}
	}
}
