package federation

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestResolveSteps covers each step of "Resolving server names": what is
// dialled, the Host header, the certificate name; and, through a real
// request over TLS, that the server sees that Host and SNI.
func TestResolveSteps(t *testing.T) {
	n := newFedNet(t)
	web := n.web
	_, port, _ := strings.Cut(web.Listener.Addr().String(), ":")

	n.dns.add(t,
		"explicit.test. 300 IN A 127.0.0.3",
		// 3.x: the .well-known hosts and the delegated names.
		"wk-ip.test. 300 IN A 127.0.0.4",
		"wk-port.test. 300 IN A 127.0.0.4",
		"deleg-port.test. 300 IN A 127.0.0.6",
		"wk-srv.test. 300 IN A 127.0.0.4",
		"_matrix-fed._tcp.deleg-srv.test. 300 IN SRV 10 5 9004 srv-target.test.",
		"srv-target.test. 300 IN A 127.0.0.7",
		"wk-legacy.test. 300 IN A 127.0.0.4",
		"_matrix._tcp.deleg-legacy.test. 300 IN SRV 10 5 9005 legacy-target.test.",
		"legacy-target.test. 300 IN A 127.0.0.8",
		"wk-default.test. 300 IN A 127.0.0.4",
		"deleg-default.test. 300 IN A 127.0.0.9",
		// 4 to 6: no .well-known (404, or nothing listening on 443).
		"srv.test. 300 IN A 127.0.0.4",
		"_matrix-fed._tcp.srv.test. 300 IN SRV 10 5 9006 srv-target.test.",
		// Both SRV names exist: the new one wins.
		"_matrix._tcp.srv.test. 300 IN SRV 10 5 9999 legacy-target.test.",
		"legacy.test. 300 IN A 127.0.0.10",
		"_matrix._tcp.legacy.test. 300 IN SRV 10 5 9007 legacy-target.test.",
		"plain.test. 300 IN A 127.0.0.12",
		"plain.test. 300 IN AAAA ::1",
	)
	n.route("127.0.0.2:8448", web)
	n.route("127.0.0.3:9001", web)
	n.route("127.0.0.4:443", web) // the .well-known server
	n.route("127.0.0.5:9002", web)
	n.route("127.0.0.6:9003", web)
	n.route("127.0.0.7:9004", web)
	n.route("127.0.0.8:9005", web)
	n.route("127.0.0.9:8448", web)
	n.route("127.0.0.7:9006", web)
	n.route("127.0.0.8:9007", web)
	n.route("[::1]:8448", web)
	n.serveWellKnown("wk-ip.test", jsonWellKnown("127.0.0.5:9002", ""))
	n.serveWellKnown("wk-port.test", jsonWellKnown("deleg-port.test:9003", ""))
	n.serveWellKnown("wk-srv.test", jsonWellKnown("deleg-srv.test", ""))
	n.serveWellKnown("wk-legacy.test", jsonWellKnown("deleg-legacy.test", ""))
	n.serveWellKnown("wk-default.test", jsonWellKnown("deleg-default.test", ""))

	tr := n.transport()
	client := &http.Client{Transport: tr}

	for _, tc := range []struct {
		name     string
		step     Step
		targets  string // comma-separated
		host     string
		tlsName  string
		sni      string // what the server sees; "" for IP addresses
		srv      string
		delegate string
	}{
		{"127.0.0.1:" + port, StepIPLiteral, "127.0.0.1:" + port, "127.0.0.1:" + port, "127.0.0.1", "", "", ""},
		{"127.0.0.2", StepIPLiteral, "127.0.0.2:8448", "127.0.0.2", "127.0.0.2", "", "", ""},
		{"[::1]", StepIPLiteral, "[::1]:8448", "[::1]", "::1", "", "", ""},
		{"explicit.test:9001", StepExplicitPort, "explicit.test:9001", "explicit.test:9001", "explicit.test", "explicit.test", "", ""},
		{"wk-ip.test", StepWellKnownIPLiteral, "127.0.0.5:9002", "127.0.0.5:9002", "127.0.0.5", "", "", "127.0.0.5:9002"},
		{"wk-port.test", StepWellKnownExplicitPort, "deleg-port.test:9003", "deleg-port.test:9003", "deleg-port.test", "deleg-port.test", "", "deleg-port.test:9003"},
		{"wk-srv.test", StepWellKnownSRV, "srv-target.test:9004", "deleg-srv.test", "deleg-srv.test", "deleg-srv.test", "_matrix-fed._tcp.deleg-srv.test", "deleg-srv.test"},
		{"wk-legacy.test", StepWellKnownLegacySRV, "legacy-target.test:9005", "deleg-legacy.test", "deleg-legacy.test", "deleg-legacy.test", "_matrix._tcp.deleg-legacy.test", "deleg-legacy.test"},
		{"wk-default.test", StepWellKnownDefaultPort, "deleg-default.test:8448", "deleg-default.test", "deleg-default.test", "deleg-default.test", "", "deleg-default.test"},
		{"srv.test", StepSRV, "srv-target.test:9006", "srv.test", "srv.test", "srv.test", "_matrix-fed._tcp.srv.test", ""},
		{"legacy.test", StepLegacySRV, "legacy-target.test:9007", "legacy.test", "legacy.test", "legacy.test", "_matrix._tcp.legacy.test", ""},
		{"plain.test", StepDefaultPort, "plain.test:8448", "plain.test", "plain.test", "plain.test", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := tr.Resolver().Resolve(t.Context(), tc.name)
			if err != nil {
				t.Fatal(err)
			}
			var targets []string
			for _, x := range res.Targets {
				targets = append(targets, x.Addr())
			}
			if res.Step != tc.step || strings.Join(targets, ",") != tc.targets || res.Host != tc.host ||
				res.TLSName != tc.tlsName || res.SRV != tc.srv || res.Delegated != tc.delegate || res.ServerName != tc.name {
				t.Fatalf("got %s", res)
			}
			if (tc.step >= StepSRV) != (res.WellKnownErr != nil) {
				t.Errorf("WellKnownErr = %v at %s", res.WellKnownErr, res.Step)
			}
			// The same, over the wire.
			resp, err := client.Get(Scheme + "://" + tc.name + "/_matrix/federation/v1/version")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var seen map[string]string
			if err := jsonDecode(resp, &seen); err != nil {
				t.Fatal(err)
			}
			if seen["host"] != tc.host || seen["sni"] != tc.sni || seen["path"] != "/_matrix/federation/v1/version" {
				t.Fatalf("server saw Host %q SNI %q path %q; want Host %q SNI %q", seen["host"], seen["sni"], seen["path"], tc.host, tc.sni)
			}
		})
	}
	// Everything dialled was loopback, by way of the routes above.
	for _, a := range n.dialled() {
		if !strings.HasPrefix(a, "127.") && !strings.HasPrefix(a, "[::1]") {
			t.Errorf("dialled %s", a)
		}
	}
	// legacy.test has no .well-known server at all: its fetch was dialled
	// and failed, and step 5 still applied.
	if !strings.Contains(fmt.Sprint(n.dialled()), "127.0.0.10:443") {
		t.Error("legacy.test's .well-known was not tried")
	}
}

