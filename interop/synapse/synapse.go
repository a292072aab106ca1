// Package synapse runs Synapse, the reference homeserver, on loopback next
// to Hearth's test servers, so tests can check that the two federate.
//
// Synapse comes from a Python virtualenv named by HEARTH_TEST_SYNAPSE,
// which .ci/synapse-venv makes with the version pinned in VERSION. Without
// the variable, Start skips the test and says how to run it. Synapse logs
// at INFO (DEBUG when HEARTH_TEST_LOG is set, which also turns on Hearth's
// test logs); the end of the log is printed when a test fails, and
// HEARTH_TEST_SYNAPSE_LOGDIR keeps whole logs.
package synapse

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	_ "embed" // VERSION
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	"maunium.net/go/mautrix"

	"hearth/config"
	"hearth/server/servertest"
)

// EnvVenv names the variable holding the path of the virtualenv with
// Synapse installed.
const EnvVenv = "HEARTH_TEST_SYNAPSE"

// EnvLogDir, when set, names a directory where each Synapse's whole log is
// copied when its test ends, as <test name>.log (the test's temporary
// directory, where it was written, is removed).
const EnvLogDir = "HEARTH_TEST_SYNAPSE_LOGDIR"

// version is interop/synapse/VERSION, the Synapse release the tests are
// pinned to; .ci/synapse-venv installs the release that file names.
//
//go:embed VERSION
var version string

// Version is the pinned Synapse release.
func Version() string { return strings.TrimSpace(version) }

// Password is every registered user's password.
const Password = "interop-password"

// Server is a running Synapse.
type Server struct {
	// Name is its server name: "127.0.0.1:<port>" of its TLS federation
	// listener, as Hearth's test servers are named.
	Name string
	// URL is the client API's base URL (plain HTTP on loopback).
	URL string
	// Dir holds its config, keys, SQLite database, media and log.
	Dir string
	// LogFile is Synapse's output (stdout and stderr).
	LogFile string

	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has been waited for
	err    error         // the process's exit, once exited is closed
}

// Venv returns the virtualenv named by HEARTH_TEST_SYNAPSE, or skips the
// test when it is not set.
func Venv(t testing.TB) string {
	t.Helper()
	venv := os.Getenv(EnvVenv)
	if venv == "" {
		t.Skipf("Synapse interop skipped: %s is not set; run `%s=\"$(.ci/synapse-venv)\" make test` (installs matrix-synapse==%s into a cached virtualenv)",
			EnvVenv, EnvVenv, Version())
	}
	return venv
}

// Start runs a Synapse that federates with fed's servers: its federation
// listener serves a certificate from fed's CA and it trusts that CA, it
// may dial loopback, trusts no notary, and has registration open and
// rate limits raised. It is stopped when the test ends; if the test
// failed, the end of its log is printed.
func Start(t testing.TB, fed *servertest.Federation) *Server {
	t.Helper()
	venv := Venv(t)
	python := filepath.Join(venv, "bin", "python")
	checkVersion(t, python)

	// The ports are picked free before Synapse starts, so another process
	// may take one first: then Synapse exits, and starts again on others.
	for attempt := 1; ; attempt++ {
		s, err := launch(t, fed, python)
		if err == nil {
			return s
		}
		if attempt < 3 && strings.Contains(s.LogTail(20), "Address already in use") {
			t.Logf("Synapse could not listen (%v): trying other ports", err)
			continue
		}
		t.Fatalf("start Synapse: %v; log:\n%s", err, s.LogTail(80))
	}
}

// launch starts Synapse on two free ports and waits until it answers.
func launch(t testing.TB, fed *servertest.Federation, python string) (*Server, error) {
	t.Helper()
	dir := t.TempDir()
	fedPort, clientPort := freePort(t), freePort(t)
	s := &Server{
		Name:    fmt.Sprintf("127.0.0.1:%d", fedPort),
		URL:     fmt.Sprintf("http://127.0.0.1:%d", clientPort),
		Dir:     dir,
		LogFile: filepath.Join(dir, "synapse.log"),
		exited:  make(chan struct{}),
	}
	cfgPath := s.writeConfig(t, fed, fedPort, clientPort)

	logf, err := os.Create(s.LogFile)
	if err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(python, "-m", "synapse.app.homeserver", "--config-path", cfgPath)
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	// A process group of its own, so that stopping it stops whatever it
	// started too.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start Synapse: %v", err)
	}
	go func() {
		s.err = s.cmd.Wait()
		logf.Close()
		close(s.exited)
	}()
	t.Cleanup(func() {
		s.stop()
		if d := os.Getenv(EnvLogDir); d != "" {
			s.keepLog(t, d)
		}
		if t.Failed() {
			t.Logf("Synapse %s log (%s), last lines:\n%s", s.Name, s.LogFile, s.LogTail(80))
		}
	})
	return s, s.waitReady(t, fed)
}

