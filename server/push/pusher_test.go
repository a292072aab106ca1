package push

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"

	"hearth/server/netguard"
	"hearth/server/storage"
)

// dialRecorder notes the addresses it is asked to dial and dials none.
type dialRecorder struct {
	mu    sync.Mutex
	addrs []string
}

func (d *dialRecorder) dial(_ context.Context, _, address string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.addrs = append(d.addrs, address)
	return nil, errors.New("recorder: not dialling")
}

// TestGatewayAddressPolicy: a push gateway whose name resolves to a private
// address is refused before any connection is attempted, unless the
// policy's Allow list (ip_range_whitelist) covers it. Nothing is dialled:
// the resolver and the dialer are fakes.
func TestGatewayAddressPolicy(t *testing.T) {
	lookup := func(_ context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "gateway.internal":
			return []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("fd00::1")}, nil
		case "gateway.public":
			return []netip.Addr{netip.MustParseAddr("93.184.215.14")}, nil
		}
		return nil, errors.New("no such host")
	}
	pu := &storage.Pusher{AppID: "org.example.app", PushKey: "key", PushKeyTS: 1_700_000_000_000}
	send := func(policy netguard.Policy, url string) (*dialRecorder, error) {
		rec := &dialRecorder{}
		p := NewPool(PoolOptions{Client: NewGatewayClient(&netguard.Dialer{Policy: policy, Lookup: lookup, Dial: rec.dial})})
		_, err := p.post(t.Context(), pu, &gateway{url: url, data: map[string]any{}}, map[string]any{"event_id": "$e"}, nil)
		return rec, err
	}
	for _, url := range []string{"https://gateway.internal/_matrix/push/v1/notify", "http://127.0.0.1:8080/_matrix/push/v1/notify",
		"http://[::1]/_matrix/push/v1/notify", "http://169.254.169.254/_matrix/push/v1/notify"} {
		rec, err := send(netguard.Policy{Name: "ip_range_blacklist"}, url)
		if !errors.Is(err, netguard.ErrRefused) || !errors.Is(err, errPushFailed) {
			t.Errorf("%s: err = %v, want a refusal", url, err)
		}
		if len(rec.addrs) != 0 {
			t.Errorf("%s: dialled %v", url, rec.addrs)
		}
	}
	// A public address is dialled (the recorder refuses to connect).
	rec, err := send(netguard.Policy{}, "https://gateway.public/_matrix/push/v1/notify")
	if errors.Is(err, netguard.ErrRefused) || len(rec.addrs) != 1 || rec.addrs[0] != "93.184.215.14:443" {
		t.Errorf("public gateway: err %v, dialled %v", err, rec.addrs)
	}
	// ip_range_whitelist lets a private gateway through, and only it.
	allow := netguard.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	rec, err = send(allow, "https://gateway.internal/_matrix/push/v1/notify")
	if errors.Is(err, netguard.ErrRefused) || len(rec.addrs) != 1 || rec.addrs[0] != "10.1.2.3:443" {
		t.Errorf("allowed gateway: err %v, dialled %v", err, rec.addrs)
	}
}

func TestCheckGatewayURL(t *testing.T) {
	for url, ok := range map[string]bool{
		"https://push.example.org/_matrix/push/v1/notify": true,
		"http://127.0.0.1:5000/_matrix/push/v1/notify":    true,
		"":                          false,
		"https://push.example.org/": false,
		"https://push.example.org/_matrix/push/v1/notify/":     false,
		"ftp://push.example.org/_matrix/push/v1/notify":        false,
		"/_matrix/push/v1/notify":                              false,
		"https://push.example.org/_matrix/push/v1/notify?x=1":  true,
		"https://push.example.org/_matrix/push/v2/notify":      false,
		"https://user@push.example.org/_matrix/push/v1/notify": true,
	} {
		if err := CheckGatewayURL(url); (err == nil) != ok {
			t.Errorf("%q: %v", url, err)
		}
	}
}
