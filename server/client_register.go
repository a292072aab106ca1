package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"hearth/server/matrix"
	"hearth/server/storage"
)

// Account registration (spec: Client-Server API, "Account registration and
// management"; "Token-authenticated registration").

// registerRequest is the body of POST /register. The password is read apart:
// the UIA session keeps only its hash.
type registerRequest struct {
	Username                 string `json:"username"`
	Password                 string `json:"password"`
	DeviceID                 string `json:"device_id"`
	InitialDeviceDisplayName string `json:"initial_device_display_name"`
	InhibitLogin             bool   `json:"inhibit_login"`
	RefreshToken             bool   `json:"refresh_token"`
}

// registrationFlows are the UIA flows /register offers: a registration token
// when one is required, otherwise the dummy stage (open registration); with
// the email section, each also with an email address proved
// (m.login.email.identity), and only so under registrations_require_3pid.
func (s *Server) registrationFlows() [][]string {
	base := []string{stageDummy}
	withEmail := []string{stageEmailIdentity}
	if s.Registration().RequiresToken {
		base = []string{stageRegistrationToken}
		withEmail = []string{stageRegistrationToken, stageEmailIdentity}
	}
	switch {
	case s.cfg.RegistrationRequiresEmail():
		return [][]string{withEmail}
	case s.cfg.EmailConfigured():
		return [][]string{base, withEmail}
	}
	return [][]string{base}
}

// POST /_matrix/client/v3/register
//
// Checks that need no auth (registration open, the username free and valid,
// the password acceptable) run before user-interactive auth, so the client
// hears about them before its user completes any stage, as with Synapse.
func (s *Server) postRegister(w http.ResponseWriter, r *http.Request) error {
	ip := clientIP(r, s.xForwarded(r))
	// rc_registration is charged per account created, not per UIA round.
	if err := s.limits.registration.check(ip); err != nil {
		return withRetryAfter(w, err)
	}
	switch kind := r.URL.Query().Get("kind"); kind {
	case "", "user":
	case "guest":
		return matrix.GuestAccessForbidden("guest registration is not supported")
	default:
		return matrix.InvalidParam("kind must be user or guest")
	}
	if !s.Registration().Enabled {
		return matrix.Forbidden("Registration has been disabled")
	}
	var fields map[string]json.RawMessage
	if err := decodeJSON(r, &fields); err != nil {
		return err
	}
	var req registerRequest
	if err := unmarshalFields(fields, &req); err != nil {
		return err
	}
	if err := s.checkRegistration(r, &req); err != nil {
		return err
	}
	if _, ok := fields["password"]; ok {
		if err := s.checkPasswordPolicy(req.Password); err != nil {
			return err
		}
	}

	spec := uiaSpec{flows: s.registrationFlows(), secretField: "password", emailPurpose: purposeRegister,
		beforeHash: func() error { return s.limits.registration.take("hash|" + ip) }}
	se, body, err := s.uia(w, r, fields, spec)
	if err != nil || se == nil {
		return err
	}
	// body is the one the session bound; check it again, as it may not be
	// the one this request carried.
	req = registerRequest{}
	if err := unmarshalFields(body, &req); err != nil {
		return err
	}
	if err := s.checkRegistration(r, &req); err != nil {
		return err
	}
	if se.SecretHash == "" {
		return matrix.MissingParam("password is required")
	}
	userID, err := s.createAccount(r, req.Username, se.SecretHash)
	if err != nil {
		return err
	}
	if se.RegToken != "" {
		if err := s.store.CompleteRegistrationToken(r.Context(), se.RegToken); err != nil {
			return err
		}
	}
	if err := s.addRegisteredThreePIDs(r, userID, se); err != nil {
		return err
	}
	if err := s.store.DeleteUIASession(r.Context(), se.id); err != nil {
		return err
	}
	s.limits.registration.charge(ip)
	if req.InhibitLogin {
		return writeJSON(w, http.StatusOK, map[string]any{"user_id": userID, "home_server": s.cfg.ServerName})
	}
	resp, err := s.issueLogin(r, userID, req.DeviceID, req.InitialDeviceDisplayName, req.RefreshToken)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, resp)
}

// checkRegistration lower-cases the username, as Synapse does, and checks it
// and the device fields.
func (s *Server) checkRegistration(r *http.Request, req *registerRequest) error {
	if err := checkDeviceFields(req.DeviceID, req.InitialDeviceDisplayName); err != nil {
		return err
	}
	if req.Username == "" {
		return nil
	}
	req.Username = strings.ToLower(req.Username)
	return s.checkUsernameFree(r, req.Username)
}

