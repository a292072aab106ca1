package server

import (
	"encoding/json"
	"net/http"
	"regexp"

	"hearth/server/matrix"
)

// Third-party identifiers: email addresses and phone numbers on an account
// (spec: "Adding Account Administrative Contact Information"). Hearth
// sends no email or text messages and talks to no identity server, so no
// 3PID can be validated: the endpoints answer the spec's errors for that,
// check their input first so a client's mistakes are still reported as
// such, and /capabilities says m.3pid_changes is off.

// clientSecretRe is the spec's client_secret grammar.
var clientSecretRe = regexp.MustCompile(`^[0-9a-zA-Z.=_-]{1,255}$`)

// GET /_matrix/client/v3/account/3pid
func (s *Server) getThreePIDs(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]any{"threepids": []any{}})
}

// threePIDCreds checks the client_secret and sid of a validation session.
func threePIDCreds(creds map[string]json.RawMessage, where string) error {
	var secret, sid string
	if err := fieldString(creds, "client_secret", &secret, where); err != nil {
		return err
	}
	if err := fieldString(creds, "sid", &sid, where); err != nil {
		return err
	}
	if !clientSecretRe.MatchString(secret) {
		return matrix.InvalidParam("%sclient_secret may hold only letters, digits and . = _ -, at most 255 of them", where)
	}
	return nil
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

// errNoValidatedSession is the answer to adding a 3PID: no validation
// session can exist, since none can be started.
var errNoValidatedSession = &matrix.Error{Code: "M_THREEPID_AUTH_FAILED", Msg: "no validated third-party identifier session found"}

// POST /_matrix/client/v3/account/3pid (deprecated)
//
// The spec answers credentials it cannot verify with 403
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
	if err := threePIDCreds(creds, "three_pid_creds."); err != nil {
		return err
	}
	err := *errNoValidatedSession
	err.Status = http.StatusForbidden
	return &err
}

// POST /_matrix/client/v3/account/3pid/add
//
// The body is checked before user-interactive auth, so a malformed request
// does not cost the user their password first.
func (s *Server) postThreePIDAdd(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	var fields map[string]json.RawMessage
	if err := decodeJSON(r, &fields); err != nil {
		return err
	}
	if !hasUIASession(fields) {
		if err := threePIDCreds(fields, ""); err != nil {
			return err
		}
	}
	se, body, err := s.uia(w, r, fields, uiaSpec{flows: passwordFlows, user: me.UserID})
	if err != nil || se == nil {
		return err
	}
	if err := s.store.DeleteUIASession(r.Context(), se.id); err != nil {
		return err
	}
	if err := threePIDCreds(body, ""); err != nil {
		return err
	}
	return errNoValidatedSession
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
	if err := threePIDCreds(req, ""); err != nil {
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

// threePIDRef checks the medium and address of an unbind or delete.
func threePIDRef(r *http.Request) error {
	var req map[string]json.RawMessage
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	var medium, address string
	if err := fieldString(req, "medium", &medium, ""); err != nil {
		return err
	}
	if medium != "email" && medium != "msisdn" {
		return matrix.InvalidParam("medium must be email or msisdn")
	}
	if err := fieldString(req, "address", &address, ""); err != nil {
		return err
	}
	if raw, ok := req["id_server"]; ok {
		var idServer *string
		if json.Unmarshal(raw, &idServer) != nil {
			return matrix.BadJSON("id_server must be a string")
		}
	}
	return nil
}

// POST /_matrix/client/v3/account/3pid/unbind
// POST /_matrix/client/v3/account/3pid/delete
//
// Nothing is bound or added, so there is nothing to remove: success, and
// "no-support" for the identity server part, as the spec says when the
// server knows no identity server to unbind from.
func (s *Server) postThreePIDRemove(w http.ResponseWriter, r *http.Request) error {
	if err := threePIDRef(r); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": "no-support"})
}

// POST /_matrix/client/v3/account/3pid/email/requestToken
// POST /_matrix/client/v3/account/3pid/msisdn/requestToken
//
// Adding either medium is not supported: 400 M_THREEPID_MEDIUM_NOT_SUPPORTED,
// as the spec lists and Synapse answers without email configured.
func (s *Server) postThreePIDRequestToken(w http.ResponseWriter, r *http.Request) error {
	var req map[string]json.RawMessage
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	return &matrix.Error{Code: "M_THREEPID_MEDIUM_NOT_SUPPORTED", Msg: "this server cannot validate email addresses or phone numbers"}
}

// POST /_matrix/client/v3/register/{email,msisdn}/requestToken
// POST /_matrix/client/v3/account/password/{email,msisdn}/requestToken
//
// Neither registration nor password reset can use a 3PID here: the spec's
// 403 M_THREEPID_DENIED ("the homeserver does not allow the third-party
// identifier as a contact option"). Synapse answers 400 M_UNKNOWN, which
// tells a client nothing it can act on.
func (s *Server) postThreePIDDenied(w http.ResponseWriter, r *http.Request) error {
	var req map[string]json.RawMessage
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	return &matrix.Error{Code: "M_THREEPID_DENIED", Msg: "this server does not use email addresses or phone numbers for accounts",
		Status: http.StatusForbidden}
}
