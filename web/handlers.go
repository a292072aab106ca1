package web

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"hearth/config"
	"hearth/server"
	"hearth/server/cache"
	"hearth/server/htmlpage"
	"hearth/templates"
)

// GET /_hearth/admin/
func (d *Dashboard) getOverview(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	latest := d.sampler.Ensure(ctx)
	in := overviewInput{Version: server.Version, Engine: d.store.Engine(), Uptime: d.srv.Now().Sub(d.srv.Started()),
		Goroutines: runtime.NumGoroutine()}
	users, err := d.store.CountUsers(ctx)
	if err != nil {
		return err
	}
	in.Users = int64(users)
	if n, err := d.store.CountRooms(ctx); err != nil {
		return err
	} else {
		in.Rooms = &n
	}
	if n, err := d.store.CountEvents(ctx); err != nil {
		return err
	} else {
		in.Events = &n
	}
	if n, _, err := d.srv.MediaTotals(ctx); err != nil {
		return err
	} else {
		in.Media = &n
	}
	if eps, ok := EventsPerSecond(d.sampler.Samples(), 5*time.Minute); ok {
		in.EventsPerSecond = &eps
	}
	runtime.ReadMemStats(&in.Mem)
	in.RSS = latest.RSS
	in.MemoryLimit, _ = cache.CurrentRuntime()
	if n, err := d.store.DatabaseSize(ctx); err != nil {
		d.srv.Log().Warn("dashboard: database size", "err", err)
		in.DatabaseSizeNote = "could not be read"
	} else {
		in.DatabaseSize = &n
	}
	vm := newOverviewVM(d.chrome(w, r, "Overview", "overview"), in)
	d.pages.Render(w, r, http.StatusOK, templates.Overview(vm))
	return nil
}

// GET /_hearth/admin/users?q=&deactivated=1&sort=&dir=&page=
func (d *Dashboard) getUsers(w http.ResponseWriter, r *http.Request) error {
	q := parseUsersQuery(r.URL.Query())
	rows, total, err := d.srv.ListUsers(r.Context(), q.filter())
	if err != nil {
		return err
	}
	vm := newUsersVM(d.chrome(w, r, "Users", "users"), q, rows, total, d.srv.Now())
	d.pages.Render(w, r, http.StatusOK, templates.Users(vm))
	return nil
}

// POST /_hearth/admin/users
func (d *Dashboard) postUsers(w http.ResponseWriter, r *http.Request) error {
	username := strings.ToLower(strings.TrimSpace(r.PostFormValue("username")))
	password := r.PostFormValue("password")
	userID, err := d.srv.LocalUserID(username)
	if err != nil {
		return err
	}
	if len(password) < 8 {
		return &htmlpage.Error{Status: http.StatusBadRequest, Msg: "Choose a password of at least 8 characters."}
	}
	admin := r.PostFormValue("admin") == "1"
	ch := server.UserChanges{Password: &password, Admin: &admin}
	if dn := strings.TrimSpace(r.PostFormValue("displayname")); dn != "" {
		ch.DisplayName = &dn
	}
	created, err := d.srv.UpsertUser(r.Context(), d.actor(r), userID, ch)
	if err != nil {
		return err
	}
	if !created {
		return &htmlpage.Error{Status: http.StatusConflict, Msg: userID + " already exists."}
	}
	d.setFlash(w, r, "Created "+userID+".", false)
	http.Redirect(w, r, userURL(d.prefix, userID), http.StatusSeeOther)
	return nil
}

// pathParam is the path parameter name unescaped; one badly escaped, not
// UTF-8 or with a NUL character (which PostgreSQL refuses to store or look
// up) is an error.
func pathParam(r *http.Request, name string) (string, error) {
	v, err := url.PathUnescape(chi.URLParam(r, name))
	if err == nil && !validText(v) {
		err = errors.New("not UTF-8, or has a NUL character") // PostgreSQL cannot look it up
	}
	return v, err
}

// userParam reads {userID}: a full local user ID, escaped as one segment.
func (d *Dashboard) userParam(r *http.Request) (string, error) {
	raw, err := pathParam(r, "userID")
	if err != nil {
		return "", &htmlpage.Error{Status: http.StatusBadRequest, Msg: "That is not a user address."}
	}
	return d.srv.LocalUserID(raw)
}

