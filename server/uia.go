package server

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"hearth/server/matrix"
	"hearth/server/secret"
	"hearth/server/storage"
)

// User-interactive authentication (spec: Client-Server API, "User-Interactive
// Authentication API"). An endpoint offers flows, each a list of stages; the
// client completes the stages of one flow in order, one request each, and
// the request succeeds once a flow is complete. Until then the answer is 401
// with flows, params, session and completed; a failed stage adds errcode and
// error to that body.
//
// A session authorises one operation: the method and path it was started on
// (Synapse answers 403 "Requested operation has changed during the UI
// authentication session" otherwise), and the request body first sent with
// it. Later requests must repeat that body or send only auth, in which case
// the bound body is used: a session started to delete one device cannot be
// finished deleting another. The body is bound the first time it is
// non-empty, because clients such as Element probe the flows with {} first.

// uiaSessionTTL is how long a session lives (Synapse: 48 hours).
const uiaSessionTTL = 48 * time.Hour

// Stage types.
const (
	stagePassword          = "m.login.password"
	stageDummy             = "m.login.dummy"
	stageRegistrationToken = "m.login.registration_token"
	stageEmailIdentity     = "m.login.email.identity"
)

// uiaSession is what a session remembers between requests, stored as JSON in
// uia_sessions.data.
type uiaSession struct {
	id      string
	created int64

	// Op is "METHOD /path" of the operation the session authorises.
	Op string `json:"op"`
	// BodyMAC is a keyed hash of the bound body (minus auth); the key is
	// derived from the server's signing key, so the stored value says
	// nothing about the password the body may contain.
	BodyMAC string `json:"body_mac,omitempty"`
	// Body is the bound body without its secret field, used when a later
	// request sends only auth.
	Body json.RawMessage `json:"body,omitempty"`
	// SecretHash is the bcrypt hash of the bound body's secret field
	// (password, new_password), so it is hashed once and never stored plain.
	SecretHash string   `json:"secret_hash,omitempty"`
	Completed  []string `json:"completed"`
	// UserID is the user a password stage authenticated.
	UserID string `json:"user_id,omitempty"`
	// RegToken is the registration token whose use this session reserved.
	RegToken string `json:"registration_token,omitempty"`
	// Registered is the account a completed registration created; a retry
	// of the finished request logs in to it instead of failing.
	Registered string `json:"registered,omitempty"`
	// ThreePIDs are the addresses an m.login.email.identity stage proved,
	// with the validation sessions the operation spends once done.
	ThreePIDs []uiaThreePID `json:"threepids,omitempty"`
}

// uiaThreePID is an address an email stage proved.
type uiaThreePID struct {
	Medium      string `json:"medium"`
	Address     string `json:"address"`
	ValidatedAt int64  `json:"validated_at"`
	SID         string `json:"sid"`
}

// uiaSpec is what an endpoint asks for.
type uiaSpec struct {
	flows  [][]string
	params map[string]any
	// user is the authenticated caller, if any: a password stage must prove
	// this user.
	user string
	// secretField names the body field holding a new password, bound by
	// its bcrypt hash rather than kept.
	secretField string
	// beforeHash, when set, runs before that hash is computed; /register
	// rate-limits there, as bcrypt is deliberately costly and the endpoint
	// is open to anyone.
	beforeHash func() error
	// emailPurpose is the kind of validation session an
	// m.login.email.identity stage accepts (register, password).
	emailPurpose string
}

// uiaOp names the operation a request performs; the r0 alias counts as v3.
func uiaOp(r *http.Request) string {
	return r.Method + " " + strings.Replace(r.URL.Path, "/_matrix/client/r0/", "/_matrix/client/v3/", 1)
}

