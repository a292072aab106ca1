package cache

import (
	"errors"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

func TestLRUEvictsLeastRecentlyUsed(t *testing.T) {
	r := NewRegistry()
	c := NewLRU[string, int](r, "t", "test", 2)
	c.Add("a", 1)
	c.Add("b", 2)
	c.Get("a") // a is now the most recent
	c.Add("c", 3)
	if _, ok := c.Get("b"); ok {
		t.Fatal("b should have been evicted")
	}
	if v, ok := c.Get("a"); !ok || v != 1 {
		t.Fatalf("a: %v %v", v, ok)
	}
	st := r.Stats()[0]
	if st.Size != 2 || st.Capacity != 2 || st.Evictions != 1 || st.Hits != 2 || st.Misses != 1 {
		t.Fatalf("stats: %+v", st)
	}
	if hr := st.HitRate(); hr < 0.66 || hr > 0.67 {
		t.Fatalf("hit rate %v", hr)
	}
}

func TestFactorsResize(t *testing.T) {
	r := NewRegistry()
	if err := r.SetFactor("later", 3); err != nil { // before the cache exists
		t.Fatal(err)
	}
	a := NewLRU[int, int](r, "a", "", 100)
	b := NewLRU[int, int](r, "later", "", 10)
	for i := range 100 {
		a.Add(i, i)
	}
	if got := r.Stats()[1].Capacity; got != 30 {
		t.Fatalf("per-cache factor at registration: capacity %d, want 30", got)
	}
	if err := r.SetGlobalFactor(0.5); err != nil {
		t.Fatal(err)
	}
	if a.Len() != 50 {
		t.Fatalf("after global 0.5: %d entries, want 50", a.Len())
	}
	if st := r.Stats()[1]; st.Capacity != 15 || st.Factor != 3 {
		t.Fatalf("later: %+v", st)
	}
	if err := r.SetFactor("a", 0.01); err != nil {
		t.Fatal(err)
	}
	if a.Len() != 1 {
		t.Fatalf("capacity never drops below 1: got %d", a.Len())
	}
	for _, bad := range []float64{0, -1, 1e6} {
		if r.SetGlobalFactor(bad) == nil {
			t.Errorf("factor %v accepted", bad)
		}
	}
	_ = b
}

func TestGetOrLoadSkipsStaleStore(t *testing.T) {
	r := NewRegistry()
	c := NewLRU[string, string](r, "t", "", 10)
	v, err := c.GetOrLoad("k", func() (string, error) {
		c.Remove("k") // a writer invalidated while we were loading
		return "stale", nil
	})
	if err != nil || v != "stale" {
		t.Fatal(v, err)
	}
	if _, ok := c.Get("k"); ok {
		t.Fatal("a value loaded across an invalidation was cached")
	}
	if _, err := c.GetOrLoad("e", func() (string, error) { return "", errors.New("boom") }); err == nil {
		t.Fatal("error lost")
	}
	if c.Len() != 0 {
		t.Fatal("error result cached")
	}
	c.GetOrLoad("k", func() (string, error) { return "fresh", nil })
	if v, ok := c.Get("k"); !ok || v != "fresh" {
		t.Fatal("fresh value not cached")
	}
	c.RemoveFunc(func(k, v string) bool { return v == "fresh" })
	if c.Len() != 0 {
		t.Fatal("RemoveFunc")
	}
}

func TestDuplicateNamePanics(t *testing.T) {
	r := NewRegistry()
	NewLRU[int, int](r, "x", "", 1)
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	NewLRU[int, int](r, "x", "", 1)
}

func TestPresets(t *testing.T) {
	for _, id := range []string{"pi-1g", "vps-2g", "default"} {
		if _, ok := PresetByID(id); !ok {
			t.Errorf("preset %s missing", id)
		}
	}
	limit, gc := CurrentRuntime()
	defer ApplyRuntime(limit, gc)
	ApplyRuntime(300<<20, 70)
	if l, g := CurrentRuntime(); l != 300<<20 || g != 70 {
		t.Fatalf("runtime: %d %d", l, g)
	}
}

// TestLRUBytes: the byte estimate follows every way an entry comes and
// goes, and a cache with its own sizer uses it.
func TestLRUBytes(t *testing.T) {
	r := NewRegistry()
	c := NewLRU[string, string](r, "strings", "", 2)
	bytesOf := func() int64 {
		for _, s := range r.Stats() {
			if s.Name == "strings" {
				return s.Bytes
			}
		}
		t.Fatal("cache not registered")
		return 0
	}
	entry := func(k, v string) int64 { return entryOverhead + EstimateSize(k) + EstimateSize(v) }
	c.Add("a", "xxxx")
	if got, want := bytesOf(), entry("a", "xxxx"); got != want {
		t.Fatalf("one entry: %d bytes, want %d", got, want)
	}
	c.Add("a", "xxxxxxxxxxxx") // replaced: the new value counts, not both
	c.Add("b", "y")
	if got, want := bytesOf(), entry("a", "xxxxxxxxxxxx")+entry("b", "y"); got != want {
		t.Fatalf("replaced and added: %d bytes, want %d", got, want)
	}
	c.Add("c", "zz") // evicts a
	if got, want := bytesOf(), entry("b", "y")+entry("c", "zz"); got != want {
		t.Fatalf("after eviction: %d bytes, want %d", got, want)
	}
	c.Remove("b")
	c.RemoveFunc(func(k, _ string) bool { return k == "c" })
	if got := bytesOf(); got != 0 {
		t.Fatalf("emptied: %d bytes", got)
	}
	c.Add("d", "w")
	c.Purge()
	if got := bytesOf(); got != 0 {
		t.Fatalf("purged: %d bytes", got)
	}
	m := NewLRU[int, map[string]string](r, "maps", "", 10).WithSize(func(_ int, v map[string]string) int64 { return int64(100 * len(v)) })
	m.Add(1, map[string]string{"a": "b", "c": "d"})
	for _, s := range r.Stats() {
		if s.Name == "maps" && s.Bytes != entryOverhead+200 {
			t.Fatalf("sized cache: %d bytes, want %d", s.Bytes, entryOverhead+200)
		}
	}
	r.RegisterBuffer("queue", "a queue", func() (int, int64) { return 3, -1 })
	if b := r.Buffers(); len(b) != 1 || b[0].Name != "queue" || b[0].Entries != 3 || b[0].Bytes != -1 {
		t.Fatalf("buffers: %+v", b)
	}
}

// TestApplyRuntimeKeepsEnvironment: a memory limit or GC target left at 0
// in the config puts back what the environment (GOMEMLIMIT, GOGC) set at
// start, or without GOMEMLIMIT the automatic limit; a configured value
// wins.
func TestApplyRuntimeKeepsEnvironment(t *testing.T) {
	limit, gc := CurrentRuntime()
	defer ApplyRuntime(limit, gc)
	envLimit, envGC := EnvRuntime()
	ApplyRuntime(123<<20, 40)
	if l, g := CurrentRuntime(); l != 123<<20 || g != 40 || AutoLimit() {
		t.Fatalf("configured: %d %d (automatic: %v)", l, g, AutoLimit())
	}
	ApplyRuntime(0, 0)
	l, g := CurrentRuntime()
	if g != envGC {
		t.Fatalf("unset: GC target %d, want the environment's %d", g, envGC)
	}
	switch {
	case envMemoryLimitSet && (l != envLimit || AutoLimit()):
		t.Fatalf("unset: limit %d, want GOMEMLIMIT's %d", l, envLimit)
	case !envMemoryLimitSet && (l < DefaultMemoryLimit || !AutoLimit()):
		t.Fatalf("unset without GOMEMLIMIT: limit %d, automatic %v; want at least %d, automatic", l, AutoLimit(), DefaultMemoryLimit)
	}
}

// TestAutoLimit: the automatic limit is DefaultMemoryLimit while little is
// live, and rises above what is live, by half, when more is: a server
// that really holds more than the floor is never held at it.
func TestAutoLimit(t *testing.T) {
	if envMemoryLimitSet {
		t.Skip("GOMEMLIMIT is set")
	}
	limit, gc := CurrentRuntime()
	defer ApplyRuntime(limit, gc)
	ApplyRuntime(0, 0)
	runtime.GC()
	if l, _ := CurrentRuntime(); l != DefaultMemoryLimit {
		t.Fatalf("with little live: %d, want %d", l, DefaultMemoryLimit)
	}
	held := make([][]byte, 0, 160)
	for range 160 { // 160 MiB live, past the floor
		held = append(held, make([]byte, 1<<20))
	}
	runtime.GC()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, _ := CurrentRuntime()
		if l >= 160<<20*3/2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with 160 MiB live the limit stayed at %d MiB", l>>20)
		}
		time.Sleep(50 * time.Millisecond)
	}
	runtime.KeepAlive(held)
	ApplyRuntime(200<<20, 0) // configured: the automatic limit lets go
	time.Sleep(1100 * time.Millisecond)
	if l, _ := CurrentRuntime(); l != 200<<20 || AutoLimit() {
		t.Fatalf("configured after automatic: %d", l)
	}
}

