package timeline

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/tidwall/gjson"

	"hearth/server/rooms"
	"hearth/server/storage"
)

// NewEvent is one event a local user, or the server on a user's behalf,
// asks for.
type NewEvent struct {
	Type     string
	StateKey *string
	Sender   string
	Content  any
	// DeviceID, TxnID and TxnScope make client sends idempotent and fill
	// unsigned.transaction_id for the sending device.
	DeviceID, TxnID, TxnScope string
	// TxnChecked, when set, is the mark taken before the caller looked
	// TxnID up in the store and did not find it: Send looks again, under
	// the room's lock, only if a write of that ID ended since.
	TxnChecked TxnMark
	// IgnoreBlock lets the event into a blocked room: the leaves an
	// admin's room deletion sends for local users after blocking it.
	IgnoreBlock bool
}

// Send builds, signs, authorises and persists events in a room, in order,
// on its current head. An event that cannot be built (the auth rules refuse
// it: *rooms.AuthError; too large: rooms.ErrEventTooLarge; not canonical
// JSON: rooms.ErrBadEvent; ErrRoomBlocked) stops the batch: the events
// before it are persisted and returned with the error, the room is
// unchanged from that event on.
//
// Messages (events without a state key) are pipelined: the room's lock is
// released once they are queued for the store's group commit, so the
// room's next message is built on them while they commit, and Send
// returns once they are durable. State events, which the next event's
// state depends on through the group the store gives them, commit under
// the lock.
func (t *Timeline) Send(ctx context.Context, roomID string, evs ...NewEvent) ([]*storage.Event, error) {
	unlock := t.locks.lock(roomID)
	q, err := t.send(ctx, roomID, evs)
	unlock()
	if q == nil {
		return nil, err
	}
	werr := q.p.Wait()
	for _, ne := range q.batch {
		if ne.TxnID != "" {
			t.inflight.dropTxn(txnKey(&ne.Event), q.p)
		}
	}
	if werr != nil {
		// The head built on it is forgotten by the next lock (settle).
		return nil, werr
	}
	t.inflight.drop(roomID, q.p)
	persisted := q.persisted()
	t.tell(persisted)
	out := make([]*storage.Event, len(persisted))
	for i, p := range persisted {
		out[i] = p.Event
	}
	return out, err
}

// queued is a batch of local events handed to the store.
type queued struct {
	p     *storage.Pending
	batch []*storage.NewEvent
	pdus  []*rooms.Event
}

// persisted describes the batch for the observers; call it once q.p ended
// well.
func (q *queued) persisted() []*Persisted {
	out := make([]*Persisted, len(q.batch))
	for i, ne := range q.batch {
		out[i] = &Persisted{Event: &ne.Event, PDU: q.pdus[i], Local: true}
		if ne.IsState() {
			out[i].Changes = []storage.StateChange{{Key: q.pdus[i].Key(), EventID: ne.EventID, PrevEventID: ne.ReplacesState, StreamPos: ne.StreamPos}}
		}
	}
	return out
}

