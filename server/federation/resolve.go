package federation

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sync/singleflight"

	"hearth/server/netguard"
)

// Server discovery (spec: Server-Server API, "Resolving server names").
// Resolve turns a server name into what to connect to, the Host header to
// send and the name the TLS certificate must be valid for, by the first
// of the spec's steps that applies:
//
//  1. an IP literal: that address, with the given port or 8448;
//  2. a hostname with an explicit port: that hostname and port;
//  3. GET https://<hostname>/.well-known/matrix/server; when it answers
//     with a valid m.server, the delegated name is resolved by
//     3.1 IP literal, 3.2 explicit port, 3.3 SRV _matrix-fed._tcp,
//     3.4 SRV _matrix._tcp (deprecated), 3.5 port 8448;
//  4. SRV _matrix-fed._tcp.<hostname>;
//  5. SRV _matrix._tcp.<hostname> (deprecated);
//  6. <hostname>:8448.
//
// SRV lookups (and, when DNS servers are given, A/AAAA lookups) use
// miekg/dns, because the TTLs matter for caching. Nothing here connects to
// a federation server; the Transport does, and it checks every address
// with netguard.

// DefaultPort is the federation port when nothing names another.
const DefaultPort = 8448

// Step is the step of "Resolving server names" that produced a Resolution.
type Step int

// The steps, numbered as in the spec.
const (
	StepIPLiteral             Step = iota + 1 // 1
	StepExplicitPort                          // 2
	StepWellKnownIPLiteral                    // 3.1
	StepWellKnownExplicitPort                 // 3.2
	StepWellKnownSRV                          // 3.3
	StepWellKnownLegacySRV                    // 3.4
	StepWellKnownDefaultPort                  // 3.5
	StepSRV                                   // 4
	StepLegacySRV                             // 5
	StepDefaultPort                           // 6
)

var stepNames = map[Step]string{
	StepIPLiteral:             "step 1 (IP literal)",
	StepExplicitPort:          "step 2 (hostname with explicit port)",
	StepWellKnownIPLiteral:    "step 3.1 (.well-known delegation to an IP literal)",
	StepWellKnownExplicitPort: "step 3.2 (.well-known delegation with explicit port)",
	StepWellKnownSRV:          "step 3.3 (.well-known delegation, SRV _matrix-fed._tcp)",
	StepWellKnownLegacySRV:    "step 3.4 (.well-known delegation, deprecated SRV _matrix._tcp)",
	StepWellKnownDefaultPort:  "step 3.5 (.well-known delegation, port 8448)",
	StepSRV:                   "step 4 (SRV _matrix-fed._tcp)",
	StepLegacySRV:             "step 5 (deprecated SRV _matrix._tcp)",
	StepDefaultPort:           "step 6 (port 8448)",
}

func (s Step) String() string {
	if n, ok := stepNames[s]; ok {
		return n
	}
	return "step ?" + strconv.Itoa(int(s))
}

// Target is one place to connect to.
type Target struct {
	// Host is a hostname (to be resolved with A/AAAA at dial time) or an
	// IP literal without brackets.
	Host string
	Port int
	// Priority and Weight are the SRV record's; 0 for other steps.
	Priority, Weight uint16
}

// Addr is the target as "host:port".
func (t Target) Addr() string { return net.JoinHostPort(t.Host, strconv.Itoa(t.Port)) }

// Resolution is where requests to a server name go.
type Resolution struct {
	ServerName string
	Step       Step
	// Targets are tried in order. SRV targets are ordered by priority and,
	// within a priority, by a weighted random choice (RFC 2782), drawn
	// afresh on every Resolve.
	Targets []Target
	// Host is the Host header to send.
	Host string
	// TLSName is the name the server's certificate must be valid for. It is
	// sent as SNI unless it is an IP address.
	TLSName string
	// Delegated is the .well-known m.server value (steps 3.x).
	Delegated string
	// SRV is the SRV name whose records gave Targets (3.3, 3.4, 4, 5).
	SRV string
	// WellKnownErr says why no .well-known delegation was used (steps 4
	// to 6): the answer was missing, invalid or unreachable.
	WellKnownErr error
	// Expires is when the cached resolution is dropped; zero for steps 1
	// and 2, which are not cached (they need no lookup).
	Expires time.Time
}

