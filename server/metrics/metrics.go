// Package metrics is Hearth's one set of Prometheus collectors: what the
// metrics listener serves (Synapse's enable_metrics and `type: metrics`)
// and what the admin dashboard's charts read, so the two cannot disagree.
//
// Nothing here is global: each server process (and each test server) owns
// one Metrics with a registry of its own. Label sets are bounded: HTTP
// requests are labelled by chi's route pattern, never the raw path, and
// federation destinations beyond the first maxDestinations get the label
// "other".
package metrics

import (
	"database/sql"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"hearth/server/cache"
)

// Names of the families the dashboard reads back (sampler in package web).
const (
	EventsPersisted = "hearth_events_persisted_total"
	HeapAlloc       = "go_memstats_heap_alloc_bytes"
	HeapSys         = "go_memstats_heap_sys_bytes"
	ResidentMemory  = "process_resident_memory_bytes"
	GCCycles        = "go_gc_duration_seconds" // a summary; its count is the number of GC cycles
)

// maxDestinations bounds the destination label: the first this many
// destinations seen have their own series, the rest share "other".
const maxDestinations = 50

// topDestinations is how many destinations the queue-depth gauge lists by
// name (the deepest queues); the totals cover all of them.
const topDestinations = 20

// Metrics holds the registry and the collectors the server updates.
type Metrics struct {
	// Registry is what the metrics listener serves and the dashboard reads.
	Registry *prometheus.Registry

	requests   *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	events     *prometheus.CounterVec
	txns       *prometheus.CounterVec
	txnLatency *prometheus.HistogramVec
	writeWait  prometheus.Histogram
	writeTx    prometheus.Histogram

	destMu sync.Mutex
	dests  map[string]struct{}
}

// New builds the collectors with Go runtime and process metrics.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{Registry: reg, dests: map[string]struct{}{}}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hearth_http_requests_total",
		Help: "HTTP requests answered, by route pattern, method and status code.",
	}, []string{"route", "method", "status"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "hearth_http_request_duration_seconds",
		Help:    "Time to answer an HTTP request, by route pattern and method (/sync long polls included).",
		Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
	}, []string{"route", "method"})
	m.events = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: EventsPersisted,
		Help: "Events that entered a room's live timeline, by origin (local: built here; remote: received over federation).",
	}, []string{"origin"})
	m.txns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hearth_federation_transactions_total",
		Help: "Outbound federation transactions, by destination and result (ok or error). Destinations beyond the first 50 are \"other\".",
	}, []string{"destination", "result"})
	m.txnLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "hearth_federation_transaction_duration_seconds",
		Help:    "Time to deliver an outbound federation transaction (failures included), by destination.",
		Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"destination"})
	m.writeWait = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "hearth_db_write_wait_seconds",
		Help:    "Time a write transaction waited to begin (on SQLite: its turn for the single writer).",
		Buckets: []float64{.0001, .0005, .001, .005, .01, .05, .1, .5, 1, 5},
	})
	m.writeTx = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "hearth_db_write_transaction_seconds",
		Help:    "Time a write transaction took from begin to commit or rollback, waiting included.",
		Buckets: []float64{.0005, .001, .005, .01, .025, .05, .1, .25, .5, 1, 5},
	})
	reg.MustRegister(m.requests, m.latency, m.events, m.txns, m.txnLatency, m.writeWait, m.writeTx)
	// Both origins exist from the start, so rate() works before the first
	// event of each kind.
	m.events.WithLabelValues("local")
	m.events.WithLabelValues("remote")
	return m
}

// Handler serves the registry in the Prometheus text format (or
// OpenMetrics when the scraper asks for it).
func (m *Metrics) Handler() http.Handler {
	// A collector that fails (a /proc file hidden by a sandbox, say) drops
	// its own samples, not the whole scrape.
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{EnableOpenMetrics: true, ErrorHandling: promhttp.ContinueOnError})
}

// Request records one answered HTTP request. route is chi's pattern ("" when
// nothing matched).
func (m *Metrics) Request(route, method string, status int, took time.Duration) {
	if route == "" {
		route = "unmatched"
	}
	switch method {
	case http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete, http.MethodHead, http.MethodOptions, http.MethodPatch:
	default:
		method = "other"
	}
	if status == 0 {
		status = http.StatusOK
	}
	m.requests.WithLabelValues(route, method, statusText(status)).Inc()
	m.latency.WithLabelValues(route, method).Observe(took.Seconds())
}

func statusText(code int) string {
	if code < 100 || code > 599 {
		return "other"
	}
	return string([]byte{byte('0' + code/100), byte('0' + code/10%10), byte('0' + code%10)})
}

// EventPersisted counts one event that entered a room's timeline.
func (m *Metrics) EventPersisted(local bool) {
	origin := "remote"
	if local {
		origin = "local"
	}
	m.events.WithLabelValues(origin).Inc()
}

// Transaction records one outbound federation transaction.
func (m *Metrics) Transaction(destination string, took time.Duration, err error) {
	dest := m.destinationLabel(destination)
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.txns.WithLabelValues(dest, result).Inc()
	m.txnLatency.WithLabelValues(dest).Observe(took.Seconds())
}

// destinationLabel is the destination's own name for the first
// maxDestinations seen, "other" after.
func (m *Metrics) destinationLabel(dest string) string {
	m.destMu.Lock()
	defer m.destMu.Unlock()
	if _, ok := m.dests[dest]; ok {
		return dest
	}
	if len(m.dests) >= maxDestinations {
		return "other"
	}
	m.dests[dest] = struct{}{}
	return dest
}

