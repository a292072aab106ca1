package htmlpage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/a-h/templ"

	"hearth/server/htmlpage"
	"hearth/server/matrix"
	"hearth/server/storage"
)

// pages records what its error page was asked to show and what was logged.
func pages(log *bytes.Buffer) *htmlpage.Pages {
	p := &htmlpage.Pages{Name: "test", Log: func() *slog.Logger { return slog.New(slog.NewTextHandler(log, nil)) },
		Internal: "internal fault"}
	p.ErrorPage = func(w http.ResponseWriter, r *http.Request, status int, msg string) {
		w.WriteHeader(status)
		fmt.Fprint(w, msg)
	}
	return p
}

// TestWriteError: which errors a reader sees, with which status, and
// which are logged instead.
func TestWriteError(t *testing.T) {
	cause := errors.New("disk on fire")
	for _, tc := range []struct {
		name   string
		err    error
		status int
		msg    string
		logged bool
	}{
		{"page error", &htmlpage.Error{Status: http.StatusForbidden, Msg: "Not yours."}, 403, "Not yours.", false},
		{"wrapped page error", fmt.Errorf("ctx: %w", &htmlpage.Error{Status: 400, Msg: "Bad form."}), 400, "Bad form.", false},
		{"matrix 4xx", matrix.NotFound("No such room."), 404, "No such room.", false},
		{"matrix 5xx", &matrix.Error{Code: "M_UNKNOWN", Msg: "secret detail", Status: 500}, 500, "internal fault", true},
		{"missing row", fmt.Errorf("user: %w", storage.ErrNotFound), 404, "Not found.", false},
		{"internal", fmt.Errorf("query: %w", cause), 500, "internal fault", true},
		{"cancelled, client still there", context.Canceled, 500, "internal fault", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log bytes.Buffer
			w := httptest.NewRecorder()
			pages(&log).Handler(func(http.ResponseWriter, *http.Request) error { return tc.err })(w, httptest.NewRequest("GET", "/x", nil))
			if w.Code != tc.status || w.Body.String() != tc.msg {
				t.Errorf("page %d %q, want %d %q", w.Code, w.Body.String(), tc.status, tc.msg)
			}
			if logged := strings.Contains(log.String(), "test: page failed"); logged != tc.logged {
				t.Errorf("logged %v (%q), want %v", logged, log.String(), tc.logged)
			}
			if tc.logged && !strings.Contains(log.String(), "path=/x") {
				t.Errorf("log %q does not name the path", log.String())
			}
		})
	}
}

// TestWriteErrorClientGone: nothing is written or logged for a request
// whose client went away.
func TestWriteErrorClientGone(t *testing.T) {
	var log bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w := httptest.NewRecorder()
	pages(&log).WriteError(w, httptest.NewRequest("GET", "/x", nil).WithContext(ctx), fmt.Errorf("read: %w", context.Canceled))
	if w.Body.Len() != 0 || log.Len() != 0 {
		t.Fatalf("wrote %q, logged %q; want nothing", w.Body.String(), log.String())
	}
}

// TestRenderWholeOrNothing: a component that fails half-way sends an error,
// not the half it wrote; one that succeeds is sent with its status.
func TestRenderWholeOrNothing(t *testing.T) {
	var log bytes.Buffer
	p := pages(&log)
	half := templ.ComponentFunc(func(ctx context.Context, w io.Writer) error {
		io.WriteString(w, "<p>half")
		return errors.New("template broke")
	})
	w := httptest.NewRecorder()
	p.Render(w, httptest.NewRequest("GET", "/x", nil), http.StatusOK, half)
	if w.Code != 500 || strings.Contains(w.Body.String(), "half") || !strings.Contains(log.String(), "test: render failed") {
		t.Fatalf("failed render: %d %q, log %q", w.Code, w.Body.String(), log.String())
	}
	whole := templ.ComponentFunc(func(ctx context.Context, w io.Writer) error {
		_, err := io.WriteString(w, "<p>whole</p>")
		return err
	})
	w = httptest.NewRecorder()
	p.Render(w, httptest.NewRequest("GET", "/x", nil), http.StatusTeapot, whole)
	if w.Code != http.StatusTeapot || w.Body.String() != "<p>whole</p>" || w.Header().Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("render: %d %q %q", w.Code, w.Body.String(), w.Header().Get("Content-Type"))
	}
}

// TestSecurityHeaders: the policy given, no framing or sniffing or
// referrer, the client API's CORS headers taken off, and nothing cached
// but the static assets.
func TestSecurityHeaders(t *testing.T) {
	h := htmlpage.SecurityHeaders("default-src 'none'")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	for path, cache := range map[string]string{"/_hearth/admin/users": "no-store", "/_hearth/admin/static/dashboard.css": ""} {
		w := httptest.NewRecorder()
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Access-Control-Allow-Methods", "GET")
		w.Header().Set("Access-Control-Allow-Headers", "Authorization")
		h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		got := w.Header()
		for k, want := range map[string]string{"Content-Security-Policy": "default-src 'none'", "X-Frame-Options": "DENY",
			"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": cache,
			"Access-Control-Allow-Origin": "", "Access-Control-Allow-Methods": "", "Access-Control-Allow-Headers": ""} {
			if got.Get(k) != want {
				t.Errorf("%s: %s %q, want %q", path, k, got.Get(k), want)
			}
		}
	}
}

// TestStatic: an embedded asset is served and may be cached for a day;
// a directory listing or a missing file is a 404.
func TestStatic(t *testing.T) {
	h := htmlpage.Static()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/dashboard.css", nil))
	if w.Code != 200 || w.Header().Get("Cache-Control") != "public, max-age=86400" || w.Body.Len() == 0 ||
		!strings.HasPrefix(w.Header().Get("Content-Type"), "text/css") {
		t.Fatalf("dashboard.css: %d %q %q, %d bytes", w.Code, w.Header().Get("Cache-Control"), w.Header().Get("Content-Type"), w.Body.Len())
	}
	for _, path := range []string{"/", "/missing.css", "/static.go"} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		if w.Code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, w.Code)
		}
	}
}
