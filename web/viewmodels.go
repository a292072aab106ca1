package web

import (
	"fmt"
	"math"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"time"

	"hearth/server"
	"hearth/server/cache"
	"hearth/server/storage"
	"hearth/templates"
)

// View-model constructors: plain functions from domain values to what the
// templates show, so they can be tested without HTTP or a database.

// overviewInput is what the overview handler gathers. A nil count means the
// thing is not counted yet (its storage does not exist); it is shown as not
// available, never as zero.
type overviewInput struct {
	Version, Engine  string
	Uptime           time.Duration
	Users            int64
	Rooms, Events    *int64
	Media            *int64
	EventsPerSecond  *float64
	Mem              runtime.MemStats
	RSS              uint64 // 0: unknown
	MemoryLimit      int64  // 0: none
	Goroutines       int
	DatabaseSize     *int64
	DatabaseSizeNote string
}

func newOverviewVM(c templates.Chrome, in overviewInput) templates.OverviewVM {
	vm := templates.OverviewVM{Chrome: c, Version: in.Version, Uptime: humanDuration(in.Uptime), Engine: engineName(in.Engine)}
	vm.Counts = []templates.Stat{
		{Label: "Users", Value: thousands(in.Users), Available: true, Note: "active accounts"},
		countStat("Rooms", in.Rooms, ""),
		countStat("Events", in.Events, ""),
		countStat("Media", in.Media, "media storage is not built yet"),
	}
	eps := templates.Stat{Label: "Events per second", Note: "measuring: needs two samples a few seconds apart"}
	if in.EventsPerSecond != nil {
		eps = templates.Stat{Label: "Events per second", Value: strconv.FormatFloat(*in.EventsPerSecond, 'f', 2, 64), Available: true, Note: "over the last minutes"}
	}
	vm.Activity = []templates.Stat{eps}
	vm.BackupNote = "A consistent snapshot of the database, the media store, the signing key and the config in one .tar.gz, " +
		"taken while the server runs: the same archive as hearth backup. Restore it with hearth restore."
	if in.Engine == "postgres" {
		vm.BackupNote = "The media store, the signing key and the config in one .tar.gz (the same archive as hearth backup). " +
			"The PostgreSQL database is not in it: its note inside gives the pg_dump command."
	}
	vm.Memory = memoryStats(in.Mem, in.RSS, in.MemoryLimit)
	db := templates.Stat{Label: "Database size", Note: in.DatabaseSizeNote}
	if in.DatabaseSize != nil {
		db.Value, db.Available = humanBytes(uint64(*in.DatabaseSize)), true
	}
	vm.Runtime = []templates.Stat{
		{Label: "Goroutines", Value: thousands(int64(in.Goroutines)), Available: true},
		db,
	}
	return vm
}

func countStat(label string, n *int64, missing string) templates.Stat {
	if n == nil {
		return templates.Stat{Label: label, Note: missing}
	}
	return templates.Stat{Label: label, Value: thousands(*n), Available: true}
}

// memoryStats are the memory numbers on the overview and the caches page.
func memoryStats(ms runtime.MemStats, rss uint64, limit int64) []templates.Stat {
	rssStat := templates.Stat{Label: "Resident memory (RSS)", Note: "/proc/self/status is not readable here"}
	if rss > 0 {
		rssStat = templates.Stat{Label: "Resident memory (RSS)", Value: humanBytes(rss), Available: true}
	}
	lastPause := time.Duration(ms.PauseNs[(ms.NumGC+255)%256])
	limitText := "none"
	if limit > 0 {
		limitText = humanBytes(uint64(limit))
	}
	return []templates.Stat{
		rssStat,
		{Label: "Go heap in use", Value: humanBytes(ms.HeapAlloc), Available: true, Note: humanBytes(ms.HeapSys) + " obtained from the OS"},
		{Label: "GC cycles", Value: thousands(int64(ms.NumGC)), Available: true, Note: "last pause " + lastPause.Round(time.Microsecond).String()},
		{Label: "GC pause total", Value: time.Duration(ms.PauseTotalNs).Round(time.Microsecond).String(), Available: true},
		{Label: "Memory limit", Value: limitText, Available: true},
	}
}

