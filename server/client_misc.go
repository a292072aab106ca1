package server

import "net/http"

// Endpoints Element calls on start-up or in its settings, for features
// Hearth has nothing to offer yet. Each answers the spec's empty shape, so
// the client shows "none" instead of an error.

// GET /_matrix/client/v3/account/3pid
//
// No third-party identifiers (email, phone) can be bound yet.
func (s *Server) getThreePIDs(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]any{"threepids": []any{}})
}

// GET /_matrix/client/v3/thirdparty/protocols
//
// No application services (bridges) are registered.
func (s *Server) getThirdPartyProtocols(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]any{})
}

// GET /_matrix/client/v3/voip/turnServer
//
// No TURN server is configured; an empty object is what Synapse answers
// then, and clients fall back to direct connections.
func (s *Server) getTurnServer(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]any{})
}
