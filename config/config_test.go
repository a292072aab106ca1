package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// minimal is the smallest valid file: everything else defaults.
const minimal = `server_name: example.org
signing_key_path: example.org.signing.key
database:
  name: sqlite3
  args:
    database: homeserver.db
`

func parse(t *testing.T, yaml string) (*Config, []string) {
	t.Helper()
	c, warnings, err := Parse([]byte(yaml), filepath.Join(t.TempDir(), "homeserver.yaml"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c, warnings
}

func TestDefaults(t *testing.T) {
	c, warnings := parse(t, minimal)
	if len(warnings) != 0 {
		t.Errorf("warnings = %v", warnings)
	}
	if c.LogLevel != "info" || c.BcryptRounds != 12 || c.MaxUploadSize != 50<<20 || c.Database.Name != "sqlite3" {
		t.Errorf("defaults: log_level %q, bcrypt_rounds %d, max_upload_size %d, database.name %q",
			c.LogLevel, c.BcryptRounds, c.MaxUploadSize, c.Database.Name)
	}
	if len(c.Listeners) != 1 || c.Listeners[0].Port != 8008 || c.Listeners[0].Type != "http" {
		t.Errorf("default listeners = %+v", c.Listeners)
	}
	if c.RCLogin.Address.BurstCount == 0 || c.RCLogin.FailedAttempts.PerSecond == 0 || c.RCRegistration.BurstCount == 0 {
		t.Errorf("rate limits not defaulted: %+v %+v", c.RCLogin, c.RCRegistration)
	}
	if !c.PasswordLoginEnabled() || c.EnableRegistration || c.AllowGuestAccess {
		t.Error("password login should default on, registration and guests off")
	}
	if c.IsPostgres() {
		t.Error("sqlite3 reported as PostgreSQL")
	}
	if c.DefaultRoomVersion != "11" {
		t.Errorf("default_room_version %q, want 11 (Synapse's default)", c.DefaultRoomVersion)
	}
	// Unquoted, as operators write it.
	if c, _ := parse(t, minimal+"default_room_version: 12\n"); c.DefaultRoomVersion != "12" {
		t.Errorf("default_room_version: 12 read as %q", c.DefaultRoomVersion)
	}
	// A listener given without bind addresses binds everywhere.
	c, _ = parse(t, minimal+"listeners:\n  - port: 9000\n")
	if got := c.Listeners[0].BindAddresses; len(got) != 2 || got[0] != "::" {
		t.Errorf("bind_addresses default = %v", got)
	}
}

func TestSynapseDurationsAndSizes(t *testing.T) {
	durations := map[string]time.Duration{
		"30s": 30 * time.Second, "5m": 5 * time.Minute, "2h": 2 * time.Hour, "7d": 7 * 24 * time.Hour,
		"1w": 7 * 24 * time.Hour, "1y": 365 * 24 * time.Hour, "1500": 1500 * time.Millisecond, "250ms": 250 * time.Millisecond,
	}
	for in, want := range durations {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"5 minutes", "-1s", "1.5h", "h"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) accepted", bad)
		}
	}
	sizes := map[string]int64{"50M": 50 << 20, "1G": 1 << 30, "512K": 512 << 10, "100k": 100 << 10, "1024": 1024}
	for in, want := range sizes {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"10MB", "-5", "lots"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
	c, _ := parse(t, minimal+"max_upload_size: 10M\nrefreshable_access_token_lifetime: 5m\nrefresh_token_lifetime: 30d\n")
	if c.MaxUploadSize != 10<<20 || c.RefreshableAccessTokenLifetime.Std() != 5*time.Minute ||
		c.RefreshTokenLifetime.Std() != 30*24*time.Hour {
		t.Errorf("parsed %d %v %v", c.MaxUploadSize, c.RefreshableAccessTokenLifetime.Std(), c.RefreshTokenLifetime.Std())
	}
	// A bad value is reported with its key.
	_, _, err := Parse([]byte(minimal+"refresh_token_lifetime: soon\n"), "homeserver.yaml")
	if err == nil || !strings.Contains(err.Error(), "soon") {
		t.Errorf("bad duration: %v", err)
	}
}

func TestValidateNamesTheKey(t *testing.T) {
	tests := []struct {
		key  string
		yaml string
	}{
		{"server_name", "signing_key_path: k\ndatabase: {args: {database: d}}\n"},
		{"server_name", "server_name: 'bad name!'\nsigning_key_path: k\ndatabase: {args: {database: d}}\n"},
		{"public_baseurl", minimal + "public_baseurl: matrix.example.org\n"},
		{"log_level", minimal + "log_level: loud\n"},
		{"listeners[0].port", minimal + "listeners: [{port: 0}]\n"},
		{"listeners[0].type", minimal + "listeners: [{port: 80, type: gopher}]\n"},
		{"listeners[0].bind_addresses[0]", minimal + "listeners: [{port: 80, bind_addresses: [example.org]}]\n"},
		{"listeners[0].resources.names", minimal + "listeners: [{port: 80, resources: [{names: [everything]}]}]\n"},
		{"database.args.database", "server_name: a.org\nsigning_key_path: k\n"},
		{"database.args", "server_name: a.org\nsigning_key_path: k\ndatabase: {name: psycopg2}\n"},
		{"database.name", "server_name: a.org\nsigning_key_path: k\ndatabase: {name: mysql, args: {database: d}}\n"},
		{"signing_key_path", "server_name: a.org\ndatabase: {args: {database: d}}\n"},
		{"enable_registration", minimal + "enable_registration: true\n"},
		{"bcrypt_rounds", minimal + "bcrypt_rounds: 40\n"},
		{"default_room_version", minimal + "default_room_version: '13'\n"},
		{"rc_login.address", minimal + "rc_login: {address: {per_second: -1}}\n"},
		{"rc_login.account", minimal + "rc_login: {account: {burst_count: -1}}\n"},
		{"rc_login.failed_attempts", minimal + "rc_login: {failed_attempts: {per_second: -1}}\n"},
		{"rc_registration", minimal + "rc_registration: {per_second: -1}\n"},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			_, _, err := Parse([]byte(tc.yaml), filepath.Join(t.TempDir(), "homeserver.yaml"))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), "\n"+tc.key+": ") {
				t.Fatalf("error does not name %s:\n%v", tc.key, err)
			}
		})
	}
	// max_upload_size cannot go negative through YAML; Validate still checks it.
	c, _ := parse(t, minimal)
	c.MaxUploadSize = -1
	if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "max_upload_size: ") {
		t.Errorf("negative max_upload_size: %v", err)
	}
	// Every problem is reported at once.
	_, _, err := Parse([]byte("log_level: loud\nbcrypt_rounds: 2\n"), "homeserver.yaml")
	for _, key := range []string{"server_name", "log_level", "bcrypt_rounds", "signing_key_path", "database.args.database"} {
		if err == nil || !strings.Contains(err.Error(), key+": ") {
			t.Errorf("joined errors miss %s: %v", key, err)
		}
	}
}

