package servertest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hearth/server"
	"hearth/server/federation"
	"hearth/server/netguard"
	"hearth/server/rooms"
	"hearth/server/storage/storagetest"
)

// Federation is a set of test servers that federate with each other on
// loopback. Each is named after the address of its federation listener
// ("127.0.0.1:<port>": an IP literal with a port, so no DNS is involved),
// serves the federation API over TLS with a certificate from one CA the
// test makes, trusts that CA (federation_custom_ca_list), may dial
// loopback (ip_range_whitelist) and trusts no notary.
type Federation struct {
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caPath string
}

// NewFederation makes the CA of a test's federation.
func NewFederation(t testing.TB) *Federation {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Hearth test federation CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &Federation{caCert: cert, caKey: key, caPath: path}
}

// Start runs a federating server on a database of its own of engine e's
// kind.
func (f *Federation) Start(t testing.TB, e storagetest.Engine, opts ...Option) *Bundle {
	t.Helper()
	return f.StartWith(t, e, nil, opts...)
}

// StartWith is Start with the server's dependencies edited by deps, as
// for the package's StartWith.
func (f *Federation) StartWith(t testing.TB, e storagetest.Engine, deps func(*server.Deps), opts ...Option) *Bundle {
	t.Helper()
	e = storagetest.Another(t, e)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := Config(t, dir)
	cfg.ServerName = ln.Addr().String()
	cfg.FederationCustomCAList = []string{f.caPath}
	cfg.IPRangeWhitelist = []string{"127.0.0.0/8"}
	cfg.FederationDomainWhitelist = nil // every server of the test, all on loopback
	for _, o := range opts {
		o(cfg)
	}
	if err := cfg.Validate(); err != nil {
		ln.Close()
		t.Fatalf("test config invalid: %v", err)
	}
	b := &Bundle{Cfg: cfg, engine: e, fed: f, fedLn: ln, deps: deps}
	b.open(t, "")
	t.Cleanup(b.cleanup)
	return b
}

// FederationRequests counts the requests the server's federation listener
// received whose path starts with prefix: what other servers asked of it.
func (b *Bundle) FederationRequests(prefix string) int {
	b.fedMu.Lock()
	defer b.fedMu.Unlock()
	n := 0
	for p, c := range b.fedSeen {
		if strings.HasPrefix(p, prefix) {
			n += c
		}
	}
	return n
}

// RewriteFederation puts wrap in front of the server's federation API
// (nil takes it away), so that a test can play a server that answers
// other servers what it likes.
func (b *Bundle) RewriteFederation(wrap func(http.Handler) http.Handler) {
	b.fedMu.Lock()
	b.fedWrap = wrap
	b.fedMu.Unlock()
}

// countFederation counts each request (FederationRequests) before h, or
// before the RewriteFederation in front of it.
func (b *Bundle) countFederation(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.fedMu.Lock()
		if b.fedSeen == nil {
			b.fedSeen = map[string]int{}
		}
		b.fedSeen[r.URL.Path]++
		wrap := b.fedWrap
		b.fedMu.Unlock()
		if wrap != nil {
			wrap(h).ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// serve starts the federation listener of a server: on ln, or listening
// again on the server name's address after a restart.
func (f *Federation) serve(t testing.TB, h http.Handler, reqCtx context.Context, serverName string, ln net.Listener) *httptest.Server {
	t.Helper()
	if ln == nil {
		var err error
		for i := 0; ; i++ {
			if ln, err = net.Listen("tcp", serverName); err == nil || i == 50 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("listen again on %s: %v", serverName, err)
		}
	}
	hs := httptest.NewUnstartedServer(h)
	hs.Listener.Close()
	hs.Listener = ln
	hs.Config.BaseContext = func(net.Listener) context.Context { return reqCtx }
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{f.certificate(t)}, MinVersion: tls.VersionTLS12}
	hs.StartTLS()
	return hs
}

// certificate issues a certificate for 127.0.0.1 from the federation's CA.
func (f *Federation) certificate(t testing.TB) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.caCert, &key.PublicKey, f.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// CAFile is the path of the federation CA's certificate (PEM): what a
// server outside Hearth (Synapse's federation_custom_ca_list) trusts to
// talk to the test's servers.
func (f *Federation) CAFile() string { return f.caPath }

// WriteCertificate issues a certificate for 127.0.0.1 from the
// federation's CA and writes it and its key (PKCS #8) as PEM files in dir,
// for a server outside Hearth to serve the federation API with
// (Synapse's tls_certificate_path and tls_private_key_path).
func (f *Federation) WriteCertificate(t testing.TB, dir string) (certFile, keyFile string) {
	t.Helper()
	c := f.certificate(t)
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// PauseFederation closes the server's federation listener: other servers
// cannot reach it, while it keeps serving clients and sending to them.
func (b *Bundle) PauseFederation(t testing.TB) {
	t.Helper()
	b.FedHTTP.Close()
}

// ResumeFederation listens for other servers again.
func (b *Bundle) ResumeFederation(t testing.TB) {
	t.Helper()
	b.FedHTTP = b.fed.serve(t, b.FedHTTP.Config.Handler, b.reqCtx, b.Cfg.ServerName, nil)
}

// Client is a federation client of the test's network, signing as srv: for
// tests that play a server sending its own requests.
func (f *Federation) Client(t testing.TB, srv *Bundle) *federation.Client {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(f.caCert)
	tr, err := federation.NewTransport(federation.WithRootCAs(pool),
		federation.WithAddressPolicy(netguard.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}))
	if err != nil {
		t.Fatal(err)
	}
	key, err := srv.Cfg.LoadSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	rk := rooms.SigningKey{ServerName: srv.Cfg.ServerName, KeyID: key.ID, Private: key.Priv}
	return &federation.Client{HTTP: &http.Client{Transport: tr}, Sign: func(req *http.Request, destination string, content []byte) error {
		return federation.SignRequest(req, rk, srv.Cfg.ServerName, destination, content)
	}}
}
