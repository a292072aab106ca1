package secret

import (
	"strings"
	"testing"
)

func TestPasswordRoundTripAndSynapseHash(t *testing.T) {
	t.Parallel()
	h, err := HashPassword("correct horse", 4)
	if err != nil {
		t.Fatal(err)
	}
	if !CheckPassword(h, "correct horse") || CheckPassword(h, "wrong") {
		t.Fatal("round trip failed")
	}
	// Synapse (python bcrypt) writes "$2b$", PHP and htpasswd "$2y$": the
	// same algorithm under other names. Both must verify.
	for _, prefix := range []string{"$2b$", "$2y$"} {
		if !CheckPassword(prefix+h[4:], "correct horse") {
			t.Fatalf("%s hash not accepted", prefix)
		}
	}
	if CheckPassword("", "") {
		t.Fatal("empty hash matched")
	}
}

// A password longer than bcrypt reads is hashed, wherever it is set
// (Go's bcrypt alone refuses it), and matches whole; one that differs
// within the first 72 bytes does not.
func TestLongPassword(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 40) + "tail" // 84 bytes
	h, err := HashPassword(long, 4)
	if err != nil {
		t.Fatal(err)
	}
	if !CheckPassword(h, long) {
		t.Error("a long password does not match its own hash")
	}
	if CheckPassword(h, "x"+long[1:]) {
		t.Error("a password that differs in its first byte matches")
	}
}

func TestTokenShape(t *testing.T) {
	t.Parallel()
	a, b := Token("syt_"), Token("syt_")
	if a == b || !strings.HasPrefix(a, "syt_") || len(a) != 4+43 {
		t.Fatalf("tokens %q %q", a, b)
	}
	if d := DeviceID(); len(d) != 10 || strings.ToUpper(d) != d {
		t.Fatalf("device id %q", d)
	}
}
