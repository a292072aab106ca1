package server

import (
	"net/http"
)

// GET /_matrix/federation/v1/version (unauthenticated, as the spec has it)
func (s *Server) getFederationVersion(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]any{"server": map[string]string{"name": "Hearth", "version": Version}})
}