func engineName(e string) string {
	switch e {
	case "sqlite":
		return "SQLite"
	case "postgres":
		return "PostgreSQL"
	}
	return e
}

// userSorts are the user list's sortable columns: label and order_by.
var userSorts = []struct{ Label, Key string }{
	{"User", "name"}, {"Display name", "displayname"}, {"Created", "creation_ts"}, {"Admin", "admin"},
}

// usersQuery is the user list's state, as carried in its URL.
type usersQuery struct {
	Q           string
	Deactivated bool
	Sort        string
	Desc        bool
	Page        int // from 1
}

const usersPerPage = 50

func parseUsersQuery(v url.Values) usersQuery {
	q := usersQuery{Q: strings.TrimSpace(v.Get("q")), Deactivated: v.Get("deactivated") == "1", Sort: "name", Desc: v.Get("dir") == "desc", Page: 1}
	for _, s := range userSorts {
		if v.Get("sort") == s.Key {
			q.Sort = s.Key
		}
	}
	if p, err := strconv.Atoi(v.Get("page")); err == nil && p > 1 && p < 1_000_000 {
		q.Page = p
	}
	return q
}

func (q usersQuery) filter() storage.UserFilter {
	return storage.UserFilter{Name: q.Q, Guests: true, Deactivated: q.Deactivated, OrderBy: q.Sort, Desc: q.Desc,
		From: (q.Page - 1) * usersPerPage, Limit: usersPerPage}
}

// url is the list's address with q changed by edit.
func (q usersQuery) url(prefix string, edit func(*usersQuery)) string {
	if edit != nil {
		edit(&q)
	}
	v := url.Values{}
	if q.Q != "" {
		v.Set("q", q.Q)
	}
	if q.Deactivated {
		v.Set("deactivated", "1")
	}
	if q.Sort != "name" {
		v.Set("sort", q.Sort)
	}
	if q.Desc {
		v.Set("dir", "desc")
	}
	if q.Page > 1 {
		v.Set("page", strconv.Itoa(q.Page))
	}
	if len(v) == 0 {
		return prefix + "/users"
	}
	return prefix + "/users?" + v.Encode()
}

func newUsersVM(c templates.Chrome, q usersQuery, rows []server.UserRow, total int, now time.Time) templates.UsersVM {
	vm := templates.UsersVM{Chrome: c, Query: q.Q, ShowDeactivated: q.Deactivated, Total: total}
	for _, s := range userSorts {
		active := q.Sort == s.Key
		vm.Sort = append(vm.Sort, templates.SortLink{Label: s.Label, Active: active, Desc: active && q.Desc,
			URL: q.url(c.Prefix, func(n *usersQuery) { n.Sort, n.Desc, n.Page = s.Key, active && !q.Desc, 1 })})
	}
	for _, u := range rows {
		vm.Rows = append(vm.Rows, templates.UserRowVM{UserID: u.UserID, DisplayName: u.DisplayName,
			Created: humanTime(u.CreatedTS, now), LastSeen: humanTimeOr(u.LastSeenTS, now, "never"),
			DetailURL: userURL(c.Prefix, u.UserID), Admin: u.IsAdmin, Deactivated: u.Deactivated, Guest: u.IsGuest, Locked: u.Locked})
	}
	from := (q.Page - 1) * usersPerPage
	switch {
	case total == 0:
		vm.Showing = "No users"
	case len(rows) == 0:
		vm.Showing = fmt.Sprintf("Nothing on page %d of %s users", q.Page, thousands(int64(total)))
	default:
		vm.Showing = fmt.Sprintf("%s–%s of %s users", thousands(int64(from+1)), thousands(int64(from+len(rows))), thousands(int64(total)))
	}
	if q.Page > 1 {
		vm.PrevURL = q.url(c.Prefix, func(n *usersQuery) { n.Page-- })
	}
	if from+len(rows) < total {
		vm.NextURL = q.url(c.Prefix, func(n *usersQuery) { n.Page++ })
	}
	return vm
}