// uia runs one step of user-interactive auth. fields is the decoded request
// body. When a flow is complete it returns the session and the body to act
// on (the request's, or the bound one when the request sent only auth).
// Otherwise it has written the 401 challenge itself and returns a nil session
// and nil error; any other failure is returned as an error.
func (s *Server) uia(w http.ResponseWriter, r *http.Request, fields map[string]json.RawMessage, spec uiaSpec) (*uiaSession, map[string]json.RawMessage, error) {
	var auth map[string]json.RawMessage
	if raw, ok := fields["auth"]; ok && !bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		if err := json.Unmarshal(raw, &auth); err != nil {
			return nil, nil, matrix.BadJSON("auth must be an object")
		}
	}
	var sessionID, stage string
	if err := authString(auth, "session", &sessionID); err != nil {
		return nil, nil, err
	}
	if err := authString(auth, "type", &stage); err != nil {
		return nil, nil, err
	}
	body := make(map[string]json.RawMessage, len(fields))
	for k, v := range fields {
		if k != "auth" {
			body[k] = v
		}
	}

	se, err := s.loadUIASession(r, sessionID)
	if err != nil {
		return nil, nil, err
	}
	if se.Op != uiaOp(r) {
		return nil, nil, matrix.Forbidden("Requested operation has changed during the UI authentication session.")
	}
	if len(body) > 0 {
		mac, err := s.uiaBodyMAC(body)
		if err != nil {
			return nil, nil, err
		}
		switch se.BodyMAC {
		case "":
			if err := s.bindUIABody(se, body, mac, spec); err != nil {
				return nil, nil, withRetryAfter(w, err)
			}
		case mac:
		default:
			return nil, nil, matrix.Forbidden("Requested operation has changed during the UI authentication session.")
		}
	} else if len(se.Body) > 0 {
		if err := json.Unmarshal(se.Body, &body); err != nil {
			return nil, nil, err
		}
	}

	if auth == nil {
		// The spec: a UIA endpoint never succeeds without auth, even when
		// a dummy stage would do.
		return nil, nil, s.uiaChallenge(w, r, se, spec, nil)
	}
	if stage != "" && !slices.Contains(se.Completed, stage) {
		if !uiaNextStage(spec.flows, se.Completed, stage) {
			return nil, nil, s.uiaChallenge(w, r, se, spec, matrix.Forbidden("%s is not the next stage of any flow", stage))
		}
		fail, err := s.uiaRunStage(r, se, spec, stage, auth)
		if err != nil {
			return nil, nil, withRetryAfter(w, err)
		}
		if fail != nil {
			return nil, nil, s.uiaChallenge(w, r, se, spec, fail)
		}
		se.Completed = append(se.Completed, stage)
	}
	if !uiaFlowDone(spec.flows, se.Completed) {
		return nil, nil, s.uiaChallenge(w, r, se, spec, nil)
	}
	if err := s.saveUIASession(r, se); err != nil {
		return nil, nil, err
	}
	return se, body, nil
}

// hasUIASession reports whether the request names a UIA session.
func hasUIASession(fields map[string]json.RawMessage) bool {
	var auth struct {
		Session string `json:"session"`
	}
	return json.Unmarshal(fields["auth"], &auth) == nil && auth.Session != ""
}

// authString reads an optional string from the auth dict.
func authString(auth map[string]json.RawMessage, key string, dst *string) error {
	raw, ok := auth[key]
	if !ok {
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return matrix.BadJSON("auth.%s must be a string", key)
	}
	return nil
}

// loadUIASession returns the named session, or a new one bound to this
// request's operation when id is empty. Starting a session also sweeps the
// expired ones.
func (s *Server) loadUIASession(r *http.Request, id string) (*uiaSession, error) {
	ctx := r.Context()
	now := s.now()
	if id == "" {
		if err := s.expireUIASessions(r); err != nil {
			return nil, err
		}
		return &uiaSession{id: secret.Token(""), created: now.UnixMilli(), Op: uiaOp(r), Completed: []string{}}, nil
	}
	data, created, err := s.store.UIASession(ctx, id)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && now.Sub(time.UnixMilli(created)) > uiaSessionTTL) {
		// Synapse: 400 M_UNKNOWN "Unknown session ID".
		return nil, &matrix.Error{Code: "M_UNKNOWN", Msg: "unknown or expired UIA session", Status: http.StatusBadRequest}
	}
	if err != nil {
		return nil, err
	}
	se := &uiaSession{}
	if err := json.Unmarshal([]byte(data), se); err != nil {
		return nil, err
	}
	se.id, se.created = id, created
	if se.Completed == nil {
		se.Completed = []string{}
	}
	return se, nil
}

func (s *Server) saveUIASession(r *http.Request, se *uiaSession) error {
	b, err := json.Marshal(se)
	if err != nil {
		return err
	}
	return s.store.SaveUIASession(r.Context(), se.id, string(b), se.created)
}

// expireUIASessions drops sessions past their TTL and gives back the
// registration-token uses they reserved but never completed.
func (s *Server) expireUIASessions(r *http.Request) error {
	ctx := r.Context()
	old, err := s.store.ExpireUIASessions(ctx, s.now().Add(-uiaSessionTTL).UnixMilli())
	if err != nil {
		return err
	}
	for _, data := range old {
		var se uiaSession
		if json.Unmarshal([]byte(data), &se) == nil && se.RegToken != "" && se.Registered == "" {
			if err := s.store.ReleaseRegistrationToken(ctx, se.RegToken); err != nil {
				return err
			}
		}
	}
	return nil
}

