package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"hearth/config"
	"hearth/server/netguard"
)

// writeCA writes a CA certificate and key the way Complement mounts them.
func writeCA(t *testing.T, dir string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Complement CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestConfigFederatesUnderComplement checks what federation under
// Complement needs from the config the entrypoint writes: Complement's CA
// trusted for outbound federation (it signs the other homeservers' and the
// test process's certificates), the Docker networks and host gateway
// allowed though private, no notary, and federation served with TLS.
func TestConfigFederatesUnderComplement(t *testing.T) {
	data, caDir := t.TempDir(), filepath.Join(t.TempDir(), "ca")
	writeCA(t, caDir)
	cfgPath := filepath.Join(data, "homeserver.yaml")
	if err := writeConfig(cfgPath, data, "hs1", caDir); err != nil {
		t.Fatal(err)
	}
	if err := issueCert(filepath.Join(data, "tls.crt"), filepath.Join(data, "tls.key"), "hs1", caDir); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.TrustedKeyServers) != 0 {
		t.Errorf("trusted_key_servers = %v, want none", cfg.TrustedKeyServers)
	}
	if !cfg.VerifyFederationCertificates() {
		t.Error("federation certificates are not verified")
	}
	if !cfg.AllowDeviceNameLookupOverFederation {
		t.Error("device names are not shown to other servers")
	}
	if !cfg.Push.LegacyMentionRules {
		t.Error("the legacy body-mention push rules Complement's Synapse has are off")
	}

	// The certificate of another homeserver of the run verifies against
	// the trusted pool, for its name.
	pool, err := cfg.FederationRootCAs()
	if err != nil || pool == nil {
		t.Fatalf("federation_custom_ca_list: pool %v, err %v", pool, err)
	}
	other := t.TempDir()
	if err := issueCert(filepath.Join(other, "tls.crt"), filepath.Join(other, "tls.key"), "hs2", caDir); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(other, "tls.crt"), filepath.Join(other, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "hs2", Roots: pool}); err != nil {
		t.Errorf("hs2's certificate does not verify against federation_custom_ca_list: %v", err)
	}

	// Docker's bridges, the host gateway and user-defined networks are
	// private, and allowed; loopback and the unspecified address are not.
	deny, allow := cfg.FederationRanges()
	policy := netguard.Policy{Deny: deny, Allow: allow}
	for ip, want := range map[string]bool{
		"172.17.0.1": true, "172.18.0.3": true, "192.168.16.2": true, "10.88.0.5": true, "fd00::2": true,
		"127.0.0.1": false, "0.0.0.0": false, "169.254.169.254": false,
	} {
		if got := policy.Allowed(netip.MustParseAddr(ip)); got != want {
			t.Errorf("dialling %s allowed = %v, want %v", ip, got, want)
		}
	}

	var fed bool
	for _, l := range cfg.Listeners {
		for _, r := range l.Resources {
			for _, n := range r.Names {
				if n == "federation" {
					fed = l.Port == 8448 && l.TLS
				}
			}
		}
	}
	if !fed {
		t.Error("federation is not served with TLS on 8448")
	}
}

// TestConfigWithoutCA: the image run by hand, with no CA mounted, still
// starts (no federation_custom_ca_list naming a missing file).
func TestConfigWithoutCA(t *testing.T) {
	data := t.TempDir()
	caDir := filepath.Join(t.TempDir(), "none")
	cfgPath := filepath.Join(data, "homeserver.yaml")
	if err := writeConfig(cfgPath, data, "localhost", caDir); err != nil {
		t.Fatal(err)
	}
	if err := issueCert(filepath.Join(data, "tls.crt"), filepath.Join(data, "tls.key"), "localhost", caDir); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.FederationCustomCAList) != 0 {
		t.Errorf("federation_custom_ca_list = %v without a CA", cfg.FederationCustomCAList)
	}
}
