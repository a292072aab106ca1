package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"hearth/server/matrix"
	"hearth/server/push"
	"hearth/server/rooms"
	"hearth/server/storage"
)

// GET /sync (spec: Client-Server API, "Syncing"). A sync token is a pair of
// positions in the stored streams (tokens.go): events, and the aux stream of
// account data and receipts. Everything /sync reports is read from the
// database between the since token and the current positions, so tokens
// stay valid across restarts and the answer never depends on what this
// process happened to see.

const (
	defaultTimelineLimit = 10
	// maxTimelineLimit caps a filter's timeline limit: beyond it clients
	// get limited: true and paginate with /messages.
	maxTimelineLimit = 2000
	// maxSyncTimeout bounds a long poll whatever the client asks.
	maxSyncTimeout = 5 * time.Minute
)

// strippedStateTypes are the state events an invitee or knocker sees
// (spec: "Stripped state"), besides their own membership event.
var strippedStateTypes = []string{rooms.TypeCreate, rooms.TypeJoinRules, "m.room.name", "m.room.avatar",
	"m.room.canonical_alias", "m.room.encryption"}

type eventsBlock struct {
	Events []any `json:"events"`
}

type timelineBlock struct {
	Events    []any  `json:"events"`
	Limited   bool   `json:"limited"`
	PrevBatch string `json:"prev_batch,omitempty"`
}

type roomSummary struct {
	Heroes       []string `json:"m.heroes,omitempty"`
	JoinedCount  int      `json:"m.joined_member_count"`
	InvitedCount int      `json:"m.invited_member_count"`
}

type joinedRoom struct {
	Summary             *roomSummary   `json:"summary,omitempty"`
	State               *eventsBlock   `json:"state,omitempty"`
	StateAfter          *eventsBlock   `json:"state_after,omitempty"`
	Timeline            timelineBlock  `json:"timeline"`
	Ephemeral           eventsBlock    `json:"ephemeral"`
	AccountData         eventsBlock    `json:"account_data"`
	UnreadNotifications map[string]int `json:"unread_notifications"`
	// UnreadThreadNotifications is per thread root, with the filter's
	// unread_thread_notifications (syncUnreadCounts).
	UnreadThreadNotifications map[string]map[string]int64 `json:"unread_thread_notifications,omitempty"`
}

// leftRoom's Timeline is the room build's block, which an initial sync
// fills after all rooms are built (finishBatch).
type leftRoom struct {
	State       *eventsBlock   `json:"state,omitempty"`
	StateAfter  *eventsBlock   `json:"state_after,omitempty"`
	Timeline    *timelineBlock `json:"timeline"`
	AccountData eventsBlock    `json:"account_data"`
}

// syncRooms leaves out an empty section, as Synapse does: a client (and
// MSC4155's tests) may read a present "invite" as "there are invites".
type syncRooms struct {
	Join   map[string]*joinedRoom `json:"join,omitempty"`
	Invite map[string]any         `json:"invite,omitempty"`
	Leave  map[string]*leftRoom   `json:"leave,omitempty"`
	Knock  map[string]any         `json:"knock,omitempty"`
	// stream, in an initial sync, builds the rooms as they are written
	// (roomStream); the maps are then empty.
	stream *roomStream
}

type syncResponse struct {
	NextBatch              string         `json:"next_batch"`
	Rooms                  syncRooms      `json:"rooms"`
	AccountData            eventsBlock    `json:"account_data"`
	Presence               eventsBlock    `json:"presence"`
	ToDevice               eventsBlock    `json:"to_device"`
	DeviceLists            deviceLists    `json:"device_lists"`
	DeviceOneTimeKeysCount map[string]int `json:"device_one_time_keys_count"`
	// Encryption, presence and typing are filled by sync_e2ee.go.
	DeviceUnusedFallbackKeyTypes []string `json:"device_unused_fallback_key_types"`
}

// empty reports whether the answer carries nothing for the client, so a
// long poll should keep waiting.
func (r *syncResponse) empty() bool {
	return len(r.Rooms.Join) == 0 && len(r.Rooms.Invite) == 0 && len(r.Rooms.Leave) == 0 &&
		len(r.Rooms.Knock) == 0 && len(r.AccountData.Events) == 0 && r.e2eeEmpty()
}

// syncRequest is a parsed /sync query.
type syncRequest struct {
	me         *Device
	since      *streamToken
	fullState  bool
	stateAfter bool // use_state_after: state_after replaces state
	filter     *syncFilter
	ignored    map[string]bool // m.ignored_user_list, read once per sync
	// mems are the user's rooms as buildSync read them.
	mems []storage.RoomMembership
}

