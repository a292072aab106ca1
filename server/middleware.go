package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"hearth/server/matrix"
)

// cors adds the headers the spec requires on every Client-Server response
// (spec: "Web Browser Clients") and answers pre-flight OPTIONS requests
// for any path, so Element Web in a browser can talk to the server.
func cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization, If-Match, If-None-Match")
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// validQuery refuses a request whose query string, decoded, holds a NUL
// character or text that is not UTF-8: 400 M_INVALID_PARAM, as Synapse
// answers a parameter it cannot decode. No parameter a handler reads may
// hold either (IDs, tokens, filters, search terms), PostgreSQL cannot
// look one up, and SQLite would; checked once here rather than by each
// of the handlers that read a query.
func (s *Server) validQuery(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if name, bad := badQuery(r.URL.RawQuery); bad {
			s.writeError(w, r, matrix.InvalidParam("query parameter %q is not valid UTF-8 or holds a NUL character", name))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// badQuery names the first parameter of a raw query whose name or value,
// decoded, is not UTF-8 or holds a NUL character.
func badQuery(raw string) (string, bool) {
	if !strings.Contains(raw, "%") && utf8.ValidString(raw) && strings.IndexByte(raw, 0) < 0 {
		return "", false // nothing escaped: the common case, no parsing
	}
	q, _ := url.ParseQuery(raw) // pairs badly escaped are dropped, as r.URL.Query() drops them
	for name, vs := range q {
		bad := !utf8.ValidString(name) || strings.IndexByte(name, 0) >= 0
		for _, v := range vs {
			bad = bad || !utf8.ValidString(v) || strings.IndexByte(v, 0) >= 0
		}
		if bad {
			return strings.ToValidUTF8(strings.ReplaceAll(name, "\x00", ""), "?"), true
		}
	}
	return "", false
}

// statusRecorder remembers the status for the access log.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

// Write without WriteHeader first answers 200, as net/http does.
func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// requestLog gives each request an ID and a logger, recovers panics into a
// 500 M_UNKNOWN, and logs the request at debug level. The query string is
// not logged: it can carry access_token.
func (s *Server) requestLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, 8)
		_, _ = rand.Read(b)
		id := hex.EncodeToString(b)
		// Attributes added later (auth's user_id, federation's origin)
		// stay unformatted too: slog.Logger.With goes through the handler.
		log := lazyLogger(s.log.Handler(), slog.String("request_id", id))
		ctx := context.WithValue(r.Context(), logKey{}, log)
		rec := &statusRecorder{ResponseWriter: w}
		start := time.Now()
		defer func() {
			p := recover()
			if a, ok := p.(answerAborted); ok {
				level := slog.LevelError
				if errors.Is(a.err, context.Canceled) {
					level = slog.LevelDebug // the client went away
				}
				log.Log(r.Context(), level, "answer cut off after it had started", "path", r.URL.Path, "err", a.err)
				p = http.ErrAbortHandler
			}
			if p != nil && p != http.ErrAbortHandler {
				log.Error("panic in handler", "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
				if rec.status == 0 {
					me := matrix.Unknown("internal server error")
					writeJSON(rec, me.HTTPStatus(), me.Body())
				}
			}
			took := time.Since(start)
			// The pattern, never the path: IDs in paths would make a
			// series per room and user.
			route := ""
			if rc := chi.RouteContext(r.Context()); rc != nil {
				route = rc.RoutePattern()
			}
			s.metrics.Request(route, r.Method, rec.status, took)
			log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", rec.status, "duration", took)
			if p == http.ErrAbortHandler {
				panic(p) // net/http cuts the connection, once the request is counted
			}
		}()
		next.ServeHTTP(rec, r.WithContext(ctx))
	})
}
