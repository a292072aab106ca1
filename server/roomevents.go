package server

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/tidwall/gjson"

	"hearth/server/cache"
	"hearth/server/matrix"
	"hearth/server/rooms"
	"hearth/server/storage"
)

// This file is the local event pipeline: every event a local user causes
// (createRoom, send, state, membership, redaction) is built, authorised and
// persisted here, one room at a time.

// roomState is a room's builder (state, extremities, depth) kept in memory
// between events, with the state group its state is stored under. It is
// only touched under the room's lock.
type roomState struct {
	room    *storage.Room
	builder *rooms.RoomBuilder
	group   int64
}

// roomStates caches roomState per room (a registered LRU, so the dashboard
// shows it and the cache factor sizes it) and serialises writers per room.
type roomStates struct {
	mu    sync.Mutex
	locks map[string]*sync.Mutex
	cache *cache.LRU[string, *roomState]
}

func newRoomStates(reg *cache.Registry) *roomStates {
	return &roomStates{locks: map[string]*sync.Mutex{},
		cache: cache.NewLRU[string, *roomState](reg, "room_builders", "room → state, extremities and depth for building its next event", 256)}
}

// lock takes the room's writer lock; the returned func releases it.
func (rs *roomStates) lock(roomID string) func() {
	rs.mu.Lock()
	l, ok := rs.locks[roomID]
	if !ok {
		l = &sync.Mutex{}
		rs.locks[roomID] = l
	}
	rs.mu.Unlock()
	l.Lock()
	return l.Unlock
}

func (rs *roomStates) get(roomID string) *roomState {
	st, _ := rs.cache.Get(roomID)
	return st
}

func (rs *roomStates) put(roomID string, st *roomState) { rs.cache.Add(roomID, st) }

func (rs *roomStates) drop(roomID string) { rs.cache.Remove(roomID) }

// roomsKey is the server's signing key in the form package rooms uses.
func (s *Server) roomsKey() rooms.SigningKey {
	return rooms.SigningKey{ServerName: s.cfg.ServerName, KeyID: s.key.ID, Private: s.key.Priv}
}

// storeEvents adapts the store to rooms.EventProvider for state resolution.
type storeEvents struct {
	ctx   context.Context
	store *storage.Store
	rv    *rooms.RoomVersion
}

func (p storeEvents) Event(id string) (*rooms.Event, error) {
	se, err := p.store.EventByID(p.ctx, id)
	if err != nil {
		return nil, err
	}
	e, err := rooms.ParseEvent(p.rv, se.JSON)
	if err != nil {
		return nil, err
	}
	e.Rejected = se.Rejected
	return e, nil
}

