package server

import (
	"errors"
	"net/http"

	"hearth/server/matrix"
	"hearth/server/storage"
)

// GET /_matrix/federation/v1/version (unauthenticated, as the spec has it)
func (s *Server) getFederationVersion(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]any{"server": map[string]string{"name": "Hearth", "version": Version}})
}

// GET /_matrix/federation/v1/query/profile
//
// Another server asks for a local user's profile: both fields, or the one
// named by field, as the client API answers it. Unknown users are 404
// M_NOT_FOUND.
func (s *Server) getFederationProfile(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	userID := q.Get("user_id")
	if userID == "" {
		return matrix.MissingParam("user_id is required")
	}
	if _, server, ok := matrix.SplitUserID(userID); !ok {
		return matrix.InvalidParam("user_id is not a user ID")
	} else if server != s.cfg.ServerName {
		return matrix.InvalidParam("user %s is not hosted on this server", userID)
	}
	field := q.Get("field")
	if field != "" && field != "displayname" && field != "avatar_url" {
		return matrix.InvalidParam("field must be displayname or avatar_url")
	}
	u, err := s.store.UserByID(r.Context(), userID)
	if errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("user %s not found", userID)
	}
	if err != nil {
		return err
	}
	out := map[string]string{}
	if field != "avatar_url" && u.DisplayName != "" {
		out["displayname"] = u.DisplayName
	}
	if field != "displayname" && u.AvatarURL != "" {
		out["avatar_url"] = u.AvatarURL
	}
	return writeJSON(w, http.StatusOK, out)
}