// send is Send under the room's lock (taken without settling: see
// Timeline.lock). It returns the queued batch, nil when nothing was built,
// and the error that stopped the batch.
func (t *Timeline) send(ctx context.Context, roomID string, evs []NewEvent) (*queued, error) {
	messages := !slices.ContainsFunc(evs, func(ne NewEvent) bool { return ne.StateKey != nil })
	// Messages build on the cached head, which may include writes still
	// in flight (after). Anything else, or a head to load from the store,
	// waits for those to end.
	after := t.inflight.get(roomID)
	h, cached := t.heads.Get(roomID)
	if !messages || !cached || (after != nil && after.Done()) {
		t.settle(roomID)
		after = nil
		var err error
		if h, err = t.head(ctx, roomID); err != nil {
			return nil, err
		}
	}
	b := h.builder
	prevs := b.Extremities
	var (
		batch    []*storage.NewEvent
		pdus     []*rooms.Event
		buildErr error
	)
	for _, ne := range evs {
		if h.room.Blocked && !ne.IgnoreBlock {
			buildErr = ErrRoomBlocked
			break
		}
		var replaces string
		if ne.StateKey != nil {
			if prev := b.State.Get(ne.Type, *ne.StateKey); prev != nil {
				replaces = prev.ID()
			}
		}
		if err := t.checkTxn(ctx, roomID, ne); err != nil {
			buildErr = err
			break
		}
		// Append advances the builder only for an event it accepts.
		e, err := b.Append(ne.Type, ne.StateKey, ne.Sender, ne.Content)
		if err != nil {
			buildErr = err
			break
		}
		se := storageEvent(e)
		se.ReplacesState = replaces
		if ne.DeviceID != "" && ne.TxnID != "" {
			se.SenderDevice, se.TxnID, se.TxnScope = ne.DeviceID, ne.TxnID, ne.TxnScope
		}
		batch = append(batch, &storage.NewEvent{Event: *se, PrevEvents: e.PrevEventIDs(), StateBefore: h.group, ChainState: len(batch) > 0, Outbound: true, Fresh: true})
		pdus = append(pdus, e)
	}
	if len(batch) == 0 {
		return nil, buildErr
	}
	head, err := t.localHead(ctx, h, prevs, batch, pdus)
	if err != nil {
		t.heads.Remove(roomID) // the builder is ahead of the store
		return nil, err
	}
	q := &queued{batch: batch, pdus: pdus}
	q.p = t.store.QueueEvents(ctx, batch, head.update, after)
	for _, ne := range batch {
		if ne.TxnID != "" {
			t.inflight.setTxn(txnKey(&ne.Event), q.p)
		}
	}
	if messages {
		// Messages leave the state, and its group, as they were.
		t.inflight.set(roomID, q.p)
		t.advance(h, head, h.group)
		return q, buildErr
	}
	if err := q.p.Wait(); err != nil {
		t.heads.Remove(roomID)
		return nil, err
	}
	t.advance(h, head, batch[len(batch)-1].StateGroup)
	return q, buildErr
}

// checkTxn refuses, with storage.ErrConflict, an event whose client
// transaction ID is taken: by an event stored, or by one queued (which it
// waits for: the caller then finds its event ID). Checked under the room's
// lock, a pipelined message can never fail for it in the store, which
// would fail the messages built on it too.
// The store is not searched again when the caller searched it after
// ne.TxnChecked and no write of the ID ended since: any write of it that
// ended earlier was found then, and any later one is queued or ended
// since. A read less under the lock, where every send of the room waits.
func (t *Timeline) checkTxn(ctx context.Context, roomID string, ne NewEvent) error {
	if ne.TxnID == "" || ne.DeviceID == "" {
		return nil
	}
	key := txnKey(&storage.Event{Sender: ne.Sender, SenderDevice: ne.DeviceID, TxnScope: ne.TxnScope, TxnID: ne.TxnID})
	if p := t.inflight.txn(key); p != nil {
		if p.Wait() == nil {
			return storage.ErrConflict
		}
	}
	if !t.inflight.endedSince(key, ne.TxnChecked) {
		return nil
	}
	_, err := t.store.EventIDByTxn(ctx, ne.Sender, ne.DeviceID, ne.TxnScope, ne.TxnID)
	switch {
	case err == nil:
		return storage.ErrConflict
	case errors.Is(err, storage.ErrNotFound):
		return nil
	default:
		return err
	}
}

// txnKey names an event's client transaction in Timeline.inflight.
func txnKey(e *storage.Event) string {
	return e.Sender + "\x00" + e.SenderDevice + "\x00" + e.TxnScope + "\x00" + e.TxnID
}

