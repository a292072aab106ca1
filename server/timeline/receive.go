package timeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"

	"hearth/server/rooms"
	"hearth/server/storage"
)

// Kind is what a batch of received events is to the room.
type Kind int

const (
	// Live events are new: sent to this server as they happen. They may
	// fork the room; its current state is then the resolution of the
	// states at every forward extremity.
	Live Kind = iota
	// Backfill events are older history fetched on request. They take
	// positions an incremental /sync never sees and change neither the
	// forward extremities nor the current state.
	Backfill
	// Outlier events are known only as auth events or state (an auth
	// chain, the state a join brings): stored, checked against their own
	// auth events, not placed in the timeline.
	Outlier
)

func (k Kind) String() string {
	switch k {
	case Live:
		return "live"
	case Backfill:
		return "backfill"
	}
	return "outlier"
}

// Status is what became of one received event.
type Status int

const (
	// Accepted: stored and placed (or, for an outlier, stored).
	Accepted Status = iota
	// Known: already stored; nothing changed.
	Known
	// Rejected: stored as rejected (it failed the auth rules against its
	// auth events or the state before it); it changes nothing.
	Rejected
	// SoftFailed: stored as soft-failed (it failed the auth rules against
	// the room's current state); it changes nothing and is not shown.
	SoftFailed
	// Dropped: not stored (malformed, bad signature, wrong room, or
	// missing events that could not be fetched).
	Dropped
)

func (s Status) String() string {
	return [...]string{"accepted", "known", "rejected", "soft-failed", "dropped"}[s]
}

// Result is the outcome for one received event.
type Result struct {
	EventID string
	Status  Status
	// Err says why an event was rejected, soft-failed or dropped.
	Err error
}

// maxFetches bounds the events fetched for one received batch (missing
// auth events), so a hostile server cannot make this one walk a huge DAG.
const maxFetches = 500

// Receive checks and persists events of one room built elsewhere, sent by
// origin (the server to fetch missing events from). Events are processed
// oldest first (by depth); each gets a Result in the order given. The
// error is for failures of this server (the database), not of the events.
func (t *Timeline) Receive(ctx context.Context, origin string, kind Kind, pdus []*rooms.Event) ([]Result, error) {
	if len(pdus) == 0 {
		return nil, nil
	}
	rc, err := t.receiver(ctx, origin, kind, pdus[0].RoomID())
	if err != nil {
		return nil, err
	}
	order := make([]int, len(pdus))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(pdus[a].Depth(), pdus[b].Depth()) })
	results := make([]Result, len(pdus))
	for _, i := range order {
		if results[i], err = rc.receive(ctx, pdus[i], nil); err != nil {
			return results, err
		}
	}
	return results, rc.flushOutliers(ctx)
}

// receiver is the work on one received batch.
type receiver struct {
	t      *Timeline
	origin string
	kind   Kind
	room   *storage.Room
	rv     *rooms.RoomVersion
	// known are events checked during this batch (with their rejected
	// flag), for the auth checks of the events after them.
	known map[string]*rooms.Event
	// outliers wait to be written by flushOutliers.
	outliers []*storage.NewEvent
	// stored caches which events the store has (true: as an outlier), for
	// events looked up in bulk beforehand.
	stored  map[string]bool
	fetches int
	// newIDs are the events stored by this batch, for the redactions
	// that waited for them.
	newIDs []string
	// relay: accepted events go on to the room's other servers (a
	// membership another server asked this one to accept: send_join).
	relay bool
	// fillingGap: the events being received fill a gap (fillGap); they
	// do not ask for gaps of their own.
	fillingGap bool
}

func (t *Timeline) receiver(ctx context.Context, origin string, kind Kind, roomID string) (*receiver, error) {
	room, err := t.store.RoomByID(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrUnknownRoom
	}
	if err != nil {
		return nil, err
	}
	rv, ok := rooms.LookupVersion(room.RoomVersion)
	if !ok {
		return nil, fmt.Errorf("timeline: room %s has unknown version %q", roomID, room.RoomVersion)
	}
	return &receiver{t: t, origin: origin, kind: kind, room: room, rv: rv, known: map[string]*rooms.Event{}, stored: map[string]bool{}}, nil
}

