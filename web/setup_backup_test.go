package web_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"database/sql"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"hearth/appliance/backup"
	"hearth/server/storage/storagetest"
	"hearth/web"
)

// TestDashboardBackup: the overview's backup button downloads the archive
// hearth backup writes; on SQLite its database snapshot holds the accounts
// and its key is the server's.
func TestDashboardBackup(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		d := start(t, e)
		seed(t, d.Store, "root", "rootpassword", true)
		seed(t, d.Store, "bob", "bobpassword", false)
		b := newBrowser(t, d.URL)
		if status, _ := b.signIn("root", "rootpassword"); status != http.StatusSeeOther {
			t.Fatalf("sign in: %d", status)
		}
		if status, _, _ := b.do("POST", "/backup", url.Values{}); status != http.StatusForbidden {
			t.Fatalf("backup without the form token: %d", status)
		}
		_, page, _ := b.do("GET", "/", nil)
		if !strings.Contains(page, "Download a backup") {
			t.Fatal("no backup button on the overview")
		}
		status, body, resp := b.do("POST", "/backup", url.Values{"csrf": {b.csrfOf("/")}})
		if status != http.StatusOK || resp.Header.Get("Content-Type") != "application/gzip" ||
			!strings.HasPrefix(resp.Header.Get("Content-Disposition"), `attachment; filename="hearth-hearth.test-`) {
			t.Fatalf("backup: %d %v", status, resp.Header)
		}
		m, err := backup.ReadManifest(strings.NewReader(body))
		if err != nil {
			t.Fatalf("the download is not a valid backup: %v", err)
		}
		if m.ServerName != "hearth.test" || m.Engine != e.Name || m.HasDatabase() != (e.Name == "sqlite") {
			t.Fatalf("manifest %+v", m)
		}
		files := untar(t, []byte(body))
		key, _ := os.ReadFile(d.Cfg.SigningKeyPath)
		if !bytes.Equal(files["signing.key"], key) {
			t.Error("archived signing key differs from the server's")
		}
		if e.Name == "sqlite" {
			p := filepath.Join(t.TempDir(), "snap.db")
			os.WriteFile(p, files["database/homeserver.db"], 0o600)
			db, err := sql.Open("sqlite", p)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			var n int
			if err := db.QueryRow(`SELECT COUNT(*) FROM users WHERE user_id IN ('@root:hearth.test', '@bob:hearth.test')`).Scan(&n); err != nil || n != 2 {
				t.Errorf("snapshot users: %d %v", n, err)
			}
		}
		_, audit, _ := b.do("GET", "/audit", nil)
		if !strings.Contains(audit, "dashboard.backup") {
			t.Error("backup not in the audit log")
		}
	})
}

func untar(t *testing.T, raw []byte) map[string][]byte {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	out := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name], _ = io.ReadAll(tr)
	}
}