// userURL is a user's dashboard page; the ID is escaped as one path segment.
func userURL(prefix, userID string) string {
	return prefix + "/users/" + url.PathEscape(userID)
}

func newUserVM(c templates.Chrome, u *server.UserRow, devs []*storage.Device, rooms []storage.RoomMembership, now time.Time) templates.UserVM {
	vm := templates.UserVM{Chrome: c, UserID: u.UserID, DisplayName: u.DisplayName, Created: humanTime(u.CreatedTS, now),
		LastSeen: humanTimeOr(u.LastSeenTS, now, "never"), UserType: u.UserType, Admin: u.IsAdmin, Deactivated: u.Deactivated,
		Erased: u.Erased, Locked: u.Locked, Guest: u.IsGuest, Self: u.UserID == c.Admin, BaseURL: userURL(c.Prefix, u.UserID)}
	if vm.DisplayName == "" {
		vm.DisplayName = "—"
	}
	for _, d := range devs {
		vm.Devices = append(vm.Devices, templates.DeviceVM{DeviceID: d.DeviceID, DisplayName: d.DisplayName,
			LastSeen: humanTimeOr(d.LastSeenTS, now, "never"), LastSeenIP: d.LastSeenIP, UserAgent: d.LastSeenUserAgent})
	}
	for _, r := range rooms {
		vm.Rooms = append(vm.Rooms, templates.RoomVM{RoomID: r.RoomID, Membership: r.Membership, URL: roomURL(c.Prefix, r.RoomID)})
	}
	return vm
}

func newRegTokenVMs(toks []*storage.RegistrationToken, now time.Time) []templates.RegTokenVM {
	out := make([]templates.RegTokenVM, 0, len(toks))
	for _, t := range toks {
		uses := fmt.Sprintf("%d used", t.Completed)
		if t.Pending > 0 {
			uses += fmt.Sprintf(", %d pending", t.Pending)
		}
		if t.UsesAllowed != nil {
			uses += fmt.Sprintf(" of %d", *t.UsesAllowed)
		} else {
			uses += ", unlimited"
		}
		exp := "never"
		if t.ExpiryTime != nil {
			exp = time.UnixMilli(*t.ExpiryTime).UTC().Format("2006-01-02 15:04 UTC")
		}
		out = append(out, templates.RegTokenVM{Token: t.Token, Uses: uses, Expires: exp, Valid: t.Valid(now.UnixMilli())})
	}
	return out
}

func newCacheRows(stats []cache.Stats) []templates.CacheRowVM {
	out := make([]templates.CacheRowVM, 0, len(stats))
	for _, s := range stats {
		hr := "—"
		if s.Hits+s.Misses > 0 {
			hr = strconv.FormatFloat(s.HitRate()*100, 'f', 1, 64) + "%"
		}
		fill := 0
		if s.Capacity > 0 {
			fill = min(100, s.Size*100/s.Capacity)
		}
		out = append(out, templates.CacheRowVM{Name: s.Name, Description: s.Description, Size: thousands(int64(s.Size)),
			Capacity: thousands(int64(s.Capacity)), BaseSize: thousands(int64(s.BaseSize)), Evictions: thousands(int64(s.Evictions)),
			HitRate: hr, Factor: formatFactor(s.Factor), FillPercent: fill, Bytes: humanBytes(uint64(max(0, s.Bytes)))})
	}
	return out
}

// cacheBytes is the caches' approximate bytes together.
func cacheBytes(stats []cache.Stats) string {
	var n int64
	for _, s := range stats {
		n += s.Bytes
	}
	return humanBytes(uint64(max(0, n)))
}

func newBufferRows(bufs []cache.Buffer) []templates.BufferRowVM {
	out := make([]templates.BufferRowVM, 0, len(bufs))
	for _, b := range bufs {
		bytes := "—"
		if b.Bytes >= 0 {
			bytes = humanBytes(uint64(b.Bytes))
		}
		out = append(out, templates.BufferRowVM{Name: b.Name, Description: b.Description, Entries: thousands(int64(b.Entries)), Bytes: bytes})
	}
	return out
}

