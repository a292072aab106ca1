package appliance

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hearth/appliance/diag/diagtest"
	"hearth/config"
	"hearth/server/servertest"
	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// The ACME tests run Let's Encrypt's test CA, Pebble (Debian package
// pebble), on loopback. Pebble resolves the names it validates through the
// test's DNS server, and connects for HTTP-01 and TLS-ALPN-01 to the ports
// its config names: the test points one of them at Hearth and the other at
// a port where nothing listens, so a certificate can only come through
// the challenge under test.

const pebbleBin = "/usr/bin/pebble"

type pebble struct {
	dir   string // the ACME directory URL
	mgmt  string // the management API (roots)
	caPEM string // our CA, which Pebble's HTTPS certificate chains to
	cmd   *exec.Cmd
	done  chan struct{}
	hc    *http.Client
}

// freePortOn returns a TCP port on ip that was free a moment ago, and
// that it has not returned to t before: the kernel may hand out a port
// just closed again, and a test's Pebble, ACME, client and federation
// listeners on one address then collided ("address already in use").
func freePortOn(t *testing.T, ip netip.Addr) int {
	t.Helper()
	v, _ := portsGiven.LoadOrStore(t, &sync.Map{})
	given := v.(*sync.Map)
	for {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if _, dup := given.LoadOrStore(port, true); !dup {
			return port
		}
	}
}

// portsGiven holds, per test, the ports freePortOn returned.
var portsGiven sync.Map

// startPebble runs Pebble, validating on httpPort and tlsPort, issuing
// certificates valid for validity. Its listeners are on an address of
// 127.0.0.0/8 of the test's own, so a port picked free is not taken by
// something else before Pebble binds it (it takes seconds to start);
// should that still happen, it is started again.
func startPebble(t *testing.T, dnsAddr string, httpPort, tlsPort int, validity time.Duration) *pebble {
	t.Helper()
	if _, err := os.Stat(pebbleBin); err != nil {
		t.Skip("ACME test skipped: " + pebbleBin + " is not installed (apt-get install pebble)")
	}
	for attempt := 1; ; attempt++ {
		p, err := tryPebble(t, dnsAddr, httpPort, tlsPort, validity)
		if err == nil {
			return p
		}
		if attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("pebble, attempt %d: %v", attempt, err)
	}
}

func tryPebble(t *testing.T, dnsAddr string, httpPort, tlsPort int, validity time.Duration) (*pebble, error) {
	ca := diagtest.NewCA(t)
	dir := t.TempDir()
	ip := diagtest.Host()
	certFile, keyFile := diagtest.WriteFiles(t, dir, ca.Leaf(t, ip.String(), "localhost"))
	listen, mgmt := net.JoinHostPort(ip.String(), strconv.Itoa(freePortOn(t, ip))), net.JoinHostPort(ip.String(), strconv.Itoa(freePortOn(t, ip)))
	conf, _ := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress": listen, "managementListenAddress": mgmt, "certificate": certFile, "privateKey": keyFile,
		"httpPort": httpPort, "tlsPort": tlsPort, "ocspResponderURL": "", "externalAccountBindingRequired": false,
		"certificateValidityPeriod": int(validity / time.Second)}})
	confFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(confFile, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	p := &pebble{dir: "https://" + listen + "/dir", mgmt: "https://" + mgmt, caPEM: ca.RootFile, done: make(chan struct{}),
		hc: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}}
	p.cmd = exec.Command(pebbleBin, "-config", confFile, "-dnsserver", dnsAddr, "-strict=false")
	p.cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	logFile, _ := os.Create(filepath.Join(dir, "pebble.log"))
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			log, _ := os.ReadFile(logFile.Name())
			t.Logf("pebble log:\n%s", log)
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		select {
		case <-p.done:
			log, _ := os.ReadFile(logFile.Name())
			return nil, fmt.Errorf("pebble exited:\n%s", log)
		default:
		}
		resp, err := p.hc.Get(p.dir)
		if err == nil {
			resp.Body.Close()
			if resp, err = p.hc.Get(p.mgmt + "/roots/0"); err == nil {
				resp.Body.Close()
				return p, nil
			}
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("pebble did not start: %w", err)
		}
	}
}

func (p *pebble) stop() {
	select {
	case <-p.done:
	default:
		p.cmd.Process.Kill()
		<-p.done
	}
}

