// Package secret makes and checks the server's secrets: access and refresh
// tokens, device IDs, and bcrypt password hashes readable by Synapse.
package secret

import (
	"crypto/rand"
	"encoding/base64"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// Token returns prefix + 256 random bits, URL-safe. The prefix says what the
// token is (e.g. "syt_" for access tokens, as Synapse does) so leaked tokens
// are easy to recognise in logs and secret scanners.
func Token(prefix string) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("secret: crypto/rand failed: " + err.Error())
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// DeviceID returns a random 10-letter upper-case device ID, Synapse's shape.
func DeviceID() string { return FromAlphabet("ABCDEFGHIJKLMNOPQRSTUVWXYZ", 10) }

// FromAlphabet returns n characters drawn uniformly from alphabet (at most
// 256 characters), by rejection sampling so no character is favoured.
func FromAlphabet(alphabet string, n int) string {
	limit := 256 - 256%len(alphabet)
	out := make([]byte, 0, n)
	buf := make([]byte, 64)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			panic("secret: crypto/rand failed: " + err.Error())
		}
		for _, b := range buf {
			if int(b) < limit && len(out) < n {
				out = append(out, alphabet[int(b)%len(alphabet)])
			}
		}
	}
	return string(out)
}

// HashPassword returns a bcrypt hash at the given cost. Go writes the "$2a$"
// prefix; Synapse's bcrypt reads it, and Hearth reads Synapse's "$2b$".
// bcrypt reads only a password's first 72 bytes; they are all that is
// passed (Go's bcrypt refuses more, where Synapse's bcrypt long
// truncated), so a longer password keeps working wherever it is set, and
// CheckPassword, whose bcrypt also reads 72 bytes, matches it whole.
func HashPassword(password string, cost int) (string, error) {
	if len(password) > maxBcryptBytes {
		password = password[:maxBcryptBytes]
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	return string(h), err
}

// maxBcryptBytes is how much of a password bcrypt reads.
const maxBcryptBytes = 72

// CheckPassword reports whether password matches hash ("$2a$", "$2b$" or
// "$2y$" bcrypt). An empty hash never matches.
func CheckPassword(hash, password string) bool {
	if hash == "" {
		return false
	}
	// x/crypto/bcrypt accepts $2a$ and $2b$ variants; normalise $2y$ too.
	if strings.HasPrefix(hash, "$2y$") {
		hash = "$2b$" + hash[4:]
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil
}
