package server

import (
	"bytes"
	"context"
	"encoding/json"
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
//   - roomsChanged: which rooms have events in a range of committed stream
//     positions, which is fixed once committed. Every woken waiter asks
//     it for the same range; the first read serves the others.
type syncShared struct {
	eventBytes *cache.LRU[eventBytesKey, *eventBytes]
	visibility *cache.LRU[visKey, visibilityAt]

	mu           sync.Mutex
	roomsChanged map[[2]int64]*roomsChangedEntry
	roomsOrder   [][2]int64 // oldest first, at most maxRoomsChanged
}

// Base sizes at cache factor 1: a formatted event is its stored JSON and
// about as much again (~1–2 KiB for a message), a visibility entry ~100
// bytes.
const (
	eventBytesCacheBase = 2_000
	visibilityCacheBase = 20_000
	maxRoomsChanged     = 64
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

type roomsChangedEntry struct {
	done  chan struct{}
	rooms map[string]bool
	err   error
}

func newSyncShared(r *cache.Registry) *syncShared {
	return &syncShared{
		eventBytes: cache.NewLRU[eventBytesKey, *eventBytes](r, "sync_event_json",
			"event → client-format JSON without unsigned, shared by every /sync answer", eventBytesCacheBase),
		visibility: cache.NewLRU[visKey, visibilityAt](r, "sync_visibility",
			"(state group, user) → history visibility and membership (immutable)", visibilityCacheBase),
		roomsChanged: map[[2]int64]*roomsChangedEntry{},
	}
}

// roomsWithEventsBetween is store.RoomsWithEventsBetween for committed
// ranges, read once for all the requests that ask at the same time. The
// map is shared: callers only read it.
func (s *Server) roomsWithEventsBetween(ctx context.Context, after, upTo int64) (map[string]bool, error) {
	if committed, _ := s.store.MaxStreamPos(ctx); upTo > committed {
		return s.store.RoomsWithEventsBetween(ctx, after, upTo) // not all committed
	}
	sh := s.shared
	key := [2]int64{after, upTo}
	sh.mu.Lock()
	e, ok := sh.roomsChanged[key]
	if !ok {
		e = &roomsChangedEntry{done: make(chan struct{})}
		sh.roomsChanged[key] = e
		sh.roomsOrder = append(sh.roomsOrder, key)
		if len(sh.roomsOrder) > maxRoomsChanged {
			delete(sh.roomsChanged, sh.roomsOrder[0])
			sh.roomsOrder = sh.roomsOrder[1:]
		}
	}
	sh.mu.Unlock()
	if ok {
		select {
		case <-e.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if e.err == nil {
			return e.rooms, nil
		}
		// The reader's error (its request ended, say) is not ours.
		return s.store.RoomsWithEventsBetween(ctx, after, upTo)
	}
	e.rooms, e.err = s.store.RoomsWithEventsBetween(ctx, after, upTo)
	if e.err != nil {
		sh.mu.Lock()
		if sh.roomsChanged[key] == e {
			delete(sh.roomsChanged, key)
		}
		sh.mu.Unlock()
	}
	close(e.done)
	return e.rooms, e.err
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
	ce, err := f.core(e)
	if err != nil {
		return nil, err
	}
	core, err := json.Marshal(ce)
	if err != nil {
		return nil, err
	}
	if f.shared != nil {
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
	for _, e := range evs {
		core, err := f.coreJSON(e)
		if err != nil {
			return nil, err
		}
		u, err := f.unsignedFor(ctx, e, p)
		if err != nil {
			return nil, err
		}
		ub, err := json.Marshal(u)
		if err != nil {
			return nil, err
		}
		raw := make([]byte, 0, len(core)+len(ub)+len(`,"unsigned":`))
		raw = append(raw, core[:len(core)-1]...)
		raw = append(raw, `,"unsigned":`...)
		raw = append(raw, ub...)
		raw = append(raw, '}')
		out = append(out, raw)
	}
	return out, nil
}
