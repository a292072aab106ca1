// Package htmlpage is what the server's HTML pages (the admin dashboard,
// the OAuth 2.0 sign-in pages) share: handlers that return their error,
// one rule for which errors a person may read and which are logged
// instead, and rendering that never sends half a page.
package htmlpage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"

	"github.com/a-h/templ"

	"hearth/server/matrix"
	"hearth/server/storage"
	"hearth/static"
)

// Error is an error with a status and a message safe to show.
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return fmt.Sprintf("%d: %s", e.Status, e.Msg) }

// Func is a page handler; Pages.Handler turns its error into a page.
type Func func(w http.ResponseWriter, r *http.Request) error

// Pages is one set of pages: where its faults are logged and how its error
// page looks.
type Pages struct {
	// Name starts the log lines of these pages ("dashboard", "oauth").
	Name string
	// Log is the logger, read on each use (the server's may be replaced).
	Log func() *slog.Logger
	// Internal is shown for a fault inside the server, which is logged.
	Internal string
	// ErrorPage renders the error page of these pages.
	ErrorPage func(w http.ResponseWriter, r *http.Request, status int, msg string)
}

// Handler adapts f; it is the only place its errors become pages.
func (p *Pages) Handler(f Func) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := f(w, r); err != nil {
			p.WriteError(w, r, err)
		}
	}
}

// WriteError shows err as the error page. An Error, and a Matrix error
// below 500 (from the operations pages share with the APIs), carry a
// message meant for the reader; a missing row is "Not found."; anything
// else is a fault inside the server, logged here once and shown only as
// Internal. Nothing is written for a request its client gave up.
func (p *Pages) WriteError(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := http.StatusInternalServerError, p.Internal
	var pe *Error
	var me *matrix.Error
	switch {
	case errors.As(err, &pe):
		status, msg = pe.Status, pe.Msg
	case errors.As(err, &me) && me.HTTPStatus() < 500:
		status, msg = me.HTTPStatus(), me.Msg
	case errors.Is(err, storage.ErrNotFound):
		status, msg = http.StatusNotFound, "Not found."
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		return
	default:
		p.Log().Error(p.Name+": page failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	p.ErrorPage(w, r, status, msg)
}

// Render writes c with status. It renders into a buffer first, so a
// failure half-way gives an error rather than half a page.
func (p *Pages) Render(w http.ResponseWriter, r *http.Request, status int, c templ.Component) {
	var b bytes.Buffer
	if err := c.Render(r.Context(), &b); err != nil {
		p.Log().Error(p.Name+": render failed", "path", r.URL.Path, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// SecurityHeaders locks pages to this origin: the given Content Security
// Policy, no framing, no sniffing, no referrer, and no caching except of
// the static assets. The client API's CORS headers (which the server's
// middleware added) are removed: the pages are not a cross-origin API.
func SecurityHeaders(csp string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			for _, k := range []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers"} {
				h.Del(k)
			}
			h.Set("Content-Security-Policy", csp)
			h.Set("X-Frame-Options", "DENY")
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("Referrer-Policy", "no-referrer")
			if !strings.Contains(r.URL.Path, "/static/") {
				h.Set("Cache-Control", "no-store")
			}
			next.ServeHTTP(w, r)
		})
	}
}

// Static serves the embedded stylesheet and script (package static) under
// the path it is mounted at, stripped. Their URLs carry ?v=<version>, so
// browsers may keep them for a day. Directories and anything else are 404.
func Static() http.Handler {
	fsys := http.FileServerFS(static.FS)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := fs.Stat(static.FS, strings.TrimPrefix(r.URL.Path, "/")); err != nil || r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=86400")
		fsys.ServeHTTP(w, r)
	})
}
