package server

import (
	"net/http"

	"hearth/server/matrix"
)

// GET /_matrix/federation/v1/version (unauthenticated, as the spec has it)
func (s *Server) getFederationVersion(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]any{"server": map[string]string{"name": "Hearth", "version": Version}})
}

// GET /_matrix/federation/v1/query/profile
//
// Another server asks for a local user's profile: every field (custom ones
// included, spec v1.16), or the one named by field. Unknown users are 404
// M_NOT_FOUND; so is a custom field the user has not set, as in Synapse,
// while an unset displayname or avatar_url is left out of a 200.
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
	if field != "" && field != "displayname" && field != "avatar_url" && (len(field) > maxProfileKeyLen || !profileKeyRe.MatchString(field)) {
		return matrix.InvalidParam("field is not a profile field name")
	}
	p, err := s.profileOf(r.Context(), userID, field)
	if err != nil {
		return err
	}
	if _, ok := p[field]; !ok && field != "" && field != "displayname" && field != "avatar_url" {
		return matrix.NotFound("the user has no profile field %s", field)
	}
	return writeJSON(w, http.StatusOK, p)
}