// lookupStored records which of ids the store has, asking it only about
// those not looked up before.
func (rc *receiver) lookupStored(ctx context.Context, ids []string) error {
	var ask []string
	for _, id := range ids {
		if _, ok := rc.stored[id]; !ok {
			ask = append(ask, id)
		}
	}
	if len(ask) == 0 {
		return nil
	}
	found, err := rc.t.store.EventsExist(ctx, ask)
	if err != nil {
		return err
	}
	maps.Copy(rc.stored, found)
	return nil
}

func dropped(e *rooms.Event, format string, args ...any) Result {
	return Result{EventID: e.ID(), Status: Dropped, Err: fmt.Errorf(format, args...)}
}

// stateBefore is the state before an event: its group and its map.
type stateBefore struct {
	group int64
	ids   rooms.StateMap
}

// receive runs the checks on one event in the spec's order and persists
// it. sb, when given, is the state before the event (a join's state).
func (rc *receiver) receive(ctx context.Context, e *rooms.Event, sb *stateBefore) (Result, error) {
	t := rc.t
	// 1. Format and room version (ParseEvent checked the format).
	if e.RoomID() != rc.room.RoomID {
		return dropped(e, "event is for room %s, not %s", e.RoomID(), rc.room.RoomID), nil
	}
	if e.Version() != rc.rv {
		return dropped(e, "event is of room version %s, the room is %s", e.Version().ID, rc.rv.ID), nil
	}
	if _, ok := rc.known[e.ID()]; ok {
		return Result{EventID: e.ID(), Status: Known}, nil
	}
	if err := rc.lookupStored(ctx, []string{e.ID()}); err != nil {
		return Result{}, err
	}
	if outlier, ok := rc.stored[e.ID()]; ok && (!outlier || rc.kind == Outlier) {
		return Result{EventID: e.ID(), Status: Known}, nil
	}
	// 2–3. Signatures, then hashes: a content hash mismatch keeps the
	// event, redacted.
	if t.keys == nil {
		return dropped(e, "no key lookup to verify signatures with"), nil
	}
	checked, err := rooms.CheckReceived(e, t.keys)
	if err != nil {
		return Result{EventID: e.ID(), Status: Dropped, Err: err}, nil
	}
	e = checked
	// A live event's missing prev events are fetched first (fillGap), as
	// Synapse does: they may be the auth events it cites. An event pulled
	// that way may start from the state its origin gives for it, whose
	// auth chain then brings the auth events it cites. The checks below
	// keep their order; only the fetching comes first.
	if sb == nil && rc.kind == Live {
		if sb, err = rc.stateBefore(ctx, e); err != nil {
			var miss *missingError
			if errors.As(err, &miss) {
				return Result{EventID: e.ID(), Status: Dropped, Err: err}, nil
			}
			return Result{}, err
		}
	}
	// 4. Auth against the event's own auth_events.
	authEvs, err := rc.authEvents(ctx, e)
	if err != nil {
		var miss *missingError
		if errors.As(err, &miss) {
			return Result{EventID: e.ID(), Status: Dropped, Err: err}, nil
		}
		return Result{}, err
	}
	create, err := rc.createEvent(ctx, e)
	if err != nil {
		var miss *missingError
		if errors.As(err, &miss) {
			return Result{EventID: e.ID(), Status: Dropped, Err: err}, nil
		}
		return Result{}, err
	}
	authErr := rooms.AuthorizeByAuthEvents(e, authEvs, create, t.keys)
	if rc.kind == Outlier {
		return rc.addOutlier(e, authErr), nil
	}
	// 5. Auth against the state before the event, from its prev_events.
	if sb == nil {
		if sb, err = rc.stateBefore(ctx, e); err != nil {
			var miss *missingError
			if errors.As(err, &miss) {
				return Result{EventID: e.ID(), Status: Dropped, Err: err}, nil
			}
			return Result{}, err
		}
	}
	if authErr == nil {
		authErr, err = rc.authorizeAgainst(ctx, e, sb.ids, create)
		if err != nil {
			return Result{}, err
		}
	}
	ne := &storage.NewEvent{Event: *storageEvent(e), PrevEvents: e.PrevEventIDs(), StateBefore: sb.group, Backfilled: rc.kind == Backfill,
		Outbound: rc.relay}
	if e.IsState() {
		ne.ReplacesState = sb.ids[e.Key()]
	}
	rc.known[e.ID()] = e
	if authErr != nil {
		e.Rejected, ne.Rejected, ne.RejectReason = true, true, authErr.Error()
		if err := t.store.PersistEvents(ctx, []*storage.NewEvent{ne}, nil); err != nil {
			return known(e, err)
		}
		return Result{EventID: e.ID(), Status: Rejected, Err: authErr}, nil
	}
	if rc.kind == Backfill {
		if err := t.store.PersistEvents(ctx, []*storage.NewEvent{ne}, nil); err != nil {
			return known(e, err)
		}
		return rc.accepted(ctx, e, sb)
	}
	// 6. Auth against the current state, and the new head.
	res, err := rc.commitNew(ctx, e, ne, sb)
	if err != nil {
		return known(e, err)
	}
	if res.Status == Accepted {
		return rc.accepted(ctx, e, sb)
	}
	return res, nil
}

