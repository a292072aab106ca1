package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"regexp"

	"hearth/server/matrix"
	"hearth/server/secret"
	"hearth/server/storage"
)

// Third-party identifiers: email addresses and phone numbers on an account
// (spec: "Adding Account Administrative Contact Information"). With the
// config's email section, email addresses are validated by an emailed link
// (email_validation.go) and can then be added to an account, registered
// with and used to reset a password or to log in. Phone numbers never: the
// server sends no text messages. Hearth talks to no identity server, so
// nothing is bound to one.

// clientSecretRe is the spec's client_secret grammar.
var clientSecretRe = regexp.MustCompile(`^[0-9a-zA-Z.=_-]{1,255}$`)

// GET /_matrix/client/v3/account/3pid
func (s *Server) getThreePIDs(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	ts, err := s.store.UserThreePIDs(r.Context(), me.UserID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"threepids": threePIDsJSON(ts)})
}

// threePIDsJSON is the shape both the client and the admin API use.
func threePIDsJSON(ts []storage.ThreePID) []map[string]any {
	out := make([]map[string]any, 0, len(ts))
	for _, t := range ts {
		out = append(out, map[string]any{"medium": t.Medium, "address": t.Address, "validated_at": t.ValidatedAt, "added_at": t.AddedAt})
	}
	return out
}

// threePIDCreds reads and checks the client_secret and sid of a
// validation session.
func threePIDCreds(creds map[string]json.RawMessage, where string) (sid, clientSecret string, err error) {
	if err := fieldString(creds, "client_secret", &clientSecret, where); err != nil {
		return "", "", err
	}
	if err := fieldString(creds, "sid", &sid, where); err != nil {
		return "", "", err
	}
	if !clientSecretRe.MatchString(clientSecret) {
		return "", "", matrix.InvalidParam("%sclient_secret may hold only letters, digits and . = _ -, at most 255 of them", where)
	}
	return sid, clientSecret, nil
}

// fieldString reads a required string field of a JSON object.
func fieldString(obj map[string]json.RawMessage, key string, dst *string, where string) error {
	raw, ok := obj[key]
	if !ok {
		return matrix.MissingParam("%s%s is required", where, key)
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return matrix.BadJSON("%s%s must be a string", where, key)
	}
	if *dst == "" {
		return matrix.MissingParam("%s%s is required", where, key)
	}
	return nil
}

// errNoValidatedSession answers credentials that name no session validated
// for the purpose.
var errNoValidatedSession = &matrix.Error{Code: "M_THREEPID_AUTH_FAILED", Msg: "no validated third-party identifier session found"}

// threePIDChangesAllowed says whether users may add and remove their
// addresses: the email section and enable_3pid_changes.
func (s *Server) threePIDChangesAllowed() bool {
	return s.cfg.EmailConfigured() && s.cfg.ThreePIDChangesEnabled()
}

// POST /_matrix/client/v3/account/3pid (deprecated)
//
// Its credentials name an identity server's session, and Hearth trusts
// none: the spec answers credentials it cannot verify with 403
// M_THREEPID_AUTH_FAILED (Synapse uses 400 with the same errcode).
func (s *Server) postThreePID(w http.ResponseWriter, r *http.Request) error {
	var req map[string]json.RawMessage
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	raw, ok := req["three_pid_creds"]
	if !ok {
		raw, ok = req["threePidCreds"] // r0.4's name, still accepted by Synapse
	}
	if !ok {
		return matrix.MissingParam("three_pid_creds is required")
	}
	var creds map[string]json.RawMessage
	if err := json.Unmarshal(raw, &creds); err != nil || creds == nil {
		return matrix.BadJSON("three_pid_creds must be an object")
	}
	if _, _, err := threePIDCreds(creds, "three_pid_creds."); err != nil {
		return err
	}
	err := *errNoValidatedSession
	err.Status = http.StatusForbidden
	err.Msg = "this server uses no identity server: add the address with /account/3pid/add"
	return &err
}