// uiaBodyMAC is an HMAC of the body in canonical form (sorted keys, no
// insignificant whitespace), keyed from the signing key.
func (s *Server) uiaBodyMAC(body map[string]json.RawMessage) (string, error) {
	canon, err := canonicalJSON(body)
	if err != nil {
		return "", err
	}
	key := sha256.Sum256(append([]byte("hearth uia body\x00"), s.key.Priv.Seed()...))
	m := hmac.New(sha256.New, key[:])
	m.Write(canon)
	return hex.EncodeToString(m.Sum(nil)), nil
}

// canonicalJSON re-encodes v with sorted object keys.
func canonicalJSON(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var generic any
	if err := dec.Decode(&generic); err != nil {
		return nil, err
	}
	return json.Marshal(generic)
}

// bindUIABody ties the session to body; a secret field is kept only as its
// bcrypt hash.
func (s *Server) bindUIABody(se *uiaSession, body map[string]json.RawMessage, mac string, spec uiaSpec) error {
	secretField := spec.secretField
	kept := make(map[string]json.RawMessage, len(body))
	for k, v := range body {
		kept[k] = v
	}
	if raw, ok := body[secretField]; ok && secretField != "" {
		delete(kept, secretField)
		var pw string
		if err := json.Unmarshal(raw, &pw); err != nil {
			return matrix.BadJSON("%s must be a string", secretField)
		}
		if err := s.checkPasswordPolicy(pw); err != nil {
			return err
		}
		if spec.beforeHash != nil {
			if err := spec.beforeHash(); err != nil {
				return err
			}
		}
		h, err := s.hashPassword(pw)
		if err != nil {
			return err
		}
		se.SecretHash = h
	}
	b, err := json.Marshal(kept)
	if err != nil {
		return err
	}
	se.BodyMAC, se.Body = mac, b
	return nil
}

// uiaNextStage reports whether stage may come next after completed in some
// flow (stages are done in order).
func uiaNextStage(flows [][]string, completed []string, stage string) bool {
	for _, f := range flows {
		if len(f) > len(completed) && slices.Equal(f[:len(completed)], completed) && f[len(completed)] == stage {
			return true
		}
	}
	return false
}

// uiaFlowDone reports whether completed finishes a flow.
func uiaFlowDone(flows [][]string, completed []string) bool {
	for _, f := range flows {
		if len(f) <= len(completed) && slices.Equal(f, completed[:len(f)]) {
			return true
		}
	}
	return false
}

// uiaChallenge saves the session and answers 401 with what is left to do,
// plus errcode and error when a stage failed.
func (s *Server) uiaChallenge(w http.ResponseWriter, r *http.Request, se *uiaSession, spec uiaSpec, fail *matrix.Error) error {
	if err := s.saveUIASession(r, se); err != nil {
		return err
	}
	flows := make([]map[string][]string, len(spec.flows))
	for i, f := range spec.flows {
		flows[i] = map[string][]string{"stages": f}
	}
	params := spec.params
	if params == nil {
		params = map[string]any{}
	}
	body := map[string]any{"flows": flows, "params": params, "session": se.id, "completed": se.Completed}
	if fail != nil {
		body["errcode"], body["error"] = fail.Code, fail.Msg
	}
	return writeJSON(w, http.StatusUnauthorized, body)
}

// uiaRunStage checks one stage. A failed attempt the client may retry comes
// back as fail; err is for everything else (rate limits, faults).
func (s *Server) uiaRunStage(r *http.Request, se *uiaSession, spec uiaSpec, stage string, auth map[string]json.RawMessage) (fail *matrix.Error, err error) {
	switch stage {
	case stageDummy:
		return nil, nil
	case stageRegistrationToken:
		var tok string
		if err := authString(auth, "token", &tok); err != nil {
			return nil, err
		}
		if tok == "" {
			return matrix.MissingParam("auth.token is required"), nil
		}
		ok, err := s.store.ReserveRegistrationToken(r.Context(), tok, s.now().UnixMilli())
		if err != nil {
			return nil, err
		}
		if !ok {
			// Synapse: 401 M_UNAUTHORIZED "Invalid registration token".
			return &matrix.Error{Code: "M_UNAUTHORIZED", Msg: "invalid registration token"}, nil
		}
		se.RegToken = tok
		return nil, nil
	case stagePassword:
		return s.uiaPasswordStage(r, se, spec, auth)
	case stageEmailIdentity:
		return s.uiaEmailStage(r, se, spec, auth)
	case stageOAuth, stageOAuthUnstable:
		// Done once the user approved the reset on the account page
		// (oauth_accounts.go), within its window.
		if spec.user == "" || !s.xsReset.allowed(spec.user, s.now()) {
			return &matrix.Error{Code: "M_UNAUTHORIZED", Msg: "approve the reset on your account page first"}, nil
		}
		return nil, nil
	}
	return matrix.Forbidden("unsupported stage %s", stage), nil
}

