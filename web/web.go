// Package web is Hearth's admin dashboard: server-rendered pages for server
// admins, on a chi router mounted at /_hearth/admin (or on a listener of its
// own). Handlers have the server's error-returning shape; they build a view
// model and render a templ component from package templates. Every change
// goes through the same operations as the Synapse admin API (methods on
// *server.Server), so the two cannot disagree.
package web

import (
	"context"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"hearth/appliance/certs"
	"hearth/server"
	"hearth/server/cache"
	"hearth/server/htmlpage"
	"hearth/server/storage"
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
	pages   *htmlpage.Pages
}

// New builds the dashboard. Call Run to keep its memory chart and session
// table up to date.
func New(d Deps) *Dashboard {
	st := d.Server.Store()
	if d.Sampler == nil {
		d.Sampler = NewSampler(30*time.Second, 120, d.Server.Metrics().Registry)
	}
	dash := &Dashboard{srv: d.Server, store: st, caches: st.Caches(), sampler: d.Sampler, prefix: Path,
		limits: newSignInLimits(d.Server.Config(), d.Server.Now), certs: d.Certs, diagDNS: d.DiagDNS}
	dash.pages = &htmlpage.Pages{Name: "dashboard", Log: d.Server.Log,
		Internal: "Something went wrong inside Hearth. The details are in the server log.", ErrorPage: dash.errorPage}
	return dash
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

// Handler is the dashboard's router, to mount at Path.
func (d *Dashboard) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(htmlpage.SecurityHeaders(pageCSP), d.validText)
	r.Handle("/static/*", http.StripPrefix(d.prefix+"/static/", htmlpage.Static()))
	r.Get("/login", d.pages.Handler(d.getLogin))
	// The federation tester's JSON, for admins' tools (diagnostics.go).
	r.With(d.srv.AdminAPI).Get("/api/federation-test", d.apiFederationTest)
	r.Post("/login", d.pages.Handler(d.postLogin))
	r.Group(func(r chi.Router) {
		r.Use(d.requireAdmin)
		r.Post("/logout", d.pages.Handler(d.postLogout))
		r.Get("/", d.pages.Handler(d.getOverview))
		r.Post("/backup", d.pages.Handler(d.postBackup)) // backup.go
		r.Get("/users", d.pages.Handler(d.getUsers))
		r.Post("/users", d.pages.Handler(d.postUsers))
		r.Get("/users/{userID}", d.pages.Handler(d.getUser))
		r.Post("/users/{userID}/password", d.pages.Handler(d.postUserPassword))
		r.Post("/users/{userID}/admin", d.pages.Handler(d.postUserAdmin))
		r.Post("/users/{userID}/deactivate", d.pages.Handler(d.postUserDeactivate))
		r.Post("/users/{userID}/devices/delete", d.pages.Handler(d.postUserDeviceDelete))
		r.Get("/registration", d.pages.Handler(d.getRegistration))
		r.Post("/registration/settings", d.pages.Handler(d.postRegistrationSettings))
		r.Post("/registration/tokens", d.pages.Handler(d.postRegToken))
		r.Post("/registration/tokens/delete", d.pages.Handler(d.postRegTokenDelete))
		r.Get("/caches", d.pages.Handler(d.getCaches))
		r.Post("/caches/global", d.pages.Handler(d.postCacheGlobal))
		r.Post("/caches/factor", d.pages.Handler(d.postCacheFactor))
		r.Post("/caches/runtime", d.pages.Handler(d.postCacheRuntime))
		r.Post("/caches/preset", d.pages.Handler(d.postCachePreset))
		r.Get("/audit", d.pages.Handler(d.getAudit))
		r.Get("/rooms", d.pages.Handler(d.getRooms))
		r.Get("/rooms/deletes/{deleteID}", d.pages.Handler(d.getRoomDeleteStatus))
		r.Get("/rooms/{roomID}", d.pages.Handler(d.getRoom))
		r.Post("/rooms/{roomID}/block", d.pages.Handler(d.postRoomBlock))
		r.Post("/rooms/{roomID}/delete", d.pages.Handler(d.postRoomDelete))
		r.Post("/rooms/{roomID}/media/quarantine", d.pages.Handler(d.postRoomMediaQuarantine))
		r.Get("/federation", d.pages.Handler(d.getFederation))
		r.Get("/federation/{destination}", d.pages.Handler(d.getDestination))
		r.Post("/federation/{destination}/retry", d.pages.Handler(d.postDestinationRetry))
		r.Get("/reports", d.pages.Handler(d.getReports))
		r.Post("/reports/{reportID}/delete", d.pages.Handler(d.postReportDelete))
		r.Get("/media", d.pages.Handler(d.getMedia))
		r.Post("/media/cleanup", d.pages.Handler(d.postMediaCleanup))
		r.Post("/media/{mediaID}/quarantine", d.pages.Handler(d.postMediaQuarantine))
		r.Post("/media/{mediaID}/protect", d.pages.Handler(d.postMediaProtect))
		r.Post("/media/{mediaID}/delete", d.pages.Handler(d.postMediaDelete))
		r.Get("/setup/name", d.pages.Handler(d.getSetupName)) // setup.go: the first-run walk-through
		r.Get("/setup/certificates", d.pages.Handler(d.getSetupCertificates))
		r.Get("/setup/checks", d.pages.Handler(d.getSetupChecks))
		r.Post("/setup/checks", d.pages.Handler(d.postSetupChecks))
		r.Get("/diagnostics", d.pages.Handler(d.getDiagnostics))
		r.Post("/diagnostics", d.pages.Handler(d.postDiagnostics))
		r.Get("/federation-test", d.pages.Handler(d.getFederationTest))
		r.Post("/federation-test", d.pages.Handler(d.postFederationTest))
	})
	r.NotFound(d.pages.Handler(func(w http.ResponseWriter, r *http.Request) error {
		return &htmlpage.Error{Status: http.StatusNotFound, Msg: "There is no dashboard page at this address."}
	}))
	r.MethodNotAllowed(d.pages.Handler(func(w http.ResponseWriter, r *http.Request) error {
		return &htmlpage.Error{Status: http.StatusMethodNotAllowed, Msg: "This page does not accept that kind of request."}
	}))
	return r
}

