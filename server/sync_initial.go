package server

import (
	"context"
	"maps"
	"slices"
	"strings"

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
// "All rooms" are those of one chunk: the answer is built and written a
// chunk of rooms at a time (roomStream).

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
	f.omitRoomID, f.peekShared = true, true
	formatted, err := formatSyncEvents(ctx, f, req.filter.EventFields, all)
	if err != nil {
		return err
	}
	for i, p := range b.pending {
		for _, part := range []struct {
			n   int
			out *[]any
		}{{len(stateEvs[i]), &p.stateOut.Events}, {len(p.timeline), &p.jr.Timeline.Events}} {
			*part.out = append(*part.out, formatted[:part.n]...)
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

// initialChunk is how many rooms of an initial sync are built at once. An
// answer built whole held every room's events, parsed and formatted, until
// the last byte went out (~10 MB for 200 rooms of 20 messages, twice that
// in heap under Go's GC pacing); built and written a chunk at a time, it
// holds one chunk's. The batched reads stay batched within a chunk.
const initialChunk = 32

// roomStream builds the rooms of an initial sync as the answer is written:
// syncRooms's JSON, section by section (join, invite, leave, knock) and
// in each section room by room in the order of their IDs, as the maps of
// a whole answer are written (the same bytes). A chunk is built in one of
// the build places (syncShared.builds), let go before it is written, so a
// slow reader holds none. An error once the answer has started aborts it
// (writeSync).
type roomStream struct {
	s    *Server
	ctx  context.Context
	rb   *roomsBuild
	mems []storage.RoomMembership
}

// appendTo writes the rooms into a, flushing each chunk to the client
// once written.
func (st *roomStream) appendTo(a *jsonAppender) error {
	rf := st.rb.req.filter.room()
	chunkSize := initialChunk
	if n := st.s.initialChunk.Load(); n > 0 {
		chunkSize = int(n)
	}
	mems := slices.Clone(st.mems)
	slices.SortFunc(mems, func(a, b storage.RoomMembership) int { return strings.Compare(a.RoomID, b.RoomID) })
	a.open()
	sections := []struct {
		name  string
		kinds []string
		chunk int
	}{
		{"join", []string{rooms.MembershipJoin}, chunkSize},
		{"invite", []string{rooms.MembershipInvite}, len(mems)},
		{"leave", []string{rooms.MembershipLeave, rooms.MembershipBan}, chunkSize},
		{"knock", []string{rooms.MembershipKnock}, len(mems)},
	}
	for _, sec := range sections {
		var of []storage.RoomMembership
		for _, m := range mems {
			if slices.Contains(sec.kinds, m.Membership) && allowsRoom(rf.Rooms, rf.NotRooms, m.RoomID) {
				of = append(of, m)
			}
		}
		opened := false
		for chunk := range slices.Chunk(of, max(sec.chunk, 1)) {
			part, err := st.build(chunk)
			if err != nil {
				return err
			}
			appendSection(a, sec.name, &opened, part)
			if a.err != nil {
				return a.err
			}
			if err := a.flush(); err != nil {
				return err
			}
		}
		if opened {
			a.close()
		}
	}
	a.close()
	return nil
}

// build builds the rooms of chunk, all of one section, in a build place.
func (st *roomStream) build(chunk []storage.RoomMembership) (*syncRooms, error) {
	s, ctx, rb := st.s, st.ctx, st.rb
	done, err := s.shared.build(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	part := &syncResponse{Rooms: syncRooms{Join: map[string]*joinedRoom{}, Invite: map[string]any{}, Leave: map[string]*leftRoom{}, Knock: map[string]any{}}}
	var batch *syncBatch
	if k := chunk[0].Membership; k != rooms.MembershipInvite && k != rooms.MembershipKnock {
		if batch, err = s.prefetchInitial(ctx, rb.req, chunk, rb.forgotten, rb.to); err != nil {
			return nil, err
		}
	}
	if err := s.syncRoomsInto(ctx, rb, chunk, batch, part); err != nil {
		return nil, err
	}
	if err := s.finishBatch(ctx, rb.req, batch); err != nil {
		return nil, err
	}
	if chunk[0].Membership == rooms.MembershipJoin {
		if err := s.syncUnreadCounts(ctx, rb.req, rb.to, part); err != nil {
			return nil, err
		}
		var joined []string
		for _, m := range chunk {
			joined = append(joined, m.RoomID)
		}
		s.syncTyping(rb.req, rb.since, joined, part)
	}
	return &part.Rooms, nil
}

// appendSection writes the entries of part's section name, opening the
// section's object before the first, in the order of their room IDs.
func appendSection(a *jsonAppender, name string, opened *bool, part *syncRooms) {
	var write func(string)
	var ids []string
	switch name {
	case "join":
		ids = slices.Collect(maps.Keys(part.Join))
		write = func(id string) { a.joinedRoom(part.Join[id]) }
	case "invite":
		ids = slices.Collect(maps.Keys(part.Invite))
		write = func(id string) { a.value(part.Invite[id]) }
	case "leave":
		ids = slices.Collect(maps.Keys(part.Leave))
		write = func(id string) { a.leftRoom(part.Leave[id]) }
	case "knock":
		ids = slices.Collect(maps.Keys(part.Knock))
		write = func(id string) { a.value(part.Knock[id]) }
	}
	slices.Sort(ids)
	for _, id := range ids {
		if !*opened {
			a.field(name)
			a.open()
			*opened = true
		}
		a.field(id)
		write(id)
	}
}
