package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/appliance/backup"
	"hearth/server/storage/storagetest"
)

// serving is a `hearth serve` process.
type serving struct {
	cmd  *exec.Cmd
	url  string
	done chan error

	mu  sync.Mutex
	log bytes.Buffer // the process's stderr so far
}

// logged returns stderr so far.
func (s *serving) logged() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

// waitLog waits for a line of stderr matching re and returns its first
// submatch.
func (s *serving) waitLog(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if m := re.FindStringSubmatch(s.logged()); m != nil {
			return m[1]
		}
	}
	t.Fatalf("no log line matching %s:\n%s", re, s.logged())
	return ""
}

// serve starts `hearth serve -c path` on a free loopback port and waits for
// it to answer; it is stopped (SIGTERM) when the test ends.
func serve(t *testing.T, path string) *serving { t.Helper(); return serveEnv(t, path) }

// serveEnv is serve with env (KEY=value) added to the environment.
func serveEnv(t *testing.T, path string, env ...string) *serving {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := &serving{url: "http://" + addr, done: make(chan error, 1)}
	s.cmd = exec.Command(hearthBin, "serve", "-c", path, "--listen", addr)
	if env != nil {
		s.cmd.Env = append(os.Environ(), env...)
	}
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			s.mu.Lock()
			s.log.WriteString(sc.Text() + "\n")
			s.mu.Unlock()
			if !once && strings.Contains(sc.Text(), "hearth started") {
				once = true
				close(started)
			}
		}
		s.done <- s.cmd.Wait()
	}()
	t.Cleanup(func() { s.stop(t) })
	select {
	case <-started:
	case <-s.done:
		t.Fatalf("hearth serve exited:\n%s", s.logged())
	case <-time.After(30 * time.Second):
		t.Fatal("hearth serve did not start")
	}
	return s
}

func (s *serving) stop(t *testing.T) {
	if s.cmd.ProcessState != nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
		t.Error("hearth serve did not stop on SIGTERM")
	}
}

// openRegistration edits a generated config to allow registration.
func openRegistration(t *testing.T, path string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(raw), "enable_registration: false", "enable_registration: true", 1)
	s = strings.Replace(s, "enable_registration_without_verification: false", "enable_registration_without_verification: true", 1)
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func register(t *testing.T, url, name string) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(url, "", "")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.RegisterDummy(t.Context(), &mautrix.ReqRegister[any]{Username: name, Password: name + " has a long password"})
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	cli.UserID, cli.AccessToken = resp.UserID, resp.AccessToken
	return cli
}

func login(t *testing.T, url, name string) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(url, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Login(t.Context(), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, StoreCredentials: true,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: name}, Password: name + " has a long password"}); err != nil {
		t.Fatalf("login %s: %v", name, err)
	}
	return cli
}

