package cache

import (
	"math"
	"os"
	"runtime"
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
// either GC target, the runtime's default, 100. Whatever the target, the
// heap goal does not fall below HeapGoalFloor (followGCTarget).
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
	gcTarget = gcPercent
	gcApplied = floorPercent(gcTarget)
	debug.SetGCPercent(gcApplied)
	floorStart.Do(func() { afterEachGC(followGCTarget) })
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

// CurrentRuntime reads back the memory limit (0: none) and GC target: the
// target set, not the percentage the heap goal's floor may have raised it
// to (EffectiveGCPercent).
func CurrentRuntime() (memoryLimit int64, gcPercent int) {
	memoryLimit = debug.SetMemoryLimit(-1) // a negative value only reads
	if memoryLimit == math.MaxInt64 {
		memoryLimit = 0
	}
	limitMu.Lock()
	defer limitMu.Unlock()
	return memoryLimit, gcTarget
}

// HeapGoalFloor is the least heap goal: however little is live, the
// collector lets the heap reach this much before it runs. The GC target
// alone paces collections by what is live (GOGC=100 collects once the
// heap has doubled), so a server holding 5 MB, as one busy sending
// messages does, collected about 45 times a second, a tenth of its CPU;
// with this floor it collects a few times a second, and a message costs
// 13% less CPU (docs/memory.md). It only raises the effective GC percentage
// while the live heap is under half of it: a server that holds more is
// paced by its GC target as before, and the memory limit still caps the
// heap whatever the floor says.
const HeapGoalFloor = 32 << 20

// gcTarget is the GC target in force (set, or the environment's);
// gcApplied, the runtime's percentage, is it or more (floorPercent).
// floorStart arms followGCTarget once. Both are guarded by limitMu.
var (
	gcTarget, gcApplied = envGCPercent, envGCPercent
	floorStart          sync.Once
)

// floorSamples are what the runtime's pacer multiplies by the GC
// percentage: the heap marked live, goroutine stacks and globals.
var floorSamples = []metrics.Sample{
	{Name: "/gc/heap/live:bytes"},
	{Name: "/gc/scan/stack:bytes"},
	{Name: "/gc/scan/globals:bytes"},
}

// floorPercent is the GC percentage that puts the heap goal at
// HeapGoalFloor over what the last collection found live, or target when
// that reaches further. A negative target (the collector off until the
// memory limit) is kept. Call it with limitMu held.
func floorPercent(target int) int {
	if target < 0 {
		return target
	}
	metrics.Read(floorSamples)
	live := floorSamples[0].Value.Uint64()
	var scanned uint64
	for _, s := range floorSamples {
		scanned += s.Value.Uint64()
	}
	if scanned == 0 || live >= HeapGoalFloor {
		return target
	}
	// The pacer's goal is live + scanned*percent/100.
	p := int((HeapGoalFloor - live) * 100 / scanned)
	return min(max(p, target), maxFloorPercent)
}

// maxFloorPercent bounds the floor's percentage, for a heap that is
// almost empty (at start).
const maxFloorPercent = 5000

// followGCTarget moves the runtime's GC percentage after each collection,
// as what is live changes.
func followGCTarget() {
	limitMu.Lock()
	defer limitMu.Unlock()
	if p := floorPercent(gcTarget); p != gcApplied {
		gcApplied = p
		debug.SetGCPercent(p)
	}
}

// EffectiveGCPercent is the runtime's GC percentage now: the GC target,
// or more while the heap goal's floor raises it.
func EffectiveGCPercent() int {
	limitMu.Lock()
	defer limitMu.Unlock()
	return gcApplied
}

// afterEachGC calls f on the runtime's cleanup goroutine after every
// garbage collection: each round allocates an object nothing refers to,
// whose cleanup runs once a collection found it unreachable, and arms
// the next.
func afterEachGC(f func()) {
	type sentinel struct {
		_ *int // pointerful, so never in a tiny block beside live objects
		_ [16]byte
	}
	var arm func()
	arm = func() {
		runtime.AddCleanup(new(sentinel), func(struct{}) {
			f()
			arm()
		}, struct{}{})
	}
	arm()
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
