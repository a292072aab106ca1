package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"time"

	"hearth/config"
	"hearth/server/matrix"
	"hearth/server/secret"
	"hearth/server/storage"
)

// Admin operations shared by the Synapse admin API (admin_users.go) and the
// dashboard (package web): both call these, so a rule such as "an admin may
// not demote themselves" or "every destructive action is audited" lives in
// one place. They take and return domain values, never HTTP.

// Actor is who performs an admin action, for the audit log.
type Actor struct {
	UserID string
	IP     string
	// Via is "api" (Synapse admin API) or "dashboard".
	Via string
}

// Config is the server's configuration (read-only).
func (s *Server) Config() *config.Config { return s.cfg }

// Store is the server's database.
func (s *Server) Store() *storage.Store { return s.store }

// Log is the server's logger.
func (s *Server) Log() *slog.Logger { return s.log }

// Started is when the server was created.
func (s *Server) Started() time.Time { return s.started }

// Now is the server's clock.
func (s *Server) Now() time.Time { return s.now() }

// audit records an action. The action already happened, so a failure to
// record it is logged rather than reported as the action failing.
func (s *Server) audit(ctx context.Context, by Actor, action, target, detail string) {
	err := s.store.AddAudit(ctx, storage.AuditEntry{TS: s.now().UnixMilli(), Actor: by.UserID, Action: action,
		Target: target, Detail: strings.TrimSpace(detail + " (via " + by.Via + ")"), IP: by.IP})
	if err != nil {
		logFrom(ctx, s.log).Error("audit log write failed", "action", action, "target", target, "err", err)
	}
}

// LocalUserID accepts "alice", "@alice" or "@alice:server" and returns the
// full ID, refusing users of other servers.
func (s *Server) LocalUserID(input string) (string, error) {
	input = strings.TrimSpace(input)
	if !strings.HasPrefix(input, "@") {
		input = "@" + input
	}
	if !strings.Contains(input, ":") {
		input += ":" + s.cfg.ServerName
	}
	_, server, ok := matrix.SplitUserID(input)
	if !ok {
		return "", matrix.InvalidParam("%q is not a user ID", input)
	}
	if server != s.cfg.ServerName {
		return "", matrix.InvalidParam("this endpoint can only be used with local users")
	}
	return input, nil
}

// UserRow is an account with the latest last-seen time over its devices.
type UserRow struct {
	storage.User
	LastSeenTS int64
}

// ListUsers returns one page of accounts and the total that match.
func (s *Server) ListUsers(ctx context.Context, f storage.UserFilter) ([]UserRow, int, error) {
	users, total, err := s.store.ListUsers(ctx, f)
	if err != nil {
		return nil, 0, err
	}
	out := make([]UserRow, 0, len(users))
	for _, u := range users {
		ls, err := s.lastSeenOf(ctx, u.UserID)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, UserRow{User: *u, LastSeenTS: ls})
	}
	return out, total, nil
}

// User returns one account; a missing one is M_NOT_FOUND "user not found".
func (s *Server) User(ctx context.Context, userID string) (*UserRow, error) {
	u, err := s.store.UserByID(ctx, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, matrix.NotFound("user not found")
	}
	if err != nil {
		return nil, err
	}
	ls, err := s.lastSeenOf(ctx, userID)
	if err != nil {
		return nil, err
	}
	return &UserRow{User: *u, LastSeenTS: ls}, nil
}

// lastSeenOf is the latest last_seen_ts over the user's devices.
func (s *Server) lastSeenOf(ctx context.Context, userID string) (int64, error) {
	devs, err := s.store.Devices(ctx, userID)
	var last int64
	for _, d := range devs {
		last = max(last, d.LastSeenTS)
	}
	return last, err
}

// UserChanges are the fields of Synapse's PUT /v2/users/<id>; nil leaves a
// field alone.
type UserChanges struct {
	Password      *string
	LogoutDevices *bool // default true: a new password logs every device out
	DisplayName   *string
	AvatarURL     *string
	Admin         *bool
	Deactivated   *bool
	Locked        *bool
	UserType      *string
}