// accepted finishes an event accepted into the room: a redaction is
// applied to its target, and the event waits for the redactions received
// before it (flushOutliers applies them).
func (rc *receiver) accepted(ctx context.Context, e *rooms.Event, sb *stateBefore) (Result, error) {
	if err := rc.redaction(ctx, e, sb); err != nil {
		return Result{}, err
	}
	rc.newIDs = append(rc.newIDs, e.ID())
	return Result{EventID: e.ID(), Status: Accepted}, nil
}

// known turns a persist that lost a race with another receipt of the same
// event (live and backfilled at once, say) into Known; other errors stay.
func known(e *rooms.Event, err error) (Result, error) {
	if errors.Is(err, storage.ErrConflict) {
		return Result{EventID: e.ID(), Status: Known}, nil
	}
	return Result{}, err
}

// addOutlier records an outlier checked against its auth events.
func (rc *receiver) addOutlier(e *rooms.Event, authErr error) Result {
	ne := &storage.NewEvent{Event: *storageEvent(e)}
	if authErr != nil {
		e.Rejected, ne.Rejected, ne.RejectReason = true, true, authErr.Error()
	}
	rc.known[e.ID()] = e
	rc.outliers = append(rc.outliers, ne)
	if authErr != nil {
		return Result{EventID: e.ID(), Status: Rejected, Err: authErr}
	}
	return Result{EventID: e.ID(), Status: Accepted}
}

// flushOutliers writes the outliers checked so far, and applies the
// redactions that waited for the events of the batch.
func (rc *receiver) flushOutliers(ctx context.Context) error {
	if len(rc.outliers) > 0 {
		if err := rc.t.store.PersistOutliers(ctx, rc.outliers); err != nil {
			return err
		}
		for _, o := range rc.outliers {
			if !o.Rejected {
				rc.newIDs = append(rc.newIDs, o.EventID)
			}
		}
		rc.outliers = nil
	}
	ids := rc.newIDs
	rc.newIDs = nil
	return rc.applyPending(ctx, ids)
}

// missingError is an event that refers to events this server does not
// have and could not fetch.
type missingError struct {
	what string
	ids  []string
}

func (e *missingError) Error() string {
	return fmt.Sprintf("missing %s: %s", e.what, strings.Join(e.ids, ", "))
}

