package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"hearth/server/matrix"
	"hearth/server/storage"
)

// apiFunc is a handler that returns its error instead of writing it.
type apiFunc func(w http.ResponseWriter, r *http.Request) error

// api adapts an apiFunc; it is the only place errors become responses.
func (s *Server) api(f apiFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := f(w, r); err != nil {
			s.writeError(w, r, err)
		}
	}
}

// writeError answers with the Matrix error err carries. Anything that is not
// a *matrix.Error is an internal fault: the client gets a bare 500 M_UNKNOWN
// and the cause is logged once, here.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var me *matrix.Error
	switch {
	case errors.As(err, &me):
		if me.HTTPStatus() >= 500 {
			logFrom(r.Context(), s.log).Error("request failed", "path", r.URL.Path, "err", err)
		}
	case r.Context().Err() != nil && errors.Is(context.Cause(r.Context()), ErrShuttingDown):
		// Whatever failed, it failed because the process is stopping (a
		// parked /sync, a query cut short): tell the client to come back,
		// rather than leaving it a 200 with no body or logging a 500.
		logFrom(r.Context(), s.log).Debug("request cut short by shutdown", "path", r.URL.Path, "err", err)
		me = &matrix.Error{Code: "M_UNKNOWN", Msg: "server is shutting down", Status: http.StatusServiceUnavailable}
	case errors.Is(err, storage.ErrNotFound):
		me = matrix.NotFound("not found")
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody is left to answer.
		logFrom(r.Context(), s.log).Debug("client closed request", "path", r.URL.Path)
		return
	default:
		logFrom(r.Context(), s.log).Error("internal error", "method", r.Method, "path", r.URL.Path, "err", err)
		me = matrix.Unknown("internal server error")
	}
	writeJSON(w, me.HTTPStatus(), me.Body())
}

// unrecognized answers paths no route matches: 404 M_UNRECOGNIZED as JSON.
func unrecognized(w http.ResponseWriter, r *http.Request) error {
	return matrix.Unrecognized("unrecognized request: %s %s", r.Method, r.URL.Path)
}

// methodNotAllowed answers a known path with an unsupported method.
func methodNotAllowed(w http.ResponseWriter, r *http.Request) error {
	return matrix.MethodNotAllowed()
}

type logKey struct{}

// logFrom returns the request's logger (carrying request_id, user_id).
func logFrom(ctx context.Context, fallback *slog.Logger) *slog.Logger {
	if l, ok := ctx.Value(logKey{}).(*slog.Logger); ok {
		return l
	}
	return fallback
}
