package web

import (
	"bufio"
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Sample is the process's memory and event position at one moment.
type Sample struct {
	At        time.Time
	RSS       uint64 // resident set size from /proc/self/status; 0 if unknown
	HeapAlloc uint64 // bytes of live and not yet collected heap objects
	HeapSys   uint64 // heap memory obtained from the OS
	NumGC     uint32
	StreamPos int64 // newest event stream position, for events per second
}

// Sampler keeps the last capacity samples in a ring, one every interval.
type Sampler struct {
	interval  time.Duration
	streamPos func(context.Context) (int64, error)
	now       func() time.Time

	mu   sync.Mutex
	ring []Sample
	next int
	full bool
}

// NewSampler keeps capacity samples taken every interval; streamPos reads
// the newest event position (nil: events per second is not measured).
func NewSampler(interval time.Duration, capacity int, streamPos func(context.Context) (int64, error)) *Sampler {
	return &Sampler{interval: interval, streamPos: streamPos, now: time.Now, ring: make([]Sample, capacity)}
}

// Sample takes a sample now.
func (s *Sampler) Sample(ctx context.Context) Sample {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	smp := Sample{At: s.now(), HeapAlloc: ms.HeapAlloc, HeapSys: ms.HeapSys, NumGC: ms.NumGC, StreamPos: -1}
	smp.RSS, _ = readRSS()
	if s.streamPos != nil {
		if pos, err := s.streamPos(ctx); err == nil {
			smp.StreamPos = pos
		}
	}
	s.add(smp)
	return smp
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
// before the first tick (and in tests, where Run is not started).
func (s *Sampler) Ensure(ctx context.Context) {
	if last, ok := s.latest(); ok && s.now().Sub(last.At) < s.interval/2 {
		return
	}
	s.Sample(ctx)
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
// positions exist.
func EventsPerSecond(samples []Sample, window time.Duration) (rate float64, ok bool) {
	if len(samples) < 2 {
		return 0, false
	}
	last := samples[len(samples)-1]
	if last.StreamPos < 0 {
		return 0, false
	}
	for _, first := range samples[:len(samples)-1] {
		if last.At.Sub(first.At) > window || first.StreamPos < 0 {
			continue
		}
		secs := last.At.Sub(first.At).Seconds()
		if secs <= 0 {
			return 0, false
		}
		return float64(last.StreamPos-first.StreamPos) / secs, true
	}
	return 0, false
}

// readRSS reads VmRSS from /proc/self/status (Linux); false elsewhere.
func readRSS() (uint64, bool) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			fields := strings.Fields(rest)
			if len(fields) == 0 {
				return 0, false
			}
			kb, err := strconv.ParseUint(fields[0], 10, 64)
			if err != nil {
				return 0, false
			}
			return kb * 1024, true
		}
	}
	return 0, false
}
