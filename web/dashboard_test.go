package web_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"hearth/config"
	"hearth/server"
	"hearth/server/secret"
	"hearth/server/servertest"
	"hearth/server/storage"
	"hearth/server/storage/storagetest"
	"hearth/web"
)

// dash is a running Hearth with its dashboard.
type dash struct {
	*servertest.Bundle
	URL string // the dashboard root, e.g. http://127.0.0.1:1234/_hearth/admin
}

// start runs Hearth with servertest.Start and serves the dashboard on a
// listener of its own, as admin_dashboard.port does.
func start(t *testing.T, e storagetest.Engine, opts ...servertest.Option) *dash {
	t.Helper()
	d, _ := startWithSampler(t, e, 0, opts...)
	return d
}

// startWithSampler is start with the memory sampler ticking every interval
// (0: the default) once the caller runs the dashboard.
func startWithSampler(t *testing.T, e storagetest.Engine, interval time.Duration, opts ...servertest.Option) (*dash, *web.Dashboard) {
	t.Helper()
	b := servertest.Start(t, e, opts...)
	deps := web.Deps{Server: b.Server}
	if interval > 0 {
		deps.Sampler = web.NewSampler(interval, 3600, b.Server.Metrics().Registry)
	}
	wd := web.New(deps)
	hs := httptest.NewServer(wd.Standalone())
	t.Cleanup(hs.Close)
	return &dash{Bundle: b, URL: hs.URL + web.Path}, wd
}

// seed creates an account straight in the store.
func seed(t *testing.T, st *storage.Store, localpart, password string, admin bool) string {
	t.Helper()
	hash, err := secret.HashPassword(password, 4)
	if err != nil {
		t.Fatal(err)
	}
	id := "@" + localpart + ":hearth.test"
	if err := st.CreateUser(context.Background(), &storage.User{UserID: id, Localpart: localpart, PasswordHash: hash, IsAdmin: admin}); err != nil {
		t.Fatal(err)
	}
	return id
}

// browser is a cookie-keeping HTTP client that does not follow redirects.
type browser struct {
	t   *testing.T
	c   *http.Client
	url string
}

func newBrowser(t *testing.T, dashURL string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, url: dashURL, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

func (b *browser) do(method, path string, form url.Values) (int, string, *http.Response) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, b.url+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw), resp
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrfOf fetches a page and returns its form token.
func (b *browser) csrfOf(path string) string {
	b.t.Helper()
	_, page, _ := b.do("GET", path, nil)
	m := csrfRe.FindStringSubmatch(page)
	if m == nil {
		b.t.Fatalf("no form token on %s:\n%s", path, page)
	}
	return m[1]
}

func (b *browser) signIn(user, password string) (int, string) {
	b.t.Helper()
	tok := b.csrfOf("/login")
	status, page, _ := b.do("POST", "/login", url.Values{"csrf": {tok}, "username": {user}, "password": {password}})
	return status, page
}

