package config

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// ACME obtains and renews certificates automatically (the acme section;
// Synapse had the same section until 2021, and Hearth keeps its key names:
// url, port, bind_addresses, reprovision_threshold). The certificates are
// served on every listener with tls: true, keyed by SNI, in place of
// tls_certificate_path; the account key and certificates are kept in the
// database.
type ACME struct {
	Enabled bool `yaml:"enabled"`
	// Domains are the names to get certificates for (default: the server
	// name's host and public_baseurl's host).
	Domains []string `yaml:"domains"`
	// Email is the contact address given to the CA (expiry warnings).
	Email string `yaml:"email"`
	// URL is the CA's ACME directory (default: Let's Encrypt).
	URL string `yaml:"url"`
	// Staging uses Let's Encrypt's staging directory (untrusted
	// certificates, generous rate limits) when url is not set.
	Staging bool `yaml:"staging"`
	// CARoot is a PEM file of CAs to trust for the directory's own HTTPS,
	// for a private or test CA (Pebble).
	CARoot string `yaml:"ca_root"`
	// Port is where HTTP-01 challenges are answered (default 80); every
	// other request on it is redirected to HTTPS.
	Port int `yaml:"port"`
	// BindAddresses of the HTTP-01 listener (default :: and 0.0.0.0).
	BindAddresses []string `yaml:"bind_addresses"`
	// ReprovisionThreshold is how long before expiry a certificate is
	// renewed (default 30d).
	ReprovisionThreshold Duration `yaml:"reprovision_threshold"`
}

// Let's Encrypt's directories.
const (
	LetsEncryptURL        = "https://acme-v02.api.letsencrypt.org/directory"
	LetsEncryptStagingURL = "https://acme-staging-v02.api.letsencrypt.org/directory"
)

// ACMEDirectory is the directory URL in use.
func (c *Config) ACMEDirectory() string {
	switch {
	case c.ACME.URL != "":
		return c.ACME.URL
	case c.ACME.Staging:
		return LetsEncryptStagingURL
	}
	return LetsEncryptURL
}

// ACMERoots loads acme.ca_root (nil: the system roots).
func (c *Config) ACMERoots() (*x509.CertPool, error) {
	if c.ACME.CARoot == "" {
		return nil, nil
	}
	certs, err := readPEMCertificates(c.Resolve(c.ACME.CARoot))
	if err != nil {
		return nil, fmt.Errorf("acme.ca_root: %w", err)
	}
	pool := x509.NewCertPool()
	for _, ct := range certs {
		pool.AddCert(ct)
	}
	return pool, nil
}

// ServesTLS reports whether any listener has tls: true.
func (c *Config) ServesTLS() bool {
	for _, l := range c.Listeners {
		if l.TLS {
			return true
		}
	}
	return false
}

func (c *Config) acmeDefaults() {
	a := &c.ACME
	if !a.Enabled {
		return
	}
	if len(a.Domains) == 0 {
		add := func(h string) {
			if h == "" {
				return
			}
			for _, d := range a.Domains {
				if strings.EqualFold(d, h) {
					return
				}
			}
			a.Domains = append(a.Domains, h)
		}
		add(hostOf(c.ServerName))
		if u, err := url.Parse(c.PublicBaseURL); err == nil && c.PublicBaseURL != "" {
			add(u.Hostname())
		}
	}
	if a.Port == 0 {
		a.Port = 80
	}
	if len(a.BindAddresses) == 0 {
		a.BindAddresses = []string{"::", "0.0.0.0"}
	}
	if a.ReprovisionThreshold == 0 {
		a.ReprovisionThreshold = Duration(30 * 24 * time.Hour)
	}
}

// hostOf is a server name without its port (and an IPv6 literal without
// brackets).
func hostOf(serverName string) string {
	if h, _, err := net.SplitHostPort(serverName); err == nil {
		return h
	}
	return strings.Trim(serverName, "[]")
}