func TestResolveSRVOrder(t *testing.T) {
	n := newFedNet(t)
	n.dns.add(t,
		"_matrix-fed._tcp.multi.test. 300 IN SRV 20 0 1 low-a.test.",
		"_matrix-fed._tcp.multi.test. 300 IN SRV 10 60 2 high-a.test.",
		"_matrix-fed._tcp.multi.test. 300 IN SRV 10 40 3 high-b.test.",
		"_matrix-fed._tcp.multi.test. 300 IN SRV 10 0 4 high-c.test.",
		"_matrix-fed._tcp.multi.test. 300 IN SRV 30 5 5 last.test.",
	)
	r := n.transport().Resolver()
	// intn picks the first candidate's share: weight 60 of 100 first,
	// then 40 of 40, then the zero weight; within priority 20 there is
	// only one.
	picks := []int{0, 0, 0, 0, 0}
	r.intn = func(int) int { v := picks[0]; picks = picks[1:]; return v }
	res, err := r.Resolve(t.Context(), "multi.test")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, x := range res.Targets {
		got = append(got, x.Host)
	}
	if strings.Join(got, " ") != "high-a.test high-b.test high-c.test low-a.test last.test" {
		t.Fatalf("order %v", got)
	}
	// A draw past the first weight picks the second.
	r.intn = func(n int) int { return n - 1 }
	res, _ = r.Resolve(t.Context(), "multi.test")
	if res.Targets[0].Host != "high-b.test" || res.Targets[1].Host != "high-a.test" {
		t.Fatalf("weighted draw: %v", res.Targets)
	}
	// Over many draws the weights show: a is first about 60% of the time.
	r2 := n.transport().Resolver()
	first := 0
	for range 2000 {
		res, err := r2.Resolve(t.Context(), "multi.test")
		if err != nil {
			t.Fatal(err)
		}
		if res.Targets[0].Host == "high-a.test" {
			first++
		}
		if res.Targets[3].Host != "low-a.test" || res.Targets[4].Host != "last.test" {
			t.Fatalf("priorities mixed: %v", res.Targets)
		}
	}
	if first < 1000 || first > 1400 {
		t.Errorf("weight 60 of 100 came first %d times in 2000", first)
	}
}