// checkVersion fails the test when the venv holds another Synapse than the
// pinned one.
func checkVersion(t testing.TB, python string) {
	t.Helper()
	out, err := exec.Command(python, "-c", "import synapse; print(synapse.__version__)").CombinedOutput()
	if err != nil {
		t.Fatalf("%s=%s has no usable Synapse (%v): %s", EnvVenv, os.Getenv(EnvVenv), err, out)
	}
	if got := strings.TrimSpace(string(out)); got != Version() {
		t.Fatalf("%s has Synapse %s, the tests are pinned to %s (interop/synapse/VERSION): run .ci/synapse-venv for a venv of the pinned version",
			EnvVenv, got, Version())
	}
}

// freePort returns a loopback port that was free a moment ago. Synapse
// takes its ports from its config, so they are picked before it starts.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// writeConfig writes the signing key, the TLS certificate, the log config
// and homeserver.yaml, and returns the latter's path.
func (s *Server) writeConfig(t testing.TB, fed *servertest.Federation, fedPort, clientPort int) string {
	t.Helper()
	key, err := config.NewSigningKey() // Synapse's file format
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(s.Dir, "signing.key")
	write(t, keyPath, key.Encode())
	certFile, keyFile := fed.WriteCertificate(t, s.Dir)

	level := "INFO"
	if os.Getenv("HEARTH_TEST_LOG") != "" {
		level = "DEBUG"
	}
	logCfgPath := filepath.Join(s.Dir, "log.yaml")
	writeYAML(t, logCfgPath, map[string]any{
		"version": 1,
		"formatters": map[string]any{"precise": map[string]any{
			"format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s"}},
		"filters": map[string]any{"context": map[string]any{"()": "synapse.logging.context.LoggingContextFilter"}},
		"handlers": map[string]any{"console": map[string]any{
			"class": "logging.StreamHandler", "formatter": "precise", "filters": []string{"context"}}},
		"loggers": map[string]any{
			"synapse.storage.SQL":     map[string]any{"level": "INFO"}, // every query at DEBUG
			"synapse.storage.txn":     map[string]any{"level": "INFO"},
			"synapse.metrics":         map[string]any{"level": "INFO"},
			"synapse.util.caches":     map[string]any{"level": "INFO"},
			"twisted":                 map[string]any{"level": "INFO"},
			"synapse.logging.context": map[string]any{"level": "INFO"},
		},
		"root":                     map[string]any{"level": level, "handlers": []string{"console"}},
		"disable_existing_loggers": false,
	})

	// Limits high enough never to be reached by a test.
	unlimited := map[string]any{"per_second": 10000, "burst_count": 100000}
	cfgPath := filepath.Join(s.Dir, "homeserver.yaml")
	writeYAML(t, cfgPath, map[string]any{
		"server_name":                s.Name,
		"public_baseurl":             s.URL + "/",
		"pid_file":                   filepath.Join(s.Dir, "homeserver.pid"),
		"report_stats":               false,
		"signing_key_path":           keyPath,
		"log_config":                 logCfgPath,
		"media_store_path":           filepath.Join(s.Dir, "media"),
		"database":                   map[string]any{"name": "sqlite3", "args": map[string]any{"database": filepath.Join(s.Dir, "homeserver.db")}},
		"macaroon_secret_key":        randomHex(t),
		"form_secret":                randomHex(t),
		"registration_shared_secret": randomHex(t),
		"bcrypt_rounds":              4, // the minimum: test passwords need no strength
		"enable_registration":        true,
		"enable_registration_without_verification": true,
		"listeners": []any{
			map[string]any{"port": fedPort, "bind_addresses": []string{"127.0.0.1"}, "type": "http", "tls": true,
				"resources": []any{map[string]any{"names": []string{"federation"}, "compress": false}}},
			map[string]any{"port": clientPort, "bind_addresses": []string{"127.0.0.1"}, "type": "http", "tls": false,
				"resources": []any{map[string]any{"names": []string{"client"}, "compress": false}}},
		},
		"tls_certificate_path": certFile,
		"tls_private_key_path": keyFile,
		// The test's servers: certificates from the test's CA, on
		// loopback (which Synapse refuses to dial by default), and no
		// notary: keys are fetched from each server itself.
		"federation_custom_ca_list": []string{fed.CAFile()},
		"ip_range_whitelist":        []string{"127.0.0.0/8"},
		// The whitelist is not enough for servers named by an IP
		// literal: Synapse's federation client checks those against
		// the blacklist alone (BlocklistingAgentWrapper in
		// synapse/http/matrixfederationclient.py is given no allow
		// list). So the blacklist is Synapse's default without
		// 127.0.0.0/8; every other private range stays blocked.
		"ip_range_blacklist": []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
			"192.0.0.0/24", "169.254.0.0/16", "192.88.99.0/24", "198.18.0.0/15", "192.0.2.0/24",
			"198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "::1/128", "fe80::/10", "fc00::/7",
			"2001:db8::/32", "ff00::/8", "fec0::/10"},
		"trusted_key_servers":         []any{},
		"suppress_key_server_warning": true,
		// Its room directory is open to the test's servers, and any user
		// may publish a room there (by default only admins may).
		"allow_public_rooms_over_federation": true,
		"room_list_publication_rules":        []any{map[string]any{"action": "allow"}},
		"rc_message":                         unlimited,
		"rc_registration":                    unlimited,
		"rc_login":                           map[string]any{"address": unlimited, "account": unlimited, "failed_attempts": unlimited},
		"rc_joins":                           map[string]any{"local": unlimited, "remote": unlimited},
		"rc_joins_per_room":                  unlimited,
		"rc_invites":                         map[string]any{"per_room": unlimited, "per_user": unlimited, "per_issuer": unlimited},
		"rc_room_creation":                   unlimited,
		"rc_profile":                         unlimited,
		"rc_presence":                        map[string]any{"per_user": unlimited},
		"rc_federation": map[string]any{"window_size": 1000, "sleep_limit": 10000, "sleep_delay": 1,
			"reject_limit": 100000, "concurrent": 1000},
		"federation_rr_transactions_per_room_per_second": 10000,
	})
	return cfgPath
}