// lookup returns events by ID from this batch or the store.
func (rc *receiver) lookup(ctx context.Context, ids []string) (map[string]*rooms.Event, []string, error) {
	out := make(map[string]*rooms.Event, len(ids))
	var need []string
	for _, id := range ids {
		if e, ok := rc.known[id]; ok {
			out[id] = e
		} else {
			need = append(need, id)
		}
	}
	if len(need) == 0 {
		return out, nil, nil
	}
	stored, err := rc.t.store.EventsByID(ctx, need)
	if err != nil {
		return nil, nil, err
	}
	for _, se := range stored {
		e, err := parseStored(rc.rv, se)
		if err != nil {
			return nil, nil, err
		}
		out[se.EventID] = e
	}
	var missing []string
	for _, id := range need {
		if out[id] == nil {
			missing = append(missing, id)
		}
	}
	return out, missing, nil
}

// authEvents returns the event's auth events, fetching missing ones from
// the origin (each checked and stored as an outlier) when a Fetcher is set.
func (rc *receiver) authEvents(ctx context.Context, e *rooms.Event) ([]*rooms.Event, error) {
	found, missing, err := rc.lookup(ctx, e.AuthEventIDs())
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		if err := rc.fetchOutliers(ctx, missing); err != nil {
			return nil, err
		}
		if found, missing, err = rc.lookup(ctx, e.AuthEventIDs()); err != nil {
			return nil, err
		}
		if len(missing) > 0 {
			return nil, &missingError{what: "auth events", ids: missing}
		}
	}
	out := make([]*rooms.Event, 0, len(found))
	for _, id := range e.AuthEventIDs() {
		out = append(out, found[id])
	}
	return out, nil
}

// fetchOutliers fetches events from the origin and checks and records
// them as outliers, their own missing auth events first.
func (rc *receiver) fetchOutliers(ctx context.Context, ids []string) error {
	if rc.t.fetch == nil {
		return &missingError{what: "events (nothing to fetch them with)", ids: ids}
	}
	var fetched []*rooms.Event
	for _, id := range ids {
		if rc.fetches >= maxFetches {
			return &missingError{what: fmt.Sprintf("events (fetched %d for this batch already)", maxFetches), ids: ids}
		}
		rc.fetches++
		e, err := rc.t.fetch.Event(ctx, rc.origin, rc.rv, id)
		if err != nil || e.ID() != id {
			rc.t.log.Debug("could not fetch event", "event_id", id, "origin", rc.origin, "err", err)
			return &missingError{what: "events", ids: []string{id}}
		}
		fetched = append(fetched, e)
	}
	return rc.ingestOutliers(ctx, fetched)
}

// ingestOutliers checks events (an auth chain, a state) oldest first and
// records them as outliers; events that fail the format or signature
// checks are left out.
func (rc *receiver) ingestOutliers(ctx context.Context, evs []*rooms.Event) error {
	evs = slices.Clone(evs)
	slices.SortStableFunc(evs, func(a, b *rooms.Event) int { return cmp.Compare(a.Depth(), b.Depth()) })
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.ID()
	}
	if err := rc.lookupStored(ctx, ids); err != nil {
		return err
	}
	kind := rc.kind
	rc.kind = Outlier
	defer func() { rc.kind = kind }()
	for _, e := range evs {
		// A join's state is thousands of signature checks: let requests
		// waiting for a processor run between events rather than after
		// the scheduler's time slice.
		runtime.Gosched()
		res, err := rc.receive(ctx, e, nil)
		if err != nil {
			return err
		}
		if res.Status == Dropped {
			rc.t.log.Debug("outlier dropped", "event_id", e.ID(), "origin", rc.origin, "err", res.Err)
		}
	}
	return rc.flushOutliers(ctx)
}