// root is Pebble's issuing root, which it makes afresh on every start.
func (p *pebble) root(t *testing.T) *x509.CertPool {
	t.Helper()
	resp, err := p.hc.Get(p.mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(raw) {
		t.Fatalf("pebble root: %q", raw)
	}
	return pool
}

// served connects to addr with SNI name and returns the leaf, verified
// against roots for name.
func served(addr, name string, roots *x509.CertPool) (*x509.Certificate, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{ServerName: name, RootCAs: roots})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

// waitServed polls until addr serves a certificate for name that chains
// to roots and that accept takes.
func waitServed(t *testing.T, addr, name string, roots *x509.CertPool, accept func(*x509.Certificate) bool) *x509.Certificate {
	t.Helper()
	var last error
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		c, err := served(addr, name, roots)
		if err == nil && accept(c) {
			return c
		}
		last = err
	}
	t.Fatalf("no acceptable certificate for %s at %s: %v", name, addr, last)
	return nil
}

// acmeConfig is a server named acme.test on ip: a client listener and a
// federation listener with TLS, the HTTP-01 listener on httpPort.
func acmeConfig(t *testing.T, e storagetest.Engine, ip netip.Addr, httpPort int, p *pebble) (cfg *config.Config, clientAddr, fedAddr string) {
	t.Helper()
	cfg = servertest.Config(t, t.TempDir())
	cfg.ServerName = "acme.test"
	if e.Name == "postgres" {
		cfg.Database = config.Database{Name: "psycopg2", Args: config.DatabaseArgs{DSN: e.Options.Postgres}}
	} else {
		cfg.Database.Args.Database = e.Options.SQLitePath
	}
	clientPort, fedPort := freePortOn(t, ip), freePortOn(t, ip)
	cfg.Listeners = []config.Listener{
		{Port: clientPort, BindAddresses: []string{ip.String()}, Type: "http", TLS: true, Resources: []config.Resource{{Names: []string{"client"}}}},
		{Port: fedPort, BindAddresses: []string{ip.String()}, Type: "http", TLS: true, Resources: []config.Resource{{Names: []string{"federation"}}}},
	}
	cfg.ACME = config.ACME{Enabled: true, URL: p.dir, CARoot: p.caPEM, Email: "admin@acme.test", Port: httpPort, BindAddresses: []string{ip.String()}}
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg, net.JoinHostPort(ip.String(), strconv.Itoa(clientPort)), net.JoinHostPort(ip.String(), strconv.Itoa(fedPort))
}

// waitCached polls the store's ACME cache until name's certificate is
// one accept takes (autocert serves a new certificate a moment before it
// has stored it).
func waitCached(t *testing.T, e storagetest.Engine, name string, accept func(*x509.Certificate) bool) *x509.Certificate {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		c, err := cachedCert(e, name)
		if err == nil && accept(c) {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("acme cache %s: %v, %v", name, c, err)
		}
	}
}

// cachedCert is the certificate in the store's ACME cache for name.
func cachedCert(e storagetest.Engine, name string) (*x509.Certificate, error) {
	st, err := storage.Open(context.Background(), e.Options)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	data, err := st.CertCache().Get(context.Background(), name)
	if err != nil {
		return nil, err
	}
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			return nil, errors.New("no certificate in the cache entry")
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
}

// TestACMEHTTP01: Pebble can reach only the HTTP-01 listener. Hearth gets
// a certificate, keeps it in the database, serves it on the client and
// federation listeners (by SNI), and redirects plain HTTP to HTTPS.
func TestACMEHTTP01(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		z := diagtest.NewDNS(t)
		ip := diagtest.Host()
		z.Add(t, "acme.test. 60 IN A "+ip.String())
		httpPort, deadPort := freePortOn(t, ip), freePortOn(t, ip)
		// Valid longer than the default reprovision threshold (30 days),
		// so no renewal starts during the test.
		p := startPebble(t, z.Addr, httpPort, deadPort, 90*24*time.Hour)
		cfg, clientAddr, fedAddr := acmeConfig(t, e, ip, httpPort, p)
		startApp(t, cfg, "")
		roots := p.root(t)
		leaf := waitServed(t, clientAddr, "acme.test", roots, func(*x509.Certificate) bool { return true })
		if !strings.Contains(strings.Join(leaf.DNSNames, ","), "acme.test") {
			t.Fatalf("certificate names %v", leaf.DNSNames)
		}
		fed, err := served(fedAddr, "acme.test", roots)
		if err != nil || fed.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
			t.Fatalf("federation listener: %v (serial %v, client listener's %v)", err, fed, leaf.SerialNumber)
		}
		waitCached(t, e, "acme.test", func(c *x509.Certificate) bool { return c.SerialNumber.Cmp(leaf.SerialNumber) == 0 })
		// Plain HTTP on the challenge port redirects to HTTPS.
		hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		req, _ := http.NewRequest("GET", "http://"+net.JoinHostPort(ip.String(), strconv.Itoa(httpPort))+"/_matrix/client/versions", nil)
		req.Host = "acme.test"
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); resp.StatusCode/100 != 3 || loc != "https://acme.test/_matrix/client/versions" {
			t.Fatalf("port %d: %d Location %q", httpPort, resp.StatusCode, loc)
		}
		// A name not configured gets no certificate.
		if _, err := served(clientAddr, "evil.test", nil); err == nil {
			t.Fatal("a certificate for an unconfigured name")
		}
	})
}