// GET /_matrix/client/v3/sync
func (s *Server) getSync(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	q := r.URL.Query()
	req := &syncRequest{me: deviceFrom(ctx)}
	if tok := q.Get("since"); tok != "" {
		st, err := parseSyncToken(tok)
		if err != nil {
			return err
		}
		req.since = &st
	}
	var err error
	if req.fullState, err = boolParam(q, "full_state", false); err != nil {
		return err
	}
	if req.stateAfter, err = boolParam(q, "use_state_after", false); err != nil {
		return err
	}
	var timeout time.Duration
	if t := q.Get("timeout"); t != "" {
		ms, err := strconv.ParseInt(t, 10, 64)
		if err != nil || ms < 0 {
			return matrix.InvalidParam("timeout must be a non-negative number of milliseconds")
		}
		timeout = min(time.Duration(ms)*time.Millisecond, maxSyncTimeout)
	}
	if req.filter, err = s.syncFilterParam(ctx, req.me.UserID, q.Get("filter")); err != nil {
		return err
	}
	if err := s.syncSetPresence(ctx, req.me, q.Get("set_presence")); err != nil { // presence.go
		return err
	}
	deadline := time.Now().Add(timeout)
	var timer *time.Timer
	var resp *syncResponse // the last answer built, empty while waiting
	woken := false
	for {
		// Register before reading positions: a change committed after the
		// read then wakes this request (notifier.go).
		wt := s.notifier.register(req.me.UserID)
		quiet := false
		if req.since != nil && !req.fullState && !woken && time.Until(deadline) > 0 {
			// A long poll that nothing happened for since its token (the
			// common case: the client is back with the next_batch it was
			// just given) waits without building an answer. Its rooms are
			// watched before the streams are read, so nothing slips in
			// between.
			var err error
			if quiet, err = s.quietSince(ctx, wt, *req.since); err != nil {
				s.notifier.unregister(wt)
				return err
			}
		}
		woken = false
		if !quiet {
			var joined []string
			var err error
			resp, joined, err = s.syncOnce(ctx, req)
			if err != nil || req.since == nil || req.fullState || !resp.empty() || time.Until(deadline) <= 0 {
				s.notifier.unregister(wt)
				if err != nil {
					return err
				}
				return writeSync(w, resp)
			}
			// Nothing for this user up to next_batch: wait from there.
			next, _ := parseSyncToken(resp.NextBatch)
			req.since = &next
			// Wait for the user's own changes and those of its rooms.
			// The rooms are watched only now, so look once more for
			// anything that came in between.
			s.notifier.watchRooms(wt, joined)
			now, err := s.currentStreamToken(ctx)
			if err != nil {
				s.notifier.unregister(wt)
				return err
			}
			missed, err := s.missedInRooms(ctx, joined, *req.since, now)
			if err != nil || missed {
				s.notifier.unregister(wt)
				if err != nil {
					return err
				}
				continue
			}
		}
		if timer == nil {
			timer = time.NewTimer(time.Until(deadline))
			defer timer.Stop()
		}
		timedOut, err := s.notifier.park(ctx, wt, timer)
		if err != nil {
			return err
		}
		woken = !timedOut
		if timedOut {
			if resp == nil {
				// Waited without building: the answer is built now, up to
				// whatever arrived meanwhile.
				if resp, _, err = s.syncOnce(ctx, req); err != nil {
					return err
				}
			}
			return writeSync(w, resp)
		}
	}
}

// quietSince reports whether nothing a /sync from since would report can
// have happened: the aux and typing streams have not moved, no event came
// in the user's joined rooms, and no membership of the user changed. It
// has w watch the joined rooms before it reads the streams, so a change
// after that read wakes w. It costs a read of the user's rooms instead of
// a whole sync; a since ahead of the streams (a token from before a
// restart) is never quiet, so buildSync brings it back.
func (s *Server) quietSince(ctx context.Context, w *waiter, since streamToken) (bool, error) {
	mems, err := s.store.RoomsOfUser(ctx, w.userID)
	if err != nil {
		return false, err
	}
	var joined []string
	for _, m := range mems {
		if m.StreamPos > since.Events {
			return false, nil
		}
		if m.Membership == rooms.MembershipJoin {
			joined = append(joined, m.RoomID)
		}
	}
	s.notifier.watchRooms(w, joined)
	now, err := s.currentStreamToken(ctx)
	if err != nil {
		return false, err
	}
	if since.Events > now.Events || since.Aux > now.Aux || since.Typing > now.Typing {
		return false, nil
	}
	missed, err := s.missedInRooms(ctx, joined, since, now)
	return !missed && err == nil, err
}

// missedInRooms reports whether something in rooms may have changed
// between next and now, before the waiter watched them. Changes addressed
// to the user need no check: the waiter was registered for those before
// its read.
func (s *Server) missedInRooms(ctx context.Context, rooms []string, next, now streamToken) (bool, error) {
	if now.Aux > next.Aux || now.Typing > next.Typing {
		return true, nil // receipts, typing: rare enough to just look again
	}
	if now.Events <= next.Events || len(rooms) == 0 {
		return false, nil
	}
	changed, err := s.roomsWithEventsBetween(ctx, next.Events, now.Events)
	if err != nil {
		return false, err
	}
	for _, r := range rooms {
		if changed[r] {
			return true, nil
		}
	}
	return false, nil
}

// syncOnce reads the current positions and builds the answer up to them;
// it also returns the rooms the user is joined to. Incremental answers
// are built a few at a time (syncShared.builds).
func (s *Server) syncOnce(ctx context.Context, req *syncRequest) (*syncResponse, []string, error) {
	// The positions are read (which may wait for the push evaluator)
	// before taking a place, so a place is never held while waiting.
	to, err := s.currentStreamToken(ctx)
	if err != nil {
		return nil, nil, err
	}
	if req.since != nil {
		done, err := s.shared.build(ctx)
		if err != nil {
			return nil, nil, err
		}
		defer done()
		// What came in while this request waited for its place is
		// answered too, as far as it can be without waiting again.
		ev, _ := s.store.MaxStreamPos(ctx)
		aux, err := s.store.MaxAuxPos(ctx)
		if err != nil {
			return nil, nil, err
		}
		to.Events = max(to.Events, s.push.Limit(ev))
		to.Aux, to.Typing = max(to.Aux, aux), max(to.Typing, s.notifier.typing.current())
	}
	return s.buildSync(ctx, req, to)
}

// syncFilterParam reads ?filter=: inline JSON or the ID of a stored filter.
// Clients send the same filter with every /sync, so parsed filters are
// kept (syncShared.filters): a filter never changes once stored, and the
// parsed one is only read.
func (s *Server) syncFilterParam(ctx context.Context, userID, v string) (*syncFilter, error) {
	if v == "" {
		return &syncFilter{}, nil
	}
	inline := strings.HasPrefix(strings.TrimSpace(v), "{")
	key := v
	if !inline {
		key = userID + "\x00" + v // a stored filter is its owner's
	}
	if f, ok := s.shared.filters.Get(key); ok {
		return f, nil
	}
	raw := []byte(v)
	if !inline {
		var err error
		if raw, err = s.storedFilter(ctx, userID, v); err != nil {
			return nil, err
		}
	}
	f, err := parseFilter(raw)
	if err != nil {
		return nil, matrix.InvalidParam("invalid filter: %v", err)
	}
	if len(key)+len(raw) <= maxCachedFilter {
		s.shared.filters.Add(key, f)
	}
	return f, nil
}

