package server

import (
	"testing"
	"time"
)

// The vectors were computed with Python's hmac module, the way Synapse's
// register_new_matrix_user computes them, so a mistake shared by the server
// and `hearth register-user` cannot hide.
func TestSharedSecretMACMatchesSynapse(t *testing.T) {
	tests := []struct {
		name     string
		admin    bool
		userType string
		want     string
	}{
		{"notadmin", false, "", "a243c3e068a83ffa48f158ab9b0371a2f93ad94c"},
		{"admin with user_type", true, "bot", "94a7614c8da43c43783811dcc27955f126fa94b8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := sharedSecretMAC("test-shared-secret", "abcdef", "alice", "wonderland", tc.admin, tc.userType)
			if got != tc.want {
				t.Errorf("mac = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestNonceStore(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	ns := newNonceStore(func() time.Time { return now })

	a, ok := ns.issue()
	if !ok || len(a) != 32 {
		t.Fatalf("issue = %q, %v; want 32 hex characters", a, ok)
	}
	b, _ := ns.issue()
	if a == b {
		t.Fatal("two nonces are equal")
	}
	if !ns.take(a) {
		t.Fatal("fresh nonce refused")
	}
	if ns.take(a) {
		t.Fatal("nonce accepted twice")
	}
	if ns.take("never-issued") {
		t.Fatal("unknown nonce accepted")
	}
	now = now.Add(nonceTTL)
	if ns.take(b) {
		t.Fatal("nonce accepted after 60 s")
	}
}

func TestNonceStoreBounded(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	ns := newNonceStore(func() time.Time { return now })
	for i := 0; i < maxNonces; i++ {
		if _, ok := ns.issue(); !ok {
			t.Fatalf("issue %d refused below the bound", i)
		}
	}
	if _, ok := ns.issue(); ok {
		t.Fatal("issue beyond the bound accepted")
	}
	// Once the outstanding nonces expire they are collected.
	now = now.Add(nonceTTL)
	if _, ok := ns.issue(); !ok {
		t.Fatal("issue refused after the old nonces expired")
	}
}
