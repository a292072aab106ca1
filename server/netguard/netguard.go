// Package netguard dials outbound connections only to addresses a policy
// allows. It is the one implementation of address filtering in Hearth: URL
// previews (url_preview_ip_range_*) and federation, key fetches and remote
// media (ip_range_*) all dial through a Dialer.
//
// The check happens at dial time, on the address actually dialled. The
// Dialer resolves the host itself, refuses every address the policy denies
// and then dials the IP literal, so a DNS answer that changes between a
// check and the connect (DNS rebinding) has nothing to change; the
// net.Dialer's Control hook checks the same address once more just before
// connect(2). An address that cannot be parsed is refused: the guard fails
// closed.
package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// defaultDeny is every private, loopback, link-local, multicast and
// otherwise reserved range (the IANA IPv4 and IPv6 special-purpose address
// registries), a superset of Synapse's documented ip_range_blacklist
// default. It is not exported so that nothing can shrink it at run time;
// DefaultDeny returns a copy.
var defaultDeny = mustPrefixes(
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
	"192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
	"198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
	"::/128", "::1/128", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/23",
	"2001:db8::/32", "2002::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
)

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// DefaultDeny returns the built-in deny list: loopback, RFC 1918, CGNAT
// (100.64/10), link-local, unique-local (fc00::/7), multicast, the
// documentation and benchmarking ranges, 6to4/NAT64/Teredo (which embed
// IPv4 addresses) and the rest of the reserved space. Every Policy refuses
// these unless its Allow list names them.
func DefaultDeny() []netip.Prefix {
	return append([]netip.Prefix(nil), defaultDeny...)
}

// ErrRefused matches (with errors.Is) every refusal by a policy.
var ErrRefused = errors.New("address refused")

// RefusedError is a refusal: no connection was attempted to Addr.
type RefusedError struct {
	// Host is the name that was dialled, when it was a name; empty for an
	// IP literal.
	Host string
	// Addrs are the refused addresses (empty when none could be parsed).
	Addrs []netip.Addr
	// Policy names the configuration that refused them.
	Policy string
}

func (e *RefusedError) Error() string {
	what := "an unparsable address"
	if len(e.Addrs) > 0 {
		s := make([]string, len(e.Addrs))
		for i, a := range e.Addrs {
			s[i] = a.String()
		}
		what = strings.Join(s, ", ")
	}
	if e.Host != "" {
		what = e.Host + " (" + what + ")"
	}
	return fmt.Sprintf("%s refused: private or reserved address, or listed in %s", what, e.policy())
}

func (e *RefusedError) policy() string {
	if e.Policy == "" {
		return "the deny list"
	}
	return e.Policy
}

// Is makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// Policy says which addresses may be dialled. The built-in list
// (DefaultDeny) is always refused, so the zero Policy is the safe default;
// Deny adds ranges to it and Allow makes exceptions to both.
type Policy struct {
	Deny, Allow []netip.Prefix
	// Name is the configuration key operators change to alter the policy
	// (e.g. "ip_range_blacklist"); refusals name it.
	Name string
}

// Allowed applies the policy to one address. The unspecified addresses
// (0.0.0.0, ::) are refused even when Allow covers them: connecting to
// them reaches the local host.
func (p Policy) Allowed(ip netip.Addr) bool {
	// A zoned address (fe80::1%eth0) is never "contained" in a prefix, so
	// drop the zone first or link-local would slip through; an IPv4-mapped
	// IPv6 address is checked as the IPv4 address it reaches.
	ip = ip.Unmap().WithZone("")
	if !ip.IsValid() || ip.IsUnspecified() {
		return false
	}
	for _, pr := range p.Allow {
		if pr.Contains(ip) {
			return true
		}
	}
	for _, pr := range defaultDeny {
		if pr.Contains(ip) {
			return false
		}
	}
	for _, pr := range p.Deny {
		if pr.Contains(ip) {
			return false
		}
	}
	return true
}

// Control is a net.Dialer Control hook: it runs after the socket is
// created and before it connects, with the numeric address. Anything it
// cannot parse is refused.
func (p Policy) Control(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return &RefusedError{Policy: p.Name}
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return &RefusedError{Policy: p.Name}
	}
	if !p.Allowed(ip) {
		return &RefusedError{Addrs: []netip.Addr{ip}, Policy: p.Name}
	}
	return nil
}

// DefaultTimeout bounds one connection attempt when Dialer.Timeout is 0.
const DefaultTimeout = 10 * time.Second

// Dialer dials only addresses its Policy allows. The zero value is usable
// (the built-in deny list, the system resolver, a net.Dialer with the
// policy's Control hook). Set the fields before first use.
type Dialer struct {
	Policy Policy
	// Lookup resolves a host name to addresses; nil uses the system
	// resolver. Tests inject a fake; federation injects its own DNS client.
	Lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	// Dial connects to an IP literal address ("ip:port"); nil uses a
	// net.Dialer with Timeout and the policy's Control hook. Tests inject a
	// recorder to prove a refused address is never dialled.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// Timeout bounds each connection attempt (0: DefaultTimeout).
	Timeout time.Duration
}

// DialContext resolves addr's host, drops refused addresses and dials the
// allowed ones in order, by IP literal, returning the first connection
// made. When every address is refused nothing is dialled and the error is
// a *RefusedError.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var ips []netip.Addr
	name := ""
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else {
		name = host
		if ips, err = d.lookup(ctx, host); err != nil {
			return nil, fmt.Errorf("resolve %s: %w", host, err)
		}
		if len(ips) == 0 {
			return nil, fmt.Errorf("resolve %s: no addresses", host)
		}
	}
	var refused []netip.Addr
	var errs []error
	for _, ip := range ips {
		if !d.Policy.Allowed(ip) {
			refused = append(refused, ip)
			continue
		}
		conn, err := d.dial(ctx, network, net.JoinHostPort(ip.Unmap().String(), port))
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return nil, &RefusedError{Host: name, Addrs: refused, Policy: d.Policy.Name}
	}
	return nil, errors.Join(errs...)
}

func (d *Dialer) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	if d.Lookup != nil {
		return d.Lookup(ctx, host)
	}
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

func (d *Dialer) dial(ctx context.Context, network, address string) (net.Conn, error) {
	if d.Dial != nil {
		return d.Dial(ctx, network, address)
	}
	t := d.Timeout
	if t == 0 {
		t = DefaultTimeout
	}
	nd := &net.Dialer{Timeout: t, Control: d.Policy.Control}
	return nd.DialContext(ctx, network, address)
}
