package certs

import (
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"golang.org/x/crypto/acme/autocert"

	"hearth/config"
)

// TestACMEStatusError: a CA that cannot be reached shows on the
// certificate status as the last error, with what to check.
func TestACMEStatusError(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "https://" + dead.Addr().String() + "/dir"
	dead.Close()
	cfg := &config.Config{ServerName: "example.test", Listeners: []config.Listener{{Port: 443, TLS: true}},
		ACME: config.ACME{Enabled: true, URL: url, Domains: []string{"example.test"}}}
	cfg.Defaults()
	m, err := New(cfg, autocert.DirCache(t.TempDir()), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if st := m.Statuses(t.Context()); len(st) != 1 || st[0].Error != "" || !st[0].NotAfter.IsZero() {
		t.Fatalf("before any attempt: %+v", st)
	}
	m.ACME().obtain("example.test")
	st := m.Statuses(t.Context())
	if len(st) != 1 || st[0].Source != "acme" || st[0].Checked.IsZero() || !strings.Contains(st[0].Error, "cannot reach the ACME CA at "+url) {
		t.Fatalf("status after a failed attempt: %+v", st)
	}
	if c := m.TLSConfig(); !strings.Contains(strings.Join(c.NextProtos, ","), "acme-tls/1") {
		t.Fatalf("NextProtos %v: TLS-ALPN-01 would not be answered", c.NextProtos)
	}
}
