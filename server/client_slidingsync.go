package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"hearth/server/matrix"
	"hearth/server/rooms"
	"hearth/server/storage"
)

// Simplified sliding sync (MSC4186), the sync Element X and the other
// matrix-rust-sdk clients use, served as Synapse serves it. See
// docs/sliding-sync.md.
//
// A client keeps a connection (per device and conn_id). Each response
// carries a pos naming what the connection had sent up to it: the stream
// positions it was computed at and, per room, how far the client has that
// room's timeline and which required_state it was given. A request with
// pos gets only what changed since; an unknown pos (after a restart, or
// one the server has dropped) is 400 M_UNKNOWN_POS and the client starts
// over. Connections live in memory only.
//
// Cheap at scale: a request reads the user's memberships and each room's
// bump stamp (one row per room, storage/slidingsync.go), sorts, and builds
// room entries only for the rooms in the requested ranges and
// subscriptions; list filters read one column of current state for all
// rooms at once.

const (
	// maxSlidingConns bounds the connections kept in memory; the least
	// recently used goes first (its client gets M_UNKNOWN_POS).
	maxSlidingConns = 20000
)

type slidingRoomConfig struct {
	RequiredState [][]string `json:"required_state"`
	TimelineLimit int        `json:"timeline_limit"`
}

type slidingListFilters struct {
	IsDM         *bool     `json:"is_dm"`
	Spaces       []string  `json:"spaces"`
	IsEncrypted  *bool     `json:"is_encrypted"`
	IsInvite     *bool     `json:"is_invite"`
	RoomTypes    []*string `json:"room_types"` // null: rooms without a type
	NotRoomTypes []*string `json:"not_room_types"`
	Tags         []string  `json:"tags"`
	NotTags      []string  `json:"not_tags"`
}

type slidingList struct {
	slidingRoomConfig
	Ranges  [][]int64           `json:"ranges"`
	Filters *slidingListFilters `json:"filters"`
}

// slidingExtScope is an extension's enabled flag and the lists and room
// subscriptions it applies to ("*": all; both default to all).
type slidingExtScope struct {
	Enabled *bool     `json:"enabled"`
	Lists   *[]string `json:"lists"`
	Rooms   *[]string `json:"rooms"`
}

func (e *slidingExtScope) on() bool { return e != nil && e.Enabled != nil && *e.Enabled }

type slidingRequest struct {
	ConnID string `json:"conn_id"`
	// TxnID is echoed in the response (MSC3575's, which matrix-rust-sdk
	// may still send).
	TxnID             string                        `json:"txn_id"`
	Lists             map[string]*slidingList       `json:"lists"`
	RoomSubscriptions map[string]*slidingRoomConfig `json:"room_subscriptions"`
	Extensions        struct {
		ToDevice *struct {
			slidingExtScope
			Limit int    `json:"limit"`
			Since string `json:"since"`
		} `json:"to_device"`
		E2EE        *slidingExtScope `json:"e2ee"`
		AccountData *slidingExtScope `json:"account_data"`
		Receipts    *slidingExtScope `json:"receipts"`
		Typing      *slidingExtScope `json:"typing"`
		// ThreadSubscriptions is MSC4308's, under its unstable name.
		ThreadSubscriptions *struct {
			Enabled *bool `json:"enabled"`
			Limit   *int  `json:"limit"`
		} `json:"io.element.msc4308.thread_subscriptions"`
	} `json:"extensions"`
}