// TestACMETLSALPN01: Pebble can reach only the TLS listener. Hearth gets a
// certificate through TLS-ALPN-01, renews it (the reprovision threshold is
// longer than Pebble's certificates live), and a second start with Pebble
// gone serves the stored certificate without asking the CA.
func TestACMETLSALPN01(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		z := diagtest.NewDNS(t)
		ip := diagtest.Host()
		z.Add(t, "acme.test. 60 IN A "+ip.String())
		httpPort, deadPort := freePortOn(t, ip), freePortOn(t, ip)
		// Pebble validates TLS-ALPN-01 on the client listener's port,
		// which acmeConfig picks: reserve it here.
		tlsPort := freePortOn(t, ip)
		p := startPebble(t, z.Addr, deadPort, tlsPort, 2*time.Hour)
		cfg, _, _ := acmeConfig(t, e, ip, httpPort, p)
		cfg.Listeners[0].Port = tlsPort
		clientAddr := net.JoinHostPort(ip.String(), strconv.Itoa(tlsPort))
		cfg.ACME.ReprovisionThreshold = config.Duration(3 * time.Hour)
		a := startApp(t, cfg, "")
		roots := p.root(t)
		first := waitServed(t, clientAddr, "acme.test", roots, func(*x509.Certificate) bool { return true })
		// Renewal: a certificate with another serial replaces it, in the
		// store and on the listener.
		renewed := waitServed(t, clientAddr, "acme.test", roots, func(c *x509.Certificate) bool { return c.SerialNumber.Cmp(first.SerialNumber) != 0 })
		cached := waitCached(t, e, "acme.test", func(c *x509.Certificate) bool { return c.SerialNumber.Cmp(first.SerialNumber) != 0 })
		if renewed.SerialNumber.Cmp(cached.SerialNumber) != 0 && renewed.NotBefore.After(cached.NotBefore) {
			t.Fatalf("the listener serves a newer certificate than the store holds")
		}
		a.stop(t)
		p.stop()

		// Second start, with a threshold the stored certificate is far
		// from and a "CA" that counts what it is asked: the stored
		// certificate is served and the CA is not asked anything.
		stored := waitCached(t, e, "acme.test", func(*x509.Certificate) bool { return true })
		var asked atomic.Int32
		ca := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			asked.Add(1)
			http.Error(w, "no", http.StatusServiceUnavailable)
		}))
		defer ca.Close()
		caFile := filepath.Join(t.TempDir(), "ca.pem")
		os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Certificate().Raw}), 0o600)
		cfg.ACME.URL, cfg.ACME.CARoot = ca.URL+"/dir", caFile
		cfg.ACME.ReprovisionThreshold = config.Duration(90 * time.Minute)
		startApp(t, cfg, "")
		got := waitServed(t, clientAddr, "acme.test", roots, func(*x509.Certificate) bool { return true })
		if got.SerialNumber.Cmp(stored.SerialNumber) != 0 {
			t.Fatalf("second start serves serial %v, stored %v", got.SerialNumber, stored.SerialNumber)
		}
		time.Sleep(time.Second)
		if n := asked.Load(); n != 0 {
			t.Fatalf("the second start asked the CA %d times", n)
		}
	})
}

// TestACMEPortTaken: port 80 (acme.port) already held stops the start
// with an error naming the port.
func TestACMEPortTaken(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		ip := diagtest.Host()
		held, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
		if err != nil {
			t.Fatal(err)
		}
		defer held.Close()
		port := held.Addr().(*net.TCPAddr).Port
		cfg, _, _ := acmeConfig(t, e, ip, port, &pebble{dir: "https://127.0.0.1:1/dir"})
		err = Run(context.Background(), cfg, Options{})
		if err == nil || !strings.Contains(err.Error(), "acme.port") || !strings.Contains(err.Error(), strconv.Itoa(port)) {
			t.Fatalf("start with port %d taken: %v", port, err)
		}
		var oe *net.OpError
		if !errors.As(err, &oe) {
			t.Fatalf("the cause is not kept: %v", err)
		}
	})
}
