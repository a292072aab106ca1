package diag_test

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hearth/appliance/diag"
	"hearth/appliance/diag/diagtest"
	"hearth/config"
	"hearth/server/rooms"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// world is the test's Internet: its DNS, its CA, and the tester's own
// config, which trusts the CA and may dial loopback (ip_range_whitelist),
// as an operator would set it for a private network.
type world struct {
	dns *diagtest.DNS
	ca  *diagtest.CA
	cfg *config.Config
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{dns: diagtest.NewDNS(t), ca: diagtest.NewCA(t)}
	w.cfg = servertest.Config(t, t.TempDir())
	w.cfg.ServerName = "tester.test"
	w.cfg.FederationCustomCAList = []string{w.ca.RootFile}
	w.cfg.IPRangeWhitelist = []string{"127.0.0.0/8", "::1/128"}
	w.cfg.FederationDomainWhitelist = nil
	return w
}

func (w *world) tester(t *testing.T, cfg *config.Config, unsigned ...bool) *diag.Tester {
	t.Helper()
	if cfg == nil {
		cfg = w.cfg
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	tr, err := diag.New(diag.Options{Config: cfg, DNSServers: []string{w.dns.Addr}, Unsigned: len(unsigned) > 0 && unsigned[0]})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.Close)
	return tr
}