// serverKey is the server's published signing keys (key ID → public key).
func serverKey(t *testing.T, url string) map[string]string {
	t.Helper()
	resp, err := http.Get(url + "/_matrix/key/v2/server")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		VerifyKeys map[string]struct {
			Key string `json:"key"`
		} `json:"verify_keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for k, v := range body.VerifyKeys {
		out[k] = v.Key
	}
	if len(out) == 0 {
		t.Fatal("no verify keys published")
	}
	return out
}

// messages are the m.text bodies of a room's timeline, oldest first.
func messages(t *testing.T, cli *mautrix.Client, room id.RoomID) []string {
	t.Helper()
	resp, err := cli.Messages(t.Context(), room, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for i := len(resp.Chunk) - 1; i >= 0; i-- {
		e := resp.Chunk[i]
		if e.Type == event.EventMessage {
			if b, ok := e.Content.Raw["body"].(string); ok {
				out = append(out, b)
			}
		}
	}
	return out
}

// TestBackupRestore backs up a running server (SQLite) with `hearth
// backup`, checks that restore refuses to touch the running server's data,
// restores into a fresh directory with `hearth restore`, and starts a
// server there: the users, the room and its messages up to the backup,
// the media and the signing key are all back, and nothing written after
// the backup is.
func TestBackupRestore(t *testing.T) {
	ctx := t.Context()
	path := generated(t)
	openRegistration(t, path)
	s := serve(t, path)
	alice, bob := register(t, s.url, "alice"), register(t, s.url, "bob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Porch"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	var sent []string
	for i := range 5 {
		body := fmt.Sprintf("message %d", i)
		if _, err := alice.SendText(ctx, room.RoomID, body); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, body)
	}
	photo := bytes.Repeat([]byte("not really a jpeg "), 4000)
	up, err := alice.UploadBytes(ctx, photo, "image/jpeg")
	if err != nil {
		t.Fatal(err)
	}
	keys := serverKey(t, s.url)

	archive := filepath.Join(t.TempDir(), "hearth.tar.gz")
	out, errs, code := run(t, "", "backup", "-c", path, "--to", archive)
	if code != 0 {
		t.Fatalf("backup: exit %d\n%s%s", code, out, errs)
	}
	if !strings.Contains(out, "1 media files") {
		t.Errorf("backup summary: %s", out)
	}
	// The checksum file matches the archive, in sha256sum's format.
	raw, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	if want := hex.EncodeToString(sum[:]) + "  hearth.tar.gz\n"; mustRead(t, archive+".sha256") != want {
		t.Errorf("checksum file %q, want %q", mustRead(t, archive+".sha256"), want)
	}
	// A second backup to the same name is refused.
	if _, errs, code := run(t, "", "backup", "-c", path, "--to", archive); code == 0 || !strings.Contains(errs, "already exists") {
		t.Errorf("backup over an existing file: exit %d %s", code, errs)
	}
	// Written after the backup: must not come back.
	if _, err := alice.SendText(ctx, room.RoomID, "after the backup"); err != nil {
		t.Fatal(err)
	}
	register(t, s.url, "carol")

	// Restore refuses while the server runs on that data.
	_, errs, code = run(t, "", "restore", "-c", path, "--from", archive, "--force")
	if code == 0 || !strings.Contains(errs, "running server") {
		t.Fatalf("restore over a running server: exit %d %s", code, errs)
	}
	s.stop(t)

	// Restore into an empty directory: the archived config is written
	// there, and its relative paths put the data beside it.
	fresh := filepath.Join(t.TempDir(), "restored", "homeserver.yaml")
	out, errs, code = run(t, "", "restore", "-c", fresh, "--from", archive)
	if code != 0 {
		t.Fatalf("restore: exit %d\n%s%s", code, out, errs)
	}
	if !strings.Contains(out, "config written to") {
		t.Errorf("restore summary: %s", out)
	}
	// Again over the restored data: refused without --force.
	if _, errs, code := run(t, "", "restore", "-c", fresh, "--from", archive); code == 0 || !strings.Contains(errs, "refusing to overwrite existing data") {
		t.Errorf("restore over existing data: exit %d %s", code, errs)
	}

	s2 := serve(t, fresh)
	alice2 := login(t, s2.url, "alice")
	login(t, s2.url, "bob")
	if got := messages(t, alice2, room.RoomID); strings.Join(got, "|") != strings.Join(sent, "|") {
		t.Errorf("restored messages %q, want %q", got, sent)
	}
	joined, err := alice2.JoinedRooms(ctx)
	if err != nil || len(joined.JoinedRooms) != 1 || joined.JoinedRooms[0] != room.RoomID {
		t.Errorf("joined rooms %v %v", joined, err)
	}
	members, err := alice2.JoinedMembers(ctx, room.RoomID)
	if err != nil || len(members.Joined) != 2 {
		t.Errorf("members %v %v", members, err)
	}
	got, err := alice2.DownloadBytes(ctx, up.ContentURI)
	if err != nil || !bytes.Equal(got, photo) {
		t.Errorf("restored media: %d bytes, %v", len(got), err)
	}
	if k := serverKey(t, s2.url); fmt.Sprint(k) != fmt.Sprint(keys) {
		t.Errorf("signing key %v, want %v", k, keys)
	}
	cli, _ := mautrix.NewClient(s2.url, "", "")
	if resp, err := cli.RegisterAvailable(ctx, "carol"); err != nil || !resp.Available {
		t.Errorf("carol, registered after the backup, exists after the restore: %v %v", resp, err)
	}
}

// TestBackupRejectsDamage: a flipped byte in any file, or a file added,
// fails the checksum check before restore changes anything.
func TestBackupRejectsDamage(t *testing.T) {
	path := generated(t)
	archive := filepath.Join(t.TempDir(), "b.tar.gz")
	if _, errs, code := run(t, "", "backup", "-c", path, "--to", archive); code == 0 || !strings.Contains(errs, "start the server once") {
		t.Fatalf("backup of a never-started server: exit %d %s", code, errs)
	}
	serve(t, path).stop(t)
	if out, errs, code := run(t, "", "backup", "-c", path, "--to", archive); code != 0 {
		t.Fatalf("backup of a stopped server: %s%s", out, errs)
	}
	good, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	m, err := backup.ReadManifest(good)
	if err != nil || !m.HasDatabase() || m.ServerName != "example.org" {
		t.Fatalf("manifest %+v %v", m, err)
	}
	// Corrupt the gzip stream's payload: the archive no longer reads, or
	// a file's checksum no longer matches.
	raw, _ := os.ReadFile(archive)
	bad := append([]byte(nil), raw...)
	bad[len(bad)/2] ^= 0xff
	badPath := filepath.Join(t.TempDir(), "bad.tar.gz")
	os.WriteFile(badPath, bad, 0o600)
	target := filepath.Join(t.TempDir(), "homeserver.yaml")
	if _, errs, code := run(t, "", "restore", "-c", target, "--from", badPath); code == 0 {
		t.Fatal("a damaged archive was restored")
	} else if !strings.Contains(errs, "restore:") {
		t.Errorf("message: %s", errs)
	}
	if _, err := os.Stat(target); err == nil {
		t.Error("a damaged archive wrote the config")
	}
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestBackupPostgres: on PostgreSQL the archive holds the config, key and
// media with the exact pg_dump command, and restore puts those back.
func TestBackupPostgres(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		if e.Name != "postgres" {
			t.Skip("SQLite: TestBackupRestore")
		}
		path := generated(t)
		openRegistration(t, path)
		raw := mustRead(t, path)
		i := strings.Index(raw, "\ndatabase:\n")
		j := strings.Index(raw, "\nsigning_key_path:")
		if i < 0 || j < 0 {
			t.Fatal("generated config layout changed")
		}
		raw = raw[:i] + fmt.Sprintf("\ndatabase:\n  name: psycopg2\n  args:\n    dsn: %q\n", e.Options.Postgres) + raw[j:]
		os.WriteFile(path, []byte(raw), 0o600)
		s := serve(t, path)
		alice := register(t, s.url, "alice")
		up, err := alice.UploadBytes(t.Context(), []byte("hello media"), "text/plain")
		if err != nil {
			t.Fatal(err)
		}
		archive := filepath.Join(t.TempDir(), "pg.tar.gz")
		out, errs, code := run(t, "", "backup", "-c", path, "--to", archive)
		if code != 0 {
			t.Fatalf("backup: %s%s", out, errs)
		}
		if !strings.Contains(out, "pg_dump --format=custom") || !strings.Contains(out, "pg_restore") {
			t.Errorf("no pg_dump command in:\n%s", out)
		}
		f, _ := os.Open(archive)
		m, err := backup.ReadManifest(f)
		f.Close()
		if err != nil || m.HasDatabase() || m.Engine != "postgres" || m.MediaFiles() != 1 {
			t.Fatalf("manifest %+v %v", m, err)
		}
		s.stop(t)
		fresh := filepath.Join(t.TempDir(), "homeserver.yaml")
		out, errs, code = run(t, "", "restore", "-c", fresh, "--from", archive)
		if code != 0 || !strings.Contains(out, "pg_restore") {
			t.Fatalf("restore: exit %d\n%s%s", code, out, errs)
		}
		// The same database, the restored media and key: the server
		// serves the upload again.
		s2 := serve(t, fresh)
		cli := login(t, s2.url, "alice")
		got, err := cli.DownloadBytes(t.Context(), up.ContentURI)
		if err != nil || string(got) != "hello media" {
			t.Errorf("media after restore: %q %v", got, err)
		}
	})
}