// currentStreamToken reads the newest positions of both streams.
func (s *Server) currentStreamToken(ctx context.Context) (streamToken, error) {
	ev, err := s.store.MaxStreamPos(ctx)
	if err != nil {
		return streamToken{}, err
	}
	// Events reach /sync with their notification counts (push.go): up to
	// what the push evaluator has recorded, after waiting a little for it
	// to catch up, so a client syncing right after sending sees its event.
	if s.push.Limit(ev) < ev {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		s.push.WaitFor(wctx, ev)
		cancel()
		ev = s.push.Limit(ev)
	}
	aux, err := s.store.MaxAuxPos(ctx)
	return streamToken{Events: ev, Aux: aux, Typing: s.notifier.typing.current()}, err
}

// Filter accessors: nil sub-filters allow everything.
func (f *syncFilter) room() *roomFilter {
	if f.Room == nil {
		return &roomFilter{}
	}
	return f.Room
}

func (f *syncFilter) timelineLimit() int {
	if t := f.room().Timeline; t != nil && t.Limit != nil {
		return min(*t.Limit, maxTimelineLimit)
	}
	return defaultTimelineLimit
}

// ignoredUsers reads the user's m.ignored_user_list account data.
func (s *Server) ignoredUsers(ctx context.Context, userID string) (map[string]bool, error) {
	raw, err := s.store.AccountDataContent(ctx, userID, "", "m.ignored_user_list")
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var c struct {
		IgnoredUsers map[string]json.RawMessage `json:"ignored_users"`
	}
	if json.Unmarshal(raw, &c) != nil {
		return nil, nil
	}
	out := make(map[string]bool, len(c.IgnoredUsers))
	for u := range c.IgnoredUsers {
		out[u] = true
	}
	return out, nil
}

// buildSync assembles the answer for the changes in (since, to].
func (s *Server) buildSync(ctx context.Context, req *syncRequest, to streamToken) (*syncResponse, []string, error) {
	me := req.me
	rf := req.filter.room()
	// Ignored users (spec: "Ignoring Users"): their invites and their
	// non-state timeline events are not sent.
	ignored, err := s.ignoredUsers(ctx, me.UserID)
	if err != nil {
		return nil, nil, err
	}
	req.ignored = ignored
	mems, err := s.store.RoomsOfUser(ctx, me.UserID)
	if err != nil {
		return nil, nil, err
	}
	req.mems = mems
	// A membership read here may be newer than to; every event up to it is
	// committed (events commit in stream order), so move to up to it,
	// once the push evaluator has recorded their notifications (push.go).
	moved := to.Events
	for _, m := range mems {
		to.Events = max(to.Events, m.StreamPos)
	}
	if to.Events > moved {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s.push.WaitFor(wctx, to.Events)
		cancel()
	}
	var since streamToken
	if req.since != nil {
		since = *req.since
		since.Events, since.Aux, since.Typing = min(since.Events, to.Events), min(since.Aux, to.Aux), min(since.Typing, to.Typing)
	}
	// To-device messages first: a backlog may lower to.Aux (sync_e2ee.go).
	toDevice, err := s.syncToDevice(ctx, req, since, &to)
	if err != nil {
		return nil, nil, err
	}
	resp := &syncResponse{
		NextBatch:              to.String(),
		Rooms:                  syncRooms{Join: map[string]*joinedRoom{}, Invite: map[string]any{}, Leave: map[string]*leftRoom{}, Knock: map[string]any{}},
		AccountData:            eventsBlock{Events: []any{}},
		Presence:               eventsBlock{Events: []any{}},
		ToDevice:               eventsBlock{Events: toDevice},
		DeviceLists:            deviceLists{Changed: []string{}, Left: []string{}},
		DeviceOneTimeKeysCount: map[string]int{},
	}
	var changed map[string]bool
	if req.since != nil {
		if changed, err = s.roomsWithEventsBetween(ctx, since.Events, to.Events); err != nil {
			return nil, nil, err
		}
	}

	// Account data: global entries go to the top level, room entries to
	// their room below.
	// An incremental sync reads the aux stream's parts (account data,
	// receipts) only when that stream moved.
	auxMoved := req.since == nil || since.Aux < to.Aux
	var acct []storage.AccountData
	if auxMoved {
		if acct, err = s.store.AccountDataBetween(ctx, me.UserID, since.Aux, to.Aux); err != nil {
			return nil, nil, err
		}
	}
	if req.since == nil {
		acct = s.withoutDeletedAccountData(acct)
	}
	roomAcct := map[string][]any{}
	hasPushRules := false
	// The push rules are account data too (spec: "Push Rules: Events"):
	// clients read them from the initial sync and from the sync after
	// each change. Their content is always the rules as they are now.
	pushRules := func() (any, error) {
		rs, err := s.pushRules(ctx, me.UserID)
		return push.Rulesets{Global: rs}, err
	}
	for _, a := range acct {
		ev := map[string]any{"type": a.Type, "content": json.RawMessage(a.Content)}
		if a.RoomID == "" {
			if a.Type == "m.push_rules" {
				hasPushRules = true
				if ev["content"], err = pushRules(); err != nil {
					return nil, nil, err
				}
			}
			if req.filter.AccountData.allows(a.Type, "") {
				resp.AccountData.Events = append(resp.AccountData.Events, ev)
			}
			continue
		}
		if ad := rf.AccountData; ad == nil || (ad.allows(a.Type, "") && allowsRoom(ad.Rooms, ad.NotRooms, a.RoomID)) {
			roomAcct[a.RoomID] = append(roomAcct[a.RoomID], ev)
		}
	}
	if req.since == nil && !hasPushRules && req.filter.AccountData.allows("m.push_rules", "") {
		content, err := pushRules()
		if err != nil {
			return nil, nil, err
		}
		resp.AccountData.Events = append(resp.AccountData.Events, map[string]any{"type": "m.push_rules", "content": content})
	}

	// Receipts for the rooms the user is in.
	var joined []string
	for _, m := range mems {
		if m.Membership == rooms.MembershipJoin && allowsRoom(rf.Rooms, rf.NotRooms, m.RoomID) {
			joined = append(joined, m.RoomID)
		}
	}
	receipts := map[string][]storage.Receipt{}
	if eph := rf.Ephemeral; auxMoved && (eph == nil || eph.allows("m.receipt", "")) {
		rs, err := s.receiptsBetween(ctx, joined, since.Aux, to.Aux)
		if err != nil {
			return nil, nil, err
		}
		for _, rc := range rs {
			if eph == nil || allowsRoom(eph.Rooms, eph.NotRooms, rc.RoomID) {
				receipts[rc.RoomID] = append(receipts[rc.RoomID], rc)
			}
		}
	}

	// Current-state changes since the last sync, of the rooms with any.
	var stateChanges map[string][]storage.StateChange
	if req.since != nil && len(changed) > 0 {
		var ids []string
		for _, m := range mems {
			if changed[m.RoomID] {
				ids = append(ids, m.RoomID)
			}
		}
		if stateChanges, err = s.stateChangesBetween(ctx, ids, since.Events, to.Events); err != nil {
			return nil, nil, err
		}
	}
	rb := &roomsBuild{req: req, since: since, to: to, lazy: s.lazyMembersFor(req), changed: changed,
		stateChanges: stateChanges, receipts: receipts, roomAcct: roomAcct}
	if req.since == nil && !s.initialPerRoom.Load() {
		// An initial sync builds and writes its rooms a few at a time, as
		// the answer is written (roomStream), reading what each few need
		// in batches (sync_initial.go).
		resp.Rooms.stream = &roomStream{s: s, ctx: ctx, rb: rb, mems: mems}
		if err := s.syncE2EE(ctx, req, since, to, joined, resp); err != nil {
			return nil, nil, err
		}
		return resp, joined, nil
	}
	if err := s.syncRoomsInto(ctx, rb, mems, nil, resp); err != nil {
		return nil, nil, err
	}
	if err := s.syncUnreadCounts(ctx, req, to, resp); err != nil {
		return nil, nil, err
	}
	if err := s.syncE2EE(ctx, req, since, to, joined, resp); err != nil {
		return nil, nil, err
	}
	s.syncTyping(req, since, joined, resp)
	return resp, joined, nil
}

