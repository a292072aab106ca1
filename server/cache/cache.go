// Package cache holds Hearth's in-process caches and the registry that sizes
// them. Every cache has a base capacity chosen by the code that owns it; the
// capacity in force is base × global factor × the cache's own factor, as in
// Synapse's caches.global_factor and caches.per_cache_factors, so an operator
// can shrink everything for a small machine with one number and still give a
// hot cache more room.
//
// Caches sit in front of the database, so correctness depends on
// invalidation: an LRU carries a generation counter, and a value loaded from
// the database is only stored when no invalidation happened while it was
// being loaded (see GetOrLoad). Without that, a reader that loaded a row just
// before a write committed could put the stale row back after the writer
// invalidated it.
package cache

import (
	"container/list"
	"fmt"
	"math"
	"reflect"
	"sort"
	"sync"
)

// Stats is a snapshot of one cache, for the dashboard.
type Stats struct {
	Name        string
	Description string
	Size        int     // entries held
	Capacity    int     // entries allowed now
	BaseSize    int     // capacity at factor 1
	Factor      float64 // this cache's own factor (1 unless set)
	Hits        uint64
	Misses      uint64
	Evictions   uint64
	// MaxBytes is the bound on Bytes in force (0: none; see WithMaxBytes).
	MaxBytes int64
	// Bytes is the approximate memory the entries hold: keys, values and
	// the cache's own bookkeeping, as estimated by the cache's sizer
	// (WithSize) or, without one, by EstimateSize.
	Bytes int64
}

// HitRate is hits / (hits + misses), or 0 before the first lookup.
func (s Stats) HitRate() float64 {
	if s.Hits+s.Misses == 0 {
		return 0
	}
	return float64(s.Hits) / float64(s.Hits+s.Misses)
}

// sized is what the registry needs from a cache of any type.
type sized interface {
	stats() Stats
	resize(capacity int)
	setFactor(f float64)
}

// Registry knows every cache in the process and applies the factors. It
// also lists the process's buffers (queues, pools), which have no factor
// but whose size belongs on the same page.
type Registry struct {
	mu      sync.Mutex
	global  float64
	factors map[string]float64 // per-cache factors, also for caches not yet registered
	caches  map[string]sized
	buffers map[string]buffer
}

// NewRegistry returns a registry with global factor 1.
func NewRegistry() *Registry {
	return &Registry{global: 1, factors: map[string]float64{}, caches: map[string]sized{}, buffers: map[string]buffer{}}
}

// Buffer is a snapshot of one buffer (a queue, a pool), for the dashboard.
type Buffer struct {
	Name, Description string
	Entries           int   // items held
	Bytes             int64 // approximate memory held; -1 when unknown
}

type buffer struct {
	desc string
	size func() (entries int, bytes int64)
}

// RegisterBuffer lists a buffer: size reports its items and approximate
// bytes (-1 when unknown) when the dashboard asks. Registering a name again
// replaces it (a component restarted in tests).
func (r *Registry) RegisterBuffer(name, description string, size func() (entries int, bytes int64)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buffers[name] = buffer{desc: description, size: size}
}

// Buffers lists every registered buffer, by name.
func (r *Registry) Buffers() []Buffer {
	r.mu.Lock()
	type named struct {
		name string
		b    buffer
	}
	list := make([]named, 0, len(r.buffers))
	for n, b := range r.buffers {
		list = append(list, named{n, b})
	}
	r.mu.Unlock()
	out := make([]Buffer, 0, len(list))
	for _, nb := range list {
		n, bytes := nb.b.size()
		out = append(out, Buffer{Name: nb.name, Description: nb.b.desc, Entries: n, Bytes: bytes})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// capacity is base × global × factor, at least 1 so a cache never stops
// working altogether.
func capacity(base int, global, factor float64) int {
	return max(1, int(math.Round(float64(base)*global*factor)))
}

// ValidFactor reports whether f can be used as a cache factor.
func ValidFactor(f float64) error {
	if math.IsNaN(f) || math.IsInf(f, 0) || f <= 0 || f > 1000 {
		return fmt.Errorf("cache factor %v must be greater than 0 and at most 1000", f)
	}
	return nil
}

// GlobalFactor is the factor applied to every cache.
func (r *Registry) GlobalFactor() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.global
}

// SetGlobalFactor resizes every cache; entries beyond the new capacity are
// evicted, least recently used first.
func (r *Registry) SetGlobalFactor(f float64) error {
	if err := ValidFactor(f); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.global = f
	for name, c := range r.caches {
		c.resize(capacity(c.stats().BaseSize, f, r.factorLocked(name)))
	}
	return nil
}

// Factor is the named cache's own factor (1 when none is set).
func (r *Registry) Factor(name string) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.factorLocked(name)
}

