package federation_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"hearth/server/federation"
	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

func TestParseXMatrix(t *testing.T) {
	t.Parallel()
	full := federation.XMatrix{Origin: "origin.test", Destination: "dest.test", KeyID: "ed25519:k1", Sig: "c2ln"}
	tests := []struct {
		name, header string
		want         federation.XMatrix
		ok           bool
	}{
		{"as the spec writes it", `X-Matrix origin="origin.test",destination="dest.test",key="ed25519:k1",sig="c2ln"`, full, true},
		{"unquoted, colons included", `X-Matrix origin=origin.test,destination=dest.test,key=ed25519:k1,sig=c2ln`, full, true},
		{"any order, names in any case, spaces", `X-Matrix   SIG="c2ln" , Key=ed25519:k1,  Destination="dest.test",ORIGIN="origin.test"`, full, true},
		{"scheme in another case", `x-matrix origin="origin.test",destination="dest.test",key="ed25519:k1",sig="c2ln"`, full, true},
		{"backslash escapes", `X-Matrix origin="origin\.test",destination="dest.test",key="ed25519:k1",sig="c\2ln"`, full, true},
		{"unknown parameters ignored", `X-Matrix origin="origin.test",destination="dest.test",future="x, y",key="ed25519:k1",sig="c2ln"`, full, true},
		{"empty list elements", `X-Matrix ,origin="origin.test",,destination="dest.test",key="ed25519:k1",sig="c2ln",`, full, true},
		{"port in origin", `X-Matrix origin="origin.test:8448",key="ed25519:k1",sig="c2ln"`,
			federation.XMatrix{Origin: "origin.test:8448", KeyID: "ed25519:k1", Sig: "c2ln"}, true},
		{"no destination (before v1.3)", `X-Matrix origin="origin.test",key="ed25519:k1",sig="c2ln"`,
			federation.XMatrix{Origin: "origin.test", KeyID: "ed25519:k1", Sig: "c2ln"}, true},
		{"base64 signature unquoted", `X-Matrix origin=origin.test,key=ed25519:k1,sig=ab+/cd==`,
			federation.XMatrix{Origin: "origin.test", KeyID: "ed25519:k1", Sig: "ab+/cd=="}, true},

		{"other scheme", `Bearer abc`, federation.XMatrix{}, false},
		{"scheme alone", `X-Matrix`, federation.XMatrix{}, false},
		{"no origin", `X-Matrix key="ed25519:k1",sig="c2ln"`, federation.XMatrix{}, false},
		{"no key", `X-Matrix origin="origin.test",sig="c2ln"`, federation.XMatrix{}, false},
		{"no sig", `X-Matrix origin="origin.test",key="ed25519:k1"`, federation.XMatrix{}, false},
		{"origin not a server name", `X-Matrix origin="a/b",key="ed25519:k1",sig="c2ln"`, federation.XMatrix{}, false},
		{"key not a key ID", `X-Matrix origin="origin.test",key="k1",sig="c2ln"`, federation.XMatrix{}, false},
		{"parameter twice", `X-Matrix origin="origin.test",origin="evil.test",key="ed25519:k1",sig="c2ln"`, federation.XMatrix{}, false},
		{"unterminated quote", `X-Matrix origin="origin.test,key="ed25519:k1",sig="c2ln`, federation.XMatrix{}, false},
		{"no value", `X-Matrix origin=,key="ed25519:k1",sig="c2ln"`, federation.XMatrix{}, false},
		{"no equals sign", `X-Matrix origin "origin.test",key="ed25519:k1",sig="c2ln"`, federation.XMatrix{}, false},
		{"missing comma", `X-Matrix origin="origin.test" key="ed25519:k1",sig="c2ln"`, federation.XMatrix{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := federation.ParseXMatrix(tc.header)
			if !tc.ok {
				if !errors.Is(err, federation.ErrMalformedAuthorization) {
					t.Fatalf("got %+v, %v; want ErrMalformedAuthorization", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// received is how the destination sees a request the origin sent.
func received(t *testing.T, sent *http.Request, content []byte) *http.Request {
	t.Helper()
	r := httptest.NewRequest(sent.Method, sent.URL.RequestURI(), bytes.NewReader(content))
	r.Header = sent.Header.Clone()
	return r
}

func TestSignAndVerifyRequest(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		n, c := newNetwork(), newClock()
		rm := newRemote(t, n, c, "origin.test")
		ring := newRing(t, st, n, c) // hearth.test's
		body := []byte(`{"pdus":[],"edus":[{"edu_type":"m.typing","content":{"n":1}}]}`)
		sign := func(method, target string, content []byte, origin, dest string) *http.Request {
			t.Helper()
			req, err := http.NewRequest(method, federation.Scheme+"://"+dest+target, bytes.NewReader(content))
			if err != nil {
				t.Fatal(err)
			}
			if err := federation.SignRequest(req, rm.key, origin, dest, content); err != nil {
				t.Fatal(err)
			}
			return req
		}
		const target = "/_matrix/federation/v1/send/txn1?q=a%20b&r=%2F"
		put := sign(http.MethodPut, target, body, "origin.test", "hearth.test")
		if h := put.Header.Get("Authorization"); !strings.HasPrefix(h, `X-Matrix origin="origin.test",destination="hearth.test",key="ed25519:r1",sig="`) {
			t.Fatalf("Authorization: %s", h)
		}

		// The request as sent verifies, with or without a body.
		if origin, err := federation.VerifyRequest(ctx, received(t, put, body), body, "hearth.test", ring); err != nil || origin != "origin.test" {
			t.Fatalf("PUT as sent: %q %v", origin, err)
		}
		get := sign(http.MethodGet, "/_matrix/federation/v1/query/profile?user_id=%40a%3Ahearth.test", nil, "origin.test", "hearth.test")
		if origin, err := federation.VerifyRequest(ctx, received(t, get, nil), nil, "hearth.test", ring); err != nil || origin != "origin.test" {
			t.Fatalf("GET as sent: %q %v", origin, err)
		}
		// The body is compared as JSON: formatting does not matter.
		spaced := []byte(`{ "edus": [{"content": {"n": 1}, "edu_type": "m.typing"}], "pdus": [] }`)
		if _, err := federation.VerifyRequest(ctx, received(t, put, spaced), spaced, "hearth.test", ring); err != nil {
			t.Fatalf("same JSON, other formatting: %v", err)
		}
		// A sender older than v1.3 leaves destination out.
		noDest := received(t, put, body)
		noDest.Header.Set("Authorization", strings.Replace(put.Header.Get("Authorization"), `destination="hearth.test",`, "", 1))
		if _, err := federation.VerifyRequest(ctx, noDest, body, "hearth.test", ring); err != nil {
			t.Fatalf("without destination: %v", err)
		}

		refused := func(name string, r *http.Request, content []byte, want error) {
			t.Helper()
			origin, err := federation.VerifyRequest(ctx, r, content, "hearth.test", ring)
			var ae *federation.AuthError
			if origin != "" || !errors.As(err, &ae) || !errors.Is(err, want) {
				t.Errorf("%s: origin %q, err %v; want an AuthError for %v", name, origin, err, want)
			}
		}
		tampered := []byte(`{"pdus":[],"edus":[{"edu_type":"m.typing","content":{"n":2}}]}`)
		refused("tampered body", received(t, put, tampered), tampered, federation.ErrBadSignature)
		refused("body dropped", received(t, put, nil), nil, federation.ErrBadSignature)
		refused("body not JSON", received(t, put, []byte("{")), []byte("{"), federation.ErrBodyNotJSON)

		other := received(t, put, body)
		other.Method = http.MethodPost
		refused("other method", other, body, federation.ErrBadSignature)

		for _, uri := range []string{"/_matrix/federation/v1/send/txn2?q=a%20b&r=%2F", "/_matrix/federation/v1/send/txn1?q=a%20c&r=%2F",
			"/_matrix/federation/v1/send/txn1?q=a+b&r=%2F", "/_matrix/federation/v1/send/txn1"} {
			r := httptest.NewRequest(http.MethodPut, uri, bytes.NewReader(body))
			r.Header = put.Header.Clone()
			refused("target "+uri, r, body, federation.ErrBadSignature)
		}

		refused("for another server", received(t, sign(http.MethodGet, target, nil, "origin.test", "elsewhere.test"), nil), nil, federation.ErrWrongDestination)
		// Destination left out, but the signature was for another server.
		elsewhere := received(t, sign(http.MethodGet, target, nil, "origin.test", "elsewhere.test"), nil)
		elsewhere.Header.Set("Authorization", strings.Replace(elsewhere.Header.Get("Authorization"), `destination="elsewhere.test",`, "", 1))
		refused("signed for another server, destination left out", elsewhere, nil, federation.ErrBadSignature)

		// Claiming to be another server: its key (fetched) does not match.
		newRemote(t, n, c, "victim.test")
		refused("other origin", received(t, sign(http.MethodGet, target, nil, "victim.test", "hearth.test"), nil), nil, federation.ErrBadSignature)

		noAuth := received(t, get, nil)
		noAuth.Header.Del("Authorization")
		refused("no header", noAuth, nil, federation.ErrNoAuthorization)
		garbled := received(t, get, nil)
		garbled.Header.Set("Authorization", `X-Matrix origin="origin.test",key=`)
		refused("malformed header", garbled, nil, federation.ErrMalformedAuthorization)
		twice := received(t, get, nil)
		twice.Header.Add("Authorization", get.Header.Get("Authorization"))
		refused("two X-Matrix headers", twice, nil, federation.ErrMalformedAuthorization)
		unknownKey := received(t, get, nil)
		unknownKey.Header.Set("Authorization", strings.Replace(get.Header.Get("Authorization"), "ed25519:r1", "ed25519:r9", 1))
		refused("unknown key", unknownKey, nil, federation.ErrUnknownKey)
		unknownServer := received(t, get, nil)
		unknownServer.Header.Set("Authorization", strings.Replace(get.Header.Get("Authorization"), "origin.test", "nowhere.test", 1))
		refused("unreachable origin", unknownServer, nil, federation.ErrUnknownKey)

		// A key whose validity has passed, and that cannot be refreshed,
		// no longer authenticates requests (events are another matter).
		rm.fail()
		c.Advance(25 * time.Hour)
		refused("expired key", received(t, get, nil), nil, federation.ErrKeyExpired)
	})
}