func TestResolveDNSEdges(t *testing.T) {
	n := newFedNet(t)
	var many []string
	for i := range 40 {
		many = append(many, fmt.Sprintf("_matrix-fed._tcp.big.test. 300 IN SRV 10 %d 8448 target-number-%02d.big.test.", i, i))
	}
	n.dns.add(t, many...)
	n.dns.add(t,
		`_matrix-fed._tcp.dot.test. 300 IN SRV 0 0 0 .`,
		`_matrix-fed._tcp.mixed-dot.test. 300 IN SRV 0 0 0 .`,
		`_matrix-fed._tcp.mixed-dot.test. 300 IN SRV 10 0 8448 real.test.`,
	)
	n.dns.mu.Lock()
	n.dns.servfail["_matrix-fed._tcp.broken.test."] = true
	n.dns.mu.Unlock()
	r := n.transport().Resolver()

	// 40 records do not fit in a 512-byte UDP answer: asked again over TCP.
	res, err := r.Resolve(t.Context(), "big.test")
	if err != nil || len(res.Targets) != 40 {
		t.Fatalf("large SRV answer: %v, %d targets", err, len(res.Targets))
	}
	// "." alone: the service is declared unavailable; an error, not a
	// fall-through to port 8448.
	if _, err := r.Resolve(t.Context(), "dot.test"); err == nil || !strings.Contains(err.Error(), "declared unavailable") ||
		!strings.Contains(err.Error(), "step 4") {
		t.Fatalf("SRV target '.': %v", err)
	}
	if res, err := r.Resolve(t.Context(), "mixed-dot.test"); err != nil || len(res.Targets) != 1 || res.Targets[0].Host != "real.test" {
		t.Fatalf("'.' among others: %v %v", res, err)
	}
	// SERVFAIL is an error that names the step, not a fall-through.
	_, err = r.Resolve(t.Context(), "broken.test")
	var re *ResolveError
	if !errors.As(err, &re) || re.ServerName != "broken.test" || !strings.Contains(err.Error(), "step 4 (SRV _matrix-fed._tcp)") ||
		!strings.Contains(err.Error(), "SERVFAIL") {
		t.Fatalf("SERVFAIL: %v", err)
	}
	// A bad server name fails before any lookup.
	before := n.dns.total()
	if _, err := r.Resolve(t.Context(), "bad name"); err == nil || !strings.Contains(err.Error(), "server name") || n.dns.total() != before {
		t.Fatalf("bad name: %v", err)
	}
	// An unreachable DNS server is an error naming it.
	r2, err := NewResolver(WithDNSServers("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r2.lookupSRV(t.Context(), "x.test"); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("dead DNS server: %v", err)
	}
	// LookupIP: IPv6 first; IP literals pass through; NXDOMAIN is an error.
	n.dns.add(t, "dual.test. 300 IN A 127.0.0.1", "dual.test. 300 IN AAAA ::1")
	if ips, err := r.LookupIP(t.Context(), "dual.test"); err != nil || fmt.Sprint(ips) != "[::1 127.0.0.1]" {
		t.Fatalf("LookupIP: %v %v", ips, err)
	}
	if ips, err := r.LookupIP(t.Context(), "10.1.2.3"); err != nil || fmt.Sprint(ips) != "[10.1.2.3]" {
		t.Fatalf("LookupIP literal: %v %v", ips, err)
	}
	if _, err := r.LookupIP(t.Context(), "nowhere.test"); err == nil {
		t.Fatal("LookupIP of a missing name succeeded")
	}
}

// TestBadWellKnownFallsThrough: an answer that is not a valid delegation
// skips to step 4, as the spec says, and says why.
func TestBadWellKnownFallsThrough(t *testing.T) {
	n := newFedNet(t)
	cases := []struct {
		host string
		h    http.HandlerFunc
		why  string
	}{
		{"html.test", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, "<html><body>Welcome to nginx!</body></html>")
		}, "not a JSON object"},
		{"text.test", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "m.server: x.test") }, "not a JSON object"},
		{"array.test", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `["x.test"]`) }, "not a JSON object"},
		{"number.test", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{"m.server": 8448}`) }, "not a JSON object"},
		{"missing.test", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{"m.homeserver": "x.test"}`) }, "no m.server"},
		{"empty.test", jsonWellKnown("", ""), "m.server"},
		{"grammar.test", jsonWellKnown("bad host.test", ""), "not a server name"},
		{"port.test", jsonWellKnown("x.test:99999", ""), "port"},
		{"url.test", jsonWellKnown("https://x.test/", ""), "not a server name"},
		{"bracket.test", jsonWellKnown("[::1", ""), "unclosed"},
		{"large.test", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, `{"m.server": "x.test", "pad": "%s"}`, strings.Repeat("x", 60<<10))
		}, "larger than 50 KiB"},
		{"status.test", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "gone", http.StatusGone) }, "status 410"},
		{"notfound.test", nil, "status 404"},
		{"insecure-redirect.test", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://target.test/wk/ok", http.StatusFound)
		}, "not https"},
		{"loop.test", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://loop.test/wk/again", http.StatusFound)
		}, "redirects"},
	}
	for _, c := range cases {
		n.dns.add(t, c.host+". 300 IN A 127.0.0.4", "_matrix-fed._tcp."+c.host+". 300 IN SRV 10 5 8448 fallback.test.")
		n.serveWellKnown(c.host, c.h)
	}
	n.route("127.0.0.4:443", n.web)
	r := n.transport().Resolver()
	for _, c := range cases {
		t.Run(c.host, func(t *testing.T) {
			res, err := r.Resolve(t.Context(), c.host)
			if err != nil {
				t.Fatal(err)
			}
			if res.Step != StepSRV || res.Host != c.host || res.TLSName != c.host || res.Delegated != "" {
				t.Fatalf("got %s", res)
			}
			if res.WellKnownErr == nil || !strings.Contains(res.WellKnownErr.Error(), c.why) {
				t.Fatalf("WellKnownErr = %v, want it to say %q", res.WellKnownErr, c.why)
			}
		})
	}

	// A redirect to https is followed, with its own certificate check.
	n.dns.add(t, "redirect.test. 300 IN A 127.0.0.4", "target.test. 300 IN A 127.0.0.4")
	n.serveWellKnown("redirect.test", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://target.test/wk/ok", http.StatusMovedPermanently)
	})
	n.serveWellKnown("target.test", jsonWellKnown("127.0.0.5:1234", ""))
	res, err := r.Resolve(t.Context(), "redirect.test")
	if err != nil || res.Step != StepWellKnownIPLiteral || res.Delegated != "127.0.0.5:1234" {
		t.Fatalf("redirected .well-known: %v %v", res, err)
	}
}

