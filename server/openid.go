package server

import (
	"errors"
	"net/http"
	"time"

	"hearth/server/matrix"
	"hearth/server/secret"
	"hearth/server/storage"
)

// OpenID (spec: "OpenID"): a user asks for a token to prove who they are
// to a third party (a widget, a call's focus), which checks it with this
// server's federation API. Tokens last an hour, as Synapse's do.
const openIDTokenLifetime = time.Hour

// POST /_matrix/client/v3/user/{userId}/openid/request_token
func (s *Server) postOpenIDRequestToken(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	userID, err := pathParam(r, "userId")
	if err != nil {
		return err
	}
	if userID != me.UserID {
		return matrix.Forbidden("cannot request an OpenID token for another user")
	}
	var body map[string]any
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	tok := secret.Token("")
	now := s.now()
	if err := s.store.AddOpenIDToken(r.Context(), tok, me.UserID, now.Add(openIDTokenLifetime).UnixMilli(), now.UnixMilli()); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "token_type": "Bearer",
		"matrix_server_name": s.cfg.ServerName, "expires_in": int(openIDTokenLifetime.Seconds())})
}

// GET /_matrix/federation/v1/openid/userinfo
//
// Asked by the third party the token was given to, without X-Matrix
// authentication (spec).
func (s *Server) getOpenIDUserinfo(w http.ResponseWriter, r *http.Request) error {
	tok := r.URL.Query().Get("access_token")
	if tok == "" {
		if t, ok := accessToken(r); ok {
			tok = t
		}
	}
	if tok == "" {
		return matrix.MissingToken("access_token is required")
	}
	userID, err := s.store.OpenIDTokenUser(r.Context(), tok, s.now().UnixMilli())
	if errors.Is(err, storage.ErrNotFound) {
		return matrix.UnknownToken("unknown or expired OpenID token", false)
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"sub": userID})
}
