package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

// These tests use an injected resolver and a dial recorder. No test
// connects anywhere except to 127.0.0.1 listeners it started itself: the
// recorder notes the addresses it is asked for and refuses them.

type fakeNet struct {
	mu      sync.Mutex
	answers map[string][]string // host → addresses
	dials   []string
}

func (f *fakeNet) lookup(_ context.Context, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ans, ok := f.answers[host]
	if !ok {
		return nil, fmt.Errorf("no such host %s", host)
	}
	var out []netip.Addr
	for _, a := range ans {
		out = append(out, netip.MustParseAddr(a))
	}
	return out, nil
}

var errFakeRefused = errors.New("fake dialer: not connecting")

func (f *fakeNet) dial(_ context.Context, _, address string) (net.Conn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dials = append(f.dials, address)
	return nil, errFakeRefused
}

func (f *fakeNet) dialled() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.dials)
}

func TestDefaultDenyCoversPrivateRanges(t *testing.T) {
	var p Policy
	for _, ip := range []string{
		"0.1.2.3", "10.1.2.3", "100.64.0.1", "127.0.0.1", "127.255.255.254", "169.254.169.254", "172.16.5.4",
		"172.31.255.255", "192.0.0.8", "192.0.2.1", "192.168.1.1", "198.18.0.1", "198.51.100.7", "203.0.113.9",
		"224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
		"::1", "::", "::ffff:10.0.0.1", "::ffff:127.0.0.1", "64:ff9b::a00:1", "100::1", "2001:db8::1", "2002:a00:1::",
		"fc00::1", "fd12:3456::1", "fe80::1", "fe80::1%eth0", "fec0::1", "ff02::1",
	} {
		if p.Allowed(netip.MustParseAddr(ip)) {
			t.Errorf("%s is allowed by the zero Policy", ip)
		}
	}
	for _, ip := range []string{"93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:93.184.216.34"} {
		if !p.Allowed(netip.MustParseAddr(ip)) {
			t.Errorf("public %s is refused", ip)
		}
	}
	// DefaultDeny hands out a copy: changing it changes nothing.
	d := DefaultDeny()
	d[0] = netip.MustParsePrefix("8.8.8.8/32")
	if !p.Allowed(netip.MustParseAddr("8.8.8.8")) || p.Allowed(netip.MustParseAddr("0.0.0.1")) {
		t.Fatal("DefaultDeny's result aliases the built-in list")
	}
}

func TestPolicyDenyAndAllow(t *testing.T) {
	p := Policy{
		Deny:  []netip.Prefix{netip.MustParsePrefix("93.184.216.0/24")},
		Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("0.0.0.0/0")},
	}
	// Allow wins over both lists, except for the unspecified address.
	for ip, want := range map[string]bool{"10.1.1.1": true, "93.184.216.34": true, "0.0.0.0": false} {
		if got := p.Allowed(netip.MustParseAddr(ip)); got != want {
			t.Errorf("Allowed(%s) = %v, want %v", ip, got, want)
		}
	}
	p.Allow = p.Allow[:1]
	if p.Allowed(netip.MustParseAddr("93.184.216.34")) {
		t.Error("Deny does not add to the built-in list")
	}
}