// newHead is a head change about to be persisted.
type newHead struct {
	update *storage.HeadUpdate
	// exts are the extremities after it; the last one's state group is
	// known only once persisted when state is 0.
	exts []storage.Extremity
	// state is the new current state when a resolution changed it beyond
	// the batch's own events (nil: the builder already holds it), and
	// extEvents the events of exts to rebuild the builder on.
	state     rooms.StateEvents
	extEvents []*rooms.Event
}

// localHead computes the head after a batch of local events built on
// prevs. Almost always the events extend every extremity, and the current
// state is the state after the last of them. When the room had more
// extremities than one event may reference (20), the others stay
// extremities and the current state is resolved, here, under the lock: a
// rare path for rooms that federation forked widely.
func (t *Timeline) localHead(ctx context.Context, h *roomHead, prevs []string, batch []*storage.NewEvent, pdus []*rooms.Event) (*newHead, error) {
	last := batch[len(batch)-1]
	var changes []storage.StateChange
	seen := map[storage.StateKey]int{}
	for _, ne := range batch {
		if !ne.IsState() {
			continue
		}
		k := storage.StateKey{Type: ne.Type, StateKey: *ne.StateKey}
		if i, ok := seen[k]; ok {
			changes[i].EventID = ne.EventID
			continue
		}
		seen[k] = len(changes)
		changes = append(changes, storage.StateChange{Key: k, EventID: ne.EventID, PrevEventID: ne.ReplacesState})
	}
	var others []storage.Extremity
	for _, x := range h.exts {
		if !slices.Contains(prevs, x.EventID) {
			others = append(others, x)
		}
	}
	exts := append(others, storage.Extremity{EventID: last.EventID, Depth: last.Depth})
	nh := &newHead{update: &storage.HeadUpdate{Extremities: extIDs(exts), Changes: changes}, exts: exts}
	if len(others) == 0 {
		return nh, nil
	}
	t.log.Warn("room has more forward extremities than one event can reference; resolving its state", "room_id", h.room.RoomID, "extremities", len(h.exts))
	after := h.builder.State.IDs() // the builder already holds the state after the batch
	groups := make([]int64, len(others))
	for i, x := range others {
		groups[i] = x.StateGroup
	}
	extra := map[string]*rooms.Event{}
	for _, e := range pdus {
		extra[e.ID()] = e
	}
	group, resolved, err := t.resolveGroups(ctx, h.room.RoomID, h.rv, groups, []rooms.StateMap{after}, extra)
	if err != nil {
		return nil, err
	}
	old, err := t.store.StateGroup(ctx, h.group)
	if err != nil {
		return nil, err
	}
	state, err := t.stateEvents(ctx, h.rv, resolved)
	if err != nil {
		return nil, err
	}
	extEvents, err := t.events(ctx, h.rv, extIDs(others), nil)
	if err != nil {
		return nil, err
	}
	nh.extEvents = append(slices.Collect(maps.Values(extEvents)), pdus[len(pdus)-1])
	nh.update.StateGroup, nh.update.Changes, nh.state = group, changesBetween(old, resolved), state
	for i, c := range nh.update.Changes {
		if j, ok := seen[c.Key]; ok && changes[j].EventID == c.EventID {
			nh.update.Changes[i].PrevEventID = changes[j].PrevEventID
		}
	}
	return nh, nil
}

// advance moves the cached head past a batch whose last event has the
// state group lastGroup. The builder was advanced by Append already, unless
// the state was resolved with other extremities: then it is rebuilt on
// that state.
func (t *Timeline) advance(h *roomHead, nh *newHead, lastGroup int64) {
	if nh.update.StateGroup != 0 {
		h.group = nh.update.StateGroup
	} else {
		h.group = lastGroup
	}
	nh.exts[len(nh.exts)-1].StateGroup = lastGroup
	h.exts = nh.exts
	if nh.state != nil {
		t.rebuild(h, nh.state, nh.extEvents)
	}
	h.version = t.versions.Add(1)
}

