package mailer_test

import (
	"net"
	"strconv"
	"strings"
	"testing"

	"hearth/config"
	"hearth/server/mailer"
	"hearth/server/servertest"
)

func send(t *testing.T, cfg *config.Email) error {
	t.Helper()
	c := &config.Config{Email: cfg}
	c.Defaults()
	m, err := mailer.New(*c.Email, "hearth.test")
	if err != nil {
		return err
	}
	return m.Send(t.Context(), mailer.Message{To: "Ann <ann@example.org>", Subject: "Grüße", Text: "line one\nline two with a long tail " + strings.Repeat("x", 100), HTML: "<p>hi</p>"})
}

// TestSendModes delivers through each of Synapse's connection modes and
// checks what the mail server saw.
func TestSendModes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    servertest.MailOptions
		wantTLS bool
	}{
		{"plain", servertest.MailOptions{}, false},
		{"starttls with auth", servertest.MailOptions{STARTTLS: true, User: "u", Pass: "p"}, true},
		{"implicit tls with auth", servertest.MailOptions{ImplicitTLS: true, User: "u", Pass: "p"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms := servertest.StartMailServer(t, tc.opts)
			if err := send(t, ms.Config()); err != nil {
				t.Fatal(err)
			}
			m := ms.Next(t)
			if m.TLS != tc.wantTLS || m.User != tc.opts.User || m.Subject != "Grüße" || m.To[0] != "ann@example.org" ||
				!strings.Contains(m.Text, "line two with a long tail "+strings.Repeat("x", 100)) || m.HTML != "<p>hi</p>" {
				t.Fatalf("got tls=%v user=%q subject=%q to=%v text=%q html=%q", m.TLS, m.User, m.Subject, m.To, m.Text, m.HTML)
			}
		})
	}
}

// TestSendErrorsNameTheKey: each way a mail server can refuse ends in an
// error naming the config key to look at.
func TestSendErrorsNameTheKey(t *testing.T) {
	t.Run("unreachable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		off := false
		err = send(t, &config.Email{SMTPHost: "127.0.0.1", SMTPPort: port, EnableTLS: &off, NotifFrom: "x@hearth.test"})
		wantErr(t, err, "cannot connect", "email.smtp_host, email.smtp_port", strconv.Itoa(port))
	})
	t.Run("no starttls but required", func(t *testing.T) {
		cfg := servertest.StartMailServer(t, servertest.MailOptions{}).Config()
		cfg.EnableTLS, cfg.RequireTransportSecurity = nil, true
		wantErr(t, send(t, cfg), "email.require_transport_security")
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		cfg := servertest.StartMailServer(t, servertest.MailOptions{STARTTLS: true}).Config()
		cfg.SMTPCAFile = ""
		wantErr(t, send(t, cfg), "STARTTLS", "email.tlsname, email.smtp_ca_file")
	})
	t.Run("wrong name for certificate", func(t *testing.T) {
		cfg := servertest.StartMailServer(t, servertest.MailOptions{ImplicitTLS: true}).Config()
		cfg.TLSName = "mail.example.org"
		wantErr(t, send(t, cfg), "email.force_tls, email.tlsname")
	})
	t.Run("wrong password", func(t *testing.T) {
		cfg := servertest.StartMailServer(t, servertest.MailOptions{STARTTLS: true, User: "u", Pass: "p"}).Config()
		cfg.SMTPPass = "nope"
		wantErr(t, send(t, cfg), "email.smtp_user, email.smtp_pass")
	})
	t.Run("auth over plain text", func(t *testing.T) {
		// go-smtp offers AUTH only after STARTTLS; with TLS off the
		// password would go in the clear, and is not sent.
		cfg := servertest.StartMailServer(t, servertest.MailOptions{STARTTLS: true, User: "u", Pass: "p"}).Config()
		off := false
		cfg.EnableTLS, cfg.RequireTransportSecurity = &off, false
		wantErr(t, send(t, cfg), "offers no authentication", "email.smtp_user")
	})
	t.Run("recipient refused", func(t *testing.T) {
		cfg := servertest.StartMailServer(t, servertest.MailOptions{RejectRcpt: true}).Config()
		wantErr(t, send(t, cfg), "refused the recipient ann@example.org", "550")
	})
	t.Run("unreadable CA file", func(t *testing.T) {
		cfg := servertest.StartMailServer(t, servertest.MailOptions{}).Config()
		cfg.SMTPCAFile = t.TempDir() + "/missing.pem"
		wantErr(t, send(t, cfg), "email.smtp_ca_file")
	})
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("sent, want an error")
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not mention %q", err, p)
		}
	}
}

// TestCheck logs in without sending, and fails as Send would.
func TestCheck(t *testing.T) {
	ms := servertest.StartMailServer(t, servertest.MailOptions{STARTTLS: true, User: "u", Pass: "p"})
	c := &config.Config{Email: ms.Config()}
	c.Defaults()
	m, err := mailer.New(*c.Email, "hearth.test")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Check(t.Context()); err != nil {
		t.Fatal(err)
	}
	ms.None(t)
	bad := *c.Email
	bad.SMTPPass = "nope"
	m, err = mailer.New(bad, "hearth.test")
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, m.Check(t.Context()), "email.smtp_user, email.smtp_pass")
}