func TestUnknownKeysWarn(t *testing.T) {
	c, warnings := parse(t, minimal+"enable_registraton: true\nlisteners:\n  - port: 8008\n    tls_cert: x\ndatabase_extra: 1\n")
	if c.EnableRegistration {
		t.Error("misspelt key took effect")
	}
	joined := strings.Join(warnings, "\n")
	for _, want := range []string{"enable_registraton", "listeners[0].tls_cert", "database_extra"} {
		if !strings.Contains(joined, want) {
			t.Errorf("no warning for %s in %q", want, joined)
		}
	}
	if len(warnings) != 3 {
		t.Errorf("warnings = %q", warnings)
	}
}

func TestRelativePathsResolveAgainstConfigDir(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "etc", "homeserver.yaml")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(minimal+"media_store_path: media\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir()) // the working directory must not matter
	c, _, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	etc := filepath.Join(dir, "etc")
	if c.Database.Args.Database != filepath.Join(etc, "homeserver.db") || c.SigningKeyPath != filepath.Join(etc, "example.org.signing.key") ||
		c.MediaStorePath != filepath.Join(etc, "media") {
		t.Errorf("paths: %q %q %q", c.Database.Args.Database, c.SigningKeyPath, c.MediaStorePath)
	}
	if c.Path() != path {
		t.Errorf("Path() = %q", c.Path())
	}
	// Absolute paths are kept.
	c, _ = parse(t, strings.Replace(minimal, "database: homeserver.db", "database: /var/lib/hearth/h.db", 1))
	if c.Database.Args.Database != "/var/lib/hearth/h.db" {
		t.Errorf("absolute path changed to %q", c.Database.Args.Database)
	}
}