// GET /_hearth/admin/users/{userID}
func (d *Dashboard) getUser(w http.ResponseWriter, r *http.Request) error {
	userID, err := d.userParam(r)
	if err != nil {
		return err
	}
	u, err := d.srv.User(r.Context(), userID)
	if err != nil {
		return err
	}
	devs, err := d.store.Devices(r.Context(), userID)
	if err != nil {
		return err
	}
	rooms, err := d.store.RoomsOfUser(r.Context(), userID, "join", "invite")
	if err != nil {
		return err
	}
	vm := newUserVM(d.chrome(w, r, userID, "users"), u, devs, rooms, d.srv.Now())
	d.pages.Render(w, r, http.StatusOK, templates.User(vm))
	return nil
}

// POST /_hearth/admin/users/{userID}/password
func (d *Dashboard) postUserPassword(w http.ResponseWriter, r *http.Request) error {
	userID, err := d.userParam(r)
	if err != nil {
		return err
	}
	pw := r.PostFormValue("password")
	if len(pw) < 8 {
		return &htmlpage.Error{Status: http.StatusBadRequest, Msg: "Choose a password of at least 8 characters."}
	}
	logout := r.PostFormValue("logout_devices") == "1"
	if logout && !d.confirmed(w, r, templates.ConfirmVM{Heading: "Reset password and sign out?",
		Message: "Set a new password for " + userID + " and sign out all of their devices? They will need the new password everywhere.",
		Button:  "Reset and sign out", Cancel: userURL(d.prefix, userID)}) {
		return nil
	}
	if err := d.srv.ResetPassword(r.Context(), d.actor(r), userID, pw, logout); err != nil {
		return err
	}
	d.setFlash(w, r, "Password changed for "+userID+".", false)
	http.Redirect(w, r, userURL(d.prefix, userID), http.StatusSeeOther)
	return nil
}

// POST /_hearth/admin/users/{userID}/admin
func (d *Dashboard) postUserAdmin(w http.ResponseWriter, r *http.Request) error {
	userID, err := d.userParam(r)
	if err != nil {
		return err
	}
	makeAdmin := r.PostFormValue("admin") == "1"
	vm := templates.ConfirmVM{Heading: "Make " + userID + " a server admin?",
		Message: "Server admins can sign in here, manage every account and use the admin API.", Button: "Make admin", Cancel: userURL(d.prefix, userID)}
	if !makeAdmin {
		vm.Heading, vm.Message, vm.Button = "Remove admin rights?", userID+" will no longer be able to administer this server.", "Remove admin rights"
	}
	if !d.confirmed(w, r, vm) {
		return nil
	}
	if err := d.srv.SetUserAdmin(r.Context(), d.actor(r), userID, makeAdmin); err != nil {
		return err
	}
	msg := userID + " is now a server admin."
	if !makeAdmin {
		msg = userID + " is no longer a server admin."
	}
	d.setFlash(w, r, msg, false)
	http.Redirect(w, r, userURL(d.prefix, userID), http.StatusSeeOther)
	return nil
}

// POST /_hearth/admin/users/{userID}/deactivate
func (d *Dashboard) postUserDeactivate(w http.ResponseWriter, r *http.Request) error {
	userID, err := d.userParam(r)
	if err != nil {
		return err
	}
	if userID == adminFrom(r.Context()).UserID {
		return &htmlpage.Error{Status: http.StatusBadRequest, Msg: "You cannot deactivate your own account from the dashboard."}
	}
	erase := r.PostFormValue("erase") == "1"
	msg := "Deactivate " + userID + "? They are signed out everywhere and cannot sign in again. This cannot be undone from the dashboard."
	if erase {
		msg += " Their display name and avatar are erased too."
	}
	if !d.confirmed(w, r, templates.ConfirmVM{Heading: "Deactivate " + userID + "?", Message: msg,
		Button: "Deactivate", Cancel: userURL(d.prefix, userID)}) {
		return nil
	}
	if err := d.srv.DeactivateUser(r.Context(), d.actor(r), userID, erase); err != nil {
		return err
	}
	d.setFlash(w, r, "Deactivated "+userID+".", false)
	http.Redirect(w, r, userURL(d.prefix, userID), http.StatusSeeOther)
	return nil
}