// TestLRUMaxBytes: a cache bounded in bytes evicts the least recently used
// entries while they hold more, keeps the newest however large, and
// scales the bound with its factors as it does the capacity.
func TestLRUMaxBytes(t *testing.T) {
	r := NewRegistry()
	c := NewLRU[int, string](r, "sized", "", 100).WithSize(func(_ int, v string) int64 { return int64(len(v)) }).
		WithMaxBytes(3*entryOverhead + 300)
	for i := range 3 {
		c.Add(i, string(make([]byte, 100)))
	}
	c.Get(0) // 1 is now the least recently used
	c.Add(3, string(make([]byte, 100)))
	if _, ok := c.Get(1); ok || c.Len() != 3 {
		t.Fatalf("over the bound: %d entries, 1 kept: %v", c.Len(), ok)
	}
	c.Add(4, string(make([]byte, 1000))) // larger than the bound: stays alone
	if _, ok := c.Get(4); !ok || c.Len() != 1 {
		t.Fatalf("one entry over the bound: %d entries, kept: %v", c.Len(), ok)
	}
	c.Add(5, "") // the large one goes: the newest fits
	if _, ok := c.Get(4); ok {
		t.Fatal("the large entry stayed beside a new one")
	}
	if err := r.SetFactor("sized", 2); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		c.Add(10+i, string(make([]byte, 100)))
	}
	for _, s := range r.Stats() {
		if s.Name == "sized" && (s.MaxBytes != 2*(3*entryOverhead+300) || s.Size != 6 || s.Bytes > s.MaxBytes) {
			t.Fatalf("at factor 2: %+v", s)
		}
	}
}

