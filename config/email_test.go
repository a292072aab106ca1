package config

import (
	"strings"
	"testing"
)

// TestEmailValidation: each mistake in the email section, and in the keys
// that depend on it, is reported naming its key.
func TestEmailValidation(t *testing.T) {
	base := func() *Config {
		c := &Config{ServerName: "example.org", SigningKeyPath: "k", PublicBaseURL: "https://matrix.example.org",
			Database: Database{Name: "sqlite3", Args: DatabaseArgs{Database: "x.db"}}}
		return c
	}
	off := false
	for _, tc := range []struct {
		name string
		edit func(c *Config)
		want string
	}{
		{"no notif_from", func(c *Config) { c.Email = &Email{} }, "email.notif_from: is required"},
		{"bad notif_from", func(c *Config) { c.Email = &Email{NotifFrom: "not an address"} }, "email.notif_from: \"not an address\" is not an email address"},
		{"force_tls without tls", func(c *Config) { c.Email = &Email{NotifFrom: "a@b.c", ForceTLS: true, EnableTLS: &off} }, "email.force_tls: requires email.enable_tls"},
		{"require without tls", func(c *Config) { c.Email = &Email{NotifFrom: "a@b.c", RequireTransportSecurity: true, EnableTLS: &off} },
			"email.require_transport_security: requires email.enable_tls"},
		{"user without pass", func(c *Config) { c.Email = &Email{NotifFrom: "a@b.c", SMTPUser: "u"} }, "email.smtp_user: smtp_user and smtp_pass go together"},
		{"bad port", func(c *Config) { c.Email = &Email{NotifFrom: "a@b.c", SMTPPort: 70000} }, "email.smtp_port: 70000 is not a TCP port"},
		{"no public_baseurl", func(c *Config) { c.Email = &Email{NotifFrom: "a@b.c"}; c.PublicBaseURL = "" }, "public_baseurl: is required with the email section"},
		{"require email without section", func(c *Config) { c.RegistrationsRequire3PID = []string{"email"} }, "registrations_require_3pid[0]: email needs the email section"},
		{"require msisdn", func(c *Config) { c.RegistrationsRequire3PID = []string{"msisdn"} }, "registrations_require_3pid[0]: msisdn"},
		{"bad pattern", func(c *Config) { c.AllowedLocal3PIDs = []AllowedLocal3PID{{Medium: "email", Pattern: "("}} }, "allowed_local_3pids[0].pattern"},
		{"bad rate", func(c *Config) { c.RC3PIDValidation = RateLimit{PerSecond: -1} }, "rc_3pid_validation: per_second and burst_count must not be negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.edit(c)
			c.Defaults()
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}

	// Defaults as Synapse's, and a complete section is valid.
	c := base()
	c.Email = &Email{NotifFrom: "%(app)s <noreply@example.org>", ForceTLS: true}
	c.RegistrationsRequire3PID = []string{"email"}
	c.EnableRegistration = true // registrations_require_3pid counts as verification
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	e := c.Email
	if e.SMTPHost != "localhost" || e.SMTPPort != 465 || e.TLSName != "localhost" || e.AppName != "Matrix" ||
		e.ValidationTokenLifetime.Std().Hours() != 1 || !e.TLS() || e.Subjects.EmailValidation != "[%(server_name)s] Validate your email" {
		t.Fatalf("defaults: %+v", e)
	}
	c2 := base()
	c2.Email = &Email{NotifFrom: "a@example.org"}
	c2.Defaults()
	if c2.Email.SMTPPort != 25 || c2.RC3PIDValidation.BurstCount != 5 {
		t.Fatalf("defaults: port %d, rc %+v", c2.Email.SMTPPort, c2.RC3PIDValidation)
	}
}

// TestEmailParse reads a Synapse email section from YAML.
func TestEmailParse(t *testing.T) {
	raw := `
server_name: example.org
public_baseurl: https://matrix.example.org/
signing_key_path: k
database: {name: sqlite3, args: {database: x.db}}
email:
  smtp_host: mail.example.org
  smtp_port: 587
  smtp_user: hearth
  smtp_pass: secret
  require_transport_security: true
  notif_from: "Your %(app)s homeserver <noreply@example.org>"
  app_name: my_matrix
  validation_token_lifetime: 15m
  smtp_ca_file: ca.pem
registrations_require_3pid: [email]
enable_registration: true
`
	c, warnings, err := Parse([]byte(raw), "/etc/hearth/homeserver.yaml")
	if err != nil || len(warnings) != 0 {
		t.Fatalf("parse: %v %v", err, warnings)
	}
	e := c.Email
	if e.SMTPPort != 587 || e.SMTPPass != "secret" || !e.RequireTransportSecurity || e.ValidationTokenLifetime.Std().Minutes() != 15 ||
		e.SMTPCAFile != "/etc/hearth/ca.pem" || !c.RegistrationRequiresEmail() || !c.ThreePIDChangesEnabled() {
		t.Fatalf("parsed: %+v", e)
	}
}