// validate rejects what Synapse rejects: negative limits, bad ranges,
// required_state entries that are not [type, state_key] pairs.
func (req *slidingRequest) validate() error {
	check := func(c *slidingRoomConfig, where string) error {
		if c.TimelineLimit < 0 {
			return matrix.InvalidParam("%s: timeline_limit must not be negative", where)
		}
		for _, rs := range c.RequiredState {
			if len(rs) != 2 {
				return matrix.InvalidParam("%s: required_state entries are [type, state_key] pairs", where)
			}
		}
		return nil
	}
	for name, l := range req.Lists {
		if l == nil {
			return matrix.InvalidParam("list %q is null", name)
		}
		if err := check(&l.slidingRoomConfig, "list "+strconv.Quote(name)); err != nil {
			return err
		}
		for _, r := range l.Ranges {
			if len(r) != 2 || r[0] < 0 || r[1] < r[0] {
				return matrix.InvalidParam("list %q: ranges are [start, end] with 0 <= start <= end", name)
			}
		}
	}
	if ts := req.Extensions.ThreadSubscriptions; ts != nil && ts.Limit != nil && *ts.Limit <= 0 {
		return matrix.InvalidParam("io.element.msc4308.thread_subscriptions: limit must be positive")
	}
	for id, c := range req.RoomSubscriptions {
		if c == nil {
			return matrix.InvalidParam("room subscription %q is null", id)
		}
		if err := check(c, "room subscription "+id); err != nil {
			return err
		}
	}
	return nil
}

// slidingResponse is the answer; empty parts are left out as Synapse
// does.
type slidingResponse struct {
	TxnID      string                     `json:"txn_id,omitempty"`
	Pos        string                     `json:"pos"`
	Lists      map[string]*slidingListOut `json:"lists,omitempty"`
	Rooms      map[string]*slidingRoom    `json:"rooms"`
	Extensions map[string]any             `json:"extensions"`
	// listsChanged: a list's count or rooms differ from the connection's
	// last response (every list is sent each time, as Synapse does).
	listsChanged bool
}

type slidingListOut struct {
	Count int             `json:"count"`
	Ops   []slidingListOp `json:"ops"`
}

type slidingListOp struct {
	Op      string   `json:"op"`
	Range   []int64  `json:"range"`
	RoomIDs []string `json:"room_ids"`
}

// sentRoom is what the client has of a room on a connection.
type sentRoom struct {
	// upTo is the event position up to which the client has the room.
	upTo       int64
	membership string
	// requiredState is the canonical form of the required_state the
	// client was given; a wider one later means sending the room's state
	// again.
	requiredState string
	// lazy holds the members ($LAZY) sent: user → member event ID.
	lazy map[string]string
}

// connState is a connection's state after one response (one pos).
type connState struct {
	token streamToken
	rooms map[string]*sentRoom
	// lists are the last list results, to tell whether they changed.
	lists map[string]string
}

type slidingConn struct {
	mu       sync.Mutex
	lastUsed time.Time
	states   map[string]*connState // pos → state
}

// slidingConns holds every connection in memory.
type slidingConns struct {
	mu       sync.Mutex
	conns    map[string]*slidingConn
	instance string       // random: positions from another process are unknown
	serial   atomic.Int64 // positions are unique across connections
}

func (c *slidingConns) conn(key string) *slidingConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conns == nil {
		c.conns = map[string]*slidingConn{}
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		c.instance = hex.EncodeToString(b)
	}
	sc := c.conns[key]
	if sc == nil {
		if len(c.conns) >= maxSlidingConns {
			var oldest string
			var at time.Time
			for k, v := range c.conns {
				if oldest == "" || v.lastUsed.Before(at) {
					oldest, at = k, v.lastUsed
				}
			}
			delete(c.conns, oldest)
		}
		sc = &slidingConn{states: map[string]*connState{}}
		c.conns[key] = sc
	}
	sc.lastUsed = time.Now()
	return sc
}

func (c *slidingConns) nextPos() string {
	return c.instance + "_" + strconv.FormatInt(c.serial.Add(1), 10)
}

// POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync
func (s *Server) postSlidingSync(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	me := deviceFrom(ctx)
	q := r.URL.Query()
	var timeout time.Duration
	if t := q.Get("timeout"); t != "" {
		ms, err := strconv.ParseInt(t, 10, 64)
		if err != nil || ms < 0 {
			return matrix.InvalidParam("timeout must be a non-negative number of milliseconds")
		}
		timeout = min(time.Duration(ms)*time.Millisecond, maxSyncTimeout)
	}
	var req slidingRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if err := req.validate(); err != nil {
		return err
	}
	conn := s.sliding.conn(me.UserID + "|" + me.DeviceID + "|" + req.ConnID)
	pos := q.Get("pos")
	var prev *connState
	if pos != "" {
		conn.mu.Lock()
		prev = conn.states[pos]
		conn.mu.Unlock()
		if prev == nil {
			return &matrix.Error{Code: "M_UNKNOWN_POS", Msg: "unknown position; start the connection again without pos", Status: http.StatusBadRequest}
		}
	}
	deadline := time.Now().Add(timeout)
	var timer *time.Timer
	for {
		wt := s.notifier.register(me.UserID)
		resp, next, joined, err := s.slidingOnce(ctx, me, &req, prev)
		if err != nil || prev == nil || !resp.empty() || time.Until(deadline) <= 0 {
			s.notifier.unregister(wt)
			if err != nil {
				return err
			}
			return s.slidingRespond(w, conn, pos, resp, next)
		}
		// Nothing new: wait from next's positions (as getSync does).
		s.notifier.watchRooms(wt, joined)
		now, err := s.currentStreamToken(ctx)
		if err != nil {
			s.notifier.unregister(wt)
			return err
		}
		missed, err := s.missedInRooms(ctx, joined, next.token, now)
		if err != nil {
			s.notifier.unregister(wt)
			return err
		}
		if missed {
			s.notifier.unregister(wt)
			continue
		}
		if timer == nil {
			timer = time.NewTimer(time.Until(deadline))
			defer timer.Stop()
		}
		timedOut, err := s.notifier.park(ctx, wt, timer)
		if err != nil {
			return err
		}
		if timedOut {
			return s.slidingRespond(w, conn, pos, resp, next)
		}
	}
}

// slidingRespond records the new state under a new pos and writes the
// answer. States older than the acknowledged pos are dropped: the client
// moved past them. The acknowledged one stays, for a retried request.
func (s *Server) slidingRespond(w http.ResponseWriter, conn *slidingConn, acked string, resp *slidingResponse, next *connState) error {
	resp.Pos = s.sliding.nextPos()
	conn.mu.Lock()
	if acked == "" {
		clear(conn.states)
	} else {
		for p := range conn.states {
			if p != acked {
				delete(conn.states, p)
			}
		}
	}
	conn.states[resp.Pos] = next
	conn.mu.Unlock()
	return writeJSON(w, http.StatusOK, resp)
}

// empty reports whether the response tells the client nothing new.
func (r *slidingResponse) empty() bool {
	if len(r.Rooms) > 0 || r.listsChanged {
		return false
	}
	for _, e := range r.Extensions {
		if ne, ok := e.(interface{ isEmpty() bool }); ok && !ne.isEmpty() {
			return false
		}
	}
	return true
}

// slidingCandidate is a room the user may see in a list.
type slidingCandidate struct {
	m    storage.RoomMembership
	bump int64
	isDM bool
}