func TestSignInCSRFAndDestructiveActions(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		d := start(t, e)
		ctx := context.Background()
		seed(t, d.Store, "root", "rootpassword", true)
		seed(t, d.Store, "mallory", "mallorypassword", false)
		bob := seed(t, d.Store, "bob", "bobpassword", false)

		b := newBrowser(t, d.URL)
		if status, _, resp := b.do("GET", "/", nil); status != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), "/login") {
			t.Fatalf("signed-out overview: %d %s", status, resp.Header.Get("Location"))
		}
		// A sign-in form posted without its token is refused.
		if status, page, _ := b.do("POST", "/login", url.Values{"username": {"root"}, "password": {"rootpassword"}}); status != http.StatusForbidden ||
			!strings.Contains(page, "not accepted") {
			t.Fatalf("sign-in without CSRF token: %d", status)
		}
		if status, page := b.signIn("root", "wrong"); status != http.StatusUnauthorized || !strings.Contains(page, "Wrong user ID or password") {
			t.Fatalf("wrong password: %d", status)
		}
		if status, page := b.signIn("@mallory:hearth.test", "mallorypassword"); status != http.StatusForbidden || !strings.Contains(page, "Only server admins") {
			t.Fatalf("non-admin: %d", status)
		}
		status, _ := b.signIn("root", "rootpassword")
		if status != http.StatusSeeOther {
			t.Fatalf("admin sign-in: %d", status)
		}
		u, _ := url.Parse(d.URL)
		var session *http.Cookie
		for _, c := range b.c.Jar.Cookies(u) {
			if c.Name == "hearth_admin_session" {
				session = c
			}
		}
		if session == nil {
			t.Fatal("no session cookie")
		}
		status, page, resp := b.do("GET", "/", nil)
		if status != http.StatusOK || !strings.Contains(page, "Overview") || !strings.Contains(page, "not available yet") {
			t.Fatalf("overview: %d\n%s", status, page)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("CSP: %q", csp)
		}
		// The session ID is stored hashed, never as is.
		if _, err := d.Store.DashboardSessionByHash(ctx, session.Value); err == nil {
			t.Fatal("session stored in clear")
		}

		// Every POST needs the token: without it, 403 and nothing happens.
		if status, page, _ := b.do("POST", "/users", url.Values{"username": {"eve"}, "password": {"evepassword"}}); status != http.StatusForbidden ||
			!strings.Contains(page, "not accepted") {
			t.Fatalf("create without CSRF: %d", status)
		}
		if _, err := d.Store.UserByID(ctx, "@eve:hearth.test"); err == nil {
			t.Fatal("user created without a CSRF token")
		}

		// A user's page lists their rooms: bob creates one through the
		// client API.
		bobTok := secret.Token("syt_")
		if err := d.Store.CreateLogin(ctx, storage.NewLogin{UserID: bob, DeviceID: "BOBDEV", AccessToken: bobTok}); err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("POST", d.Bundle.URL+"/_matrix/client/v3/createRoom", strings.NewReader(`{}`))
		req.Header.Set("Authorization", "Bearer "+bobTok)
		cr, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var room struct {
			RoomID string `json:"room_id"`
		}
		_ = json.NewDecoder(cr.Body).Decode(&room)
		cr.Body.Close()
		if room.RoomID == "" {
			t.Fatalf("createRoom: %d", cr.StatusCode)
		}
		if _, page, _ := b.do("GET", "/users/"+bob, nil); !strings.Contains(page, room.RoomID) || !strings.Contains(page, "BOBDEV") {
			t.Fatalf("user page lacks the room or the device:\n%s", page)
		}

		// Deactivation asks first, then acts, then is audited.
		tok := b.csrfOf("/users/" + bob)
		status, page, _ = b.do("POST", "/users/"+bob+"/deactivate", url.Values{"csrf": {tok}})
		if status != http.StatusOK || !strings.Contains(page, `name="confirmed" value="yes"`) {
			t.Fatalf("deactivate without confirmation: %d", status)
		}
		if u, _ := d.Store.UserByID(ctx, bob); u.Deactivated {
			t.Fatal("deactivated before confirmation")
		}
		if status, _, _ = b.do("POST", "/users/"+bob+"/deactivate", url.Values{"csrf": {tok}, "confirmed": {"yes"}}); status != http.StatusSeeOther {
			t.Fatalf("confirmed deactivate: %d", status)
		}
		if u, _ := d.Store.UserByID(ctx, bob); !u.Deactivated {
			t.Fatal("not deactivated")
		}
		if _, page, _ = b.do("GET", "/audit", nil); !strings.Contains(page, "user.deactivate") || !strings.Contains(page, bob) {
			t.Fatalf("audit log lacks the deactivation:\n%s", page)
		}

		// Registration tokens: create, then delete through the confirmation.
		status, _, _ = b.do("POST", "/registration/tokens", url.Values{"csrf": {tok}, "token": {"letmein"}, "uses_allowed": {"2"}})
		if status != http.StatusSeeOther {
			t.Fatalf("create token: %d", status)
		}
		if _, page, _ = b.do("GET", "/registration", nil); !strings.Contains(page, "letmein") || !strings.Contains(page, "0 used of 2") {
			t.Fatalf("token list:\n%s", page)
		}
		b.do("POST", "/registration/tokens/delete", url.Values{"csrf": {tok}, "token": {"letmein"}, "confirmed": {"yes"}})
		if _, err := d.Store.RegistrationTokenByID(ctx, "letmein"); err == nil {
			t.Fatal("token not deleted")
		}

		// Demotion ends the session on the next request.
		if err := d.Store.SetAdmin(ctx, "@root:hearth.test", false); err != nil {
			t.Fatal(err)
		}
		if status, _, _ := b.do("GET", "/", nil); status != http.StatusSeeOther {
			t.Fatalf("demoted admin still in: %d", status)
		}
	})
}

