// Package mailer sends email through the SMTP server of the config's email
// section, with Synapse's connection rules: plain SMTP upgraded by
// STARTTLS when the server offers it (required with
// require_transport_security), or TLS from the first byte with force_tls;
// no TLS at all with enable_tls: false.
//
// Every failure names the config key an operator would look at, since a
// mail server that refuses is almost always a configuration problem.
package mailer

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"time"

	"hearth/config"
)

// Message is one email.
type Message struct {
	To      string
	Subject string
	Text    string
	HTML    string // optional: sent as the alternative to Text
}

// Mailer sends through one SMTP server.
type Mailer struct {
	cfg   config.Email
	hello string // our name in EHLO
	roots *x509.CertPool
	from  *mail.Address
	// Timeout bounds a whole send (dial to QUIT).
	Timeout time.Duration
}

// New builds a Mailer from the email section; hello is the name given in
// EHLO (the server name).
func New(cfg config.Email, hello string) (*Mailer, error) {
	m := &Mailer{cfg: cfg, hello: hello, Timeout: 30 * time.Second}
	if h, _, err := net.SplitHostPort(hello); err == nil {
		m.hello = h
	}
	if cfg.SMTPCAFile != "" {
		pem, err := os.ReadFile(cfg.SMTPCAFile)
		if err != nil {
			return nil, fmt.Errorf("email.smtp_ca_file: %w", err)
		}
		m.roots = x509.NewCertPool()
		if !m.roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("email.smtp_ca_file: %s holds no PEM certificate", cfg.SMTPCAFile)
		}
	}
	from, err := mail.ParseAddress(m.expand(cfg.NotifFrom, ""))
	if err != nil {
		return nil, fmt.Errorf("email.notif_from: %w", err)
	}
	m.from = from
	return m, nil
}

// AppName is app_name, which %(app)s stands for.
func (m *Mailer) AppName() string { return m.cfg.AppName }

// expand replaces Synapse's %(app)s and %(server_name)s placeholders.
func (m *Mailer) expand(s, serverName string) string {
	return strings.NewReplacer("%(app)s", m.cfg.AppName, "%(server_name)s", serverName).Replace(s)
}

// Subject fills a configured subject's placeholders.
func (m *Mailer) Subject(tmpl, serverName string) string { return m.expand(tmpl, serverName) }

// Send delivers msg, or says why not.
func (m *Mailer) Send(ctx context.Context, msg Message) error {
	to, err := mail.ParseAddress(msg.To)
	if err != nil {
		return fmt.Errorf("email: recipient %q: %w", msg.To, err)
	}
	body, err := m.compose(msg, to)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, m.Timeout)
	defer cancel()
	c, err := m.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := m.deliver(c, to.Address, body); err != nil {
		return err
	}
	return nil
}

// Check connects, greets, upgrades to TLS and logs in as Send would, then
// quits without sending: the doctor's test of the email section.
func (m *Mailer) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, m.Timeout)
	defer cancel()
	c, err := m.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := m.login(c); err != nil {
		return err
	}
	return c.Quit()
}

// where names the server and the keys that chose it, for error messages.
func (m *Mailer) where() string {
	return fmt.Sprintf("SMTP server %s (email.smtp_host, email.smtp_port)", net.JoinHostPort(m.cfg.SMTPHost, strconv.Itoa(m.cfg.SMTPPort)))
}

func (m *Mailer) tlsConfig() *tls.Config {
	return &tls.Config{ServerName: m.cfg.TLSName, RootCAs: m.roots, MinVersion: tls.VersionTLS12}
}