// uiaPasswordStage checks m.login.password: the identified user's password.
// A caller who is signed in must prove their own account: proving another
// one is refused outright with 403, as Synapse does.
func (s *Server) uiaPasswordStage(r *http.Request, se *uiaSession, spec uiaSpec, auth map[string]json.RawMessage) (*matrix.Error, error) {
	var req passwordAuth
	if err := unmarshalFields(auth, &req); err != nil {
		return nil, err
	}
	userID, ferr, err := s.credentialUser(r, &req)
	if err != nil {
		return nil, err
	}
	if ferr != nil {
		return ferr, nil
	}
	if userID == "" {
		userID = spec.user
	}
	if userID == "" {
		return matrix.MissingParam("auth.identifier is required"), nil
	}
	if err := s.limits.loginFailed.check(userID); err != nil {
		return nil, err
	}
	u, err := s.store.UserByID(r.Context(), userID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if u == nil || u.Deactivated || !secret.CheckPassword(u.PasswordHash, req.Password) {
		s.limits.loginFailed.charge(userID)
		return matrix.Forbidden("Invalid password"), nil
	}
	if spec.user != "" && userID != spec.user {
		return nil, matrix.Forbidden("the password given is not the signed-in user's")
	}
	if se.UserID != "" && se.UserID != userID {
		return nil, matrix.Forbidden("Requested operation has changed during the UI authentication session.")
	}
	se.UserID = userID
	return nil, nil
}

// uiaEmailStage checks m.login.email.identity: threepid_creds name a
// session of the endpoint's purpose whose emailed link was followed. For a
// password reset the address picks the account; for a registration it must
// still be free.
func (s *Server) uiaEmailStage(r *http.Request, se *uiaSession, spec uiaSpec, auth map[string]json.RawMessage) (*matrix.Error, error) {
	if spec.emailPurpose == "" || !s.cfg.EmailConfigured() {
		return matrix.Forbidden("unsupported stage %s", stageEmailIdentity), nil
	}
	raw, ok := auth["threepid_creds"]
	if !ok {
		raw, ok = auth["threepidCreds"] // r0's name
	}
	if !ok {
		return matrix.MissingParam("auth.threepid_creds is required"), nil
	}
	var creds map[string]json.RawMessage
	if err := json.Unmarshal(raw, &creds); err != nil || creds == nil {
		return nil, matrix.BadJSON("auth.threepid_creds must be an object")
	}
	sid, clientSecret, err := threePIDCreds(creds, "auth.threepid_creds.")
	if err != nil {
		return nil, err
	}
	vs, fail, err := s.validatedSession(r.Context(), spec.emailPurpose, sid, clientSecret)
	if err != nil || fail != nil {
		return fail, err
	}
	owner, err := s.store.ThreePIDUser(r.Context(), vs.Medium, vs.Address)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	switch spec.emailPurpose {
	case purposePassword:
		if owner == "" {
			return &matrix.Error{Code: "M_THREEPID_NOT_FOUND", Msg: "no account has that email address"}, nil
		}
		if (spec.user != "" && owner != spec.user) || (se.UserID != "" && se.UserID != owner) {
			return nil, matrix.Forbidden("that email address is not on this account")
		}
		se.UserID = owner
	case purposeRegister:
		if owner != "" {
			return nil, &matrix.Error{Code: "M_THREEPID_IN_USE", Msg: "that email address is already on an account"}
		}
	}
	se.ThreePIDs = append(se.ThreePIDs, uiaThreePID{Medium: vs.Medium, Address: vs.Address, ValidatedAt: vs.ValidatedAt, SID: vs.ID})
	return nil, nil
}

// spendThreePIDSessions deletes the validation sessions a finished
// operation used, so none proves anything twice.
func (s *Server) spendThreePIDSessions(r *http.Request, se *uiaSession) error {
	for _, t := range se.ThreePIDs {
		if _, err := s.store.DeleteThreePIDSession(r.Context(), t.SID); err != nil {
			return err
		}
	}
	return nil
}
