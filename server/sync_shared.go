package server

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"sync"

	"hearth/server/cache"
	"hearth/server/storage"
)

// /sync's fan-out (issue 12): one event wakes every member's long poll at
// once, and each builds its own answer. What those answers have in common
// is computed once here and shared, through caches whose entries cannot go
// stale: they are keyed by things that never change, or validated against
// what was read from the database.
//
//   - eventBytes: the client-format JSON of an event without its unsigned
//     part, shared by every viewer. Unsigned holds what differs per viewer
//     or per moment (age, membership, transaction_id for the sender's
//     device, bundled relations, prev_content) and is added per answer.
//     An entry is used only for the stored JSON it was made from, so a
//     redaction (or an erased sender's pruned event) makes a new entry.
//   - visibility: history visibility and a user's membership at a state
//     group. Groups never change, and the two values a group's events give
//     (membership, history_visibility) survive redaction.
//   - noRelations: events with nothing to bundle, as of their room's
//     relations version (storage.RelationsVersion), which every stored
//     relation moves before it becomes visible. Nothing else adds a
//     relation: a redaction or a purge only removes some.
//   - reads over a range of committed stream positions (which rooms have
//     events, their state and membership changes, timeline gaps, a room's
//     state at a position), fixed once committed. A room's timeline over
//     a range is fixed too, as long as no event of the room is redacted
//     (storage.EventRowsVersion is part of its key). Every woken waiter asks
//     for the same range; the first read serves the others (sharedReads).
type syncShared struct {
	eventBytes *cache.LRU[eventBytesKey, *eventBytes]
	visibility *cache.LRU[visKey, visibilityAt]
	// visValues is what visibility reads of an event (visibilityValues):
	// immutable, as redaction keeps both values.
	visValues *cache.LRU[string, string]
	// presence is each user's stored presence as /sync's set_presence
	// last read it; every write goes through setPresence, which drops
	// the user's entry after it commits (and the LRU's generation keeps
	// a read that raced the write out).
	presence *cache.LRU[string, storage.Presence]
	// noRelations are events found to have none of the relations their
	// bundled aggregations report (edits, references, thread replies),
	// with their room's relations version at the time (relationMark).
	noRelations *cache.LRU[string, relationMark]
	// filters are /sync's parsed filters, by inline JSON or by owner and
	// stored ID (syncFilterParam). Shared: never modified once parsed.
	filters *cache.LRU[string, *syncFilter]

	roomsChanged  *sharedReads[[2]int64, map[string]bool]
	stateChanges  *sharedReads[roomsRangeKey, map[string][]storage.StateChange]
	memberChanges *sharedReads[roomsRangeKey, []storage.MembershipChange]
	gaps          *sharedReads[roomsRangeKey, int64]
	stateAt       *sharedReads[roomsRangeKey, storage.StateKeyMap]
	timelines     *sharedReads[timelineKey, []*storage.Event]
	receipts      *sharedReads[roomsRangeKey, []storage.Receipt]

	// builds bounds the incremental answers being built at once. One
	// event wakes every member's long poll together; past a few per core
	// more at once only add memory and contention, and a request that
	// waits here takes in whatever else arrives meanwhile, so a burst of
	// wake-ups is served in batches and costs less in all.
	builds places
}

// Base sizes at cache factor 1: a formatted event is its stored JSON and
// about as much again (~1–2 KiB for a message), a visibility entry ~100
// bytes.
const (
	eventBytesCacheBase = 2_000
	visibilityCacheBase = 20_000
	visValuesBase       = 5_000
	presenceCacheBase   = 10_000
	noRelationsBase     = 20_000
	// Filters kept, and the longest kept (key and JSON): Element's are a
	// few hundred bytes, and a filter in the URL can be up to a megabyte.
	filtersBase     = 256
	maxCachedFilter = 2048
	// Shared range reads kept: a wake-up's waiters ask for the same few.
	sharedReadsKept = 64
	// A room's state at a position is a map of all its state: fewer.
	sharedStatesKept = 8
	// Receipt reads kept: those of one wake-up's few ranges.
	sharedReceiptsKept = 16
	// Timeline reads kept, and the largest read shared (a filter's limit
	// of 100, plus one): at most ~32 × 101 events held.
	sharedTimelinesKept = 32
	sharedTimelineMax   = 101
)

type eventBytesKey struct {
	eventID string
	roomID  bool // room_id included (not under a /sync room)
}

