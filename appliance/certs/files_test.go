package certs

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"hearth/appliance/diag/diagtest"
)

// TestFilesReload: a TLS listener serving tls_certificate_path picks up a
// new certificate written over the old one without a restart; a broken
// pair (the key not yet written) keeps the old one in service.
func TestFilesReload(t *testing.T) {
	ca := diagtest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := diagtest.WriteFiles(t, dir, ca.Leaf(t, "one.test"))
	f, err := LoadFiles(certFile, keyFile, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	f.CheckEvery = 0
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: f.GetCertificate})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	names := func(sni string) []string {
		t.Helper()
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), &tls.Config{ServerName: sni, RootCAs: ca.Pool()})
		if err != nil {
			t.Fatalf("handshake for %s: %v", sni, err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].DNSNames
	}
	if n := names("one.test"); n[0] != "one.test" {
		t.Fatalf("first certificate: %v", n)
	}
	// The certificate is rewritten, the key not yet: keep serving the old.
	two := ca.Leaf(t, "two.test")
	tmp := t.TempDir()
	newCert, newKey := diagtest.WriteFiles(t, tmp, two)
	raw, _ := os.ReadFile(newCert)
	os.WriteFile(certFile, raw, 0o600)
	future := time.Now().Add(2 * time.Second)
	os.Chtimes(certFile, future, future)
	if n := names("one.test"); n[0] != "one.test" {
		t.Fatalf("during a half-written renewal: %v", n)
	}
	if _, err := f.current(); err == nil {
		t.Fatal("the mismatched pair was not reported")
	}
	raw, _ = os.ReadFile(newKey)
	os.WriteFile(keyFile, raw, 0o600)
	os.Chtimes(keyFile, future, future)
	if n := names("two.test"); n[0] != "two.test" {
		t.Fatalf("after the renewal: %v", n)
	}
	st := (&Manager{files: f}).Statuses(t.Context())
	if len(st) != 1 || st[0].Names[0] != "two.test" || st[0].Issuer == "" || st[0].Chain != 2 || st[0].Error != "" {
		t.Fatalf("status: %+v", st)
	}
}
