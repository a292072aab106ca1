package server

import (
	"net/http"
)

// Placeholders: each helper replaces its own handlers in its own file and
// deletes them from here. This file must be gone before issue 2 closes.

func (s *Server) getLogin(w http.ResponseWriter, r *http.Request) error    { return unrecognized(w, r) }
func (s *Server) postLogin(w http.ResponseWriter, r *http.Request) error   { return unrecognized(w, r) }
func (s *Server) postRefresh(w http.ResponseWriter, r *http.Request) error { return unrecognized(w, r) }
func (s *Server) postRegister(w http.ResponseWriter, r *http.Request) error {
	return unrecognized(w, r)
}
func (s *Server) getRegisterAvailable(w http.ResponseWriter, r *http.Request) error {
	return unrecognized(w, r)
}
func (s *Server) postLogout(w http.ResponseWriter, r *http.Request) error { return unrecognized(w, r) }
func (s *Server) postLogoutAll(w http.ResponseWriter, r *http.Request) error {
	return unrecognized(w, r)
}
func (s *Server) getWhoami(w http.ResponseWriter, r *http.Request) error { return unrecognized(w, r) }
func (s *Server) postDeactivate(w http.ResponseWriter, r *http.Request) error {
	return unrecognized(w, r)
}
func (s *Server) postPassword(w http.ResponseWriter, r *http.Request) error {
	return unrecognized(w, r)
}
func (s *Server) getDevices(w http.ResponseWriter, r *http.Request) error { return unrecognized(w, r) }
func (s *Server) getDevice(w http.ResponseWriter, r *http.Request) error  { return unrecognized(w, r) }
func (s *Server) putDevice(w http.ResponseWriter, r *http.Request) error  { return unrecognized(w, r) }
func (s *Server) deleteDevice(w http.ResponseWriter, r *http.Request) error {
	return unrecognized(w, r)
}
func (s *Server) postDeleteDevices(w http.ResponseWriter, r *http.Request) error {
	return unrecognized(w, r)
}
func (s *Server) getRegistrationTokenValidity(w http.ResponseWriter, r *http.Request) error {
	return unrecognized(w, r)
}
