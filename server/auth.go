package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"hearth/server/matrix"
	"hearth/server/storage"
)

// Device identifies the authenticated caller of a request.
type Device struct {
	UserID   string
	DeviceID string
	TokenID  int64
	IsAdmin  bool
	IsGuest  bool
	PuppetBy string
	// Suspended is the account's suspension (spec: "Account suspension"):
	// notSuspended and the handlers that send events refuse to act for it.
	Suspended bool
}

type deviceKey struct{}

// deviceFrom returns the caller; only valid behind s.auth.
func deviceFrom(ctx context.Context) *Device {
	d, _ := ctx.Value(deviceKey{}).(*Device)
	return d
}

// accessToken reads the token from the Authorization header, or from the
// deprecated access_token query parameter that older clients still send.
func accessToken(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok), true
		}
		return "", false
	}
	if t := r.URL.Query().Get("access_token"); t != "" {
		return t, true
	}
	return "", false
}

// authenticate resolves the request's token to a Device.
func (s *Server) authenticate(r *http.Request) (*Device, error) {
	tok, ok := accessToken(r)
	if !ok || tok == "" {
		return nil, matrix.MissingToken("missing access token")
	}
	se, err := s.store.SessionByToken(r.Context(), tok)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, matrix.UnknownToken("unknown access token", false)
	}
	if err != nil {
		return nil, err
	}
	if se.ExpiresTS != 0 && se.ExpiresTS <= s.now().UnixMilli() {
		// Expired refreshable token: soft logout, the client should refresh.
		return nil, matrix.UnknownToken("access token has expired", true)
	}
	u, err := s.store.UserByID(r.Context(), se.UserID)
	if err != nil {
		return nil, err
	}
	if u.Deactivated {
		return nil, matrix.UnknownToken("account has been deactivated", false)
	}
	if u.Locked && !lockedMayCall(r) {
		return nil, errUserLocked
	}
	if se.FirstUse {
		// The pair's first use: the refresh token it replaced stops
		// working (storage.RefreshSession keeps it for a retry until now).
		if err := s.store.RetireReplacedRefreshToken(r.Context(), tok, se.RefreshTokenID); err != nil {
			return nil, err
		}
	}
	if s.touches.due(se.TokenID, s.now()) {
		ip := clientIP(r, s.xForwarded(r))
		// Best effort: a failed last-seen update must not fail the request.
		_ = s.store.TouchDevice(r.Context(), se.UserID, se.DeviceID, ip, userAgent(r))
	}
	return &Device{UserID: se.UserID, DeviceID: se.DeviceID, TokenID: se.TokenID, IsAdmin: u.IsAdmin, IsGuest: u.IsGuest,
		PuppetBy: se.PuppetBy, Suspended: u.Suspended}, nil
}

// errUserLocked answers a locked account (spec: "Account locking"): 401
// with soft_logout, so the client keeps its session and encryption state
// and can carry on once the lock is lifted.
var errUserLocked = &matrix.Error{Code: "M_USER_LOCKED", Msg: "this account has been locked", Extra: map[string]any{"soft_logout": true}}

// lockedMayCall reports whether a locked account may make this request:
// only POST /logout and /logout/all, so a user can still sign out.
func lockedMayCall(r *http.Request) bool {
	if r.Method != http.MethodPost {
		return false
	}
	for _, prefix := range []string{"/_matrix/client/v3", "/_matrix/client/r0"} {
		if p, ok := strings.CutPrefix(r.URL.Path, prefix); ok && (p == "/logout" || p == "/logout/all") {
			return true
		}
	}
	return false
}

// errUserSuspended is the answer to what a suspended account may not do
// (spec: "Account suspension").
func errUserSuspended(action string) *matrix.Error {
	return &matrix.Error{Code: "M_USER_SUSPENDED", Msg: "you cannot " + action + " while your account is suspended"}
}

// notSuspended is middleware (after auth) refusing a suspended account
// the route's action with 403 M_USER_SUSPENDED. The spec's list: joining,
// knocking, inviting, sending, changing the profile; Hearth adds creating
// rooms, moderating others, and uploading media. Routes where only some
// requests are refused (/send, /state, /redact) check in their handlers.
func (s *Server) notSuspended(next http.Handler) http.Handler {
	return s.api(func(w http.ResponseWriter, r *http.Request) error {
		if d := deviceFrom(r.Context()); d != nil && d.Suspended {
			return errUserSuspended("perform this action")
		}
		next.ServeHTTP(w, r)
		return nil
	})
}