// errNoSelfDemotion keeps the last admin from locking everyone out by
// accident (Synapse answers the same 400).
var errNoSelfDemotion = &matrix.Error{Code: "M_UNKNOWN", Msg: "you may not demote yourself", Status: 400}

// UpsertUser creates the account (created is true) or applies the changes
// to it, as Synapse's PUT /_synapse/admin/v2/users/<id> does.
func (s *Server) UpsertUser(ctx context.Context, by Actor, userID string, ch UserChanges) (created bool, err error) {
	if ch.UserType != nil && *ch.UserType != "" && *ch.UserType != "support" && *ch.UserType != "bot" {
		return false, matrix.InvalidParam("invalid user type %q", *ch.UserType)
	}
	u, err := s.store.UserByID(ctx, userID)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return true, s.createUser(ctx, by, userID, ch)
	case err != nil:
		return false, err
	}
	if ch.Admin != nil && !*ch.Admin && userID == by.UserID {
		return false, errNoSelfDemotion
	}
	if ch.Deactivated != nil && *ch.Deactivated && !u.Deactivated {
		if err := s.DeactivateUser(ctx, by, userID, false); err != nil {
			return false, err
		}
	}
	if ch.Deactivated != nil && !*ch.Deactivated && u.Deactivated {
		if ch.Password == nil && u.PasswordHash == "" {
			return false, matrix.InvalidParam("must provide a password to re-activate an account")
		}
		if err := s.store.Reactivate(ctx, userID); err != nil {
			return false, err
		}
		s.audit(ctx, by, "user.reactivate", userID, "")
	}
	if ch.Password != nil {
		if err := s.ResetPassword(ctx, by, userID, *ch.Password, ch.LogoutDevices == nil || *ch.LogoutDevices); err != nil {
			return false, err
		}
	}
	if ch.Admin != nil && *ch.Admin != u.IsAdmin {
		if err := s.SetUserAdmin(ctx, by, userID, *ch.Admin); err != nil {
			return false, err
		}
	}
	if ch.Locked != nil && *ch.Locked != u.Locked {
		if err := s.store.SetLocked(ctx, userID, *ch.Locked); err != nil {
			return false, err
		}
		s.audit(ctx, by, "user.locked", userID, fmt.Sprintf("locked=%t", *ch.Locked))
	}
	for _, set := range []struct {
		present bool
		apply   func() error
	}{
		{ch.DisplayName != nil, func() error { return s.store.SetDisplayName(ctx, userID, *ch.DisplayName) }},
		{ch.AvatarURL != nil, func() error { return s.store.SetAvatarURL(ctx, userID, *ch.AvatarURL) }},
		{ch.UserType != nil, func() error { return s.store.SetUserType(ctx, userID, *ch.UserType) }},
	} {
		if set.present {
			if err := set.apply(); err != nil {
				return false, err
			}
		}
	}
	return false, nil
}

func (s *Server) createUser(ctx context.Context, by Actor, userID string, ch UserChanges) error {
	localpart, _, _ := matrix.SplitUserID(userID)
	if me := matrix.ValidateLocalpart(localpart, s.cfg.ServerName); me != nil {
		return me
	}
	nu := &storage.User{UserID: userID, Localpart: localpart, IsAdmin: ch.Admin != nil && *ch.Admin, DisplayName: localpart}
	if ch.Password != nil {
		hash, err := secret.HashPassword(*ch.Password, s.cfg.BcryptRounds)
		if err != nil {
			return err
		}
		nu.PasswordHash = hash
	}
	if ch.DisplayName != nil {
		nu.DisplayName = *ch.DisplayName
	}
	if ch.AvatarURL != nil {
		nu.AvatarURL = *ch.AvatarURL
	}
	if ch.UserType != nil {
		nu.UserType = *ch.UserType
	}
	if err := s.store.CreateUser(ctx, nu); errors.Is(err, storage.ErrConflict) {
		return matrix.UserInUse("user ID already taken")
	} else if err != nil {
		return err
	}
	s.audit(ctx, by, "user.create", userID, fmt.Sprintf("admin=%t", nu.IsAdmin))
	if ch.Locked != nil && *ch.Locked {
		if err := s.store.SetLocked(ctx, userID, true); err != nil {
			return err
		}
	}
	if ch.Deactivated != nil && *ch.Deactivated {
		return s.DeactivateUser(ctx, by, userID, false)
	}
	return nil
}

