package server

import (
	"net/http"

	"hearth/server/matrix"
)

// Endpoints Element calls on start-up or in its settings, for features
// Hearth has nothing to offer yet. Each answers the spec's empty shape, so
// the client shows "none" instead of an error.

// GET /_matrix/client/v3/thirdparty/protocols
//
// Third-party networks come from application services (bridges), and none
// are registered.
func (s *Server) getThirdPartyProtocols(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]any{})
}

// GET /_matrix/client/v3/thirdparty/protocol/{protocol}
func (s *Server) getThirdPartyProtocol(w http.ResponseWriter, r *http.Request) error {
	protocol, err := pathParam(r, "protocol")
	if err != nil {
		return err
	}
	return matrix.NotFound("unknown protocol %q: no bridge provides it", protocol)
}

// GET /_matrix/client/v3/thirdparty/location[/{protocol}]
// GET /_matrix/client/v3/thirdparty/user[/{protocol}]
//
// With no bridge to ask, no portal room or user is found: an empty list, as
// Synapse answers without application services.
func (s *Server) getThirdPartyLookup(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, []any{})
}

// GET /_matrix/client/v3/voip/turnServer
//
// No TURN server is configured; an empty object is what Synapse answers
// then, and clients fall back to direct connections.
func (s *Server) getTurnServer(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]any{})
}
