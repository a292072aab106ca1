package server

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"hearth/server/matrix"
	"hearth/server/secret"
	"hearth/server/storage"
)

// The OAuth 2.0 authorisation server (package oauth, which imports this
// one) serves the API's endpoints and its sign-in pages. Its sessions are
// ordinary devices and tokens; these are the operations its pages share with
// the client API, so the two cannot disagree on rate limits, password rules
// or what ending a session means.

// OAuthPath is where the authorisation server lives on a client listener.
const OAuthPath = "/_hearth/oauth"

// OAuthProvider is the authorisation server as the server mounts it.
type OAuthProvider interface {
	// ServeHTTP serves everything under OAuthPath (with the prefix).
	http.Handler
	// Metadata is the authorisation server metadata (RFC 8414) for a
	// request: GET /_matrix/client/v1/auth_metadata.
	Metadata(r *http.Request) (map[string]any, error)
}

// GET /_matrix/client/v1/auth_metadata
//
// Spec: "Server metadata discovery". A server without the OAuth 2.0 API
// answers 404 M_UNRECOGNIZED, which tells clients to use the legacy API.
func (s *Server) getAuthMetadata(w http.ResponseWriter, r *http.Request) error {
	if s.oauth == nil {
		return unrecognized(w, r)
	}
	md, err := s.oauth.Metadata(r)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	return writeJSON(w, http.StatusOK, md)
}

// PasswordSignIn checks a user name (a localpart or a user ID of this
// server) and password for a sign-in page, under /login's rate limits:
// per address, per account for failures, per account for successes. It
// returns the user ID, or a *matrix.Error saying why not (M_FORBIDDEN for
// a wrong name or password, M_USER_DEACTIVATED, M_USER_LOCKED,
// M_LIMIT_EXCEEDED).
func (s *Server) PasswordSignIn(r *http.Request, username, password string) (string, error) {
	if err := s.limits.loginAddress.take(s.ClientIP(r)); err != nil {
		return "", err
	}
	userID, merr := s.qualifyUser(strings.TrimSpace(username))
	if merr != nil || password == "" {
		return "", matrix.Forbidden("Invalid username or password")
	}
	if err := s.limits.loginFailed.check(userID); err != nil {
		return "", err
	}
	u, err := s.store.UserByID(r.Context(), userID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return "", err
	}
	hash := ""
	if u != nil {
		hash = u.PasswordHash
	}
	if u == nil || !secret.CheckPassword(hash, password) {
		s.limits.loginFailed.charge(userID)
		return "", matrix.Forbidden("Invalid username or password")
	}
	if u.Deactivated {
		return "", matrix.UserDeactivated("this account has been deactivated")
	}
	if u.Locked {
		return "", &matrix.Error{Code: "M_USER_LOCKED", Msg: "this account has been locked"}
	}
	if err := s.limits.loginAccount.take(userID); err != nil {
		return "", err
	}
	return userID, nil
}

// RegisterWithPassword creates an account from a registration page, with
// the rules of POST /register: registration open, rc_registration, the
// username's grammar and reservations, the password policy, and a valid
// registration token when registration_requires_token is set (one use is
// spent). It returns the new user ID or a *matrix.Error.
func (s *Server) RegisterWithPassword(r *http.Request, username, password, regToken string) (string, error) {
	ip := s.ClientIP(r)
	if err := s.limits.registration.check(ip); err != nil {
		return "", err
	}
	reg := s.Registration()
	if !reg.Enabled {
		return "", matrix.Forbidden("Registration has been disabled")
	}
	if s.cfg.RegistrationRequiresEmail() {
		// The page cannot prove an email address, which
		// registrations_require_3pid demands: no way around it here.
		return "", matrix.Forbidden("this server requires an email address to register: register from an app that asks for one")
	}
	localpart := strings.ToLower(strings.TrimSpace(username))
	if localpart == "" {
		return "", matrix.MissingParam("a username is required")
	}
	if err := s.checkUsernameFree(r, localpart); err != nil {
		return "", err
	}
	if err := s.checkPasswordPolicy(password); err != nil {
		return "", err
	}
	if reg.RequiresToken {
		ok, err := s.store.ReserveRegistrationToken(r.Context(), regToken, s.now().UnixMilli())
		if err != nil {
			return "", err
		}
		if !ok {
			return "", &matrix.Error{Code: "M_FORBIDDEN", Msg: "the registration token is not valid", Status: http.StatusUnauthorized}
		}
	}
	userID, err := s.createPasswordAccount(r, localpart, password)
	if err != nil {
		if reg.RequiresToken {
			if rerr := s.store.ReleaseRegistrationToken(r.Context(), regToken); rerr != nil {
				s.log.Warn("oauth: releasing a registration token failed", "err", rerr)
			}
		}
		return "", err
	}
	if reg.RequiresToken {
		if err := s.store.CompleteRegistrationToken(r.Context(), regToken); err != nil {
			return "", err
		}
	}
	s.limits.registration.charge(ip)
	return userID, nil
}

// EndSession signs a device out as POST /logout does: the device goes with
// its tokens and keys, and the user's other devices and their peers hear
// of it through the device list.
func (s *Server) EndSession(ctx context.Context, userID, deviceID string) error {
	if err := s.store.DeleteDevices(ctx, userID, []string{deviceID}); err != nil {
		return err
	}
	return s.deviceListChanged(ctx, userID)
}

func (s *Server) createPasswordAccount(r *http.Request, localpart, password string) (string, error) {
	hash, err := s.hashPassword(password)
	if err != nil {
		return "", err
	}
	return s.createAccount(r, localpart, hash)
}

