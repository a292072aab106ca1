// Package web is Hearth's admin dashboard: server-rendered pages for server
// admins, on a chi router mounted at /_hearth/admin (or on a listener of its
// own). Handlers have the server's error-returning shape; they build a view
// model and render a templ component from package templates. Every change
// goes through the same operations as the Synapse admin API (methods on
// *server.Server), so the two cannot disagree.
package web

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/a-h/templ"
	"github.com/go-chi/chi/v5"

	"hearth/appliance/certs"
	"hearth/server"
	"hearth/server/cache"
	"hearth/server/matrix"
	"hearth/server/storage"
	"hearth/static"
	"hearth/templates"
)

// Path is where the dashboard lives, on whichever listener serves it.
const Path = "/_hearth/admin"

// Deps are the dashboard's dependencies.
type Deps struct {
	Server *server.Server
	// Sampler records memory and events over time; nil: the dashboard
	// makes its own, reading the server's metrics every 30 seconds.
	Sampler *Sampler
	// Certs are the TLS listeners' certificates, shown on the Diagnostics
	// page; nil when no listener uses TLS.
	Certs *certs.Manager
	// DiagDNS replaces /etc/resolv.conf for the diagnostics' lookups
	// (tests point it at their DNS server).
	DiagDNS []string
}

// Dashboard is the admin dashboard.
type Dashboard struct {
	srv     *server.Server
	store   *storage.Store
	caches  *cache.Registry
	sampler *Sampler
	prefix  string
	limits  signInLimits
	certs   *certs.Manager
	diagDNS []string
	setup   setupState // setup.go
}

// New builds the dashboard. Call Run to keep its memory chart and session
// table up to date.
func New(d Deps) *Dashboard {
	st := d.Server.Store()
	if d.Sampler == nil {
		d.Sampler = NewSampler(30*time.Second, 120, d.Server.Metrics().Registry)
	}
	return &Dashboard{srv: d.Server, store: st, caches: st.Caches(), sampler: d.Sampler, prefix: Path,
		limits: newSignInLimits(d.Server.Config(), d.Server.Now), certs: d.Certs, diagDNS: d.DiagDNS}
}

// Run samples memory every interval and sweeps expired sessions until ctx
// ends.
func (d *Dashboard) Run(ctx context.Context) {
	t := time.NewTicker(d.sampler.interval)
	defer t.Stop()
	d.sampler.Sample(ctx)
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.sampler.Sample(ctx)
			if n%20 == 0 {
				if err := d.store.DeleteExpiredDashboardSessions(ctx, d.srv.Now().UnixMilli()); err != nil && ctx.Err() == nil {
					d.srv.Log().Warn("dashboard: sweeping expired sessions failed", "err", err)
				}
			}
		}
	}
}

// pageFunc is a dashboard handler: it renders a page or returns an error,
// which page() turns into the error page.
type pageFunc func(w http.ResponseWriter, r *http.Request) error