// POST /_hearth/admin/users/{userID}/devices/delete
func (d *Dashboard) postUserDeviceDelete(w http.ResponseWriter, r *http.Request) error {
	userID, err := d.userParam(r)
	if err != nil {
		return err
	}
	dev := r.PostFormValue("device_id")
	if dev == "" {
		return &htmlpage.Error{Status: http.StatusBadRequest, Msg: "No device was given."}
	}
	if !d.confirmed(w, r, templates.ConfirmVM{Heading: "Sign out device " + dev + "?",
		Message: "The device is removed and its session ends; end-to-end encryption keys held only on it are lost to this account.",
		Button:  "Sign out device", Cancel: userURL(d.prefix, userID)}) {
		return nil
	}
	if err := d.srv.DeleteUserDevices(r.Context(), d.actor(r), userID, []string{dev}); err != nil {
		return err
	}
	d.setFlash(w, r, "Signed out device "+dev+".", false)
	http.Redirect(w, r, userURL(d.prefix, userID), http.StatusSeeOther)
	return nil
}

// GET /_hearth/admin/registration
func (d *Dashboard) getRegistration(w http.ResponseWriter, r *http.Request) error {
	cfg := d.srv.Config()
	toks, err := d.srv.RegTokens(r.Context(), nil)
	if err != nil {
		return err
	}
	live := d.srv.Registration()
	vm := templates.RegistrationVM{Chrome: d.chrome(w, r, "Registration", "registration"), Enabled: live.Enabled,
		RequiresToken: live.RequiresToken, WithoutVerification: live.Enabled && !live.RequiresToken,
		CanSave: cfg.Path() != "", Tokens: newRegTokenVMs(toks, d.srv.Now())}
	d.pages.Render(w, r, http.StatusOK, templates.Registration(vm))
	return nil
}

// POST /_hearth/admin/registration/settings
//
// Applies the registration mode at once and writes it to homeserver.yaml so
// it survives a restart.
func (d *Dashboard) postRegistrationSettings(w http.ResponseWriter, r *http.Request) error {
	path := d.srv.Config().Path()
	if path == "" {
		return &htmlpage.Error{Status: http.StatusConflict, Msg: "This server was not started from a config file, so there is nothing to save to."}
	}
	var enable, requireToken, withoutVerification bool
	switch r.PostFormValue("mode") {
	case "closed":
	case "token":
		enable, requireToken = true, true
	case "open":
		if !d.confirmed(w, r, templates.ConfirmVM{Heading: "Open registration to anyone?",
			Message: "Anyone who can reach this server will be able to create an account, with no token and no verification. Spammers look for servers like this.",
			Button:  "Open registration", Cancel: d.prefix + "/registration"}) {
			return nil
		}
		enable, withoutVerification = true, true
	default:
		return &htmlpage.Error{Status: http.StatusBadRequest, Msg: "Choose closed, token or open."}
	}
	err := config.UpdateFile(path,
		config.Setting{Path: []string{"enable_registration"}, Value: enable},
		config.Setting{Path: []string{"registration_requires_token"}, Value: requireToken},
		config.Setting{Path: []string{"enable_registration_without_verification"}, Value: withoutVerification})
	if err != nil {
		d.srv.Log().Error("dashboard: saving registration settings", "err", err)
		return d.redirect(w, r, "/registration", "Could not save: "+err.Error(), true)
	}
	d.srv.SetRegistration(server.RegistrationSettings{Enabled: enable, RequiresToken: requireToken})
	d.srv.Audit(r.Context(), d.actor(r), "registration.settings", "", fmt.Sprintf("enable=%t requires_token=%t", enable, requireToken))
	return d.redirect(w, r, "/registration", "Applied and saved to "+path+".", false)
}

// POST /_hearth/admin/registration/tokens
func (d *Dashboard) postRegToken(w http.ResponseWriter, r *http.Request) error {
	req := server.NewRegToken{}
	if t := strings.TrimSpace(r.PostFormValue("token")); t != "" {
		req.Token = &t
	}
	if v := strings.TrimSpace(r.PostFormValue("uses_allowed")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return &htmlpage.Error{Status: http.StatusBadRequest, Msg: "Uses allowed must be a whole number."}
		}
		req.UsesAllowed = &n
	}
	if v := strings.TrimSpace(r.PostFormValue("valid_days")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 3650 {
			return &htmlpage.Error{Status: http.StatusBadRequest, Msg: "Valid for days must be a whole number from 1 to 3650."}
		}
		exp := d.srv.Now().Add(time.Duration(n) * 24 * time.Hour).UnixMilli()
		req.ExpiryTime = &exp
	}
	t, err := d.srv.CreateRegToken(r.Context(), d.actor(r), req)
	if err != nil {
		return err
	}
	return d.redirect(w, r, "/registration", "Created registration token "+t.Token+".", false)
}

