package server

import (
	"context"
	"slices"

	"hearth/server/rooms"
	"hearth/server/storage"
)

// An initial /sync (no since token) sends every room of the user, and built
// room by room it costs several queries per room: the timeline, history
// visibility, the state at the timeline's start, the members, the state
// events, the bundled aggregations. On PostgreSQL each is a round trip, so
// a user in hundreds of rooms waits on thousands of them. syncBatch reads
// each kind once for all rooms before the per-room work, which then takes
// what it needs from the batch and falls back to its own query whenever
// the batch does not cover the question exactly (a narrow filter that
// scans further back, a timeline cut by a state change): answers are
// those of the per-room path by construction. Formatting is deferred too,
// so the events of all rooms are formatted in one pass (finishBatch).

// syncBatch is what an initial /sync read for all its rooms at once. Its
// methods are nil-safe: a nil batch reads from the store.
type syncBatch struct {
	// limit is the number of events syncTimeline reads first for a room;
	// ranges the (after, upTo] it reads them from.
	limit    int
	ranges   map[string]storage.RoomRange
	timeline map[string][]*storage.Event // newest first
	known    *knownVisibility
	states   *storage.RoomStates
	members  map[string]map[string]string
	// pending rooms await their state events and formatting (finishBatch).
	pending []*pendingRoom
}

// pendingRoom is a room whose events finishBatch formats.
type pendingRoom struct {
	rs       *roomSync
	jr       *joinedRoom
	stateOut *eventsBlock
	state    storage.StateKeyMap
	timeline []*storage.Event
}

// prefetchInitial reads, for the rooms an initial sync will build through
// syncRoomTimeline, the first timeline batch, the visibility of its
// events, the state from its oldest event on, and the joined rooms'
// members.
func (s *Server) prefetchInitial(ctx context.Context, req *syncRequest, mems []storage.RoomMembership, forgotten map[string]bool,
	to streamToken) (*syncBatch, error) {
	rf := req.filter.room()
	b := &syncBatch{
		limit:  min(req.filter.timelineLimit()+1, 500), // syncTimeline's first read
		ranges: map[string]storage.RoomRange{},
		known:  &knownVisibility{current: map[string]string{}},
	}
	var ranges []storage.RoomRange
	var joined []string
	for _, m := range mems {
		if !allowsRoom(rf.Rooms, rf.NotRooms, m.RoomID) || m.Stripped != nil {
			continue
		}
		r := storage.RoomRange{RoomID: m.RoomID, UpTo: to.Events}
		switch m.Membership {
		case rooms.MembershipJoin:
			joined = append(joined, m.RoomID)
		case rooms.MembershipLeave, rooms.MembershipBan:
			if !rf.IncludeLeave || forgotten[m.RoomID] {
				continue
			}
			r.UpTo = min(r.UpTo, m.StreamPos)
		default:
			continue
		}
		ranges = append(ranges, r)
		b.ranges[m.RoomID] = r
		// RoomsOfUser read the membership from the current state, as
		// filterVisible would.
		b.known.current[m.RoomID] = m.Membership
	}
	if len(ranges) == 0 {
		return b, nil
	}
	var err error
	if b.timeline, err = s.store.LatestRoomEvents(ctx, ranges, b.limit); err != nil {
		return nil, err
	}
	var groups []int64
	for i, r := range ranges {
		evs := b.timeline[r.RoomID]
		for _, e := range evs {
			groups = append(groups, e.StateGroup)
		}
		// The state is wanted at the timeline's start or later: from
		// just before the oldest event read on.
		if len(evs) > 0 {
			ranges[i].After = evs[len(evs)-1].StreamPos - 1
		} else {
			ranges[i].After = r.UpTo
		}
	}
	if b.known.groups, err = s.visibilityOfGroups(ctx, groups, req.me.UserID); err != nil {
		return nil, err
	}
	if b.states, err = s.store.StatesAndChanges(ctx, ranges); err != nil {
		return nil, err
	}
	if b.members, err = s.store.MembersOfRooms(ctx, joined); err != nil {
		return nil, err
	}
	return b, nil
}

