package server

import (
	"net/http"
	"time"
)

// Placeholder replaced by the shared-secret registration work; must be gone before issue 2 closes.

func (s *Server) getAdminRegisterNonce(w http.ResponseWriter, r *http.Request) error {
	return unrecognized(w, r)
}
func (s *Server) postAdminRegister(w http.ResponseWriter, r *http.Request) error {
	return unrecognized(w, r)
}

type nonceStore struct{}

func newNonceStore(now func() time.Time) *nonceStore { return &nonceStore{} }
