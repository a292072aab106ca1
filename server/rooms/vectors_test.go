package rooms

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json/v2"
	"errors"
	"testing"
)

// Published vectors: spec appendices, "Cryptographic Test Vectors"
// (https://spec.matrix.org/v1.19/appendices/#cryptographic-test-vectors).
const specSeed = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"

func specKey(t *testing.T) SigningKey {
	t.Helper()
	seed, err := base64.RawStdEncoding.DecodeString(specSeed)
	if err != nil {
		t.Fatal(err)
	}
	k, err := SigningKeyFromSeed("domain", "ed25519:1", seed)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sigOf(t *testing.T, raw []byte) string {
	t.Helper()
	var v struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return v.Signatures["domain"]["ed25519:1"]
}

func TestSpecJSONSigningVectors(t *testing.T) {
	t.Parallel()
	key := specKey(t)
	tests := []struct {
		name, in, sig string
	}{
		{"empty object", `{}`, "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"},
		{"object with data", `{"one": 1, "two": "Two"}`, "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := SignJSON([]byte(tt.in), key)
			if err != nil {
				t.Fatal(err)
			}
			if got := sigOf(t, out); got != tt.sig {
				t.Errorf("signature = %s, want %s", got, tt.sig)
			}
		})
	}
}

// The event vectors predate room versions; they use the v1 redaction
// algorithm (origin is kept), so they are checked with room version 1.
func TestSpecEventSigningVectors(t *testing.T) {
	t.Parallel()
	key := specKey(t)
	tests := []struct {
		name, in, hash, sig string
	}{
		{
			name: "minimal event",
			in: `{"room_id":"!x:domain","sender":"@a:domain","origin":"domain","origin_server_ts":1000000,
				"signatures":{},"hashes":{},"type":"X","content":{},"prev_events":[],"auth_events":[],
				"depth":3,"unsigned":{"age_ts":1000000}}`,
			hash: "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos",
			sig:  "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg",
		},
		{
			name: "redactable content",
			in: `{"content":{"body":"Here is the message content"},"event_id":"$0:domain","origin":"domain",
				"origin_server_ts":1000000,"type":"m.room.message","room_id":"!r:domain","sender":"@u:domain",
				"signatures":{},"unsigned":{"age_ts":1000000}}`,
			hash: "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g",
			sig:  "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA",
		},
	}
	rv := MustVersion("1")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, err := ContentHash([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if got := base64.RawStdEncoding.EncodeToString(h[:]); got != tt.hash {
				t.Fatalf("content hash = %s, want %s", got, tt.hash)
			}
			var obj map[string]any
			if err := json.Unmarshal([]byte(tt.in), &obj); err != nil {
				t.Fatal(err)
			}
			obj["hashes"] = map[string]string{"sha256": tt.hash}
			withHash, _ := json.Marshal(obj)
			signed, err := SignEvent(rv, withHash, key)
			if err != nil {
				t.Fatal(err)
			}
			if got := sigOf(t, signed); got != tt.sig {
				t.Errorf("signature = %s, want %s", got, tt.sig)
			}
		})
	}
}

func TestVerifyJSON(t *testing.T) {
	t.Parallel()
	key := specKey(t)
	pub := key.Private.Public().(ed25519.PublicKey)
	signed, err := SignJSON([]byte(`{"one": 1, "two": "Two", "unsigned": {"age": 5}}`), key)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyJSON(signed, "domain", "ed25519:1", pub); err != nil {
		t.Fatalf("own signature: %v", err)
	}
	// unsigned is outside the signature: changing it keeps it valid.
	changedUnsigned := bytes.Replace(signed, []byte(`"age":5`), []byte(`"age":6`), 1)
	if err := VerifyJSON(changedUnsigned, "domain", "ed25519:1", pub); err != nil {
		t.Errorf("unsigned changed: %v", err)
	}
	other := ed25519.NewKeyFromSeed(make([]byte, 32)).Public().(ed25519.PublicKey)
	for name, tc := range map[string]struct {
		raw         []byte
		server, kid string
		pub         ed25519.PublicKey
	}{
		"tampered":       {bytes.Replace(signed, []byte(`"Two"`), []byte(`"Three"`), 1), "domain", "ed25519:1", pub},
		"other key":      {signed, "domain", "ed25519:1", other},
		"no such key id": {signed, "domain", "ed25519:2", pub},
		"no such server": {signed, "elsewhere", "ed25519:1", pub},
		"not json":       {[]byte(`{`), "domain", "ed25519:1", pub},
	} {
		if err := VerifyJSON(tc.raw, tc.server, tc.kid, tc.pub); !errors.Is(err, ErrSignature) {
			t.Errorf("%s: err = %v, want ErrSignature", name, err)
		}
	}
}