func TestSignInRateLimited(t *testing.T) {
	d := start(t, storagetest.Engine{Name: "sqlite", Options: storage.Options{SQLitePath: filepath.Join(t.TempDir(), "h.db")}},
		func(c *config.Config) { c.RCLogin.Account = config.RateLimit{PerSecond: 0.001, BurstCount: 2} })
	seed(t, d.Store, "root", "rootpassword", true)
	b := newBrowser(t, d.URL)
	for i := range 2 {
		if status, _ := b.signIn("root", "nope"); status != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d", i, status)
		}
	}
	if status, page := b.signIn("root", "rootpassword"); status != http.StatusTooManyRequests || !strings.Contains(page, "Too many sign-in attempts") {
		t.Fatalf("third attempt: %d", status)
	}
}

func TestSecureCookieOverTLS(t *testing.T) {
	b := servertest.Start(t, storagetest.Engine{Name: "sqlite", Options: storage.Options{SQLitePath: filepath.Join(t.TempDir(), "h.db")}})
	seed(t, b.Store, "root", "rootpassword", true)
	hs := httptest.NewTLSServer(web.New(web.Deps{Server: b.Server}).Standalone())
	defer hs.Close()
	resp, err := hs.Client().Get(hs.URL + web.Path + "/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	c := resp.Cookies()
	if len(c) == 0 || !c[0].Secure || !c[0].HttpOnly || c[0].SameSite != http.SameSiteStrictMode || c[0].Path != web.Path {
		t.Fatalf("cookie over TLS: %+v", c)
	}
}

// TestMountedOnClientListener checks the default placement: the dashboard
// shares the client listener at /_hearth/admin, beside the Matrix API.
func TestMountedOnClientListener(t *testing.T) {
	dir := t.TempDir()
	cfg := servertest.Config(t, dir)
	st := storagetest.Open(t, storagetest.Engine{Name: "sqlite", Options: storage.Options{SQLitePath: filepath.Join(dir, "h.db")}})
	_, h := server.New(server.Deps{Cfg: cfg, Store: st, Dashboard: func(s *server.Server) http.Handler {
		return web.New(web.Deps{Server: s}).Handler()
	}})
	hs := httptest.NewServer(h)
	defer hs.Close()
	for path, want := range map[string]string{"/_hearth/admin/login": "Sign in", "/_matrix/client/versions": "versions",
		"/_hearth/admin/static/dashboard.css": "--accent", "/_hearth/admin/nope": "no dashboard page"} {
		resp, err := http.Get(hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(raw), want) {
			t.Errorf("%s: %d, lacks %q", path, resp.StatusCode, want)
		}
		if strings.HasPrefix(path, "/_hearth") && resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("%s: the dashboard must not send CORS headers", path)
		}
	}
}

// TestCacheChangesPersisted changes the cache factor and memory settings
// and checks homeserver.yaml keeps its comments and gains the values.
func TestCacheChangesPersisted(t *testing.T) {
	dir := t.TempDir()
	base := servertest.Config(t, dir)
	path := filepath.Join(dir, "homeserver.yaml")
	yml := "# my server\nserver_name: hearth.test\nsigning_key_path: " + base.SigningKeyPath + "\n" +
		"database:\n  name: sqlite3\n  args:\n    database: " + filepath.Join(dir, "h.db") + "\n" +
		"caches:\n  # keep this comment\n  global_factor: 1.0\n"
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.BcryptRounds = 4
	st := storagetest.Open(t, storagetest.Engine{Name: "sqlite", Options: storage.Options{SQLitePath: filepath.Join(dir, "h.db")}})
	srv, _ := server.New(server.Deps{Cfg: cfg, Store: st})
	hs := httptest.NewServer(web.New(web.Deps{Server: srv}).Standalone())
	defer hs.Close()
	seed(t, st, "root", "rootpassword", true)
	b := newBrowser(t, hs.URL+web.Path)
	if status, _ := b.signIn("root", "rootpassword"); status != http.StatusSeeOther {
		t.Fatal("sign in")
	}
	tok := b.csrfOf("/caches")
	b.do("POST", "/caches/global", url.Values{"csrf": {tok}, "factor": {"0.5"}})
	b.do("POST", "/caches/factor", url.Values{"csrf": {tok}, "cache": {"users"}, "factor": {"3"}})
	b.do("POST", "/caches/runtime", url.Values{"csrf": {tok}, "memory_limit": {"512M"}, "gc_percent": {"80"}})
	defer func() { // put the test process back
		b.do("POST", "/caches/preset", url.Values{"csrf": {tok}, "preset": {"default"}})
	}()
	raw, _ := os.ReadFile(path)
	for _, want := range []string{"# my server", "# keep this comment", "global_factor: 0.5", "users: 3", "limit: 512M", "gc_percent: 80"} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("homeserver.yaml lacks %q:\n%s", want, raw)
		}
	}
	if st.Caches().GlobalFactor() != 0.5 || st.Caches().Factor("users") != 3 {
		t.Error("changes not applied live")
	}
	_, page, _ := b.do("GET", "/caches", nil)
	if !strings.Contains(page, "Saved to homeserver.yaml") {
		t.Errorf("no confirmation of the save")
	}
	reloaded, _, err := config.Load(path)
	if err != nil || reloaded.Caches.GlobalFactor != 0.5 || reloaded.Memory.Limit != 512<<20 {
		t.Fatalf("reloaded: %+v %v", reloaded, err)
	}
}