// eventBytes is an event's client format minus unsigned: a JSON object
// whose closing brace is its last byte.
type eventBytes struct {
	src  []byte // the stored JSON it was made from
	core []byte
}

type visKey struct {
	group int64
	user  string
}

func newSyncShared(r *cache.Registry) *syncShared {
	return &syncShared{
		eventBytes: cache.NewLRU[eventBytesKey, *eventBytes](r, "sync_event_json",
			"event → client-format JSON without unsigned, shared by every /sync answer", eventBytesCacheBase),
		visibility: cache.NewLRU[visKey, visibilityAt](r, "sync_visibility",
			"(state group, user) → history visibility and membership (immutable)", visibilityCacheBase),
		visValues: cache.NewLRU[string, string](r, "visibility_values",
			"member or history visibility event → its membership or history_visibility (immutable)", visValuesBase),
		presence: cache.NewLRU[string, storage.Presence](r, "sync_presence",
			"user → stored presence, read by every /sync's set_presence", presenceCacheBase),
		noRelations: cache.NewLRU[string, relationMark](r, "sync_no_relations",
			"event → has no edit, reference or thread reply, as of its room's relations version", noRelationsBase),
		filters: cache.NewLRU[string, *syncFilter](r, "sync_filters",
			"/sync filter (inline, or owner and stored ID) → parsed (filters never change)", filtersBase),
		roomsChanged:  newSharedReads[[2]int64, map[string]bool](sharedReadsKept),
		stateChanges:  newSharedReads[roomsRangeKey, map[string][]storage.StateChange](sharedReadsKept),
		memberChanges: newSharedReads[roomsRangeKey, []storage.MembershipChange](sharedReadsKept),
		gaps:          newSharedReads[roomsRangeKey, int64](sharedReadsKept),
		stateAt:       newSharedReads[roomsRangeKey, storage.StateKeyMap](sharedStatesKept),
		timelines:     newSharedReads[timelineKey, []*storage.Event](sharedTimelinesKept),
		receipts:      newSharedReads[roomsRangeKey, []storage.Receipt](sharedReceiptsKept),
		builds:        newPlaces(buildPlaces()),
	}
}

// sharedReads holds the results of reads over committed stream ranges,
// which never change once committed: several requests asking at once
// wait for one read, and the last few results stay for later askers.
// Values are shared, so callers must not modify them.
type sharedReads[K comparable, V any] struct {
	mu    sync.Mutex
	m     map[K]*sharedRead[V]
	order []K // oldest first
	keep  int
}

type sharedRead[V any] struct {
	done chan struct{}
	val  V
	err  error
}

func newSharedReads[K comparable, V any](keep int) *sharedReads[K, V] {
	return &sharedReads[K, V]{m: map[K]*sharedRead[V]{}, keep: keep}
}

// get returns the value under k, reading it with load unless another
// request has or is reading it. A failed read is not kept, and a waiter
// whose reader failed reads for itself: the error may be the reader's
// own (its request ended).
func (c *sharedReads[K, V]) get(ctx context.Context, k K, load func() (V, error)) (V, error) {
	c.mu.Lock()
	r, ok := c.m[k]
	if !ok {
		r = &sharedRead[V]{done: make(chan struct{})}
		c.m[k] = r
		c.order = append(c.order, k)
		if len(c.order) > c.keep {
			if old := c.order[0]; c.m[old] != r {
				delete(c.m, old)
			}
			c.order = c.order[1:]
		}
	}
	c.mu.Unlock()
	if ok {
		select {
		case <-r.done:
		case <-ctx.Done():
			var zero V
			return zero, ctx.Err()
		}
		if r.err == nil {
			return r.val, nil
		}
		return load()
	}
	r.val, r.err = load()
	if r.err != nil {
		c.mu.Lock()
		if c.m[k] == r {
			delete(c.m, k)
		}
		c.mu.Unlock()
	}
	close(r.done)
	return r.val, r.err
}

// committed reports whether every event up to pos is committed, so that
// reads of ranges ending there can be shared.
func (s *Server) committed(ctx context.Context, pos int64) bool {
	max, _ := s.store.MaxStreamPos(ctx)
	return pos <= max
}

// roomsWithEventsBetween is store.RoomsWithEventsBetween, shared.
func (s *Server) roomsWithEventsBetween(ctx context.Context, after, upTo int64) (map[string]bool, error) {
	load := func() (map[string]bool, error) { return s.store.RoomsWithEventsBetween(ctx, after, upTo) }
	if !s.committed(ctx, upTo) {
		return load()
	}
	return s.shared.roomsChanged.get(ctx, [2]int64{after, upTo}, load)
}