// runtimeStats are the caches page's figures beyond memoryStats: where the
// Go runtime's memory goes, and where the memory limit comes from.
func runtimeStats(ms runtime.MemStats, limit, envLimit, configLimit int64) []templates.Stat {
	source := "none set"
	switch {
	case cache.AutoLimit():
		source = fmt.Sprintf("automatic (at least %d MiB; follows what is live)", cache.DefaultMemoryLimit>>20)
	case limit > 0 && configLimit > 0 && limit == configLimit:
		source = "from memory.limit"
	case limit > 0 && envLimit > 0 && limit == envLimit:
		source = "from GOMEMLIMIT"
	case limit > 0:
		source = "set on this page"
	}
	return []templates.Stat{
		{Label: "Memory limit source", Value: source, Available: true, Note: "memory.limit wins over GOMEMLIMIT; 0 leaves GOMEMLIMIT, or without it the automatic limit, in force"},
		{Label: "Next collection at", Value: humanBytes(ms.NextGC), Available: true,
			Note: fmt.Sprintf("heap goal; GC percentage in force %d: the GC target, raised while little is live so the goal stays at least %d MiB", cache.EffectiveGCPercent(), cache.HeapGoalFloor>>20)},
		{Label: "Go runtime total", Value: humanBytes(ms.Sys), Available: true, Note: "heap, stacks and runtime metadata obtained from the OS"},
		{Label: "Goroutine stacks", Value: humanBytes(ms.StackSys), Available: true},
		{Label: "Heap released to the OS", Value: humanBytes(ms.HeapReleased), Available: true},
	}
}

func newPresetVMs() []templates.PresetVM {
	presets := cache.Presets()
	out := make([]templates.PresetVM, 0, len(presets))
	for _, p := range presets {
		out = append(out, templates.PresetVM{ID: p.ID, Name: p.Name, Description: p.Description})
	}
	return out
}

// Chart geometry, in SVG units.
const (
	chartW, chartH         = 600, 180
	chartLeft, chartBottom = 40, 20
	chartTop, chartRight   = 10, 5
)

// newMemoryChart draws RSS and heap over the window ending at now. Until
// the samples cover the whole window, the chart spans what they cover
// (at least two minutes), so a freshly started server has a readable chart.
func newMemoryChart(samples []Sample, now time.Time, window time.Duration) templates.ChartVM {
	c := templates.ChartVM{Width: chartW, Height: chartH}
	for _, s := range samples {
		if span := now.Sub(s.At); span <= window && !s.At.After(now) {
			window = max(2*time.Minute, ((span+time.Minute-1)/time.Minute)*time.Minute)
			break
		}
	}
	start := now.Add(-window)
	var in []Sample
	var peak uint64
	for _, s := range samples {
		if s.At.Before(start) || s.At.After(now) {
			continue
		}
		in = append(in, s)
		peak = max(peak, s.RSS, s.HeapAlloc)
	}
	if len(in) < 2 || peak == 0 {
		c.Empty = "The chart fills in as samples are taken (one every 30 seconds)."
		return c
	}
	top := niceCeil(peak)
	plotW := float64(chartW - chartLeft - chartRight)
	plotH := float64(chartH - chartBottom - chartTop)
	x := func(t time.Time) float64 { return chartLeft + plotW*t.Sub(start).Seconds()/window.Seconds() }
	y := func(v uint64) float64 { return chartTop + plotH*(1-float64(v)/float64(top)) }
	line := func(name, class string, val func(Sample) uint64) templates.ChartLine {
		var b strings.Builder
		for i, s := range in {
			if i > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%.1f,%.1f", x(s.At), y(val(s)))
		}
		return templates.ChartLine{Name: name, Class: class, Points: b.String(), Latest: humanBytes(val(in[len(in)-1]))}
	}
	if in[len(in)-1].RSS > 0 {
		c.Lines = append(c.Lines, line("RSS", "rss", func(s Sample) uint64 { return s.RSS }))
	}
	c.Lines = append(c.Lines, line("Go heap", "heap", func(s Sample) uint64 { return s.HeapAlloc }))
	for i := 0; i <= 2; i++ {
		v := top / 2 * uint64(i)
		c.YLabels = append(c.YLabels, templates.ChartLabel{X: chartLeft - 4, Y: int(math.Round(y(v))) + 4, Text: shortBytes(v)})
	}
	for _, back := range []time.Duration{window, window / 2, 0} {
		t := now.Add(-back)
		text := "now"
		if back > 0 {
			text = "−" + strconv.FormatFloat(back.Minutes(), 'f', -1, 64) + " min"
		}
		c.XLabels = append(c.XLabels, templates.ChartLabel{X: int(math.Round(x(t))), Y: chartH - 4, Text: text})
	}
	c.XLabels[0].X += 18 // keep the first label off the axis
	c.XLabels[2].X -= 10
	return c
}

