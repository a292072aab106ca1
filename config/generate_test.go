package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func TestGenerateLoadsCleanly(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "homeserver.yaml")
	g, err := Generate(GenerateOptions{ServerName: "example.org", ConfigPath: path, ReportStats: true})
	if err != nil {
		t.Fatal(err)
	}
	c, warnings, err := Load(path)
	if err != nil {
		t.Fatalf("generated config does not load: %v", err)
	}
	if len(warnings) != 0 {
		t.Fatalf("generated config warns: %v", warnings)
	}
	if c.ServerName != "example.org" || !c.ReportStats || c.EnableRegistration {
		t.Errorf("server_name %q report_stats %v enable_registration %v", c.ServerName, c.ReportStats, c.EnableRegistration)
	}
	// The default data directory is the config's directory.
	if g.DataDir != dir || c.Database.Args.Database != filepath.Join(dir, "homeserver.db") ||
		c.MediaStorePath != filepath.Join(dir, "media_store") || c.SigningKeyPath != filepath.Join(dir, "example.org.signing.key") {
		t.Errorf("paths: data %q db %q media %q key %q", g.DataDir, c.Database.Args.Database, c.MediaStorePath, c.SigningKeyPath)
	}
	if len(c.RegistrationSharedSecret) < 40 {
		t.Errorf("registration_shared_secret %d characters: too short", len(c.RegistrationSharedSecret))
	}
	raw, _ := os.ReadFile(path)
	if !regexp.MustCompile(`(?m)^registration_shared_secret: "[A-Za-z0-9_-]+"$`).Match(raw) {
		t.Error("registration_shared_secret is not a top-level quoted line")
	}
	key, err := c.LoadSigningKey()
	if err != nil {
		t.Fatalf("generated key does not load: %v", err)
	}
	data, _ := os.ReadFile(c.SigningKeyPath)
	if !regexp.MustCompile(`^ed25519 a_[A-Za-z]{4} [A-Za-z0-9+/]{43}\n$`).Match(data) || !strings.Contains(string(data), strings.TrimPrefix(key.ID, "ed25519:")) {
		t.Errorf("key file %q is not in Synapse's format", data)
	}
	for _, p := range []string{path, c.SigningKeyPath} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v; want 0600", p, fi.Mode().Perm(), err)
		}
	}
	// Two generations never share a secret or a key.
	path2 := filepath.Join(t.TempDir(), "homeserver.yaml")
	if _, err := Generate(GenerateOptions{ServerName: "example.org", ConfigPath: path2}); err != nil {
		t.Fatal(err)
	}
	c2, _, err := Load(path2)
	if err != nil {
		t.Fatal(err)
	}
	key2, _ := c2.LoadSigningKey()
	if c2.RegistrationSharedSecret == c.RegistrationSharedSecret || key2.Priv.Equal(key.Priv) {
		t.Error("two generated configs share a secret")
	}
}

func TestGenerateDataDir(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	// As make run calls it: relative paths, data dir inside the config dir.
	if _, err := Generate(GenerateOptions{ServerName: "localhost:8008", ConfigPath: "homeserver.yaml", DataDir: "data"}); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile("homeserver.yaml")
	for _, want := range []string{`database: "data/homeserver.db"`, `signing_key_path: "data/localhost:8008.signing.key"`, `media_store_path: "data/media_store"`} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("missing %s (paths inside the config dir are written relative, so the directory can move)", want)
		}
	}
	if fi, err := os.Stat("data"); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir: %v %v", fi, err)
	}
	if _, _, err := Load("homeserver.yaml"); err != nil {
		t.Fatal(err)
	}
	// A data dir outside the config dir is written absolute.
	other := t.TempDir()
	if _, err := Generate(GenerateOptions{ServerName: "b.org", ConfigPath: filepath.Join(dir, "etc", "b.yaml"), DataDir: other}); err != nil {
		t.Fatal(err)
	}
	c, _, err := Load(filepath.Join(dir, "etc", "b.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Database.Args.Database != filepath.Join(other, "homeserver.db") {
		t.Errorf("database = %q", c.Database.Args.Database)
	}
}

func TestGenerateRefusesOverwrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "homeserver.yaml")
	if _, err := Generate(GenerateOptions{ServerName: "example.org", ConfigPath: path}); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	_, err := Generate(GenerateOptions{ServerName: "example.org", ConfigPath: path})
	if err == nil || !strings.Contains(err.Error(), "already exists") || !strings.Contains(err.Error(), path) {
		t.Fatalf("second Generate: %v", err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatal("config overwritten")
	}
	// An existing key alone also stops it, and no config is written.
	path2 := filepath.Join(dir, "other.yaml")
	_, err = Generate(GenerateOptions{ServerName: "example.org", ConfigPath: path2})
	if err == nil || !strings.Contains(err.Error(), "example.org.signing.key") {
		t.Fatalf("Generate over a key: %v", err)
	}
	if _, err := os.Stat(path2); err == nil {
		t.Fatal("config written although the key exists")
	}
}

func TestGenerateValidatesServerName(t *testing.T) {
	_, err := Generate(GenerateOptions{ServerName: "not a name", ConfigPath: filepath.Join(t.TempDir(), "h.yaml")})
	if err == nil || !strings.HasPrefix(err.Error(), "server_name: ") {
		t.Fatalf("err = %v", err)
	}
}

// TestGenerateDocumentsEveryKey checks that every key Config knows appears in
// the generated file, set or as a commented example, so adding a field
// without documenting it fails here.
func TestGenerateDocumentsEveryKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "homeserver.yaml")
	if _, err := Generate(GenerateOptions{ServerName: "example.org", ConfigPath: path}); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	text := string(raw)
	var walk func(t reflect.Type, prefix string)
	walk = func(typ reflect.Type, prefix string) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct {
			return
		}
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			if !regexp.MustCompile(`(?m)^[#\s-]*` + regexp.QuoteMeta(name) + `:`).MatchString(text) {
				t.Errorf("key %s%s is not in the generated config", prefix, name)
			}
			walk(f.Type, prefix+name+".")
		}
	}
	walk(reflect.TypeOf(Config{}), "")
}

// BenchmarkLoadGenerated measures reading a full generated config, the
// start-up cost every hearth command pays.
func BenchmarkLoadGenerated(b *testing.B) {
	path := filepath.Join(b.TempDir(), "homeserver.yaml")
	if _, err := Generate(GenerateOptions{ServerName: "example.org", ConfigPath: path}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, _, err := Load(path); err != nil {
			b.Fatal(err)
		}
	}
}