// String describes the resolution for logs and errors.
func (r *Resolution) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s by %s", r.ServerName, r.Step)
	if r.Delegated != "" {
		fmt.Fprintf(&b, ", delegated to %s", r.Delegated)
	}
	if r.SRV != "" {
		fmt.Fprintf(&b, ", SRV %s", r.SRV)
	}
	addrs := make([]string, len(r.Targets))
	for i, t := range r.Targets {
		addrs[i] = t.Addr()
	}
	fmt.Fprintf(&b, " → %s (Host %s, certificate for %s)", strings.Join(addrs, ", "), r.Host, r.TLSName)
	return b.String()
}

func (r *Resolution) clone() *Resolution {
	c := *r
	c.Targets = slices.Clone(r.Targets)
	return &c
}

// ResolveError is a failed resolution; it names the server and the step.
type ResolveError struct {
	ServerName string
	// Stage is what failed: "server name", or the step being tried.
	Stage string
	Err   error
}

func (e *ResolveError) Error() string {
	return fmt.Sprintf("resolve server name %s: %s: %v", e.ServerName, e.Stage, e.Err)
}

func (e *ResolveError) Unwrap() error { return e.Err }

// Cache lifetimes (spec: ".well-known results should be cached: respect
// Cache-Control, or 24 hours; at most 48 hours; errors for up to an hour,
// backing off on repeated failures"). The minimum is Synapse's: a remote
// saying no-store or max-age=0 cannot make us fetch its .well-known on
// every request.
const (
	wellKnownDefaultTTL = 24 * time.Hour
	wellKnownMaxTTL     = 48 * time.Hour
	wellKnownMinTTL     = 5 * time.Minute
	// wellKnownInvalidTTL caches an answer that was not a delegation (404,
	// not JSON, bad m.server): the server spoke, and said no.
	wellKnownInvalidTTL = time.Hour
	// wellKnownBackoff is the first retry delay after a failure to get any
	// answer (connection refused, TLS error, timeout, 5xx); it doubles on
	// each consecutive failure up to wellKnownInvalidTTL.
	wellKnownBackoff = 5 * time.Minute
	// wellKnownRetryValid is how long a still-valid delegation is kept,
	// after a failed early refresh, before trying again.
	wellKnownRetryValid = 2 * time.Minute
	// wellKnownMaxBody bounds the .well-known body.
	wellKnownMaxBody = 50 << 10
	// wellKnownTimeout bounds the whole .well-known fetch, redirects included.
	wellKnownTimeout = 15 * time.Second
	// wellKnownMaxRedirects bounds the 30x redirects followed.
	wellKnownMaxRedirects = 5

	// SRV answers are cached for their TTL, within these bounds; a
	// negative answer for its SOA's negative TTL (RFC 2308), or
	// srvNegativeTTL without one.
	srvMinTTL      = time.Minute
	srvMaxTTL      = time.Hour
	srvNegativeTTL = 5 * time.Minute

	// dnsTimeout bounds one DNS exchange with one server.
	dnsTimeout = 5 * time.Second
)

// Resolver resolves server names. It caches .well-known answers and whole
// resolutions, and is safe for concurrent use.
type Resolver struct {
	dnsServers []string
	udp, tcp   *dns.Client
	// lookupIP resolves A/AAAA; the system resolver unless DNS servers
	// were given.
	lookupIP func(ctx context.Context, host string) ([]netip.Addr, error)
	http     *http.Client
	now      func() time.Time
	// intn picks SRV targets by weight; tests make it deterministic.
	intn func(n int) int

	flight singleflight.Group

	mu        sync.Mutex
	wellKnown map[string]*wellKnownEntry
	results   map[string]*Resolution
}

// ResolverOption configures a Resolver.
type ResolverOption func(*Resolver)

