// Command hearth-complement is the entrypoint of the Docker image that
// matrix-org/complement runs (appliance/complement/Dockerfile). It writes a
// config for $SERVER_NAME on first start, issues a TLS certificate for the
// federation port signed by Complement's CA (/complement/ca), and serves.
// The image is FROM scratch, so this binary does what a shell script and
// openssl would do elsewhere.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"hearth/appliance"
	"hearth/config"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "hearth-complement:", err)
		os.Exit(1)
	}
}

func run() error {
	serverName := os.Getenv("SERVER_NAME")
	if serverName == "" {
		serverName = "localhost"
	}
	dataDir := envOr("HEARTH_DATA_DIR", "/data")
	caDir := envOr("COMPLEMENT_CA_DIR", "/complement/ca")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}
	cfgPath := filepath.Join(dataDir, "homeserver.yaml")
	if err := writeConfig(cfgPath, dataDir, serverName, caDir); err != nil {
		return err
	}
	host := serverName
	if h, _, err := net.SplitHostPort(serverName); err == nil {
		host = h
	}
	if err := issueCert(filepath.Join(dataDir, "tls.crt"), filepath.Join(dataDir, "tls.key"), host, caDir); err != nil {
		return fmt.Errorf("tls certificate: %w", err)
	}
	cfg, warnings, err := config.Load(cfgPath)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	for _, w := range warnings {
		log.Warn(w)
	}
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return appliance.Run(ctx, cfg, appliance.Options{Log: log})
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// complementRanges are the private ranges Complement's homeservers and its
// own federation servers live in: Docker's default address pools
// (172.17.0.0/16 and up, then 192.168.0.0/16), the host gateway
// (host.docker.internal, on the default bridge), other runtimes' pools
// (10.0.0.0/8; CGNAT 100.64.0.0/10 for rootless networking) and IPv6
// unique local addresses. Outbound federation and URL previews refuse
// private addresses unless they are listed.
var complementRanges = []string{"10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"}

// writeConfig writes the config once; later starts of the container reuse
// it (Complement may run the entrypoint more than once).
func writeConfig(path, dataDir, serverName, caDir string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	keyPath := filepath.Join(dataDir, "signing.key")
	if _, err := os.Stat(keyPath); errors.Is(err, os.ErrNotExist) {
		k, err := config.NewSigningKey()
		if err != nil {
			return err
		}
		if err := os.WriteFile(keyPath, k.Encode(), 0o600); err != nil {
			return err
		}
	}
	// Registration is open and unlimited: Complement registers many users
	// quickly. The shared secret "complement" is what Complement's admin
	// registration uses.
	ranges := "['" + strings.Join(complementRanges, "', '") + "']"
	text := strings.NewReplacer("SERVER_NAME", serverName, "DATA", dataDir, "RANGES", ranges).Replace(`server_name: "SERVER_NAME"
log_level: info
listeners:
  - port: 8008
    bind_addresses: ['0.0.0.0']
    type: http
    resources: [{names: [client]}]
  - port: 8448
    bind_addresses: ['0.0.0.0']
    type: http
    tls: true
    resources: [{names: [federation]}]
tls_certificate_path: DATA/tls.crt
tls_private_key_path: DATA/tls.key
database:
  name: sqlite3
  args:
    database: DATA/hearth.db
signing_key_path: DATA/signing.key
media_store_path: DATA/media
registration_shared_secret: "complement"
enable_registration: true
enable_registration_without_verification: true
bcrypt_rounds: 4
rc_login:
  address: {per_second: 0, burst_count: 1000}
  account: {per_second: 0, burst_count: 1000}
  failed_attempts: {per_second: 0, burst_count: 1000}
rc_registration: {per_second: 0, burst_count: 1000}
# Delayed events (MSC4140) are off unless a maximum delay is set; its
# package polls the list every half second.
max_event_delay_duration: 24h
rc_delayed_event_mgmt: {per_second: 0, burst_count: 1000}
experimental_features:
  msc4306_enabled: true
  msc3391_enabled: true
# Complement's media tests download through the legacy endpoints, its URL
# preview test serves the page from the Docker host (a private address),
# and its server-notice tests need notices on; none of these are defaults.
enable_authenticated_media: false
url_preview_enabled: true
url_preview_ip_range_whitelist: RANGES
server_notices:
  system_mxid_localpart: _server
  system_mxid_display_name: "Server Notices"
  room_name: "Server Notices"
# Federation under Complement: every address is private (the other
# homeservers' containers, and the federation servers the tests run on the
# Docker host, reached as host.docker.internal), and there is no notary:
# keys are fetched from each server.
ip_range_whitelist: RANGES
trusted_key_servers: []
# Complement's Synapse shows device names to other servers, and its
# federation tests expect them.
allow_device_name_lookup_over_federation: true
# Complement's Synapse keeps the body-mention push rules spec v1.17 removed
# (msc4210_enabled is off), and its thread notification tests mention
# users in the body only.
push:
  legacy_mention_rules: true
`)
	// Complement's CA signs every server's certificate, the test process's
	// own federation servers included: trust it (and only it) for outbound
	// federation. Without a mounted CA (the image run by hand) nothing is
	// added and the system roots stay, which a scratch image has none of.
	if ca := filepath.Join(caDir, "ca.crt"); fileExists(ca) {
		text += "federation_custom_ca_list: ['" + ca + "']\n"
	}
	return os.WriteFile(path, []byte(text), 0o600)
}

// issueCert writes a certificate for host signed by the CA in caDir, or a
// self-signed one when no CA is mounted (running the image by hand).
func issueCert(certPath, keyPath, host, caDir string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	parent, signer := tmpl, any(key)
	if ca, err := tls.LoadX509KeyPair(filepath.Join(caDir, "ca.crt"), filepath.Join(caDir, "ca.key")); err == nil {
		if parent, err = x509.ParseCertificate(ca.Certificate[0]); err != nil {
			return err
		}
		signer = ca.PrivateKey
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("CA in %s: %w", caDir, err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
}