// TestHeapGoalFloor: while little is live, the runtime's GC percentage is
// raised after each collection so that the heap goal reaches
// HeapGoalFloor, and CurrentRuntime still reports the target set; once
// more than the floor is live the target alone paces the collector again,
// and when that heap is freed the floor comes back. A collector turned off
// stays off.
func TestHeapGoalFloor(t *testing.T) {
	limit, gc := CurrentRuntime()
	defer ApplyRuntime(limit, gc)
	ApplyRuntime(0, 100)
	goal := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(); {
			if time.Now().After(deadline) {
				metrics.Read(goal)
				t.Fatalf("%s: GC percentage %d, heap goal %d", what, EffectiveGCPercent(), goal[0].Value.Uint64())
			}
			runtime.GC() // the percentage follows each collection
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("little live", func() bool {
		metrics.Read(goal)
		return EffectiveGCPercent() > 100 && goal[0].Value.Uint64() >= HeapGoalFloor*9/10
	})
	if _, g := CurrentRuntime(); g != 100 {
		t.Fatalf("CurrentRuntime reports GC target %d, want the 100 set", g)
	}

	held := make([][]byte, 48) // 48 MiB live: over the floor
	for i := range held {
		held[i] = make([]byte, 1<<20)
	}
	waitFor("48 MiB live", func() bool { return EffectiveGCPercent() == 100 })
	runtime.KeepAlive(held) // dead from here on
	waitFor("freed again", func() bool { return EffectiveGCPercent() > 100 })

	ApplyRuntime(200<<20, -1)
	if p := EffectiveGCPercent(); p != -1 {
		t.Fatalf("collector off: GC percentage %d", p)
	}
	runtime.GC()
	time.Sleep(50 * time.Millisecond)
	if p := EffectiveGCPercent(); p != -1 {
		t.Fatalf("collector off, after a collection: GC percentage %d", p)
	}
}