// WithDNSServers makes the resolver send every DNS query (SRV, A, AAAA) to
// these servers ("ip" or "ip:port"), tried in order. Without it, SRV
// queries go to the nameservers of /etc/resolv.conf and A/AAAA lookups to
// the system resolver (so /etc/hosts applies).
func WithDNSServers(addrs ...string) ResolverOption {
	return func(r *Resolver) {
		r.dnsServers = nil
		for _, a := range addrs {
			if _, _, err := net.SplitHostPort(a); err != nil {
				a = net.JoinHostPort(strings.Trim(a, "[]"), "53")
			}
			r.dnsServers = append(r.dnsServers, a)
		}
	}
}

// WithWellKnownClient sets the HTTP client for .well-known/matrix/server.
// It must dial through netguard (the Transport passes one that uses its own
// address policy and TLS settings). Its redirect policy is replaced: the
// resolver follows at most a few redirects, to https URLs only. Without
// it, the resolver uses a client with the default netguard policy and the
// system roots.
func WithWellKnownClient(c *http.Client) ResolverOption {
	return func(r *Resolver) { r.http = c }
}

// WithClock sets the clock used for cache lifetimes.
func WithClock(now func() time.Time) ResolverOption {
	return func(r *Resolver) { r.now = now }
}

// NewResolver makes a Resolver. Without WithDNSServers it reads the
// nameservers of /etc/resolv.conf, and fails when it cannot.
func NewResolver(opts ...ResolverOption) (*Resolver, error) {
	r := &Resolver{
		udp:       &dns.Client{Net: "udp", Timeout: dnsTimeout, UDPSize: dns.DefaultMsgSize},
		tcp:       &dns.Client{Net: "tcp", Timeout: dnsTimeout},
		now:       time.Now,
		intn:      rand.IntN,
		wellKnown: map[string]*wellKnownEntry{},
		results:   map[string]*Resolution{},
	}
	for _, o := range opts {
		o(r)
	}
	if len(r.dnsServers) == 0 {
		cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil {
			return nil, fmt.Errorf("federation: DNS servers for SRV lookups: %w", err)
		}
		if len(cc.Servers) == 0 {
			return nil, errors.New("federation: /etc/resolv.conf names no nameserver for SRV lookups")
		}
		for _, s := range cc.Servers {
			r.dnsServers = append(r.dnsServers, net.JoinHostPort(s, cc.Port))
		}
		r.lookupIP = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	} else {
		r.lookupIP = r.lookupIPDNS
	}
	if r.http == nil {
		d := &netguard.Dialer{Policy: netguard.Policy{Name: "ip_range_blacklist"}, Lookup: r.LookupIP}
		r.http = newWellKnownClient(d, &tls.Config{MinVersion: tls.VersionTLS12})
	}
	// The redirect policy is the resolver's, whatever client it was given;
	// a copy keeps the caller's client unchanged.
	c := *r.http
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) > wellKnownMaxRedirects {
			return fmt.Errorf("more than %d redirects", wellKnownMaxRedirects)
		}
		if req.URL.Scheme != "https" {
			return fmt.Errorf("redirect to %s, which is not https", req.URL.Redacted())
		}
		return nil
	}
	c.Timeout = 0 // the fetch has its own deadline
	r.http = &c
	return r, nil
}

// newWellKnownClient is an HTTPS client dialling through d.
func newWellKnownClient(d *netguard.Dialer, tc *tls.Config) *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		TLSClientConfig:        tc,
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  10 * time.Second,
		MaxIdleConns:           8,
		IdleConnTimeout:        30 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}}
}

// LookupIP resolves a hostname to its addresses (IPv6 first), the way the
// Transport does when it dials a target. An IP literal is returned as is.
func (r *Resolver) LookupIP(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip}, nil
	}
	return r.lookupIP(ctx, host)
}

