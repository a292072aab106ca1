package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json/jsontext"
	"encoding/json/v2"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"hearth/server/rooms"
)

// Request authentication (Server-Server API, "Authentication" → "Request
// Authentication"): every request between servers carries an
// Authorization header of scheme X-Matrix whose signature covers the
// JSON object {method, uri, origin, destination, content}.

// Why a request's X-Matrix authentication was refused; an *AuthError
// wraps one of them.
var (
	ErrNoAuthorization        = errors.New("no X-Matrix Authorization header")
	ErrMalformedAuthorization = errors.New("malformed X-Matrix Authorization header")
	ErrWrongDestination       = errors.New("request is addressed to another server")
	ErrUnknownKey             = errors.New("signing key not found")
	ErrKeyExpired             = errors.New("signing key is not valid now")
	ErrBadSignature           = errors.New("signature does not match the request")
	// ErrBodyNotJSON: a body that is not JSON cannot have been signed.
	ErrBodyNotJSON = errors.New("request body is not JSON")
)

// AuthError is a refused request: Origin is the origin the header claimed
// ("" when it could not be read), never an authenticated one.
type AuthError struct {
	Origin string
	Err    error // wraps one of the Err* reasons above
}

func (e *AuthError) Error() string {
	if e.Origin == "" {
		return "X-Matrix authentication failed: " + e.Err.Error()
	}
	return "X-Matrix authentication of " + e.Origin + " failed: " + e.Err.Error()
}

func (e *AuthError) Unwrap() error { return e.Err }

// XMatrix is the content of an X-Matrix Authorization header.
type XMatrix struct {
	Origin string
	// Destination is "" when the sender left it out, as servers older
	// than spec v1.3 do.
	Destination string
	KeyID       string
	Sig         string // unpadded base64
}

// SignRequest sets req's X-Matrix Authorization header: origin signs with
// key the request's method, target (path and query as sent), origin,
// destination and content, the JSON body (nil for a request without one).
// The caller sends content as the body. Server names are those before
// delegation (spec), i.e. destination is the server name, not the host
// discovery found.
func SignRequest(req *http.Request, key rooms.SigningKey, origin, destination string, content []byte) error {
	if !validServerName(origin) || !validServerName(destination) {
		return fmt.Errorf("federation: sign request: bad server name %q or %q", origin, destination)
	}
	if !validKeyID(key.KeyID) || key.Private == nil {
		return fmt.Errorf("federation: sign request: unusable key %q", key.KeyID)
	}
	msg, err := requestJSON(req.Method, req.URL.RequestURI(), origin, destination, content)
	if err != nil {
		return fmt.Errorf("federation: sign request: %w", err)
	}
	sig := base64.RawStdEncoding.EncodeToString(ed25519.Sign(key.Private, msg))
	// One space after the scheme, lower-case names, quoted values and no
	// backslashes: the spec's advice for older recipients.
	req.Header.Set("Authorization", `X-Matrix origin="`+origin+`",destination="`+destination+`",key="`+key.KeyID+`",sig="`+sig+`"`)
	return nil
}

// VerifyRequest authenticates a request received by ourName: content is
// its body, already read. It returns the origin server, proven by a
// signature of one of its keys valid now over the request as received.
// A refusal is an *AuthError (errors.Is tells the reason); any other
// error is the key ring's own failure (the database, ctx).
func VerifyRequest(ctx context.Context, r *http.Request, content []byte, ourName string, keys *KeyRing) (origin string, err error) {
	var x XMatrix
	found := false
	for _, h := range r.Header.Values("Authorization") {
		scheme, _, _ := strings.Cut(strings.TrimLeft(h, " \t"), " ")
		if !strings.EqualFold(scheme, "X-Matrix") {
			continue // another scheme, for someone else
		}
		if found {
			return "", &AuthError{Err: fmt.Errorf("%w: more than one", ErrMalformedAuthorization)}
		}
		found = true
		if x, err = ParseXMatrix(h); err != nil {
			return "", &AuthError{Err: err}
		}
	}
	if !found {
		return "", &AuthError{Err: ErrNoAuthorization}
	}
	refuse := func(err error) (string, error) { return "", &AuthError{Origin: x.Origin, Err: err} }
	// "If this property is included, but the value does not match the
	// receiving server's name, the receiving server must deny the request
	// with an HTTP status code 401 Unauthorized." Without it, the signed
	// JSON names this server all the same.
	destination := ourName
	if x.Destination != "" {
		if x.Destination != ourName {
			return refuse(fmt.Errorf("%w: %s", ErrWrongDestination, x.Destination))
		}
		destination = x.Destination
	}
	if !strings.HasPrefix(x.KeyID, "ed25519:") {
		return refuse(fmt.Errorf("%w: %s uses an unsupported algorithm", ErrUnknownKey, x.KeyID))
	}
	msg, err := requestJSON(r.Method, requestTarget(r), x.Origin, destination, content)
	if err != nil {
		return refuse(err)
	}
	now := keys.Now().UnixMilli()
	pub, validUntil, err := keys.VerifyKey(ctx, x.Origin, x.KeyID, now)
	if errors.Is(err, ErrKeyNotFound) {
		return refuse(fmt.Errorf("%w: %w", ErrUnknownKey, err))
	}
	if err != nil {
		return "", err
	}
	if validUntil < now {
		return refuse(fmt.Errorf("%w: %s of %s was valid until %d", ErrKeyExpired, x.KeyID, x.Origin, validUntil))
	}
	if err := rooms.VerifyBytes(msg, x.Sig, pub); err != nil {
		return refuse(fmt.Errorf("%w: %w", ErrBadSignature, err))
	}
	return x.Origin, nil
}

