package web

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"hearth/server/metrics"
)

// Sample is the process's memory and event count at one moment, read from
// the metrics registry (package metrics), so the dashboard's charts show
// the same numbers a Prometheus scrape does.
type Sample struct {
	At        time.Time
	RSS       uint64 // process_resident_memory_bytes; 0 if unknown
	HeapAlloc uint64 // go_memstats_heap_alloc_bytes: live and not yet collected heap objects
	HeapSys   uint64 // go_memstats_heap_sys_bytes: heap memory obtained from the OS
	NumGC     uint32 // go_gc_duration_seconds' count
	Events    int64  // hearth_events_persisted_total over all origins; -1 if unknown
}

// Sampler keeps the last capacity samples in a ring, one every interval.
type Sampler struct {
	interval time.Duration
	metrics  prometheus.Gatherer
	now      func() time.Time

	mu   sync.Mutex
	ring []Sample
	next int
	full bool
}

// NewSampler keeps capacity samples taken every interval from the
// collectors g gathers (the server's metrics registry).
func NewSampler(interval time.Duration, capacity int, g prometheus.Gatherer) *Sampler {
	return &Sampler{interval: interval, metrics: g, now: time.Now, ring: make([]Sample, capacity)}
}

// Sample takes a sample now.
func (s *Sampler) Sample(ctx context.Context) Sample {
	smp := Sample{At: s.now(), Events: -1}
	families, err := s.metrics.Gather()
	if err != nil && len(families) == 0 {
		s.add(smp)
		return smp
	}
	for _, f := range families {
		switch f.GetName() {
		case metrics.ResidentMemory:
			smp.RSS = uint64(firstValue(f))
		case metrics.HeapAlloc:
			smp.HeapAlloc = uint64(firstValue(f))
		case metrics.HeapSys:
			smp.HeapSys = uint64(firstValue(f))
		case metrics.GCCycles:
			if ms := f.GetMetric(); len(ms) > 0 {
				smp.NumGC = uint32(ms[0].GetSummary().GetSampleCount())
			}
		case metrics.EventsPersisted:
			var n float64
			for _, m := range f.GetMetric() {
				n += m.GetCounter().GetValue()
			}
			smp.Events = int64(n)
		}
	}
	s.add(smp)
	return smp
}

// firstValue is the value of a family's first gauge or counter.
func firstValue(f *dto.MetricFamily) float64 {
	ms := f.GetMetric()
	if len(ms) == 0 {
		return 0
	}
	if g := ms[0].GetGauge(); g != nil {
		return g.GetValue()
	}
	return ms[0].GetCounter().GetValue()
}

func (s *Sampler) add(smp Sample) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ring[s.next] = smp
	s.next = (s.next + 1) % len(s.ring)
	if s.next == 0 {
		s.full = true
	}
}

// Ensure takes a sample unless a recent one exists, so pages have data even
// before the first tick (and in tests, where Run is not started), and
// returns the newest.
func (s *Sampler) Ensure(ctx context.Context) Sample {
	if last, ok := s.latest(); ok && s.now().Sub(last.At) < s.interval/2 {
		return last
	}
	return s.Sample(ctx)
}

func (s *Sampler) latest() (Sample, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.full && s.next == 0 {
		return Sample{}, false
	}
	return s.ring[(s.next-1+len(s.ring))%len(s.ring)], true
}

// Samples returns the samples held, oldest first.
func (s *Sampler) Samples() []Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.full {
		return append([]Sample(nil), s.ring[:s.next]...)
	}
	return append(append([]Sample(nil), s.ring[s.next:]...), s.ring[:s.next]...)
}

// EventsPerSecond is the event rate between the newest sample and the
// oldest one at most window older; ok is false until two samples with
// event counts exist.
func EventsPerSecond(samples []Sample, window time.Duration) (rate float64, ok bool) {
	if len(samples) < 2 {
		return 0, false
	}
	last := samples[len(samples)-1]
	if last.Events < 0 {
		return 0, false
	}
	for _, first := range samples[:len(samples)-1] {
		if last.At.Sub(first.At) > window || first.Events < 0 {
			continue
		}
		secs := last.At.Sub(first.At).Seconds()
		if secs <= 0 {
			return 0, false
		}
		return float64(last.Events-first.Events) / secs, true
	}
	return 0, false
}