// lookupIPDNS asks the configured DNS servers for AAAA and A records.
func (r *Resolver) lookupIPDNS(ctx context.Context, host string) ([]netip.Addr, error) {
	type answer struct {
		ips []netip.Addr
		err error
	}
	var aaaa, a answer
	var wg sync.WaitGroup
	for _, q := range []struct {
		t   uint16
		out *answer
	}{{dns.TypeAAAA, &aaaa}, {dns.TypeA, &a}} {
		wg.Go(func() {
			in, err := r.exchange(ctx, host, q.t)
			if err != nil {
				q.out.err = err
				return
			}
			for _, rr := range in.Answer {
				switch rr := rr.(type) {
				case *dns.AAAA:
					if ip, ok := netip.AddrFromSlice(rr.AAAA); ok {
						q.out.ips = append(q.out.ips, ip)
					}
				case *dns.A:
					if ip, ok := netip.AddrFromSlice(rr.A.To4()); ok {
						q.out.ips = append(q.out.ips, ip)
					}
				}
			}
		})
	}
	wg.Wait()
	ips := append(aaaa.ips, a.ips...)
	if len(ips) > 0 {
		return ips, nil
	}
	if err := errors.Join(aaaa.err, a.err); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("%s has no A or AAAA record", host)
}

// Exchange sends one query (any type) through the resolver's DNS servers,
// as its own lookups are sent: diagnostics use it for the records
// discovery does not need (CNAME, CAA) and to show what DNS answered.
func (r *Resolver) Exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	return r.exchange(ctx, name, qtype)
}

// DNSServers are the servers the resolver asks, "ip:port".
func (r *Resolver) DNSServers() []string { return slices.Clone(r.dnsServers) }

// exchange sends one query to the DNS servers in turn, until one answers
// NOERROR or NXDOMAIN. A truncated UDP answer is asked again over TCP.
func (r *Resolver) exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	m.SetEdns0(dns.DefaultMsgSize, false)
	var errs []error
	for _, srv := range r.dnsServers {
		in, _, err := r.udp.ExchangeContext(ctx, m, srv)
		if err == nil && in.Truncated {
			in, _, err = r.tcp.ExchangeContext(ctx, m, srv)
		}
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("DNS server %s: %w", srv, err))
		case in.Rcode == dns.RcodeSuccess || in.Rcode == dns.RcodeNameError:
			return in, nil
		default:
			errs = append(errs, fmt.Errorf("DNS server %s answered %s", srv, dns.RcodeToString[in.Rcode]))
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("%s lookup of %s: %w", dns.TypeToString[qtype], name, errors.Join(errs...))
}

// errSRVUnavailable is an SRV answer whose only target is "." (RFC 2782:
// the service is decidedly not available at this domain).
var errSRVUnavailable = errors.New(`the only SRV target is ".": the service is declared unavailable`)

// lookupSRV returns the SRV records of name (none for NXDOMAIN or an empty
// answer) and how long the answer may be cached.
func (r *Resolver) lookupSRV(ctx context.Context, name string) ([]Target, time.Duration, error) {
	in, err := r.exchange(ctx, name, dns.TypeSRV)
	if err != nil {
		return nil, 0, err
	}
	var targets []Target
	ttl := srvMaxTTL
	for _, rr := range in.Answer {
		srv, ok := rr.(*dns.SRV)
		if !ok {
			continue
		}
		targets = append(targets, Target{Host: strings.TrimSuffix(srv.Target, "."), Port: int(srv.Port),
			Priority: srv.Priority, Weight: srv.Weight})
		ttl = min(ttl, time.Duration(srv.Hdr.Ttl)*time.Second)
	}
	if len(targets) == 0 {
		ttl = srvNegativeTTL
		for _, rr := range in.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				ttl = time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
			}
		}
		return nil, min(max(ttl, srvMinTTL), srvMaxTTL), nil
	}
	if len(targets) == 1 && targets[0].Host == "" {
		return nil, 0, errSRVUnavailable
	}
	// A "." among others is meaningless; drop it.
	targets = slices.DeleteFunc(targets, func(t Target) bool { return t.Host == "" || t.Port == 0 })
	if len(targets) == 0 {
		return nil, 0, errors.New("no usable SRV record (every target is empty or on port 0)")
	}
	return targets, max(ttl, srvMinTTL), nil
}

