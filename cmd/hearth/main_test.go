package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"hearth/config"
	"hearth/server/secret"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// hearthBin is the binary under test, built once by TestMain: these tests
// check what an operator sees (exit codes, messages), which only a real
// process shows.
var hearthBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hearth-cli-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	hearthBin = filepath.Join(dir, "hearth")
	build := exec.Command("go", "build", "-o", hearthBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building hearth:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// run executes hearth with args and stdin, bounded in time.
func run(t *testing.T, stdin string, args ...string) (stdout, stderr string, exitCode int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, hearthBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("hearth %v: %v", args, err)
	}
	return out.String(), errb.String(), 0
}

func TestGenerateConfig(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "homeserver.yaml")
	dataDir := filepath.Join(dir, "data")
	out, errs, code := run(t, "", "generate-config", "--server-name", "example.org", "--config-path", cfgPath, "--data-dir", dataDir, "--report-stats", "no")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.Contains(out, cfgPath) {
		t.Errorf("output does not say where the config went: %s", out)
	}
	cfg, warnings, err := config.Load(cfgPath)
	if err != nil || len(warnings) > 0 {
		t.Fatalf("generated config: %v %v", err, warnings)
	}
	if filepath.Dir(cfg.SigningKeyPath) != dataDir || filepath.Dir(cfg.Database.Args.Database) != dataDir {
		t.Errorf("files not under --data-dir: %s %s", cfg.SigningKeyPath, cfg.Database.Args.Database)
	}

	_, errs, code = run(t, "", "generate-config", "--server-name", "example.org", "--config-path", cfgPath)
	if code == 0 || !strings.Contains(errs, "already exists") {
		t.Errorf("overwrite: exit %d, %q", code, errs)
	}
	for _, args := range [][]string{
		{"generate-config", "--config-path", filepath.Join(dir, "x.yaml")},
		{"generate-config", "--server-name", "example.org"},
		{"generate-config", "--server-name", "example.org", "--config-path", filepath.Join(dir, "y.yaml"), "--report-stats", "maybe"},
	} {
		if _, errs, code := run(t, "", args...); code == 0 || errs == "" {
			t.Errorf("%v: exit %d, %q", args, code, errs)
		}
	}
}

// generated writes a config with generate-config and returns its path.
func generated(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "homeserver.yaml")
	if _, errs, code := run(t, "", "generate-config", "--server-name", "example.org", "--config-path", path); code != 0 {
		t.Fatalf("generate-config: %s", errs)
	}
	return path
}

func appendTo(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

func TestServeBadConfig(t *testing.T) {
	path := generated(t)
	appendTo(t, path, "log_level: loud\nbcrypt_rounds: 99\n")
	_, errs, code := run(t, "", "serve", "--config-path", path, "--listen", "127.0.0.1:0")
	if code == 0 {
		t.Fatal("serve started with a bad config")
	}
	for _, key := range []string{"log_level", "bcrypt_rounds"} {
		if !strings.Contains(errs, key) {
			t.Errorf("message does not name %s: %s", key, errs)
		}
	}
	_, errs, code = run(t, "", "serve", "-c", filepath.Join(t.TempDir(), "missing.yaml"))
	if code == 0 || !strings.Contains(errs, "missing.yaml") {
		t.Errorf("missing file: exit %d, %q", code, errs)
	}
	if _, errs, code = run(t, "", "serve"); code == 0 || !strings.Contains(errs, "--config-path") {
		t.Errorf("no config: exit %d, %q", code, errs)
	}
}

func TestServeUnknownKeyWarns(t *testing.T) {
	path := generated(t)
	appendTo(t, path, "enable_registraton: true\n")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, hearthBin, "serve", "-c", path, "--listen", "127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	var seen []string
	warned := false
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		line := sc.Text()
		seen = append(seen, line)
		if strings.Contains(line, "enable_registraton") && strings.Contains(line, "WARN") {
			warned = true
		}
		if strings.Contains(line, "hearth started") {
			break
		}
	}
	if !warned {
		t.Fatalf("no warning naming the unknown key; stderr:\n%s", strings.Join(seen, "\n"))
	}
	if !strings.Contains(strings.Join(seen, "\n"), "hearth started") {
		t.Fatalf("an unknown key stopped the start:\n%s", strings.Join(seen, "\n"))
	}
}