func TestPostgresDSN(t *testing.T) {
	c, _ := parse(t, "server_name: a.org\nsigning_key_path: k\ndatabase:\n  name: psycopg2\n  args:\n    user: hearth\n    password: \"it's\"\n    database: hearth\n    host: db\n    port: 5433\n")
	if !c.IsPostgres() {
		t.Fatal("psycopg2 not PostgreSQL")
	}
	want := `host='db' port='5433' user='hearth' password='it\'s' dbname='hearth'`
	if got := c.PostgresDSN(); got != want {
		t.Errorf("dsn = %s, want %s", got, want)
	}
	// The database name is not a path: it must not be resolved.
	if c.Database.Args.Database != "hearth" {
		t.Errorf("database name resolved to %q", c.Database.Args.Database)
	}
}

// TestACMERefusals: an ACME set-up that cannot get a certificate is refused
// at start, each problem naming its key and saying why.
func TestACMERefusals(t *testing.T) {
	base := func(serverName string) string {
		return "server_name: " + serverName + "\nsigning_key_path: k\ndatabase: {args: {database: d}}\n" +
			"listeners: [{port: 443, tls: true, resources: [{names: [client, federation]}]}]\nacme: {enabled: true}\n"
	}
	cases := []struct{ name, yaml, want string }{
		{"ip literal", base("192.0.2.7"), `acme.domains[0] (the server name): "192.0.2.7" is an IP address`},
		{"ipv6 literal", base("'[2001:db8::1]:8448'"), `"2001:db8::1" is an IP address`},
		{"no dot", base("localhost:8008"), `"localhost" has no dot`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Parse([]byte(tc.yaml), "/tmp/h.yaml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
	c, _, err := Parse([]byte(base("example.org")+"public_baseurl: https://matrix.example.org/\n"), "/tmp/h.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.ACME.Domains, ","); got != "example.org,matrix.example.org" {
		t.Fatalf("default domains %q", got)
	}
	if c.ACMEDirectory() != LetsEncryptURL || c.ACME.Port != 80 {
		t.Fatalf("defaults: %s %d", c.ACMEDirectory(), c.ACME.Port)
	}
	// No TLS listener: nothing would serve the certificates.
	_, _, err = Parse([]byte("server_name: example.org\nsigning_key_path: k\ndatabase: {args: {database: d}}\nacme: {enabled: true}\n"), "/tmp/h.yaml")
	if err == nil || !strings.Contains(err.Error(), "acme.enabled: no listener has tls: true") {
		t.Fatalf("no TLS listener: %v", err)
	}
	// Staging and url together, and a non-https directory.
	_, _, err = Parse([]byte(strings.Replace(base("example.org"), "acme: {enabled: true}", "acme: {enabled: true, staging: true, url: 'http://ca.test/dir'}", 1)), "/tmp/h.yaml")
	if err == nil || !strings.Contains(err.Error(), "acme.url") || !strings.Contains(err.Error(), "acme.staging") {
		t.Fatalf("staging+url: %v", err)
	}
	// A TLS listener needs no certificate files when ACME is on.
	if _, _, err := Parse([]byte(base("example.org")), "/tmp/h.yaml"); err != nil {
		t.Fatalf("acme without certificate files: %v", err)
	}
}
