package appliance

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"hearth/config"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// scrape fetches url as Prometheus does and parses it with the Prometheus
// text parser; anything it cannot parse fails the test.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET %s: Content-Type %q", url, ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: not valid Prometheus text: %v", url, err)
	}
	return fams
}

// sample finds the metric of family name whose labels include want.
func sample(fams map[string]*dto.MetricFamily, name string, want map[string]string) (*dto.Metric, bool) {
	f := fams[name]
	if f == nil {
		return nil, false
	}
next:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		return m, true
	}
	return nil, false
}

func counter(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	m, ok := sample(fams, name, labels)
	if !ok {
		t.Fatalf("%s%v missing", name, labels)
	}
	return m.GetCounter().GetValue()
}

// TestMetricsListener runs the appliance with enable_metrics, a listener of
// type metrics and the metrics resource on the client listener, uses the
// server through a Matrix client, and checks the families a scrape returns
// and that they moved with what the client did.
func TestMetricsListener(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		ctx := context.Background()
		cfg := servertest.Config(t, t.TempDir())
		if e.Name == "postgres" {
			cfg.Database = config.Database{Name: "psycopg2", Args: config.DatabaseArgs{DSN: e.Options.Postgres}}
		} else {
			cfg.Database.Args.Database = e.Options.SQLitePath
		}
		cfg.EnableMetrics = true
		port := freePort(t)
		cfg.Listeners[0].Resources = []config.Resource{{Names: []string{"client", "federation", "metrics"}}}
		cfg.Listeners = append(cfg.Listeners, config.Listener{Port: port, BindAddresses: []string{"127.0.0.1"}, Type: "metrics"})
		a := startApp(t, cfg, "127.0.0.1:0")
		metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)

		cli, err := mautrix.NewClient("http://"+a.addr, "", "")
		if err != nil {
			t.Fatal(err)
		}
		reg, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "metric", Password: "a long password for metrics"})
		if err != nil {
			t.Fatal(err)
		}
		cli.UserID, cli.AccessToken = reg.UserID, reg.AccessToken
		before := scrape(t, metricsURL)
		room, err := cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		const sent = 3
		for i := range sent {
			if _, err := cli.SendMessageEvent(ctx, room.RoomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": fmt.Sprint(i)}); err != nil {
				t.Fatal(err)
			}
		}
		first, err := cli.FullSyncRequest(ctx, mautrix.ReqSync{})
		if err != nil {
			t.Fatal(err)
		}
		// Park a /sync long poll and watch the gauge count it.
		parked := make(chan error, 1)
		go func() {
			_, err := cli.FullSyncRequest(ctx, mautrix.ReqSync{Since: first.NextBatch, Timeout: 30_000})
			parked <- err
		}()
		var fams map[string]*dto.MetricFamily
		for deadline := time.Now().Add(10 * time.Second); ; {
			fams = scrape(t, metricsURL)
			if m, ok := sample(fams, "hearth_sync_waiters", nil); ok && m.GetGauge().GetValue() == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("hearth_sync_waiters never reached 1 with a /sync parked")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if _, err := cli.SendMessageEvent(ctx, room.RoomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "wake"}); err != nil {
			t.Fatal(err)
		}
		if err := <-parked; err != nil {
			t.Fatal(err)
		}

		// Every family the issue names is there.
		for _, name := range []string{
			"go_goroutines", "go_memstats_heap_alloc_bytes", "process_resident_memory_bytes",
			"hearth_http_requests_total", "hearth_http_request_duration_seconds",
			"go_sql_open_connections", "go_sql_wait_duration_seconds_total",
			"hearth_db_write_transaction_seconds", "hearth_db_write_wait_seconds",
			"hearth_cache_entries", "hearth_cache_capacity", "hearth_cache_hits_total", "hearth_cache_evictions_total",
			"hearth_events_persisted_total", "hearth_sync_waiters",
			"hearth_federation_queue_destinations", "hearth_federation_queue_items",
		} {
			if fams[name] == nil {
				t.Errorf("family %s missing", name)
			}
		}
		// Requests are labelled by route pattern, not path.
		send := map[string]string{"route": "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}", "method": "PUT", "status": "200"}
		if n := counter(t, fams, "hearth_http_requests_total", send); n != sent {
			t.Errorf("send requests counted %v, want %d", n, sent)
		}
		for _, m := range fams["hearth_http_requests_total"].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "route" && strings.Contains(l.GetValue(), "!") {
					t.Errorf("a room ID leaked into a route label: %s", l.GetValue())
				}
			}
		}
		if m, ok := sample(fams, "hearth_http_request_duration_seconds", map[string]string{"route": send["route"], "method": "PUT"}); !ok || m.GetHistogram().GetSampleCount() != sent {
			t.Errorf("send latency histogram: %v", m)
		}
		// The room's creation events and the messages entered the timeline.
		grew := counter(t, fams, "hearth_events_persisted_total", map[string]string{"origin": "local"}) -
			counter(t, before, "hearth_events_persisted_total", map[string]string{"origin": "local"})
		if grew < sent+5 { // create, member, power levels, join rules, history visibility, ...
			t.Errorf("events persisted grew by %v over a room creation and %d messages", grew, sent)
		}
		if m, ok := sample(fams, "hearth_db_write_transaction_seconds", nil); !ok || m.GetHistogram().GetSampleCount() == 0 {
			t.Error("no write transactions timed")
		}
		pool := "main"
		if e.Name == "sqlite" {
			pool = "write"
		}
		if _, ok := sample(fams, "go_sql_open_connections", map[string]string{"db_name": pool}); !ok {
			t.Errorf("no pool stats for %q", pool)
		}
		if _, ok := sample(fams, "hearth_cache_entries", map[string]string{"cache": "room_builders"}); !ok {
			t.Error("cache room_builders not exported")
		}

		// The client listener's metrics resource serves the same registry
		// at Synapse's path; the metrics listener serves nothing else.
		res := scrape(t, "http://"+a.addr+MetricsPath)
		if res["hearth_http_requests_total"] == nil {
			t.Error("metrics resource: hearth_http_requests_total missing")
		}
		if code, _ := get(t, fmt.Sprintf("http://127.0.0.1:%d/_matrix/client/versions", port)); code != http.StatusNotFound {
			t.Errorf("metrics listener served the client API: %d", code)
		}
	})
}

// TestMetricsNeedEnableMetrics: without enable_metrics, as in Synapse, a
// metrics listener stays closed and the metrics resource is not served.
func TestMetricsNeedEnableMetrics(t *testing.T) {
	cfg := servertest.Config(t, t.TempDir())
	port := freePort(t)
	cfg.Listeners[0].Resources = []config.Resource{{Names: []string{"client", "metrics"}}}
	cfg.Listeners = append(cfg.Listeners, config.Listener{Port: port, BindAddresses: []string{"127.0.0.1"}, Type: "metrics"})
	addr := runAppliance(t, cfg)
	if code, _ := get(t, "http://"+addr+MetricsPath); code != http.StatusNotFound {
		t.Errorf("metrics resource without enable_metrics: %d", code)
	}
	if _, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port)); err == nil {
		t.Error("metrics listener bound without enable_metrics")
	}
}