// roomEvents is store.RoomEvents(roomID, after, upTo, limit, backwards).
func (b *syncBatch) roomEvents(ctx context.Context, s *Server, roomID string, after, upTo int64, limit int) ([]*storage.Event, error) {
	if b != nil {
		if r, ok := b.ranges[roomID]; ok && r.After == after && r.UpTo == upTo && limit == b.limit {
			return b.timeline[roomID], nil
		}
	}
	return s.roomEventsShared(ctx, roomID, after, upTo, limit)
}

// visibility is what the batch knows for filterVisibleKnown.
func (b *syncBatch) visibility() *knownVisibility {
	if b == nil {
		return nil
	}
	return b.known
}

// stateAndChangesAfter is store.StateAndChangesAfter.
func (b *syncBatch) stateAndChangesAfter(ctx context.Context, st *storage.Store, roomID string, pos int64) (storage.StateKeyMap, []storage.StateChange, error) {
	if b != nil {
		if state, later, ok := b.states.StateAndChangesAfter(roomID, pos); ok {
			return state, later, nil
		}
	}
	return st.StateAndChangesAfter(ctx, roomID, pos)
}

// roomMembers is store.Members.
func (b *syncBatch) roomMembers(ctx context.Context, st *storage.Store, roomID string) (map[string]string, error) {
	if b != nil {
		if m, ok := b.members[roomID]; ok {
			return m, nil
		}
	}
	return st.Members(ctx, roomID)
}

// later queues the rest of syncRoomTimeline's work on a room for finishBatch:
// reading its state events, and formatting them and the timeline.
func (b *syncBatch) later(rs *roomSync, jr *joinedRoom, stateOut *eventsBlock, state storage.StateKeyMap, timeline []*storage.Event) {
	b.pending = append(b.pending, &pendingRoom{rs: rs, jr: jr, stateOut: stateOut, state: state, timeline: timeline})
}

// finishBatch does the queued rooms' work as syncRoomTimeline would have, with
// one read of all their state events and one formatting pass.
func (s *Server) finishBatch(ctx context.Context, req *syncRequest, b *syncBatch) error {
	if b == nil || len(b.pending) == 0 {
		return nil
	}
	// Events already read (the timelines, as stored) need no second read.
	raw := map[string]*storage.Event{}
	for _, evs := range b.timeline {
		for _, e := range evs {
			raw[e.EventID] = e
		}
	}
	var need []string
	for _, p := range b.pending {
		for _, id := range p.state {
			if raw[id] == nil {
				need = append(need, id)
			}
		}
	}
	got, err := s.store.EventsByID(ctx, need)
	if err != nil {
		return err
	}
	for _, e := range got {
		raw[e.EventID] = e
	}
	stf := req.filter.room().State
	var all []*storage.Event
	stateEvs := make([][]*storage.Event, len(b.pending))
	for i, p := range b.pending {
		for _, id := range p.state {
			// An ID with no event is left out, as EventsByID leaves it.
			if e := raw[id]; e != nil && (stf == nil || stf.allowsEvent(e)) {
				stateEvs[i] = append(stateEvs[i], e)
			}
		}
		slices.SortFunc(stateEvs[i], byStreamPos)
		all = append(all, stateEvs[i]...)
		all = append(all, p.timeline...)
	}
	f := s.formatterFor(req.me)
	f.omitRoomID = true
	formatted, err := f.format(ctx, all)
	if err != nil {
		return err
	}
	for i, p := range b.pending {
		for _, part := range []struct {
			n   int
			out *[]any
		}{{len(stateEvs[i]), &p.stateOut.Events}, {len(p.timeline), &p.jr.Timeline.Events}} {
			for _, ce := range formatted[:part.n] {
				*part.out = append(*part.out, applyEventFields(ce, req.filter.EventFields))
			}
			formatted = formatted[part.n:]
		}
		if lazy := p.rs.lazy; lazy != nil {
			for _, e := range append(stateEvs[i], p.timeline...) {
				if e.Type == rooms.TypeMember && e.StateKey != nil {
					lazy.sent(p.rs.mem.RoomID, *e.StateKey, e.EventID)
				}
			}
		}
	}
	return nil
}