// loadRoomState builds the room's roomState from the store: the state after
// its forward extremities, resolved when there are several.
func (s *Server) loadRoomState(ctx context.Context, roomID string) (*roomState, error) {
	room, err := s.store.RoomByID(ctx, roomID)
	if err != nil {
		return nil, err
	}
	rv, ok := rooms.LookupVersion(room.RoomVersion)
	if !ok {
		return nil, fmt.Errorf("room %s has unknown version %q", roomID, room.RoomVersion)
	}
	exts, err := s.store.ForwardExtremities(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if len(exts) == 0 {
		return nil, fmt.Errorf("room %s has no forward extremities", roomID)
	}
	provider := storeEvents{ctx: ctx, store: s.store, rv: rv}
	group := exts[0].StateGroup
	var ids storage.StateKeyMap
	if len(exts) == 1 {
		if ids, err = s.store.StateGroup(ctx, group); err != nil {
			return nil, err
		}
	} else {
		states := make([]rooms.StateMap, 0, len(exts))
		for _, x := range exts {
			m, err := s.store.StateGroup(ctx, x.StateGroup)
			if err != nil {
				return nil, err
			}
			states = append(states, toRoomsStateMap(m))
		}
		resolved, err := rooms.ResolveState(rv, states, provider)
		if err != nil {
			return nil, fmt.Errorf("resolve state of %s: %w", roomID, err)
		}
		ids = storage.StateKeyMap{}
		for k, v := range resolved {
			ids[storage.StateKey{Type: k.Type, StateKey: k.StateKey}] = v
		}
		if group, err = s.store.StoreStateGroup(ctx, roomID, 0, ids); err != nil {
			return nil, err
		}
	}
	state := make(rooms.StateEvents, len(ids))
	list := make([]string, 0, len(ids))
	for _, id := range ids {
		list = append(list, id)
	}
	stored, err := s.store.EventsByID(ctx, list)
	if err != nil {
		return nil, err
	}
	for _, se := range stored {
		e, err := rooms.ParseEvent(rv, se.JSON)
		if err != nil {
			return nil, fmt.Errorf("parse state event %s: %w", se.EventID, err)
		}
		state[e.Key()] = e
	}
	extEvents := make([]*rooms.Event, 0, len(exts))
	for _, x := range exts {
		e, err := provider.Event(x.EventID)
		if err != nil {
			return nil, err
		}
		extEvents = append(extEvents, e)
	}
	b := rooms.ResumeRoomBuilder(rv, roomID, s.roomsKey(), state, extEvents)
	b.Now = func() int64 { return s.now().UnixMilli() }
	return &roomState{room: room, builder: b, group: group}, nil
}

func toRoomsStateMap(m storage.StateKeyMap) rooms.StateMap {
	out := make(rooms.StateMap, len(m))
	for k, v := range m {
		out[rooms.StateKey{Type: k.Type, StateKey: k.StateKey}] = v
	}
	return out
}

// newEvent is one event a local user asks for.
type newEvent struct {
	Type     string
	StateKey *string
	Sender   string
	Content  any
	// Device and TxnID make sends idempotent and fill unsigned.transaction_id.
	Device *Device
	TxnID  string
	// IgnoreBlock lets the event into a blocked room: the leaves an admin's
	// room deletion sends for local users after blocking it.
	IgnoreBlock bool
}

// errUnknownRoom answers events for rooms this server has no state for.
var errUnknownRoom = matrix.NotFound("unknown room")

// sendEvents appends events to a room in order under its lock. An event
// the auth rules refuse stops the batch with 403 M_FORBIDDEN and leaves the
// room unchanged from that event on.
func (s *Server) sendEvents(ctx context.Context, roomID string, evs ...newEvent) ([]*storage.Event, error) {
	unlock := s.roomStates.lock(roomID)
	defer unlock()
	st := s.roomStates.get(roomID)
	if st == nil {
		var err error
		if st, err = s.loadRoomState(ctx, roomID); errors.Is(err, storage.ErrNotFound) {
			return nil, errUnknownRoom
		} else if err != nil {
			return nil, err
		}
		s.roomStates.put(roomID, st)
	}
	var out []*storage.Event
	for _, ne := range evs {
		if st.room.Blocked && !ne.IgnoreBlock {
			return out, matrix.Forbidden("this room has been blocked on this server")
		}
		fork := st.builder.Fork()
		e, err := fork.Append(ne.Type, ne.StateKey, ne.Sender, ne.Content)
		var authErr *rooms.AuthError
		if errors.As(err, &authErr) {
			return out, matrix.Forbidden("%s", authErr.Reason)
		}
		if errors.Is(err, rooms.ErrEventTooLarge) {
			return out, matrix.TooLarge("%v", err)
		}
		if errors.Is(err, rooms.ErrBadEvent) {
			// e.g. integers beyond ±(2^53-1) or floats in a v6+ room.
			return out, matrix.BadJSON("%v", err)
		}
		if err != nil {
			return out, fmt.Errorf("build event: %w", err)
		}
		if len(e.JSON()) > maxEventSize {
			return out, matrix.TooLarge("event is larger than %d bytes", maxEventSize)
		}
		stored, err := s.persistLocal(ctx, st, e, ne)
		if err != nil {
			// The cached builder may be ahead of the store now; reload next time.
			s.roomStates.drop(roomID)
			return out, err
		}
		st.builder = fork
		st.group = stored.StateGroup
		out = append(out, stored)
	}
	return out, nil
}

// persistLocal stores an event built on st (the state before it).
func (s *Server) persistLocal(ctx context.Context, st *roomState, e *rooms.Event, ne newEvent) (*storage.Event, error) {
	se := storageEvent(e)
	if ne.Device != nil && ne.TxnID != "" {
		se.SenderDevice, se.TxnID, se.TxnScope = ne.Device.DeviceID, ne.TxnID, txnScope(e.Type(), e.RoomID())
	}
	if e.IsState() {
		if prev := st.builder.State[e.Key()]; prev != nil {
			se.ReplacesState = prev.ID()
		}
	}
	n := &storage.NewEvent{Event: *se, PrevEvents: e.PrevEventIDs(), StateBefore: st.group, UpdateCurrentState: true}
	if _, err := s.store.PersistEvent(ctx, n); err != nil {
		return nil, err
	}
	s.notifier.notifyEvent(&n.Event)
	return &n.Event, nil
}

// storageEvent extracts the columns the store indexes from a PDU.
func storageEvent(e *rooms.Event) *storage.Event {
	se := &storage.Event{EventID: e.ID(), RoomID: e.RoomID(), Type: e.Type(), Sender: e.Sender(), Depth: e.Depth(),
		OriginServerTS: e.OriginServerTS(), JSON: e.JSON(), Membership: e.Membership(), Rejected: e.Rejected}
	if sk, ok := e.StateKey(); ok {
		se.StateKey = &sk
	}
	rel := gjson.GetBytes(e.Content(), `m\.relates_to`)
	se.RelatesTo, se.RelType = rel.Get("event_id").String(), rel.Get("rel_type").String()
	return se
}

// createRoomEvents persists a freshly built room: its row, then its events.
func (s *Server) persistNewRoom(ctx context.Context, room *storage.Room, events []*rooms.Event, b *rooms.RoomBuilder) error {
	unlock := s.roomStates.lock(room.RoomID)
	defer unlock()
	if err := s.store.CreateRoom(ctx, room); err != nil {
		return err
	}
	st := &roomState{room: room, builder: rooms.NewRoomBuilder(b.Version, room.RoomID, s.roomsKey())}
	for _, e := range events {
		stored, err := s.persistLocal(ctx, st, e, newEvent{})
		if err != nil {
			return err
		}
		st.builder.Accept(e)
		st.group = stored.StateGroup
	}
	st.builder.Now = func() int64 { return s.now().UnixMilli() }
	s.roomStates.put(room.RoomID, st)
	return nil
}
