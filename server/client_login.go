package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"hearth/server/matrix"
	"hearth/server/secret"
	"hearth/server/storage"
)

// Sessions (spec: Client-Server API, "Login", "Refreshing access tokens",
// "Logout", "whoami").

// defaultRefreshableLifetime is how long a refreshable access token lives
// when refreshable_access_token_lifetime is unset (Synapse: 5 minutes).
const defaultRefreshableLifetime = 5 * time.Minute

// maxDeviceDisplayName bounds device names (Synapse: 100 characters).
const maxDeviceDisplayName = 100

// GET /_matrix/client/v3/login
//
// m.login.token is offered while login_via_existing_session is on or the
// OAuth 2.0 API is served: those are the ways Hearth issues such tokens,
// and clients that do not know a listed flow fall back to the login web
// page. With the OAuth 2.0 API, m.login.sso is offered too, marked
// oauth_aware_preferred (spec: "OAuth 2.0 aware clients"): its redirect
// goes through the OAuth sign-in pages and hands back a login token.
func (s *Server) getLogin(w http.ResponseWriter, r *http.Request) error {
	flows := []map[string]any{}
	if s.oauth != nil {
		flows = append(flows, map[string]any{"type": loginTypeSSO, "oauth_aware_preferred": true})
	}
	switch {
	case s.cfg.LoginViaExistingSession.Enabled:
		flows = append(flows, map[string]any{"type": loginTypeToken, "get_login_token": true})
	case s.oauth != nil:
		flows = append(flows, map[string]any{"type": loginTypeToken})
	}
	if s.cfg.PasswordLoginEnabled() {
		flows = append(flows, map[string]any{"type": stagePassword})
	}
	return writeJSON(w, http.StatusOK, map[string]any{"flows": flows})
}

// loginRequest is what every login type shares.
type loginRequest struct {
	Type                     string `json:"type"`
	DeviceID                 string `json:"device_id"`
	InitialDeviceDisplayName string `json:"initial_device_display_name"`
	RefreshToken             bool   `json:"refresh_token"`
}

// passwordAuth is the credential part of a password login or of an
// m.login.password UIA stage.
type passwordAuth struct {
	Identifier *struct {
		Type    string `json:"type"`
		User    string `json:"user"`
		Medium  string `json:"medium"`
		Address string `json:"address"`
	} `json:"identifier"`
	// User, Medium and Address are the pre-identifier (r0.4) forms.
	User     string `json:"user"`
	Medium   string `json:"medium"`
	Address  string `json:"address"`
	Password string `json:"password"`
}

// identify returns who the credentials name: a user (localpart or ID),
// or an email address, or neither when they name nobody. Phone numbers
// are never on accounts here; the spec answers an unknown 3PID with 403.
func (p *passwordAuth) identify() (user, email string, fail *matrix.Error) {
	medium, address := p.Medium, p.Address
	if p.Identifier != nil {
		switch p.Identifier.Type {
		case "m.id.user":
			if p.Identifier.User == "" {
				return "", "", matrix.MissingParam("identifier.user is required")
			}
			return p.Identifier.User, "", nil
		case "m.id.thirdparty":
			medium, address = p.Identifier.Medium, p.Identifier.Address
			if medium == "" || address == "" {
				return "", "", matrix.MissingParam("identifier.medium and identifier.address are required")
			}
		case "m.id.phone":
			return "", "", matrix.Forbidden("no account is bound to that third-party identifier")
		default:
			return "", "", matrix.InvalidParam("unknown identifier type %q", p.Identifier.Type)
		}
	}
	if medium == "" && address == "" {
		return p.User, "", nil
	}
	if medium != "email" {
		return "", "", matrix.Forbidden("no account is bound to that third-party identifier")
	}
	canon, err := canonicalEmail(address)
	if err != nil {
		return "", "", matrix.Forbidden("no account is bound to that third-party identifier")
	}
	return "", canon, nil
}

// credentialUser resolves what the credentials name to a user ID: "" when
// they name nobody. An email address on no account is refused with the
// words of a wrong password, so logins do not reveal which addresses are
// registered.
func (s *Server) credentialUser(r *http.Request, cred *passwordAuth) (string, *matrix.Error, error) {
	name, email, fail := cred.identify()
	if fail != nil {
		return "", fail, nil
	}
	if email != "" {
		userID, err := s.store.ThreePIDUser(r.Context(), "email", email)
		if errors.Is(err, storage.ErrNotFound) {
			s.limits.loginFailed.charge(email)
			return "", matrix.Forbidden("Invalid username or password"), nil
		}
		return userID, nil, err
	}
	if name == "" {
		return "", nil, nil
	}
	userID, fail := s.qualifyUser(name)
	return userID, fail, nil
}

