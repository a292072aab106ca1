package server

import (
	"net/http"
	"strings"

	"hearth/server/matrix"
	"hearth/server/rooms"
)

// specVersions are the Client-Server API versions advertised in /versions.
// A version is listed only once the features it added are implemented.
var specVersions = []string{
	"r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1",
	"v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6",
	// v1.7 asynchronous uploads; v1.8 room version 11; v1.10 recursive
	// relations; v1.11 authenticated media and unsigned.membership. Clients
	// use authenticated media only when v1.11 is listed, and new uploads
	// are served only through it by default.
	"v1.7", "v1.8", "v1.9", "v1.10", "v1.11",
}

// GET /_matrix/client/versions
func (s *Server) getVersions(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]any{
		"versions": specVersions,
		"unstable_features": map[string]bool{
			"im.nheko.summary": true,
			// Mutual rooms on both paths; .stable tells clients the v1
			// path is served although v1.19 is not listed (as Synapse).
			"uk.half-shot.msc2666.query_mutual_rooms":        true,
			"uk.half-shot.msc2666.query_mutual_rooms.stable": true,
			// Delayed events, when max_event_delay_duration is set.
			"org.matrix.msc4140": s.cfg.DelayedEventsEnabled(),
			// QR-code login's rendezvous (MSC4108), with the OAuth 2.0 API
			// whose device grant it carries; Element X offers "Sign in
			// with QR code" when it is listed.
			"org.matrix.msc4108": s.oauth != nil,
			// Simplified sliding sync (MSC4186), which Element X requires.
			"org.matrix.simplified_msc3575": true,
			// Thread subscriptions, when experimental_features.msc4306_enabled.
			"org.matrix.msc4306": s.cfg.ExperimentalFeatures.MSC4306Enabled,
		},
	})
}

// GET /.well-known/matrix/client
//
// Served when public_baseurl is set, so clients can discover the server from
// the bare server name; extra_well_known_client_content is merged in.
func (s *Server) getWellKnownClient(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.PublicBaseURL == "" {
		return writeJSON(w, http.StatusNotFound, map[string]any{"errcode": "M_NOT_FOUND", "error": "no .well-known client configuration"})
	}
	body := map[string]any{}
	for k, v := range s.cfg.ExtraWellKnownClientContent {
		body[k] = v
	}
	body["m.homeserver"] = map[string]any{"base_url": strings.TrimSuffix(s.cfg.PublicBaseURL, "/")}
	return writeJSON(w, http.StatusOK, body)
}

// GET /.well-known/matrix/server
//
// With serve_server_wellknown (Synapse's key), delegation of federation to
// public_baseurl's host on its port (443 by default), for servers whose
// federation goes through the clients' HTTPS port (spec: "Resolving server
// names", step 3). Cache-Control lets other servers keep the answer for a
// day, as the spec suggests, rather than asking on every request.
func (s *Server) getWellKnownServer(w http.ResponseWriter, r *http.Request) error {
	if !s.cfg.ServeServerWellKnown {
		return matrix.NotFound("this server does not delegate federation with .well-known (serve_server_wellknown is off)")
	}
	w.Header().Set("Cache-Control", "public, max-age=86400")
	return writeJSON(w, http.StatusOK, map[string]string{"m.server": s.cfg.WellKnownServer()})
}

// GET /.well-known/matrix/support
//
// Whom to contact about this server (spec: "Server support discovery"),
// from well_known_support; 404 when nothing is configured.
func (s *Server) getWellKnownSupport(w http.ResponseWriter, r *http.Request) error {
	sup := s.cfg.WellKnownSupport
	if !sup.Configured() {
		return matrix.NotFound("no support information is configured")
	}
	body := map[string]any{}
	if len(sup.Contacts) > 0 {
		contacts := make([]map[string]string, 0, len(sup.Contacts))
		for _, c := range sup.Contacts {
			ct := map[string]string{"role": c.Role}
			if c.MatrixID != "" {
				ct["matrix_id"] = c.MatrixID
			}
			if c.EmailAddress != "" {
				ct["email_address"] = c.EmailAddress
			}
			contacts = append(contacts, ct)
		}
		body["contacts"] = contacts
	}
	if sup.SupportPage != "" {
		body["support_page"] = sup.SupportPage
	}
	return writeJSON(w, http.StatusOK, body)
}

// GET /_matrix/client/v3/capabilities
//
// Some capabilities depend on the caller: a suspended account cannot change
// its profile, and only server admins may moderate accounts
// (m.account_moderation is left out for everyone else, as the spec asks).
func (s *Server) getCapabilities(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	caps := map[string]any{
		"m.change_password": map[string]bool{"enabled": s.cfg.PasswordLoginEnabled()},
		"m.set_displayname": map[string]bool{"enabled": !me.Suspended},
		"m.set_avatar_url":  map[string]bool{"enabled": !me.Suspended},
		// Custom fields (spec v1.16); displayname and avatar_url follow
		// their own capabilities.
		"m.profile_fields":  map[string]bool{"enabled": !me.Suspended},
		"m.3pid_changes":    map[string]bool{"enabled": s.threePIDChangesAllowed()},
		"m.get_login_token": map[string]bool{"enabled": s.cfg.LoginViaExistingSession.Enabled && !me.IsGuest},
		"m.room_versions":   rooms.Capability(s.cfg.DefaultRoomVersion),
	}
	if s.cfg.DelayedEventsEnabled() {
		// What Synapse advertises for MSC4140.
		caps["org.matrix.msc4140.delayed_events"] = map[string]int64{
			"max_delay_ms": s.cfg.MaxEventDelayDuration.Std().Milliseconds(), "max_scheduled": int64(s.cfg.MaxDelayedEventsPerUser())}
	}
	if me.IsAdmin {
		caps["m.account_moderation"] = map[string]bool{"lock": true, "suspend": true}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"capabilities": caps})
}