// createEvent is the room's create event for a v12 room, whose events do
// not list it among their auth events (nil before v12).
func (rc *receiver) createEvent(ctx context.Context, e *rooms.Event) (*rooms.Event, error) {
	if !rc.rv.RoomIDFromCreateEvent || e.IsCreate() {
		return nil, nil
	}
	id := "$" + strings.TrimPrefix(rc.room.RoomID, "!")
	found, missing, err := rc.lookup(ctx, []string{id})
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		// Not here yet (a join still storing the room's state, say):
		// fetch it like a missing auth event. An event is never rejected
		// for lacking it, only dropped.
		if err := rc.fetchOutliers(ctx, missing); err != nil {
			return nil, err
		}
		if found, missing, err = rc.lookup(ctx, []string{id}); err != nil {
			return nil, err
		}
		if len(missing) > 0 {
			return nil, &missingError{what: "create event", ids: missing}
		}
	}
	return found[id], nil
}

// authorizeAgainst checks e against a state map (loading only the events
// the auth rules consult). The auth error is returned as the first value.
func (rc *receiver) authorizeAgainst(ctx context.Context, e *rooms.Event, ids rooms.StateMap, create *rooms.Event) (error, error) {
	keys := append(e.AuthEventKeys(), storage.StateKey{Type: rooms.TypeCreate})
	want := make([]string, 0, len(keys))
	for _, k := range keys {
		if id, ok := ids[k]; ok {
			want = append(want, id)
		}
	}
	found, missing, err := rc.lookup(ctx, want)
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("timeline: state events %v of a stored state group are missing", missing)
	}
	state := make(rooms.StateEvents, len(keys))
	for _, k := range keys {
		if id, ok := ids[k]; ok {
			state[k] = found[id]
		}
	}
	if create != nil {
		state[storage.StateKey{Type: rooms.TypeCreate}] = create
	}
	return rooms.AuthorizeAgainstState(e, state, rc.t.keys), nil
}

// stateBefore computes the state before a received event: the state after
// its prev event, or the resolution of the states after its prev events.
// When some prev events are unknown (a gap), the origin is asked for them
// (fillGap); an event pulled that way whose own prev events are unknown
// starts from the state the origin gives for it (its events checked and
// stored as outliers). A pushed event still missing prev events after
// that is dropped.
func (rc *receiver) stateBefore(ctx context.Context, e *rooms.Event) (*stateBefore, error) {
	t := rc.t
	prevs := e.PrevEventIDs()
	stored, err := t.store.EventsByID(ctx, prevs)
	if err != nil {
		return nil, err
	}
	placed := 0 // prev events in the timeline (not outliers)
	for _, se := range stored {
		if !se.Outlier {
			placed++
		}
	}
	if rc.kind == Live && placed < len(prevs) && !e.IsCreate() {
		// A gap before a live event: ask for what is missing first.
		if err := rc.fillGap(ctx, e); err != nil {
			return nil, err
		}
		if stored, err = t.store.EventsByID(ctx, prevs); err != nil {
			return nil, err
		}
	}
	byID := make(map[string]*storage.Event, len(stored))
	for _, se := range stored {
		byID[se.EventID] = se
	}
	var groups []int64
	var missing []string
	for _, p := range prevs {
		se := byID[p]
		if se == nil || se.Outlier {
			missing = append(missing, p)
			continue
		}
		if !slices.Contains(groups, se.StateGroup) {
			groups = append(groups, se.StateGroup)
		}
	}
	if len(missing) > 0 && rc.kind == Live && !rc.fillingGap && rc.t.fetch != nil {
		// A live event pushed to this server whose prev events are still
		// unknown once the origin was asked for them: the origin withholds
		// (or cannot give) the history the event builds on. Taking the
		// state it claims for the event would let it become the room's
		// only forward extremity on that state alone, so it is refused, as
		// Synapse does. Events pulled to fill a gap (fillGap) may still
		// start from the state the origin gives: the gap's edge.
		return nil, &missingError{what: "prev events (the origin did not give them)", ids: missing}
	}
	if len(missing) > 0 || len(prevs) == 0 {
		return rc.fetchStateBefore(ctx, e, missing)
	}
	if len(groups) == 1 {
		ids, err := t.store.StateGroup(ctx, groups[0])
		return &stateBefore{group: groups[0], ids: ids}, err
	}
	// An event built on every extremity of the room: its state before is
	// the current state, already resolved.
	unlock := t.lock(rc.room.RoomID)
	var group int64
	if h, ok := t.heads.Get(rc.room.RoomID); ok && sameSet(extIDs(h.exts), prevs) {
		group = h.group
	}
	unlock()
	if group != 0 {
		ids, err := t.store.StateGroup(ctx, group)
		return &stateBefore{group: group, ids: ids}, err
	}
	group, ids, err := t.resolveGroups(ctx, rc.room.RoomID, rc.rv, groups, nil, nil)
	if err != nil {
		return nil, err
	}
	return &stateBefore{group: group, ids: ids}, nil
}

