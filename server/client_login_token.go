package server

import (
	"encoding/json"
	"errors"
	"net/http"

	"hearth/server/matrix"
	"hearth/server/secret"
	"hearth/server/storage"
)

// Signing in a new device from one already signed in (spec v1.7, "POST
// /login/get_token", MSC3882): the signed-in client asks for a one-time,
// short-lived m.login.token token and hands it to the new device (by QR
// code, say), which logs in with it. Off unless login_via_existing_session
// is enabled, as in Synapse.

// loginTypeToken is the token login type.
const loginTypeToken = "m.login.token"

// POST /_matrix/client/v1/login/get_token
//
// The spec requires the user to confirm every time, so a UIA session
// authorises one token only; the per-user limit (one a minute) is applied
// after UIA, as in Synapse, so a refused request does not spend it.
func (s *Server) postLoginGetToken(w http.ResponseWriter, r *http.Request) error {
	lv := s.cfg.LoginViaExistingSession
	if !lv.Enabled {
		return matrix.Unrecognized("login tokens are not enabled on this server")
	}
	// Authenticated here rather than by middleware, so that a server with
	// the feature off answers 404 to everyone, as if the route did not exist.
	me, err := s.authenticate(r)
	if err != nil {
		return err
	}
	if me.IsGuest {
		return matrix.GuestAccessForbidden("guests cannot sign in other devices")
	}
	var fields map[string]json.RawMessage
	if err := decodeJSON(r, &fields); err != nil {
		return err
	}
	ctx := r.Context()
	if lv.UIAuthRequired() {
		se, _, err := s.uia(w, r, fields, uiaSpec{flows: passwordFlows, user: me.UserID})
		if err != nil || se == nil {
			return err
		}
		if err := s.limits.loginToken.take(me.UserID); err != nil {
			return withRetryAfter(w, err)
		}
		if err := s.store.DeleteUIASession(ctx, se.id); err != nil {
			return err
		}
	} else if err := s.limits.loginToken.take(me.UserID); err != nil {
		return withRetryAfter(w, err)
	}
	life := lv.TokenTimeout.Std()
	now := s.now()
	tok := secret.Token("syl_")
	if err := s.store.AddLoginToken(ctx, tok, me.UserID, now.Add(life).UnixMilli(), now.UnixMilli()); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"login_token": tok, "expires_in_ms": life.Milliseconds()})
}

// postTokenLogin is POST /login with type m.login.token: the token logs in
// its user once, before it expires. A wrong, used or expired token is 403
// M_FORBIDDEN, as in Synapse, without saying which.
func (s *Server) postTokenLogin(w http.ResponseWriter, r *http.Request, fields map[string]json.RawMessage, req loginRequest) error {
	var cred struct {
		Token string `json:"token"`
	}
	if err := unmarshalFields(fields, &cred); err != nil {
		return err
	}
	if cred.Token == "" {
		return matrix.MissingParam("token is required")
	}
	if err := checkDeviceFields(req.DeviceID, req.InitialDeviceDisplayName); err != nil {
		return err
	}
	ctx := r.Context()
	userID, err := s.store.ConsumeLoginToken(ctx, cred.Token, s.now().UnixMilli())
	if errors.Is(err, storage.ErrNotFound) {
		return matrix.Forbidden("invalid login token")
	}
	if err != nil {
		return err
	}
	u, err := s.store.UserByID(ctx, userID)
	if err != nil {
		return err
	}
	if u.Deactivated {
		return matrix.UserDeactivated("this account has been deactivated")
	}
	if u.Locked {
		return &matrix.Error{Code: "M_USER_LOCKED", Msg: "this account has been locked"}
	}
	if err := s.limits.loginAccount.take(userID); err != nil {
		return withRetryAfter(w, err)
	}
	resp, err := s.issueLogin(r, userID, req.DeviceID, req.InitialDeviceDisplayName, req.RefreshToken)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, resp)
}