// TestSecureCookieBehindProxy: X-Forwarded-Proto makes the cookie Secure
// only on a listener that trusts the proxy (x_forwarded).
func TestSecureCookieBehindProxy(t *testing.T) {
	b := servertest.Start(t, storagetest.Engine{Name: "sqlite", Options: storage.Options{SQLitePath: filepath.Join(t.TempDir(), "h.db")}})
	h := web.New(web.Deps{Server: b.Server}).Standalone()
	for _, trust := range []bool{true, false} {
		hs := httptest.NewServer(server.WithXForwarded(h, trust))
		req, _ := http.NewRequest("GET", hs.URL+web.Path+"/login", nil)
		req.Header.Set("X-Forwarded-Proto", "https")
		resp, err := http.DefaultClient.Do(req)
		hs.Close()
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if c := resp.Cookies(); len(c) == 0 || c[0].Secure != trust {
			t.Errorf("x_forwarded=%t: cookies %+v", trust, c)
		}
	}
}

// TestRegistrationModeLive: changing who may register applies to the
// client API at once and is saved to homeserver.yaml.
func TestRegistrationModeLive(t *testing.T) {
	dir := t.TempDir()
	base := servertest.Config(t, dir)
	path := filepath.Join(dir, "homeserver.yaml")
	yml := "server_name: hearth.test\nsigning_key_path: " + base.SigningKeyPath + "\n" +
		"database:\n  name: sqlite3\n  args:\n    database: " + filepath.Join(dir, "h.db") + "\n" +
		"enable_registration: false\n"
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.BcryptRounds = 4
	st := storagetest.Open(t, storagetest.Engine{Name: "sqlite", Options: storage.Options{SQLitePath: filepath.Join(dir, "h.db")}})
	key, err := cfg.LoadSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	srv, api := server.New(server.Deps{Cfg: cfg, Store: st, Key: key, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	apiSrv := httptest.NewServer(api)
	defer apiSrv.Close()
	hs := httptest.NewServer(web.New(web.Deps{Server: srv}).Standalone())
	defer hs.Close()
	seed(t, st, "root", "rootpassword", true)
	b := newBrowser(t, hs.URL+web.Path)
	if status, _ := b.signIn("root", "rootpassword"); status != http.StatusSeeOther {
		t.Fatal("sign in")
	}
	register := func() (int, string) {
		resp, err := http.Post(apiSrv.URL+"/_matrix/client/v3/register", "application/json", strings.NewReader(`{"username":"newbie","password":"a long password"}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if status, _ := register(); status != http.StatusForbidden {
		t.Fatalf("closed registration answered %d", status)
	}
	b.do("POST", "/registration/settings", url.Values{"csrf": {b.csrfOf("/registration")}, "mode": {"token"}})
	status, body := register()
	if status != http.StatusUnauthorized || !strings.Contains(body, "m.login.registration_token") {
		t.Fatalf("after switching to tokens: %d %s", status, body)
	}
	raw, _ := os.ReadFile(path)
	if !strings.Contains(string(raw), "registration_requires_token: true") || !strings.Contains(string(raw), "enable_registration: true") {
		t.Fatalf("not saved:\n%s", raw)
	}
	b.do("POST", "/registration/settings", url.Values{"csrf": {b.csrfOf("/registration")}, "mode": {"closed"}})
	if status, _ := register(); status != http.StatusForbidden {
		t.Fatalf("closed again answered %d", status)
	}
}
