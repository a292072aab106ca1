package web

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"hearth/config"
	"hearth/server/htmlpage"
	"hearth/server/secret"
	"hearth/server/storage"
	"hearth/templates"
)

const (
	sessionCookie = "hearth_admin_session"
	// loginCookie carries the sign-in form's CSRF token before a session
	// exists (double submit: the form field must equal the cookie).
	loginCookie = "hearth_admin_login"
	flashCookie = "hearth_admin_flash"
	// maxForm bounds a dashboard form body.
	maxForm = 64 << 10
)

// admin is the signed-in admin of a request.
type admin struct {
	UserID string
	IDHash string // storage key of the session
	CSRF   string // the form token of this session
}

type adminKey struct{}

func adminFrom(ctx context.Context) *admin {
	a, _ := ctx.Value(adminKey{}).(*admin)
	return a
}

// csrfFor derives a session's form token from its ID. The ID never leaves
// the HttpOnly cookie, so a page on another site cannot compute the token;
// deriving it means nothing more is stored. The label keeps it different
// from the stored hash of the ID.
func csrfFor(sessionID string) string {
	h := sha256.Sum256([]byte("hearth-dashboard-csrf\x00" + sessionID))
	return hex.EncodeToString(h[:])
}

func equalTokens(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// cookie makes a dashboard cookie: HttpOnly, SameSite=Strict, scoped to the
// dashboard's path, and Secure whenever the browser came over HTTPS.
func (d *Dashboard) cookie(r *http.Request, name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: name, Value: value, Path: d.prefix, MaxAge: maxAge, HttpOnly: true,
		Secure: d.srv.IsHTTPS(r), SameSite: http.SameSiteStrictMode}
}

// parseForm reads a bounded form body.
func parseForm(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		return &htmlpage.Error{Status: http.StatusBadRequest, Msg: "The form could not be read."}
	}
	return nil
}

// requireAdmin lets a request through only with a live session of a user
// who is still an active server admin (checked on every request, so
// demotion or deactivation ends the session at once). Every POST must
// carry the session's form token.
func (d *Dashboard) requireAdmin(next http.Handler) http.Handler {
	return d.pages.Handler(func(w http.ResponseWriter, r *http.Request) error {
		a, err := d.session(r)
		if err != nil {
			return err
		}
		if a == nil {
			http.SetCookie(w, d.cookie(r, sessionCookie, "", -1))
			if r.Method == http.MethodGet {
				http.Redirect(w, r, d.prefix+"/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return nil
			}
			return &htmlpage.Error{Status: http.StatusForbidden, Msg: "You are not signed in, or your session has ended. Sign in and try again."}
		}
		if r.Method == http.MethodPost {
			if err := parseForm(w, r); err != nil {
				return err
			}
			if !equalTokens(r.PostFormValue("csrf"), a.CSRF) {
				return errCSRF
			}
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), adminKey{}, a)))
		return nil
	})
}

// session resolves the session cookie; nil when there is no valid session.
func (d *Dashboard) session(r *http.Request) (*admin, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return nil, nil
	}
	hash := storage.HashToken(c.Value)
	ds, err := d.store.DashboardSessionByHash(r.Context(), hash)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if ds.ExpiresTS <= d.srv.Now().UnixMilli() {
		return nil, nil
	}
	u, err := d.store.UserByID(r.Context(), ds.UserID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !u.IsAdmin || u.Deactivated || u.Locked {
		return nil, nil
	}
	return &admin{UserID: u.UserID, IDHash: hash, CSRF: csrfFor(c.Value)}, nil
}

// loginCSRF is the sign-in form's token: the login cookie's value, which
// getLogin sets (see ensureLoginCookie).
func loginCSRF(r *http.Request) string {
	if v, ok := r.Context().Value(loginTokenKey{}).(string); ok {
		return v
	}
	if c, err := r.Cookie(loginCookie); err == nil {
		return c.Value
	}
	return ""
}