func (r *Registry) factorLocked(name string) float64 {
	if f, ok := r.factors[name]; ok {
		return f
	}
	return 1
}

// SetFactor sets one cache's factor. The cache need not exist yet: config is
// applied before every component has registered its caches.
func (r *Registry) SetFactor(name string, f float64) error {
	if err := ValidFactor(f); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.factors[name] = f
	if c, ok := r.caches[name]; ok {
		c.setFactor(f)
		c.resize(capacity(c.stats().BaseSize, r.global, f))
	}
	return nil
}

// Factors returns a copy of the per-cache factors that have been set.
func (r *Registry) Factors() map[string]float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]float64, len(r.factors))
	for k, v := range r.factors {
		out[k] = v
	}
	return out
}

// Stats lists every registered cache, by name.
func (r *Registry) Stats() []Stats {
	r.mu.Lock()
	list := make([]sized, 0, len(r.caches))
	for _, c := range r.caches {
		list = append(list, c)
	}
	r.mu.Unlock()
	out := make([]Stats, 0, len(list))
	for _, c := range list {
		out = append(out, c.stats())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Has reports whether a cache of that name is registered.
func (r *Registry) Has(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.caches[name]
	return ok
}

// NewLRU registers an LRU cache holding baseSize entries at factor 1. Names
// are unique in a registry: registering one twice panics, because two
// caches sharing a name would share its factor and its line on the
// dashboard by accident.
func NewLRU[K comparable, V any](r *Registry, name, description string, baseSize int) *LRU[K, V] {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.caches[name]; dup {
		panic("cache: two caches named " + name)
	}
	f := r.factorLocked(name)
	c := &LRU[K, V]{name: name, desc: description, base: baseSize, factor: f,
		capacity: capacity(baseSize, r.global, f), items: map[K]*list.Element{}, order: list.New()}
	r.caches[name] = c
	return c
}

// LRU is a fixed-capacity least-recently-used map, safe for concurrent use.
type LRU[K comparable, V any] struct {
	name, desc string

	mu        sync.Mutex
	base      int
	factor    float64
	capacity  int
	items     map[K]*list.Element
	order     *list.List // front: most recently used
	gen       uint64     // bumped by every invalidation
	hits      uint64
	misses    uint64
	evictions uint64
	bytes     int64            // sum of the entries' sizes
	sizer     func(K, V) int64 // nil: EstimateSize of key and value
	// baseBytes bounds the entries' bytes at factor 1 (0: only their
	// number is bounded); maxBytes is the bound in force, scaled as the
	// capacity is.
	baseBytes, maxBytes int64
}

type entry[K comparable, V any] struct {
	key  K
	val  V
	size int64
}

// entryOverhead is the bookkeeping of one entry: its map slot, list
// element and entry struct.
const entryOverhead = 112

// WithSize sets how the cache estimates an entry's bytes (key and value,
// without the cache's own bookkeeping), for values EstimateSize cannot see
// into (maps, structs holding slices). Call it before the cache is used.
func (c *LRU[K, V]) WithSize(size func(K, V) int64) *LRU[K, V] {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sizer = size
	return c
}

// WithMaxBytes bounds the bytes the entries hold (as the sizer estimates
// them) at factor 1, besides their number: a cache whose entries vary
// widely in size (a room's state: a few events, or thousands) would
// otherwise be bounded only by its largest entries times its capacity. The
// bound scales with the cache's factors, as the capacity does. Call it
// before the cache is used.
func (c *LRU[K, V]) WithMaxBytes(base int64) *LRU[K, V] {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.baseBytes = base
	c.maxBytes = c.scaledBytes()
	return c
}

// scaledBytes is baseBytes scaled as the capacity is from the base size.
func (c *LRU[K, V]) scaledBytes() int64 {
	if c.baseBytes == 0 || c.base == 0 {
		return 0
	}
	return max(1, int64(float64(c.baseBytes)*float64(c.capacity)/float64(c.base)))
}

func (c *LRU[K, V]) sizeOf(k K, v V) int64 {
	if c.sizer != nil {
		return entryOverhead + c.sizer(k, v)
	}
	return entryOverhead + EstimateSize(k) + EstimateSize(v)
}

// EstimateSize is a shallow estimate of a key's or value's bytes: the
// bytes of a string or byte slice, the fixed size of numbers and bools,
// and the declared size of anything else (a pointer's target is not
// followed). Caches of richer values give their own sizer (WithSize).
func EstimateSize(x any) int64 {
	switch v := x.(type) {
	case string:
		return 16 + int64(len(v))
	case []byte:
		return 24 + int64(cap(v))
	case []string:
		n := int64(24 + 16*cap(v))
		for _, s := range v {
			n += int64(len(s))
		}
		return n
	case nil:
		return 0
	case int, int64, uint64, float64, uintptr:
		return 8
	case int32, uint32, float32:
		return 4
	case bool, int8, uint8:
		return 1
	case int16, uint16:
		return 2
	}
	return int64(reflect.TypeOf(x).Size())
}

// Get returns the cached value and counts a hit or a miss.
func (c *LRU[K, V]) Get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		c.order.MoveToFront(el)
		c.hits++
		return el.Value.(*entry[K, V]).val, true
	}
	c.misses++
	var zero V
	return zero, false
}