// slidingOnce computes one response against prev (nil: a new
// connection), and the state it leaves the connection in; it also returns
// the user's joined rooms (for the long poll).
func (s *Server) slidingOnce(ctx context.Context, me *Device, req *slidingRequest, prev *connState) (*slidingResponse, *connState, []string, error) {
	to, err := s.currentStreamToken(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	mems, err := s.store.RoomsOfUser(ctx, me.UserID)
	if err != nil {
		return nil, nil, nil, err
	}
	// As buildSync: a membership newer than to moves to up to it.
	moved := to.Events
	for _, m := range mems {
		to.Events = max(to.Events, m.StreamPos)
	}
	if to.Events > moved {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s.push.WaitFor(wctx, to.Events)
		cancel()
	}
	sc := &slidingCtx{s: s, me: me, req: req, prev: prev, to: to}
	if err := sc.loadUser(ctx); err != nil {
		return nil, nil, nil, err
	}
	var cands map[string]*slidingCandidate
	var joined []string
	if len(req.Lists) == 0 && len(req.RoomSubscriptions) == 0 {
		// A connection for extensions alone (matrix-rust-sdk's encryption
		// sync): no room is ranked, so none is read.
		cands = map[string]*slidingCandidate{}
		for _, m := range mems {
			if m.Membership == rooms.MembershipJoin {
				joined = append(joined, m.RoomID)
			}
		}
	} else if cands, joined, err = sc.candidates(ctx, mems); err != nil {
		return nil, nil, nil, err
	}
	resp := &slidingResponse{TxnID: req.TxnID, Lists: map[string]*slidingListOut{}, Rooms: map[string]*slidingRoom{}, Extensions: map[string]any{}}
	next := &connState{token: to, rooms: map[string]*sentRoom{}, lists: map[string]string{}}
	if prev != nil {
		for id, sr := range prev.rooms {
			next.rooms[id] = sr
		}
	}
	configs, listRooms, err := sc.lists(ctx, cands, resp, next)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := sc.rooms(ctx, cands, configs, resp, next); err != nil {
		return nil, nil, nil, err
	}
	if err := sc.extensions(ctx, cands, listRooms, resp, next); err != nil {
		return nil, nil, nil, err
	}
	return resp, next, joined, nil
}

// slidingCtx is the work of one sliding sync computation.
type slidingCtx struct {
	s    *Server
	me   *Device
	req  *slidingRequest
	prev *connState
	to   streamToken

	ignored   map[string]bool
	dms       map[string]bool // rooms in m.direct
	invites   *inviteConfig
	forgotten map[string]bool
}

func (sc *slidingCtx) loadUser(ctx context.Context) error {
	var err error
	if sc.ignored, err = sc.s.ignoredUsers(ctx, sc.me.UserID); err != nil {
		return err
	}
	if sc.invites, err = sc.s.inviteConfigOf(ctx, sc.me.UserID); err != nil {
		return err
	}
	if sc.forgotten, err = sc.s.store.ForgottenRooms(ctx, sc.me.UserID); err != nil {
		return err
	}
	sc.dms, err = sc.s.directRooms(ctx, sc.me.UserID)
	return err
}

// candidates are the rooms the lists choose from, with their bump stamps:
// joined, invited and knocked rooms, and rooms left since the client last
// had them (so it learns of the leave). Invites from ignored or filtered
// users are left out, as in /sync.
func (sc *slidingCtx) candidates(ctx context.Context, mems []storage.RoomMembership) (map[string]*slidingCandidate, []string, error) {
	out := make(map[string]*slidingCandidate, len(mems))
	var joined, ids []string
	for _, m := range mems {
		switch m.Membership {
		case rooms.MembershipJoin:
			joined = append(joined, m.RoomID)
		case rooms.MembershipInvite:
			inv, err := sc.s.store.EventByID(ctx, m.EventID)
			if err != nil {
				return nil, nil, err
			}
			if sc.ignored[inv.Sender] || sc.invites.rule(inv.Sender) != inviteAllow {
				continue
			}
			// An invite marked is_direct is a DM before m.direct names it
			// (as Synapse).
			var c struct {
				IsDirect bool `json:"is_direct"`
			}
			if json.Unmarshal(contentOf(inv.JSON), &c) == nil && c.IsDirect {
				sc.dms[m.RoomID] = true
			}
		case rooms.MembershipKnock:
		case rooms.MembershipLeave, rooms.MembershipBan:
			if sc.prev == nil {
				continue
			}
			had := sc.prev.rooms[m.RoomID]
			leftSince := m.StreamPos > sc.prev.token.Events && !sc.forgotten[m.RoomID]
			if !leftSince && (had == nil || had.membership == rooms.MembershipLeave || had.membership == rooms.MembershipBan) {
				continue
			}
		default:
			continue
		}
		out[m.RoomID] = &slidingCandidate{m: m, isDM: sc.dms[m.RoomID]}
		ids = append(ids, m.RoomID)
	}
	bumps, err := sc.s.store.BumpStamps(ctx, ids)
	if err != nil {
		return nil, nil, err
	}
	for id, c := range out {
		// A room's events after the user's leave or before its invite
		// are not theirs to see: the stamp stops at the membership.
		b := bumps[id]
		if c.m.Membership != rooms.MembershipJoin || b == 0 {
			b = c.m.StreamPos
			if c.m.Membership == rooms.MembershipLeave || c.m.Membership == rooms.MembershipBan {
				b = min(max(bumps[id], 1), c.m.StreamPos)
			}
		}
		c.bump = b
	}
	return out, joined, nil
}

// lists sorts each list's rooms by recency, fills its count and ops, and
// returns the room configs of the rooms in range (merged across lists) and
// which lists each room is in.
func (sc *slidingCtx) lists(ctx context.Context, cands map[string]*slidingCandidate, resp *slidingResponse, next *connState) (map[string]*slidingRoomConfig, map[string][]string, error) {
	configs := map[string]*slidingRoomConfig{}
	inLists := map[string][]string{}
	names := make([]string, 0, len(sc.req.Lists))
	for name := range sc.req.Lists {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		l := sc.req.Lists[name]
		ids, err := sc.filter(ctx, cands, l.Filters)
		if err != nil {
			return nil, nil, err
		}
		slices.SortFunc(ids, func(a, b string) int {
			if d := cands[b].bump - cands[a].bump; d != 0 {
				if d > 0 {
					return 1
				}
				return -1
			}
			if a < b {
				return -1
			}
			return 1
		})
		out := &slidingListOut{Count: len(ids), Ops: []slidingListOp{}}
		for _, rg := range l.Ranges {
			if rg[0] >= int64(len(ids)) {
				continue
			}
			end := min(rg[1], int64(len(ids))-1)
			part := ids[rg[0] : end+1]
			out.Ops = append(out.Ops, slidingListOp{Op: "SYNC", Range: []int64{rg[0], end}, RoomIDs: slices.Clone(part)})
			for _, id := range part {
				configs[id] = mergeRoomConfig(configs[id], &l.slidingRoomConfig)
				if !slices.Contains(inLists[id], name) {
					inLists[id] = append(inLists[id], name)
				}
			}
		}
		// A list is sent when it differs from what the connection last
		// sent (always on a new connection).
		sig := strconv.Itoa(out.Count)
		for _, op := range out.Ops {
			sig += "|" + strconv.FormatInt(op.Range[0], 10) + ":" + joinIDs(op.RoomIDs)
		}
		next.lists[name] = sig
		resp.listsChanged = resp.listsChanged || sc.prev == nil || sc.prev.lists[name] != sig
		resp.Lists[name] = out
	}
	// Room subscriptions: rooms the user is (or was) in, whether or not a
	// list shows them.
	for id, c := range sc.req.RoomSubscriptions {
		if cands[id] == nil {
			continue
		}
		configs[id] = mergeRoomConfig(configs[id], c)
	}
	return configs, inLists, nil
}

func joinIDs(ids []string) string {
	n := 0
	for _, id := range ids {
		n += len(id) + 1
	}
	b := make([]byte, 0, n)
	for _, id := range ids {
		b = append(b, id...)
		b = append(b, ',')
	}
	return string(b)
}

// mergeRoomConfig combines the configs of a room shown by several lists or
// subscriptions: the union of required_state, the largest timeline_limit.
func mergeRoomConfig(a, b *slidingRoomConfig) *slidingRoomConfig {
	if a == nil {
		c := *b
		c.RequiredState = slices.Clone(b.RequiredState)
		return &c
	}
	a.TimelineLimit = max(a.TimelineLimit, b.TimelineLimit)
	for _, rs := range b.RequiredState {
		if !slices.ContainsFunc(a.RequiredState, func(x []string) bool { return slices.Equal(x, rs) }) {
			a.RequiredState = append(a.RequiredState, rs)
		}
	}
	return a
}

// slidingPosAux returns the aux position of a pos the device's connections
// handed out (MSC4308's thread subscription pagination accepts one as its
// lower bound).
func (s *Server) slidingPosAux(me *Device, pos string) (int64, error) {
	prefix := me.UserID + "|" + me.DeviceID + "|"
	s.sliding.mu.Lock()
	conns := make([]*slidingConn, 0, 1)
	for k, c := range s.sliding.conns {
		if strings.HasPrefix(k, prefix) {
			conns = append(conns, c)
		}
	}
	s.sliding.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		st := c.states[pos]
		c.mu.Unlock()
		if st != nil {
			return st.token.Aux, nil
		}
	}
	return 0, errors.New("unknown sliding sync position")
}
