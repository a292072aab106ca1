package oauth

import (
	"slices"
	"strings"

	"github.com/zitadel/oidc/v3/pkg/oidc"
)

// The Matrix scope tokens (spec: "Allocated scope tokens"), and the
// unstable MSC2967 forms that clients released before v1.15 request.
const (
	scopeAPI            = "urn:matrix:client:api:*"
	scopeDevicePrefix   = "urn:matrix:client:device:"
	scopeAPIMSC         = "urn:matrix:org.matrix.msc2967.client:api:*"
	scopeDevicePrefixMS = "urn:matrix:org.matrix.msc2967.client:device:"
)

// scopeAllowed reports whether a client may ask for scope: the Matrix
// scopes (the standard OpenID ones are allowed by the library).
func scopeAllowed(scope string) bool {
	if scope == scopeAPI || scope == scopeAPIMSC {
		return true
	}
	_, ok := deviceFromScope(scope)
	return ok
}

// deviceFromScope returns the device ID a device scope token allocates.
func deviceFromScope(scope string) (string, bool) {
	for _, p := range []string{scopeDevicePrefix, scopeDevicePrefixMS} {
		if id, ok := strings.CutPrefix(scope, p); ok {
			return id, validDeviceID(id)
		}
	}
	return "", false
}

// validDeviceID applies the spec's rule for a client-allocated device ID:
// the characters RFC 6749 allows in a scope token (printable ASCII but
// space, '"' and '\\'), and at least one of them. The spec lets a server
// refuse anything outside RFC 3986's unreserved characters, but
// matrix-rust-sdk's QR-code login (Element X's "Sign in with QR code")
// names the new device after its Curve25519 key in standard base64, with
// '+' and '/', so Hearth accepts the wider set, as
// matrix-authentication-service does; device IDs are escaped wherever
// they appear in a path. (The spec suggests 10 characters for uniqueness;
// it is the client's concern, and Hearth does not refuse shorter ones, as
// Synapse's legacy login does not.)
func validDeviceID(id string) bool {
	if id == "" || len(id) > 255 {
		return false
	}
	for _, c := range []byte(id) {
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// matrixScope checks a requested scope for the login flow: full API
// access and exactly one device (spec: "Device ID allocation": "There MUST
// be exactly one urn:matrix:client:device:<device_id> token in the
// requested scope"). It returns the device ID.
func matrixScope(scopes []string) (string, *oidc.Error) {
	device, devices := "", 0
	for _, s := range scopes {
		if id, ok := deviceFromScope(s); ok {
			device = id
			devices++
		}
	}
	if !slices.Contains(scopes, scopeAPI) && !slices.Contains(scopes, scopeAPIMSC) {
		return "", oidc.ErrInvalidScope().WithDescription("the scope must include " + scopeAPI)
	}
	if devices != 1 {
		return "", oidc.ErrInvalidScope().WithDescription("the scope must include exactly one " + scopeDevicePrefix + "<device_id>")
	}
	return device, nil
}