// orderSRV sorts targets by priority, and within a priority by RFC 2782's
// weighted random selection.
func (r *Resolver) orderSRV(targets []Target) []Target {
	slices.SortStableFunc(targets, func(a, b Target) int { return cmp.Compare(a.Priority, b.Priority) })
	out := make([]Target, 0, len(targets))
	for len(targets) > 0 {
		n := 1
		for n < len(targets) && targets[n].Priority == targets[0].Priority {
			n++
		}
		group := slices.Clone(targets[:n])
		targets = targets[n:]
		for len(group) > 0 {
			sum := 0
			for _, t := range group {
				sum += int(t.Weight)
			}
			i := 0
			if sum == 0 {
				i = r.intn(len(group))
			} else {
				pick := r.intn(sum)
				for ; i < len(group)-1; i++ {
					if pick < int(group[i].Weight) {
						break
					}
					pick -= int(group[i].Weight)
				}
			}
			out = append(out, group[i])
			group = slices.Delete(group, i, i+1)
		}
	}
	return out
}

// Resolve resolves serverName by the spec's steps. Well-known answers and
// whole resolutions are cached; errors are not (the caller backs off).
func (r *Resolver) Resolve(ctx context.Context, serverName string) (*Resolution, error) {
	sn, err := ParseServerName(serverName)
	if err != nil {
		return nil, &ResolveError{ServerName: serverName, Stage: "server name", Err: err}
	}
	// Step 1: an IP literal, with the given port or 8448. The Host header
	// is the server name as given; the certificate must be valid for the IP.
	if sn.IP.IsValid() {
		return &Resolution{ServerName: serverName, Step: StepIPLiteral, Host: serverName, TLSName: sn.IP.String(),
			Targets: []Target{{Host: sn.IP.String(), Port: cmp.Or(sn.Port, DefaultPort)}}}, nil
	}
	// Step 2: a hostname with an explicit port; Host header with the port,
	// certificate for the hostname.
	if sn.Port != 0 {
		return &Resolution{ServerName: serverName, Step: StepExplicitPort, Host: serverName, TLSName: sn.Host,
			Targets: []Target{{Host: sn.Host, Port: sn.Port}}}, nil
	}

	now := r.now()
	r.mu.Lock()
	if c := r.results[serverName]; c != nil && now.Before(c.Expires) {
		res := c.clone()
		r.mu.Unlock()
		res.Targets = r.orderSRV(res.Targets)
		return res, nil
	}
	r.mu.Unlock()

	res, err := r.resolveHost(ctx, serverName, sn.Host, now)
	if err != nil {
		return nil, err
	}
	if !res.Expires.IsZero() {
		r.mu.Lock()
		r.results[serverName] = res.clone()
		sweep(r.results, now, func(c *Resolution) time.Time { return c.Expires })
		r.mu.Unlock()
	}
	res.Targets = r.orderSRV(res.Targets)
	return res, nil
}

// cacheSweepAt is the cache size at which expired entries are dropped.
const cacheSweepAt = 4096

// sweep drops expired entries once the cache has grown; r.mu is held.
func sweep[V any](m map[string]V, now time.Time, expires func(V) time.Time) {
	if len(m) < cacheSweepAt {
		return
	}
	for k, v := range m {
		if !now.Before(expires(v)) {
			delete(m, k)
		}
	}
}

// forget drops the cached resolution of serverName (not its .well-known
// answer), so that the next Resolve asks DNS again: the Transport calls it
// when no target could be reached.
func (r *Resolver) forget(serverName string) {
	r.mu.Lock()
	delete(r.results, serverName)
	r.mu.Unlock()
}

