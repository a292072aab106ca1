package config

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strings"
)

// Federation settings (Synapse's names). The fields live on Config; their
// defaults, checks and parsed forms are here.

// TrustedKeyServer is one entry of trusted_key_servers: a notary asked for
// other servers' signing keys.
type TrustedKeyServer struct {
	ServerName string `yaml:"server_name"`
	// VerifyKeys maps key IDs ("ed25519:auto") to unpadded base64 public
	// keys; when set, the notary's answers must be signed by one of them.
	VerifyKeys map[string]string `yaml:"verify_keys"`
	// AcceptKeysInsecurely allows an entry without verify_keys while
	// federation_verify_certificates is false (Synapse refuses that
	// otherwise: anyone who can spoof DNS could pose as the notary).
	AcceptKeysInsecurely bool `yaml:"accept_keys_insecurely"`
}

// Keys returns VerifyKeys decoded. Validate has already checked them.
func (t TrustedKeyServer) Keys() map[string]ed25519.PublicKey {
	out := make(map[string]ed25519.PublicKey, len(t.VerifyKeys))
	for id, b64 := range t.VerifyKeys {
		if k, err := decodeVerifyKey(b64); err == nil {
			out[id] = k
		}
	}
	return out
}

// OldSigningKey is one entry of old_signing_keys: a key this server signed
// with before, still published so that what it signed can be checked.
type OldSigningKey struct {
	// Key is the unpadded base64 ed25519 public key.
	Key string `yaml:"key"`
	// ExpiredTS is when the key was last used, in ms since the Unix epoch.
	ExpiredTS int64 `yaml:"expired_ts"`
}

// OldVerifyKey is an old_signing_keys entry, decoded.
type OldVerifyKey struct {
	ID        string // "ed25519:<version>"
	Public    ed25519.PublicKey
	ExpiredTS int64
}

// DefaultTrustedKeyServer is Synapse's default notary, used when
// trusted_key_servers is not set at all (an empty list means none).
const DefaultTrustedKeyServer = "matrix.org"

// VerifyFederationCertificates reports whether outbound federation checks
// TLS certificates (federation_verify_certificates, default true).
func (c *Config) VerifyFederationCertificates() bool {
	return c.FederationVerifyCertificates == nil || *c.FederationVerifyCertificates
}

// FederationRootCAs loads federation_custom_ca_list. As in Synapse, the
// list replaces the operating system's roots: with it set, only these CAs
// are trusted for federation. It returns nil (the system roots) when the
// list is empty. Errors name the key, the entry and the file.
func (c *Config) FederationRootCAs() (*x509.CertPool, error) {
	var errs []error
	pool := c.loadFederationCAs(func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	})
	return pool, errors.Join(errs...)
}

// loadFederationCAs reads every federation_custom_ca_list file, reporting
// each bad one to bad.
func (c *Config) loadFederationCAs(bad func(key, format string, args ...any)) *x509.CertPool {
	if len(c.FederationCustomCAList) == 0 {
		return nil
	}
	pool := x509.NewCertPool()
	ok := true
	for i, path := range c.FederationCustomCAList {
		certs, err := readPEMCertificates(path)
		if err != nil {
			bad(fmt.Sprintf("federation_custom_ca_list[%d]", i), "%s: %s", path, err)
			ok = false
			continue
		}
		for _, cert := range certs {
			pool.AddCert(cert)
		}
	}
	if !ok {
		return nil
	}
	return pool
}

// readPEMCertificates reads every CERTIFICATE block of a PEM file; a file
// with none, or with one that does not parse, is an error.
func readPEMCertificates(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, errors.New("no such file")
		}
		return nil, err
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d does not parse: %w", len(certs)+1, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate in the file")
	}
	return certs, nil
}

// FederationRanges returns the ranges ip_range_blacklist adds to the
// built-in deny list (every private, loopback, link-local, multicast and
// reserved range: netguard.DefaultDeny, a superset of Synapse's default
// ip_range_blacklist) and the ip_range_whitelist exceptions. They govern
// every outbound federation connection: requests, key fetches, remote
// media. Validate has already checked every entry.
//
// Unlike Synapse, setting ip_range_blacklist cannot drop the built-in
// ranges (Synapse's list replaces its default): exceptions are made with
// ip_range_whitelist, as for URL previews, so one rule holds everywhere.
func (c *Config) FederationRanges() (deny, allow []netip.Prefix) {
	return parseCIDRs(c.IPRangeBlacklist), parseCIDRs(c.IPRangeWhitelist)
}