// qualifyUser turns a localpart or a user ID of this server into the
// canonical, lower-cased user ID (Synapse matches logins case-insensitively).
func (s *Server) qualifyUser(u string) (string, *matrix.Error) {
	u = strings.ToLower(u)
	if strings.HasPrefix(u, "@") {
		lp, server, ok := matrix.SplitUserID(u)
		if !ok || server != strings.ToLower(s.cfg.ServerName) {
			return "", matrix.Forbidden("Invalid username or password")
		}
		u = lp
	}
	if u == "" {
		return "", matrix.MissingParam("user is required")
	}
	return matrix.UserID(u, s.cfg.ServerName), nil
}

// POST /_matrix/client/v3/login
func (s *Server) postLogin(w http.ResponseWriter, r *http.Request) error {
	if err := s.limits.loginAddress.take(clientIP(r, s.xForwarded(r))); err != nil {
		return withRetryAfter(w, err)
	}
	var fields map[string]json.RawMessage
	if err := decodeJSON(r, &fields); err != nil {
		return err
	}
	var req loginRequest
	var cred passwordAuth
	if err := unmarshalFields(fields, &req); err != nil {
		return err
	}
	if err := unmarshalFields(fields, &cred); err != nil {
		return err
	}
	switch {
	case req.Type == "":
		return matrix.MissingParam("type is required")
	case req.Type == loginTypeToken && (s.cfg.LoginViaExistingSession.Enabled || s.oauth != nil):
		return s.postTokenLogin(w, r, fields, req)
	case req.Type != stagePassword || !s.cfg.PasswordLoginEnabled():
		// Synapse: 400 M_UNKNOWN "Unknown login type".
		return &matrix.Error{Code: "M_UNKNOWN", Msg: "unknown login type " + req.Type, Status: http.StatusBadRequest}
	}
	if err := checkDeviceFields(req.DeviceID, req.InitialDeviceDisplayName); err != nil {
		return err
	}
	userID, merr, err := s.credentialUser(r, &cred)
	if err != nil {
		return err
	}
	if merr != nil {
		return merr
	}
	if userID == "" {
		return matrix.MissingParam("identifier is required")
	}
	if _, ok := fields["password"]; !ok {
		return matrix.MissingParam("password is required")
	}
	if err := s.limits.loginFailed.check(userID); err != nil {
		return withRetryAfter(w, err)
	}
	u, err := s.store.UserByID(r.Context(), userID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	if u != nil && u.Deactivated && u.PasswordHash == "" {
		// Deactivation removes the password; Synapse then says why the
		// login fails rather than calling the password wrong.
		return matrix.UserDeactivated("this account has been deactivated")
	}
	if u == nil || !secret.CheckPassword(u.PasswordHash, cred.Password) {
		s.limits.loginFailed.charge(userID)
		return matrix.Forbidden("Invalid username or password")
	}
	if u.Deactivated {
		return matrix.UserDeactivated("this account has been deactivated")
	}
	if u.Locked {
		// As Synapse: the password was right, but a new session would
		// only be refused on every request (auth.go).
		return &matrix.Error{Code: "M_USER_LOCKED", Msg: "this account has been locked"}
	}
	// rc_login.account counts successful logins per account; it is taken
	// only now because the account is not known before (as in Synapse).
	if err := s.limits.loginAccount.take(userID); err != nil {
		return withRetryAfter(w, err)
	}
	resp, err := s.issueLogin(r, userID, req.DeviceID, req.InitialDeviceDisplayName, req.RefreshToken)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, resp)
}

// checkDeviceFields validates a client-chosen device ID and display name.
func checkDeviceFields(deviceID, displayName string) error {
	if len(deviceID) > 255 {
		return matrix.InvalidParam("device_id is longer than 255 bytes")
	}
	if len([]rune(displayName)) > maxDeviceDisplayName {
		return matrix.InvalidParam("device display name is longer than %d characters", maxDeviceDisplayName)
	}
	return nil
}

// issueLogin creates (or reuses) the device and its tokens and returns the
// login response body. Reusing a device ID revokes that device's previous
// tokens (spec: "Relationship between access tokens and devices").
func (s *Server) issueLogin(r *http.Request, userID, deviceID, displayName string, refreshable bool) (map[string]any, error) {
	replace := deviceID != ""
	if deviceID == "" {
		deviceID = secret.DeviceID()
	}
	l := storage.NewLogin{
		UserID: userID, DeviceID: deviceID, DeviceDisplayName: displayName,
		IP: clientIP(r, s.xForwarded(r)), UserAgent: userAgent(r),
		AccessToken: secret.Token("syt_"), ReplaceDevice: replace,
	}
	resp := map[string]any{"user_id": userID, "device_id": deviceID, "home_server": s.cfg.ServerName}
	if refreshable {
		s.refreshablePair(&l, resp)
	}
	if err := s.store.CreateLogin(r.Context(), l); err != nil {
		return nil, err
	}
	resp["access_token"] = l.AccessToken
	if s.cfg.PublicBaseURL != "" {
		resp["well_known"] = map[string]any{"m.homeserver": map[string]string{"base_url": strings.TrimSuffix(s.cfg.PublicBaseURL, "/")}}
	}
	return resp, nil
}