// Handler is the dashboard's router, to mount at Path.
func (d *Dashboard) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(securityHeaders)
	r.Handle("/static/*", http.StripPrefix(d.prefix+"/static/", staticFiles()))
	r.Get("/login", d.page(d.getLogin))
	// The federation tester's JSON, for admins' tools (diagnostics.go).
	r.With(d.srv.AdminAPI).Get("/api/federation-test", d.apiFederationTest)
	r.Post("/login", d.page(d.postLogin))
	r.Group(func(r chi.Router) {
		r.Use(d.requireAdmin)
		r.Post("/logout", d.page(d.postLogout))
		r.Get("/", d.page(d.getOverview))
		r.Post("/backup", d.page(d.postBackup)) // backup.go
		r.Get("/users", d.page(d.getUsers))
		r.Post("/users", d.page(d.postUsers))
		r.Get("/users/{userID}", d.page(d.getUser))
		r.Post("/users/{userID}/password", d.page(d.postUserPassword))
		r.Post("/users/{userID}/admin", d.page(d.postUserAdmin))
		r.Post("/users/{userID}/deactivate", d.page(d.postUserDeactivate))
		r.Post("/users/{userID}/devices/delete", d.page(d.postUserDeviceDelete))
		r.Get("/registration", d.page(d.getRegistration))
		r.Post("/registration/settings", d.page(d.postRegistrationSettings))
		r.Post("/registration/tokens", d.page(d.postRegToken))
		r.Post("/registration/tokens/delete", d.page(d.postRegTokenDelete))
		r.Get("/caches", d.page(d.getCaches))
		r.Post("/caches/global", d.page(d.postCacheGlobal))
		r.Post("/caches/factor", d.page(d.postCacheFactor))
		r.Post("/caches/runtime", d.page(d.postCacheRuntime))
		r.Post("/caches/preset", d.page(d.postCachePreset))
		r.Get("/audit", d.page(d.getAudit))
		r.Get("/rooms", d.page(d.getRooms))
		r.Get("/rooms/deletes/{deleteID}", d.page(d.getRoomDeleteStatus))
		r.Get("/rooms/{roomID}", d.page(d.getRoom))
		r.Post("/rooms/{roomID}/block", d.page(d.postRoomBlock))
		r.Post("/rooms/{roomID}/delete", d.page(d.postRoomDelete))
		r.Post("/rooms/{roomID}/media/quarantine", d.page(d.postRoomMediaQuarantine))
		r.Get("/federation", d.page(d.getFederation))
		r.Get("/federation/{destination}", d.page(d.getDestination))
		r.Post("/federation/{destination}/retry", d.page(d.postDestinationRetry))
		r.Get("/reports", d.page(d.getReports))
		r.Post("/reports/{reportID}/delete", d.page(d.postReportDelete))
		r.Get("/media", d.page(d.getMedia))
		r.Post("/media/cleanup", d.page(d.postMediaCleanup))
		r.Post("/media/{mediaID}/quarantine", d.page(d.postMediaQuarantine))
		r.Post("/media/{mediaID}/protect", d.page(d.postMediaProtect))
		r.Post("/media/{mediaID}/delete", d.page(d.postMediaDelete))
		r.Get("/setup/name", d.page(d.getSetupName)) // setup.go: the first-run walk-through
		r.Get("/setup/certificates", d.page(d.getSetupCertificates))
		r.Get("/setup/checks", d.page(d.getSetupChecks))
		r.Post("/setup/checks", d.page(d.postSetupChecks))
		r.Get("/diagnostics", d.page(d.getDiagnostics))
		r.Post("/diagnostics", d.page(d.postDiagnostics))
		r.Get("/federation-test", d.page(d.getFederationTest))
		r.Post("/federation-test", d.page(d.postFederationTest))
	})
	r.NotFound(d.page(func(w http.ResponseWriter, r *http.Request) error {
		return &pageError{Status: http.StatusNotFound, Msg: "There is no dashboard page at this address."}
	}))
	r.MethodNotAllowed(d.page(func(w http.ResponseWriter, r *http.Request) error {
		return &pageError{Status: http.StatusMethodNotAllowed, Msg: "This page does not accept that kind of request."}
	}))
	return r
}

// Standalone is the handler for the dashboard's own listener: the
// dashboard at Path, and "/" redirecting there.
func (d *Dashboard) Standalone() http.Handler {
	r := chi.NewRouter()
	r.Mount(Path, d.Handler())
	r.Handle(SetupPath, d.SetupHandler())
	r.Get("/", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, Path+"/", http.StatusFound) })
	return r
}

// staticFiles serves the embedded assets. URLs carry ?v=<version>, so
// browsers may keep them for a day.
func staticFiles() http.Handler {
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

// securityHeaders locks pages to this origin: no framing, no inline script
// or style, no referrer. The client API's CORS headers (which the server's
// middleware added) are removed: the dashboard is not a cross-origin API.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		for _, k := range []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers"} {
			h.Del(k)
		}
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
			"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		if !strings.Contains(r.URL.Path, "/static/") {
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

// pageError is an error with a status and a message safe to show.
type pageError struct {
	Status int
	Msg    string
}

