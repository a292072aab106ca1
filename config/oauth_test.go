package config

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestOAuthOnForNewConfigs: generate-config turns the OAuth 2.0 API on; a
// file without the section (an existing server's) keeps it off; bad
// lifetimes are named.
func TestOAuthOnForNewConfigs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "homeserver.yaml")
	if _, err := Generate(GenerateOptions{ServerName: "example.org", ConfigPath: path}); err != nil {
		t.Fatal(err)
	}
	c, _, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !c.OAuth.Enabled || c.OAuth.AccessTokenLifetime.Std() != 5*time.Minute || c.OAuth.SessionLifetime.Std() != 24*time.Hour {
		t.Errorf("generated oauth section: %+v, want enabled with 5m and 1d", c.OAuth)
	}

	old, _, err := Parse([]byte("server_name: example.org\nsigning_key_path: k\ndatabase: {name: sqlite3, args: {database: h.db}}\n"), path)
	if err != nil {
		t.Fatal(err)
	}
	if old.OAuth.Enabled {
		t.Error("a config without an oauth section has OAuth on")
	}
	_, _, err = Parse([]byte("server_name: example.org\nsigning_key_path: k\ndatabase: {name: sqlite3, args: {database: h.db}}\n"+
		"oauth: {enabled: true, access_token_lifetime: 10s}\n"), path)
	if err == nil || !strings.Contains(err.Error(), "oauth.access_token_lifetime") {
		t.Errorf("a 10s access token lifetime: %v, want an error naming oauth.access_token_lifetime", err)
	}
}