type loginTokenKey struct{}

// GET /_hearth/admin/login
func (d *Dashboard) getLogin(w http.ResponseWriter, r *http.Request) error {
	if a, err := d.session(r); err == nil && a != nil {
		http.Redirect(w, r, d.prefix+"/", http.StatusSeeOther)
		return nil
	}
	r = d.ensureLoginCookie(w, r)
	d.renderLogin(w, r, http.StatusOK, "", "")
	return nil
}

// ensureLoginCookie gives the browser a sign-in form token if it has none.
func (d *Dashboard) ensureLoginCookie(w http.ResponseWriter, r *http.Request) *http.Request {
	if c, err := r.Cookie(loginCookie); err == nil && len(c.Value) >= 32 {
		return r
	}
	tok := secret.Token("")
	http.SetCookie(w, d.cookie(r, loginCookie, tok, 0))
	return r.WithContext(context.WithValue(r.Context(), loginTokenKey{}, tok))
}

func (d *Dashboard) renderLogin(w http.ResponseWriter, r *http.Request, status int, username, msg string) {
	vm := templates.LoginVM{Chrome: d.chrome(w, r, "Sign in", ""), Username: username, Error: msg}
	d.pages.Render(w, r, status, templates.Login(vm))
}

// dummyHash is checked when the account does not exist, so a wrong user
// name takes as long as a wrong password. Made on first use: hashing at
// start would slow every start for a page few people open.
var dummyHash = sync.OnceValue(func() string {
	h, _ := secret.HashPassword("hearth-dashboard-no-such-user", 10)
	return h
})

