package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const baseYAML = `# Hearth configuration
server_name: example.org  # the domain in user IDs
signing_key_path: signing.key
database:
  name: sqlite3
  args:
    database: hearth.db

# Cache sizes. Keep me!
caches:
  # multiplies every cache
  global_factor: 1.0  # default
`

func TestUpdateFileKeepsComments(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "homeserver.yaml")
	if err := os.WriteFile(path, []byte(baseYAML), 0o640); err != nil {
		t.Fatal(err)
	}
	err := UpdateFile(path,
		Setting{Path: []string{"caches", "global_factor"}, Value: 0.25},
		Setting{Path: []string{"caches", "per_cache_factors", "users"}, Value: 2.0},
		Setting{Path: []string{"memory", "limit"}, Value: "400M"},
		Setting{Path: []string{"memory", "gc_percent"}, Value: 50},
	)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := os.ReadFile(path)
	for _, want := range []string{"# Hearth configuration", "# the domain in user IDs", "# Cache sizes. Keep me!",
		"# multiplies every cache", "global_factor: 0.25 # default", "per_cache_factors:", "users: 2", "limit: 400M", "gc_percent: 50"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if info, _ := os.Stat(path); info.Mode().Perm() != 0o640 {
		t.Errorf("mode changed to %v", info.Mode().Perm())
	}
	c, _, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Caches.GlobalFactor != 0.25 || c.Caches.PerCacheFactors["users"] != 2 || c.Memory.Limit != 400<<20 || c.Memory.GCPercent != 50 {
		t.Fatalf("reloaded: %+v %+v", c.Caches, c.Memory)
	}
	// A change that would break the file is refused and leaves it alone.
	if err := UpdateFile(path, Setting{Path: []string{"caches", "global_factor"}, Value: -1}); err == nil ||
		!strings.Contains(err.Error(), "caches.global_factor") {
		t.Fatalf("invalid change: %v", err)
	}
	again, _ := os.ReadFile(path)
	if string(again) != string(out) {
		t.Fatal("file changed by a refused update")
	}
}

func TestDashboardValidation(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"defaults", "", ""},
		{"own port", "admin_dashboard: {port: 9000}", ""},
		{"bad port", "admin_dashboard: {port: 70000}", "admin_dashboard.port"},
		{"port clash", "listeners: [{port: 8008}]\nadmin_dashboard: {port: 8008}", "already used by listeners[0]"},
		{"bind without port", "admin_dashboard: {bind_addresses: ['127.0.0.1']}", "admin_dashboard.bind_addresses"},
		{"bad bind", "admin_dashboard: {port: 9000, bind_addresses: [nope]}", "admin_dashboard.bind_addresses[0]"},
		{"short session", "admin_dashboard: {session_lifetime: 10s}", "admin_dashboard.session_lifetime"},
		{"factor", "caches: {global_factor: -2}", "caches.global_factor"},
		{"per cache", "caches: {per_cache_factors: {users: 0}}", "caches.per_cache_factors.users"},
		{"tiny limit", "memory: {limit: 1M}", "memory.limit"},
		{"gc", "memory: {gc_percent: 5}", "memory.gc_percent"},
		{"gc off without limit", "memory: {gc_percent: -1}", "memory.gc_percent"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := "server_name: example.org\nsigning_key_path: k\ndatabase: {name: sqlite3, args: {database: x.db}}\n" + tc.yaml
			c, _, err := Parse([]byte(src), filepath.Join(t.TempDir(), "h.yaml"))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !c.DashboardEnabled() || c.AdminDashboard.SessionLifetime.Std().Hours() != 12 || c.Caches.GlobalFactor != 1 {
					t.Fatalf("defaults: %+v %+v", c.AdminDashboard, c.Caches)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %s", err, tc.want)
			}
		})
	}
}
