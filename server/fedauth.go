package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"

	"hearth/server/federation"
	"hearth/server/matrix"
)

// Federation request authentication (Server-Server API, "Request
// Authentication"): every route in the /_matrix/federation group of
// routes.go passes through federationAuth, which checks the X-Matrix
// signature and tells the handler which server is asking (originFrom).

// maxFederationBody bounds a federation request body, read whole before
// its signature can be checked. A transaction may carry 50 PDUs of up to
// 64 KiB and 100 EDUs, so the client API's 1 MiB would be too little.
const maxFederationBody = 16 << 20

type originKey struct{}

// originFrom is the authenticated origin server of a federation request
// ("" outside the federation group).
func originFrom(ctx context.Context) string {
	o, _ := ctx.Value(originKey{}).(string)
	return o
}

// authReasons are the refusals clients are told about, in this order; the
// details (fetch errors and the like) are only logged.
var authReasons = []error{
	federation.ErrNoAuthorization, federation.ErrMalformedAuthorization, federation.ErrWrongDestination,
	federation.ErrUnknownKey, federation.ErrKeyExpired, federation.ErrBadSignature,
}

// federationAuth admits requests signed by their origin server: 401
// M_UNAUTHORIZED otherwise. The body, read to check the signature, is
// handed on to the handler as r.Body.
func (s *Server) federationAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFederationBody))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				s.writeError(w, r, matrix.TooLarge("request body is larger than %d bytes", maxFederationBody))
			} else {
				s.writeError(w, r, matrix.NotJSON("could not read body: %v", err))
			}
			return
		}
		origin, err := federation.VerifyRequest(r.Context(), r, body, s.cfg.ServerName, s.keys)
		var ae *federation.AuthError
		switch {
		case errors.As(err, &ae):
			logFrom(r.Context(), s.log).Info("federation request refused", "origin", ae.Origin, "reason", ae.Err,
				"method", r.Method, "path", r.URL.Path)
			if errors.Is(err, federation.ErrBodyNotJSON) {
				s.writeError(w, r, matrix.NotJSON("content not JSON"))
				return
			}
			msg := "X-Matrix authentication failed"
			for _, reason := range authReasons {
				if errors.Is(err, reason) {
					msg += ": " + reason.Error()
					break
				}
			}
			s.writeError(w, r, matrix.Unauthorized("%s", msg))
			return
		case err != nil:
			s.writeError(w, r, err)
			return
		}
		done, err := s.fedLimits.acquire(r.Context(), origin)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		defer done()
		ctx := context.WithValue(r.Context(), originKey{}, origin)
		ctx = context.WithValue(ctx, logKey{}, logFrom(ctx, s.log).With("origin", origin))
		r = r.WithContext(ctx)
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		next.ServeHTTP(w, r)
	})
}
