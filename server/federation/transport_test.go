package federation

import (
	"context"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"hearth/config"
	"hearth/server/netguard"
)

// get requests path from serverName through tr and decodes what the test
// server saw.
func get(t *testing.T, tr *Transport, serverName, path string) (map[string]string, error) {
	t.Helper()
	resp, err := (&http.Client{Transport: tr}).Get(Scheme + "://" + serverName + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var seen map[string]string
	return seen, jsonDecode(resp, &seen)
}

func TestTransportRequests(t *testing.T) {
	n := newFedNet(t)
	var conns atomic.Int64
	srv := n.serve(t, n.ca.issue(t, "fed.test"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/_matrix/federation/v1/send/1":
			body, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"method":"`+r.Method+`","body":`+string(body)+`,"host":"`+r.Host+`"}`)
		case "/moved":
			http.Redirect(w, r, "/_matrix/federation/v1/version", http.StatusFound)
		case "/slow":
			time.Sleep(300 * time.Millisecond)
			io.WriteString(w, `{}`)
		default:
			n.handle(w, r)
		}
	}), func(s *http.Server) {
		s.ConnState = func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		}
	})
	// fed.test delegates to its SRV target on 127.0.0.1 through .well-known.
	n.dns.add(t, "fed.test. 300 IN A 127.0.0.4",
		"_matrix-fed._tcp.fed.test. 300 IN SRV 10 5 8448 host.fed.test.", "host.fed.test. 300 IN A 127.0.0.20")
	n.route("127.0.0.20:8448", srv)
	tr := n.transport(WithTimeouts(Timeouts{ResponseHeader: 100 * time.Millisecond}))
	client := &http.Client{Transport: tr}

	// A PUT with a body, then more requests: one connection for them all.
	for i := range 3 {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, Scheme+"://fed.test/_matrix/federation/v1/send/1",
			strings.NewReader(`{"pdus":[]}`))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != `{"method":"PUT","body":{"pdus":[]},"host":"fed.test"}` {
			t.Fatalf("request %d: %s", i, body)
		}
	}
	if c := conns.Load(); c != 1 {
		t.Fatalf("%d connections for 3 requests to one destination, want 1 (reuse)", c)
	}
	// A relative redirect stays on the federation scheme and destination.
	resp, err := client.Get(Scheme + "://fed.test/moved")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Request.URL.String() != Scheme+"://fed.test/_matrix/federation/v1/version" {
		t.Fatalf("redirect ended at %s", resp.Request.URL)
	}

	// Slow response headers: the transport's timeout, unless the request
	// carries its own deadline.
	_, err = client.Get(Scheme + "://fed.test/slow")
	if err == nil || !strings.Contains(err.Error(), "no response headers in time (100ms)") || !strings.Contains(err.Error(), "fed.test") {
		t.Fatalf("slow headers: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, Scheme+"://fed.test/slow", nil)
	resp, err = client.Do(req)
	if err != nil {
		t.Fatalf("slow headers within the caller's deadline: %v", err)
	}
	resp.Body.Close()

	// Not the federation scheme: refused, the body closed.
	body := &closeRecorder{Reader: strings.NewReader("x")}
	req, _ = http.NewRequest(http.MethodPost, "https://fed.test/", body)
	if _, err := tr.RoundTrip(req); err == nil || !body.closed {
		t.Fatalf("https URL: %v, body closed %v", err, body.closed)
	}
}

type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

// TestTransportFailover: SRV targets are tried in order; one that refuses
// the connection or presents a bad certificate is skipped.
func TestTransportFailover(t *testing.T) {
	n := newFedNet(t)
	good := n.serve(t, n.ca.issue(t, "multi.test"), http.HandlerFunc(n.handle))
	wrong := n.serve(t, n.ca.issue(t, "other.test"), http.HandlerFunc(n.handle))
	n.dns.add(t,
		"_matrix-fed._tcp.multi.test. 300 IN SRV 1 0 8448 down.multi.test.",
		"_matrix-fed._tcp.multi.test. 300 IN SRV 2 0 8448 wrong.multi.test.",
		"_matrix-fed._tcp.multi.test. 300 IN SRV 3 0 8448 up.multi.test.",
		"down.multi.test. 300 IN A 127.0.0.21",
		"wrong.multi.test. 300 IN A 127.0.0.22",
		"up.multi.test. 300 IN A 127.0.0.23",
	)
	n.route("127.0.0.22:8448", wrong)
	n.route("127.0.0.23:8448", good)
	tr := n.transport()
	seen, err := get(t, tr, "multi.test", "/x")
	if err != nil || seen["sni"] != "multi.test" {
		t.Fatalf("failover: %v %v", seen, err)
	}
	var tried []string
	for _, a := range n.dialled() {
		if strings.HasSuffix(a, ":8448") {
			tried = append(tried, a)
		}
	}
	if !slices.Equal(tried, []string{"127.0.0.21:8448", "127.0.0.22:8448", "127.0.0.23:8448"}) {
		t.Fatalf("tried %v", tried)
	}

	// With every target failing, the error lists each, with the step.
	n.mu.Lock()
	delete(n.forward, "127.0.0.23:8448")
	n.mu.Unlock()
	tr.CloseIdleConnections()
	_, err = get(t, tr, "multi.test", "/x")
	var fe *Error
	if !errors.As(err, &fe) || fe.Op != "connect" || fe.Destination != "multi.test" || fe.Resolution == nil {
		t.Fatalf("all down: %v", err)
	}
	for _, want := range []string{"federation request to multi.test: connect:", "down.multi.test:8448: dial tcp 127.0.0.21:8448: connection refused",
		"wrong.multi.test:8448: TLS handshake (certificate for multi.test)", "valid for other.test, not multi.test",
		"step 4 (SRV _matrix-fed._tcp)", "Host multi.test"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
}

func TestTransportCertificates(t *testing.T) {
	n := newFedNet(t)
	other := newTestCA(t, "Someone else's CA")
	wrongName := n.serve(t, n.ca.issue(t, "other.test", "127.0.0.1"), http.HandlerFunc(n.handle))
	untrusted := n.serve(t, other.issue(t, "untrusted.test"), http.HandlerFunc(n.handle))
	ipOnly := n.serve(t, n.ca.issue(t, "127.0.0.32"), http.HandlerFunc(n.handle))
	n.dns.add(t, "wrongname.test. 300 IN A 127.0.0.30", "untrusted.test. 300 IN A 127.0.0.31")
	n.route("127.0.0.30:8448", wrongName)
	n.route("127.0.0.31:8448", untrusted)
	n.route("127.0.0.32:8448", ipOnly)
	tr := n.transport()

	_, err := get(t, tr, "wrongname.test:8448", "/x")
	if err == nil || !strings.Contains(err.Error(), "certificate is valid for other.test") ||
		!strings.Contains(err.Error(), "step 2 (hostname with explicit port)") {
		t.Fatalf("certificate for another name: %v", err)
	}
	// The certificate's IP address does not stand in for the name.
	if _, err := get(t, tr, "127.0.0.30:8448", "/x"); err == nil || !strings.Contains(err.Error(), "127.0.0.30") {
		t.Fatalf("certificate without the IP: %v", err)
	}
	if _, err := get(t, tr, "untrusted.test:8448", "/x"); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("untrusted CA: %v", err)
	}
	// The custom CA list replaces the system roots, and a certificate
	// for the right IP from our CA is accepted.
	if _, err := get(t, tr, "127.0.0.32:8448", "/x"); err != nil {
		t.Fatalf("IP certificate: %v", err)
	}

	// federation_verify_certificates: false accepts both, SNI still sent.
	insecure := n.transport(WithoutCertificateVerification())
	for _, name := range []string{"wrongname.test:8448", "untrusted.test:8448"} {
		seen, err := get(t, insecure, name, "/x")
		if err != nil || seen["sni"] != strings.TrimSuffix(name, ":8448") {
			t.Fatalf("unverified %s: %v %v", name, seen, err)
		}
	}
	// Without our CA (the system roots only), our certificates fail.
	system := n.transport(WithRootCAs(nil))
	if _, err := get(t, system, "127.0.0.32:8448", "/x"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("system roots accepted the test CA: %v", err)
	}
}

func TestTransportDomainWhitelist(t *testing.T) {
	n := newFedNet(t)
	n.dns.add(t, "_matrix-fed._tcp.allowed.test. 300 IN SRV 10 5 8448 a.allowed.test.", "a.allowed.test. 300 IN A 127.0.0.40")
	n.route("127.0.0.40:8448", n.web)
	tr := n.transport(WithDomainWhitelist([]string{"Allowed.test", "127.0.0.41:8448"}))
	for _, name := range []string{"denied.test", "allowed.test:8448", "127.0.0.41", "evil.allowed.test"} {
		body := &closeRecorder{Reader: strings.NewReader("{}")}
		req, _ := http.NewRequest(http.MethodPut, Scheme+"://"+name+"/_matrix/federation/v1/send/1", body)
		_, err := tr.RoundTrip(req)
		var fe *Error
		if !errors.Is(err, ErrNotWhitelisted) || !errors.As(err, &fe) || fe.Destination != name || fe.Op != "whitelist" || !body.closed {
			t.Fatalf("%s: %v (body closed %v)", name, err, body.closed)
		}
	}
	// Refused without any network I/O: no DNS query, no dial.
	if q, d := n.dns.total(), n.dialled(); q != 0 || len(d) != 0 {
		t.Fatalf("refusals caused %d DNS queries and dials %v", q, d)
	}
	if _, err := get(t, tr, "allowed.test", "/x"); err != nil {
		t.Fatalf("whitelisted: %v", err)
	}
	// An empty whitelist refuses everyone; nil allows everyone.
	if none := n.transport(WithDomainWhitelist([]string{})); none.Allowed("allowed.test") {
		t.Error("an empty whitelist allows")
	}
	if all := n.transport(WithDomainWhitelist(nil)); !all.Allowed("anything.test") {
		t.Error("no whitelist refuses")
	}
}

// TestTransportAddressFiltering: destinations whose addresses (after DNS)
// are private are refused without dialling them, at every stage.
func TestTransportAddressFiltering(t *testing.T) {
	n := newFedNet(t)
	n.dns.add(t,
		"rfc1918.test. 300 IN A 10.0.0.1",
		"metadata.test. 300 IN A 169.254.169.254",
		"ula.test. 300 IN AAAA fd00::1",
		"cgnat.test. 300 IN A 100.64.0.1",
		"_matrix-fed._tcp.srv-private.test. 300 IN SRV 10 5 8448 inside.test.",
		"inside.test. 300 IN A 192.168.1.10",
		"inside.test. 300 IN AAAA fe80::1",
		// The .well-known host is private: not fetched; its SRV is.
		"wk-private.test. 300 IN A 172.16.0.1",
		"_matrix-fed._tcp.wk-private.test. 300 IN SRV 10 5 8448 rfc1918.test.",
		// A name with a private and a loopback address.
		"mixed.test. 300 IN A 10.1.1.1",
		"mixed.test. 300 IN A 127.0.0.50",
		"loop.test. 300 IN A 127.0.0.1",
	)
	n.route("127.0.0.50:8448", n.web)
	tr := n.transport()
	for _, name := range []string{"rfc1918.test:8448", "metadata.test:80", "ula.test:8448", "cgnat.test:8448",
		"srv-private.test", "wk-private.test", "10.0.0.1", "[fe80::1]:8448", "[::ffff:192.168.0.1]:8448", "0.0.0.0:8448"} {
		_, err := get(t, tr, name, "/x")
		var re *netguard.RefusedError
		if !errors.Is(err, netguard.ErrRefused) || !errors.As(err, &re) || re.Policy != "ip_range_blacklist" || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v, want a refusal naming it", name, err)
		}
	}
	if d := n.dialled(); len(d) != 0 {
		t.Fatalf("refused addresses reached the dialler: %v", d)
	}
	// Only the allowed address of a mixed answer is dialled.
	if _, err := get(t, tr, "mixed.test:8448", "/x"); err != nil {
		t.Fatal(err)
	}
	if d := n.dialled(); !slices.Equal(d, []string{"127.0.0.50:8448"}) {
		t.Fatalf("dialled %v", d)
	}

	// Without the loopback exception (the production policy), even
	// loopback is refused before dialling, for requests and .well-known.
	strict := n.transport(WithAddressPolicy(netguard.Policy{Name: "ip_range_blacklist"}))
	before := len(n.dialled())
	port := n.web.Listener.Addr().(*net.TCPAddr).Port
	for _, name := range []string{"127.0.0.1:" + strconv.Itoa(port), "loop.test", "[::1]:8448"} {
		if _, err := get(t, strict, name, "/x"); !errors.Is(err, netguard.ErrRefused) {
			t.Errorf("%s with the default policy: %v", name, err)
		}
	}
	if d := n.dialled()[before:]; len(d) != 0 {
		t.Fatalf("the default policy dialled %v", d)
	}
	// ip_range_blacklist adds ranges: a public address in it is refused
	// before dialling; outside it, it reaches the dialler (whose test hook
	// refuses everything off loopback).
	n.dns.add(t, "public.test. 300 IN A 93.184.216.34")
	deny := n.transport(WithAddressPolicy(netguard.Policy{Name: "ip_range_blacklist",
		Deny: []netip.Prefix{netip.MustParsePrefix("93.184.216.0/24")}}))
	before = len(n.dialled())
	if _, err := get(t, deny, "public.test:8448", "/x"); !errors.Is(err, netguard.ErrRefused) {
		t.Fatalf("denied range: %v", err)
	}
	if d := n.dialled()[before:]; len(d) != 0 {
		t.Fatalf("denied range dialled %v", d)
	}
	if _, err := get(t, strict, "public.test:8448", "/x"); err == nil || errors.Is(err, netguard.ErrRefused) ||
		!slices.Equal(n.dialled()[before:], []string{"93.184.216.34:8448"}) {
		t.Fatalf("public address: %v, dialled %v", err, n.dialled()[before:])
	}
}

func TestTransportResolveErrors(t *testing.T) {
	n := newFedNet(t)
	n.dns.mu.Lock()
	n.dns.servfail["_matrix-fed._tcp.broken.test."] = true
	n.dns.mu.Unlock()
	tr := n.transport()
	_, err := get(t, tr, "broken.test", "/x")
	var fe *Error
	if !errors.As(err, &fe) || fe.Op != "resolve" || fe.Resolution != nil ||
		!strings.Contains(err.Error(), "federation request to broken.test: resolve:") || !strings.Contains(err.Error(), "step 4") {
		t.Fatalf("SERVFAIL: %v", err)
	}
	if _, err := get(t, tr, "not a name", "/x"); err == nil {
		t.Fatal("bad server name accepted")
	}
}

func TestTransportFromConfig(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "config CA")
	pemPath := filepath.Join(dir, "ca.pem")
	writePEM(t, pemPath, ca.cert.Raw)
	verifyOff := false
	cfg := &config.Config{
		FederationCustomCAList:       []string{pemPath},
		FederationVerifyCertificates: &verifyOff,
		FederationDomainWhitelist:    []string{"a.test"},
		IPRangeWhitelist:             []string{"127.0.0.1"},
		IPRangeBlacklist:             []string{"8.8.8.0/24"},
	}
	tr, err := NewTransportFromConfig(cfg, WithResolverOptions(WithDNSServers("127.0.0.1:1")))
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Allowed("a.test") || tr.Allowed("b.test") || !tr.tlsConfig.InsecureSkipVerify || tr.tlsConfig.RootCAs == nil ||
		!tr.dialer.Policy.Allowed(mustAddr("127.0.0.1")) || tr.dialer.Policy.Allowed(mustAddr("8.8.8.8")) ||
		tr.dialer.Policy.Allowed(mustAddr("10.0.0.1")) || tr.dialer.Policy.Name != "ip_range_blacklist" {
		t.Fatalf("options not applied: %+v %+v", tr.tlsConfig, tr.dialer.Policy)
	}
	// A CA file that went missing since the config was loaded.
	cfg.FederationCustomCAList = []string{filepath.Join(dir, "gone.pem")}
	if _, err := NewTransportFromConfig(cfg); err == nil || !strings.Contains(err.Error(), "federation_custom_ca_list[0]") {
		t.Fatalf("missing CA file: %v", err)
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func writePEM(t *testing.T, path string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