// roomsBuild is what buildSync read for all rooms before building them.
type roomsBuild struct {
	req          *syncRequest
	since, to    streamToken
	lazy         *lazyMembers
	changed      map[string]bool // rooms with events in (since, to]
	stateChanges map[string][]storage.StateChange
	receipts     map[string][]storage.Receipt
	roomAcct     map[string][]any
	// Read when a room first needs them: most incremental syncs have no
	// invite or leave.
	inviteCfg *inviteConfig
	forgotten map[string]bool
}

// syncRoomsInto builds the entries of the rooms mems into resp.Rooms. With
// a batch (an initial sync), the rooms' events are formatted by
// finishBatch.
func (s *Server) syncRoomsInto(ctx context.Context, rb *roomsBuild, mems []storage.RoomMembership, batch *syncBatch, resp *syncResponse) error {
	req, since, to, me := rb.req, rb.since, rb.to, rb.req.me
	rf := req.filter.room()
	ignored, changed, receipts, roomAcct := req.ignored, rb.changed, rb.receipts, rb.roomAcct
	var err error
	for _, m := range mems {
		if !allowsRoom(rf.Rooms, rf.NotRooms, m.RoomID) {
			continue
		}
		isNew := req.since == nil || m.StreamPos > since.Events
		if m.Membership == rooms.MembershipJoin && !isNew && !req.fullState && !changed[m.RoomID] &&
			len(roomAcct[m.RoomID]) == 0 && len(receipts[m.RoomID]) == 0 {
			continue // nothing of this room to say: most rooms of most syncs
		}
		rs := &roomSync{req: req, since: since, to: to, mem: m, lazy: rb.lazy, changes: rb.stateChanges[m.RoomID], batch: batch}
		switch m.Membership {
		case rooms.MembershipJoin:
			if isNew && req.since != nil {
				// A join after since, unless it only changed the profile
				// of a user who was already joined.
				was, err := s.membershipAt(ctx, m.RoomID, me.UserID, since.Events)
				if err != nil {
					return err
				}
				isNew = was != rooms.MembershipJoin
			}
			rs.fresh = isNew
			eph := receiptEvent(me.UserID, receipts[m.RoomID])
			if !isNew && !req.fullState && !changed[m.RoomID] && len(roomAcct[m.RoomID]) == 0 && eph == nil {
				continue
			}
			jr, err := s.syncJoinedRoom(ctx, rs)
			if err != nil {
				return err
			}
			if eph != nil {
				jr.Ephemeral.Events = append(jr.Ephemeral.Events, eph)
			}
			jr.AccountData.Events = append(jr.AccountData.Events, roomAcct[m.RoomID]...)
			if isNew || len(jr.Timeline.Events) > 0 || jr.stateCount() > 0 || len(jr.Ephemeral.Events) > 0 || len(jr.AccountData.Events) > 0 {
				resp.Rooms.Join[m.RoomID] = jr
			}
		case rooms.MembershipInvite, rooms.MembershipKnock:
			if !isNew && !req.fullState {
				continue
			}
			if m.Membership == rooms.MembershipInvite {
				// Invites from ignored users, or that the user's invite
				// filter ignores (MSC4155), are not shown.
				inv, err := s.store.EventByID(ctx, m.EventID)
				if err != nil {
					return err
				}
				if rb.inviteCfg == nil {
					if rb.inviteCfg, err = s.inviteConfigOf(ctx, me.UserID); err != nil {
						return err
					}
				}
				if ignored[inv.Sender] || rb.inviteCfg.rule(inv.Sender) != inviteAllow {
					continue
				}
			}
			stripped, err := s.strippedState(ctx, m)
			if err != nil {
				return err
			}
			if m.Membership == rooms.MembershipInvite {
				resp.Rooms.Invite[m.RoomID] = map[string]any{"invite_state": eventsBlock{Events: stripped}}
			} else {
				resp.Rooms.Knock[m.RoomID] = map[string]any{"knock_state": eventsBlock{Events: stripped}}
			}
		case rooms.MembershipLeave, rooms.MembershipBan:
			// A leave that happened since `since` is always reported,
			// even for a room forgotten since (the client must learn it
			// left). Older leaves appear only in initial or full-state
			// syncs whose filter asks for them (include_leave), and never
			// for forgotten rooms.
			leftSince := req.since != nil && isNew
			if !leftSince && (!rf.IncludeLeave || (req.since != nil && !req.fullState)) {
				continue
			}
			if rb.forgotten == nil && !leftSince {
				if rb.forgotten, err = s.store.ForgottenRooms(ctx, me.UserID); err != nil {
					return err
				}
			}
			if !leftSince && rb.forgotten[m.RoomID] {
				continue
			}
			rs.fresh = req.since == nil || req.fullState
			var jr *joinedRoom
			if m.Stripped != nil {
				// A rejected invite to a room this server is not in:
				// the leave is all there is to show.
				jr, err = s.outOfRoomLeave(ctx, rs)
			} else {
				jr, err = s.syncRoomTimeline(ctx, rs)
			}
			if err != nil {
				return err
			}
			lr := &leftRoom{State: jr.State, StateAfter: jr.StateAfter, Timeline: &jr.Timeline, AccountData: eventsBlock{Events: []any{}}}
			lr.AccountData.Events = append(lr.AccountData.Events, roomAcct[m.RoomID]...)
			resp.Rooms.Leave[m.RoomID] = lr
		}
	}
	return nil
}