// maxGap bounds the events fetched to fill a gap before a live event; a
// longer gap is crossed by asking for the state at the event instead, and
// its history is backfilled later.
const maxGap = 20

// fillGap fetches the events between the room's forward extremities and a
// live event whose prev events are unknown (POST /get_missing_events) and
// receives them, oldest first, before the event itself. Events of the gap
// whose own prev events are still unknown are placed on the state the
// origin gives for them; they do not start gaps of their own.
func (rc *receiver) fillGap(ctx context.Context, e *rooms.Event) error {
	if rc.t.fetch == nil || rc.fillingGap {
		return nil
	}
	exts, err := rc.t.store.ForwardExtremities(ctx, rc.room.RoomID)
	if err != nil {
		return err
	}
	evs, err := rc.t.fetch.MissingEvents(ctx, rc.origin, rc.rv, rc.room.RoomID, extIDs(exts), []string{e.ID()}, maxGap)
	if err != nil {
		rc.t.log.Debug("could not fetch missing events", "event_id", e.ID(), "origin", rc.origin, "err", err)
		return nil // the state at the event is asked for instead
	}
	slices.SortStableFunc(evs, func(a, b *rooms.Event) int { return cmp.Compare(a.Depth(), b.Depth()) })
	rc.fillingGap = true
	defer func() { rc.fillingGap = false }()
	for _, m := range evs {
		if m.ID() == e.ID() || m.RoomID() != rc.room.RoomID {
			continue
		}
		res, err := rc.receive(ctx, m, nil)
		if err != nil {
			return err
		}
		if res.Status == Dropped {
			rc.t.log.Debug("missing event dropped", "event_id", m.ID(), "origin", rc.origin, "err", res.Err)
		}
	}
	return nil
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// fetchStateBefore asks the origin for the state before e, whose prev
// events (missing) this server lacks.
func (rc *receiver) fetchStateBefore(ctx context.Context, e *rooms.Event, missing []string) (*stateBefore, error) {
	if e.IsCreate() {
		return &stateBefore{ids: rooms.StateMap{}}, nil
	}
	if rc.t.fetch == nil {
		return nil, &missingError{what: "prev events (nothing to fetch the state with)", ids: missing}
	}
	state, chain, err := rc.t.fetch.StateBefore(ctx, rc.origin, rc.rv, rc.room.RoomID, e.ID())
	if err != nil {
		rc.t.log.Debug("could not fetch state", "event_id", e.ID(), "origin", rc.origin, "err", err)
		return nil, &missingError{what: "prev events (the origin did not give the state)", ids: missing}
	}
	return rc.stateFrom(ctx, state, chain)
}

// stateFrom checks and stores a state and its auth chain (from another
// server) as outliers and returns it as a new state group. State events
// that were dropped or rejected are left out of the state.
func (rc *receiver) stateFrom(ctx context.Context, state, chain []*rooms.Event) (*stateBefore, error) {
	if err := rc.ingestOutliers(ctx, append(slices.Clone(chain), state...)); err != nil {
		return nil, err
	}
	ids := rooms.StateMap{}
	for _, s := range state {
		if !s.IsState() {
			continue
		}
		if k, ok := rc.known[s.ID()]; ok && !k.Rejected {
			ids[s.Key()] = s.ID()
		} else if _, stored := rc.stored[s.ID()]; !ok && stored {
			ids[s.Key()] = s.ID() // stored before this batch
		}
	}
	group, err := rc.t.store.StoreStateGroup(ctx, rc.room.RoomID, 0, ids)
	if err != nil {
		return nil, err
	}
	return &stateBefore{group: group, ids: ids}, nil
}

// commitNew persists an accepted live event: the soft-fail check against
// the current state, then the new head. A plan that needs state resolution
// is made with the lock released and applied only if the head did not move
// meanwhile.
func (rc *receiver) commitNew(ctx context.Context, e *rooms.Event, ne *storage.NewEvent, sb *stateBefore) (Result, error) {
	t := rc.t
	roomID := rc.room.RoomID
	for attempt := 0; ; attempt++ {
		unlock := t.lock(roomID)
		h, err := t.head(ctx, roomID)
		if errors.Is(err, ErrUnknownRoom) {
			// The room's first live event (a join through another
			// server): no head yet.
			h, err = rc.emptyHead()
		}
		if err != nil {
			unlock()
			return Result{}, err
		}
		if h.builder.State.Get(rooms.TypeCreate, "") != nil {
			if softErr := rooms.AuthorizeAgainstState(e, h.builder.State, t.keys); softErr != nil {
				ne.SoftFailed, ne.RejectReason = true, softErr.Error()
				err := t.store.PersistEvents(ctx, []*storage.NewEvent{ne}, nil)
				unlock()
				if err != nil {
					return Result{}, err
				}
				return Result{EventID: e.ID(), Status: SoftFailed, Err: softErr}, nil
			}
		}
		var p *plan
		if linear := sameSet(extIDs(h.exts), intersect(e.PrevEventIDs(), extIDs(h.exts))) && sb.group == h.group; linear {
			p = linearPlan(h, e)
		} else if attempt < 3 {
			snap := snapshot{version: h.version, exts: slices.Clone(h.exts), group: h.group}
			unlock()
			if p, err = rc.plan(ctx, snap, e, sb); err != nil {
				return Result{}, err
			}
			unlock = t.lock(roomID)
			if h, err = t.head(ctx, roomID); errors.Is(err, ErrUnknownRoom) {
				h, err = rc.emptyHead()
			}
			if err != nil {
				unlock()
				return Result{}, err
			}
			if h.version != snap.version {
				unlock()
				continue // the head moved: plan again
			}
		} else {
			// The head keeps moving: plan under the lock.
			if p, err = rc.plan(ctx, snapshot{version: h.version, exts: h.exts, group: h.group}, e, sb); err != nil {
				unlock()
				return Result{}, err
			}
		}
		persisted, err := rc.apply(ctx, h, e, ne, p)
		unlock()
		if err != nil {
			return Result{}, err
		}
		t.tell([]*Persisted{persisted})
		return Result{EventID: e.ID(), Status: Accepted}, nil
	}
}

func intersect(a, b []string) []string {
	var out []string
	for _, x := range a {
		if slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// emptyHead is the head of a room with no live event yet.
func (rc *receiver) emptyHead() (*roomHead, error) {
	b := rooms.NewRoomBuilder(rc.rv, rc.room.RoomID, rc.t.key)
	return &roomHead{room: rc.room, rv: rc.rv, builder: b, version: 0}, nil
}

// snapshot is the part of a head a plan is made against.
type snapshot struct {
	version int64
	exts    []storage.Extremity
	group   int64
}

// plan is a head change for one accepted live event.
type plan struct {
	update *storage.HeadUpdate
	exts   []storage.Extremity
	// events are the new current state's events that changed (e among
	// them), and extEvents the events of exts, to rebuild the builder.
	events    map[string]*rooms.Event
	extEvents []*rooms.Event
	// linear: e extends every extremity; the builder accepts it as is.
	linear bool
}

// linearPlan is the common case: e is built on every forward extremity,
// on the current state, so the current state becomes the state after e.
func linearPlan(h *roomHead, e *rooms.Event) *plan {
	p := &plan{linear: true, update: &storage.HeadUpdate{Extremities: []string{e.ID()}},
		exts: []storage.Extremity{{EventID: e.ID(), Depth: e.Depth()}}}
	if e.IsState() {
		c := storage.StateChange{Key: e.Key(), EventID: e.ID()}
		if prev := h.builder.State[e.Key()]; prev != nil {
			c.PrevEventID = prev.ID()
		}
		p.update.Changes = []storage.StateChange{c}
	}
	return p
}

// plan computes the head after e in general: the forward extremities lose
// e's prev events and gain e, and the current state is the resolution of
// the states at all of them. It reads the store and may store a state
// group; it needs no lock.
func (rc *receiver) plan(ctx context.Context, snap snapshot, e *rooms.Event, sb *stateBefore) (*plan, error) {
	t := rc.t
	var others []storage.Extremity
	for _, x := range snap.exts {
		if !slices.Contains(e.PrevEventIDs(), x.EventID) {
			others = append(others, x)
		}
	}
	after := maps.Clone(sb.ids)
	if e.IsState() {
		after[e.Key()] = e.ID()
	}
	p := &plan{exts: append(others, storage.Extremity{EventID: e.ID(), Depth: e.Depth()})}
	newState := after
	if len(others) > 0 {
		groups := make([]int64, len(others))
		for i, x := range others {
			groups[i] = x.StateGroup
		}
		group, resolved, err := t.resolveGroups(ctx, rc.room.RoomID, rc.rv, groups, []rooms.StateMap{after}, map[string]*rooms.Event{e.ID(): e})
		if err != nil {
			return nil, err
		}
		newState = resolved
		p.update = &storage.HeadUpdate{StateGroup: group}
	} else {
		p.update = &storage.HeadUpdate{} // the state after e
	}
	p.update.Extremities = extIDs(p.exts)
	var current rooms.StateMap
	if snap.group != 0 {
		var err error
		if current, err = t.store.StateGroup(ctx, snap.group); err != nil {
			return nil, err
		}
	}
	p.update.Changes = changesBetween(current, newState)
	var need []string
	for _, c := range p.update.Changes {
		if c.EventID != "" {
			need = append(need, c.EventID)
		}
	}
	// The events of this batch (a join's state) are parsed already.
	var err error
	if p.events, err = t.events(ctx, rc.rv, need, rc.known); err != nil {
		return nil, err
	}
	exts, err := t.events(ctx, rc.rv, extIDs(others), nil)
	if err != nil {
		return nil, err
	}
	p.extEvents = append(slices.Collect(maps.Values(exts)), e)
	return p, nil
}

// apply persists e with the planned head and moves the cached head. It
// runs under the room's lock.
func (rc *receiver) apply(ctx context.Context, h *roomHead, e *rooms.Event, ne *storage.NewEvent, p *plan) (*Persisted, error) {
	t := rc.t
	if err := t.store.PersistEvents(ctx, []*storage.NewEvent{ne}, p.update); err != nil {
		t.heads.Remove(rc.room.RoomID)
		return nil, err
	}
	if p.linear {
		h.builder.Accept(e)
	} else {
		state := h.builder.State
		for _, c := range p.update.Changes {
			if c.EventID == "" {
				delete(state, c.Key)
			} else {
				state[c.Key] = p.events[c.EventID]
			}
		}
		t.rebuild(h, state, p.extEvents)
	}
	p.exts[len(p.exts)-1].StateGroup = ne.StateGroup
	h.exts = p.exts
	if p.update.StateGroup != 0 {
		h.group = p.update.StateGroup
	} else {
		h.group = ne.StateGroup
	}
	for i := range p.update.Changes {
		p.update.Changes[i].StreamPos = ne.StreamPos
	}
	h.version = t.versions.Add(1)
	if h.builder.Now == nil {
		h.builder.Now = func() int64 { return t.now().UnixMilli() }
	}
	t.heads.Add(rc.room.RoomID, h)
	return &Persisted{Event: &ne.Event, PDU: e, Changes: p.update.Changes}, nil
}
