// Package matrix holds the wire-level vocabulary shared by every handler: the
// standard error type with its errcodes, and identifier helpers. It imports no
// HTTP handler code and no SQL.
package matrix

import (
	"fmt"
	"net/http"
	"time"
)

// Error is a Matrix standard error response (spec: Client-Server API,
// "Standard error response"). Msg is shown to the client; Err is the cause,
// which is logged and never serialised.
type Error struct {
	Code   string         // errcode, e.g. "M_FORBIDDEN"
	Msg    string         // safe to show the client
	Status int            // HTTP status; 0 means statusFor(Code)
	Extra  map[string]any // extra top-level fields: retry_after_ms, soft_logout, flows, ...
	Err    error          // cause, logged only
}

func (e *Error) Error() string { return e.Code + ": " + e.Msg }
func (e *Error) Unwrap() error { return e.Err }

// HTTPStatus is the status this error is answered with.
func (e *Error) HTTPStatus() int {
	if e.Status != 0 {
		return e.Status
	}
	if s, ok := statusByCode[e.Code]; ok {
		return s
	}
	return http.StatusBadRequest
}

// Body is the JSON object written to the client.
func (e *Error) Body() map[string]any {
	b := make(map[string]any, len(e.Extra)+2)
	for k, v := range e.Extra {
		b[k] = v
	}
	b["errcode"] = e.Code
	b["error"] = e.Msg
	return b
}

// With returns a copy of e carrying an extra top-level field.
func (e *Error) With(key string, value any) *Error {
	c := *e
	c.Extra = make(map[string]any, len(e.Extra)+1)
	for k, v := range e.Extra {
		c.Extra[k] = v
	}
	c.Extra[key] = value
	return &c
}

var statusByCode = map[string]int{
	"M_FORBIDDEN":                       http.StatusForbidden,
	"M_UNKNOWN_TOKEN":                   http.StatusUnauthorized,
	"M_MISSING_TOKEN":                   http.StatusUnauthorized,
	"M_UNAUTHORIZED":                    http.StatusUnauthorized,
	"M_USER_LOCKED":                     http.StatusUnauthorized,
	"M_NOT_FOUND":                       http.StatusNotFound,
	"M_UNRECOGNIZED":                    http.StatusNotFound,
	"M_LIMIT_EXCEEDED":                  http.StatusTooManyRequests,
	"M_TOO_LARGE":                       http.StatusRequestEntityTooLarge,
	"M_UNKNOWN":                         http.StatusInternalServerError,
	"M_USER_DEACTIVATED":                http.StatusForbidden,
	"M_GUEST_ACCESS_FORBIDDEN":          http.StatusForbidden,
	"M_CONSENT_NOT_GIVEN":               http.StatusForbidden,
	"M_UNSUPPORTED_ROOM_VERSION":        http.StatusBadRequest,
	"M_RESOURCE_LIMIT_EXCEEDED":         http.StatusForbidden,
	"M_USER_SUSPENDED":                  http.StatusForbidden,
	"M_CANNOT_LEAVE_SERVER_NOTICE_ROOM": http.StatusForbidden,
}

func newf(code, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

func Forbidden(format string, args ...any) *Error { return newf("M_FORBIDDEN", format, args...) }
func NotFound(format string, args ...any) *Error  { return newf("M_NOT_FOUND", format, args...) }
func BadJSON(format string, args ...any) *Error   { return newf("M_BAD_JSON", format, args...) }
func NotJSON(format string, args ...any) *Error   { return newf("M_NOT_JSON", format, args...) }
func MissingParam(format string, args ...any) *Error {
	return newf("M_MISSING_PARAM", format, args...)
}
func InvalidParam(format string, args ...any) *Error {
	return newf("M_INVALID_PARAM", format, args...)
}
func InvalidUsername(format string, args ...any) *Error {
	return newf("M_INVALID_USERNAME", format, args...)
}
func UserInUse(format string, args ...any) *Error { return newf("M_USER_IN_USE", format, args...) }
func MissingToken(format string, args ...any) *Error {
	return newf("M_MISSING_TOKEN", format, args...)
}

// Unauthorized is the 401 for a request whose authentication failed, such
// as a federation request without a valid X-Matrix signature.
func Unauthorized(format string, args ...any) *Error {
	return newf("M_UNAUTHORIZED", format, args...)
}
func Unrecognized(format string, args ...any) *Error {
	return newf("M_UNRECOGNIZED", format, args...)
}
func TooLarge(format string, args ...any) *Error { return newf("M_TOO_LARGE", format, args...) }
func Unknown(format string, args ...any) *Error  { return newf("M_UNKNOWN", format, args...) }
func UserDeactivated(format string, args ...any) *Error {
	return newf("M_USER_DEACTIVATED", format, args...)
}
func WeakPassword(format string, args ...any) *Error {
	return newf("M_WEAK_PASSWORD", format, args...)
}
func Exclusive(format string, args ...any) *Error { return newf("M_EXCLUSIVE", format, args...) }
func GuestAccessForbidden(format string, args ...any) *Error {
	return newf("M_GUEST_ACCESS_FORBIDDEN", format, args...)
}

// UnknownToken is the 401 for an access token the server does not know. A
// soft logout (an expired refreshable token) keeps the device and sets
// soft_logout so the client refreshes instead of signing out.
func UnknownToken(msg string, softLogout bool) *Error {
	return &Error{Code: "M_UNKNOWN_TOKEN", Msg: msg, Extra: map[string]any{"soft_logout": softLogout}}
}

// LimitExceeded is the 429 answer to a rate-limited request.
func LimitExceeded(retry time.Duration) *Error {
	ms := retry.Milliseconds()
	if ms < 1 {
		ms = 1
	}
	return &Error{Code: "M_LIMIT_EXCEEDED", Msg: "too many requests", Extra: map[string]any{"retry_after_ms": ms}}
}

// Unrecognized405 answers a known path with a method it does not support.
func MethodNotAllowed() *Error {
	return &Error{Code: "M_UNRECOGNIZED", Msg: "unrecognized request", Status: http.StatusMethodNotAllowed}
}
