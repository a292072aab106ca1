package web

import (
	"cmp"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"hearth/config"
	"hearth/server"
	"hearth/server/htmlpage"
	"hearth/server/matrix"
	"hearth/server/secret"
	"hearth/server/storage"
	"hearth/templates"
)

// First run. A server with no admin offers one page, SetupPath, reachable
// only with the token PrepareSetup wrote to the data directory (and the
// appliance printed in the log): it creates the first admin, deletes the
// token and signs the admin in. Once any admin exists the page is gone,
// whoever created the admin. The walk-through then goes on as dashboard
// pages (behind the admin's session and form token like the rest): the
// server name, the certificates, then the doctor and the federation
// tester on this server's name, ending at the overview.

// SetupPath is the first-run page, on whichever listener serves the
// dashboard.
const SetupPath = "/_hearth/setup"

// SetupTokenName is the token file's name, beside the signing key.
const SetupTokenName = "setup-token"

// SetupTokenPath is where cfg's setup token lives.
func SetupTokenPath(cfg *config.Config) string {
	return filepath.Join(filepath.Dir(cfg.SigningKeyPath), SetupTokenName)
}

// PrepareSetup returns the setup token when the server has no admin yet:
// the one in the data directory, or a new one written there (mode 0600).
// With an admin it removes any token left over and returns "".
func PrepareSetup(ctx context.Context, cfg *config.Config, st *storage.Store) (string, error) {
	p := SetupTokenPath(cfg)
	has, err := st.HasAdmin(ctx)
	if err != nil {
		return "", err
	}
	if has {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("setup token: %w", err)
		}
		return "", nil
	}
	if raw, err := os.ReadFile(p); err == nil && len(strings.TrimSpace(string(raw))) >= 32 {
		return strings.TrimSpace(string(raw)), nil
	}
	tok := secret.Token("")
	if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("setup token: %w", err)
	}
	return tok, nil
}

// setupState serialises setup attempts: two forms posted at once must not
// both create an admin.
type setupState struct{ mu sync.Mutex }

// SetupHandler serves SetupPath.
func (d *Dashboard) SetupHandler() http.Handler {
	return htmlpage.SecurityHeaders(pageCSP)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var f htmlpage.Func
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			f = d.getSetup
		case http.MethodPost:
			f = d.postSetup
		default:
			f = func(http.ResponseWriter, *http.Request) error {
				return &htmlpage.Error{Status: http.StatusMethodNotAllowed, Msg: "This page does not accept that kind of request."}
			}
		}
		d.pages.Handler(f)(w, r)
	}))
}

// errSetupDone is the answer once an admin exists.
var errSetupDone = &htmlpage.Error{Status: http.StatusGone,
	Msg: "This server already has an admin, so the setup link no longer works. Sign in to the dashboard instead."}

// checkSetup says whether setup is open and tok is its token.
func (d *Dashboard) checkSetup(ctx context.Context, tok string) error {
	has, err := d.store.HasAdmin(ctx)
	if err != nil {
		return err
	}
	if has {
		return errSetupDone
	}
	raw, err := os.ReadFile(SetupTokenPath(d.srv.Config()))
	want := strings.TrimSpace(string(raw))
	if err != nil || len(want) < 32 || subtle.ConstantTimeCompare([]byte(tok), []byte(want)) != 1 {
		return &htmlpage.Error{Status: http.StatusForbidden,
			Msg: "This setup link is not valid. Use the link Hearth printed when it started (the token is also in " + SetupTokenName + " in the data directory)."}
	}
	return nil
}

// GET /_hearth/setup?token=
func (d *Dashboard) getSetup(w http.ResponseWriter, r *http.Request) error {
	tok := r.URL.Query().Get("token")
	if err := d.checkSetup(r.Context(), tok); err != nil {
		return err
	}
	d.renderSetup(w, r, http.StatusOK, tok, "", "")
	return nil
}

func (d *Dashboard) renderSetup(w http.ResponseWriter, r *http.Request, status int, tok, username, msg string) {
	vm := templates.SetupVM{Chrome: d.chrome(w, r, "Set up Hearth", ""), Action: SetupPath, Token: tok, Username: username, Error: msg}
	d.pages.Render(w, r, status, templates.Setup(vm))
}