// TestSetupPage: the first-run page refuses a wrong token, keeps the form
// on bad input, creates the admin and signs it in on a good one, and is
// gone (410) once an admin exists.
func TestSetupPage(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		d := start(t, e)
		ctx := context.Background()
		tok, err := web.PrepareSetup(ctx, d.Cfg, d.Store)
		if err != nil || len(tok) < 32 {
			t.Fatalf("token %q %v", tok, err)
		}
		if again, _ := web.PrepareSetup(ctx, d.Cfg, d.Store); again != tok {
			t.Error("the token changed before it was used")
		}
		root := newBrowser(t, strings.TrimSuffix(d.URL, web.Path))
		if status, _, _ := root.do("GET", web.SetupPath+"?token=wrong", nil); status != http.StatusForbidden {
			t.Errorf("wrong token: %d", status)
		}
		if status, _, _ := root.do("POST", web.SetupPath, url.Values{"token": {"wrong"}, "username": {"eve"}, "password": {"evepassword"}, "password2": {"evepassword"}}); status != http.StatusForbidden {
			t.Errorf("post with a wrong token: %d", status)
		}
		if status, page, _ := root.do("GET", web.SetupPath+"?token="+tok, nil); status != http.StatusOK || !strings.Contains(page, `name="password2"`) {
			t.Fatalf("setup form: %d", status)
		}
		for _, tc := range []struct{ name, user, pw, pw2, want string }{
			{"passwords differ", "root", "rootpassword", "rootpasswort", "differ"},
			{"short password", "root", "short", "short", "at least 8"},
			{"bad username", "Root Admin", "rootpassword", "rootpassword", "username"},
		} {
			status, page, _ := root.do("POST", web.SetupPath, url.Values{"token": {tok}, "username": {tc.user}, "password": {tc.pw}, "password2": {tc.pw2}})
			if status != http.StatusBadRequest || !strings.Contains(page, tc.want) || !strings.Contains(page, `name="password2"`) {
				t.Errorf("%s: %d", tc.name, status)
			}
		}
		if has, _ := d.Store.HasAdmin(ctx); has {
			t.Fatal("a refused form created an admin")
		}
		status, _, resp := root.do("POST", web.SetupPath, url.Values{"token": {tok}, "username": {"root"}, "password": {"rootpassword"}, "password2": {"rootpassword"}})
		if status != http.StatusSeeOther || resp.Header.Get("Location") != web.Path+"/setup/name" {
			t.Fatalf("setup: %d %s", status, resp.Header.Get("Location"))
		}
		u, err := d.Store.UserByID(ctx, "@root:hearth.test")
		if err != nil || !u.IsAdmin {
			t.Fatalf("root: %+v %v", u, err)
		}
		// The same browser is signed in to the dashboard.
		if status, page, _ := root.do("GET", web.Path+"/", nil); status != http.StatusOK || !strings.Contains(page, "@root:hearth.test") {
			t.Errorf("dashboard after setup: %d", status)
		}
		if status, _, _ := root.do("POST", web.SetupPath, url.Values{"token": {tok}, "username": {"eve"}, "password": {"evepassword"}, "password2": {"evepassword"}}); status != http.StatusGone {
			t.Errorf("second use: %d", status)
		}
		if _, err := d.Store.UserByID(ctx, "@eve:hearth.test"); err == nil {
			t.Error("a spent token created a user")
		}
		if tok, err := web.PrepareSetup(ctx, d.Cfg, d.Store); tok != "" || err != nil {
			t.Errorf("with an admin: token %q %v", tok, err)
		}
		if _, err := os.Stat(web.SetupTokenPath(d.Cfg)); !os.IsNotExist(err) {
			t.Errorf("token file: %v", err)
		}
	})
}

// TestChartsReadMetrics: the dashboard's samples are the metrics registry's
// numbers (no second set of counters): the events a client sends move
// hearth_events_persisted_total, and the sampler's event count moves by
// exactly as much.
func TestChartsReadMetrics(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		d := start(t, e)
		sampler := web.NewSampler(time.Hour, 10, d.Server.Metrics().Registry)
		ctx := context.Background()
		before := sampler.Sample(ctx)
		cli, err := mautrix.NewClient(d.Bundle.URL, "", "")
		if err != nil {
			t.Fatal(err)
		}
		reg, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "charts", Password: "a long password for charts"})
		if err != nil {
			t.Fatal(err)
		}
		cli.UserID, cli.AccessToken = reg.UserID, reg.AccessToken
		room, err := cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		for range 4 {
			if _, err := cli.SendText(ctx, room.RoomID, "hi"); err != nil {
				t.Fatal(err)
			}
		}
		after := sampler.Sample(ctx)
		fams, err := d.Server.Metrics().Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var counter float64
		for _, f := range fams {
			if f.GetName() == "hearth_events_persisted_total" {
				for _, m := range f.GetMetric() {
					counter += m.GetCounter().GetValue()
				}
			}
		}
		if after.Events != int64(counter) || after.Events-before.Events < 4+5 {
			t.Errorf("sampled events %d → %d, registry %v", before.Events, after.Events, counter)
		}
		if after.HeapAlloc == 0 || after.HeapSys == 0 || (runtime.GOOS == "linux" && after.RSS == 0) {
			t.Errorf("memory not sampled from the registry: %+v", after)
		}
	})
}
