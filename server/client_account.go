package server

import (
	"encoding/json"
	"net/http"

	"hearth/server/matrix"
)

// Password change and deactivation (spec: Client-Server API, "Account
// registration and management"). Both need the user's password again
// through user-interactive auth, so a stolen access token alone cannot take
// over or destroy the account.

// passwordFlows is the UIA the account endpoints ask for.
var passwordFlows = [][]string{{stagePassword}}

// POST /_matrix/client/v3/account/password
//
// The access token is optional (spec: the password stage alone may identify
// the user), so this route authenticates here rather than in middleware.
func (s *Server) postPassword(w http.ResponseWriter, r *http.Request) error {
	if !s.cfg.PasswordLoginEnabled() {
		return matrix.Forbidden("password changes are disabled on this server")
	}
	var caller *Device
	if _, ok := accessToken(r); ok {
		d, err := s.authenticate(r)
		if err != nil {
			return err
		}
		if d.IsGuest {
			return matrix.GuestAccessForbidden("guests cannot set a password")
		}
		caller = d
	}
	var fields map[string]json.RawMessage
	if err := decodeJSON(r, &fields); err != nil {
		return err
	}
	var req struct {
		NewPassword   *string `json:"new_password"`
		LogoutDevices *bool   `json:"logout_devices"`
	}
	if err := unmarshalFields(fields, &req); err != nil {
		return err
	}
	switch {
	case req.NewPassword != nil:
		if err := s.checkPasswordPolicy(*req.NewPassword); err != nil {
			return err
		}
	case !hasUIASession(fields):
		// Nothing can be bound to a session yet: the password must be here.
		return matrix.MissingParam("new_password is required")
	}
	spec := uiaSpec{flows: passwordFlows, secretField: "new_password"}
	if s.cfg.EmailConfigured() {
		// A forgotten password: the emailed link proves the account.
		spec.flows = [][]string{{stagePassword}, {stageEmailIdentity}}
		spec.emailPurpose = purposePassword
	}
	if caller != nil {
		spec.user = caller.UserID
	}
	se, body, err := s.uia(w, r, fields, spec)
	if err != nil || se == nil {
		return err
	}
	if se.SecretHash == "" {
		return matrix.MissingParam("new_password is required")
	}
	req.LogoutDevices = nil
	if err := unmarshalFields(body, &req); err != nil {
		return err
	}
	ctx := r.Context()
	if err := s.store.SetPasswordHash(ctx, se.UserID, se.SecretHash); err != nil {
		return err
	}
	// logout_devices defaults to true: every other device is signed out
	// and deleted; the caller's own session survives.
	if req.LogoutDevices == nil || *req.LogoutDevices {
		keep := ""
		if caller != nil {
			keep = caller.DeviceID
		}
		if err := s.store.DeleteUserTokens(ctx, se.UserID, keep, true); err != nil {
			return err
		}
	}
	if err := s.spendThreePIDSessions(r, se); err != nil {
		return err
	}
	if err := s.store.DeleteUIASession(ctx, se.id); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// POST /_matrix/client/v3/account/deactivate
//
// Hearth binds no third-party IDs to identity servers, so there is nothing
// to unbind: id_server_unbind_result is "no-support", as the spec allows.
func (s *Server) postDeactivate(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	var fields map[string]json.RawMessage
	if err := decodeJSON(r, &fields); err != nil {
		return err
	}
	var req struct {
		Erase    bool   `json:"erase"`
		IDServer string `json:"id_server"`
	}
	if err := unmarshalFields(fields, &req); err != nil {
		return err
	}
	se, body, err := s.uia(w, r, fields, uiaSpec{flows: passwordFlows, user: me.UserID})
	if err != nil || se == nil {
		return err
	}
	req.Erase = false
	if err := unmarshalFields(body, &req); err != nil {
		return err
	}
	if err := s.deactivateAccount(r.Context(), me.UserID, req.Erase); err != nil {
		return err
	}
	if err := s.store.DeleteUIASession(r.Context(), se.id); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": "no-support"})
}