// POST /_matrix/client/v3/account/3pid/add
//
// The body is checked before user-interactive auth, so a malformed request
// does not cost the user their password first; the session is checked
// after, so an attacker holding only an access token learns nothing.
func (s *Server) postThreePIDAdd(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	var fields map[string]json.RawMessage
	if err := decodeJSON(r, &fields); err != nil {
		return err
	}
	if !hasUIASession(fields) {
		if _, _, err := threePIDCreds(fields, ""); err != nil {
			return err
		}
	}
	if s.cfg.EmailConfigured() && !s.cfg.ThreePIDChangesEnabled() {
		return matrix.Forbidden("3PID changes are disabled on this server")
	}
	se, body, err := s.uia(w, r, fields, uiaSpec{flows: passwordFlows, user: me.UserID})
	if err != nil || se == nil {
		return err
	}
	if err := s.store.DeleteUIASession(r.Context(), se.id); err != nil {
		return err
	}
	sid, clientSecret, err := threePIDCreds(body, "")
	if err != nil {
		return err
	}
	if !s.cfg.EmailConfigured() {
		return errNoValidatedSession
	}
	vs, fail, err := s.validatedSession(r.Context(), purposeAdd, sid, clientSecret)
	if err != nil {
		return err
	}
	if fail != nil {
		return fail
	}
	if !s.cfg.Allows3PID(vs.Medium, vs.Address) {
		return &matrix.Error{Code: "M_THREEPID_DENIED", Msg: "this server does not allow that address on its accounts", Status: http.StatusForbidden}
	}
	err = s.store.AddThreePID(r.Context(), storage.ThreePID{Medium: vs.Medium, Address: vs.Address, UserID: me.UserID,
		ValidatedAt: vs.ValidatedAt, AddedAt: s.now().UnixMilli()})
	if errors.Is(err, storage.ErrConflict) {
		return &matrix.Error{Code: "M_THREEPID_IN_USE", Msg: "that address is already on another account"}
	}
	if err != nil {
		return err
	}
	if _, err := s.store.DeleteThreePIDSession(r.Context(), vs.ID); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// POST /_matrix/client/v3/account/3pid/bind
//
// Binding goes through the identity server the client names; Hearth talks
// to none, which the spec's M_SERVER_NOT_TRUSTED says.
func (s *Server) postThreePIDBind(w http.ResponseWriter, r *http.Request) error {
	var req map[string]json.RawMessage
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	var idServer, idToken string
	if _, _, err := threePIDCreds(req, ""); err != nil {
		return err
	}
	if err := fieldString(req, "id_server", &idServer, ""); err != nil {
		return err
	}
	if err := fieldString(req, "id_access_token", &idToken, ""); err != nil {
		return err
	}
	return &matrix.Error{Code: "M_SERVER_NOT_TRUSTED", Msg: "this server does not use identity servers, " + idServer + " included"}
}

// threePIDRef reads the medium and address of an unbind or delete.
func threePIDRef(r *http.Request) (medium, address string, err error) {
	var req map[string]json.RawMessage
	if err := decodeJSON(r, &req); err != nil {
		return "", "", err
	}
	if err := fieldString(req, "medium", &medium, ""); err != nil {
		return "", "", err
	}
	if medium != "email" && medium != "msisdn" {
		return "", "", matrix.InvalidParam("medium must be email or msisdn")
	}
	if err := fieldString(req, "address", &address, ""); err != nil {
		return "", "", err
	}
	if raw, ok := req["id_server"]; ok {
		var idServer *string
		if json.Unmarshal(raw, &idServer) != nil {
			return "", "", matrix.BadJSON("id_server must be a string")
		}
	}
	if medium == "email" {
		if canon, err := canonicalEmail(address); err == nil {
			address = canon
		}
	}
	return medium, address, nil
}

// POST /_matrix/client/v3/account/3pid/unbind
//
// Nothing is bound to an identity server: success, and "no-support", as
// the spec says when the server knows no identity server to unbind from.
func (s *Server) postThreePIDUnbind(w http.ResponseWriter, r *http.Request) error {
	if _, _, err := threePIDRef(r); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": "no-support"})
}

// POST /_matrix/client/v3/account/3pid/delete
//
// Removing an address the account does not hold succeeds too, as in
// Synapse; no identity server is told ("no-support").
func (s *Server) postThreePIDDelete(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	medium, address, err := threePIDRef(r)
	if err != nil {
		return err
	}
	if s.cfg.EmailConfigured() && !s.cfg.ThreePIDChangesEnabled() {
		return matrix.Forbidden("3PID changes are disabled on this server")
	}
	if _, err := s.store.DeleteThreePID(r.Context(), me.UserID, medium, address); err != nil {
		return err
	}
	if medium == "email" {
		// Synapse drops the address's email pusher with it.
		if err := s.store.DeletePusher(r.Context(), me.UserID, "m.email", address); err != nil {
			return err
		}
		s.pushers.Changed(r.Context(), me.UserID)
	}
	return writeJSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": "no-support"})
}

// emailTokenRequest is the body of the email requestToken endpoints
// (spec: RequestEmailValidation).
type emailTokenRequest struct {
	ClientSecret string `json:"client_secret"`
	Email        string `json:"email"`
	SendAttempt  *int64 `json:"send_attempt"`
	NextLink     string `json:"next_link"`
}

// Validate checks the fields the spec requires and next_link's scheme, so
// the submit page redirects nowhere a browser would run script.
func (q *emailTokenRequest) Validate() error {
	switch {
	case q.ClientSecret == "":
		return matrix.MissingParam("client_secret is required")
	case !clientSecretRe.MatchString(q.ClientSecret):
		return matrix.InvalidParam("client_secret may hold only letters, digits and . = _ -, at most 255 of them")
	case q.Email == "":
		return matrix.MissingParam("email is required")
	case q.SendAttempt == nil:
		return matrix.MissingParam("send_attempt is required")
	}
	if q.NextLink != "" {
		u, err := url.Parse(q.NextLink)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return matrix.InvalidParam("next_link must be an http or https URL")
		}
	}
	return nil
}