// syncUnreadCounts fills the joined rooms' notification counts (spec:
// "Receiving notifications"): the unread notifications up to the answer's
// event position. With the timeline filter's unread_thread_notifications,
// unread_notifications counts the main timeline and each thread with
// unread ones has its own entry; without, it counts them all.
func (s *Server) syncUnreadCounts(ctx context.Context, req *syncRequest, to streamToken, resp *syncResponse) error {
	if len(resp.Rooms.Join) == 0 {
		return nil
	}
	rooms := make(map[string]bool, len(resp.Rooms.Join))
	for id := range resp.Rooms.Join {
		rooms[id] = true
	}
	counts, err := s.store.UnreadCounts(ctx, req.me.UserID, rooms, to.Events)
	if err != nil {
		return err
	}
	tf := req.filter.room().Timeline
	perThread := tf != nil && tf.UnreadThreadNotifs
	for id, threads := range counts {
		jr := resp.Rooms.Join[id]
		var n, h int64
		for thread, c := range threads {
			if perThread && thread != "main" {
				if jr.UnreadThreadNotifications == nil {
					jr.UnreadThreadNotifications = map[string]map[string]int64{}
				}
				jr.UnreadThreadNotifications[thread] = map[string]int64{"notification_count": c.Notifications, "highlight_count": c.Highlights}
				continue
			}
			n, h = n+c.Notifications, h+c.Highlights
		}
		jr.UnreadNotifications = map[string]int{"notification_count": int(n), "highlight_count": int(h)}
	}
	return nil
}

// roomSync is the work on one room of one /sync.
type roomSync struct {
	req       *syncRequest
	since, to streamToken
	mem       storage.RoomMembership
	// fresh: the client has nothing of this room yet (initial sync, a new
	// join, full_state), so it gets the full state.
	fresh bool
	lazy  *lazyMembers
	// changes are the room's current-state changes in (since, to].
	changes []storage.StateChange
	// batch is what an initial sync read for all rooms (nil otherwise).
	batch *syncBatch
}

// membershipAt is the user's membership in the room at stream position pos.
func (s *Server) membershipAt(ctx context.Context, roomID, userID string, pos int64) (string, error) {
	id, err := s.store.StateEntryAt(ctx, roomID, pos, rooms.TypeMember, userID)
	if err != nil || id == "" {
		return "", err
	}
	e, err := s.store.EventByID(ctx, id)
	if err != nil {
		return "", err
	}
	return e.Membership, nil
}

// syncJoinedRoom builds a joined room's entry: timeline, state, summary.
func (s *Server) syncJoinedRoom(ctx context.Context, rs *roomSync) (*joinedRoom, error) {
	jr, err := s.syncRoomTimeline(ctx, rs)
	if err != nil {
		return nil, err
	}
	if !rs.fresh && !rs.req.fullState && !slices.ContainsFunc(rs.changes, func(c storage.StateChange) bool { return c.Key.Type == rooms.TypeMember }) {
		// No membership changed since the last sync: the summary's
		// fields "may be omitted" (spec: RoomSummary), as Synapse does,
		// which spares reading every member of a large room on every
		// incremental sync.
		return jr, nil
	}
	members, err := rs.batch.roomMembers(ctx, s.store, rs.mem.RoomID)
	if err != nil {
		return nil, err
	}
	sum := &roomSummary{}
	var heroes, former []string
	for u, m := range members {
		switch m {
		case rooms.MembershipJoin:
			sum.JoinedCount++
		case rooms.MembershipInvite:
			sum.InvitedCount++
		}
		if u == rs.req.me.UserID {
			continue
		}
		if m == rooms.MembershipJoin || m == rooms.MembershipInvite {
			heroes = append(heroes, u)
		} else {
			former = append(former, u)
		}
	}
	if len(heroes) == 0 {
		heroes = former
	}
	slices.Sort(heroes)
	sum.Heroes = heroes[:min(len(heroes), 5)]
	jr.Summary = sum
	return jr, nil
}