// Generation is the invalidation counter, to pass to AddIfGeneration.
func (c *LRU[K, V]) Generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// Add stores v under k, evicting the least recently used entry when full.
func (c *LRU[K, V]) Add(k K, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.addLocked(k, v)
}

// AddIfGeneration stores v only if nothing was invalidated since gen was
// read: the value was loaded before that invalidation and may be stale.
func (c *LRU[K, V]) AddIfGeneration(k K, v V, gen uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return false
	}
	c.addLocked(k, v)
	return true
}

func (c *LRU[K, V]) addLocked(k K, v V) {
	size := c.sizeOf(k, v)
	if el, ok := c.items[k]; ok {
		e := el.Value.(*entry[K, V])
		c.bytes += size - e.size
		e.val, e.size = v, size
		c.order.MoveToFront(el)
		c.trimLocked()
		return
	}
	c.items[k] = c.order.PushFront(&entry[K, V]{key: k, val: v, size: size})
	c.bytes += size
	c.trimLocked()
}

// trimLocked evicts the least recently used entries while there are too
// many, or while they hold too many bytes (the newest entry always stays).
func (c *LRU[K, V]) trimLocked() {
	for len(c.items) > c.capacity || (c.maxBytes > 0 && c.bytes > c.maxBytes && len(c.items) > 1) {
		el := c.order.Back()
		c.removeLocked(el)
		c.evictions++
	}
}

func (c *LRU[K, V]) removeLocked(el *list.Element) {
	e := el.Value.(*entry[K, V])
	c.order.Remove(el)
	delete(c.items, e.key)
	c.bytes -= e.size
}

// GetOrLoad returns the cached value, or calls load and caches what it
// returns (errors are not cached). The store is skipped if an invalidation
// raced with the load.
func (c *LRU[K, V]) GetOrLoad(k K, load func() (V, error)) (V, error) {
	if v, ok := c.Get(k); ok {
		return v, nil
	}
	gen := c.Generation()
	v, err := load()
	if err != nil {
		return v, err
	}
	c.AddIfGeneration(k, v, gen)
	return v, nil
}

// Update replaces k's value with f of it, if k is held (f must not change
// the old value: readers may still hold it). Like Remove, it keeps a load
// that raced it from storing what it read (AddIfGeneration), held or not.
func (c *LRU[K, V]) Update(k K, f func(V) V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if el, ok := c.items[k]; ok {
		c.addLocked(k, f(el.Value.(*entry[K, V]).val))
	}
}

// Remove drops one key.
func (c *LRU[K, V]) Remove(k K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if el, ok := c.items[k]; ok {
		c.removeLocked(el)
	}
}

// RemoveFunc drops every entry for which match returns true. It walks the
// whole cache, which is fine at the sizes Hearth uses (thousands of entries)
// and for the rare events that call it (logout, deactivation).
func (c *LRU[K, V]) RemoveFunc(match func(K, V) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for k, el := range c.items {
		if match(k, el.Value.(*entry[K, V]).val) {
			c.removeLocked(el)
		}
	}
}

// Purge empties the cache.
func (c *LRU[K, V]) Purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.items = map[K]*list.Element{}
	c.order.Init()
	c.bytes = 0
}

// Len is the number of entries held.
func (c *LRU[K, V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items)
}

func (c *LRU[K, V]) stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{Name: c.name, Description: c.desc, Size: len(c.items), Capacity: c.capacity, BaseSize: c.base,
		Factor: c.factor, Hits: c.hits, Misses: c.misses, Evictions: c.evictions, Bytes: c.bytes, MaxBytes: c.maxBytes}
}

func (c *LRU[K, V]) resize(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.capacity = n
	c.maxBytes = c.scaledBytes()
	c.trimLocked()
}

func (c *LRU[K, V]) setFactor(f float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.factor = f
}
