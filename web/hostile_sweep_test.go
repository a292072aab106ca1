package web_test

import (
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"hearth/server"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
	"hearth/web"
)

// dashboardFields are the form fields and query parameters the
// dashboard's handlers read (grep FormValue and Query().Get in web/).
var dashboardFields = []string{"admin", "back", "block", "cache", "confirmed", "days", "device_id", "displayname", "erase",
	"factor", "from", "gc_percent", "keep_profiles", "logout_devices", "memory_limit", "mode", "next", "page", "password",
	"preset", "protect", "purge", "quarantine", "scope", "server_name", "size_mib", "token", "username", "uses_allowed",
	"valid_days", "q", "user", "order", "dir", "sort", "status", "filter"}

// dashboardValues are what every field is set to, in turn.
var dashboardValues = map[string]string{
	"nul": "a\x00b", "notutf8": "a\xff\xfeb", "long": strings.Repeat("x", 5000), "overflow": "99999999999999999999999",
	"wrongkind": "x", "negative": "-5",
}

// dashboardSkipped are the pages the sweep leaves alone: what they do
// reaches out of the machine (DNS, other servers) or the disk at large
// (a backup), or ends the session the sweep runs in.
var dashboardSkipped = []string{"/logout", "/backup", "/diagnostics", "/federation-test", "/setup/checks", "/api/federation-test", "/static/*"}

var dashErrorRe = regexp.MustCompile(`(?s)<main.*</main>`)

var dashParam = regexp.MustCompile(`\{([^}:]+)(:[^}]*)?\}`)

// TestDashboardHostileInputSweep sends every page of the dashboard,
// signed in as an admin with a valid form token, hostile path
// parameters, query parameters and form fields: NUL characters, text
// that is not UTF-8, numbers past every range, long and negative values.
// No page may answer 500, nothing may be logged at error level (or name
// a PostgreSQL error), and both engines must answer alike.
func TestDashboardHostileInputSweep(t *testing.T) {
	if testing.Short() || raceDetector {
		t.Skip("the sweep sends hundreds of requests; make test runs it without the race detector")
	}
	// The caches page sets the Go runtime's limits, process-wide: should
	// a hostile value ever be taken, the other tests get theirs back.
	gc, limit := debug.SetGCPercent(100), debug.SetMemoryLimit(-1)
	debug.SetGCPercent(gc)
	t.Cleanup(func() { debug.SetGCPercent(gc); debug.SetMemoryLimit(limit) })
	var mu sync.Mutex
	answers := map[string]map[string]int{}
	t.Cleanup(func() {
		sq, pg := answers["sqlite"], answers["postgres"]
		for k, s := range sq {
			if p, ok := pg[k]; ok && p != s {
				t.Errorf("the engines answer differently: %s: SQLite %d, PostgreSQL %d", k, s, p)
			}
		}
	})
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		errs := &servertest.ErrorLog{}
		sb := servertest.StartWith(t, e, func(d *server.Deps) { d.Log = slog.New(errs) })
		wd := web.New(web.Deps{Server: sb.Server})
		hs := httptest.NewServer(wd.Standalone())
		t.Cleanup(hs.Close)
		d := &dash{Bundle: sb, URL: hs.URL + web.Path}
		seed(t, d.Store, "root", "rootpassword", true)
		victim := seed(t, d.Store, "dave", "davepassword", false)
		roomID := createRoomAs(t, d, victim, `{"name": "Sweep", "preset": "public_chat"}`)
		b := newBrowser(t, d.URL)
		var tok string
		signIn := func() {
			if status, _ := b.signIn("root", "rootpassword"); status != http.StatusSeeOther {
				t.Fatalf("sign in: %d", status)
			}
			tok = b.csrfOf("/users")
		}
		signIn()

		var routes []string
		err := chi.Walk(wd.Handler().(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
			if !slices.Contains(dashboardSkipped, route) {
				routes = append(routes, method+" "+route)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(routes)
		values := map[string]string{"userID": victim, "roomID": roomID, "destination": "remote.test", "deleteID": "x", "reportID": "1", "mediaID": "x"}
		got := map[string]int{}
		n := 0
		anon := newBrowser(t, d.URL) // for the sign-in form, signed in nowhere
		send := func(name, method, path string, form url.Values) {
			n++
			by := b
			if strings.HasPrefix(path, "/login") && form != nil {
				by = anon
				form.Set("csrf", anon.csrfOf("/login")) // the sign-in form's own
			}
			status, page, _ := by.do(method, path, form)
			// A room's deletion runs in the background: wait for it, so that
			// the next request finds the same on both engines.
			for i := 0; strings.Contains(path, "/rooms/") && i < 200; i++ {
				if dels, err := d.Store.RoomDeletes(t.Context(), roomID, true); err != nil || len(dels) == 0 {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			got[name] = status
			if status >= 500 {
				t.Errorf("%s: %d %s", name, status, dashErrorRe.FindString(page))
			}
			if status == http.StatusForbidden && strings.Contains(page, "did not come from this dashboard") {
				t.Fatalf("%s: the form token was refused: the sweep tests nothing past it", name)
			}
		}
		for _, r := range routes {
			method, pattern, _ := strings.Cut(r, " ")
			fill := func(v func(string) string) string {
				return dashParam.ReplaceAllStringFunc(pattern, func(m string) string { return v(dashParam.FindStringSubmatch(m)[1]) })
			}
			normal := fill(func(p string) string { return url.PathEscape(values[p]) })
			for _, k := range slices.Sorted(maps.Keys(dashboardValues)) {
				v := dashboardValues[k]
				if method == http.MethodGet {
					q := url.Values{}
					for _, f := range dashboardFields {
						q.Set(f, v)
					}
					send(r+" query "+k, method, normal+"?"+q.Encode(), nil)
					continue
				}
				form := url.Values{"csrf": {tok}}
				for _, f := range dashboardFields {
					form.Set(f, v)
				}
				form.Set("confirmed", "yes")
				send(r+" form "+k, method, normal, form)
			}
			if dashParam.MatchString(pattern) {
				for k, v := range map[string]string{"nul": "%00", "notutf8": "%FF%FE", "long": strings.Repeat("x", 5000)} {
					var form url.Values
					if method != http.MethodGet {
						form = url.Values{"csrf": {tok}, "confirmed": {"yes"}}
					}
					send(r+" path "+k, method, fill(func(string) string { return v }), form)
				}
			}
			// An action on the admin (none should reach her, but should one
			// end her session) is followed by signing in again.
			if status, _, _ := b.do("GET", "/users", nil); status != http.StatusOK {
				signIn()
			}
		}
		time.Sleep(500 * time.Millisecond)
		for _, l := range errs.Lines() {
			t.Errorf("logged: %s", l)
		}
		byStatus := map[int]int{}
		for _, s := range got {
			byStatus[s]++
		}
		t.Logf("%d pages, %d requests; answers by status: %v", len(routes), n, byStatus)
		mu.Lock()
		answers[e.Name] = got
		mu.Unlock()
	})
}
