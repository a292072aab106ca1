// Package diagtest is the small Internet the diagnostics and ACME tests
// build on loopback: a DNS server (miekg/dns) answering for the test's
// names, a CA with an intermediate that issues certificates, and HTTPS
// listeners on addresses of 127.0.0.0/8 picked at random, so a test can
// use the real ports 443 and 8448 without colliding with anything.
package diagtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// DNS is an authoritative-looking DNS server for the test's names. It
// follows CNAMEs within its own records, as a recursive resolver would.
type DNS struct {
	Addr string // "127.0.0.1:port", UDP and TCP

	mu      sync.Mutex
	records map[string][]dns.RR
}

// NewDNS starts a DNS server, stopped when the test ends.
func NewDNS(t testing.TB) *DNS {
	t.Helper()
	d := &DNS{records: map[string][]dns.RR{}}
	var pc net.PacketConn
	var l net.Listener
	for try := 0; l == nil; try++ {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if l, err = net.Listen("tcp", pc.LocalAddr().String()); err != nil {
			pc.Close()
			if try == 20 {
				t.Fatal(err)
			}
		}
	}
	d.Addr = pc.LocalAddr().String()
	udp := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(d.serve)}
	tcp := &dns.Server{Listener: l, Handler: dns.HandlerFunc(d.serve)}
	started := make(chan struct{}, 2)
	udp.NotifyStartedFunc = func() { started <- struct{}{} }
	tcp.NotifyStartedFunc = func() { started <- struct{}{} }
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	<-started
	<-started
	t.Cleanup(func() {
		udp.Shutdown()
		tcp.Shutdown()
	})
	return d
}

// Add adds records in zone-file syntax ("x.test. 300 IN A 127.0.0.1").
func (d *DNS) Add(t testing.TB, lines ...string) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, l := range lines {
		rr, err := dns.NewRR(l)
		if err != nil {
			t.Fatalf("record %q: %v", l, err)
		}
		name := strings.ToLower(rr.Header().Name)
		d.records[name] = append(d.records[name], rr)
	}
}

func (d *DNS) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	d.mu.Lock()
	exists := false
	for hops := 0; hops < 8; hops++ {
		rrs, ok := d.records[name]
		exists = exists || ok
		var cname *dns.CNAME
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype || q.Qtype == dns.TypeANY {
				m.Answer = append(m.Answer, rr)
			} else if c, ok := rr.(*dns.CNAME); ok {
				cname = c
			}
		}
		if len(m.Answer) > 0 && m.Answer[len(m.Answer)-1].Header().Rrtype == q.Qtype || cname == nil {
			break
		}
		m.Answer = append(m.Answer, cname)
		name = strings.ToLower(cname.Target)
	}
	d.mu.Unlock()
	if !exists {
		m.Rcode = dns.RcodeNameError
	}
	if len(m.Answer) == 0 {
		m.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: "test.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
			Ns: "ns.test.", Mbox: "admin.test.", Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 60}}
	}
	w.WriteMsg(m)
}

// CA is a root and an intermediate; leaves are issued by the intermediate.
type CA struct {
	Root, Inter       *x509.Certificate
	rootKey, interKey *ecdsa.PrivateKey
	// RootFile is the root's PEM, for federation_custom_ca_list.
	RootFile string
}

var serial struct {
	sync.Mutex
	n int64
}

func nextSerial() *big.Int {
	serial.Lock()
	defer serial.Unlock()
	serial.n++
	return big.NewInt(time.Now().UnixNano() + serial.n)
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// NewCA makes a root and an intermediate.
func NewCA(t testing.TB) *CA {
	t.Helper()
	ca := &CA{rootKey: newKey(t), interKey: newKey(t)}
	root := &x509.Certificate{SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: "Hearth Test Root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, root, root, &ca.rootKey.PublicKey, ca.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	ca.Root, _ = x509.ParseCertificate(der)
	inter := &x509.Certificate{SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: "Hearth Test Intermediate"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err = x509.CreateCertificate(rand.Reader, inter, ca.Root, &ca.interKey.PublicKey, ca.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	ca.Inter, _ = x509.ParseCertificate(der)
	ca.RootFile = filepath.Join(t.TempDir(), "root.pem")
	if err := os.WriteFile(ca.RootFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Root.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return ca
}

// Pool is a pool with the root.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Root)
	return p
}

func leafTemplate(names []string) *x509.Certificate {
	tmpl := &x509.Certificate{SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	return tmpl
}

// Leaf issues a certificate for names, served with the intermediate
// (the full chain).
func (ca *CA) Leaf(t testing.TB, names ...string) tls.Certificate {
	t.Helper()
	key := newKey(t)
	der, err := x509.CreateCertificate(rand.Reader, leafTemplate(names), ca.Inter, &key.PublicKey, ca.interKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.Inter.Raw}, PrivateKey: key}
}

// LeafOnly is Leaf without the intermediate: the "cert.pem instead of
// fullchain.pem" mistake.
func (ca *CA) LeafOnly(t testing.TB, names ...string) tls.Certificate {
	c := ca.Leaf(t, names...)
	c.Certificate = c.Certificate[:1]
	return c
}

// SelfSigned is a certificate for names signed by its own key.
func SelfSigned(t testing.TB, names ...string) tls.Certificate {
	t.Helper()
	key := newKey(t)
	tmpl := leafTemplate(names)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// WriteFiles writes cert (chain) and key as PEM files in dir.
func WriteFiles(t testing.TB, dir string, c tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	var chain []byte
	for _, der := range c.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, chain, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// Host is a random address of 127.0.0.0/8 of the test's own.
func Host() netip.Addr {
	return netip.AddrFrom4([4]byte{127, byte(10 + mrand.IntN(240)), byte(mrand.IntN(256)), byte(2 + mrand.IntN(250))})
}

// Listen listens on ip:port, skipping the test when a port below 1024
// needs privileges this process lacks; port 0 picks a free one.
func Listen(t testing.TB, ip netip.Addr, port int) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip.String(), strconv.Itoa(port)))
	if errors.Is(err, syscall.EACCES) {
		t.Skipf("listening on port %d needs root or CAP_NET_BIND_SERVICE: %v", port, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// ServeTLS serves h over TLS with cert on ln until the test ends.
func ServeTLS(t testing.TB, ln net.Listener, cert tls.Certificate, h http.Handler) {
	t.Helper()
	srv := &http.Server{Handler: h, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
}

// Serve serves h over plain HTTP on ln until the test ends.
func Serve(t testing.TB, ln net.Listener, h http.Handler) {
	t.Helper()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}