// resolveHost runs steps 3 to 6 for a hostname without a port.
func (r *Resolver) resolveHost(ctx context.Context, serverName, host string, now time.Time) (*Resolution, error) {
	wk := r.wellKnownFor(ctx, host)
	expires := wk.useUntil()
	if wk.server == "" {
		// Steps 4 to 6: the Host header and certificate are the hostname.
		res := &Resolution{ServerName: serverName, Host: host, TLSName: host, WellKnownErr: wk.err}
		if err := r.resolveSRV(ctx, res, host, StepSRV, StepLegacySRV, StepDefaultPort, now, expires); err != nil {
			return nil, err
		}
		return res, nil
	}
	d, _ := ParseServerName(wk.server) // checked when the answer was cached
	res := &Resolution{ServerName: serverName, Delegated: wk.server}
	switch {
	case d.IP.IsValid():
		// 3.1: the delegated IP, with its port or 8448; Host header is the
		// delegated IP literal (with the port if one was given).
		res.Step, res.Host, res.TLSName = StepWellKnownIPLiteral, wk.server, d.IP.String()
		res.Targets = []Target{{Host: d.IP.String(), Port: cmp.Or(d.Port, DefaultPort)}}
		res.Expires = expires
	case d.Port != 0:
		// 3.2: the delegated hostname and port; Host header
		// <delegated_hostname>:<delegated_port>, certificate for the
		// delegated hostname.
		res.Step, res.Host, res.TLSName = StepWellKnownExplicitPort, wk.server, d.Host
		res.Targets = []Target{{Host: d.Host, Port: d.Port}}
		res.Expires = expires
	default:
		// 3.3 to 3.5: SRV for the delegated hostname; Host header and
		// certificate are the delegated hostname.
		res.Host, res.TLSName = d.Host, d.Host
		if err := r.resolveSRV(ctx, res, d.Host, StepWellKnownSRV, StepWellKnownLegacySRV, StepWellKnownDefaultPort, now, expires); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// resolveSRV fills res from _matrix-fed._tcp.<host>, then the deprecated
// _matrix._tcp.<host>, then <host>:8448, caching no longer than notAfter.
func (r *Resolver) resolveSRV(ctx context.Context, res *Resolution, host string, fed, legacy, fallback Step, now, notAfter time.Time) error {
	ttl := srvMaxTTL
	for _, q := range []struct {
		step Step
		name string
	}{{fed, "_matrix-fed._tcp." + host}, {legacy, "_matrix._tcp." + host}} {
		targets, t, err := r.lookupSRV(ctx, q.name)
		if err != nil {
			return &ResolveError{ServerName: res.ServerName, Stage: q.step.String(), Err: err}
		}
		ttl = min(ttl, t)
		if len(targets) > 0 {
			res.Step, res.SRV, res.Targets = q.step, q.name, targets
			res.Expires = earliest(now.Add(ttl), notAfter)
			return nil
		}
	}
	res.Step = fallback
	res.Targets = []Target{{Host: host, Port: DefaultPort}}
	res.Expires = earliest(now.Add(ttl), notAfter)
	return nil
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// wellKnownEntry is a cached .well-known answer.
type wellKnownEntry struct {
	// server is the m.server value; "" when there is no delegation.
	server string
	// err says why there is none.
	err     error
	expires time.Time
	// refreshAt (valid delegations only) is when a refresh is tried
	// while the delegation is still used: a failed refresh keeps it.
	refreshAt time.Time
	// failures counts consecutive fetches that got no answer at all.
	failures int
}

// useUntil is how long a resolution built on e may be cached: until a
// delegation is due for its early refresh, or the error entry expires.
func (e wellKnownEntry) useUntil() time.Time {
	if e.server != "" {
		return e.refreshAt
	}
	return e.expires
}

// wellKnownFor returns the .well-known answer for host, from the cache or
// fetched (one fetch per host at a time).
func (r *Resolver) wellKnownFor(ctx context.Context, host string) wellKnownEntry {
	now := r.now()
	r.mu.Lock()
	old := r.wellKnown[host]
	r.mu.Unlock()
	if old != nil && now.Before(old.expires) && (old.server == "" || now.Before(old.refreshAt)) {
		return *old
	}
	// The fetch runs detached from ctx, so that one caller's cancellation
	// neither fails the others waiting on it nor gets cached as the
	// remote's failure; each caller still stops waiting at its own ctx.
	ch := r.flight.DoChan(host, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), wellKnownTimeout)
		defer cancel()
		server, ttl, transient, err := r.fetchWellKnown(fctx, host)
		return r.storeWellKnown(host, server, ttl, transient, err), nil
	})
	select {
	case v := <-ch:
		return v.Val.(wellKnownEntry)
	case <-ctx.Done():
		if old != nil && now.Before(old.expires) {
			return *old
		}
		return wellKnownEntry{err: fmt.Errorf(".well-known fetch abandoned: %w", ctx.Err())}
	}
}

