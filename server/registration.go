package server

import "sync/atomic"

// RegistrationSettings are who may register: enable_registration and
// registration_requires_token. They live apart from the config so the
// dashboard can change them while requests read them.
type RegistrationSettings struct {
	Enabled       bool
	RequiresToken bool
}

// registrationState holds the live settings; the zero value means "read
// the config".
type registrationState struct {
	p atomic.Pointer[RegistrationSettings]
}

// Registration returns the registration settings in force.
func (s *Server) Registration() RegistrationSettings {
	if r := s.reg.p.Load(); r != nil {
		return *r
	}
	return RegistrationSettings{Enabled: s.cfg.EnableRegistration, RequiresToken: s.cfg.RegistrationRequiresToken}
}

// SetRegistration changes who may register, from the next request on. The
// caller persists the change (the dashboard writes homeserver.yaml).
func (s *Server) SetRegistration(r RegistrationSettings) { s.reg.p.Store(&r) }