// ResetPassword sets a new password; logoutDevices revokes every token.
func (s *Server) ResetPassword(ctx context.Context, by Actor, userID, password string, logoutDevices bool) error {
	if password == "" {
		return matrix.InvalidParam("the new password must not be empty")
	}
	hash, err := secret.HashPassword(password, s.cfg.BcryptRounds)
	if err != nil {
		return err
	}
	if err := s.store.SetPasswordHash(ctx, userID, hash); errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("user not found")
	} else if err != nil {
		return err
	}
	if logoutDevices {
		if err := s.store.DeleteUserTokens(ctx, userID, "", false); err != nil {
			return err
		}
	}
	s.audit(ctx, by, "user.reset_password", userID, fmt.Sprintf("logout_devices=%t", logoutDevices))
	return nil
}

// DeactivateUser deactivates the account as the user's own deactivation
// does (deactivate.go): signed out everywhere, out of every room; erase
// also clears its profile and hides its messages from later members.
func (s *Server) DeactivateUser(ctx context.Context, by Actor, userID string, erase bool) error {
	if err := s.deactivateAccount(ctx, userID, erase); err != nil {
		return err
	}
	s.audit(ctx, by, "user.deactivate", userID, fmt.Sprintf("erase=%t", erase))
	return nil
}

// SetUserAdmin grants or removes server-admin rights.
func (s *Server) SetUserAdmin(ctx context.Context, by Actor, userID string, admin bool) error {
	if userID == by.UserID && !admin {
		return errNoSelfDemotion
	}
	if err := s.store.SetAdmin(ctx, userID, admin); errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("user not found")
	} else if err != nil {
		return err
	}
	s.audit(ctx, by, "user.admin", userID, fmt.Sprintf("admin=%t", admin))
	return nil
}

// SetUserLocked locks or unlocks an account (spec: "Account locking"). A
// locked account keeps its sessions, but every request except logout is
// refused with M_USER_LOCKED until the lock is lifted (auth.go).
func (s *Server) SetUserLocked(ctx context.Context, by Actor, userID string, locked bool) error {
	if err := s.store.SetLocked(ctx, userID, locked); errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("user not found")
	} else if err != nil {
		return err
	}
	s.audit(ctx, by, "user.locked", userID, fmt.Sprintf("locked=%t", locked))
	return nil
}

// SetUserSuspended suspends an account or lifts the suspension (spec:
// "Account suspension", MSC3823): the user keeps reading, but the actions
// behind notSuspended (auth.go) are refused with M_USER_SUSPENDED.
func (s *Server) SetUserSuspended(ctx context.Context, by Actor, userID string, suspended bool) error {
	if err := s.store.SetSuspended(ctx, userID, suspended); errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("user not found")
	} else if err != nil {
		return err
	}
	s.audit(ctx, by, "user.suspended", userID, fmt.Sprintf("suspended=%t", suspended))
	return nil
}

// DeleteUserDevices removes devices and their tokens.
func (s *Server) DeleteUserDevices(ctx context.Context, by Actor, userID string, deviceIDs []string) error {
	if err := s.store.DeleteDevices(ctx, userID, deviceIDs); err != nil {
		return err
	}
	s.audit(ctx, by, "device.delete", userID, strings.Join(deviceIDs, ", "))
	return nil
}

// NewRegToken describes a registration token to create (Synapse's POST
// /registration_tokens/new): Token, or a random one of Length characters.
type NewRegToken struct {
	Token       *string
	UsesAllowed *int
	ExpiryTime  *int64 // ms
	Length      *int
}

// regTokenChars are the characters a registration token may contain
// (spec: m.login.registration_token; Synapse's admin API).
const regTokenChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-"

