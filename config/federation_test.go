package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFederationDefaults(t *testing.T) {
	c, _ := parse(t, minimal)
	if !c.VerifyFederationCertificates() || c.AllowPublicRoomsOverFederation || c.ServeServerWellKnown || c.SuppressKeyServerWarning {
		t.Errorf("defaults: verify %v public rooms %v wellknown %v suppress %v", c.VerifyFederationCertificates(),
			c.AllowPublicRoomsOverFederation, c.ServeServerWellKnown, c.SuppressKeyServerWarning)
	}
	if c.FederationDomainWhitelist != nil {
		t.Errorf("federation_domain_whitelist defaults to %v, want unset (everyone)", c.FederationDomainWhitelist)
	}
	if pool, err := c.FederationRootCAs(); pool != nil || err != nil {
		t.Errorf("FederationRootCAs without a list = %v, %v; want the system roots (nil)", pool, err)
	}
	if deny, allow := c.FederationRanges(); deny != nil || allow != nil {
		t.Errorf("ranges %v %v: only the built-in list applies by default", deny, allow)
	}
	if len(c.TrustedKeyServers) != 1 || c.TrustedKeyServers[0].ServerName != "matrix.org" || len(c.TrustedKeyServers[0].VerifyKeys) != 0 {
		t.Errorf("trusted_key_servers default = %+v, want [{server_name: matrix.org}]", c.TrustedKeyServers)
	}
	if w := c.KeyServerWarning(); !strings.Contains(w, "matrix.org") || !strings.Contains(w, "suppress_key_server_warning") {
		t.Errorf("KeyServerWarning() = %q", w)
	}
	if len(c.OldVerifyKeys()) != 0 {
		t.Errorf("old keys: %v", c.OldVerifyKeys())
	}

	// Explicit empty lists are not "unset": no notary, no federation.
	c, _ = parse(t, minimal+"trusted_key_servers: []\nfederation_domain_whitelist: []\n")
	if c.TrustedKeyServers == nil || len(c.TrustedKeyServers) != 0 || c.KeyServerWarning() != "" {
		t.Errorf("trusted_key_servers: [] gave %+v", c.TrustedKeyServers)
	}
	if c.FederationDomainWhitelist == nil || len(c.FederationDomainWhitelist) != 0 {
		t.Errorf("federation_domain_whitelist: [] gave %#v", c.FederationDomainWhitelist)
	}
	c, _ = parse(t, minimal+"suppress_key_server_warning: true\n")
	if w := c.KeyServerWarning(); w != "" {
		t.Errorf("suppressed warning: %q", w)
	}
}

