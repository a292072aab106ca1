package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver, to make a fresh schema

	"hearth/config"
)

// server is a hearth process this tool started on a fresh database.
type server struct {
	url, secret string
	dir         string
	cmd         *exec.Cmd
	done        chan error
	dropSchema  func()
}

// startServer builds hearth (unless bin names one), writes a config with
// open shared-secret registration on loopback, and starts it on a free
// port. SQLite lives in a temporary directory; PostgreSQL in a new schema
// of dsn, dropped by stop.
func startServer(ctx context.Context, bin, dsn string, log io.Writer) (*server, error) {
	dir, err := os.MkdirTemp("", "hearth-load-")
	if err != nil {
		return nil, err
	}
	s := &server{dir: dir, secret: randomHex(16), done: make(chan error, 1)}
	fail := func(err error) (*server, error) {
		s.stop()
		return nil, err
	}
	if bin == "" {
		bin = filepath.Join(dir, "hearth")
		fmt.Fprintln(log, "building hearth")
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, "hearth/cmd/hearth")
		build.Stdout, build.Stderr = log, log
		if err := build.Run(); err != nil {
			return fail(fmt.Errorf("go build hearth/cmd/hearth (run from the repository): %w", err))
		}
	}
	key, err := config.NewSigningKey()
	if err != nil {
		return fail(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "signing.key"), key.Encode(), 0o600); err != nil {
		return fail(err)
	}
	db := fmt.Sprintf("{name: sqlite3, args: {database: %q}}", filepath.Join(dir, "hearth.db"))
	if dsn != "" {
		schemaDSN, drop, err := freshSchema(dsn)
		if err != nil {
			return fail(err)
		}
		s.dropSchema = drop
		db = fmt.Sprintf("{name: psycopg2, args: {dsn: %q}}", schemaDSN)
	}
	// Registration and login limits are lifted: the tool registers
	// hundreds of users in seconds. Nothing else differs from defaults.
	cfg := fmt.Sprintf(`server_name: load.test
log_level: warn
listeners:
  - {port: 8008, bind_addresses: ['127.0.0.1'], type: http, resources: [{names: [client]}]}
database: %s
signing_key_path: %q
media_store_path: %q
registration_shared_secret: %q
bcrypt_rounds: 4
rc_login: {address: {per_second: 0, burst_count: 100000}, account: {per_second: 0, burst_count: 100000}, failed_attempts: {per_second: 0, burst_count: 100000}}
rc_registration: {per_second: 0, burst_count: 100000}
`, db, filepath.Join(dir, "signing.key"), filepath.Join(dir, "media"), s.secret)
	cfgPath := filepath.Join(dir, "homeserver.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return fail(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	addr := l.Addr().String()
	l.Close()
	logFile, err := os.Create(filepath.Join(dir, "hearth.log"))
	if err != nil {
		return fail(err)
	}
	s.cmd = exec.Command(bin, "serve", "-c", cfgPath, "--listen", addr)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		return fail(err)
	}
	go func() { s.done <- s.cmd.Wait(); logFile.Close() }()
	s.url = "http://" + addr
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(s.url + "/_matrix/client/versions")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		select {
		case err := <-s.done:
			s.cmd = nil
			b, _ := os.ReadFile(filepath.Join(dir, "hearth.log"))
			return fail(fmt.Errorf("hearth exited on start: %v\n%s", err, b))
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("hearth did not answer within 60 s; log in %s", dir))
		}
	}
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// failed adds to err, a phase's failure, what the server can tell about
// it: whether it still runs, and the errors in its log (or, when it
// exited, the log's end), since the log goes with its data when the tool
// ends.
func (s *server) failed(err error) error {
	exited := false
	state := "the server still runs"
	select {
	case werr := <-s.done:
		s.cmd, exited = nil, true
		state = fmt.Sprintf("the server exited: %v", werr)
	default:
	}
	b, _ := os.ReadFile(filepath.Join(s.dir, "hearth.log"))
	var lines []string
	for l := range strings.Lines(string(b)) {
		if exited || strings.Contains(l, "level=ERROR") {
			lines = append(lines, l)
		}
	}
	if len(lines) > serverLogLines {
		lines = lines[len(lines)-serverLogLines:]
	}
	if len(lines) == 0 {
		return fmt.Errorf("%w (%s; no errors in its log)", err, state)
	}
	return fmt.Errorf("%w (%s; its log:\n%s)", err, state, strings.Join(lines, ""))
}

// serverLogLines is how much of the server's log a failure shows.
const serverLogLines = 30

// stop ends the server and removes its data.
func (s *server) stop() {
	if s.cmd != nil {
		s.cmd.Process.Kill()
		<-s.done
	}
	if s.dropSchema != nil {
		s.dropSchema()
	}
	os.RemoveAll(s.dir)
}

// freshSchema makes an empty schema in dsn's database and returns a DSN
// whose search_path is that schema.
func freshSchema(dsn string) (string, func(), error) {
	schema := "hearth_load_" + randomHex(6)
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		return "", nil, fmt.Errorf("postgres: %w", err)
	}
	if _, err := admin.Exec(`CREATE SCHEMA ` + schema); err != nil {
		admin.Close()
		return "", nil, fmt.Errorf("postgres: create schema: %w", err)
	}
	drop := func() {
		admin.Exec(`DROP SCHEMA ` + schema + ` CASCADE`)
		admin.Close()
	}
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		return strings.TrimSpace(dsn) + " search_path=" + schema, drop, nil
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), drop, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