// WriteTransaction records one database write transaction: how long it
// waited to begin and how long it took in all.
func (m *Metrics) WriteTransaction(wait, total time.Duration) {
	m.writeWait.Observe(wait.Seconds())
	m.writeTx.Observe(total.Seconds())
}

// SyncWaiters exports the number of parked /sync long polls.
func (m *Metrics) SyncWaiters(f func() int64) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "hearth_sync_waiters",
		Help: "Long-polling /sync requests parked until something changes for them.",
	}, func() float64 { return float64(f()) }))
}

// DBPools exports database/sql's pool statistics (go_sql_*, labelled
// db_name) for each named pool.
func (m *Metrics) DBPools(pools map[string]*sql.DB) {
	for name, db := range pools {
		m.Registry.MustRegister(collectors.NewDBStatsCollector(db, name))
	}
}

// Caches exports every cache in the registry: entries, capacity, hits,
// misses and evictions, labelled by cache name (a fixed set).
func (m *Metrics) Caches(r *cache.Registry) {
	m.Registry.MustRegister(cacheCollector{r})
}

var (
	cacheSize      = prometheus.NewDesc("hearth_cache_entries", "Entries held by the cache.", []string{"cache"}, nil)
	cacheCapacity  = prometheus.NewDesc("hearth_cache_capacity", "Entries the cache may hold (its base size times the cache factors).", []string{"cache"}, nil)
	cacheHits      = prometheus.NewDesc("hearth_cache_hits_total", "Lookups that found their entry.", []string{"cache"}, nil)
	cacheMisses    = prometheus.NewDesc("hearth_cache_misses_total", "Lookups that did not find their entry.", []string{"cache"}, nil)
	cacheEvictions = prometheus.NewDesc("hearth_cache_evictions_total", "Entries dropped to stay within capacity.", []string{"cache"}, nil)
	cacheBytes     = prometheus.NewDesc("hearth_cache_bytes", "Approximate memory the cache's entries hold.", []string{"cache"}, nil)
)

type cacheCollector struct{ r *cache.Registry }

func (c cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{cacheSize, cacheCapacity, cacheHits, cacheMisses, cacheEvictions, cacheBytes} {
		ch <- d
	}
}

func (c cacheCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.r.Stats() {
		ch <- prometheus.MustNewConstMetric(cacheSize, prometheus.GaugeValue, float64(s.Size), s.Name)
		ch <- prometheus.MustNewConstMetric(cacheCapacity, prometheus.GaugeValue, float64(s.Capacity), s.Name)
		ch <- prometheus.MustNewConstMetric(cacheHits, prometheus.CounterValue, float64(s.Hits), s.Name)
		ch <- prometheus.MustNewConstMetric(cacheMisses, prometheus.CounterValue, float64(s.Misses), s.Name)
		ch <- prometheus.MustNewConstMetric(cacheEvictions, prometheus.CounterValue, float64(s.Evictions), s.Name)
		ch <- prometheus.MustNewConstMetric(cacheBytes, prometheus.GaugeValue, float64(s.Bytes), s.Name)
	}
}

// Queue is one destination's outbound federation queue.
type Queue struct {
	Destination string
	PDUs, EDUs  int  // waiting in memory for the next transaction
	Sending     bool // a worker is delivering to it (or backing off)
	CatchingUp  bool // it missed events and is sent the newest of each room
}

// FederationQueues exports the outbound federation queue: totals over all
// destinations, and the depth of the topDestinations deepest by name.
func (m *Metrics) FederationQueues(f func() []Queue) {
	m.Registry.MustRegister(queueCollector{f})
}

var (
	queueDests = prometheus.NewDesc("hearth_federation_queue_destinations",
		"Destinations with outbound work, by state (sending, catching_up).", []string{"state"}, nil)
	queueItems = prometheus.NewDesc("hearth_federation_queue_items",
		"Events (pdu) and ephemeral events (edu) waiting in memory for the next transaction, over all destinations.", []string{"kind"}, nil)
	queueDepth = prometheus.NewDesc("hearth_federation_queue_destination_pdus",
		"Events waiting for a destination, for the 20 destinations with the deepest queues.", []string{"destination"}, nil)
)

type queueCollector struct{ f func() []Queue }

func (c queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueDests
	ch <- queueItems
	ch <- queueDepth
}

func (c queueCollector) Collect(ch chan<- prometheus.Metric) {
	qs := c.f()
	var sending, catchingUp, pdus, edus int
	for _, q := range qs {
		if q.Sending {
			sending++
		}
		if q.CatchingUp {
			catchingUp++
		}
		pdus += q.PDUs
		edus += q.EDUs
	}
	ch <- prometheus.MustNewConstMetric(queueDests, prometheus.GaugeValue, float64(sending), "sending")
	ch <- prometheus.MustNewConstMetric(queueDests, prometheus.GaugeValue, float64(catchingUp), "catching_up")
	ch <- prometheus.MustNewConstMetric(queueItems, prometheus.GaugeValue, float64(pdus), "pdu")
	ch <- prometheus.MustNewConstMetric(queueItems, prometheus.GaugeValue, float64(edus), "edu")
	sort.Slice(qs, func(i, j int) bool {
		if qs[i].PDUs != qs[j].PDUs {
			return qs[i].PDUs > qs[j].PDUs
		}
		return qs[i].Destination < qs[j].Destination
	})
	for i, q := range qs {
		if i == topDestinations || q.PDUs == 0 {
			break
		}
		ch <- prometheus.MustNewConstMetric(queueDepth, prometheus.GaugeValue, float64(q.PDUs), q.Destination)
	}
}