// TakeRegistrationAttempt charges one OAuth client registration to the
// caller's address under rc_registration, so a client cannot fill the
// database with registrations.
func (s *Server) TakeRegistrationAttempt(r *http.Request) error {
	return s.limits.registration.take("oauth-client|" + s.ClientIP(r))
}

// DeactivateOwnAccount deactivates the account of a user who asked for it
// on the account page, as POST /account/deactivate does (the page has
// checked the password).
func (s *Server) DeactivateOwnAccount(ctx context.Context, userID string, erase bool) error {
	return s.deactivateAccount(ctx, userID, erase)
}

// SetOwnDisplayName changes a user's display name from the account page,
// under PUT /profile/{userId}/displayname's rules (length, the profile
// size limit, suspended accounts refused) and with the same propagation to
// the user's rooms.
func (s *Server) SetOwnDisplayName(ctx context.Context, userID, name string) error {
	u, err := s.store.UserByID(ctx, userID)
	if err != nil {
		return err
	}
	if u.Suspended {
		return errUserSuspended("change your display name")
	}
	if utf8.RuneCountInString(name) > maxDisplayNameLen {
		return matrix.InvalidParam("the display name is longer than %d characters", maxDisplayNameLen)
	}
	if err := s.profileFits(ctx, userID, "displayname", name); err != nil {
		return err
	}
	if err := s.store.SetDisplayName(ctx, userID, name); err != nil {
		return err
	}
	s.propagateProfile(ctx, userID)
	return nil
}

// loginTypeSSO is the SSO login type, which Hearth offers only as the
// OAuth 2.0 aware clients' way into the OAuth sign-in pages.
const loginTypeSSO = "m.login.sso"

// GET /_matrix/client/v3/login/sso/redirect
//
// Spec: "Client login via SSO" and "OAuth 2.0 aware clients": the browser
// goes to the OAuth sign-in pages (package oauth, /sso), which send it back
// to redirectUrl with a loginToken once the user has signed in (or
// registered, for action=register) and confirmed. Without the OAuth 2.0
// API there is no SSO: 404 M_UNRECOGNIZED.
func (s *Server) getSSORedirect(w http.ResponseWriter, r *http.Request) error {
	if s.oauth == nil {
		return unrecognized(w, r)
	}
	q := r.URL.Query()
	target := q.Get("redirectUrl")
	if target == "" {
		return matrix.MissingParam("redirectUrl is required")
	}
	if u, err := url.Parse(target); err != nil || u.Scheme == "" {
		return matrix.InvalidParam("redirectUrl must be an absolute URL")
	}
	next := url.Values{"redirectUrl": {target}}
	if a := q.Get("action"); a == "login" || a == "register" {
		next.Set("action", a)
	}
	http.Redirect(w, r, OAuthPath+"/sso?"+next.Encode(), http.StatusFound)
	return nil
}

// IssueSSOLoginToken makes the one-time m.login.token the SSO redirect
// hands back to the client (two minutes, as Synapse's SSO tokens).
func (s *Server) IssueSSOLoginToken(ctx context.Context, userID string) (string, error) {
	now := s.now()
	tok := secret.Token("syl_")
	if err := s.store.AddLoginToken(ctx, tok, userID, now.Add(2*time.Minute).UnixMilli(), now.UnixMilli()); err != nil {
		return "", err
	}
	return tok, nil
}

// The m.oauth user-interactive auth stage (spec: "OAuth authentication",
// v1.18): replacing cross-signing keys needs UIA, but a client signed in
// through the OAuth 2.0 API has no password to offer. The server offers
// m.oauth with the account management URL (action
// org.matrix.cross_signing_reset); the user approves the reset there, and
// the client's next attempt completes the stage within the window.
// org.matrix.cross_signing_reset is MSC4312's unstable name for the same
// stage, which clients released before v1.18 use.
const (
	stageOAuth         = "m.oauth"
	stageOAuthUnstable = "org.matrix.cross_signing_reset"
	// crossSigningResetWindow is how long an approval lasts (MAS: 10 min).
	crossSigningResetWindow = 10 * time.Minute
)

// crossSigningResets are the users who approved a reset, until when.
type crossSigningResets struct {
	mu    sync.Mutex
	until map[string]time.Time
}

func (c *crossSigningResets) allow(userID string, until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.until == nil {
		c.until = map[string]time.Time{}
	}
	c.until[userID] = until
}

func (c *crossSigningResets) allowed(userID string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	until, ok := c.until[userID]
	if ok && !now.Before(until) {
		delete(c.until, userID)
		return false
	}
	return ok
}

// used ends an approval once the keys were replaced: one approval, one reset.
func (c *crossSigningResets) used(userID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.until, userID)
}

// AllowCrossSigningReset records the user's approval on the account page.
func (s *Server) AllowCrossSigningReset(userID string) time.Duration {
	s.xsReset.allow(userID, s.now().Add(crossSigningResetWindow))
	return crossSigningResetWindow
}

// crossSigningResetUIA is the UIA a cross-signing replacement asks for: the
// password, and with the OAuth 2.0 API also m.oauth (and its unstable name)
// pointing at the account page.
func (s *Server) crossSigningResetUIA(r *http.Request, userID string) uiaSpec {
	spec := uiaSpec{flows: passwordFlows, user: userID}
	if s.oauth == nil {
		return spec
	}
	md, err := s.oauth.Metadata(r)
	account, _ := md["account_management_uri"].(string)
	if err != nil || account == "" {
		return spec
	}
	u := account + "?" + url.Values{"action": {"org.matrix.cross_signing_reset"}}.Encode()
	spec.flows = [][]string{{stagePassword}, {stageOAuth}, {stageOAuthUnstable}}
	spec.params = map[string]any{stageOAuth: map[string]string{"url": u}, stageOAuthUnstable: map[string]string{"url": u}}
	return spec
}