// TestWellKnownCaching drives the cache with the test clock.
func TestWellKnownCaching(t *testing.T) {
	n := newFedNet(t)
	n.route("127.0.0.4:443", n.web)
	host := func(name, server, cacheControl string) {
		n.dns.add(t, name+". 300 IN A 127.0.0.4")
		n.serveWellKnown(name, jsonWellKnown(server, cacheControl))
	}
	host("maxage.test", "127.0.0.5:1", "public, max-age=3600")
	host("default.test", "127.0.0.5:2", "")
	host("cap.test", "127.0.0.5:3", "max-age=604800")
	host("nostore.test", "127.0.0.5:4", "no-store")
	host("zero.test", "127.0.0.5:5", "max-age=0")
	r := n.transport().Resolver()
	clock := n.clock

	resolve := func(name string) *Resolution {
		t.Helper()
		res, err := r.Resolve(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	for _, tc := range []struct {
		name string
		ttl  time.Duration // lifetime of the cached answer
	}{
		{"maxage.test", time.Hour},
		{"default.test", 24 * time.Hour},
		{"cap.test", 48 * time.Hour},      // the spec's maximum
		{"nostore.test", 5 * time.Minute}, // the minimum, as in Synapse
		{"zero.test", 5 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := clock.now()
			res := resolve(tc.name)
			r.mu.Lock()
			expires := r.wellKnown[tc.name].expires
			r.mu.Unlock()
			if res.Step != StepWellKnownIPLiteral || !expires.Equal(start.Add(tc.ttl)) {
				t.Fatalf("first resolution: %s; answer cached for %v, want %v", res, expires.Sub(start), tc.ttl)
			}
			// The resolution is used until the last fifth of the answer's
			// lifetime, when the answer is fetched again early.
			refresh := tc.ttl - tc.ttl/5
			if !res.Expires.Equal(start.Add(refresh)) {
				t.Fatalf("resolution cached for %v, want %v", res.Expires.Sub(start), refresh)
			}
			if hits := n.wellKnownHits(tc.name); hits != 1 {
				t.Fatalf("%d fetches", hits)
			}
			clock.advance(refresh - time.Second)
			resolve(tc.name)
			if hits := n.wellKnownHits(tc.name); hits != 1 {
				t.Fatalf("refetched too early: %d fetches", hits)
			}
			clock.advance(2 * time.Second)
			resolve(tc.name)
			if hits := n.wellKnownHits(tc.name); hits != 2 {
				t.Fatalf("not refreshed: %d fetches", hits)
			}
		})
	}

	// An early refresh (in the last fifth of the lifetime) that fails
	// keeps the delegation until it expires; then the fall-through applies.
	flaky := "flaky.test"
	n.dns.add(t, flaky+". 300 IN A 127.0.0.4")
	n.serveWellKnown(flaky, jsonWellKnown("127.0.0.5:6", "max-age=3600"))
	start := clock.now()
	resolve(flaky)
	n.serveWellKnown(flaky, func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusBadGateway) })
	clock.advance(50 * time.Minute) // past the refresh point, before expiry
	if res := resolve(flaky); res.Delegated != "127.0.0.5:6" || n.wellKnownHits(flaky) != 2 {
		t.Fatalf("after a failed refresh: %s, %d fetches", res, n.wellKnownHits(flaky))
	}
	clock.advance(time.Minute) // the retry waits 2 minutes
	resolve(flaky)
	if n.wellKnownHits(flaky) != 2 {
		t.Fatalf("retried too soon: %d fetches", n.wellKnownHits(flaky))
	}
	clock.advance(start.Add(time.Hour + time.Second).Sub(clock.now()))
	if res := resolve(flaky); res.Delegated != "" || res.Step != StepDefaultPort {
		t.Fatalf("after expiry with the server down: %s", res)
	}
}

