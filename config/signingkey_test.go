package config

import (
	"crypto/ed25519"
	"regexp"
	"testing"
)

func TestSigningKeyRoundTrip(t *testing.T) {
	k, err := NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	enc := k.Encode()
	// Synapse's format: "ed25519 a_XXXX <unpadded base64 seed>".
	if !regexp.MustCompile(`^ed25519 a_[A-Za-z]{4} [A-Za-z0-9+/]{43}\n$`).Match(enc) {
		t.Fatalf("encoded key %q is not in Synapse's format", enc)
	}
	back, err := ParseSigningKey(enc)
	if err != nil {
		t.Fatal(err)
	}
	if back.ID != k.ID || !back.Priv.Equal(k.Priv) {
		t.Fatalf("round trip changed the key: %s vs %s", back.ID, k.ID)
	}
	msg := []byte("hello")
	if !ed25519.Verify(back.Public(), msg, ed25519.Sign(k.Priv, msg)) {
		t.Fatal("public key does not verify the original's signature")
	}
}

func TestParseSigningKey(t *testing.T) {
	// A key as Synapse writes it (seed of 32 zero bytes), with a comment.
	k, err := ParseSigningKey([]byte("# old key\ned25519 a_abcd AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"))
	if err != nil || k.ID != "ed25519:a_abcd" {
		t.Fatalf("ParseSigningKey = %v, %v", k.ID, err)
	}
	for _, bad := range []string{"", "ed25519 a_abcd", "rsa a_abcd AAAA", "ed25519 a_abcd AAAA"} {
		if _, err := ParseSigningKey([]byte(bad)); err == nil {
			t.Errorf("ParseSigningKey(%q) accepted", bad)
		}
	}
}
