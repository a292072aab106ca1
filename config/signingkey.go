package config

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"strings"
)

// SigningKey is the server's ed25519 key, stored in Synapse's file format:
// one line "ed25519 <version> <unpadded base64 seed>", so a key can be moved
// between Synapse and Hearth in either direction.
type SigningKey struct {
	ID   string // "ed25519:<version>"
	Priv ed25519.PrivateKey
}

// Public is the key's public half.
func (k SigningKey) Public() ed25519.PublicKey { return k.Priv.Public().(ed25519.PublicKey) }

// NewSigningKey makes a fresh key with a random "a_XXXX" version, as Synapse does.
func NewSigningKey() (SigningKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return SigningKey{}, err
	}
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return SigningKey{}, err
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return SigningKey{ID: "ed25519:a_" + string(b), Priv: priv}, nil
}

// Encode renders the key in Synapse's file format.
func (k SigningKey) Encode() []byte {
	version := strings.TrimPrefix(k.ID, "ed25519:")
	return []byte("ed25519 " + version + " " + base64.RawStdEncoding.EncodeToString(k.Priv.Seed()) + "\n")
}

// ParseSigningKey reads the first ed25519 key in Synapse's format.
func ParseSigningKey(data []byte) (SigningKey, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 {
			return SigningKey{}, fmt.Errorf("line %q is not \"ed25519 <version> <base64 seed>\"", line)
		}
		if f[0] != "ed25519" {
			return SigningKey{}, fmt.Errorf("algorithm %q is not supported (only ed25519)", f[0])
		}
		seed, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(f[2], "="))
		if err != nil || len(seed) != ed25519.SeedSize {
			return SigningKey{}, fmt.Errorf("key %s: seed is not 32 bytes of unpadded base64", f[1])
		}
		return SigningKey{ID: "ed25519:" + f[1], Priv: ed25519.NewKeyFromSeed(seed)}, nil
	}
	return SigningKey{}, fmt.Errorf("no key found")
}

// LoadSigningKey reads the key file named by signing_key_path.
func (c *Config) LoadSigningKey() (SigningKey, error) {
	data, err := os.ReadFile(c.SigningKeyPath)
	if err != nil {
		return SigningKey{}, fmt.Errorf("signing_key_path: %w", err)
	}
	k, err := ParseSigningKey(data)
	if err != nil {
		return SigningKey{}, fmt.Errorf("signing_key_path: %s: %w", c.SigningKeyPath, err)
	}
	return k, nil
}