func TestWellKnownErrorCaching(t *testing.T) {
	n := newFedNet(t)
	n.route("127.0.0.4:443", n.web)
	n.dns.add(t, "none.test. 300 IN A 127.0.0.4", "down.test. 300 IN A 127.0.0.11")
	r := n.transport().Resolver()
	clock := n.clock
	resolve := func(name string) *Resolution {
		t.Helper()
		res, err := r.Resolve(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}

	// A 404 is an answer: cached for an hour.
	res := resolve("none.test")
	// The resolution itself lives as long as the negative SRV answers
	// (the SOA's 10 minutes); the 404 is kept for the hour.
	if res.Step != StepDefaultPort || n.wellKnownHits("none.test") != 1 || !res.Expires.Equal(clock.now().Add(10*time.Minute)) {
		t.Fatalf("first: %s, expires %v, %d fetches", res, res.Expires.Sub(clock.now()), n.wellKnownHits("none.test"))
	}
	clock.advance(59 * time.Minute)
	resolve("none.test")
	if n.wellKnownHits("none.test") != 1 {
		t.Fatalf("404 refetched within the hour: %d", n.wellKnownHits("none.test"))
	}
	clock.advance(2 * time.Minute)
	resolve("none.test")
	if n.wellKnownHits("none.test") != 2 {
		t.Fatalf("404 not refetched after the hour: %d", n.wellKnownHits("none.test"))
	}
	// The server appears: it is used once the hour is over, not before.
	n.serveWellKnown("none.test", jsonWellKnown("127.0.0.5:7", ""))
	clock.advance(30 * time.Minute)
	if res := resolve("none.test"); res.Delegated != "" {
		t.Fatalf("used a delegation before the cached 404 expired: %s", res)
	}
	clock.advance(31 * time.Minute)
	if res := resolve("none.test"); res.Delegated != "127.0.0.5:7" {
		t.Fatalf("delegation not picked up: %s", res)
	}

	// Nothing listening (connection refused): backoff from 5 minutes,
	// doubling, at most an hour.
	dials := func() int {
		c := 0
		for _, a := range n.dialled() {
			if a == "127.0.0.11:443" {
				c++
			}
		}
		return c
	}
	var waits []time.Duration
	last := clock.now()
	resolve("down.test")
	for range 6 {
		before := dials()
		for dials() == before {
			clock.advance(time.Minute)
			resolve("down.test")
		}
		waits = append(waits, clock.now().Sub(last))
		last = clock.now()
	}
	if fmt.Sprint(waits) != "[5m0s 10m0s 20m0s 40m0s 1h0m0s 1h0m0s]" {
		t.Fatalf("retry intervals %v", waits)
	}
}

// TestResolutionCacheFollowsSRVTTL: the whole resolution is cached for
// the SRV answer's TTL (at least a minute), negative answers for the SOA
// negative TTL.
func TestResolutionCacheFollowsSRVTTL(t *testing.T) {
	n := newFedNet(t)
	n.dns.mu.Lock()
	n.dns.negTTL = 120
	n.dns.mu.Unlock()
	n.dns.add(t, "_matrix-fed._tcp.ttl.test. 200 IN SRV 10 5 8448 t.test.", "_matrix-fed._tcp.short.test. 5 IN SRV 10 5 8448 t.test.")
	r := n.transport().Resolver()
	clock := n.clock
	q := func(name string) int { return n.dns.count("_matrix-fed._tcp."+name, dns.TypeSRV) }

	r.Resolve(t.Context(), "ttl.test")
	clock.advance(199 * time.Second)
	r.Resolve(t.Context(), "ttl.test")
	if q("ttl.test") != 1 {
		t.Fatalf("SRV asked again within its TTL: %d", q("ttl.test"))
	}
	clock.advance(2 * time.Second)
	r.Resolve(t.Context(), "ttl.test")
	if q("ttl.test") != 2 {
		t.Fatalf("SRV not asked again after its TTL: %d", q("ttl.test"))
	}
	// A 5-second TTL is held for a minute.
	r.Resolve(t.Context(), "short.test")
	clock.advance(59 * time.Second)
	r.Resolve(t.Context(), "short.test")
	if q("short.test") != 1 {
		t.Fatalf("short TTL: %d queries", q("short.test"))
	}
	// NXDOMAIN for both SRV names: cached for the SOA's 120 s.
	res, _ := r.Resolve(t.Context(), "nosrv.test")
	if res.Step != StepDefaultPort || !res.Expires.Equal(clock.now().Add(120*time.Second)) {
		t.Fatalf("negative: %s expires in %v", res, res.Expires.Sub(clock.now()))
	}
	clock.advance(119 * time.Second)
	r.Resolve(t.Context(), "nosrv.test")
	if q("nosrv.test") != 1 || n.dns.count("_matrix._tcp.nosrv.test", dns.TypeSRV) != 1 {
		t.Fatalf("negative answer asked again: %d", q("nosrv.test"))
	}
	// Failing to connect drops the resolution (not the .well-known answer).
	r.forget("nosrv.test")
	r.Resolve(t.Context(), "nosrv.test")
	if q("nosrv.test") != 2 {
		t.Fatalf("forget: %d", q("nosrv.test"))
	}
}

// TestCacheTTL checks the Cache-Control parsing alone.
func TestCacheTTL(t *testing.T) {
	for cc, want := range map[string]time.Duration{
		"":                           24 * time.Hour,
		"max-age=7200":               2 * time.Hour,
		"public, max-age=60":         5 * time.Minute,
		"max-age=999999999999999999": 48 * time.Hour,
		"MAX-AGE=\"3600\"":           time.Hour,
		"no-store":                   5 * time.Minute,
		"max-age=3600, no-cache":     5 * time.Minute,
		"max-age=banana":             24 * time.Hour,
		"max-age=-5":                 24 * time.Hour,
		"private":                    24 * time.Hour,
	} {
		h := http.Header{}
		if cc != "" {
			h.Set("Cache-Control", cc)
		}
		if got := cacheTTL(h); got != want {
			t.Errorf("Cache-Control %q: %v, want %v", cc, got, want)
		}
	}
}
