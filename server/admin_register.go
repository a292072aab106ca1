package server

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"hearth/server/matrix"
	"hearth/server/secret"
	"hearth/server/storage"
)

// Shared-secret registration is Synapse's admin API for creating accounts
// from the command line (its register_new_matrix_user script, and Hearth's
// `hearth register-user`). The protocol, as Synapse documents it
// (docs/admin_api/register_api.md):
//
//  1. GET /_synapse/admin/v1/register returns a nonce;
//  2. POST the same URL with the nonce, username, password, admin flag and
//     mac = hex(HMAC-SHA1(registration_shared_secret,
//     nonce\x00username\x00password\x00admin|notadmin[\x00user_type])).
//
// Knowing the shared secret is the whole authorisation, so the secret must be
// treated like a root password; the nonce stops a captured request from
// being replayed.

// nonceTTL is how long a nonce stays valid (Synapse: 60 seconds).
const nonceTTL = 60 * time.Second

// maxNonces bounds the nonces outstanding at once: GET is unauthenticated,
// so without a bound it could be used to fill memory.
const maxNonces = 10000

// nonceStore holds the nonces handed out and not yet used. It is in memory:
// a restart only invalidates nonces that were at most a minute old.
type nonceStore struct {
	mu     sync.Mutex
	now    func() time.Time
	issued map[string]time.Time
}

func newNonceStore(now func() time.Time) *nonceStore {
	return &nonceStore{now: now, issued: map[string]time.Time{}}
}

// issue returns a fresh random nonce, or false when too many are outstanding.
func (n *nonceStore) issue() (string, bool) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic("server: crypto/rand failed: " + err.Error())
	}
	nonce := hex.EncodeToString(b)
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.now()
	if len(n.issued) >= maxNonces {
		for k, t := range n.issued {
			if now.Sub(t) >= nonceTTL {
				delete(n.issued, k)
			}
		}
		if len(n.issued) >= maxNonces {
			return "", false
		}
	}
	n.issued[nonce] = now
	return nonce, true
}

// take consumes nonce: it reports whether the nonce was issued, unused, and
// not expired. Either way the nonce cannot be used again.
func (n *nonceStore) take(nonce string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	t, ok := n.issued[nonce]
	if !ok {
		return false
	}
	delete(n.issued, nonce)
	return n.now().Sub(t) < nonceTTL
}

// GET /_synapse/admin/v1/register
func (s *Server) getAdminRegisterNonce(w http.ResponseWriter, r *http.Request) error {
	nonce, ok := s.nonces.issue()
	if !ok {
		return matrix.LimitExceeded(nonceTTL)
	}
	return writeJSON(w, http.StatusOK, map[string]string{"nonce": nonce})
}

// adminRegisterRequest is the POST body of shared-secret registration.
// UserType is a pointer because Synapse's script sends "user_type": null.
type adminRegisterRequest struct {
	Nonce       string  `json:"nonce"`
	Username    string  `json:"username"`
	Password    string  `json:"password"`
	DisplayName string  `json:"displayname"`
	Admin       bool    `json:"admin"`
	UserType    *string `json:"user_type"`
	MAC         string  `json:"mac"`
}

// userTypes are the user_type values Synapse accepts besides none.
var userTypes = map[string]bool{"support": true, "bot": true}

// POST /_synapse/admin/v1/register
func (s *Server) postAdminRegister(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.RegistrationSharedSecret == "" {
		return &matrix.Error{Code: "M_UNKNOWN", Msg: "Shared secret registration is not enabled", Status: http.StatusBadRequest}
	}
	var req adminRegisterRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Nonce == "" {
		return matrix.BadJSON("nonce must be specified")
	}
	// The nonce is spent before anything else is checked, as in Synapse:
	// a request that fails for any reason needs a new one.
	if !s.nonces.take(req.Nonce) {
		return &matrix.Error{Code: "M_UNKNOWN", Msg: "unrecognised nonce", Status: http.StatusBadRequest}
	}
	if req.Username == "" || strings.ContainsRune(req.Username, 0) {
		return matrix.BadJSON("username must be specified")
	}
	if req.Password == "" || strings.ContainsRune(req.Password, 0) || len(req.Password) > 512 {
		return matrix.BadJSON("password must be given, at most 512 bytes")
	}
	userType := ""
	if req.UserType != nil {
		userType = *req.UserType
		if !userTypes[userType] {
			return matrix.InvalidParam("invalid user_type %q", userType)
		}
	}
	if !hmac.Equal([]byte(strings.ToLower(req.MAC)), []byte(sharedSecretMAC(s.cfg.RegistrationSharedSecret,
		req.Nonce, req.Username, req.Password, req.Admin, userType))) {
		return matrix.Forbidden("HMAC incorrect")
	}
	// The MAC covers the name as sent; the account is created lower-cased,
	// as Synapse does (Complement checks this).
	req.Username = strings.ToLower(req.Username)

	if err := matrix.ValidateLocalpart(req.Username, s.cfg.ServerName); err != nil {
		return err
	}
	if strings.HasPrefix(req.Username, "_") {
		// Synapse reserves a leading underscore for application services.
		return matrix.InvalidUsername("user ID may not begin with _")
	}
	userID := matrix.UserID(req.Username, s.cfg.ServerName)
	hash, err := secret.HashPassword(req.Password, s.cfg.BcryptRounds)
	if err != nil {
		return err
	}
	displayName := req.DisplayName
	if displayName == "" {
		// Synapse gives a new account its localpart as display name.
		displayName = req.Username
	}
	err = s.store.CreateUser(r.Context(), &storage.User{UserID: userID, Localpart: req.Username, PasswordHash: hash,
		IsAdmin: req.Admin, UserType: userType, DisplayName: displayName})
	if errors.Is(err, storage.ErrConflict) {
		return matrix.UserInUse("User ID already taken.")
	}
	if err != nil {
		return err
	}
	login := storage.NewLogin{UserID: userID, DeviceID: secret.DeviceID(), AccessToken: secret.Token("syt_"),
		IP: clientIP(r, s.xForwarded(r)), UserAgent: userAgent(r)}
	if err := s.store.CreateLogin(r.Context(), login); err != nil {
		return err
	}
	logFrom(r.Context(), s.log).Info("user registered with the shared secret", "user_id", userID, "admin", req.Admin)
	return writeJSON(w, http.StatusOK, map[string]string{
		"access_token": login.AccessToken,
		"user_id":      userID,
		"home_server":  s.cfg.ServerName,
		"device_id":    login.DeviceID,
	})
}

// sharedSecretMAC is the hex HMAC-SHA1 that proves knowledge of the shared
// secret, over the fields exactly as Synapse joins them.
func sharedSecretMAC(sharedSecret, nonce, username, password string, admin bool, userType string) string {
	m := hmac.New(sha1.New, []byte(sharedSecret))
	m.Write([]byte(nonce))
	m.Write([]byte{0})
	m.Write([]byte(username))
	m.Write([]byte{0})
	m.Write([]byte(password))
	m.Write([]byte{0})
	if admin {
		m.Write([]byte("admin"))
	} else {
		m.Write([]byte("notadmin"))
	}
	if userType != "" {
		m.Write([]byte{0})
		m.Write([]byte(userType))
	}
	return hex.EncodeToString(m.Sum(nil))
}