// POST /_hearth/setup
//
// Creates the first admin with the token from the form (which, being
// secret, also stands in for a CSRF token), deletes the token, signs the
// new admin in and opens the dashboard.
func (d *Dashboard) postSetup(w http.ResponseWriter, r *http.Request) error {
	if err := parseForm(w, r); err != nil {
		return err
	}
	tok := r.PostFormValue("token")
	username := strings.ToLower(strings.TrimSpace(r.PostFormValue("username")))
	password := r.PostFormValue("password")
	d.setup.mu.Lock()
	defer d.setup.mu.Unlock()
	if err := d.checkSetup(r.Context(), tok); err != nil {
		return err
	}
	userID, err := d.srv.LocalUserID(username)
	if err != nil || username == "" || strings.HasPrefix(username, "@") || matrix.ValidateLocalpart(username, d.srv.ServerName()) != nil {
		d.renderSetup(w, r, http.StatusBadRequest, tok, username, "Choose a username of lower-case letters, digits and . _ = - / only.")
		return nil
	}
	switch {
	case len(password) < 8:
		d.renderSetup(w, r, http.StatusBadRequest, tok, username, "Choose a password of at least 8 characters.")
		return nil
	case password != r.PostFormValue("password2"):
		d.renderSetup(w, r, http.StatusBadRequest, tok, username, "The two passwords differ.")
		return nil
	}
	yes := true
	by := server.Actor{UserID: userID, IP: d.srv.ClientIP(r), Via: "dashboard"}
	if _, err := d.srv.UpsertUser(r.Context(), by, userID, server.UserChanges{Password: &password, Admin: &yes}); err != nil {
		return err
	}
	if err := os.Remove(SetupTokenPath(d.srv.Config())); err != nil && !errors.Is(err, fs.ErrNotExist) {
		d.srv.Log().Warn("setup: could not delete the used token (it no longer works: an admin exists)", "err", err)
	}
	d.srv.Log().Info("setup: first admin created", "user_id", userID, "ip", by.IP)
	if err := d.signIn(w, r, userID); err != nil {
		return err
	}
	d.setFlash(w, r, "Welcome. You are "+userID+", the first server admin.", false)
	http.Redirect(w, r, d.prefix+"/setup/name", http.StatusSeeOther)
	return nil
}

// setupStepVM is what every step of the walk-through shows.
func (d *Dashboard) setupStepVM(w http.ResponseWriter, r *http.Request, step, title string) templates.SetupStepVM {
	cfg := d.srv.Config()
	return templates.SetupStepVM{Chrome: d.chrome(w, r, "Set up: "+title, ""), Step: step, ConfigPath: cfg.Path()}
}

// GET /_hearth/admin/setup/name
func (d *Dashboard) getSetupName(w http.ResponseWriter, r *http.Request) error {
	vm := d.setupStepVM(w, r, "name", "server name")
	n, err := d.store.CountUsers(r.Context())
	if err != nil {
		return err
	}
	vm.Accounts = plural(n, "account", "accounts")
	d.pages.Render(w, r, http.StatusOK, templates.SetupName(vm))
	return nil
}

// GET /_hearth/admin/setup/certificates
func (d *Dashboard) getSetupCertificates(w http.ResponseWriter, r *http.Request) error {
	vm := d.setupStepVM(w, r, "certificates", "certificates")
	cfg := d.srv.Config()
	var ls []string
	for _, l := range cfg.Listeners {
		s := strconv.Itoa(l.Port)
		if l.TLS {
			s += " (TLS)"
		}
		ls = append(ls, s)
	}
	vm.Listeners = cmp.Or(strings.Join(ls, ", "), "none")
	vm.ACMEDomains = strings.Join(cfg.ACME.Domains, ", ")
	vm.CertsVM = d.certsVM(r.Context())
	// The files as the certificate manager loaded them.
	for _, c := range vm.Certs {
		if c.Source == "file" {
			vm.CertFile, vm.KeyFile = c.Domain, cfg.TLSPrivateKeyPath
		}
	}
	d.pages.Render(w, r, http.StatusOK, templates.SetupCertificates(vm))
	return nil
}

// GET /_hearth/admin/setup/checks
func (d *Dashboard) getSetupChecks(w http.ResponseWriter, r *http.Request) error {
	d.pages.Render(w, r, http.StatusOK, templates.SetupChecks(d.setupStepVM(w, r, "checks", "checks")))
	return nil
}

// POST /_hearth/admin/setup/checks runs the doctor, whose report holds
// the federation tester's run on this server's name, and shows the two
// apart.
func (d *Dashboard) postSetupChecks(w http.ResponseWriter, r *http.Request) error {
	vm := d.setupStepVM(w, r, "checks", "checks")
	rep, err := d.runDoctor(r)
	if err != nil {
		return err
	}
	vm.Doctor = newDoctorVM(rep.Findings)
	if rep.Federation != nil {
		vm.Federation = newFedResultVM(rep.Federation)
	}
	d.pages.Render(w, r, http.StatusOK, templates.SetupChecks(vm))
	return nil
}

// signIn starts a dashboard session for userID and sets its cookie.
func (d *Dashboard) signIn(w http.ResponseWriter, r *http.Request, userID string) error {
	id := secret.Token("hds_")
	now := d.srv.Now()
	life := d.srv.Config().AdminDashboard.SessionLifetime.Std()
	if life <= 0 {
		life = 12 * time.Hour
	}
	ds := &storage.DashboardSession{IDHash: storage.HashToken(id), UserID: userID, CreatedTS: now.UnixMilli(),
		ExpiresTS: now.Add(life).UnixMilli(), IP: d.srv.ClientIP(r), UserAgent: d.srv.UserAgent(r)}
	if err := d.store.CreateDashboardSession(r.Context(), ds); err != nil {
		return err
	}
	http.SetCookie(w, d.cookie(r, sessionCookie, id, int(life.Seconds())))
	return nil
}