func TestRegisterUser(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		// A Synapse-style file holding only what register-user reads.
		cfgPath := filepath.Join(t.TempDir(), "homeserver.yaml")
		if err := os.WriteFile(cfgPath, []byte("registration_shared_secret: \"test-shared-secret\"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		ctx := t.Context()

		out, errs, code := run(t, "", "register-user", "-c", cfgPath, "--user", "alice", "--password", "wonderland", "--admin", b.URL)
		if code != 0 || !strings.Contains(out, "@alice:hearth.test") {
			t.Fatalf("register-user: exit %d\n%s%s", code, out, errs)
		}
		u, err := b.Store.UserByID(ctx, "@alice:hearth.test")
		if err != nil || !u.IsAdmin || !secret.CheckPassword(u.PasswordHash, "wonderland") {
			t.Fatalf("user = %+v, %v", u, err)
		}

		// The URL after the flags works too, and missing answers are prompted for.
		out, errs, code = run(t, "bob\nbuilder\nbuilder\nn\n", "register-user", b.URL, "-c", cfgPath)
		if code != 0 {
			t.Fatalf("prompted register-user: exit %d\n%s%s", code, out, errs)
		}
		if !strings.Contains(errs, "Confirm password") {
			t.Errorf("no confirmation prompt: %q", errs)
		}
		u, err = b.Store.UserByID(ctx, "@bob:hearth.test")
		if err != nil || u.IsAdmin || !secret.CheckPassword(u.PasswordHash, "builder") {
			t.Fatalf("user = %+v, %v", u, err)
		}

		// The new account signs in with a real Matrix client.
		cli, err := mautrix.NewClient(b.URL, "", "")
		if err != nil {
			t.Fatal(err)
		}
		resp, err := cli.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, StoreCredentials: true,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: "wonderland"})
		if err != nil {
			t.Fatalf("login as the new user: %v", err)
		}
		if resp.UserID != "@alice:hearth.test" {
			t.Fatalf("logged in as %s", resp.UserID)
		}
		who, err := cli.Whoami(ctx)
		if err != nil || who.UserID != "@alice:hearth.test" {
			t.Fatalf("whoami = %+v, %v", who, err)
		}

		// Server errors reach the operator.
		for _, tc := range []struct {
			name, stdin string
			args        []string
			want        string
		}{
			{"taken", "", []string{"--user", "alice", "--password", "x", "--no-admin"}, "M_USER_IN_USE"},
			{"invalid", "", []string{"--user", "al ice", "--password", "x", "--no-admin"}, "M_INVALID_USERNAME"},
			{"wrong secret", "", []string{"--user", "carol", "--password", "x", "--no-admin", "--shared-secret", "nope"}, "M_FORBIDDEN"},
			{"mismatch", "carol\none\ntwo\n", nil, "passwords do not match"},
		} {
			args := append([]string{"register-user", "-c", cfgPath}, tc.args...)
			_, errs, code := run(t, tc.stdin, append(args, b.URL)...)
			if code == 0 || !strings.Contains(errs, tc.want) {
				t.Errorf("%s: exit %d, stderr %q; want %s", tc.name, code, errs, tc.want)
			}
		}
	})
}

func TestRegisterUserDefaults(t *testing.T) {
	// Without a URL the config's client listener is used; without a
	// secret the command explains what is missing.
	path := filepath.Join(t.TempDir(), "homeserver.yaml")
	os.WriteFile(path, []byte("listeners:\n  - port: 1\n    type: http\n    resources: [{names: [client]}]\n"), 0o600)
	_, errs, code := run(t, "", "register-user", "-c", path, "-u", "a", "-p", "b", "--no-admin")
	if code == 0 || !strings.Contains(errs, "registration_shared_secret") {
		t.Errorf("no secret: exit %d, %q", code, errs)
	}
	appendTo(t, path, "registration_shared_secret: s\n")
	_, errs, code = run(t, "", "register-user", "-c", path, "-u", "a", "-p", "b", "--no-admin")
	if code == 0 || !strings.Contains(errs, "localhost:1") {
		t.Errorf("default URL: exit %d, %q", code, errs)
	}
}

func TestHashPassword(t *testing.T) {
	path := filepath.Join(t.TempDir(), "homeserver.yaml")
	os.WriteFile(path, []byte("bcrypt_rounds: 5\n"), 0o600)
	out, errs, code := run(t, "", "hash-password", "--password", "hunter2", "-c", path)
	hash := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(hash, "$2a$05$") || !secret.CheckPassword(hash, "hunter2") {
		t.Fatalf("exit %d, %q %q", code, out, errs)
	}
	out, errs, code = run(t, "hunter2\nhunter2\n", "hash-password")
	hash = strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(hash, "$2a$12$") || !secret.CheckPassword(hash, "hunter2") {
		t.Fatalf("prompted: exit %d, %q %q", code, out, errs)
	}
	if _, errs, code = run(t, "a\nb\n", "hash-password"); code == 0 || !strings.Contains(errs, "do not match") {
		t.Fatalf("mismatch: exit %d %q", code, errs)
	}
}

func TestVersion(t *testing.T) {
	out, _, code := run(t, "", "version")
	if code != 0 || !strings.HasPrefix(out, "hearth ") {
		t.Fatalf("version: exit %d %q", code, out)
	}
	if _, _, code := run(t, "", "no-such-command"); code == 0 {
		t.Fatal("unknown command exits 0")
	}
}