// validUsesAllowed reports whether n may be a token's uses_allowed: at
// least 0, and at most what PostgreSQL's integer column holds (SQLite's
// would hold more; both engines refuse alike).
func validUsesAllowed(n int) bool { return n >= 0 && n <= math.MaxInt32 }

// errUsesAllowed is the answer to any other uses_allowed.
func errUsesAllowed() error {
	return matrix.InvalidParam("uses_allowed must be an integer from 0 to %d, or null", math.MaxInt32)
}

// CreateRegToken validates and stores a registration token.
func (s *Server) CreateRegToken(ctx context.Context, by Actor, req NewRegToken) (*storage.RegistrationToken, error) {
	t := &storage.RegistrationToken{UsesAllowed: req.UsesAllowed, ExpiryTime: req.ExpiryTime}
	if t.UsesAllowed != nil && !validUsesAllowed(*t.UsesAllowed) {
		return nil, errUsesAllowed()
	}
	if t.ExpiryTime != nil && *t.ExpiryTime < s.now().UnixMilli() {
		return nil, matrix.InvalidParam("expiry_time must not be in the past")
	}
	if req.Token != nil {
		if len(*req.Token) == 0 || len(*req.Token) > 64 || strings.Trim(*req.Token, regTokenChars) != "" {
			return nil, matrix.InvalidParam("token must consist of 1-64 characters from A-Z, a-z, 0-9, '.', '_', '~' and '-'")
		}
		t.Token = *req.Token
	} else {
		length := 16
		if req.Length != nil {
			length = *req.Length
		}
		if length < 1 || length > 64 {
			return nil, matrix.InvalidParam("length must be an integer between 1 and 64")
		}
		t.Token = secret.FromAlphabet(regTokenChars, length)
	}
	if err := s.store.CreateRegistrationToken(ctx, t); errors.Is(err, storage.ErrConflict) {
		return nil, matrix.InvalidParam("token already exists")
	} else if err != nil {
		return nil, err
	}
	// The token is a credential only while registration requires one, and
	// admins need to find it later: the audit names it.
	s.audit(ctx, by, "registration_token.create", t.Token, "")
	return t, nil
}

// RegTokens lists registration tokens; valid filters on validity when set.
func (s *Server) RegTokens(ctx context.Context, valid *bool) ([]*storage.RegistrationToken, error) {
	toks, err := s.store.RegistrationTokens(ctx)
	if err != nil {
		return nil, err
	}
	if valid == nil {
		return toks, nil
	}
	out := []*storage.RegistrationToken{}
	now := s.now().UnixMilli()
	for _, t := range toks {
		if t.Valid(now) == *valid {
			out = append(out, t)
		}
	}
	return out, nil
}

// DeleteRegToken removes a registration token.
func (s *Server) DeleteRegToken(ctx context.Context, by Actor, token string) error {
	if err := s.store.DeleteRegistrationToken(ctx, token); errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("registration token not found")
	} else if err != nil {
		return err
	}
	s.audit(ctx, by, "registration_token.delete", token, "")
	return nil
}

// Audit records an action taken outside the operations above (dashboard
// sign-in, cache tuning, settings).
func (s *Server) Audit(ctx context.Context, by Actor, action, target, detail string) {
	s.audit(ctx, by, action, target, detail)
}

// ClientIP is the caller's address, honouring X-Forwarded-For only on
// listeners configured with x_forwarded.
func (s *Server) ClientIP(r *http.Request) string { return clientIP(r, s.xForwarded(r)) }

// UserAgent is the request's User-Agent as a session records it (see
// userAgent): bounded, and UTF-8.
func (s *Server) UserAgent(r *http.Request) string { return userAgent(r) }

// IsHTTPS reports whether the browser reached us over TLS: directly, or
// through a trusted proxy that says so in X-Forwarded-Proto.
func (s *Server) IsHTTPS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	return s.xForwarded(r) && strings.EqualFold(strings.TrimSpace(r.Header.Get("X-Forwarded-Proto")), "https")
}
