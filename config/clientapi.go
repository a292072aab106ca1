package config

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// WellKnownSupport is what /.well-known/matrix/support answers (spec:
// "Server support discovery", MSC1929): whom to contact about the server
// and where its help page is. Synapse has no setting for it and leaves it
// to the web server in front (element-hq/synapse#18319); Hearth serves it
// from this key, written in the answer's own shape so an existing file can
// be pasted in. Unset, the endpoint answers 404 M_NOT_FOUND.
type WellKnownSupport struct {
	Contacts    []SupportContact `yaml:"contacts"`
	SupportPage string           `yaml:"support_page"`
}

// SupportContact is one way to reach the server's administrators: a
// Matrix ID, an email address or both, and the role the contact has
// (m.role.admin, m.role.security or a namespaced role of your own).
type SupportContact struct {
	MatrixID     string `yaml:"matrix_id"`
	EmailAddress string `yaml:"email_address"`
	Role         string `yaml:"role"`
}

// Configured reports whether there is anything to serve.
func (s WellKnownSupport) Configured() bool { return len(s.Contacts) > 0 || s.SupportPage != "" }

// LoginViaExistingSession is Synapse's login_via_existing_session: whether
// a signed-in client may ask for a one-time m.login.token to sign in
// another device (POST /_matrix/client/v1/login/get_token, MSC3882). Off by
// default as in Synapse: whoever holds an access token could otherwise
// spawn new sessions, so the request also needs the password again unless
// require_ui_auth is false.
type LoginViaExistingSession struct {
	Enabled bool `yaml:"enabled"`
	// RequireUIAuth nil means true.
	RequireUIAuth *bool `yaml:"require_ui_auth"`
	// TokenTimeout is how long an issued token stays valid (default 5m).
	TokenTimeout Duration `yaml:"token_timeout"`
}

// UIAuthRequired reports whether issuing a token needs user-interactive auth.
func (l LoginViaExistingSession) UIAuthRequired() bool {
	return l.RequireUIAuth == nil || *l.RequireUIAuth
}

// namespacedRe is the Common Namespaced Identifier Grammar (spec
// appendices), which contact roles follow.
var namespacedRe = regexp.MustCompile(`^[a-z][a-z0-9._-]{0,254}$`)

func (c *Config) clientAPIDefaults() {
	if c.LoginViaExistingSession.TokenTimeout == 0 {
		c.LoginViaExistingSession.TokenTimeout = Duration(5 * time.Minute)
	}
}

func (c *Config) validateClientAPI(bad func(key, format string, args ...any)) {
	for i, ct := range c.WellKnownSupport.Contacts {
		key := fmt.Sprintf("well_known_support.contacts[%d]", i)
		if ct.MatrixID == "" && ct.EmailAddress == "" {
			bad(key, "needs a matrix_id or an email_address (or both)")
		}
		if ct.MatrixID != "" && (!strings.HasPrefix(ct.MatrixID, "@") || !strings.Contains(ct.MatrixID, ":")) {
			bad(key+".matrix_id", "%q is not a Matrix user ID (@name:server)", ct.MatrixID)
		}
		if ct.EmailAddress != "" && !strings.Contains(ct.EmailAddress, "@") {
			bad(key+".email_address", "%q is not an email address", ct.EmailAddress)
		}
		if !namespacedRe.MatchString(ct.Role) {
			bad(key+".role", "%q is not a role (m.role.admin, m.role.security, or namespaced like org.example.role)", ct.Role)
		}
	}
	if p := c.WellKnownSupport.SupportPage; p != "" && !strings.HasPrefix(p, "https://") && !strings.HasPrefix(p, "http://") {
		bad("well_known_support.support_page", "%q must start with https:// or http://", p)
	}
	if c.LoginViaExistingSession.TokenTimeout < 0 {
		bad("login_via_existing_session.token_timeout", "must not be negative")
	}
}