// POST /_hearth/admin/registration/tokens/delete
func (d *Dashboard) postRegTokenDelete(w http.ResponseWriter, r *http.Request) error {
	tok := r.PostFormValue("token")
	if tok == "" {
		return &htmlpage.Error{Status: http.StatusBadRequest, Msg: "No token was given."}
	}
	if !d.confirmed(w, r, templates.ConfirmVM{Heading: "Delete registration token?",
		Message: "Delete the token " + tok + "? People who have it can no longer register with it.",
		Button:  "Delete token", Cancel: d.prefix + "/registration"}) {
		return nil
	}
	if err := d.srv.DeleteRegToken(r.Context(), d.actor(r), tok); err != nil {
		return err
	}
	return d.redirect(w, r, "/registration", "Deleted the token.", false)
}

// GET /_hearth/admin/caches
func (d *Dashboard) getCaches(w http.ResponseWriter, r *http.Request) error {
	rss := d.sampler.Ensure(r.Context()).RSS
	limit, gc := cache.CurrentRuntime()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	now := d.srv.Now()
	stats := d.caches.Stats()
	envLimit, _ := cache.EnvRuntime()
	vm := templates.CachesVM{Chrome: d.chrome(w, r, "Caches & memory", "caches"), GlobalFactor: formatFactor(d.caches.GlobalFactor()),
		Caches: newCacheRows(stats), CacheBytes: cacheBytes(stats), Buffers: newBufferRows(d.caches.Buffers()),
		MemoryLimit: configSize(limit), GCPercent: strconv.Itoa(gc), Presets: newPresetVMs(),
		Chart:   newMemoryChart(d.sampler.Samples(), now, time.Hour),
		Memory:  append(memoryStats(ms, rss, limit), runtimeStats(ms, limit, envLimit, int64(d.srv.Config().Memory.Limit))...),
		CanSave: d.srv.Config().Path() != ""}
	if vm.CanSave {
		vm.Persisted = "Changes apply at once and are saved to " + d.srv.Config().Path() + ", so they survive a restart."
	} else {
		vm.Persisted = "Changes apply at once but are not saved: this server was not started from a config file."
	}
	d.pages.Render(w, r, http.StatusOK, templates.Caches(vm))
	return nil
}

// persist writes settings to the config file, when there is one, and says
// what happened for the flash message.
func (d *Dashboard) persist(settings ...config.Setting) (string, bool) {
	path := d.srv.Config().Path()
	if path == "" {
		return " Not saved: no config file.", false
	}
	if err := config.UpdateFile(path, settings...); err != nil {
		d.srv.Log().Error("dashboard: saving to the config file", "err", err)
		return " Applied, but not saved: " + err.Error(), true
	}
	return " Saved to homeserver.yaml.", false
}

func parseFactor(v string) (float64, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err == nil {
		err = cache.ValidFactor(f)
	}
	if err != nil {
		return 0, &htmlpage.Error{Status: http.StatusBadRequest, Msg: "A cache factor must be a number greater than 0 and at most 1000."}
	}
	return f, nil
}

// POST /_hearth/admin/caches/global
func (d *Dashboard) postCacheGlobal(w http.ResponseWriter, r *http.Request) error {
	f, err := parseFactor(r.PostFormValue("factor"))
	if err != nil {
		return err
	}
	if err := d.caches.SetGlobalFactor(f); err != nil {
		return err
	}
	note, bad := d.persist(config.Setting{Path: []string{"caches", "global_factor"}, Value: f})
	d.srv.Audit(r.Context(), d.actor(r), "cache.global_factor", "", "factor="+formatFactor(f))
	return d.redirect(w, r, "/caches", "Global cache factor set to "+formatFactor(f)+"."+note, bad)
}