// roomsRangeKey keys reads of a set of rooms over a stream range.
type roomsRangeKey struct {
	rooms       string // the room IDs, joined
	after, upTo int64
}

func newRoomsRangeKey(roomIDs []string, after, upTo int64) roomsRangeKey {
	return roomsRangeKey{rooms: strings.Join(roomIDs, "\x00"), after: after, upTo: upTo}
}

// stateChangesBetween is store.StateChangesBetween, shared.
func (s *Server) stateChangesBetween(ctx context.Context, roomIDs []string, after, upTo int64) (map[string][]storage.StateChange, error) {
	load := func() (map[string][]storage.StateChange, error) {
		return s.store.StateChangesBetween(ctx, roomIDs, after, upTo)
	}
	if !s.committed(ctx, upTo) {
		return load()
	}
	return s.shared.stateChanges.get(ctx, newRoomsRangeKey(roomIDs, after, upTo), load)
}

// membershipChangesBetween is store.MembershipChangesBetween, shared.
func (s *Server) membershipChangesBetween(ctx context.Context, roomIDs []string, after, upTo int64) ([]storage.MembershipChange, error) {
	load := func() ([]storage.MembershipChange, error) {
		return s.store.MembershipChangesBetween(ctx, roomIDs, after, upTo)
	}
	if !s.committed(ctx, upTo) {
		return load()
	}
	return s.shared.memberChanges.get(ctx, newRoomsRangeKey(roomIDs, after, upTo), load)
}

// receiptsBetween is store.ReceiptsBetween, shared by the requests that
// ask for the same rooms over the same range: when one receipt wakes a
// room's members, one of them reads it for all. Only the rooms with a
// receipt in the range make the key, so members of different rooms
// still share a busy room's read. An aux position a /sync reads up to is
// committed (MaxAuxPos), and receipts are only replaced by later ones, so
// a result kept is an answer the range could have had; a read from the
// start (after 0, a room new to the client) is not kept.
func (s *Server) receiptsBetween(ctx context.Context, roomIDs []string, after, upTo int64) ([]storage.Receipt, error) {
	roomIDs = s.store.ReceiptRoomsAfter(roomIDs, after)
	if len(roomIDs) == 0 {
		return nil, nil
	}
	load := func() ([]storage.Receipt, error) { return s.store.ReceiptsBetween(ctx, roomIDs, after, upTo) }
	if after == 0 {
		return load()
	}
	return s.shared.receipts.get(ctx, newRoomsRangeKey(roomIDs, after, upTo), load)
}

// lastTimelineGap is store.LastTimelineGap, shared. (A gap can close later,
// when backfill fetches the missing events; a result kept meanwhile only
// marks a timeline limited that need not be.)
func (s *Server) lastTimelineGap(ctx context.Context, roomID string, after, upTo int64) (int64, error) {
	load := func() (int64, error) { return s.store.LastTimelineGap(ctx, roomID, after, upTo) }
	if !s.committed(ctx, upTo) {
		return load()
	}
	return s.shared.gaps.get(ctx, newRoomsRangeKey([]string{roomID}, after, upTo), load)
}

// timelineKey keys a room's timeline read over a committed range.
type timelineKey struct {
	room        string
	after, upTo int64
	limit       int
	rows        uint64 // storage.EventRowsVersion of the room, read before
}

// roomEventsShared is store.RoomEvents (newest first), shared by the
// answers of a wake-up, which all read the new events of the same room.
// Each caller gets its own copies of the events.
func (s *Server) roomEventsShared(ctx context.Context, roomID string, after, upTo int64, limit int) ([]*storage.Event, error) {
	load := func() ([]*storage.Event, error) { return s.store.RoomEvents(ctx, roomID, after, upTo, limit, true) }
	if limit > sharedTimelineMax || !s.committed(ctx, upTo) {
		return load()
	}
	k := timelineKey{room: roomID, after: after, upTo: upTo, limit: limit, rows: s.store.EventRowsVersion(roomID)}
	evs, err := s.shared.timelines.get(ctx, k, load)
	if err != nil {
		return nil, err
	}
	out := make([]*storage.Event, len(evs))
	for i, e := range evs {
		c := *e
		out[i] = &c
	}
	return out, nil
}

