package federation

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"hearth/server/netguard"
)

// The federation tests run a small Internet on loopback: a miekg/dns
// server on 127.0.0.1 answering SRV/A/AAAA for made-up names under .test,
// HTTPS servers with certificates from a CA the test makes, and a dial
// hook that maps the addresses DNS hands out (127.0.0.x on the ports the
// spec implies: 443, 8448, SRV ports) to the real listeners. The hook
// refuses anything that is not loopback, so no test can send a packet
// elsewhere even if a lookup went astray; netguard still checks every
// address before the hook sees it.

// testCA issues certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

var serial atomic.Int64

// issue makes a leaf certificate for names (DNS names or IP addresses).
func (ca *testCA) issue(t *testing.T, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(100 + serial.Add(1)), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// testDNS is an authoritative-looking DNS server for the test's names.
type testDNS struct {
	addr string
	mu   sync.Mutex
	// negTTL is the SOA minimum sent with negative answers.
	negTTL   uint32
	records  map[string][]dns.RR // lower-case FQDN → records
	servfail map[string]bool
	queries  map[string]int // "name TYPE" → count
}

func newTestDNS(t *testing.T) *testDNS {
	t.Helper()
	d := &testDNS{negTTL: 600, records: map[string][]dns.RR{}, servfail: map[string]bool{}, queries: map[string]int{}}
	// UDP, and TCP on the same port for answers too large for UDP; the
	// port UDP got may be taken for TCP, so try a few.
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
	d.addr = pc.LocalAddr().String()
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

// add adds records in zone-file syntax ("x.test. 300 IN A 127.0.0.1").
func (d *testDNS) add(t *testing.T, lines ...string) {
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

func (d *testDNS) count(name string, qtype uint16) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.queries[strings.ToLower(dns.Fqdn(name))+" "+dns.TypeToString[qtype]]
}

func (d *testDNS) total() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, c := range d.queries {
		n += c
	}
	return n
}

func (d *testDNS) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	d.mu.Lock()
	d.queries[name+" "+dns.TypeToString[q.Qtype]]++
	rrs, exists := d.records[name]
	fail := d.servfail[name]
	negTTL := d.negTTL
	d.mu.Unlock()
	switch {
	case fail:
		m.Rcode = dns.RcodeServerFailure
	default:
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
		if len(m.Answer) == 0 {
			if !exists {
				m.Rcode = dns.RcodeNameError
			}
			m.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: "test.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 3600},
				Ns: "ns.test.", Mbox: "admin.test.", Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: negTTL}}
		}
	}
	// Over UDP, answers over 512 bytes (no EDNS honoured here) are cut
	// and marked truncated, so the client must retry over TCP.
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		m.Truncate(512)
	}
	w.WriteMsg(m)
}

// testClock is an adjustable clock.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fedNet is the test's Internet: DNS, a CA, HTTPS servers and the dial hook.
type fedNet struct {
	t     *testing.T
	dns   *testDNS
	ca    *testCA
	clock *testClock

	mu        sync.Mutex
	forward   map[string]string // dialled "ip:port" → real listener
	listeners map[string]bool   // the real listeners' addresses
	dials     []string
	wellKnown map[string]http.HandlerFunc // Host header → .well-known handler
	hits      map[string]int              // Host → .well-known requests

	// web answers .well-known requests and federation requests for every
	// name; its certificate covers them all.
	web *httptest.Server
}

func newFedNet(t *testing.T) *fedNet {
	t.Helper()
	n := &fedNet{t: t, dns: newTestDNS(t), ca: newTestCA(t, "Hearth test CA"),
		clock:   &testClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)},
		forward: map[string]string{}, listeners: map[string]bool{}, wellKnown: map[string]http.HandlerFunc{}, hits: map[string]int{}}
	n.web = n.serve(t, n.ca.issue(t, "*.test", "127.0.0.1", "127.0.0.2", "127.0.0.5", "::1"), http.HandlerFunc(n.handle))
	return n
}

// serve starts an HTTPS server on 127.0.0.1 with cert; setup, when given,
// adjusts it before it starts.
func (n *fedNet) serve(t *testing.T, cert tls.Certificate, h http.Handler, setup ...func(*http.Server)) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	// Refused handshakes are what several tests are about: not log noise.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	for _, f := range setup {
		f(srv.Config)
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	n.mu.Lock()
	n.listeners[srv.Listener.Addr().String()] = true
	n.mu.Unlock()
	return srv
}

func (n *fedNet) handle(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/.well-known/matrix/server" || strings.HasPrefix(r.URL.Path, "/wk/") {
		n.mu.Lock()
		n.hits[r.Host]++
		h := n.wellKnown[r.Host]
		n.mu.Unlock()
		if h == nil {
			http.NotFound(w, r)
			return
		}
		h(w, r)
		return
	}
	// A federation endpoint: report what arrived.
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{"host": r.Host, "sni": r.TLS.ServerName, "path": r.URL.Path})
}

// route makes dials to virtual ("ip:port") reach the listener of srv.
func (n *fedNet) route(virtual string, srv *httptest.Server) {
	n.mu.Lock()
	n.forward[virtual] = srv.Listener.Addr().String()
	n.mu.Unlock()
}

// serveWellKnown answers GET https://host/.well-known/matrix/server.
func (n *fedNet) serveWellKnown(host string, h http.HandlerFunc) {
	n.mu.Lock()
	n.wellKnown[host] = h
	n.mu.Unlock()
}

func (n *fedNet) wellKnownHits(host string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.hits[host]
}

func jsonWellKnown(server string, cacheControl string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if cacheControl != "" {
			w.Header().Set("Cache-Control", cacheControl)
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"m.server": %q}`, server)
	}
}

// dial is the netguard Dial hook: it records the address, refuses
// anything not on loopback, and connects routed addresses to their
// listener and the test's own listeners as they are. Any other address
// gets "connection refused" without a connection attempt, so no test
// reaches another service on this machine.
func (n *fedNet) dial(ctx context.Context, network, address string) (net.Conn, error) {
	n.mu.Lock()
	n.dials = append(n.dials, address)
	to, routed := n.forward[address]
	own := n.listeners[address]
	n.mu.Unlock()
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("test dialer: %s is not loopback; not connecting", address)
	}
	if !routed {
		if !own {
			addr, _ := net.ResolveTCPAddr("tcp", address)
			return nil, &net.OpError{Op: "dial", Net: network, Addr: addr, Err: syscall.ECONNREFUSED}
		}
		to = address
	}
	var d net.Dialer
	return d.DialContext(ctx, network, to)
}

func (n *fedNet) dialled() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.dials)
}

// loopbackPolicy refuses the built-in private ranges except loopback.
var loopbackPolicy = netguard.Policy{Name: "ip_range_blacklist",
	Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}

// transport makes a Transport on the test network: its DNS, its clock,
// its CA, loopback allowed, the dial hook. opts come after and may
// override.
func (n *fedNet) transport(opts ...TransportOption) *Transport {
	n.t.Helper()
	base := []TransportOption{
		WithResolverOptions(WithDNSServers(n.dns.addr), WithClock(n.clock.now)),
		WithAddressPolicy(loopbackPolicy),
		WithRootCAs(n.ca.pool),
		withDial(n.dial),
	}
	tr, err := NewTransport(append(base, opts...)...)
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// withDial replaces the dialer's connect step (after the policy check).
func withDial(f func(ctx context.Context, network, address string) (net.Conn, error)) TransportOption {
	return func(o *transportOptions) { o.dial = f }
}

func jsonDecode(resp *http.Response, v any) error {
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