// syncRoomTimeline builds the timeline and state blocks of a joined or
// left room. A left room's timeline ends at the user's leave.
func (s *Server) syncRoomTimeline(ctx context.Context, rs *roomSync) (*joinedRoom, error) {
	req, roomID := rs.req, rs.mem.RoomID
	rf := req.filter.room()
	upTo := rs.to.Events
	if rs.mem.Membership != rooms.MembershipJoin {
		upTo = min(upTo, rs.mem.StreamPos)
	}
	var after int64
	gap := false
	if !rs.fresh {
		after = rs.since.Events
		// Events received across a gap (history this server never got,
		// crossed with the state at them): the timeline starts at the
		// newest such event and is limited, so the client paginates into
		// the gap instead of taking what came before it for everything
		// (as Synapse does with its timeline gaps).
		pos, err := s.lastTimelineGap(ctx, roomID, after, upTo)
		if err != nil {
			return nil, err
		}
		if pos > 0 {
			after, gap = pos-1, true
		}
	}
	tf := rf.Timeline
	if len(req.ignored) > 0 {
		c := roomEventFilter{}
		if tf != nil {
			c = *tf
		}
		c.ignored = req.ignored
		tf = &c
	}
	known := rs.batch.visibility()
	if known == nil && rs.mem.Stripped == nil {
		// RoomsOfUser read the membership from the current state, as
		// filterVisible would (as an initial sync's batch does).
		known = &knownVisibility{current: map[string]string{roomID: rs.mem.Membership}}
	}
	timeline, limited, partial, err := s.syncTimelineWith(ctx, rs.batch, known, req.me.UserID, roomID, after, upTo, req.filter.timelineLimit(), tf)
	if err != nil {
		return nil, err
	}
	// A room joined since the last sync: the client has none of its
	// history, so unless the timeline is all of it, it is limited and the
	// client may paginate (Synapse marks every newly joined room limited).
	if (rs.fresh && req.since != nil && partial) || gap {
		limited = true
	}
	// State (spec: "Syncing"). The room's state at a stream position is
	// its current state as it was then (the current-state deltas),
	// whichever DAG branch its events arrived on.
	var state storage.StateKeyMap
	start, at := timelineStart(timeline, upTo), upTo
	if req.stateAfter {
		// use_state_after (spec v1.16): the state at the end of the
		// timeline; for a room the client has, what changed since.
		if rs.fresh || req.fullState || limited || len(rs.changes) > 0 {
			if state, _, err = rs.batch.stateAndChangesAfter(ctx, s.store, roomID, upTo); err != nil {
				return nil, err
			}
		}
	} else {
		if timeline, limited, state, err = s.classicState(ctx, rs, timeline, limited, upTo); err != nil {
			return nil, err
		}
		start = timelineStart(timeline, upTo)
		at = start
	}
	if state != nil && !rs.fresh && !req.fullState {
		before, err := s.store.StateAt(ctx, roomID, rs.since.Events)
		if err != nil {
			return nil, err
		}
		for k, id := range state {
			if before[k] == id {
				delete(state, k)
			}
		}
	}
	jr := &joinedRoom{
		Timeline:            timelineBlock{Events: []any{}, Limited: limited},
		Ephemeral:           eventsBlock{Events: []any{}},
		AccountData:         eventsBlock{Events: []any{}},
		UnreadNotifications: map[string]int{"notification_count": 0, "highlight_count": 0},
	}
	// prev_batch is where /messages goes on backwards. For a room the
	// client did not have (initial sync, newly joined) whose timeline is all
	// there is, Synapse gives the sync's own position, not the start of the
	// timeline; clients and tests take it as "the room as of this sync"
	// (e.g. /members?at=prev_batch), so Hearth does the same. Paginating
	// from it returns the timeline again, then nothing.
	prevBatch := start
	if rs.fresh && !limited {
		prevBatch = upTo
	}
	jr.Timeline.PrevBatch = streamToken{Events: prevBatch, Aux: rs.to.Aux}.String()
	stateOut := &eventsBlock{Events: []any{}}
	if req.stateAfter {
		jr.StateAfter = stateOut
	} else {
		jr.State = stateOut
	}
	stf := rf.State
	if stf != nil && stf.LazyLoadMembers {
		state, err = s.lazyLoad(ctx, rs, state, timeline, at)
		if err != nil {
			return nil, err
		}
	}
	if rs.batch != nil {
		// An initial sync reads the state events and formats the events
		// of all its rooms at once (finishBatch).
		rs.batch.later(rs, jr, stateOut, state, timeline)
		return jr, nil
	}
	var stateEvs []*storage.Event
	if len(state) > 0 {
		all, err := s.stateEvents(ctx, state)
		if err != nil {
			return nil, err
		}
		for _, e := range all {
			if stf == nil || stf.allowsEvent(e) {
				stateEvs = append(stateEvs, e)
			}
		}
		slices.SortFunc(stateEvs, byStreamPos)
	}
	f := s.formatterFor(req.me)
	f.omitRoomID = true
	for _, part := range []struct {
		evs []*storage.Event
		out *[]any
	}{{stateEvs, &stateOut.Events}, {timeline, &jr.Timeline.Events}} {
		formatted, err := formatSyncEvents(ctx, f, req.filter.EventFields, part.evs)
		if err != nil {
			return nil, err
		}
		*part.out = append(*part.out, formatted...)
	}
	if rs.lazy != nil {
		for _, e := range append(stateEvs, timeline...) {
			if e.Type == rooms.TypeMember && e.StateKey != nil {
				rs.lazy.sent(roomID, *e.StateKey, e.EventID)
			}
		}
	}
	return jr, nil
}

