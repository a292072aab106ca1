package web

import (
	"bytes"
	"context"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"hearth/server"
	"hearth/server/cache"
	"hearth/server/metrics"
	"hearth/server/storage"
	"hearth/templates"
)

var chrome = templates.Chrome{Title: "T", Prefix: "/_hearth/admin", ServerName: "hearth.test", Admin: "@root:hearth.test", CSRF: "tok", Version: "1.2.3"}

func html(t *testing.T, render func(*bytes.Buffer) error) string {
	t.Helper()
	var b bytes.Buffer
	if err := render(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestOverviewVMNeverFakesCounts(t *testing.T) {
	rooms := int64(3)
	in := overviewInput{Version: "1.2.3", Engine: "sqlite", Uptime: 26*time.Hour + 5*time.Minute, Users: 1234, Rooms: &rooms,
		Goroutines: 17, RSS: 50 << 20}
	vm := newOverviewVM(chrome, in)
	if vm.Uptime != "1d 2h 5m" || vm.Engine != "SQLite" {
		t.Fatalf("facts: %q %q", vm.Uptime, vm.Engine)
	}
	byLabel := map[string]templates.Stat{}
	for _, s := range append(append(append(vm.Counts, vm.Activity...), vm.Memory...), vm.Runtime...) {
		byLabel[s.Label] = s
	}
	if s := byLabel["Users"]; !s.Available || s.Value != "1,234" {
		t.Errorf("users: %+v", s)
	}
	if s := byLabel["Rooms"]; !s.Available || s.Value != "3" {
		t.Errorf("rooms: %+v", s)
	}
	for _, l := range []string{"Events", "Media", "Events per second", "Database size"} {
		if s := byLabel[l]; s.Available || s.Value != "" {
			t.Errorf("%s has no data but shows %+v", l, s)
		}
	}
	if s := byLabel["Resident memory (RSS)"]; s.Value != "50.0 MiB" {
		t.Errorf("rss: %+v", s)
	}
	page := html(t, func(b *bytes.Buffer) error { return templates.Overview(vm).Render(context.Background(), b) })
	for _, want := range []string{"Overview", "Hearth 1.2.3", "1,234", "not available yet", "media storage is not built yet", "hearth.test",
		`name="csrf" value="tok"`, "/_hearth/admin/static/dashboard.css"} {
		if !strings.Contains(page, want) {
			t.Errorf("overview page lacks %q", want)
		}
	}
}

func TestUsersVMSortAndPages(t *testing.T) {
	q := parseUsersQuery(url.Values{"q": {"ali"}, "sort": {"creation_ts"}, "page": {"2"}, "deactivated": {"1"}})
	if q.Sort != "creation_ts" || q.Page != 2 || !q.Deactivated || q.Desc {
		t.Fatalf("query: %+v", q)
	}
	if f := q.filter(); f.From != 50 || f.Limit != 50 || f.OrderBy != "creation_ts" || !f.Deactivated {
		t.Fatalf("filter: %+v", f)
	}
	if bad := parseUsersQuery(url.Values{"sort": {"password_hash"}, "page": {"-3"}}); bad.Sort != "name" || bad.Page != 1 {
		t.Fatalf("unsafe input kept: %+v", bad)
	}
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	rows := []server.UserRow{{User: storage.User{UserID: "@alice:hearth.test", DisplayName: "Alice", IsAdmin: true, CreatedTS: now.Add(-48 * time.Hour).UnixMilli()},
		LastSeenTS: now.Add(-5 * time.Minute).UnixMilli()}}
	vm := newUsersVM(chrome, q, rows, 120, now)
	if vm.Showing != "51–51 of 120 users" {
		t.Errorf("showing %q", vm.Showing)
	}
	if vm.PrevURL != "/_hearth/admin/users?deactivated=1&q=ali&sort=creation_ts" {
		t.Errorf("prev %q", vm.PrevURL)
	}
	if !strings.Contains(vm.NextURL, "page=3") {
		t.Errorf("next %q", vm.NextURL)
	}
	var created templates.SortLink
	for _, s := range vm.Sort {
		if s.Label == "Created" {
			created = s
		}
	}
	if !created.Active || created.Desc || !strings.Contains(created.URL, "dir=desc") {
		t.Errorf("clicking the active column should reverse it: %+v", created)
	}
	r := vm.Rows[0]
	if r.DetailURL != "/_hearth/admin/users/@alice:hearth.test" || r.LastSeen != "5 min ago" || r.Created != "2026-11-26" || !r.Admin {
		t.Errorf("row: %+v", r)
	}
	page := html(t, func(b *bytes.Buffer) error { return templates.Users(vm).Render(context.Background(), b) })
	for _, want := range []string{"@alice:hearth.test", "Alice", "admin", "Create a user", "51–51 of 120 users", `rel="next"`} {
		if !strings.Contains(page, want) {
			t.Errorf("users page lacks %q", want)
		}
	}
	if !strings.Contains(userURL("/p", "@a/b:x"), "%2F") {
		t.Error("a slash in a user ID must stay inside one path segment")
	}
}

func TestCacheRowsAndChart(t *testing.T) {
	rows := newCacheRows([]cache.Stats{{Name: "users", Size: 50, Capacity: 200, BaseSize: 400, Factor: 0.5, Hits: 3, Misses: 1, Evictions: 1234}})
	r := rows[0]
	if r.HitRate != "75.0%" || r.FillPercent != 25 || r.Evictions != "1,234" || r.Factor != "0.5" || r.Capacity != "200" {
		t.Fatalf("row: %+v", r)
	}
	if newCacheRows([]cache.Stats{{Name: "x", Capacity: 1}})[0].HitRate != "—" {
		t.Fatal("hit rate before any lookup should be a dash")
	}
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	if c := newMemoryChart(nil, now, time.Hour); c.Empty == "" {
		t.Fatal("empty chart should say why")
	}
	var samples []Sample
	for i := range 10 {
		samples = append(samples, Sample{At: now.Add(time.Duration(i-9) * time.Minute), RSS: uint64(40+i) << 20, HeapAlloc: uint64(10+i) << 20})
	}
	c := newMemoryChart(samples, now, time.Hour)
	if c.Empty != "" || len(c.Lines) != 2 || c.Lines[0].Latest != "49.0 MiB" {
		t.Fatalf("chart: %+v", c)
	}
	if n := len(strings.Fields(c.Lines[0].Points)); n != 10 {
		t.Fatalf("%d points, want 10", n)
	}
	if c.XLabels[0].Text != "−9 min" || c.XLabels[2].Text != "now" {
		t.Fatalf("a 9-minute history spans 9 minutes: %+v", c.XLabels)
	}
	vm := templates.CachesVM{Chrome: chrome, GlobalFactor: "0.5", Caches: rows, MemoryLimit: "400M", GCPercent: "50", Presets: newPresetVMs(), Chart: c}
	page := html(t, func(b *bytes.Buffer) error { return templates.Caches(vm).Render(context.Background(), b) })
	for _, want := range []string{"<svg", "<polyline", "Raspberry Pi 1 GB", `id="cache-users"`, "75.0%", `value="400M"`, "RSS: 49.0 MiB"} {
		if !strings.Contains(page, want) {
			t.Errorf("caches page lacks %q", want)
		}
	}
	if strings.Contains(page, "style=") {
		t.Error("inline style attributes are blocked by the CSP")
	}
}

func TestFormatting(t *testing.T) {
	for in, want := range map[int64]string{0: "0", 400 << 20: "400M", 1 << 30: "1G", 2048: "2K", 1536: "1536"} {
		if got := configSize(in); got != want {
			t.Errorf("configSize(%d) = %q, want %q", in, got, want)
		}
	}
	if thousands(-1234567) != "-1,234,567" || thousands(999) != "999" {
		t.Error("thousands")
	}
	if humanBytes(1023) != "1023 B" || humanBytes(3<<30) != "3.0 GiB" {
		t.Error("humanBytes")
	}
	if _, _, err := runtimeSettings("1M", "100"); err == nil || !strings.Contains(err.Error(), "memory.limit") {
		t.Errorf("tiny limit: %v", err)
	}
	if _, _, err := runtimeSettings("0", "-1"); err == nil || !strings.Contains(err.Error(), "memory.gc_percent") {
		t.Errorf("gc off without limit: %v", err)
	}
	if l, g, err := runtimeSettings("400M", "50"); err != nil || l != 400<<20 || g != 50 {
		t.Errorf("good settings: %d %d %v", l, g, err)
	}
}

func TestEventsPerSecond(t *testing.T) {
	t0 := time.Unix(1000, 0)
	if _, ok := EventsPerSecond([]Sample{{At: t0, Events: 5}}, time.Minute); ok {
		t.Fatal("one sample gives no rate")
	}
	s := []Sample{{At: t0, Events: 100}, {At: t0.Add(30 * time.Second), Events: 130}, {At: t0.Add(60 * time.Second), Events: 220}}
	if r, ok := EventsPerSecond(s, 2*time.Minute); !ok || r != 2 {
		t.Fatalf("rate %v %v, want 2", r, ok)
	}
	if r, ok := EventsPerSecond(s, 45*time.Second); !ok || r != 3 {
		t.Fatalf("windowed rate %v %v, want 3", r, ok)
	}
}

func TestSamplerRing(t *testing.T) {
	s := NewSampler(time.Second, 3, metrics.New().Registry)
	for range 5 {
		s.Sample(context.Background())
	}
	got := s.Samples()
	if len(got) != 3 || got[0].At.After(got[2].At) {
		t.Fatalf("ring: %d samples", len(got))
	}
	if runtime.GOOS == "linux" && got[2].RSS == 0 {
		t.Error("RSS not read from /proc/self/status")
	}
}

func TestConfirmAndErrorPages(t *testing.T) {
	vm := templates.ConfirmVM{Chrome: chrome, Heading: "Deactivate @bob:hearth.test?", Message: "Sure?", Action: "/_hearth/admin/users/@bob:hearth.test/deactivate",
		Fields: []templates.Field{{Name: "erase", Value: "1"}}, Button: "Deactivate", Cancel: "/_hearth/admin/users"}
	page := html(t, func(b *bytes.Buffer) error { return templates.Confirm(vm).Render(context.Background(), b) })
	for _, want := range []string{`name="confirmed" value="yes"`, `name="erase" value="1"`, `name="csrf" value="tok"`, "Deactivate @bob:hearth.test?"} {
		if !strings.Contains(page, want) {
			t.Errorf("confirm page lacks %q", want)
		}
	}
	ev := templates.ErrorVM{Chrome: chrome, Status: 403, Heading: "Forbidden", Message: "<script>x</script>"}
	page = html(t, func(b *bytes.Buffer) error { return templates.ErrorPage(ev).Render(context.Background(), b) })
	if strings.Contains(page, "<script>x") || !strings.Contains(page, "&lt;script&gt;") {
		t.Error("messages must be escaped")
	}
}

func TestUserVM(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	u := &server.UserRow{User: storage.User{UserID: "@root:hearth.test", IsAdmin: true, CreatedTS: now.Add(-time.Hour).UnixMilli()}}
	devs := []*storage.Device{{DeviceID: "PHONE", DisplayName: "Element", LastSeenTS: now.Add(-2 * time.Minute).UnixMilli(), LastSeenIP: "192.0.2.7"}}
	rooms := []storage.RoomMembership{{RoomID: "!abc:hearth.test", Membership: "join"}}
	vm := newUserVM(chrome, u, devs, rooms, now)
	if !vm.Self || vm.DisplayName != "—" || vm.Created != "1 h ago" || vm.LastSeen != "never" || vm.BaseURL != "/_hearth/admin/users/@root:hearth.test" {
		t.Fatalf("vm: %+v", vm)
	}
	page := html(t, func(b *bytes.Buffer) error { return templates.User(vm).Render(context.Background(), b) })
	for _, want := range []string{"PHONE", "192.0.2.7", "2 min ago", "!abc:hearth.test", "You cannot remove your own admin rights"} {
		if !strings.Contains(page, want) {
			t.Errorf("user page lacks %q", want)
		}
	}
	if strings.Contains(page, "Deactivate user") {
		t.Error("an admin is offered to deactivate themselves")
	}
}