// requestTarget is the request target as the client sent it: the raw
// path and query, which is what the origin signed (a re-encoded path could
// differ from it).
func requestTarget(r *http.Request) string {
	if strings.HasPrefix(r.RequestURI, "/") {
		return r.RequestURI
	}
	// Absolute form (through a proxy), or a request built in-process.
	return r.URL.RequestURI()
}

// requestJSON is the canonical JSON of the object a request's signature
// covers (spec, "Request Authentication", step 1).
func requestJSON(method, uri, origin, destination string, content []byte) ([]byte, error) {
	obj := map[string]any{
		"method":      method,
		"uri":         uri,
		"origin":      origin,
		"destination": destination,
	}
	if body := bytes.TrimSpace(content); len(body) > 0 {
		if !jsontext.Value(body).IsValid() {
			return nil, ErrBodyNotJSON
		}
		obj["content"] = jsontext.Value(body)
	}
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	c, err := rooms.CanonicalJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBodyNotJSON, err)
	}
	return c, nil
}

// ParseXMatrix reads an X-Matrix Authorization header, per the spec's
// grammar (RFC 7235 credentials): the scheme, one or more spaces, then
// comma-separated name=value parameters; names are case-insensitive,
// values are tokens or quoted strings with backslash escapes, and, for
// older senders, unquoted values may contain colons (and base64's / + =).
// Unknown parameters are ignored; origin, key and sig are required.
func ParseXMatrix(h string) (XMatrix, error) {
	bad := func(format string, args ...any) (XMatrix, error) {
		return XMatrix{}, fmt.Errorf("%w: %s", ErrMalformedAuthorization, fmt.Sprintf(format, args...))
	}
	scheme, rest, ok := strings.Cut(strings.TrimLeft(h, " \t"), " ")
	if !ok || !strings.EqualFold(scheme, "X-Matrix") {
		return bad("scheme is not X-Matrix")
	}
	params := map[string]string{}
	p := headerParser{s: rest}
	for {
		p.skipSeparators()
		if p.done() {
			break
		}
		name := p.token()
		if name == "" {
			return bad("expected a parameter name at %q", p.rest())
		}
		p.skipSpace()
		if !p.consume('=') {
			return bad("parameter %s has no value", name)
		}
		p.skipSpace()
		value, err := p.value()
		if err != nil {
			return bad("parameter %s: %v", name, err)
		}
		p.skipSpace()
		if !p.done() && !p.consume(',') {
			return bad("expected a comma at %q", p.rest())
		}
		name = strings.ToLower(name)
		if _, dup := params[name]; dup {
			return bad("parameter %s given twice", name)
		}
		params[name] = value
	}
	x := XMatrix{Origin: params["origin"], Destination: params["destination"], KeyID: params["key"], Sig: params["sig"]}
	switch {
	case x.Origin == "":
		return bad("no origin")
	case !validServerName(x.Origin):
		return bad("origin %q is not a server name", x.Origin)
	case x.KeyID == "":
		return bad("no key")
	case !validKeyID(x.KeyID):
		return bad("key %q is not a key ID", x.KeyID)
	case x.Sig == "":
		return bad("no sig")
	}
	return x, nil
}

// validKeyID checks "<algorithm>:<version>", the version of
// [a-zA-Z0-9_] (spec, verify_keys).
func validKeyID(id string) bool {
	alg, version, ok := strings.Cut(id, ":")
	if !ok || alg == "" || version == "" {
		return false
	}
	for _, c := range version {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// headerParser walks the parameters of an Authorization header.
type headerParser struct {
	s string
	i int
}

func (p *headerParser) done() bool   { return p.i >= len(p.s) }
func (p *headerParser) rest() string { return p.s[p.i:] }

func (p *headerParser) skipSpace() {
	for !p.done() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

// skipSeparators skips whitespace and empty list elements (RFC 7230 §7).
func (p *headerParser) skipSeparators() {
	for !p.done() && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == ',') {
		p.i++
	}
}

func (p *headerParser) consume(c byte) bool {
	if !p.done() && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

// token reads an RFC 7230 token.
func (p *headerParser) token() string {
	start := p.i
	for !p.done() && isTokenChar(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i]
}

// value reads a quoted string (unescaping backslash pairs) or an unquoted
// value: a token, leniently extended to anything up to a comma or space.
func (p *headerParser) value() (string, error) {
	if !p.consume('"') {
		start := p.i
		for !p.done() && p.s[p.i] != ',' && p.s[p.i] != ' ' && p.s[p.i] != '\t' && p.s[p.i] != '"' && p.s[p.i] >= 0x21 && p.s[p.i] != 0x7f {
			p.i++
		}
		if p.i == start {
			return "", errors.New("empty value")
		}
		return p.s[start:p.i], nil
	}
	var b strings.Builder
	for !p.done() {
		c := p.s[p.i]
		p.i++
		switch {
		case c == '"':
			return b.String(), nil
		case c == '\\':
			if p.done() {
				return "", errors.New("unterminated escape")
			}
			b.WriteByte(p.s[p.i])
			p.i++
		case c < 0x20 && c != '\t' || c == 0x7f:
			return "", errors.New("control character in quoted value")
		default:
			b.WriteByte(c)
		}
	}
	return "", errors.New("unterminated quoted value")
}

func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