// POST /_hearth/admin/caches/factor
func (d *Dashboard) postCacheFactor(w http.ResponseWriter, r *http.Request) error {
	name := r.PostFormValue("cache")
	if !d.caches.Has(name) {
		return &htmlpage.Error{Status: http.StatusNotFound, Msg: "There is no cache of that name."}
	}
	f, err := parseFactor(r.PostFormValue("factor"))
	if err != nil {
		return err
	}
	if err := d.caches.SetFactor(name, f); err != nil {
		return err
	}
	note, bad := d.persist(config.Setting{Path: []string{"caches", "per_cache_factors", name}, Value: f})
	d.srv.Audit(r.Context(), d.actor(r), "cache.factor", name, "factor="+formatFactor(f))
	return d.redirect(w, r, "/caches", "Factor of "+name+" set to "+formatFactor(f)+"."+note, bad)
}

// runtimeSettings checks a memory limit and GC target as config.Validate
// would (memory.limit, memory.gc_percent).
func runtimeSettings(limitText, gcText string) (int64, int, error) {
	limit, err := config.ParseSize(limitText)
	if err != nil {
		return 0, 0, &htmlpage.Error{Status: http.StatusBadRequest, Msg: "The memory limit must be a size such as 400M or 1G, or 0 for none."}
	}
	gc, err := strconv.Atoi(strings.TrimSpace(gcText))
	if err != nil {
		return 0, 0, &htmlpage.Error{Status: http.StatusBadRequest, Msg: "The GC target must be a whole number."}
	}
	c := &config.Config{}
	c.Memory = config.Memory{Limit: config.Size(limit), GCPercent: gc}
	var msgs []string
	if err := c.Validate(); err != nil { // reports every key; keep only ours
		for _, line := range strings.Split(err.Error(), "\n") {
			if strings.HasPrefix(line, "memory.") {
				msgs = append(msgs, line)
			}
		}
	}
	if len(msgs) > 0 {
		return 0, 0, &htmlpage.Error{Status: http.StatusBadRequest, Msg: strings.Join(msgs, "; ")}
	}
	return limit, gc, nil
}

// POST /_hearth/admin/caches/runtime
func (d *Dashboard) postCacheRuntime(w http.ResponseWriter, r *http.Request) error {
	limit, gc, err := runtimeSettings(r.PostFormValue("memory_limit"), r.PostFormValue("gc_percent"))
	if err != nil {
		return err
	}
	cache.ApplyRuntime(limit, gc)
	note, bad := d.persist(config.Setting{Path: []string{"memory", "limit"}, Value: configSize(limit)},
		config.Setting{Path: []string{"memory", "gc_percent"}, Value: gc})
	detail := "limit=" + configSize(limit) + " gc_percent=" + strconv.Itoa(gc)
	d.srv.Audit(r.Context(), d.actor(r), "memory.runtime", "", detail)
	return d.redirect(w, r, "/caches", "Go runtime set: "+detail+"."+note, bad)
}

// POST /_hearth/admin/caches/preset
func (d *Dashboard) postCachePreset(w http.ResponseWriter, r *http.Request) error {
	p, ok := cache.PresetByID(r.PostFormValue("preset"))
	if !ok {
		return &htmlpage.Error{Status: http.StatusBadRequest, Msg: "There is no such preset."}
	}
	if err := p.Tuning.Apply(d.caches); err != nil {
		return err
	}
	note, bad := d.persist(config.Setting{Path: []string{"caches", "global_factor"}, Value: p.Tuning.GlobalFactor},
		config.Setting{Path: []string{"memory", "limit"}, Value: configSize(p.Tuning.MemoryLimit)},
		config.Setting{Path: []string{"memory", "gc_percent"}, Value: p.Tuning.GCPercent})
	d.srv.Audit(r.Context(), d.actor(r), "memory.preset", p.ID, p.Name)
	return d.redirect(w, r, "/caches", "Applied the preset “"+p.Name+"”."+note, bad)
}

const auditPerPage = 50

// GET /_hearth/admin/audit?from=
func (d *Dashboard) getAudit(w http.ResponseWriter, r *http.Request) error {
	from, _ := strconv.Atoi(r.URL.Query().Get("from"))
	from = max(0, from)
	rows, total, err := d.store.AuditLog(r.Context(), from, auditPerPage)
	if err != nil {
		return err
	}
	vm := newAuditVM(d.chrome(w, r, "Audit log", "audit"), rows, from, total, auditPerPage)
	d.pages.Render(w, r, http.StatusOK, templates.Audit(vm))
	return nil
}