func TestFederationParse(t *testing.T) {
	dir := t.TempDir()
	want := x509.NewCertPool()
	want.AddCert(writeCA(t, filepath.Join(dir, "ca1.pem"), "CA one"))
	want.AddCert(writeCA(t, filepath.Join(dir, "ca2.pem"), "CA two"))
	path := filepath.Join(dir, "homeserver.yaml")
	yaml := minimal + `
federation_verify_certificates: false
federation_custom_ca_list: [ca1.pem, ` + filepath.Join(dir, "ca2.pem") + `]
federation_domain_whitelist: [lon.example.com, "nyc.example.com:8448", "[::1]:8448"]
ip_range_blacklist: ['8.8.8.0/24']
ip_range_whitelist: ['192.168.1.1', '10.0.0.0/8']
trusted_key_servers:
  - server_name: notary.example.org
    verify_keys:
      "ed25519:auto": "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw"
  - server_name: other.example.org
    accept_keys_insecurely: true
suppress_key_server_warning: true
allow_public_rooms_over_federation: true
allow_device_name_lookup_over_federation: true
serve_server_wellknown: true
old_signing_keys:
  "ed25519:old": { key: "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw", expired_ts: 1700000000000 }
  "ed25519:a_b": { key: "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw=", expired_ts: 1 }
`
	c, warnings, err := Parse([]byte(yaml), path)
	if err != nil || len(warnings) != 0 {
		t.Fatalf("Parse: %v %v", err, warnings)
	}
	if c.VerifyFederationCertificates() || !c.AllowPublicRoomsOverFederation || !c.ServeServerWellKnown || !c.AllowDeviceNameLookupOverFederation {
		t.Error("booleans not read")
	}
	// Relative CA paths are resolved against the config file's directory.
	if c.FederationCustomCAList[0] != filepath.Join(dir, "ca1.pem") {
		t.Errorf("federation_custom_ca_list[0] = %q", c.FederationCustomCAList[0])
	}
	pool, err := c.FederationRootCAs()
	if err != nil || pool == nil {
		t.Fatalf("FederationRootCAs: %v %v", pool, err)
	}
	if !pool.Equal(want) {
		t.Error("the pool is not the two CAs of the list (and nothing else: the list replaces the system roots)")
	}
	deny, allow := c.FederationRanges()
	if fmt.Sprint(deny, allow) != "[8.8.8.0/24] [192.168.1.1/32 10.0.0.0/8]" {
		t.Errorf("ranges %v %v", deny, allow)
	}
	if k := c.TrustedKeyServers[0].Keys(); len(k) != 1 || len(k["ed25519:auto"]) != 32 {
		t.Errorf("verify_keys decoded to %v", k)
	}
	old := c.OldVerifyKeys()
	if len(old) != 2 || old[0].ID != "ed25519:a_b" || old[1].ExpiredTS != 1700000000000 || len(old[1].Public) != 32 {
		t.Errorf("old_signing_keys decoded to %+v", old)
	}
}

func TestFederationValidateNamesEveryKey(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "junk.pem"), []byte("not a certificate"), 0o600)
	os.WriteFile(filepath.Join(dir, "broken.pem"), []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o600)
	yaml := minimal + `
federation_verify_certificates: false
federation_custom_ca_list: [missing.pem, junk.pem, broken.pem]
federation_domain_whitelist: [good.example.org, "bad name"]
ip_range_blacklist: ['10.0.0.0/33']
ip_range_whitelist: [nonsense]
trusted_key_servers:
  - verify_keys: {"ed25519:ok": "short"}
  - server_name: unpinned.example.org
  - server_name: "x y"
    verify_keys: {"rsa:1": "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw"}
old_signing_keys:
  "ed25519:nots": { key: "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw" }
  "ed25519:bad key": { key: "x", expired_ts: 5 }
  "ed25519:badval": { key: "@@@", expired_ts: 5 }
`
	_, _, err := Parse([]byte(yaml), filepath.Join(dir, "homeserver.yaml"))
	if err == nil {
		t.Fatal("invalid federation settings accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		"federation_custom_ca_list[0]: " + filepath.Join(dir, "missing.pem") + ": no such file",
		"federation_custom_ca_list[1]: " + filepath.Join(dir, "junk.pem") + ": no PEM certificate",
		"federation_custom_ca_list[2]: " + filepath.Join(dir, "broken.pem") + ": certificate 1 does not parse",
		`federation_domain_whitelist[1]: "bad name"`,
		"ip_range_blacklist[0]", "ip_range_whitelist[0]",
		"trusted_key_servers[0].server_name: is required",
		"trusted_key_servers[0].verify_keys.ed25519:ok: is not an ed25519 public key",
		"trusted_key_servers[1]: has no verify_keys while federation_verify_certificates is false",
		`trusted_key_servers[2].server_name: "x y"`,
		`trusted_key_servers[2].verify_keys: key ID "rsa:1"`,
		"old_signing_keys.ed25519:nots.expired_ts: is required",
		`old_signing_keys: key ID "ed25519:bad key"`,
		"old_signing_keys.ed25519:badval.key: is not an ed25519 public key",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not contain %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "federation_domain_whitelist[0]") || strings.Contains(msg, "trusted_key_servers[2]: has no") {
		t.Errorf("valid entries reported:\n%s", msg)
	}
}

// writeCA writes a self-signed CA certificate in PEM.
func writeCA(t *testing.T, path, name string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
