package servertest

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"hearth/config"
)

// MailServer is a real SMTP server on loopback (emersion/go-smtp) that
// keeps what it receives, for tests of the email a server sends.
type MailServer struct {
	Host string
	Port int
	// CAFile trusts the server's certificate (TLS modes only).
	CAFile string
	opts   MailOptions
	got    chan Mail
}

// MailOptions choose how the mail server behaves.
type MailOptions struct {
	// STARTTLS offers STARTTLS; ImplicitTLS speaks TLS from the first
	// byte (force_tls).
	STARTTLS    bool
	ImplicitTLS bool
	// User and Pass, when set, are required (AUTH PLAIN) before MAIL.
	User, Pass string
	// RejectRcpt refuses every recipient with 550.
	RejectRcpt bool
}

// Mail is one message received.
type Mail struct {
	From    string
	To      []string
	Data    []byte
	TLS     bool   // the message came over TLS
	User    string // who authenticated, if anyone
	Subject string
	Text    string // the text/plain part, decoded
	HTML    string // the text/html part, decoded
}

// StartMailServer runs a mail server until the test ends.
func StartMailServer(t testing.TB, o MailOptions) *MailServer {
	t.Helper()
	m := &MailServer{opts: o, got: make(chan Mail, 16)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &mailSession{m: m, c: c}, nil
	}))
	srv.Domain = "mail.test"
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	srv.AllowInsecureAuth = false
	if o.STARTTLS || o.ImplicitTLS {
		ca := NewFederation(t) // a CA of the test's own, and a certificate for 127.0.0.1
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{ca.certificate(t)}, MinVersion: tls.VersionTLS12}
		m.CAFile = ca.CAFile()
		if o.ImplicitTLS {
			ln = tls.NewListener(ln, srv.TLSConfig)
		}
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().(*net.TCPAddr)
	m.Host, m.Port = "127.0.0.1", addr.Port
	return m
}

// Config is the email section that sends through this server.
func (m *MailServer) Config() *config.Email {
	e := &config.Email{SMTPHost: m.Host, SMTPPort: m.Port, SMTPUser: m.opts.User, SMTPPass: m.opts.Pass,
		ForceTLS: m.opts.ImplicitTLS, RequireTransportSecurity: m.opts.STARTTLS, SMTPCAFile: m.CAFile,
		NotifFrom: "%(app)s <noreply@hearth.test>", AppName: "Hearth Test"}
	if !m.opts.STARTTLS && !m.opts.ImplicitTLS {
		off := false
		e.EnableTLS = &off
	}
	return e
}

// Next waits for the next message.
func (m *MailServer) Next(t testing.TB) Mail {
	t.Helper()
	select {
	case msg := <-m.got:
		return msg
	case <-time.After(10 * time.Second):
		t.Fatal("no email arrived")
		return Mail{}
	}
}

// None checks that no message arrived (within a moment).
func (m *MailServer) None(t testing.TB) {
	t.Helper()
	select {
	case msg := <-m.got:
		t.Fatalf("unexpected email to %v: %s", msg.To, msg.Subject)
	case <-time.After(200 * time.Millisecond):
	}
}

type mailSession struct {
	m    *MailServer
	c    *smtp.Conn
	user string
	cur  Mail
}

func (s *mailSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *mailSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if username != s.m.opts.User || password != s.m.opts.Pass || s.m.opts.User == "" {
			return smtp.ErrAuthFailed
		}
		s.user = username
		return nil
	}), nil
}

func (s *mailSession) Reset()        { s.cur = Mail{} }
func (s *mailSession) Logout() error { return nil }

func (s *mailSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.m.opts.User != "" && s.user == "" {
		return smtp.ErrAuthRequired
	}
	s.cur.From = from
	return nil
}

func (s *mailSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.m.opts.RejectRcpt {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such mailbox"}
	}
	s.cur.To = append(s.cur.To, to)
	return nil
}

func (s *mailSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	msg := s.cur
	msg.Data, msg.User = b, s.user
	_, msg.TLS = s.c.TLSConnectionState()
	if err := parseMail(&msg); err != nil {
		return &smtp.SMTPError{Code: 554, Message: "unparseable: " + err.Error()}
	}
	s.m.got <- msg
	return nil
}

// parseMail decodes the subject and the text and HTML parts.
func parseMail(m *Mail) error {
	pm, err := mail.ReadMessage(bytes.NewReader(m.Data))
	if err != nil {
		return err
	}
	dec := new(mime.WordDecoder)
	if m.Subject, err = dec.DecodeHeader(pm.Header.Get("Subject")); err != nil {
		return err
	}
	mt, params, err := mime.ParseMediaType(pm.Header.Get("Content-Type"))
	if err != nil {
		return err
	}
	if !strings.HasPrefix(mt, "multipart/") {
		b, err := io.ReadAll(quotedprintable.NewReader(pm.Body))
		m.Text = string(b)
		return err
	}
	mr := multipart.NewReader(pm.Body, params["boundary"])
	for {
		p, err := mr.NextPart() // decodes quoted-printable itself
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		b, err := io.ReadAll(p)
		if err != nil {
			return err
		}
		switch {
		case strings.HasPrefix(p.Header.Get("Content-Type"), "text/plain"):
			m.Text = string(b)
		case strings.HasPrefix(p.Header.Get("Content-Type"), "text/html"):
			m.HTML = string(b)
		}
	}
}

// Addr is host:port.
func (m *MailServer) Addr() string { return net.JoinHostPort(m.Host, strconv.Itoa(m.Port)) }