func TestDialerRefusesWithoutDialling(t *testing.T) {
	f := &fakeNet{answers: map[string][]string{
		"internal.example": {"10.0.0.1"},
		"metadata.example": {"169.254.169.254"},
		"loop.example":     {"127.0.0.1", "::1"},
		"mapped.example":   {"::ffff:192.168.1.1"},
		"mixed.example":    {"10.0.0.1", "93.184.216.34"},
		"empty.example":    {},
	}}
	d := &Dialer{Policy: Policy{Name: "ip_range_blacklist"}, Lookup: f.lookup, Dial: f.dial}
	for _, addr := range []string{
		"internal.example:80", "metadata.example:80", "loop.example:443", "mapped.example:80",
		"127.0.0.1:80", "[::1]:80", "[::ffff:10.0.0.1]:80", "169.254.169.254:80", "0.0.0.0:80", "[::]:80",
		"[fe80::1]:80", "[fe80::1%eth0]:80", "[ff02::1%lo]:80", "224.0.0.1:80", "255.255.255.255:80", "100.64.1.1:80", "172.16.5.4:80", "192.168.0.1:80",
		"[fd00::1]:443", "[64:ff9b::a00:1]:80", "[2002:a00:1::]:80", "198.18.0.1:80",
	} {
		_, err := d.DialContext(t.Context(), "tcp", addr)
		var re *RefusedError
		if !errors.Is(err, ErrRefused) || !errors.As(err, &re) {
			t.Errorf("dial %s: %v, want the address refused", addr, err)
			continue
		}
		if re.Policy != "ip_range_blacklist" {
			t.Errorf("refusal of %s names %q", addr, re.Policy)
		}
	}
	if got := f.dialled(); len(got) != 0 {
		t.Fatalf("refused addresses reached the dialer: %v", got)
	}
	_, err := d.DialContext(t.Context(), "tcp", "internal.example:80")
	if want := "internal.example (10.0.0.1) refused: private or reserved address, or listed in ip_range_blacklist"; err == nil || err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}

	// A name with a private and a public address: only the public one is
	// dialled (and the recorder refuses it: no connection is made).
	_, err = d.DialContext(t.Context(), "tcp", "mixed.example:80")
	if !errors.Is(err, errFakeRefused) || errors.Is(err, ErrRefused) || !slices.Equal(f.dialled(), []string{"93.184.216.34:80"}) {
		t.Fatalf("mixed answer: %v, dialled %v", err, f.dialled())
	}
	// Unresolvable and empty answers fail without dialling.
	for _, addr := range []string{"nowhere.example:80", "empty.example:80", "no port"} {
		if _, err := d.DialContext(t.Context(), "tcp", addr); err == nil || len(f.dialled()) != 1 {
			t.Fatalf("%s: %v, dialled %v", addr, err, f.dialled())
		}
	}

	// Allow makes an exception; Deny adds ranges.
	f2 := &fakeNet{answers: map[string][]string{"internal.example": {"10.0.0.1"}, "public.example": {"93.184.216.34"}}}
	d2 := &Dialer{Lookup: f2.lookup, Dial: f2.dial, Policy: Policy{
		Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		Deny:  []netip.Prefix{netip.MustParsePrefix("93.184.216.0/24")},
	}}
	if _, err := d2.DialContext(t.Context(), "tcp", "internal.example:80"); !errors.Is(err, errFakeRefused) {
		t.Fatalf("allowed address: %v", err)
	}
	if _, err := d2.DialContext(t.Context(), "tcp", "public.example:80"); !errors.Is(err, ErrRefused) {
		t.Fatalf("denied public address: %v", err)
	}
	if got := f2.dialled(); !slices.Equal(got, []string{"10.0.0.1:80"}) {
		t.Fatalf("dialled %v", got)
	}
}

func TestControl(t *testing.T) {
	var p Policy
	for addr, ok := range map[string]bool{
		"10.0.0.1:80": false, "127.0.0.1:8008": false, "[::1]:80": false, "[::ffff:127.0.0.1]:80": false,
		"169.254.169.254:80": false, "not an address": false, "example.org:80": false, "[fe80::1%eth0]:80": false,
		"93.184.216.34:443": true, "[2606:2800:220:1:248:1893:25c8:1946]:443": true,
	} {
		if err := p.Control("tcp", addr, nil); (err == nil) != ok || (err != nil && !errors.Is(err, ErrRefused)) {
			t.Errorf("Control(%s) = %v, want allowed=%v", addr, err, ok)
		}
	}

	// Control runs inside the default net.Dialer, before connect(2): a
	// loopback listener that is not allowed never sees a connection.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var accepted atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	real := &Dialer{} // the production lookup and dialer
	if _, err := real.DialContext(t.Context(), "tcp", l.Addr().String()); !errors.Is(err, ErrRefused) {
		t.Fatalf("guarded dial to loopback: %v", err)
	}
	nd := &net.Dialer{Control: p.Control}
	if _, err := nd.DialContext(t.Context(), "tcp", l.Addr().String()); !errors.Is(err, ErrRefused) {
		t.Fatalf("net.Dialer with the control hook: %v", err)
	}
	// Allowed, the same listener is reached: the refusals above were the policy's.
	ok := &Dialer{Policy: Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}}
	c, err := ok.DialContext(t.Context(), "tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("allowed loopback: %v", err)
	}
	c.Close()
	if n := accepted.Load(); n > 1 {
		t.Fatalf("listener accepted %d connections, want at most the allowed one", n)
	}
}
