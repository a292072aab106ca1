package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"hearth/config"
)

// Manager is where the TLS listeners get their certificates: ACME when
// acme.enabled, the files otherwise.
type Manager struct {
	files *Files
	acme  *ACME
}

// New builds the Manager for cfg, or nil when no listener uses TLS.
// cache is the ACME state (the Store's CertCache).
func New(cfg *config.Config, cache autocert.Cache, log *slog.Logger) (*Manager, error) {
	if !cfg.ServesTLS() {
		return nil, nil
	}
	if cfg.ACME.Enabled {
		a, err := NewACME(cfg, cache, log)
		if err != nil {
			return nil, err
		}
		if cfg.TLSCertificatePath != "" {
			log.Warn("acme.enabled: tls_certificate_path is ignored; certificates come from ACME")
		}
		return &Manager{acme: a}, nil
	}
	f, err := LoadFiles(cfg.Resolve(cfg.TLSCertificatePath), cfg.Resolve(cfg.TLSPrivateKeyPath), log)
	if err != nil {
		return nil, err
	}
	return &Manager{files: f}, nil
}

// TLSConfig is the listeners' TLS configuration. With ACME it offers the
// acme-tls/1 protocol, so TLS-ALPN-01 challenges are answered on them.
func (m *Manager) TLSConfig() *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	if m.acme != nil {
		c.GetCertificate = m.acme.GetCertificate
		c.NextProtos = append(c.NextProtos, acme.ALPNProto)
	} else {
		c.GetCertificate = m.files.GetCertificate
	}
	return c
}

// ACME is the ACME manager, nil when certificates come from files.
func (m *Manager) ACME() *ACME { return m.acme }

// Run keeps ACME certificates obtained and renewed until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	if m != nil && m.acme != nil {
		m.acme.Run(ctx)
	}
}

// Status describes one certificate for the dashboard.
type Status struct {
	// Source is "acme" or "file".
	Source string
	// Domain is the name it was requested for (ACME), or the file path.
	Domain    string
	Names     []string
	Issuer    string
	NotBefore time.Time
	NotAfter  time.Time
	// Chain is the number of certificates served (leaf included).
	Chain int
	// Error is the last failure to obtain, renew or reload it.
	Error string
	// Checked is when Run last asked for it (ACME).
	Checked time.Time
}

// Statuses describes every certificate; nil m (no TLS) has none.
func (m *Manager) Statuses(ctx context.Context) []Status {
	if m == nil {
		return nil
	}
	if m.files != nil {
		cert, err := m.files.current()
		s := describe(cert)
		s.Source, s.Domain = "file", m.files.certPath
		if err != nil {
			s.Error = err.Error()
		}
		return []Status{s}
	}
	var out []Status
	for _, d := range m.acme.domains {
		s := Status{Source: "acme", Domain: d}
		// autocert keeps the ECDSA certificate under the name, an RSA one
		// (for old clients) under name+rsa.
		if data, err := m.acme.cache.Get(ctx, d); err == nil {
			s = describe(&tls.Certificate{Certificate: pemCerts(data)})
			s.Source, s.Domain = "acme", d
		} else if !errors.Is(err, autocert.ErrCacheMiss) {
			s.Error = err.Error()
		}
		if at, ok := m.acme.lastAttempt(d); ok {
			s.Checked = at.at
			if at.err != nil {
				s.Error = at.err.Error()
			}
		}
		out = append(out, s)
	}
	return out
}

// describe reads the leaf of cert.
func describe(cert *tls.Certificate) Status {
	var s Status
	if cert == nil || len(cert.Certificate) == 0 {
		return s
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		s.Error = err.Error()
		return s
	}
	s.Names = slices.Clone(leaf.DNSNames)
	for _, ip := range leaf.IPAddresses {
		s.Names = append(s.Names, ip.String())
	}
	s.Issuer = leaf.Issuer.CommonName
	if len(leaf.Issuer.Organization) > 0 {
		s.Issuer = strings.TrimSpace(strings.Join(leaf.Issuer.Organization, ", ") + " " + leaf.Issuer.CommonName)
	}
	s.NotBefore, s.NotAfter, s.Chain = leaf.NotBefore, leaf.NotAfter, len(cert.Certificate)
	return s
}

// pemCerts returns the DER of every CERTIFICATE block (autocert stores
// the private key first, then the chain).
func pemCerts(data []byte) [][]byte {
	var out [][]byte
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		if b.Type == "CERTIFICATE" {
			out = append(out, b.Bytes)
		}
	}
}

// RedirectHandler is the HTTP-01 listener's handler; nil without ACME.
func (m *Manager) RedirectHandler() http.Handler {
	if m == nil || m.acme == nil {
		return nil
	}
	return m.acme.HTTPHandler()
}