// outOfRoomLeave is the leave section entry of a room this server is not
// in: its timeline is the user's leave event.
func (s *Server) outOfRoomLeave(ctx context.Context, rs *roomSync) (*joinedRoom, error) {
	ev, err := s.store.EventByID(ctx, rs.mem.EventID)
	if err != nil {
		return nil, err
	}
	f := s.formatterFor(rs.req.me)
	f.omitRoomID = true
	formatted, err := f.format(ctx, []*storage.Event{ev})
	if err != nil {
		return nil, err
	}
	jr := &joinedRoom{Timeline: timelineBlock{Events: []any{}}, State: &eventsBlock{Events: []any{}}}
	for _, ce := range formatted {
		jr.Timeline.Events = append(jr.Timeline.Events, applyEventFields(ce, rs.req.filter.EventFields))
	}
	if rs.req.stateAfter {
		jr.State, jr.StateAfter = nil, &eventsBlock{Events: []any{}}
	}
	return jr, nil
}

// stateCount is the number of events in the room's state block.
func (jr *joinedRoom) stateCount() int {
	if jr.StateAfter != nil {
		return len(jr.StateAfter.Events)
	}
	return len(jr.State.Events)
}

// timelineStart is the position the timeline starts after.
func timelineStart(timeline []*storage.Event, upTo int64) int64 {
	if len(timeline) > 0 {
		return timeline[0].StreamPos - 1
	}
	return upTo
}

// classicState computes the state block of a room for a client without
// use_state_after: the full state at the start of the timeline for a room
// the client does not have (or full_state); otherwise what changed between
// since and the start of the timeline, which is nothing unless the timeline
// skipped events (nil when there is nothing to compute).
//
// The client applies the state block, then the timeline. A change of the
// current state that no timeline event carries (forks merged by state
// resolution, a state reset among them) therefore goes into the state
// block with the value its key has at the end of the timeline, unless a
// timeline event sets that key after it. When a timeline event set the key
// before the change, the timeline would undo it: the timeline is cut to
// start after the change, and marked limited.
func (s *Server) classicState(ctx context.Context, rs *roomSync, timeline []*storage.Event, limited bool, upTo int64) ([]*storage.Event, bool, storage.StateKeyMap, error) {
	incremental := !rs.fresh && !rs.req.fullState
	for {
		start := timelineStart(timeline, upTo)
		if incremental && !limited && len(foreignChanges(rs.changes, timeline, start, upTo)) == 0 {
			return timeline, limited, nil, nil
		}
		state, later, err := rs.batch.stateAndChangesAfter(ctx, s.store, rs.mem.RoomID, start)
		if err != nil {
			return nil, false, nil, err
		}
		foreign := foreignChanges(later, timeline, start, upTo)
		cut := int64(0)
		for _, c := range foreign {
			if slices.ContainsFunc(timeline, func(e *storage.Event) bool { return e.StreamPos < c.StreamPos && setsKey(e, c.Key) }) {
				cut = max(cut, c.StreamPos)
			}
		}
		if cut > 0 {
			timeline = slices.DeleteFunc(timeline, func(e *storage.Event) bool { return e.StreamPos <= cut })
			limited = true
			continue
		}
		for _, c := range foreign {
			if !slices.ContainsFunc(timeline, func(e *storage.Event) bool { return setsKey(e, c.Key) }) {
				state[c.Key] = c.EventID // the last change of the key wins
			}
		}
		return timeline, limited, state, nil
	}
}

// foreignChanges are the changes in (start, upTo] whose new event is not in
// the timeline (removals included: a client cannot be told of those).
func foreignChanges(changes []storage.StateChange, timeline []*storage.Event, start, upTo int64) []storage.StateChange {
	var out []storage.StateChange
	for _, c := range changes {
		if c.StreamPos <= start || c.StreamPos > upTo || c.EventID == "" {
			continue
		}
		if !slices.ContainsFunc(timeline, func(e *storage.Event) bool { return e.EventID == c.EventID }) {
			out = append(out, c)
		}
	}
	return out
}

// setsKey reports whether e is a state event of key k.
func setsKey(e *storage.Event, k storage.StateKey) bool {
	return e.StateKey != nil && e.Type == k.Type && *e.StateKey == k.StateKey
}

// syncTimeline returns the newest visible, filter-passing events of the
// room in (after, upTo], at most limit, oldest first, whether older ones
// were left out (limited), and whether any event of the range is missing
// from the answer (partial: limited, or filtered out, or not visible).
// History the user may not see ends the scan.
func (s *Server) syncTimeline(ctx context.Context, userID, roomID string, after, upTo int64, limit int, f *roomEventFilter) (evs []*storage.Event, limited, partial bool, err error) {
	return s.syncTimelineWith(ctx, nil, nil, userID, roomID, after, upTo, limit, f)
}

// syncTimelineWith is syncTimeline taking what it can from an initial
// sync's batch and from known (nil: none).
func (s *Server) syncTimelineWith(ctx context.Context, b *syncBatch, known *knownVisibility, userID, roomID string, after, upTo int64, limit int,
	f *roomEventFilter) (evs []*storage.Event, limited, partial bool, err error) {
	batch := min(limit+1, 500)
	maxScan := 10*(limit+1) + 500
	var kept []*storage.Event
	cursor, scanned := upTo, 0
	for len(kept) <= limit && cursor > after {
		rows, err := b.roomEvents(ctx, s, roomID, after, cursor, batch)
		if err != nil {
			return nil, false, false, err
		}
		if len(rows) == 0 {
			break
		}
		cursor = rows[len(rows)-1].StreamPos - 1
		scanned += len(rows)
		visible, err := s.filterVisibleKnown(ctx, userID, known, rows)
		if err != nil {
			return nil, false, false, err
		}
		shown := visibleByID(visible)
		hidden := false
		for _, e := range rows {
			// The user's own membership events are always theirs to see
			// (their leave above all).
			own := e.Type == rooms.TypeMember && e.StateKey != nil && *e.StateKey == userID
			v := shown[e.EventID]
			if v == nil && !own {
				hidden = true
				partial = true
				break
			}
			if v == nil {
				v = e
			}
			if !f.allowsEvent(e) {
				partial = true
				continue
			}
			kept = append(kept, v)
			if len(kept) > limit {
				break
			}
		}
		if hidden || len(rows) < batch {
			break
		}
		if scanned >= maxScan && len(kept) <= limit {
			// A narrow filter over a long history: stop here and let
			// the client paginate.
			kept = append(kept, nil)
			break
		}
	}
	limited = len(kept) > limit
	if limited {
		kept = kept[:limit]
	}
	slices.Reverse(kept)
	return kept, limited, partial || limited, nil
}

