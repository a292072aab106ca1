package server_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"hearth/config"
	"hearth/server"
	"hearth/server/secret"
	"hearth/server/servertest"
	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// clock is a test clock the server reads through Deps.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type regBundle struct {
	url   string
	cfg   *config.Config
	store *storage.Store
	clock *clock
}

// startWithClock is servertest.Start with a clock the test controls, which
// the nonce expiry test needs.
func startWithClock(t *testing.T, e storagetest.Engine, edit func(*config.Config)) *regBundle {
	t.Helper()
	cfg := servertest.Config(t, t.TempDir())
	if edit != nil {
		edit(cfg)
	}
	st := storagetest.Open(t, e)
	key, err := cfg.LoadSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Now()}
	_, h := server.New(server.Deps{Cfg: cfg, Store: st, Key: key, Now: c.now,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	return &regBundle{url: hs.URL, cfg: cfg, store: st, clock: c}
}

func macFor(sharedSecret, nonce, user, password string, admin bool, userType string) string {
	m := hmac.New(sha1.New, []byte(sharedSecret))
	kind := "notadmin"
	if admin {
		kind = "admin"
	}
	fields := []string{nonce, user, password, kind}
	if userType != "" {
		fields = append(fields, userType)
	}
	m.Write([]byte(strings.Join(fields, "\x00")))
	return hex.EncodeToString(m.Sum(nil))
}

// do sends a JSON request and decodes the JSON answer.
func do(t *testing.T, method, url string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %v", method, url, err)
	}
	return resp.StatusCode, out
}

func (b *regBundle) nonce(t *testing.T) string {
	t.Helper()
	code, body := do(t, "GET", b.url+"/_synapse/admin/v1/register", nil)
	n, _ := body["nonce"].(string)
	if code != 200 || n == "" {
		t.Fatalf("GET nonce = %d %v", code, body)
	}
	return n
}

// register posts a correctly signed request unless mac is given.
func (b *regBundle) register(t *testing.T, nonce, user, password string, admin bool, extra map[string]any) (int, map[string]any) {
	t.Helper()
	userType, _ := extra["user_type"].(string)
	body := map[string]any{"nonce": nonce, "username": user, "password": password, "admin": admin,
		"mac": macFor("test-shared-secret", nonce, user, password, admin, userType)}
	for k, v := range extra {
		body[k] = v
	}
	return do(t, "POST", b.url+"/_synapse/admin/v1/register", body)
}

func wantErr(t *testing.T, code int, body map[string]any, wantCode int, errcode string) {
	t.Helper()
	if code != wantCode || body["errcode"] != errcode {
		t.Fatalf("got %d %v, want %d %s", code, body, wantCode, errcode)
	}
}

