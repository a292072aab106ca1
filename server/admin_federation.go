package server

import (
	"net/http"

	"hearth/server/matrix"
)

// Federation destinations (Synapse's /v1/federation/destinations). Hearth
// does not federate yet, so it has no destinations: the list is empty and
// every destination is unknown, answered in Synapse's shapes so admin
// tools show an empty page rather than an error.

// GET /_synapse/admin/v1/federation/destinations
func (s *Server) getAdminDestinations(w http.ResponseWriter, r *http.Request) error {
	if _, err := queryInt(r, "from", 0); err != nil {
		return err
	}
	if _, err := queryInt(r, "limit", 100); err != nil {
		return err
	}
	switch r.URL.Query().Get("dir") {
	case "", "f", "b":
	default:
		return matrix.InvalidParam("Unknown direction: %s", r.URL.Query().Get("dir"))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"destinations": []any{}, "total": 0})
}

// errUnknownDestination is what every destination lookup answers.
func errUnknownDestination() error { return matrix.NotFound("Unknown destination") }

// GET /_synapse/admin/v1/federation/destinations/{destination}
func (s *Server) getAdminDestination(w http.ResponseWriter, r *http.Request) error {
	return errUnknownDestination()
}

// GET /_synapse/admin/v1/federation/destinations/{destination}/rooms
func (s *Server) getAdminDestinationRooms(w http.ResponseWriter, r *http.Request) error {
	return errUnknownDestination()
}

// POST /_synapse/admin/v1/federation/destinations/{destination}/reset_connection
func (s *Server) postAdminResetConnection(w http.ResponseWriter, r *http.Request) error {
	return errUnknownDestination()
}