// checkUsernameFree checks a requested localpart: the spec's grammar, and
// Synapse's reservations (a leading "_" belongs to application services, an
// all-digit name to generated IDs); then that nobody has it, deactivated
// accounts included, since user IDs are never reused.
func (s *Server) checkUsernameFree(r *http.Request, localpart string) error {
	if err := matrix.ValidateLocalpart(localpart, s.cfg.ServerName); err != nil {
		return err
	}
	if strings.HasPrefix(localpart, "_") {
		return matrix.InvalidUsername("user ID may not begin with _")
	}
	if _, err := strconv.ParseUint(localpart, 10, 64); err == nil {
		return matrix.InvalidUsername("numeric user IDs are reserved for generated accounts")
	}
	taken, err := s.store.LocalpartTaken(r.Context(), localpart)
	if err != nil {
		return err
	}
	if taken {
		return matrix.UserInUse("user ID already taken")
	}
	return nil
}

// createAccount inserts the account. Without a username it takes the next
// free number, as Synapse does.
func (s *Server) createAccount(r *http.Request, localpart, passwordHash string) (string, error) {
	ctx := r.Context()
	generated := localpart == ""
	for attempt := 0; ; attempt++ {
		if generated {
			n, err := s.store.MaxNumericLocalpart(ctx)
			if err != nil {
				return "", err
			}
			localpart = strconv.FormatInt(n+1, 10)
		}
		userID := matrix.UserID(localpart, s.cfg.ServerName)
		// Synapse gives a new account its localpart as display name.
		err := s.store.CreateUser(ctx, &storage.User{UserID: userID, Localpart: localpart, PasswordHash: passwordHash, DisplayName: localpart})
		switch {
		case err == nil:
			return userID, nil
		case !errors.Is(err, storage.ErrConflict):
			return "", err
		case !generated || attempt >= 10:
			return "", matrix.UserInUse("user ID already taken")
		}
		// Someone took the number meanwhile: count again.
	}
}

// GET /_matrix/client/v3/register/available
func (s *Server) getRegisterAvailable(w http.ResponseWriter, r *http.Request) error {
	if !s.Registration().Enabled {
		return matrix.Forbidden("Registration has been disabled")
	}
	name := r.URL.Query().Get("username")
	if name == "" {
		return matrix.MissingParam("username is required")
	}
	if err := s.checkUsernameFree(r, strings.ToLower(name)); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]bool{"available": true})
}

// GET /_matrix/client/v1/register/m.login.registration_token/validity
//
// The spec rate-limits this endpoint, so tokens cannot be guessed quickly;
// it shares rc_registration's rate under a key of its own.
func (s *Server) getRegistrationTokenValidity(w http.ResponseWriter, r *http.Request) error {
	if err := s.limits.registration.take("validity|" + clientIP(r, s.xForwarded(r))); err != nil {
		return withRetryAfter(w, err)
	}
	if !s.Registration().Enabled {
		return matrix.Forbidden("Registration has been disabled")
	}
	tok := r.URL.Query().Get("token")
	if tok == "" {
		return matrix.MissingParam("token is required")
	}
	t, err := s.store.RegistrationTokenByID(r.Context(), tok)
	if errors.Is(err, storage.ErrNotFound) {
		return writeJSON(w, http.StatusOK, map[string]bool{"valid": false})
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]bool{"valid": t.Valid(s.now().UnixMilli())})
}

// addRegisteredThreePIDs puts the addresses the registration proved on the
// new account. One taken meanwhile by another registration is left out
// (and logged): the account exists by now, and the address stays with
// whoever was first.
func (s *Server) addRegisteredThreePIDs(r *http.Request, userID string, se *uiaSession) error {
	for _, t := range se.ThreePIDs {
		err := s.store.AddThreePID(r.Context(), storage.ThreePID{Medium: t.Medium, Address: t.Address, UserID: userID,
			ValidatedAt: t.ValidatedAt, AddedAt: s.now().UnixMilli()})
		if errors.Is(err, storage.ErrConflict) {
			logFrom(r.Context(), s.log).Warn("registration: email address taken meanwhile", "user_id", userID)
			continue
		}
		if err != nil {
			return err
		}
	}
	return s.spendThreePIDSessions(r, se)
}
