// Package diag finds out why federation does not work, from the outside
// in: the federation tester (FederationTest, for any server) and the
// doctor (Doctor, for this server's own set-up). Both reuse the outbound
// federation code (package federation: discovery, the transport's address
// rules and CAs, the key ring, request signing), so what they report is
// what federation itself would meet. Every lookup goes through one
// federation.Resolver, which tests point at a DNS server they run.
//
// Each check becomes a Finding: what was checked, whether it passed, and
// in words an operator can act on, what to do.
package diag

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"hearth/config"
	"hearth/server/federation"
	"hearth/server/netguard"
	"hearth/server/rooms"
)

// Status is a finding's outcome.
type Status string

// The outcomes, from good to bad.
const (
	OK   Status = "ok"
	Info Status = "info"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Finding is one check's result.
type Finding struct {
	// Check names the check ("dns.srv", "tls.chain", ...).
	Check  string `json:"check"`
	Status Status `json:"status"`
	// Subject is what was checked: a name, an address.
	Subject string `json:"subject,omitempty"`
	// Message says what was found; Fix what to do about it (empty when
	// nothing needs doing).
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"`
}

// Options configure a Tester.
type Options struct {
	// Config supplies the federation rules (ip_range_blacklist/whitelist,
	// federation_custom_ca_list, federation_verify_certificates,
	// trusted_key_servers) and, for the doctor and the outbound test, the
	// server name and signing key. nil: the defaults, and no signed
	// requests.
	Config *config.Config
	// DNSServers replaces /etc/resolv.conf for every lookup ("ip:port").
	DNSServers []string
	// Unsigned makes no signed requests: no outbound test, no self-request
	// (for a server whose keys others cannot fetch yet).
	Unsigned bool
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	Log *slog.Logger
}

// Tester runs the checks. Make one per run: its resolver caches.
type Tester struct {
	cfg      *config.Config
	tr       *federation.Transport
	res      *federation.Resolver
	dialer   *netguard.Dialer
	roots    *x509.CertPool // nil: the system roots
	insecure bool
	unsigned bool
	client   *federation.Client // signed as cfg's server; nil without a key
	keyRing  *federation.KeyRing
	notaries []federation.TrustedKeyServer
	ownKey   *rooms.SigningKey
	now      func() time.Time
	log      *slog.Logger
}

// New builds a Tester.
func New(o Options) (*Tester, error) {
	t := &Tester{cfg: o.Config, now: o.Now, log: o.Log, unsigned: o.Unsigned}
	if t.now == nil {
		t.now = time.Now
	}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	var opts []federation.TransportOption
	policy := netguard.Policy{Name: "ip_range_blacklist"}
	if o.Config != nil {
		base, err := federation.TransportOptionsFromConfig(o.Config)
		if err != nil {
			return nil, err
		}
		opts = base
		deny, allow := o.Config.FederationRanges()
		policy = netguard.Policy{Deny: deny, Allow: allow, Name: "ip_range_blacklist"}
		if t.roots, err = o.Config.FederationRootCAs(); err != nil {
			return nil, err
		}
		t.insecure = !o.Config.VerifyFederationCertificates()
		// The tester may test any server, whitelist or not: it says so
		// in a finding instead of refusing.
		opts = append(opts, federation.WithDomainWhitelist(nil))
	}
	if len(o.DNSServers) > 0 {
		opts = append(opts, federation.WithResolverOptions(federation.WithDNSServers(o.DNSServers...)))
	}
	tr, err := federation.NewTransport(opts...)
	if err != nil {
		return nil, err
	}
	t.tr, t.res = tr, tr.Resolver()
	t.dialer = &netguard.Dialer{Policy: policy, Lookup: t.res.LookupIP, Timeout: 10 * time.Second}
	hc := &http.Client{Transport: tr}
	if o.Config != nil {
		for _, n := range o.Config.TrustedKeyServers {
			t.notaries = append(t.notaries, federation.TrustedKeyServer{ServerName: n.ServerName, VerifyKeys: n.Keys()})
		}
		if key, err := o.Config.LoadSigningKey(); err == nil {
			sk := rooms.SigningKey{ServerName: o.Config.ServerName, KeyID: key.ID, Private: key.Priv}
			t.ownKey = &sk
			t.client = &federation.Client{HTTP: hc, Sign: func(req *http.Request, destination string, content []byte) error {
				return federation.SignRequest(req, sk, o.Config.ServerName, destination, content)
			}}
			t.keyRing = federation.NewKeyRing(federation.KeyRingOptions{Key: sk, Client: hc, TrustedKeyServers: t.notaries, Now: t.now})
		}
	}
	if t.keyRing == nil && len(t.notaries) > 0 {
		// A throwaway identity: notary queries are not signed.
		_, priv, _ := ed25519.GenerateKey(nil)
		t.keyRing = federation.NewKeyRing(federation.KeyRingOptions{Key: rooms.SigningKey{ServerName: "diag.invalid", KeyID: "ed25519:diag", Private: priv},
			Client: hc, TrustedKeyServers: t.notaries, Now: t.now})
	}
	return t, nil
}

// Close releases the tester's connections.
func (t *Tester) Close() { t.tr.CloseIdleConnections() }

// tlsClientConfig is the client side of every handshake the checks make:
// verification is done afterwards (verifyChain), so a bad certificate is
// described rather than only refused.
func (t *Tester) tlsClientConfig(serverName string) *tls.Config {
	c := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}} // verified in verifyChain
	if _, err := netip.ParseAddr(serverName); err != nil {
		c.ServerName = serverName
	}
	return c
}

// dialTLS connects to addr ("ip:port") through the address policy and
// completes a handshake sending sni.
func (t *Tester) dialTLS(ctx context.Context, addr, sni string) (*tls.Conn, error) {
	raw, err := t.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	conn := tls.Client(raw, t.tlsClientConfig(sni))
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return conn, nil
}

// httpsAt is an HTTPS client whose every connection goes to addr
// ("ip:port"), whatever the URL's host: to ask one address of a name.
func (t *Tester) httpsAt(addr, sni string) *http.Client {
	return &http.Client{
		Timeout: 20 * time.Second,
		Transport: &http.Transport{
			Proxy: nil,
			DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return t.dialTLS(ctx, addr, sni)
			},
			MaxResponseHeaderBytes: 64 << 10,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// refused reports whether err is the address policy's refusal.
func refused(err error) bool { return errors.Is(err, netguard.ErrRefused) }