// rebuild replaces the head's builder: current state and extremities.
func (t *Timeline) rebuild(h *roomHead, state rooms.StateEvents, exts []*rooms.Event) {
	b := rooms.ResumeRoomBuilder(h.rv, h.room.RoomID, t.key, state, exts)
	b.Now = func() int64 { return t.now().UnixMilli() }
	h.builder = b
}

// CreateRoom persists a room built by rooms.CreateRoom: its row, then its
// events, in one transaction, and keeps b (the builder after the last of
// them) as the room's head.
func (t *Timeline) CreateRoom(ctx context.Context, room *storage.Room, events []*rooms.Event, b *rooms.RoomBuilder) error {
	unlock := t.lock(room.RoomID)
	persisted, err := t.createRoom(ctx, room, events, b)
	unlock()
	t.tell(persisted)
	return err
}

func (t *Timeline) createRoom(ctx context.Context, room *storage.Room, events []*rooms.Event, b *rooms.RoomBuilder) ([]*Persisted, error) {
	if len(events) == 0 {
		return nil, fmt.Errorf("timeline: room %s has no events", room.RoomID)
	}
	if err := t.store.CreateRoom(ctx, room); err != nil {
		return nil, err
	}
	batch := make([]*storage.NewEvent, len(events))
	update := &storage.HeadUpdate{}
	state := map[storage.StateKey]string{}
	for i, e := range events {
		se := storageEvent(e)
		if e.IsState() {
			se.ReplacesState = state[e.Key()]
			state[e.Key()] = e.ID()
		}
		batch[i] = &storage.NewEvent{Event: *se, PrevEvents: e.PrevEventIDs(), ChainState: i > 0, Outbound: true, Fresh: true}
	}
	update.Changes = changesBetween(nil, state)
	last := batch[len(batch)-1]
	update.Extremities = []string{last.EventID}
	if err := t.store.PersistEvents(ctx, batch, update); err != nil {
		return nil, err
	}
	b.Now = func() int64 { return t.now().UnixMilli() }
	t.heads.Add(room.RoomID, &roomHead{room: room, rv: b.Version, builder: b, group: last.StateGroup,
		exts: []storage.Extremity{{EventID: last.EventID, Depth: last.Depth, StateGroup: last.StateGroup}}, version: t.versions.Add(1)})
	out := make([]*Persisted, len(batch))
	for i, ne := range batch {
		out[i] = &Persisted{Event: &ne.Event, PDU: events[i], Local: true}
		if ne.IsState() {
			out[i].Changes = []storage.StateChange{{Key: events[i].Key(), EventID: ne.EventID, PrevEventID: ne.ReplacesState, StreamPos: ne.StreamPos}}
		}
	}
	return out, nil
}

// storageEvent extracts the columns the store indexes from a PDU. What
// comes from the content may hold a NUL character, which PostgreSQL
// cannot store in text: such a membership (a rejected event's: the auth
// rules know no such membership) or relation is left out, on both
// engines alike. (Its IDs, type and state key were refused with a NUL
// character when parsed.)
func storageEvent(e *rooms.Event) *storage.Event {
	se := &storage.Event{EventID: e.ID(), RoomID: e.RoomID(), Type: e.Type(), Sender: e.Sender(), Depth: e.Depth(),
		OriginServerTS: e.OriginServerTS(), JSON: e.JSON(), Membership: withoutNUL(e.Membership()), Rejected: e.Rejected}
	if sk, ok := e.StateKey(); ok {
		se.StateKey = &sk
	}
	rel := gjson.GetBytes(e.Content(), `m\.relates_to`)
	se.RelatesTo, se.RelType = rel.Get("event_id").String(), rel.Get("rel_type").String()
	if strings.IndexByte(se.RelatesTo, 0) >= 0 || strings.IndexByte(se.RelType, 0) >= 0 {
		se.RelatesTo, se.RelType = "", ""
	}
	return se
}

// withoutNUL is s, or "" when s has a NUL character.
func withoutNUL(s string) string {
	if strings.IndexByte(s, 0) >= 0 {
		return ""
	}
	return s
}