// refreshablePair gives l an expiring access token and a refresh token, and
// puts refresh_token and expires_in_ms into resp.
func (s *Server) refreshablePair(l *storage.NewLogin, resp map[string]any) {
	life := s.cfg.RefreshableAccessTokenLifetime.Std()
	if life <= 0 {
		life = defaultRefreshableLifetime
	}
	now := s.now()
	l.AccessExpiresTS = now.Add(life).UnixMilli()
	l.RefreshToken = secret.Token("syr_")
	if rl := s.cfg.RefreshTokenLifetime.Std(); rl > 0 {
		l.RefreshExpiresTS = now.Add(rl).UnixMilli()
	}
	resp["refresh_token"] = l.RefreshToken
	resp["expires_in_ms"] = life.Milliseconds()
}

// POST /_matrix/client/v3/refresh
func (s *Server) postRefresh(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.RefreshToken == "" {
		return matrix.MissingParam("refresh_token is required")
	}
	next := storage.NewLogin{AccessToken: secret.Token("syt_")}
	resp := map[string]any{}
	s.refreshablePair(&next, resp)
	_, _, err := s.store.RefreshSession(r.Context(), req.RefreshToken, next)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return matrix.UnknownToken("unknown refresh token", false)
	case errors.Is(err, storage.ErrRefreshExpired):
		// The device still exists: the client may log in again with it.
		return matrix.UnknownToken("refresh token has expired", true)
	case err != nil:
		return err
	}
	resp["access_token"] = next.AccessToken
	return writeJSON(w, http.StatusOK, resp)
}

// POST /_matrix/client/v3/logout
//
// Logging out deletes the device with its tokens (spec: "the device
// associated with the access token is also deleted"), except for a token an
// admin obtained to act as the user, which is revoked alone.
func (s *Server) postLogout(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	var err error
	if me.PuppetBy != "" {
		err = s.store.DeleteAccessToken(r.Context(), me.TokenID)
	} else {
		if err = s.store.DeleteDevices(r.Context(), me.UserID, []string{me.DeviceID}); err == nil {
			// Its keys went with it (keys.go).
			err = s.deviceListChanged(r.Context(), me.UserID)
		}
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// POST /_matrix/client/v3/logout/all
func (s *Server) postLogoutAll(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	if err := s.store.DeleteUserTokens(r.Context(), me.UserID, "", true); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// GET /_matrix/client/v3/account/whoami
func (s *Server) getWhoami(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	resp := map[string]any{"user_id": me.UserID, "is_guest": me.IsGuest}
	if me.DeviceID != "" {
		resp["device_id"] = me.DeviceID
	}
	return writeJSON(w, http.StatusOK, resp)
}

// withRetryAfter adds the Retry-After header (whole seconds, rounded up) to
// a rate-limit answer, beside the body's retry_after_ms.
func withRetryAfter(w http.ResponseWriter, err error) error {
	var me *matrix.Error
	if errors.As(err, &me) && me.Code == "M_LIMIT_EXCEEDED" {
		if ms, ok := me.Extra["retry_after_ms"].(int64); ok {
			w.Header().Set("Retry-After", strconv.FormatInt((ms+999)/1000, 10))
		}
	}
	return err
}

// unmarshalFields decodes an already-parsed JSON object into v, reporting
// fields of the wrong type as M_BAD_JSON like decodeJSON does.
func unmarshalFields(fields map[string]json.RawMessage, v any) error {
	b, err := json.Marshal(fields)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return matrix.BadJSON("field %q has the wrong type: expected %s", te.Field, te.Type.String())
		}
		return matrix.BadJSON("invalid JSON: %v", err)
	}
	return nil
}

// hashPassword hashes a new password at the configured cost (long ones
// as secret.HashPassword does).
func (s *Server) hashPassword(pw string) (string, error) {
	return secret.HashPassword(pw, s.cfg.BcryptRounds)
}

// checkPasswordPolicy applies password_config.policy to a new password
// (only when the policy is enabled, as in Synapse) and Synapse's 512
// character ceiling.
func (s *Server) checkPasswordPolicy(pw string) error {
	if len([]rune(pw)) > 512 {
		return matrix.InvalidParam("password is longer than 512 characters")
	}
	if pw == "" {
		return matrix.MissingParam("password must not be empty")
	}
	p := s.cfg.PasswordConfig.Policy
	if p.Enabled && len([]rune(pw)) < p.MinimumLength {
		return matrix.WeakPassword("password is shorter than %d characters", p.MinimumLength)
	}
	return nil
}