// validText refuses a request whose query or form holds text that is
// not UTF-8 or has a NUL character (400), before any page reads it: no
// name, token or search a page takes has one, PostgreSQL cannot look one
// up, and SQLite would. The dashboard's own forms never send one.
func (d *Dashboard) validText(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm() // the query, and a POST's url-encoded body; a page reports its own errors
		for name, vs := range r.Form {
			bad := !validText(name)
			for _, v := range vs {
				bad = bad || !validText(v)
			}
			if bad {
				d.pages.WriteError(w, r, &htmlpage.Error{Status: http.StatusBadRequest,
					Msg: "This request was not accepted: a field holds text that is not UTF-8, or a NUL character."})
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// validText reports whether s is UTF-8 without a NUL character.
func validText(s string) bool { return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 }

// Standalone is the handler for the dashboard's own listener: the
// dashboard at Path, and "/" redirecting there.
func (d *Dashboard) Standalone() http.Handler {
	r := chi.NewRouter()
	r.Mount(Path, d.Handler())
	r.Handle(SetupPath, d.SetupHandler())
	r.Get("/", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, Path+"/", http.StatusFound) })
	return r
}

// pageCSP is the dashboard's Content Security Policy: its own script,
// stylesheet and images, forms posted to itself.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// errCSRF is returned when a POST lacks the form token or carries a wrong one.
var errCSRF = &htmlpage.Error{Status: http.StatusForbidden,
	Msg: "This form was not accepted: it has expired or did not come from this dashboard. Go back, reload the page and try again."}

// errorPage is the dashboard's error page (htmlpage.Pages.ErrorPage), with
// a way back to where the admin came from on this dashboard.
func (d *Dashboard) errorPage(w http.ResponseWriter, r *http.Request, status int, msg string) {
	c := d.chrome(w, r, "Error", "")
	back := r.Referer()
	if back == "" || !strings.HasPrefix(back, "http") {
		back = d.prefix + "/"
	}
	vm := templates.ErrorVM{Chrome: c, Status: status, Heading: http.StatusText(status), Message: msg, Back: d.localURL(back)}
	d.pages.Render(w, r, status, templates.ErrorPage(vm))
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
	d.pages.Render(w, r, http.StatusOK, templates.Confirm(vm))
	return false
}