// storeWellKnown caches the outcome of a fetch and returns the entry to use.
func (r *Resolver) storeWellKnown(host, server string, ttl time.Duration, transient bool, err error) wellKnownEntry {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.wellKnown[host]
	var e wellKnownEntry
	switch {
	case err == nil:
		e = wellKnownEntry{server: server, expires: now.Add(ttl), refreshAt: now.Add(ttl - ttl/5)}
	case transient && old != nil && old.server != "" && now.Before(old.expires):
		// The server is briefly unreachable, but its delegation is still
		// within its lifetime: keep using it, and try again soon.
		e = *old
		e.refreshAt = earliest(now.Add(wellKnownRetryValid), old.expires)
	case transient:
		failures := 1
		if old != nil && old.server == "" {
			failures = old.failures + 1
		}
		backoff := wellKnownBackoff << min(failures-1, 8)
		e = wellKnownEntry{err: err, failures: failures, expires: now.Add(min(backoff, wellKnownInvalidTTL))}
	default:
		e = wellKnownEntry{err: err, expires: now.Add(wellKnownInvalidTTL)}
	}
	r.wellKnown[host] = &e
	sweep(r.wellKnown, now, func(e *wellKnownEntry) time.Time { return e.expires })
	return e
}

// fetchWellKnown GETs https://<host>/.well-known/matrix/server. It returns
// the m.server value and how long to cache it, or an error; transient
// reports an error that got no answer from the server (network, TLS,
// timeout, 5xx), as opposed to an answer that is not a delegation.
func (r *Resolver) fetchWellKnown(ctx context.Context, host string) (server string, ttl time.Duration, transient bool, err error) {
	u := &url.URL{Scheme: "https", Host: host, Path: "/.well-known/matrix/server"}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", 0, false, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := r.http.Do(req)
	if err != nil {
		return "", 0, true, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	at := u.String()
	if resp.Request != nil && resp.Request.URL.String() != at {
		at += " (redirected to " + resp.Request.URL.Redacted() + ")"
	}
	if resp.StatusCode != http.StatusOK {
		return "", 0, resp.StatusCode >= 500, fmt.Errorf("GET %s: status %d", at, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, wellKnownMaxBody+1))
	if err != nil {
		return "", 0, true, fmt.Errorf("GET %s: reading the body: %w", at, err)
	}
	if len(body) > wellKnownMaxBody {
		return "", 0, false, fmt.Errorf("GET %s: body larger than %d KiB", at, wellKnownMaxBody>>10)
	}
	var doc struct {
		Server *string `json:"m.server"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", 0, false, fmt.Errorf("GET %s: not a JSON object with a string m.server: %w", at, err)
	}
	if doc.Server == nil {
		return "", 0, false, fmt.Errorf("GET %s: no m.server string", at)
	}
	if _, err := ParseServerName(*doc.Server); err != nil {
		return "", 0, false, fmt.Errorf("GET %s: m.server: %w", at, err)
	}
	return *doc.Server, cacheTTL(resp.Header), false, nil
}

// cacheTTL is how long a .well-known answer may be cached: Cache-Control's
// max-age (no-store and no-cache meaning as little as allowed), or the
// default, within the minimum and the spec's 48-hour maximum.
func cacheTTL(h http.Header) time.Duration {
	ttl := wellKnownDefaultTTL
	for _, v := range h.Values("Cache-Control") {
		for _, d := range strings.Split(v, ",") {
			name, val, _ := strings.Cut(strings.TrimSpace(d), "=")
			switch strings.ToLower(name) {
			case "no-store", "no-cache":
				return wellKnownMinTTL
			case "max-age":
				if n, err := strconv.ParseInt(strings.Trim(val, `"`), 10, 64); err == nil && n >= 0 {
					ttl = time.Duration(min(n, int64(wellKnownMaxTTL/time.Second))) * time.Second
				}
			}
		}
	}
	return min(max(ttl, wellKnownMinTTL), wellKnownMaxTTL)
}
