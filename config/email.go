package config

import (
	"fmt"
	"net/mail"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Email is Synapse's email section: how the server sends mail through an
// SMTP server, which it does to validate the email addresses users add,
// register with or reset their password by. As in Synapse, the section's
// presence is what turns email validation on (Configured); without it the
// 3PID endpoints answer the spec's errors.
type Email struct {
	// SMTPHost is the outgoing mail server (default localhost).
	SMTPHost string `yaml:"smtp_host"`
	// SMTPPort defaults to 465 with force_tls, else 25.
	SMTPPort int    `yaml:"smtp_port"`
	SMTPUser string `yaml:"smtp_user"`
	SMTPPass string `yaml:"smtp_pass"`
	// ForceTLS speaks TLS from the first byte (implicit TLS, port 465)
	// instead of plain SMTP upgraded by STARTTLS.
	ForceTLS bool `yaml:"force_tls"`
	// RequireTransportSecurity refuses to send unless the server offers
	// STARTTLS; without it STARTTLS is used when offered.
	RequireTransportSecurity bool `yaml:"require_transport_security"`
	// EnableTLS nil means true; false never uses TLS (nor authenticates
	// over it).
	EnableTLS *bool `yaml:"enable_tls"`
	// TLSName is the name the server's certificate must hold (default
	// smtp_host).
	TLSName string `yaml:"tlsname"`
	// SMTPCAFile is a PEM bundle of CAs trusted for the SMTP server's
	// certificate instead of the system's (Hearth extension, for a mail
	// server with a private CA).
	SMTPCAFile string `yaml:"smtp_ca_file"`
	// NotifFrom is the From address, required; %(app)s stands for
	// app_name.
	NotifFrom string `yaml:"notif_from"`
	// AppName fills %(app)s (default "Matrix").
	AppName string `yaml:"app_name"`
	// ValidationTokenLifetime is how long an emailed token stays valid
	// (default 1h).
	ValidationTokenLifetime Duration      `yaml:"validation_token_lifetime"`
	Subjects                EmailSubjects `yaml:"subjects"`
}

// EmailSubjects are the subjects of the account emails; %(server_name)s
// and %(app)s are replaced. (Synapse's notification subjects are not
// read, and are reported as unknown keys: Hearth sends no notification
// emails.)
type EmailSubjects struct {
	PasswordReset   string `yaml:"password_reset"`
	EmailValidation string `yaml:"email_validation"`
}

// AllowedLocal3PID is one entry of allowed_local_3pids: addresses of the
// medium may be put on accounts only when they match pattern.
type AllowedLocal3PID struct {
	Medium  string `yaml:"medium"`
	Pattern string `yaml:"pattern"`
}

// TLS reports whether enable_tls is on.
func (e *Email) TLS() bool { return e.EnableTLS == nil || *e.EnableTLS }

// EmailConfigured reports whether the server validates email addresses.
func (c *Config) EmailConfigured() bool { return c.Email != nil }

// ThreePIDChangesEnabled is enable_3pid_changes with its default (true).
func (c *Config) ThreePIDChangesEnabled() bool {
	return c.Enable3PIDChanges == nil || *c.Enable3PIDChanges
}

// RegistrationRequiresEmail reports whether registrations_require_3pid
// lists email.
func (c *Config) RegistrationRequiresEmail() bool {
	return slices.Contains(c.RegistrationsRequire3PID, "email")
}

// Allows3PID reports whether allowed_local_3pids lets the address be put
// on an account (unset: everything is allowed).
func (c *Config) Allows3PID(medium, address string) bool {
	if c.AllowedLocal3PIDs == nil {
		return true
	}
	for _, a := range c.AllowedLocal3PIDs {
		if a.Medium == medium {
			if re, err := regexp.Compile(a.Pattern); err == nil && re.MatchString(address) {
				return true
			}
		}
	}
	return false
}

func (c *Config) emailDefaults() {
	if c.RC3PIDValidation == (RateLimit{}) {
		c.RC3PIDValidation = RateLimit{PerSecond: 0.003, BurstCount: 5}
	}
	e := c.Email
	if e == nil {
		return
	}
	if e.SMTPHost == "" {
		e.SMTPHost = "localhost"
	}
	if e.SMTPPort == 0 {
		e.SMTPPort = 25
		if e.ForceTLS {
			e.SMTPPort = 465
		}
	}
	if e.TLSName == "" {
		e.TLSName = e.SMTPHost
	}
	if e.AppName == "" {
		e.AppName = "Matrix"
	}
	if e.ValidationTokenLifetime == 0 {
		e.ValidationTokenLifetime = Duration(time.Hour)
	}
	if e.Subjects.PasswordReset == "" {
		e.Subjects.PasswordReset = "[%(server_name)s] Password reset"
	}
	if e.Subjects.EmailValidation == "" {
		e.Subjects.EmailValidation = "[%(server_name)s] Validate your email"
	}
}

func (c *Config) validateEmail(bad func(key, format string, args ...any)) {
	for i, m := range c.RegistrationsRequire3PID {
		key := fmt.Sprintf("registrations_require_3pid[%d]", i)
		switch {
		case m == "msisdn":
			bad(key, "msisdn: this server cannot send text messages, so it cannot require phone numbers (only email)")
		case m != "email":
			bad(key, "%q is not a 3PID medium (email)", m)
		case !c.EmailConfigured():
			bad(key, "email needs the email section (smtp_host, notif_from, ...), which sends the validation emails")
		}
	}
	for i, a := range c.AllowedLocal3PIDs {
		key := fmt.Sprintf("allowed_local_3pids[%d]", i)
		if a.Medium != "email" && a.Medium != "msisdn" {
			bad(key+".medium", "%q is not email or msisdn", a.Medium)
		}
		if _, err := regexp.Compile(a.Pattern); err != nil {
			bad(key+".pattern", "%q is not a regular expression: %v", a.Pattern, err)
		}
	}
	if c.RC3PIDValidation.PerSecond < 0 || c.RC3PIDValidation.BurstCount < 0 {
		bad("rc_3pid_validation", "per_second and burst_count must not be negative")
	}
	e := c.Email
	if e == nil {
		return
	}
	if e.NotifFrom == "" {
		bad("email.notif_from", "is required when the email section is present (the From address, e.g. \"%%(app)s <noreply@example.org>\")")
	} else if _, err := mail.ParseAddress(strings.ReplaceAll(e.NotifFrom, "%(app)s", e.AppName)); err != nil {
		bad("email.notif_from", "%q is not an email address: %v", e.NotifFrom, err)
	}
	if e.SMTPPort < 1 || e.SMTPPort > 65535 {
		bad("email.smtp_port", "%d is not a TCP port (1-65535)", e.SMTPPort)
	}
	if strings.ContainsAny(e.SMTPHost, "/ ") {
		bad("email.smtp_host", "%q is not a host name", e.SMTPHost)
	}
	if e.ForceTLS && !e.TLS() {
		bad("email.force_tls", "requires email.enable_tls to be true")
	}
	if e.RequireTransportSecurity && !e.TLS() {
		bad("email.require_transport_security", "requires email.enable_tls to be true")
	}
	if (e.SMTPUser == "") != (e.SMTPPass == "") {
		bad("email.smtp_user", "smtp_user and smtp_pass go together: set both or neither")
	}
	if e.ValidationTokenLifetime < 0 {
		bad("email.validation_token_lifetime", "must not be negative")
	}
	if c.PublicBaseURL == "" {
		bad("public_baseurl", "is required with the email section: the validation emails link to it")
	}
}