// dial connects and greets, upgrading to TLS as configured.
func (m *Mailer) dial(ctx context.Context) (*smtp.Client, error) {
	addr := net.JoinHostPort(m.cfg.SMTPHost, strconv.Itoa(m.cfg.SMTPPort))
	d := &net.Dialer{}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("email: cannot connect to %s: %w", m.where(), err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if m.cfg.ForceTLS {
		tc := tls.Client(conn, m.tlsConfig())
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("email: TLS with %s failed (email.force_tls, email.tlsname, email.smtp_ca_file): %w", m.where(), err)
		}
		conn = tc
	}
	c, err := smtp.NewClient(conn, m.cfg.SMTPHost)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("email: %s did not greet as SMTP: %w", m.where(), err)
	}
	if err := c.Hello(m.hello); err != nil {
		c.Close()
		return nil, fmt.Errorf("email: %s refused EHLO: %w", m.where(), err)
	}
	if m.cfg.ForceTLS || !m.cfg.TLS() {
		return c, nil
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		if err := c.StartTLS(m.tlsConfig()); err != nil {
			c.Close()
			return nil, fmt.Errorf("email: STARTTLS with %s failed (email.tlsname, email.smtp_ca_file; email.enable_tls: false turns TLS off): %w", m.where(), err)
		}
	} else if m.cfg.RequireTransportSecurity {
		c.Close()
		return nil, fmt.Errorf("email: %s does not offer STARTTLS, and email.require_transport_security is true", m.where())
	}
	return c, nil
}

// login authenticates when smtp_user is set.
func (m *Mailer) login(c *smtp.Client) error {
	if m.cfg.SMTPUser != "" {
		if ok, _ := c.Extension("AUTH"); !ok {
			return fmt.Errorf("email: %s offers no authentication, but email.smtp_user is set", m.where())
		}
		// PlainAuth refuses to send the password unencrypted except to
		// localhost: over plain text a configured password is a leak.
		if err := c.Auth(smtp.PlainAuth("", m.cfg.SMTPUser, m.cfg.SMTPPass, m.cfg.SMTPHost)); err != nil {
			return fmt.Errorf("email: %s refused the login (email.smtp_user, email.smtp_pass): %w", m.where(), err)
		}
	}
	return nil
}

// deliver authenticates when configured and sends one message.
func (m *Mailer) deliver(c *smtp.Client, to string, body []byte) error {
	if err := m.login(c); err != nil {
		return err
	}
	if err := c.Mail(m.from.Address); err != nil {
		return fmt.Errorf("email: %s refused the sender (email.notif_from): %w", m.where(), err)
	}
	if err := c.Rcpt(to); err != nil {
		return fmt.Errorf("email: %s refused the recipient %s: %w", m.where(), to, err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("email: %s refused DATA: %w", m.where(), err)
	}
	if _, err := w.Write(body); err != nil {
		return fmt.Errorf("email: sending to %s: %w", m.where(), err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("email: %s refused the message: %w", m.where(), err)
	}
	return c.Quit()
}

// compose builds the RFC 5322 message: text, or text and HTML as
// multipart/alternative, each quoted-printable.
func (m *Mailer) compose(msg Message, to *mail.Address) ([]byte, error) {
	var b bytes.Buffer
	id := make([]byte, 12)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	domain := m.from.Address[strings.LastIndexByte(m.from.Address, '@')+1:]
	hdr := func(k, v string) { fmt.Fprintf(&b, "%s: %s\r\n", k, v) }
	hdr("From", m.from.String())
	hdr("To", to.String())
	hdr("Subject", mime.QEncoding.Encode("utf-8", msg.Subject))
	hdr("Date", time.Now().Format(time.RFC1123Z))
	hdr("Message-ID", "<"+hex.EncodeToString(id)+"@"+domain+">")
	hdr("MIME-Version", "1.0")
	hdr("Auto-Submitted", "auto-generated")
	if msg.HTML == "" {
		hdr("Content-Type", `text/plain; charset="utf-8"`)
		hdr("Content-Transfer-Encoding", "quoted-printable")
		b.WriteString("\r\n")
		return b.Bytes(), writeQP(&b, msg.Text)
	}
	mw := multipart.NewWriter(&b)
	hdr("Content-Type", `multipart/alternative; boundary="`+mw.Boundary()+`"`)
	b.WriteString("\r\n")
	for _, part := range []struct{ typ, text string }{{"text/plain", msg.Text}, {"text/html", msg.HTML}} {
		pw, err := mw.CreatePart(textproto.MIMEHeader{
			"Content-Type":              {part.typ + `; charset="utf-8"`},
			"Content-Transfer-Encoding": {"quoted-printable"},
		})
		if err != nil {
			return nil, err
		}
		if err := writeQP(pw, part.text); err != nil {
			return nil, err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func writeQP(w interface{ Write([]byte) (int, error) }, s string) error {
	qp := quotedprintable.NewWriter(w)
	if _, err := qp.Write([]byte(strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n"))); err != nil {
		return err
	}
	return qp.Close()
}
