package certs

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"hearth/config"
)

// ACME gets and renews certificates with autocert. Challenges: TLS-ALPN-01
// on the TLS listeners (GetCertificate answers the CA's acme-tls/1
// handshakes), HTTP-01 on acme.port (HTTPHandler). autocert renews each
// certificate in the background once it has been served; Run also asks
// for every configured domain at start and twice a day, so certificates
// exist before the first visitor and a failing renewal is seen on the
// dashboard.
type ACME struct {
	m       *autocert.Manager
	domains []string
	cache   autocert.Cache
	log     *slog.Logger

	mu       sync.Mutex
	attempts map[string]attempt
}

// attempt is the outcome of the last time Run asked for a domain.
type attempt struct {
	at  time.Time
	err error
}

// NewACME builds the manager from the acme section; cache holds its state
// (the Store's CertCache).
func NewACME(cfg *config.Config, cache autocert.Cache, log *slog.Logger) (*ACME, error) {
	roots, err := cfg.ACMERoots()
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		Proxy:           http.ProxyFromEnvironment,
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
	}}
	a := &ACME{domains: cfg.ACME.Domains, cache: cache, log: log, attempts: map[string]attempt{}}
	a.m = &autocert.Manager{
		Prompt:      autocert.AcceptTOS,
		Cache:       cache,
		HostPolicy:  hostPolicy(cfg.ACME.Domains),
		RenewBefore: cfg.ACME.ReprovisionThreshold.Std(),
		Client:      &acme.Client{DirectoryURL: cfg.ACMEDirectory(), HTTPClient: hc, UserAgent: "hearth"},
		Email:       cfg.ACME.Email,
	}
	return a, nil
}

// hostPolicy allows only the configured domains. Unlike
// autocert.HostWhitelist it ignores a port: the HTTP-01 handler checks the
// Host header, which carries one when the CA is told to validate on
// another port than 80 (a CA under test, or port forwarding).
func hostPolicy(domains []string) autocert.HostPolicy {
	allowed := map[string]bool{}
	for _, d := range domains {
		allowed[strings.ToLower(strings.TrimSuffix(d, "."))] = true
	}
	return func(_ context.Context, host string) error {
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if !allowed[strings.ToLower(strings.TrimSuffix(host, "."))] {
			return fmt.Errorf("acme: %q is not in acme.domains", host)
		}
		return nil
	}
}

// GetCertificate is a tls.Config hook. A client that sends no SNI (one
// connecting by IP address) gets the first domain's certificate.
func (a *ACME) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if hello.ServerName == "" {
		h := *hello
		h.ServerName = a.domains[0]
		hello = &h
	}
	return a.m.GetCertificate(hello)
}

// HTTPHandler answers HTTP-01 challenges and redirects every other GET or
// HEAD to the same URL over HTTPS.
func (a *ACME) HTTPHandler() http.Handler { return a.m.HTTPHandler(nil) }

// checkEvery is how often Run asks for each domain's certificate.
const checkEvery = 12 * time.Hour

// Run obtains a certificate for each domain now, then checks them every
// checkEvery, until ctx ends.
func (a *ACME) Run(ctx context.Context) {
	t := time.NewTicker(checkEvery)
	defer t.Stop()
	for {
		for _, d := range a.domains {
			if ctx.Err() != nil {
				return
			}
			a.obtain(d)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// obtain asks autocert for d's certificate as an ECDSA-capable client
// would (from the cache when it has one), and records the outcome.
func (a *ACME) obtain(d string) {
	hello := &tls.ClientHelloInfo{
		ServerName:        d,
		CipherSuites:      []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
		SignatureSchemes:  []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
		SupportedCurves:   []tls.CurveID{tls.CurveP256},
		SupportedVersions: []uint16{tls.VersionTLS13, tls.VersionTLS12},
	}
	_, err := a.m.GetCertificate(hello)
	if err != nil {
		err = explainACMEError(d, a.m.Client.DirectoryURL, err)
		a.log.Error("ACME: no certificate", "domain", d, "err", err)
	}
	a.mu.Lock()
	a.attempts[d] = attempt{at: time.Now(), err: err}
	a.mu.Unlock()
}

// explainACMEError adds what to do to the usual failures: the CA's
// problem types (RFC 8555 section 6.7) for failed validations, and the
// network errors of reaching the CA itself.
func explainACMEError(domain, directory string, err error) error {
	msg := err.Error()
	var hint string
	switch {
	case strings.Contains(msg, "rateLimited"):
		hint = "the CA's rate limit was hit; it clears by itself (use acme.staging: true while experimenting)"
	case strings.Contains(msg, "acme:error:caa"):
		hint = "a CAA record of the domain does not allow this CA: add one for it (hearth doctor checks)"
	case strings.Contains(msg, "acme:error:dns"):
		hint = fmt.Sprintf("the CA could not resolve %s: add an A or AAAA record pointing at this server", domain)
	case strings.Contains(msg, "acme:error:connection"), strings.Contains(msg, "acme:error:unauthorized"),
		strings.Contains(msg, "acme:error:incorrectResponse"), strings.Contains(msg, "acme:error:tls"):
		hint = fmt.Sprintf("the CA could not complete a challenge: %s must resolve to this machine, and port 80 (acme.port) or 443 must be open to the internet and reach Hearth, not another web server", domain)
	case strings.Contains(msg, directory) || strings.Contains(msg, "dial tcp") || strings.Contains(msg, "no such host"):
		hint = "this server cannot reach the ACME CA at " + directory + ": check outbound HTTPS, DNS, and acme.url"
	}
	if hint == "" {
		return err
	}
	return fmt.Errorf("%w (%s)", err, hint)
}

// lastAttempt is the outcome of the last request for d.
func (a *ACME) lastAttempt(d string) (attempt, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	at, ok := a.attempts[d]
	return at, ok
}
