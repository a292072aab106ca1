package web

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"hearth/server"
	"hearth/server/storage"
	"hearth/templates"
)

// dest builds a destination as the sender leaves it.
func dest(name string, mod func(*storage.DestinationStatus)) *storage.DestinationStatus {
	d := &storage.DestinationStatus{Destination: storage.Destination{Destination: name}}
	if mod != nil {
		mod(d)
	}
	return d
}

func TestHealth(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	ms := func(d time.Duration) int64 { return now.Add(d).UnixMilli() }
	for _, tc := range []struct {
		name       string
		d          *storage.DestinationStatus
		federating bool
		want       templates.Health
	}{
		{"never sent", dest("a", nil), true, templates.Health{Label: "no delivery yet"}},
		{"healthy", dest("a", func(d *storage.DestinationStatus) { d.LastSuccessTS = ms(-time.Minute) }), true,
			templates.Health{Label: "healthy", OK: true}},
		{"backing off", dest("a", func(d *storage.DestinationStatus) {
			d.FailureTS, d.RetryLastTS, d.RetryIntervalMS, d.LastError = ms(-2*time.Hour-5*time.Minute), ms(-2*time.Minute), 10*60_000, "connection refused"
		}), true, templates.Health{Label: "failing", Failing: true, Since: "for 2h 5m", Retry: "next retry in 8m", Error: "connection refused"}},
		{"back-off over", dest("a", func(d *storage.DestinationStatus) {
			d.FailureTS, d.RetryLastTS, d.RetryIntervalMS = ms(-time.Hour), ms(-time.Hour), 60_000
		}), true, templates.Health{Label: "failing", Failing: true, Since: "for 1h 0m", Retry: "retrying now"}},
		{"reset by an admin", dest("a", func(d *storage.DestinationStatus) { d.FailureTS = ms(-30 * time.Second) }), true,
			templates.Health{Label: "failing", Failing: true, Since: "for 30s", Retry: "retrying now"}},
		{"federation off", dest("a", func(d *storage.DestinationStatus) {
			d.FailureTS, d.RetryLastTS, d.RetryIntervalMS = ms(-time.Minute), ms(-time.Minute), 600_000
		}), false, templates.Health{Label: "failing", Failing: true, Since: "for 1m", Retry: "no retries: federation is off"}},
	} {
		if got := newHealth(tc.d, now, tc.federating); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestBehindText(t *testing.T) {
	behind := dest("a", func(d *storage.DestinationStatus) { d.RoomsBehind = 2 })
	for _, tc := range []struct {
		d      *storage.DestinationStatus
		events int
		want   string
	}{
		{dest("a", nil), -1, "up to date"},
		{behind, 12, "12 events in 2 rooms"},
		{dest("a", func(d *storage.DestinationStatus) { d.RoomsBehind = 1 }), 1, "1 event in 1 room"},
		{behind, eventsBehindCap, "1,000+ events in 2 rooms"},
		{behind, -1, "2 rooms waiting"},
	} {
		if got := behindText(tc.d, tc.events); got != tc.want {
			t.Errorf("%+v, %d events: %q, want %q", tc.d, tc.events, got, tc.want)
		}
	}
}

func TestFederationVM(t *testing.T) {
	now := time.Now()
	failing := dest("[::1]:8448", func(d *storage.DestinationStatus) {
		d.FailureTS, d.RetryLastTS, d.RetryIntervalMS, d.LastError = now.Add(-time.Hour).UnixMilli(), now.UnixMilli(), 60_000, strings.Repeat("e", 300)
		d.Rooms, d.RoomsBehind, d.LastSuccessfulPos, d.NewestQueued = 3, 2, 10, 40
	})
	healthy := dest("b.test", func(d *storage.DestinationStatus) { d.LastSuccessTS, d.Rooms = now.Add(-5*time.Minute).UnixMilli(), 1 })
	rows := []*storage.DestinationStatus{failing, healthy}
	q := parseFederationQuery(map[string][]string{"q": {" test "}, "sort": {"failure_ts"}, "page": {"2"}})
	c := chrome
	c.Active = "federation"
	vm := newFederationVM(c, q, federationInput{Rows: rows, EventsBehind: map[string]int{"[::1]:8448": 7}, Matching: 52,
		Total: 60, Failing: 4, Behind: 3, Federating: true}, now)
	if vm.Showing != "51–52 of 52 servers" || vm.NextURL != "" || vm.PrevURL != "/_hearth/admin/federation?q=test&sort=failure_ts" {
		t.Errorf("pager: %q %q %q", vm.Showing, vm.PrevURL, vm.NextURL)
	}
	if vm.Back != "/federation?page=2&q=test&sort=failure_ts" {
		t.Errorf("back: %q", vm.Back)
	}
	f, h := vm.Rows[0], vm.Rows[1]
	if f.DetailURL != "/_hearth/admin/federation/%5B::1%5D:8448" || !f.Health.Failing || !f.CanRetry || f.Behind != "7 events in 2 rooms" ||
		!f.IsBehind || f.LastDelivery != "never" || len([]rune(f.Health.Error)) != 120 {
		t.Errorf("failing row: %+v", f)
	}
	if !h.Health.OK || h.CanRetry || h.Behind != "up to date" || h.LastDelivery != "5 min ago" || h.Rooms != "1" {
		t.Errorf("healthy row: %+v", h)
	}
	if vm.Totals[0].Value != "60" || vm.Totals[1].Value != "4" || vm.Totals[2].Value != "3" {
		t.Errorf("totals: %+v", vm.Totals)
	}
	if len(vm.Headers) != 5 || !vm.Headers[1].Active || !strings.Contains(vm.Headers[1].URL, "dir=desc") || vm.Headers[2].URL != "" {
		t.Errorf("headers: %+v", vm.Headers)
	}
	if q := parseFederationQuery(map[string][]string{"sort": {"password"}}); q.Sort != "destination" {
		t.Errorf("unknown sort kept: %q", q.Sort)
	}
	if vm := newFederationVM(chrome, parseFederationQuery(nil), federationInput{}, now); !strings.HasPrefix(vm.Showing, "No servers yet") {
		t.Errorf("empty: %q", vm.Showing)
	}
	off := newFederationVM(chrome, parseFederationQuery(map[string][]string{"q": {"x"}}), federationInput{Total: 3}, now)
	if off.Showing != "No servers match" {
		t.Errorf("no match: %q", off.Showing)
	}
	if page := html(t, func(b *bytes.Buffer) error { return templates.Federation(off).Render(t.Context(), b) }); !strings.Contains(page, `id="federation-off"`) {
		t.Error("the page does not say federation is off")
	}

	page := html(t, func(b *bytes.Buffer) error { return templates.Federation(vm).Render(t.Context(), b) })
	for _, want := range []string{`<code>[::1]:8448</code>`, `class="badge bad"`, `action="/_hearth/admin/federation/%5B::1%5D:8448/retry"`,
		`name="csrf" value="tok"`, `name="back" value="/federation?page=2&amp;q=test&amp;sort=failure_ts"`, "7 events in 2 rooms",
		`class="badge ok"`, "up to date", `href="/_hearth/admin/federation" class="active"`, "next retry in"} {
		if !strings.Contains(page, want) {
			t.Errorf("federation page lacks %s", want)
		}
	}
	if strings.Contains(page, `id="federation-off"`) {
		t.Error("federation page says federation is off")
	}
	// One retry form: the healthy server has nothing to retry.
	if n := strings.Count(page, "/retry\""); n != 1 {
		t.Errorf("%d retry forms", n)
	}
}

func TestDestinationVM(t *testing.T) {
	now := time.Now()
	d := dest("r.test:8448", func(d *storage.DestinationStatus) {
		d.FailureTS, d.RetryLastTS, d.RetryIntervalMS, d.LastError = now.Add(-time.Hour).UnixMilli(), now.UnixMilli(), 20_000, "tls: bad certificate"
		d.LastSuccessTS, d.LastSuccessfulPos, d.NewestQueued, d.Rooms, d.RoomsBehind = now.Add(-2*time.Hour).UnixMilli(), 1234, 1300, 51, 1
	})
	rooms := []server.DestinationRoomView{
		{DestinationRoom: storage.DestinationRoom{RoomID: "!a:hs", StreamPos: 1300}, Known: true, Name: "Porch", Members: 2},
		{DestinationRoom: storage.DestinationRoom{RoomID: "!gone:hs", StreamPos: 900}},
	}
	vm := newDestinationVM(chrome, destinationInput{Dest: d, EventsBehind: 4, Rooms: rooms, From: 50, Total: 52, Federating: true}, now)
	facts := map[string]string{}
	for _, f := range vm.Facts {
		facts[f.Label] = f.Value
	}
	if facts["Behind"] != "4 events in 1 room" || facts["Delivered up to"] != "stream position 1,234" || facts["Newest queued"] != "stream position 1,300" ||
		facts["Back-off"] != "20s" || facts["Rooms shared"] != "51" || !strings.HasPrefix(facts["Last delivery"], "2 h ago (") || facts["Failing since"] == "" {
		t.Errorf("facts: %v", facts)
	}
	if !vm.CanRetry || vm.Back != "/federation/r.test:8448" || vm.BaseURL != "/_hearth/admin/federation/r.test:8448" {
		t.Errorf("retry: %v %q %q", vm.CanRetry, vm.Back, vm.BaseURL)
	}
	a, gone := vm.Rooms[0], vm.Rooms[1]
	if !a.Waiting || a.Members != "2 joined" || a.URL != "/_hearth/admin/rooms/%21a:hs" || a.Queued != "#1,300" {
		t.Errorf("room a: %+v", a)
	}
	if gone.Waiting || gone.URL != "" || gone.Members != "none joined now" {
		t.Errorf("gone room: %+v", gone)
	}
	if vm.Showing != "51–52 of 52 rooms" || vm.PrevURL != "/_hearth/admin/federation/r.test:8448" || vm.NextURL != "" {
		t.Errorf("pager: %q %q %q", vm.Showing, vm.PrevURL, vm.NextURL)
	}

	page := html(t, func(b *bytes.Buffer) error { return templates.Destination(vm).Render(t.Context(), b) })
	for _, want := range []string{`<code>r.test:8448</code>`, "tls: bad certificate", `id="retry"`, `name="back" value="/federation/r.test:8448"`,
		"Porch", "no longer on this server", `<span class="badge bad">waiting</span>`, `<span class="badge ok">delivered</span>`, "next retry in"} {
		if !strings.Contains(page, want) {
			t.Errorf("destination page lacks %s", want)
		}
	}

	// Healthy and up to date: no retry, nothing waiting.
	d.FailureTS, d.RetryLastTS, d.RetryIntervalMS, d.LastError, d.RoomsBehind, d.LastSuccessfulPos = 0, 0, 0, "", 0, 1300
	vm = newDestinationVM(chrome, destinationInput{Dest: d, EventsBehind: -1, Rooms: rooms[:1], Total: 1, Federating: true}, now)
	page = html(t, func(b *bytes.Buffer) error { return templates.Destination(vm).Render(t.Context(), b) })
	if vm.CanRetry || vm.Rooms[0].Waiting || strings.Contains(page, `id="retry"`) || !strings.Contains(page, ">healthy<") || vm.Showing != "1–1 of 1 rooms" {
		t.Errorf("healthy destination: %+v", vm)
	}
}