// stateAtShared is store.StateAt, shared: the caller must not modify the
// map.
func (s *Server) stateAtShared(ctx context.Context, roomID string, pos int64) (storage.StateKeyMap, error) {
	load := func() (storage.StateKeyMap, error) { return s.store.StateAt(ctx, roomID, pos) }
	if !s.committed(ctx, pos) {
		return load()
	}
	return s.shared.stateAt.get(ctx, newRoomsRangeKey([]string{roomID}, pos, pos), load)
}

// build holds one of the incremental builds' places (see builds) until
// the returned func is called.
func (sh *syncShared) build(ctx context.Context) (func(), error) {
	return sh.builds.take(ctx)
}

// cachedVisibility is visibilityOfGroup through the shared cache.
func (s *Server) cachedVisibility(ctx context.Context, group int64, userID string) (visibilityAt, error) {
	k := visKey{group: group, user: userID}
	if v, ok := s.shared.visibility.Get(k); ok {
		return v, nil
	}
	v, err := s.visibilityOfGroup(ctx, group, userID)
	if err != nil {
		return v, err
	}
	s.shared.visibility.Add(k, v)
	return v, nil
}

// coreJSON is e's client format without unsigned, from the shared cache
// when it holds e as stored now.
func (f *eventFormatter) coreJSON(e *storage.Event) ([]byte, error) {
	k := eventBytesKey{eventID: e.EventID, roomID: !f.omitRoomID}
	if f.shared != nil {
		if b, ok := f.shared.eventBytes.Get(k); ok && bytes.Equal(b.src, e.JSON) {
			return b.core, nil
		}
	}
	ce := f.core(e)
	core, err := appendCore(nil, &ce)
	if err != nil {
		return nil, err
	}
	if f.shared != nil && !f.peekShared {
		f.shared.eventBytes.Add(k, &eventBytes{src: e.JSON, core: core})
	}
	return core, nil
}

// formatJSON is format for /sync: each event's JSON is the shared core
// with the viewer's unsigned spliced in, so an event is serialised once for
// all its receivers and only unsigned is built per answer.
func (f *eventFormatter) formatJSON(ctx context.Context, evs []*storage.Event) ([]json.RawMessage, error) {
	p, err := f.prepare(ctx, evs)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(evs))
	// One unsigned map for the batch: each event's is written out before
	// the next one's (a map an event was 4.5% of the bytes the server
	// allocated in the 200-client crowd).
	var u map[string]any
	for _, e := range evs {
		core, err := f.coreJSON(e)
		if err != nil {
			return nil, err
		}
		if u, err = f.unsignedFor(ctx, u, e, p); err != nil {
			return nil, err
		}
		raw := make([]byte, 0, len(core)+len(`,"unsigned":{"age":,"membership":"leave"}`)+20)
		raw = append(raw, core[:len(core)-1]...)
		raw = append(raw, `,"unsigned":`...)
		if raw, err = appendUnsigned(raw, u); err != nil {
			return nil, err
		}
		raw = append(raw, '}')
		out = append(out, raw)
	}
	return out, nil
}

// appendUnsigned appends u as json.Marshal writes it (keys sorted, strings
// HTML-escaped). An event's unsigned is mostly age and membership, and
// every event of every answer has one: written by hand it takes ~150 ns
// and no allocation, json.Marshal's walk of the map ~1 µs and 9
// allocations (12% of /messages' CPU in the crowd). Anything but integers
// and plain strings (prev_content, m.relations, redacted_because), or more
// than 8 keys, goes through json.Marshal.
func appendUnsigned(dst []byte, u map[string]any) ([]byte, error) {
	var buf [8]string
	keys := buf[:0]
	for k, v := range u {
		switch v.(type) {
		case int64, string:
		default:
			keys = nil
		}
		if keys == nil || len(keys) == len(buf) {
			b, err := json.Marshal(u)
			return append(dst, b...), err
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	dst = append(dst, '{')
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, k)
		dst = append(dst, ':')
		switch v := u[k].(type) {
		case int64:
			dst = strconv.AppendInt(dst, v, 10)
		case string:
			dst = appendJSONString(dst, v)
		}
	}
	return append(dst, '}'), nil
}

// appendJSONString appends s quoted as json.Marshal quotes it: printable
// ASCII other than the quote, the backslash and the HTML characters
// as is, anything else through json.Marshal.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s) // a string always encodes
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
