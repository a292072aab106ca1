package cache

import (
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"sync"
	"time"
)

// Tuning is the memory side of the configuration: cache factors and the Go
// runtime's memory limit and GC target. It is applied at start and again
// whenever the dashboard changes it.
type Tuning struct {
	GlobalFactor    float64
	PerCacheFactors map[string]float64
	// MemoryLimit is the Go runtime's soft memory limit in bytes
	// (debug.SetMemoryLimit); 0 means GOMEMLIMIT's, or the automatic one.
	MemoryLimit int64
	// GCPercent is the GC target (debug.SetGCPercent); 0 means the default 100.
	GCPercent int
}

// Preset is a named Tuning for a kind of machine.
type Preset struct {
	ID, Name, Description string
	Tuning                Tuning
}

// presets are starting points for common machines. The memory limit sits
// well under the machine's RAM because the database (and, for SQLite, the
// page cache) needs room too.
var presets = []Preset{
	{ID: "pi-1g", Name: "Raspberry Pi 1 GB", Description: "Caches at a quarter, GC more often, 400 MiB soft limit.",
		Tuning: Tuning{GlobalFactor: 0.25, MemoryLimit: 400 << 20, GCPercent: 50}},
	{ID: "vps-2g", Name: "Small VPS 2 GB", Description: "Caches at half, default GC, 1 GiB soft limit.",
		Tuning: Tuning{GlobalFactor: 0.5, MemoryLimit: 1 << 30, GCPercent: 100}},
	{ID: "default", Name: "Default", Description: "Caches at their base size, default GC, automatic memory limit.",
		Tuning: Tuning{GlobalFactor: 1, MemoryLimit: 0, GCPercent: 100}},
}

// Presets lists the presets, in a slice the caller may change.
func Presets() []Preset { return slices.Clone(presets) }

// PresetByID finds a preset.
func PresetByID(id string) (Preset, bool) {
	for _, p := range presets {
		if p.ID == id {
			return p, true
		}
	}
	return Preset{}, false
}

// envMemoryLimit and envGCPercent are the runtime's settings when the
// process started: what the GOMEMLIMIT and GOGC environment variables set,
// or the runtime's defaults (no limit, 100). envMemoryLimitSet says
// GOMEMLIMIT was given at all ("off" included).
var envMemoryLimit, envGCPercent = debug.SetMemoryLimit(-1), readGCPercent()

var envMemoryLimitSet = os.Getenv("GOMEMLIMIT") != ""

func readGCPercent() int {
	p := debug.SetGCPercent(-1)
	debug.SetGCPercent(p) // SetGCPercent has no read-only form
	return p
}

// EnvRuntime is the memory limit (0: none) and GC target the environment
// (GOMEMLIMIT, GOGC) set when the process started.
func EnvRuntime() (memoryLimit int64, gcPercent int) {
	if envMemoryLimit == math.MaxInt64 {
		return 0, envGCPercent
	}
	return envMemoryLimit, envGCPercent
}

// DefaultMemoryLimit is the floor of the automatic soft memory limit, in
// force when neither memory.limit nor GOMEMLIMIT sets one. Go's default
// pacing (GOGC=100) lets the heap grow to twice what is live before it
// collects; the limit only changes anything once that would pass it, as
// when hundreds of clients are served at once, and then makes the runtime
// collect sooner instead of taking more from the OS. At 80 MiB, the
// 200-client crowd after the load tool's other phases collected 13 times
// a second, a third of the server's CPU, and its p99 delivery was
// 360-662 ms; at 100 MiB, 148 ms, with the process's RSS at 140 MiB
// (docs/memory.md).
const DefaultMemoryLimit = 100 << 20

// The automatic limit follows what a collection cannot free (autoLimit),
// so that a server that really holds more never thrashes against it.
var (
	limitMu   sync.Mutex
	autoOn    bool
	autoStart sync.Once
)

// ApplyRuntime sets the Go memory limit and GC target process-wide. A
// value set in the configuration wins over the environment; 0 means "not
// set" and puts back what GOMEMLIMIT or GOGC set at start. Without either
// limit, the automatic one is in force (DefaultMemoryLimit); without
// either GC target, the runtime's default, 100.
func ApplyRuntime(memoryLimit int64, gcPercent int) {
	limitMu.Lock()
	defer limitMu.Unlock()
	autoOn = false
	switch {
	case memoryLimit > 0:
	case envMemoryLimitSet:
		memoryLimit = envMemoryLimit
	default:
		autoOn = true
		memoryLimit = autoLimit()
		autoStart.Do(func() { go followAutoLimit() })
	}
	debug.SetMemoryLimit(memoryLimit)
	if gcPercent == 0 {
		gcPercent = envGCPercent
	}
	debug.SetGCPercent(gcPercent)
}

// AutoLimit reports whether the automatic memory limit is in force.
func AutoLimit() bool {
	limitMu.Lock()
	defer limitMu.Unlock()
	return autoOn
}

// autoSamples are the runtime's figures for what a collection cannot give
// back: the heap live at the last collection, goroutine stacks, and the
// runtime's own structures.
var autoSamples = []metrics.Sample{
	{Name: "/gc/heap/live:bytes"},
	{Name: "/memory/classes/heap/stacks:bytes"},
	{Name: "/memory/classes/os-stacks:bytes"},
	{Name: "/memory/classes/metadata/mspan/inuse:bytes"},
	{Name: "/memory/classes/metadata/mcache/inuse:bytes"},
	{Name: "/memory/classes/metadata/other:bytes"},
	{Name: "/memory/classes/profiling/buckets:bytes"},
	{Name: "/memory/classes/other:bytes"},
}

// autoLimit is DefaultMemoryLimit, or half as much again as what a
// collection cannot free when that is more: the heap may always grow by
// half of it before a collection, as with GOGC=50, so the collector never
// runs back to back however much the server really holds. Call it with
// limitMu held.
func autoLimit() int64 {
	metrics.Read(autoSamples)
	var base uint64
	for _, s := range autoSamples {
		if s.Value.Kind() == metrics.KindUint64 {
			base += s.Value.Uint64()
		}
	}
	return max(DefaultMemoryLimit, int64(base+base/2))
}

// followAutoLimit moves the automatic limit with what is live, every
// second, while it is in force.
func followAutoLimit() {
	for range time.Tick(time.Second) {
		limitMu.Lock()
		if autoOn {
			debug.SetMemoryLimit(autoLimit())
		}
		limitMu.Unlock()
	}
}

// CurrentRuntime reads back the memory limit (0: none) and GC target.
func CurrentRuntime() (memoryLimit int64, gcPercent int) {
	memoryLimit = debug.SetMemoryLimit(-1) // a negative value only reads
	if memoryLimit == math.MaxInt64 {
		memoryLimit = 0
	}
	return memoryLimit, readGCPercent()
}

// Apply sets the cache factors on r and the runtime settings on the process.
func (t Tuning) Apply(r *Registry) error {
	if t.GlobalFactor > 0 {
		if err := r.SetGlobalFactor(t.GlobalFactor); err != nil {
			return err
		}
	}
	for name, f := range t.PerCacheFactors {
		if err := r.SetFactor(name, f); err != nil {
			return err
		}
	}
	ApplyRuntime(t.MemoryLimit, t.GCPercent)
	return nil
}