// niceCeil rounds up to 1, 2 or 5 × a power of two's worth of MiB, so axis
// labels are round.
func niceCeil(v uint64) uint64 {
	step := uint64(1 << 20)
	for {
		for _, m := range []uint64{1, 2, 5} {
			if v <= step*m {
				return step * m
			}
		}
		step *= 10
	}
}

func newAuditVM(c templates.Chrome, rows []storage.AuditEntry, from, total, perPage int) templates.AuditVM {
	vm := templates.AuditVM{Chrome: c}
	for _, e := range rows {
		vm.Rows = append(vm.Rows, templates.AuditRowVM{When: time.UnixMilli(e.TS).UTC().Format("2006-01-02 15:04:05 UTC"),
			Actor: e.Actor, Action: e.Action, Target: e.Target, Detail: e.Detail, IP: e.IP})
	}
	if total == 0 {
		vm.Showing = "No entries"
	} else if len(rows) > 0 {
		vm.Showing = fmt.Sprintf("%s–%s of %s entries, newest first", thousands(int64(from+1)), thousands(int64(from+len(rows))), thousands(int64(total)))
	}
	if from > 0 {
		vm.PrevURL = fmt.Sprintf("%s/audit?from=%d", c.Prefix, max(0, from-perPage))
	}
	if from+len(rows) < total {
		vm.NextURL = fmt.Sprintf("%s/audit?from=%d", c.Prefix, from+len(rows))
	}
	return vm
}

// Formatting helpers.

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// shortBytes is humanBytes without decimals, for axis labels.
func shortBytes(n uint64) string {
	switch {
	case n == 0:
		return "0"
	case n >= 1<<30:
		return fmt.Sprintf("%gG", math.Round(float64(n)/(1<<30)*10)/10)
	default:
		return fmt.Sprintf("%dM", n>>20)
	}
}

// configSize writes bytes as the config file takes them: 400M, 1G, 0.
func configSize(n int64) string {
	switch {
	case n <= 0:
		return "0"
	case n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "G"
	case n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "M"
	case n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "K"
	}
	return strconv.FormatInt(n, 10)
}

func formatFactor(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func humanDuration(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%ds", int(d.Seconds()))
	}
	days := int(d / (24 * time.Hour))
	h := int(d/time.Hour) % 24
	m := int(d/time.Minute) % 60
	switch {
	case days > 0:
		return fmt.Sprintf("%dd %dh %dm", days, h, m)
	case h > 0:
		return fmt.Sprintf("%dh %dm", h, m)
	}
	return fmt.Sprintf("%dm", m)
}

// humanTime is a millisecond timestamp as a date, with "ago" when recent.
func humanTime(ms int64, now time.Time) string {
	t := time.UnixMilli(ms)
	ago := now.Sub(t)
	switch {
	case ago < 0:
		return t.UTC().Format("2006-01-02 15:04 UTC")
	case ago < time.Minute:
		return "just now"
	case ago < time.Hour:
		return fmt.Sprintf("%d min ago", int(ago.Minutes()))
	case ago < 24*time.Hour:
		return fmt.Sprintf("%d h ago", int(ago.Hours()))
	}
	return t.UTC().Format("2006-01-02")
}

func humanTimeOr(ms int64, now time.Time, zero string) string {
	if ms <= 0 {
		return zero
	}
	return humanTime(ms, now)
}