// POST /_hearth/admin/login
//
// Signs an admin in with their Matrix user ID (or localpart) and password.
// Attempts are rate-limited per IP (rc_login.address) and per account
// (rc_login.account); only server admins are let in.
func (d *Dashboard) postLogin(w http.ResponseWriter, r *http.Request) error {
	if err := parseForm(w, r); err != nil {
		return err
	}
	if !equalTokens(r.PostFormValue("csrf"), loginCSRF(r)) {
		return errCSRF
	}
	username := strings.TrimSpace(r.PostFormValue("username"))
	password := r.PostFormValue("password")
	ip := d.srv.ClientIP(r)
	if wait := d.limits.take(ip, ""); wait > 0 {
		return tooMany(wait)
	}
	userID, err := d.srv.LocalUserID(strings.ToLower(username))
	if err != nil || password == "" {
		d.renderLogin(w, r, http.StatusUnauthorized, username, "Wrong user ID or password.")
		return nil
	}
	if wait := d.limits.take("", userID); wait > 0 {
		return tooMany(wait)
	}
	u, err := d.store.UserByID(r.Context(), userID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	hash := dummyHash()
	if u != nil && !u.Deactivated {
		hash = u.PasswordHash
	}
	ok := secret.CheckPassword(hash, password) && u != nil && !u.Deactivated
	if !ok {
		d.srv.Log().Info("dashboard: sign-in failed", "user_id", userID, "ip", ip)
		d.renderLogin(w, r, http.StatusUnauthorized, username, "Wrong user ID or password.")
		return nil
	}
	if !u.IsAdmin || u.Locked {
		d.srv.Log().Info("dashboard: sign-in refused, not a server admin", "user_id", userID, "ip", ip)
		d.renderLogin(w, r, http.StatusForbidden, username, "Only server admins can sign in to the dashboard.")
		return nil
	}
	if err := d.signIn(w, r, u.UserID); err != nil { // setup.go
		return err
	}
	http.SetCookie(w, d.cookie(r, loginCookie, "", -1))
	r = r.WithContext(context.WithValue(r.Context(), adminKey{}, &admin{UserID: u.UserID}))
	d.srv.Audit(r.Context(), d.actor(r), "dashboard.sign_in", u.UserID, "")
	next := r.URL.Query().Get("next")
	if !strings.HasPrefix(next, d.prefix+"/") || strings.HasPrefix(next, "//") || strings.Contains(next, "\\") {
		next = d.prefix + "/"
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
	return nil
}

// POST /_hearth/admin/logout
func (d *Dashboard) postLogout(w http.ResponseWriter, r *http.Request) error {
	a := adminFrom(r.Context())
	if err := d.store.DeleteDashboardSession(r.Context(), a.IDHash); err != nil {
		return err
	}
	d.srv.Audit(r.Context(), d.actor(r), "dashboard.sign_out", a.UserID, "")
	http.SetCookie(w, d.cookie(r, sessionCookie, "", -1))
	http.Redirect(w, r, d.prefix+"/login", http.StatusSeeOther)
	return nil
}

func tooMany(wait time.Duration) error {
	secs := int(math.Ceil(wait.Seconds()))
	return &htmlpage.Error{Status: http.StatusTooManyRequests,
		Msg: "Too many sign-in attempts. Try again in " + strconv.Itoa(secs) + " seconds."}
}

// setFlash leaves a message for the next page the browser shows.
func (d *Dashboard) setFlash(w http.ResponseWriter, r *http.Request, msg string, isErr bool) {
	v := "ok:" + msg
	if isErr {
		v = "err:" + msg
	}
	http.SetCookie(w, d.cookie(r, flashCookie, base64.RawURLEncoding.EncodeToString([]byte(v)), 60))
}

// takeFlash reads and clears the message.
func (d *Dashboard) takeFlash(w http.ResponseWriter, r *http.Request) (string, bool) {
	c, err := r.Cookie(flashCookie)
	if err != nil || c.Value == "" {
		return "", false
	}
	http.SetCookie(w, d.cookie(r, flashCookie, "", -1))
	raw, err := base64.RawURLEncoding.DecodeString(c.Value)
	if err != nil {
		return "", false
	}
	kind, msg, _ := strings.Cut(string(raw), ":")
	return msg, kind == "err"
}

// signInLimits are token buckets for sign-in attempts, per IP and per
// account, with the rates of rc_login.address and rc_login.account.
type signInLimits struct {
	ip, account *bucketSet
}

func newSignInLimits(c *config.Config, now func() time.Time) signInLimits {
	return signInLimits{ip: newBucketSet(c.RCLogin.Address, now), account: newBucketSet(c.RCLogin.Account, now)}
}

// take spends an attempt for the IP or the account (whichever is given)
// and returns how long to wait when none is left.
func (l signInLimits) take(ip, account string) time.Duration {
	if ip != "" {
		return l.ip.take(ip)
	}
	return l.account.take(account)
}

type bucketSet struct {
	mu      sync.Mutex
	rate    float64
	burst   float64
	now     func() time.Time
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newBucketSet(rl config.RateLimit, now func() time.Time) *bucketSet {
	return &bucketSet{rate: rl.PerSecond, burst: math.Max(rl.BurstCount, 1), now: now, buckets: map[string]*bucket{}}
}

// take spends one token; a zero rate never limits.
func (b *bucketSet) take(key string) time.Duration {
	if b.rate <= 0 {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	k, ok := b.buckets[key]
	if !ok {
		if len(b.buckets) > 10_000 { // full buckets carry no information
			for key, v := range b.buckets {
				if v.tokens+now.Sub(v.last).Seconds()*b.rate >= b.burst {
					delete(b.buckets, key)
				}
			}
		}
		k = &bucket{tokens: b.burst, last: now}
		b.buckets[key] = k
	}
	k.tokens = math.Min(b.burst, k.tokens+now.Sub(k.last).Seconds()*b.rate)
	k.last = now
	if k.tokens < 1 {
		return time.Duration((1 - k.tokens) / b.rate * float64(time.Second))
	}
	k.tokens--
	return 0
}