// fakeServer answers the key and version endpoints for name, signed with
// its own key, valid until validUntil.
func fakeServer(t *testing.T, name string, validUntil time.Time) http.Handler {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(nil)
	key := rooms.SigningKey{ServerName: name, KeyID: "ed25519:fake", Private: priv}
	raw, _ := json.Marshal(map[string]any{"server_name": name, "valid_until_ts": validUntil.UnixMilli(), "old_verify_keys": map[string]any{},
		"verify_keys": map[string]any{"ed25519:fake": map[string]string{"key": base64.RawStdEncoding.EncodeToString(pub)}}})
	signed, err := rooms.SignJSON(raw, key)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_matrix/key/v2/server", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(signed)
	})
	mux.HandleFunc("GET /_matrix/federation/v1/version", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"server":{"name":"Fake","version":"1"}}`))
	})
	return mux
}

// find returns the findings of check (prefix) with status.
func find(fs []diag.Finding, check string, status diag.Status) []diag.Finding {
	var out []diag.Finding
	for _, f := range fs {
		if strings.HasPrefix(f.Check, check) && f.Status == status {
			out = append(out, f)
		}
	}
	return out
}

func fails(fs []diag.Finding) string {
	var s []string
	for _, f := range fs {
		if f.Status == diag.Fail {
			s = append(s, f.Check+": "+f.Message)
		}
	}
	return strings.Join(s, "\n")
}

// TestFederationTestGoodSetUp: a real Hearth server, delegated by its own
// .well-known (serve_server_wellknown) to matrix.good.test:443, with full
// certificate chains, passes every check; the JSON has the public
// tester's shape; a signed request from the tester's server is accepted.
func TestFederationTestGoodSetUp(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		w := newWorld(t)
		ip1, ip2 := diagtest.Host(), diagtest.Host()
		b := servertest.Start(t, e, func(c *config.Config) {
			c.ServerName = "good.test"
			c.ServeServerWellKnown = true
			c.PublicBaseURL = "https://matrix.good.test"
		})
		h := b.HTTP.Config.Handler
		diagtest.ServeTLS(t, diagtest.Listen(t, ip1, 443), w.ca.Leaf(t, "good.test"), h)
		diagtest.ServeTLS(t, diagtest.Listen(t, ip2, 443), w.ca.Leaf(t, "matrix.good.test"), h)
		w.dns.Add(t, "good.test. 60 IN A "+ip1.String(), "matrix.good.test. 60 IN A "+ip2.String())

		// tester.test cannot be reached by good.test (it has no listener),
		// so no signed request: TestOutboundAndSignatures covers that.
		r := w.tester(t, nil, true).FederationTest(t.Context(), "good.test")
		if f := fails(r.Findings); f != "" || !r.FederationOK {
			t.Fatalf("good set-up: FederationOK %v, failures:\n%s\nverdict %s", r.FederationOK, f, r.Verdict)
		}
		addr := net.JoinHostPort(ip2.String(), "443")
		cr, ok := r.ConnectionReports[addr]
		if !ok || r.WellKnownResult.Server != "matrix.good.test:443" || r.Version.Name != "Hearth" || r.Outbound != nil {
			t.Fatalf("report: %+v", r)
		}
		if !cr.Checks.AllChecksOK || !cr.Checks.ValidCertificates || !cr.Checks.MatchingServerName || len(cr.Certificates) != 2 || cr.Cipher.Version == "" {
			t.Fatalf("connection report: %+v", cr)
		}
		if len(find(r.Findings, "wellknown", diag.OK)) != 1 || r.Resolution.Step != "step 3.2 (.well-known delegation with explicit port)" {
			t.Fatalf("resolution %+v, findings %+v", r.Resolution, r.Findings)
		}
		// The shape of matrix-federation-tester's /api/report.
		raw, _ := json.Marshal(r)
		var shape map[string]json.RawMessage
		json.Unmarshal(raw, &shape)
		for _, k := range []string{"WellKnownResult", "DNSResult", "ConnectionReports", "ConnectionErrors", "Version", "FederationOK"} {
			if _, ok := shape[k]; !ok {
				t.Fatalf("report JSON lacks %s: %s", k, raw)
			}
		}
		var wk map[string]any
		json.Unmarshal(shape["WellKnownResult"], &wk)
		if wk["m.server"] != "matrix.good.test:443" {
			t.Fatalf("WellKnownResult: %s", shape["WellKnownResult"])
		}
	})
}

// TestFederationTestMistakes: each common mistake that one machine can
// reproduce is reported by the check meant to catch it, with its
// explanation.
func TestFederationTestMistakes(t *testing.T) {
	w := newWorld(t)
	future := time.Now().Add(24 * time.Hour)

	// HTML served as the .well-known; nothing on 8448.
	ipH := diagtest.Host()
	w.dns.Add(t, "html.test. 60 IN A "+ipH.String())
	diagtest.ServeTLS(t, diagtest.Listen(t, ipH, 443), w.ca.Leaf(t, "html.test"), http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/html; charset=utf-8")
		rw.Write([]byte("<!DOCTYPE html><html><body>Welcome to my blog</body></html>"))
	}))
	// No .well-known (404), nothing on 8448.
	ipM := diagtest.Host()
	w.dns.Add(t, "missing.test. 60 IN A "+ipM.String())
	diagtest.ServeTLS(t, diagtest.Listen(t, ipM, 443), w.ca.Leaf(t, "missing.test"), http.NotFoundHandler())
	// SRV whose target is a CNAME.
	ipS := diagtest.Host()
	lnS := diagtest.Listen(t, ipS, 0)
	portS := lnS.Addr().(*net.TCPAddr).Port
	diagtest.ServeTLS(t, lnS, w.ca.Leaf(t, "srvcname.test"), fakeServer(t, "srvcname.test", future))
	w.dns.Add(t, fmt.Sprintf("_matrix-fed._tcp.srvcname.test. 60 IN SRV 10 5 %d alias.srvcname.test.", portS),
		"alias.srvcname.test. 60 IN CNAME real.srvcname.test.", "real.srvcname.test. 60 IN A "+ipS.String())
	// SRV, with a certificate only for the SRV target.
	ipT := diagtest.Host()
	lnT := diagtest.Listen(t, ipT, 0)
	diagtest.ServeTLS(t, lnT, w.ca.Leaf(t, "target.srvcert.test"), fakeServer(t, "srvcert.test", future))
	w.dns.Add(t, fmt.Sprintf("_matrix-fed._tcp.srvcert.test. 60 IN SRV 10 5 %d target.srvcert.test.", lnT.Addr().(*net.TCPAddr).Port),
		"target.srvcert.test. 60 IN A "+ipT.String())
	// Plain servers on 8448 with the certificate mistakes and an expired key.
	on8448 := func(name string, cert tls.Certificate, h http.Handler) {
		ip := diagtest.Host()
		w.dns.Add(t, name+". 60 IN A "+ip.String())
		diagtest.ServeTLS(t, diagtest.Listen(t, ip, 8448), cert, h)
	}
	on8448("wrongname.test", w.ca.Leaf(t, "other.test"), fakeServer(t, "wrongname.test", future))
	on8448("nointer.test", w.ca.LeafOnly(t, "nointer.test"), fakeServer(t, "nointer.test", future))
	on8448("selfsigned.test", diagtest.SelfSigned(t, "selfsigned.test"), fakeServer(t, "selfsigned.test", future))
	on8448("expiredkey.test", w.ca.Leaf(t, "expiredkey.test"), fakeServer(t, "expiredkey.test", time.Now().Add(-time.Hour)))
	// An AAAA record with nothing listening on IPv6.
	ipV := diagtest.Host()
	lnV := diagtest.Listen(t, ipV, 0)
	diagtest.ServeTLS(t, lnV, w.ca.Leaf(t, "nov6.test"), fakeServer(t, "nov6.test", future))
	w.dns.Add(t, fmt.Sprintf("_matrix-fed._tcp.nov6.test. 60 IN SRV 10 5 %d host.nov6.test.", lnV.Addr().(*net.TCPAddr).Port),
		"host.nov6.test. 60 IN A "+ipV.String(), "host.nov6.test. 60 IN AAAA ::1")
	// Delegated to a port that speaks plain HTTP (the client port).
	ipP := diagtest.Host()
	lnP := diagtest.Listen(t, ipP, 0)
	diagtest.Serve(t, lnP, fakeServer(t, "wrongport.test", future))
	diagtest.ServeTLS(t, diagtest.Listen(t, ipP, 443), w.ca.Leaf(t, "wrongport.test"), http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(rw, `{"m.server": "wrongport.test:%d"}`, lnP.Addr().(*net.TCPAddr).Port)
	}))
	w.dns.Add(t, "wrongport.test. 60 IN A "+ipP.String())

	cases := []struct {
		server, check, says string
	}{
		{"html.test", "wellknown", "answers with an HTML page"},
		{"missing.test", "connect", "Nothing listens on " + ipM.String() + ":8448"},
		{"srvcname.test", "dns.srv.cname", "which is a CNAME"},
		{"srvcert.test", "tls.name", "not for the SRV target"},
		{"wrongname.test", "tls.name", "The certificate is for other.test, not wrongname.test"},
		{"nointer.test", "tls.chain", "without the intermediate certificate"},
		{"selfsigned.test", "tls.selfsigned", "self-signed"},
		{"expiredkey.test", "keys.valid_until", "The signing key expired"},
		{"nov6.test", "connect.ipv6", "This is an IPv6 address"},
		{"wrongport.test", "connect", "TLS handshake fails"},
	}
	for _, tc := range cases {
		t.Run(tc.server, func(t *testing.T) {
			r := w.tester(t, nil).FederationTest(t.Context(), tc.server)
			got := find(r.Findings, tc.check, diag.Fail)
			found := false
			for _, f := range got {
				found = found || strings.Contains(f.Message, tc.says) && f.Fix != ""
			}
			if !found {
				t.Fatalf("no %s failure saying %q (with a fix); findings:\n%s", tc.check, tc.says, fails(r.Findings))
			}
			if r.FederationOK {
				t.Fatal("FederationOK despite the mistake")
			}
		})
	}
	// The missing .well-known is explained too (not a failure by itself).
	r := w.tester(t, nil).FederationTest(t.Context(), "missing.test")
	if len(find(r.Findings, "wellknown", diag.Info)) == 0 || !strings.Contains(r.WellKnownResult.Result, "404") {
		t.Fatalf("missing .well-known: %+v", r.WellKnownResult)
	}
	// IPv6 is summarised per family.
	r = w.tester(t, nil).FederationTest(t.Context(), "nov6.test")
	if len(find(r.Findings, "reach.ipv6", diag.Fail)) != 1 || len(find(r.Findings, "reach.ipv4", diag.OK)) != 1 {
		t.Fatalf("reachability: %+v", r.Findings)
	}
}

// TestOutboundAndSignatures: the tester's signed request is accepted by a
// server that can fetch our keys, and refused when we sign with a key we
// do not publish.
func TestOutboundAndSignatures(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		us, them := fed.Start(t, e), fed.Start(t, e)
		tr, err := diag.New(diag.Options{Config: us.Cfg})
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		r := tr.FederationTest(t.Context(), them.Cfg.ServerName)
		if r.Outbound == nil || !r.Outbound.Accepted || len(find(r.Findings, "outbound", diag.OK)) != 1 {
			t.Fatalf("outbound: %+v\n%s", r.Outbound, fails(r.Findings))
		}
		if !r.DNSResult.SRVSkipped || r.Resolution.Step != "step 2 (hostname with explicit port)" && r.Resolution.Step != "step 1 (IP literal)" {
			t.Fatalf("resolution of an IP literal: %+v", r.Resolution)
		}
		// Sign with a key we do not publish.
		other := *us.Cfg
		key, _ := config.NewSigningKey()
		other.SigningKeyPath = filepath.Join(t.TempDir(), "other.key")
		os.WriteFile(other.SigningKeyPath, key.Encode(), 0o600)
		tr2, err := diag.New(diag.Options{Config: &other})
		if err != nil {
			t.Fatal(err)
		}
		defer tr2.Close()
		r = tr2.FederationTest(t.Context(), them.Cfg.ServerName)
		if r.Outbound == nil || r.Outbound.Accepted || r.Outbound.Status != http.StatusUnauthorized || len(find(r.Findings, "outbound", diag.Fail)) != 1 {
			t.Fatalf("outbound with an unpublished key: %+v", r.Outbound)
		}
	})
}

// TestIPRangeRules: without ip_range_whitelist the tester, like
// federation, does not connect to private addresses, and says why.
func TestIPRangeRules(t *testing.T) {
	w := newWorld(t)
	ip := diagtest.Host()
	w.dns.Add(t, "private.test. 60 IN A "+ip.String())
	hits := 0
	diagtest.ServeTLS(t, diagtest.Listen(t, ip, 8448), w.ca.Leaf(t, "private.test"), http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits++ }))
	cfg := *w.cfg
	cfg.IPRangeWhitelist = nil
	r := w.tester(t, &cfg).FederationTest(t.Context(), "private.test")
	got := find(r.Findings, "connect", diag.Fail)
	if len(got) == 0 || !strings.Contains(got[0].Message, "private or reserved address") || hits != 0 {
		t.Fatalf("private address: hits %d, findings %s", hits, fails(r.Findings))
	}
}

// TestDoctor: a correct set-up passes; a URI-rewriting proxy in front of
// the federation listener, broken outbound DNS and a CAA record for
// another CA are each reported.
func TestDoctor(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		w := newWorld(t)
		doctorFor := func(name string, proxy bool) (*config.Config, *servertest.Bundle) {
			ip := diagtest.Host()
			b := servertest.Start(t, e, func(c *config.Config) {
				c.ServerName = name
				c.ServeServerWellKnown = true
				c.PublicBaseURL = "https://" + name
				c.FederationCustomCAList = []string{w.ca.RootFile}
				c.IPRangeWhitelist = []string{"127.0.0.0/8", "::1/128"}
			})
			var h http.Handler = b.HTTP.Config.Handler
			if proxy {
				// Like nginx with a path after proxy_pass: the URI is
				// decoded and sent on re-encoded.
				target, _ := url.Parse(b.URL)
				h = &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
					r.SetURL(target)
					r.Out.URL.RawPath = ""
					r.Out.Host = r.In.Host
				}}
			}
			diagtest.ServeTLS(t, diagtest.Listen(t, ip, 443), w.ca.Leaf(t, name), h)
			w.dns.Add(t, name+". 60 IN A "+ip.String())
			return b.Cfg, b
		}
		cfg, _ := doctorFor("doc.test", false)
		d, err := w.tester(t, cfg).Doctor(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if f := fails(d.All()); f != "" || !d.OK {
			t.Fatalf("good set-up: %s", f)
		}
		for _, check := range []string{"name", "dns.outbound", "dns.host", "keys.own", "proxy.uri", "clock"} {
			if len(find(d.All(), check, diag.OK)) == 0 {
				t.Fatalf("no passing %s check: %+v", check, d.All())
			}
		}

		pcfg, _ := doctorFor("proxied.test", true)
		d, _ = w.tester(t, pcfg).Doctor(t.Context())
		if got := find(d.All(), "proxy.uri", diag.Fail); len(got) != 1 || !strings.Contains(got[0].Message, "rewrites") || d.OK {
			t.Fatalf("URI-rewriting proxy not reported: %s", fails(d.All()))
		}

		// Two addresses for the name, one of them a forgotten machine
		// without the .well-known: the answers differ.
		scfg, _ := doctorFor("split.test", false)
		stale := diagtest.Host()
		diagtest.ServeTLS(t, diagtest.Listen(t, stale, 443), w.ca.Leaf(t, "split.test"), http.NotFoundHandler())
		w.dns.Add(t, "split.test. 60 IN A "+stale.String())
		d, _ = w.tester(t, scfg).Doctor(t.Context())
		if got := find(d.All(), "wellknown.consistency", diag.Fail); len(got) != 1 || !strings.Contains(got[0].Message, stale.String()+": invalid (status 404)") {
			t.Fatalf(".well-known differing per address: %s", fails(d.All()))
		}

		// Outbound DNS pointing at a port where nothing answers.
		dead, _ := net.ListenPacket("udp", "127.0.0.1:0")
		deadAddr := dead.LocalAddr().String()
		dead.Close()
		tr, _ := diag.New(diag.Options{Config: cfg, DNSServers: []string{deadAddr}})
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		d, _ = tr.Doctor(ctx)
		if got := find(d.All(), "dns.outbound", diag.Fail); len(got) != 1 || !strings.Contains(got[0].Message, "DNS does not answer") {
			t.Fatalf("broken DNS not reported: %s", fails(d.All()))
		}

		// CAA for another CA than the one acme.url names.
		acfg := *cfg
		acfg.ACME = config.ACME{Enabled: true, URL: "https://acme.ca.test/dir", Domains: []string{"doc.test"}}
		w.dns.Add(t, `doc.test. 60 IN CAA 0 issue "letsencrypt.org"`)
		tr, _ = diag.New(diag.Options{Config: &acfg, DNSServers: []string{w.dns.Addr}})
		d, _ = tr.Doctor(t.Context())
		if got := find(d.All(), "dns.caa", diag.Fail); len(got) != 1 || !strings.Contains(got[0].Message, "not ca.test") {
			t.Fatalf("CAA: %+v", d.All())
		}
	})
}

// TestNotaryCrossCheck: the notary's view of the remote's keys matches
// what the remote publishes; after the remote replaces its signing key,
// the notary (which cached the old one) disagrees and the tester says the
// key changed.
func TestNotaryCrossCheck(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		us, notary, remote := fed.Start(t, e), fed.Start(t, e), fed.Start(t, e)
		nk, err := notary.Cfg.LoadSigningKey()
		if err != nil {
			t.Fatal(err)
		}
		cfg := *us.Cfg
		cfg.TrustedKeyServers = []config.TrustedKeyServer{{ServerName: notary.Cfg.ServerName,
			VerifyKeys: map[string]string{nk.ID: base64.RawStdEncoding.EncodeToString(nk.Public())}}}
		test := func() *diag.Report {
			tr, err := diag.New(diag.Options{Config: &cfg, Unsigned: true})
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			return tr.FederationTest(t.Context(), remote.Cfg.ServerName)
		}
		r := test()
		if len(r.Notaries) != 1 || !r.Notaries[0].Match || len(find(r.Findings, "notary", diag.OK)) != 1 {
			t.Fatalf("notary before the change: %+v %+v", r.Notaries, r.Findings)
		}
		key, _ := config.NewSigningKey()
		if err := os.WriteFile(remote.Cfg.SigningKeyPath, key.Encode(), 0o600); err != nil {
			t.Fatal(err)
		}
		remote.Restart(t)
		r = test()
		got := find(r.Findings, "notary", diag.Warn)
		if len(got) != 1 || !strings.Contains(got[0].Message, "the signing key changed") || !strings.Contains(got[0].Message, key.ID) {
			t.Fatalf("changed key not reported: %+v", r.Findings)
		}
	})
}