func (e *pageError) Error() string { return fmt.Sprintf("%d: %s", e.Status, e.Msg) }

// errCSRF is returned when a POST lacks the form token or carries a wrong one.
var errCSRF = &pageError{Status: http.StatusForbidden,
	Msg: "This form was not accepted: it has expired or did not come from this dashboard. Go back, reload the page and try again."}

// page adapts a pageFunc; it is the only place errors become pages.
func (d *Dashboard) page(f pageFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := f(w, r); err != nil {
			d.writeError(w, r, err)
		}
	}
}

// writeError renders the error page. Matrix errors from the shared admin
// operations carry a message meant for the admin; anything else is an
// internal fault, logged here once and shown only as "internal error".
func (d *Dashboard) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := http.StatusInternalServerError, "Something went wrong inside Hearth. The details are in the server log."
	var pe *pageError
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
		d.srv.Log().Error("dashboard: internal error", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	c := d.chrome(w, r, "Error", "")
	back := r.Referer()
	if back == "" || !strings.HasPrefix(back, "http") {
		back = d.prefix + "/"
	}
	vm := templates.ErrorVM{Chrome: c, Status: status, Heading: http.StatusText(status), Message: msg, Back: d.localURL(back)}
	d.render(w, r, status, templates.ErrorPage(vm))
}

// localURL keeps only the path of a URL on this dashboard, so a Referer
// never sends the admin elsewhere.
func (d *Dashboard) localURL(u string) string {
	if i := strings.Index(u, d.prefix); i >= 0 {
		p := u[i:]
		if !strings.HasPrefix(p, "//") {
			return p
		}
	}
	return d.prefix + "/"
}

// render writes a component with status. It renders into a buffer first, so
// a failure half-way gives an error page rather than half a page.
func (d *Dashboard) render(w http.ResponseWriter, r *http.Request, status int, c templ.Component) {
	var b bytes.Buffer
	if err := c.Render(r.Context(), &b); err != nil {
		d.srv.Log().Error("dashboard: render failed", "path", r.URL.Path, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// chrome is the frame of every page; it consumes the flash cookie.
func (d *Dashboard) chrome(w http.ResponseWriter, r *http.Request, title, active string) templates.Chrome {
	c := templates.Chrome{Title: title, Prefix: d.prefix, ServerName: d.srv.ServerName(), Active: active, Version: server.Version}
	if a := adminFrom(r.Context()); a != nil {
		c.Admin, c.CSRF = a.UserID, a.CSRF
	} else {
		c.CSRF = loginCSRF(r)
	}
	c.Flash, c.FlashError = d.takeFlash(w, r)
	return c
}

// redirect answers a POST with 303 See Other and a message for the next page.
func (d *Dashboard) redirect(w http.ResponseWriter, r *http.Request, path, flash string, isErr bool) error {
	if flash != "" {
		d.setFlash(w, r, flash, isErr)
	}
	http.Redirect(w, r, d.prefix+path, http.StatusSeeOther)
	return nil
}

// actor is the signed-in admin, for the audit log.
func (d *Dashboard) actor(r *http.Request) server.Actor {
	a := adminFrom(r.Context())
	return server.Actor{UserID: a.UserID, IP: d.srv.ClientIP(r), Via: "dashboard"}
}

// confirmed reports whether a destructive POST was confirmed. When not, it
// renders the confirmation page, which re-posts every field of the original
// form with confirmed=yes.
func (d *Dashboard) confirmed(w http.ResponseWriter, r *http.Request, vm templates.ConfirmVM) bool {
	if r.PostFormValue("confirmed") == "yes" {
		return true
	}
	vm.Chrome = d.chrome(w, r, vm.Heading, vm.Active)
	vm.Action = r.URL.Path
	for k, vs := range r.PostForm {
		if k == "csrf" || k == "confirmed" {
			continue
		}
		for _, v := range vs {
			vm.Fields = append(vm.Fields, templates.Field{Name: k, Value: v})
		}
	}
	d.render(w, r, http.StatusOK, templates.Confirm(vm))
	return false
}
