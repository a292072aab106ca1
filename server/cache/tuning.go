package cache

import (
	"math"
	"runtime/debug"
	"slices"
)

// Tuning is the memory side of the configuration: cache factors and the Go
// runtime's memory limit and GC target. It is applied at start and again
// whenever the dashboard changes it.
type Tuning struct {
	GlobalFactor    float64
	PerCacheFactors map[string]float64
	// MemoryLimit is the Go runtime's soft memory limit in bytes
	// (debug.SetMemoryLimit); 0 means no limit.
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
	{ID: "default", Name: "Default", Description: "Caches at their base size, default GC, no memory limit.",
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
// or the runtime's defaults (no limit, 100).
var envMemoryLimit, envGCPercent = debug.SetMemoryLimit(-1), readGCPercent()

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

// ApplyRuntime sets the Go memory limit and GC target process-wide. A
// value set in the configuration wins over the environment; 0 means "not
// set" and puts back what GOMEMLIMIT or GOGC set at start (or the
// runtime's default: no limit, 100).
func ApplyRuntime(memoryLimit int64, gcPercent int) {
	if memoryLimit <= 0 {
		memoryLimit = envMemoryLimit
	}
	debug.SetMemoryLimit(memoryLimit)
	if gcPercent == 0 {
		gcPercent = envGCPercent
	}
	debug.SetGCPercent(gcPercent)
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
