package metrics_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"hearth/server/cache"
	"hearth/server/metrics"
)

// TestDestinationLabelsBounded: however many servers Hearth talks to, the
// destination label takes at most 50 values plus "other".
func TestDestinationLabelsBounded(t *testing.T) {
	m := metrics.New()
	for i := range 200 {
		var err error
		if i%2 == 1 {
			err = errors.New("connection refused")
		}
		m.Transaction(fmt.Sprintf("s%03d.example", i), 10*time.Millisecond, err)
	}
	// A destination seen early keeps its own series.
	m.Transaction("s000.example", time.Millisecond, nil)
	if n := testutil.CollectAndCount(m.Registry, "hearth_federation_transaction_duration_seconds"); n != 51 {
		t.Errorf("%d latency series, want 50 destinations + other", n)
	}
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "hearth_federation_transactions_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			var dest, result string
			for _, l := range s.GetLabel() {
				switch l.GetName() {
				case "destination":
					dest = l.GetValue()
				case "result":
					result = l.GetValue()
				}
			}
			got[dest+" "+result] = s.GetCounter().GetValue()
		}
	}
	if got["s000.example ok"] != 2 || got["s001.example error"] != 1 || got["other ok"] != 75 || got["other error"] != 75 {
		t.Errorf("transaction counts: s000 ok %v, s001 error %v, other ok %v, other error %v",
			got["s000.example ok"], got["s001.example error"], got["other ok"], got["other error"])
	}
}

// TestQueueCollector: totals over every destination, and the queue depth by
// name only for the 20 deepest.
func TestQueueCollector(t *testing.T) {
	m := metrics.New()
	var qs []metrics.Queue
	for i := range 30 {
		qs = append(qs, metrics.Queue{Destination: fmt.Sprintf("d%02d", i), PDUs: i, EDUs: 1, Sending: i%3 == 0, CatchingUp: i == 7})
	}
	m.FederationQueues(func() []metrics.Queue { return append([]metrics.Queue(nil), qs...) })
	if n := testutil.CollectAndCount(m.Registry, "hearth_federation_queue_destination_pdus"); n != 20 {
		t.Errorf("%d per-destination series, want 20", n)
	}
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		for _, s := range f.GetMetric() {
			label := ""
			if len(s.GetLabel()) > 0 {
				label = s.GetLabel()[0].GetValue()
			}
			v := s.GetGauge().GetValue()
			switch f.GetName() + " " + label {
			case "hearth_federation_queue_items pdu":
				if v != 435 { // 0+1+...+29
					t.Errorf("pdus %v", v)
				}
			case "hearth_federation_queue_items edu":
				if v != 30 {
					t.Errorf("edus %v", v)
				}
			case "hearth_federation_queue_destinations sending":
				if v != 10 {
					t.Errorf("sending %v", v)
				}
			case "hearth_federation_queue_destinations catching_up":
				if v != 1 {
					t.Errorf("catching up %v", v)
				}
			case "hearth_federation_queue_destination_pdus d05":
				t.Error("d05 (5 PDUs) is not among the 20 deepest queues")
			}
		}
	}
}

// TestCacheCollector exports the registry's caches as they are at scrape
// time.
func TestCacheCollector(t *testing.T) {
	reg := cache.NewRegistry()
	c := cache.NewLRU[string, int](reg, "widgets", "test cache", 2)
	m := metrics.New()
	m.Caches(reg)
	c.Add("a", 1)
	c.Add("b", 2)
	c.Add("c", 3) // evicts a
	c.Get("b")
	c.Get("a")
	want := map[string]float64{"hearth_cache_entries": 2, "hearth_cache_capacity": 2, "hearth_cache_hits_total": 1,
		"hearth_cache_misses_total": 1, "hearth_cache_evictions_total": 1}
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		w, ok := want[f.GetName()]
		if !ok {
			continue
		}
		delete(want, f.GetName())
		s := f.GetMetric()[0]
		v := s.GetGauge().GetValue() + s.GetCounter().GetValue()
		if v != w || s.GetLabel()[0].GetValue() != "widgets" {
			t.Errorf("%s{%s} = %v, want %v", f.GetName(), s.GetLabel()[0].GetValue(), v, w)
		}
	}
	if len(want) != 0 {
		t.Errorf("families missing: %v", want)
	}
}

// TestRequestLabels: unknown methods and unmatched routes collapse into
// one series each.
func TestRequestLabels(t *testing.T) {
	m := metrics.New()
	m.Request("", "BREW", 404, time.Millisecond)
	m.Request("", "PROPFIND", 404, time.Millisecond)
	m.Request("/_matrix/client/versions", "GET", 0, time.Millisecond)
	if n := testutil.CollectAndCount(m.Registry, "hearth_http_requests_total"); n != 2 {
		t.Errorf("%d request series, want 2", n)
	}
	if v := requests(t, m, "unmatched", "other", "404"); v != 2 {
		t.Errorf("unmatched other 404: %v", v)
	}
}

func requests(t *testing.T, m *metrics.Metrics, route, method, status string) float64 {
	t.Helper()
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "hearth_http_requests_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			l := map[string]string{}
			for _, p := range s.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if l["route"] == route && l["method"] == method && l["status"] == status {
				return s.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no series %s %s %s", route, method, status)
	return 0
}