// OldVerifyKeys returns old_signing_keys decoded, sorted by key ID.
// Validate has already checked them.
func (c *Config) OldVerifyKeys() []OldVerifyKey {
	var out []OldVerifyKey
	for id, k := range c.OldSigningKeys {
		if pub, err := decodeVerifyKey(k.Key); err == nil {
			out = append(out, OldVerifyKey{ID: id, Public: pub, ExpiredTS: k.ExpiredTS})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// KeyServerWarning is Synapse's start-up warning about trusting matrix.org
// as a notary without pinning its key, or "" when there is nothing to warn
// about (suppress_key_server_warning silences it).
func (c *Config) KeyServerWarning() string {
	if c.SuppressKeyServerWarning {
		return ""
	}
	for _, t := range c.TrustedKeyServers {
		if t.ServerName == DefaultTrustedKeyServer && len(t.VerifyKeys) == 0 {
			return "trusted_key_servers: this server trusts matrix.org to vouch for other servers' signing keys, " +
				"without checking matrix.org's own key (add verify_keys), and will fetch keys through it. " +
				"Set suppress_key_server_warning: true to acknowledge this, or change trusted_key_servers."
		}
	}
	return ""
}

func (c *Config) federationDefaults() {
	// nil is "not set": Synapse's default notary. An explicit empty list
	// (trusted_key_servers: []) stays empty: no notary.
	if c.TrustedKeyServers == nil {
		c.TrustedKeyServers = []TrustedKeyServer{{ServerName: DefaultTrustedKeyServer}}
	}
}

// keyIDRe is a key ID this server can use: only ed25519, with the
// identifier grammar of the spec's "Signing key identifiers".
var keyIDRe = regexp.MustCompile(`^ed25519:[A-Za-z0-9_]+$`)

// decodeVerifyKey decodes a base64 ed25519 public key (unpadded, as the
// spec writes them; padding is tolerated).
func decodeVerifyKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(strings.TrimSpace(s), "="))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, errors.New("is not an ed25519 public key (32 bytes of base64)")
	}
	return ed25519.PublicKey(b), nil
}

func (c *Config) validateFederation(bad func(key, format string, args ...any)) {
	c.loadFederationCAs(bad)
	for i, name := range c.FederationDomainWhitelist {
		if !serverNameRe.MatchString(name) {
			bad(fmt.Sprintf("federation_domain_whitelist[%d]", i), "%q is not a server name (hostname or IP with optional :port)", name)
		}
	}
	for key, list := range map[string][]string{"ip_range_blacklist": c.IPRangeBlacklist, "ip_range_whitelist": c.IPRangeWhitelist} {
		for i, s := range list {
			if _, err := parseCIDR(s); err != nil {
				bad(fmt.Sprintf("%s[%d]", key, i), "%q is not an IP address or CIDR range (e.g. 192.168.0.0/16)", s)
			}
		}
	}
	for i, t := range c.TrustedKeyServers {
		key := fmt.Sprintf("trusted_key_servers[%d]", i)
		if t.ServerName == "" {
			bad(key+".server_name", "is required")
		} else if !serverNameRe.MatchString(t.ServerName) {
			bad(key+".server_name", "%q is not a server name (hostname or IP with optional :port)", t.ServerName)
		}
		for id, b64 := range t.VerifyKeys {
			if !keyIDRe.MatchString(id) {
				bad(key+".verify_keys", "key ID %q is not ed25519:<identifier> (letters, digits, _)", id)
			} else if _, err := decodeVerifyKey(b64); err != nil {
				bad(key+".verify_keys."+id, "%s", err)
			}
		}
		if len(t.VerifyKeys) == 0 && !c.VerifyFederationCertificates() && !t.AcceptKeysInsecurely {
			bad(key, "has no verify_keys while federation_verify_certificates is false, so anyone who can spoof DNS "+
				"could pose as %s: add verify_keys, or set accept_keys_insecurely: true if the network is trusted", t.ServerName)
		}
	}
	for id, k := range c.OldSigningKeys {
		key := "old_signing_keys." + id
		if !keyIDRe.MatchString(id) {
			bad("old_signing_keys", "key ID %q is not ed25519:<identifier> (letters, digits, _)", id)
			continue
		}
		if _, err := decodeVerifyKey(k.Key); err != nil {
			bad(key+".key", "%s", err)
		}
		if k.ExpiredTS <= 0 {
			bad(key+".expired_ts", "is required: when the key was last used, in milliseconds since the Unix epoch")
		}
	}
}