// auth is middleware requiring a valid access token. Guests are refused
// unless the route is wrapped with allowGuests.
func (s *Server) auth(next http.Handler) http.Handler {
	return s.api(func(w http.ResponseWriter, r *http.Request) error {
		d, err := s.authenticate(r)
		if err != nil {
			return err
		}
		ctx := context.WithValue(r.Context(), deviceKey{}, d)
		ctx = context.WithValue(ctx, logKey{}, logFrom(ctx, s.log).With("user_id", d.UserID))
		next.ServeHTTP(w, r.WithContext(ctx))
		return nil
	})
}

// authOptional is middleware for routes where a token is optional: with
// one it must be valid (deviceFrom then names the user), without one the
// request goes on anonymously.
func (s *Server) authOptional(next http.Handler) http.Handler {
	return s.api(func(w http.ResponseWriter, r *http.Request) error {
		if r.Header.Get("Authorization") == "" && !r.URL.Query().Has("access_token") {
			next.ServeHTTP(w, r)
			return nil
		}
		s.auth(next).ServeHTTP(w, r)
		return nil
	})
}

// AdminAPI admits requests with a server admin's access token, as the
// Synapse admin API does (401/403 as Matrix errors otherwise): for the
// dashboard's JSON endpoints, which live outside this package.
func (s *Server) AdminAPI(next http.Handler) http.Handler { return s.auth(s.adminOnly(next)) }

// adminOnly is middleware (after auth) refusing non-admins with 403.
func (s *Server) adminOnly(next http.Handler) http.Handler {
	return s.api(func(w http.ResponseWriter, r *http.Request) error {
		if d := deviceFrom(r.Context()); d == nil || !d.IsAdmin {
			return matrix.Forbidden("you are not a server admin")
		}
		next.ServeHTTP(w, r)
		return nil
	})
}

// xForwarded reports whether the listener the request came in on trusts
// X-Forwarded-For (listeners[].x_forwarded).
func (s *Server) xForwarded(r *http.Request) bool {
	if v, ok := r.Context().Value(xForwardedKey{}).(bool); ok {
		return v
	}
	return false
}

type xForwardedKey struct{}

// WithXForwarded marks requests from a listener whose x_forwarded is set.
func WithXForwarded(h http.Handler, trust bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), xForwardedKey{}, trust)))
	})
}

// clientIP is the peer address, or the first X-Forwarded-For hop when the
// listener sits behind a trusted reverse proxy.
// userAgent is the request's User-Agent as a device records it: at most
// maxUserAgent bytes, cut between characters, with bytes that are not
// UTF-8 (a header may carry any) replaced, so that the store (PostgreSQL
// refuses them) takes every client's.
func userAgent(r *http.Request) string {
	ua := r.UserAgent()
	if len(ua) > maxUserAgent {
		cut := maxUserAgent
		for cut > 0 && !utf8.RuneStart(ua[cut]) {
			cut--
		}
		ua = ua[:cut]
	}
	return strings.ToValidUTF8(ua, "\uFFFD")
}

// maxUserAgent bounds a stored User-Agent: real ones are a few hundred
// bytes; the device list need not keep a client's 60 KB.
const maxUserAgent = 1024

func clientIP(r *http.Request, trustForwarded bool) string {
	if trustForwarded {
		if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
			first, _, _ := strings.Cut(xff, ",")
			if ip := net.ParseIP(strings.TrimSpace(first)); ip != nil {
				return ip.String()
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// touchCache limits last-seen writes to one a minute per token.
type touchCache struct {
	mu   sync.Mutex
	last map[int64]time.Time
}

func newTouchCache() *touchCache { return &touchCache{last: map[int64]time.Time{}} }

func (c *touchCache) due(tokenID int64, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.last[tokenID]; ok && now.Sub(t) < time.Minute {
		return false
	}
	if len(c.last) > 100_000 {
		c.last = map[int64]time.Time{}
	}
	c.last[tokenID] = now
	return true
}