func TestAdminRegister(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := startWithClock(t, e, nil)
		ctx := t.Context()

		t.Run("good mac creates the user and logs in", func(t *testing.T) {
			code, body := b.register(t, b.nonce(t), "alice", "wonderland", false, map[string]any{"displayname": "Alice", "user_type": nil})
			if code != 200 {
				t.Fatalf("register = %d %v", code, body)
			}
			if body["user_id"] != "@alice:hearth.test" || body["home_server"] != "hearth.test" || body["device_id"] == "" {
				t.Fatalf("answer = %v", body)
			}
			tok, _ := body["access_token"].(string)
			se, err := b.store.SessionByToken(ctx, tok)
			if err != nil || se.UserID != "@alice:hearth.test" || se.DeviceID != body["device_id"] {
				t.Fatalf("access token resolves to %+v, %v", se, err)
			}
			u, err := b.store.UserByID(ctx, "@alice:hearth.test")
			if err != nil {
				t.Fatal(err)
			}
			if u.IsAdmin || u.DisplayName != "Alice" || !secret.CheckPassword(u.PasswordHash, "wonderland") {
				t.Fatalf("user = %+v", u)
			}
			if !strings.HasPrefix(u.PasswordHash, "$2a$04$") {
				t.Errorf("hash %q does not use bcrypt_rounds 4", u.PasswordHash[:7])
			}
		})

		t.Run("admin flag and user_type honoured", func(t *testing.T) {
			code, body := b.register(t, b.nonce(t), "root", "pw", true, map[string]any{"user_type": "bot"})
			if code != 200 {
				t.Fatalf("register = %d %v", code, body)
			}
			u, err := b.store.UserByID(ctx, "@root:hearth.test")
			if err != nil {
				t.Fatal(err)
			}
			if !u.IsAdmin || u.UserType != "bot" || u.DisplayName != "root" {
				t.Fatalf("user = %+v", u)
			}
		})

		t.Run("bad mac", func(t *testing.T) {
			n := b.nonce(t)
			code, body := b.register(t, n, "mallory", "pw", false, map[string]any{"mac": macFor("wrong", n, "mallory", "pw", false, "")})
			wantErr(t, code, body, 403, "M_FORBIDDEN")
			// Signed as a regular user but asking for admin.
			n = b.nonce(t)
			code, body = b.register(t, n, "mallory", "pw", true, map[string]any{"mac": macFor("test-shared-secret", n, "mallory", "pw", false, "")})
			wantErr(t, code, body, 403, "M_FORBIDDEN")
			if taken, _ := b.store.LocalpartTaken(ctx, "mallory"); taken {
				t.Fatal("user created despite a bad mac")
			}
		})

		t.Run("reused nonce", func(t *testing.T) {
			n := b.nonce(t)
			if code, body := b.register(t, n, "bob", "pw", false, nil); code != 200 {
				t.Fatalf("first use = %d %v", code, body)
			}
			code, body := b.register(t, n, "bob2", "pw", false, nil)
			wantErr(t, code, body, 400, "M_UNKNOWN")
			code, body = b.register(t, "made-up", "bob3", "pw", false, nil)
			wantErr(t, code, body, 400, "M_UNKNOWN")
		})

		t.Run("expired nonce", func(t *testing.T) {
			n := b.nonce(t)
			b.clock.add(61 * time.Second)
			code, body := b.register(t, n, "late", "pw", false, nil)
			wantErr(t, code, body, 400, "M_UNKNOWN")
		})

		t.Run("taken name", func(t *testing.T) {
			code, body := b.register(t, b.nonce(t), "alice", "other", false, nil)
			wantErr(t, code, body, 400, "M_USER_IN_USE")
		})

		t.Run("capitals are lower-cased after the MAC check", func(t *testing.T) {
			code, body := b.register(t, b.nonce(t), "CapitalBob", "pw", false, nil)
			if code != 200 || body["user_id"] != "@capitalbob:hearth.test" {
				t.Fatalf("got %d %v, want @capitalbob:hearth.test", code, body)
			}
		})

		t.Run("invalid names", func(t *testing.T) {
			for _, name := range []string{"al ice", "al:ice", "_bridge", "é", strings.Repeat("a", 250)} {
				code, body := b.register(t, b.nonce(t), name, "pw", false, nil)
				wantErr(t, code, body, 400, "M_INVALID_USERNAME")
			}
			// The whole grammar is accepted.
			if code, body := b.register(t, b.nonce(t), "a.b_c=d-e/f+g9", "pw", false, nil); code != 200 {
				t.Fatalf("register = %d %v", code, body)
			}
		})

		t.Run("missing fields", func(t *testing.T) {
			code, body := do(t, "POST", b.url+"/_synapse/admin/v1/register", map[string]any{"username": "x"})
			wantErr(t, code, body, 400, "M_BAD_JSON")
			code, body = b.register(t, b.nonce(t), "nopw", "", false, nil)
			wantErr(t, code, body, 400, "M_BAD_JSON")
		})
	})
}

func TestAdminRegisterDisabled(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := startWithClock(t, e, func(c *config.Config) { c.RegistrationSharedSecret = "" })
		code, body := b.register(t, b.nonce(t), "alice", "pw", false, nil)
		wantErr(t, code, body, 400, "M_UNKNOWN")
		if body["error"] != "Shared secret registration is not enabled" {
			t.Fatalf("error = %v", body["error"])
		}
	})
}