// POST /_matrix/client/v3/register/email/requestToken
// POST /_matrix/client/v3/account/3pid/email/requestToken
// POST /_matrix/client/v3/account/password/email/requestToken
//
// Without the email section nothing can be validated: adding answers 400
// M_THREEPID_MEDIUM_NOT_SUPPORTED and the others 403 M_THREEPID_DENIED
// ("the homeserver does not allow the third-party identifier as a contact
// option"), as the spec lists them. With it: the address must be free
// (register, add: M_THREEPID_IN_USE) or on an account (password:
// M_THREEPID_NOT_FOUND), unless request_token_inhibit_3pid_errors hides
// which, by answering a session that leads nowhere.
func (s *Server) postEmailRequestToken(purpose string) apiFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var req emailTokenRequest
		if err := decodeJSON(r, &req); err != nil {
			return err
		}
		if !s.cfg.EmailConfigured() {
			if purpose == purposeAdd {
				return &matrix.Error{Code: "M_THREEPID_MEDIUM_NOT_SUPPORTED", Msg: "this server cannot validate email addresses"}
			}
			return &matrix.Error{Code: "M_THREEPID_DENIED", Msg: "this server does not use email addresses for accounts", Status: http.StatusForbidden}
		}
		switch {
		case purpose == purposeAdd && !s.cfg.ThreePIDChangesEnabled():
			return matrix.Forbidden("3PID changes are disabled on this server")
		case purpose == purposeRegister && !s.Registration().Enabled:
			return matrix.Forbidden("Registration has been disabled")
		case purpose == purposePassword && !s.cfg.PasswordLoginEnabled():
			return matrix.Forbidden("password changes are disabled on this server")
		}
		if err := req.Validate(); err != nil {
			return err
		}
		address, err := canonicalEmail(req.Email)
		if err != nil {
			return err
		}
		if purpose != purposePassword && !s.cfg.Allows3PID("email", address) {
			return &matrix.Error{Code: "M_THREEPID_DENIED", Msg: "this server does not allow that address on its accounts", Status: http.StatusForbidden}
		}
		// rc_3pid_validation, per client address and per email address:
		// each request may send an email to someone.
		ip := clientIP(r, s.xForwarded(r))
		if err := s.limits.threePID.take("ip|" + ip); err != nil {
			return withRetryAfter(w, err)
		}
		if err := s.limits.threePID.take("email|" + address); err != nil {
			return withRetryAfter(w, err)
		}
		owner, err := s.store.ThreePIDUser(r.Context(), "email", address)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		var refuse *matrix.Error
		switch {
		case purpose == purposePassword && owner == "":
			refuse = &matrix.Error{Code: "M_THREEPID_NOT_FOUND", Msg: "no account has that email address"}
		case purpose != purposePassword && owner != "":
			refuse = &matrix.Error{Code: "M_THREEPID_IN_USE", Msg: "that email address is already on an account"}
		}
		if refuse != nil {
			if s.cfg.RequestTokenInhibit3PIDErrors {
				return writeJSON(w, http.StatusOK, map[string]string{"sid": secret.Token("")})
			}
			return refuse
		}
		sid, err := s.startEmailSession(r.Context(), purpose, address, req.ClientSecret, req.NextLink, *req.SendAttempt)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, map[string]string{"sid": sid, "submit_url": s.submitURL()})
	}
}

// POST /_matrix/client/v3/account/3pid/msisdn/requestToken
//
// Phone numbers cannot be validated: 400 M_THREEPID_MEDIUM_NOT_SUPPORTED,
// as the spec lists.
func (s *Server) postMsisdnRequestToken(w http.ResponseWriter, r *http.Request) error {
	var req map[string]json.RawMessage
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	return &matrix.Error{Code: "M_THREEPID_MEDIUM_NOT_SUPPORTED", Msg: "this server cannot validate phone numbers"}
}

// POST /_matrix/client/v3/register/msisdn/requestToken
// POST /_matrix/client/v3/account/password/msisdn/requestToken
//
// Neither registration nor password reset can use a phone number here:
// the spec's 403 M_THREEPID_DENIED. Synapse answers 400 M_UNKNOWN, which
// tells a client nothing it can act on.
func (s *Server) postMsisdnDenied(w http.ResponseWriter, r *http.Request) error {
	var req map[string]json.RawMessage
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	return &matrix.Error{Code: "M_THREEPID_DENIED", Msg: "this server does not use phone numbers for accounts",
		Status: http.StatusForbidden}
}