// strippedState is what an invitee or knocker sees of the room: a few
// state events, stripped to type, state_key, sender and content (the
// create event whole), and their own membership event.
func (s *Server) strippedState(ctx context.Context, m storage.RoomMembership) ([]any, error) {
	ev, err := s.store.EventByID(ctx, m.EventID)
	if err != nil {
		return nil, err
	}
	if m.Stripped != nil {
		// A room this server is not in: what the inviting server sent,
		// and the membership event itself.
		var out []any
		if err := json.Unmarshal(m.Stripped, &out); err != nil {
			out = nil
		}
		return append(out, map[string]any{"type": ev.Type, "state_key": ev.StateKey, "sender": ev.Sender, "content": contentOf(ev.JSON)}), nil
	}
	state, err := s.store.StateGroup(ctx, ev.StateGroup)
	if err != nil {
		return nil, err
	}
	ids := []string{m.EventID}
	for _, t := range strippedStateTypes {
		if id, ok := state[storage.StateKey{Type: t}]; ok {
			ids = append(ids, id)
		}
	}
	evs, err := s.store.EventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(evs, byStreamPos)
	out := make([]any, 0, len(evs))
	for _, e := range evs {
		se := map[string]any{"type": e.Type, "state_key": e.StateKey, "sender": e.Sender, "content": contentOf(e.JSON)}
		if e.Type == rooms.TypeCreate {
			// The whole event (spec v1.16, MSC4311; addCreateFields).
			se["event_id"], se["origin_server_ts"], se["room_id"] = e.EventID, e.OriginServerTS, e.RoomID
		}
		out = append(out, se)
	}
	return out, nil
}

// lazyLoad trims state to what lazy-loading clients want (spec: "Lazy-loading
// room members"): all non-member state, and the membership, at the start of
// the timeline, of the timeline's senders and of the user. Without
// include_redundant_members, members this device was already sent are left
// out.
func (s *Server) lazyLoad(ctx context.Context, rs *roomSync, state storage.StateKeyMap, timeline []*storage.Event, start int64) (storage.StateKeyMap, error) {
	wanted := map[string]bool{rs.req.me.UserID: true}
	for _, e := range timeline {
		wanted[e.Sender] = true
	}
	out := storage.StateKeyMap{}
	for k, id := range state {
		if k.Type != rooms.TypeMember {
			out[k] = id
		}
	}
	var atStart storage.StateKeyMap
	for u := range wanted {
		k := storage.StateKey{Type: rooms.TypeMember, StateKey: u}
		id, ok := state[k]
		if !ok && !rs.fresh && !rs.req.fullState {
			// Incremental: the sender's membership may predate since and
			// so not be in the delta; read it at the start of the timeline.
			if atStart == nil {
				var err error
				if atStart, err = s.stateAtShared(ctx, rs.mem.RoomID, start); err != nil {
					return nil, err
				}
			}
			id, ok = atStart[k]
		}
		if !ok {
			continue
		}
		redundant := rs.req.filter.room().State.IncludeRedundantMembers
		if !redundant && rs.lazy != nil && rs.lazy.has(rs.mem.RoomID, u, id) {
			continue
		}
		out[k] = id
	}
	return out, nil
}

// lazyMembers remembers, per device, which membership events it was sent,
// so lazy-loading syncs need not send them again. It lives in memory: after
// a restart the worst case is a redundant member event.
type lazyMembers struct {
	mu    sync.Mutex
	rooms map[string]map[string]string // room → user → member event ID
}

func (l *lazyMembers) has(roomID, userID, eventID string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rooms[roomID][userID] == eventID
}

func (l *lazyMembers) sent(roomID, userID, eventID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.rooms[roomID]
	if m == nil {
		m = map[string]string{}
		l.rooms[roomID] = m
	}
	m[userID] = eventID
}

// lazyCache holds lazyMembers per device, at most maxLazyDevices of them.
type lazyCache struct {
	mu      sync.Mutex
	devices map[string]*lazyMembers
}

const maxLazyDevices = 4096

// lazyMembersFor returns the device's record, emptied on an initial sync,
// or nil when the request does not lazy-load members.
func (s *Server) lazyMembersFor(req *syncRequest) *lazyMembers {
	if st := req.filter.room().State; st == nil || !st.LazyLoadMembers {
		return nil
	}
	c := &s.notifier.lazy
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.devices == nil {
		c.devices = map[string]*lazyMembers{}
	}
	key := req.me.UserID + "|" + req.me.DeviceID
	l := c.devices[key]
	if l == nil || req.since == nil {
		if l == nil && len(c.devices) >= maxLazyDevices {
			for k := range c.devices { // evict an arbitrary device
				delete(c.devices, k)
				break
			}
		}
		l = &lazyMembers{rooms: map[string]map[string]string{}}
		c.devices[key] = l
	}
	return l
}

// formatSyncEvents formats evs for a /sync answer: each event's JSON
// shared by every answer it goes in (formatJSON), or, when the filter
// picks event fields, built for this answer.
func formatSyncEvents(ctx context.Context, f *eventFormatter, fields []string, evs []*storage.Event) ([]any, error) {
	out := make([]any, 0, len(evs))
	if len(fields) == 0 {
		formatted, err := f.formatJSON(ctx, evs)
		for _, raw := range formatted {
			out = append(out, eventJSON(raw))
		}
		return out, err
	}
	formatted, err := f.format(ctx, evs)
	for _, ce := range formatted {
		out = append(out, applyEventFields(ce, fields))
	}
	return out, err
}