// ACMEDomainProblem says why name cannot get a certificate from a public
// ACME CA, or "" when it can: CAs issue for DNS names under a public
// suffix, never for an IP address or a single-label name.
func ACMEDomainProblem(name string) string {
	if _, err := netip.ParseAddr(strings.Trim(name, "[]")); err == nil {
		return fmt.Sprintf("%q is an IP address: ACME CAs issue certificates for DNS names only. "+
			"Use a domain name as the server name, or set tls_certificate_path to a certificate you obtain yourself", name)
	}
	if !strings.Contains(strings.Trim(name, "."), ".") {
		return fmt.Sprintf("%q has no dot: no public CA issues certificates for a single-label name such as localhost. "+
			"Use a full domain name (e.g. matrix.example.org)", name)
	}
	for _, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		if label == "" || len(label) > 63 || strings.HasPrefix(label, "-") || strings.HasSuffix(label, "-") {
			return fmt.Sprintf("%q is not a valid DNS name (empty, over-long or hyphen-edged label %q)", name, label)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Sprintf("%q is not a valid DNS name (%q is not allowed)", name, r)
			}
		}
	}
	return ""
}

func (c *Config) validateACME(bad func(key, format string, args ...any)) {
	a := c.ACME
	if !a.Enabled {
		return
	}
	if len(a.Domains) == 0 {
		bad("acme.domains", "is empty: name the domains to get certificates for")
	}
	for i, d := range a.Domains {
		if p := ACMEDomainProblem(d); p != "" {
			key := fmt.Sprintf("acme.domains[%d]", i)
			if strings.EqualFold(hostOf(c.ServerName), d) {
				key += " (the server name)"
			}
			bad(key, "%s", p)
		}
	}
	if a.URL != "" {
		if u, err := url.Parse(a.URL); err != nil || u.Scheme != "https" || u.Host == "" {
			bad("acme.url", "%q is not an https:// URL of an ACME directory", a.URL)
		}
		if a.Staging {
			bad("acme.staging", "is set together with acme.url: staging picks Let's Encrypt's staging directory, url another CA; set one")
		}
	}
	if a.CARoot != "" {
		if _, err := c.ACMERoots(); err != nil {
			bad("acme.ca_root", "%v", err)
		}
	}
	if a.Port < 1 || a.Port > 65535 {
		bad("acme.port", "%d is not a TCP port (1-65535)", a.Port)
	}
	for j, b := range a.BindAddresses {
		if net.ParseIP(b) == nil {
			bad(fmt.Sprintf("acme.bind_addresses[%d]", j), "%q is not an IP address", b)
		}
	}
	if !c.ServesTLS() {
		bad("acme.enabled", "no listener has tls: true, so the certificates would never be served "+
			"(add a listener on port 443 with tls: true; TLS-ALPN-01 challenges arrive there)")
	}
	if c.ReprovisionThresholdTooSmall() {
		bad("acme.reprovision_threshold", "must be at least 1h")
	}
}

// ReprovisionThresholdTooSmall reports a renewal margin autocert would
// ignore (it needs more than its one-hour jitter).
func (c *Config) ReprovisionThresholdTooSmall() bool {
	return c.ACME.Enabled && c.ACME.ReprovisionThreshold.Std() <= time.Hour
}

// WellKnownServer is the m.server value served with
// serve_server_wellknown: public_baseurl's host and port (443 when it
// names none), or the server name's host on 443 without public_baseurl.
func (c *Config) WellKnownServer() string {
	host, port := hostOf(c.ServerName), "443"
	if u, err := url.Parse(c.PublicBaseURL); err == nil && c.PublicBaseURL != "" && u.Hostname() != "" {
		host = u.Hostname()
		if p := u.Port(); p != "" {
			port = p
		} else if u.Scheme == "http" {
			port = "80"
		}
	}
	return net.JoinHostPort(host, port)
}