// waitReady waits until both listeners answer; it fails if Synapse exits
// or takes over a minute.
func (s *Server) waitReady(t testing.TB, fed *servertest.Federation) error {
	t.Helper()
	// A starting Synapse on a busy machine can take seconds to answer.
	hc := &http.Client{Timeout: 10 * time.Second}
	// The federation listener must present a certificate from the
	// test's CA, as Hearth's transport will check.
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(fed.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(pem)
	fedc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer fedc.CloseIdleConnections()
	up := func(c *http.Client, url string) bool {
		resp, err := c.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if up(hc, s.URL+"/_matrix/client/versions") && up(fedc, "https://"+s.Name+"/_matrix/federation/v1/version") {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("exited while starting (%v)", s.err)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.New("no answer within a minute")
		}
	}
}

// stop ends Synapse's process group: SIGTERM, then SIGKILL after 10 s.
func (s *Server) stop() {
	pgid := s.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-s.exited
	}
}

// keepLog copies the log into dir.
func (s *Server) keepLog(t testing.TB, dir string) {
	data, err := os.ReadFile(s.LogFile)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".log"), data, 0o644)
	}
	if err != nil {
		t.Logf("keep Synapse's log: %v", err)
	}
}

// LogTail returns the last n lines of Synapse's log.
func (s *Server) LogTail(n int) string {
	data, err := os.ReadFile(s.LogFile)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", s.LogFile, err)
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// Complaints returns the lines Synapse logged at WARNING or above, other
// than its start-up banner: what it found wrong, with Hearth among others.
func (s *Server) Complaints() []string {
	data, _ := os.ReadFile(s.LogFile)
	var out []string
	for line := range strings.SplitSeq(string(data), "\n") {
		_, rest, ok := strings.Cut(line, " - ")
		if !ok || strings.HasPrefix(rest, "synapse.config.logger - ") || isProbe(rest) {
			continue
		}
		for _, level := range []string{" - WARNING - ", " - ERROR - ", " - CRITICAL - "} {
			if strings.Contains(rest, level) {
				out = append(out, line)
				break
			}
		}
	}
	return out
}

// isProbe reports whether a log line is about one of waitReady's requests
// that gave up before a slow-starting Synapse answered it.
func isProbe(line string) bool {
	return strings.Contains(line, "already disconnected") &&
		(strings.Contains(line, "uri='/_matrix/client/versions'") || strings.Contains(line, "uri='/_matrix/federation/v1/version'"))
}

// Register creates a user with m.login.dummy registration and returns a
// client signed in as them.
func (s *Server) Register(t testing.TB, localpart string) *mautrix.Client {
	t.Helper()
	return Register(t, s.URL, localpart)
}

// Register creates a user on the homeserver at url (Synapse or Hearth, both
// with registration open) and returns a client signed in as them.
func Register(t testing.TB, url, localpart string) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(url, "", "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: localpart, Password: Password})
	if err != nil {
		t.Fatalf("register %s on %s: %v", localpart, url, err)
	}
	cli.UserID, cli.AccessToken, cli.DeviceID = resp.UserID, resp.AccessToken, resp.DeviceID
	return cli
}

func randomHex(t testing.TB) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func write(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeYAML(t testing.TB, path string, v any) {
	t.Helper()
	data, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	write(t, path, data)
}
