package config

import (
	"strings"
	"testing"
	"time"
)

func TestClientAPIConfig(t *testing.T) {
	raw := `
server_name: example.org
signing_key_path: k
database: {args: {database: db}}
login_via_existing_session:
  enabled: true
  require_ui_auth: false
well_known_support:
  contacts:
    - matrix_id: "@admin:example.org"
      role: m.role.admin
    - email_address: security@example.org
      role: m.role.security
  support_page: https://example.org/help
`
	c, warnings, err := Parse([]byte(raw), "homeserver.yaml")
	if err != nil || len(warnings) != 0 {
		t.Fatalf("parse: %v %v", err, warnings)
	}
	l := c.LoginViaExistingSession
	if !l.Enabled || l.UIAuthRequired() || l.TokenTimeout.Std() != 5*time.Minute {
		t.Fatalf("login_via_existing_session: %+v", l)
	}
	if !c.WellKnownSupport.Configured() || len(c.WellKnownSupport.Contacts) != 2 || c.WellKnownSupport.Contacts[1].EmailAddress != "security@example.org" {
		t.Fatalf("well_known_support: %+v", c.WellKnownSupport)
	}

	// Defaults: off, UIA required, nothing to serve.
	d := &Config{}
	d.Defaults()
	if d.LoginViaExistingSession.Enabled || !d.LoginViaExistingSession.UIAuthRequired() || d.WellKnownSupport.Configured() {
		t.Fatalf("defaults: %+v %+v", d.LoginViaExistingSession, d.WellKnownSupport)
	}

	c.WellKnownSupport = WellKnownSupport{Contacts: []SupportContact{{Role: "m.role.admin"}, {MatrixID: "admin", Role: "Admin!"},
		{EmailAddress: "nobody", Role: "m.role.admin"}}, SupportPage: "example.org/help"}
	c.LoginViaExistingSession.TokenTimeout = -1
	err = c.Validate()
	for _, want := range []string{"well_known_support.contacts[0]: needs", "well_known_support.contacts[1].matrix_id",
		"well_known_support.contacts[1].role", "well_known_support.contacts[2].email_address", "well_known_support.support_page",
		"login_via_existing_session.token_timeout"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want a message naming %s", err, want)
		}
	}
}
