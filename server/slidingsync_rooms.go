package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"hearth/server/rooms"
	"hearth/server/storage"
)

// The room side of sliding sync (client_slidingsync.go): list filters, and
// the entry of each room a response details.

// slidingRoom is one room's entry (MSC4186 "rooms"). Counts are pointers
// so that a zero is sent while an absent one is not.
type slidingRoom struct {
	Name              string        `json:"name,omitempty"`
	Avatar            string        `json:"avatar,omitempty"`
	Heroes            []slidingHero `json:"heroes,omitempty"`
	Initial           bool          `json:"initial,omitempty"`
	IsDM              bool          `json:"is_dm,omitempty"`
	InviteState       []any         `json:"invite_state,omitempty"`
	RequiredState     []any         `json:"required_state,omitempty"`
	Timeline          []any         `json:"timeline,omitempty"`
	Limited           *bool         `json:"limited,omitempty"`
	PrevBatch         string        `json:"prev_batch,omitempty"`
	NumLive           *int          `json:"num_live,omitempty"`
	JoinedCount       *int          `json:"joined_count,omitempty"`
	InvitedCount      *int          `json:"invited_count,omitempty"`
	NotificationCount int64         `json:"notification_count"`
	HighlightCount    int64         `json:"highlight_count"`
	BumpStamp         int64         `json:"bump_stamp"`
}

type slidingHero struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"displayname,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// roomFacts caches what never changes about a room once known: its type
// (from the create event) and that it is encrypted (encryption cannot be
// turned off). List filters read them for thousands of rooms.
type roomFacts struct {
	types     sync.Map // room → type ("" for none)
	encrypted sync.Map // room → true
}

// directRooms are the rooms the user's m.direct account data names.
func (s *Server) directRooms(ctx context.Context, userID string) (map[string]bool, error) {
	raw, err := s.store.AccountDataContent(ctx, userID, "", "m.direct")
	if errors.Is(err, storage.ErrNotFound) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, err
	}
	var byUser map[string][]string
	_ = json.Unmarshal(raw, &byUser) // malformed content names no rooms
	out := map[string]bool{}
	for _, ids := range byUser {
		for _, id := range ids {
			out[id] = true
		}
	}
	return out, nil
}

// filter returns the candidate rooms a list's filters let through
// (MSC4186 "filters"; all of them must match).
func (sc *slidingCtx) filter(ctx context.Context, cands map[string]*slidingCandidate, f *slidingListFilters) ([]string, error) {
	ids := make([]string, 0, len(cands))
	for id, c := range cands {
		if f != nil && f.IsDM != nil && *f.IsDM != c.isDM {
			continue
		}
		if f != nil && f.IsInvite != nil && *f.IsInvite != (c.m.Membership == rooms.MembershipInvite) {
			continue
		}
		ids = append(ids, id)
	}
	if f == nil {
		return ids, nil
	}
	if f.IsEncrypted != nil {
		enc, err := sc.s.encryptedRooms(ctx, ids)
		if err != nil {
			return nil, err
		}
		ids = slices.DeleteFunc(ids, func(id string) bool { return enc[id] != *f.IsEncrypted })
	}
	if f.RoomTypes != nil || f.NotRoomTypes != nil {
		types, err := sc.s.roomTypes(ctx, ids)
		if err != nil {
			return nil, err
		}
		has := func(list []*string, t string) bool {
			return slices.ContainsFunc(list, func(x *string) bool { return (x == nil && t == "") || (x != nil && *x == t) })
		}
		ids = slices.DeleteFunc(ids, func(id string) bool {
			t := types[id]
			return (f.RoomTypes != nil && !has(f.RoomTypes, t)) || has(f.NotRoomTypes, t)
		})
	}
	if f.Spaces != nil {
		children, err := sc.s.spaceChildren(ctx, f.Spaces)
		if err != nil {
			return nil, err
		}
		ids = slices.DeleteFunc(ids, func(id string) bool { return !children[id] })
	}
	if f.Tags != nil || f.NotTags != nil {
		raw, err := sc.s.store.RoomAccountDataOfType(ctx, sc.me.UserID, "m.tag")
		if err != nil {
			return nil, err
		}
		tagged := func(id string, names []string) bool {
			var c struct {
				Tags map[string]json.RawMessage `json:"tags"`
			}
			if json.Unmarshal(raw[id], &c) != nil {
				return false
			}
			for _, n := range names {
				if _, ok := c.Tags[n]; ok {
					return true
				}
			}
			return false
		}
		// Synapse's rule: not_tags wins; tags, when given, must match.
		ids = slices.DeleteFunc(ids, func(id string) bool {
			return tagged(id, f.NotTags) || (len(f.Tags) > 0 && !tagged(id, f.Tags))
		})
	}
	return ids, nil
}

// encryptedRooms reports which of the rooms have m.room.encryption.
func (s *Server) encryptedRooms(ctx context.Context, ids []string) (map[string]bool, error) {
	out := map[string]bool{}
	var unknown []string
	for _, id := range ids {
		if _, ok := s.roomFacts.encrypted.Load(id); ok {
			out[id] = true
		} else {
			unknown = append(unknown, id)
		}
	}
	st, err := s.store.CurrentStateOfType(ctx, unknown, "m.room.encryption")
	if err != nil {
		return nil, err
	}
	for id, keys := range st {
		if _, ok := keys[""]; ok {
			out[id] = true
			s.roomFacts.encrypted.Store(id, true)
		}
	}
	return out, nil
}

// roomTypes returns the rooms' types ("" for none), from their create
// events.
func (s *Server) roomTypes(ctx context.Context, ids []string) (map[string]string, error) {
	out := make(map[string]string, len(ids))
	var unknown []string
	for _, id := range ids {
		if t, ok := s.roomFacts.types.Load(id); ok {
			out[id] = t.(string)
		} else {
			unknown = append(unknown, id)
		}
	}
	st, err := s.store.CurrentStateOfType(ctx, unknown, rooms.TypeCreate)
	if err != nil {
		return nil, err
	}
	evIDs := make([]string, 0, len(st))
	for _, keys := range st {
		if id, ok := keys[""]; ok {
			evIDs = append(evIDs, id)
		}
	}
	evs, err := s.store.EventsByID(ctx, evIDs)
	if err != nil {
		return nil, err
	}
	for _, e := range evs {
		var c struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(contentOf(e.JSON), &c)
		out[e.RoomID] = c.Type
		s.roomFacts.types.Store(e.RoomID, c.Type)
	}
	return out, nil
}

// spaceChildren are the rooms that the spaces name as children
// (m.space.child with a via list), one level deep as in Synapse.
func (s *Server) spaceChildren(ctx context.Context, spaces []string) (map[string]bool, error) {
	st, err := s.store.CurrentStateOfType(ctx, spaces, "m.space.child")
	if err != nil {
		return nil, err
	}
	var evIDs []string
	for _, keys := range st {
		for _, id := range keys {
			evIDs = append(evIDs, id)
		}
	}
	evs, err := s.store.EventsByID(ctx, evIDs)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, e := range evs {
		var c struct {
			Via []string `json:"via"`
		}
		if json.Unmarshal(contentOf(e.JSON), &c) == nil && len(c.Via) > 0 && e.StateKey != nil {
			out[*e.StateKey] = true
		}
	}
	return out, nil
}

// requiredState is a parsed required_state: which state keys a room entry
// carries (MSC4186: "*" wildcards, $ME for the user, $LAZY members).
type requiredState struct {
	all       bool
	types     map[string]bool           // every key of the type
	anyType   map[string]bool           // this key of any type
	keys      map[storage.StateKey]bool // exact
	lazy      bool                      // m.room.member $LAZY
	canonical string                    // to compare configs
}

func parseRequiredState(entries [][]string, me string) *requiredState {
	rs := &requiredState{types: map[string]bool{}, anyType: map[string]bool{}, keys: map[storage.StateKey]bool{}}
	var canon []string
	for _, e := range entries {
		typ, key := e[0], e[1]
		if key == "$ME" {
			key = me
		}
		canon = append(canon, typ+"\x00"+key)
		switch {
		case typ == "*" && key == "*":
			rs.all = true
		case typ == "*":
			rs.anyType[key] = true
		case key == "*":
			rs.types[typ] = true
		case typ == rooms.TypeMember && key == "$LAZY":
			rs.lazy = true
		default:
			rs.keys[storage.StateKey{Type: typ, StateKey: key}] = true
		}
	}
	slices.Sort(canon)
	rs.canonical = strings.Join(slices.Compact(canon), "\x01")
	return rs
}

func (rs *requiredState) wants(k storage.StateKey) bool {
	return rs.all || rs.types[k.Type] || rs.anyType[k.StateKey] || rs.keys[k]
}

// widens reports whether rs asks for something prev (a canonical form)
// did not.
func (rs *requiredState) widens(prev string) bool {
	if rs.canonical == prev {
		return false
	}
	had := map[string]bool{}
	for _, p := range strings.Split(prev, "\x01") {
		had[p] = true
	}
	for _, p := range strings.Split(rs.canonical, "\x01") {
		if p != "" && !had[p] {
			return true
		}
	}
	return false
}

// rooms builds the entries of the rooms in range and subscribed to: in
// full for a room the connection has not sent (or whose membership turned
// into a join, or whose required_state widened), otherwise only when
// something happened in it since the client last had it.
func (sc *slidingCtx) rooms(ctx context.Context, cands map[string]*slidingCandidate, configs map[string]*slidingRoomConfig, resp *slidingResponse, next *connState) error {
	if len(configs) == 0 {
		return nil
	}
	var changed map[string]bool
	if sc.prev != nil {
		var err error
		if changed, err = sc.s.store.RoomsWithEventsBetween(ctx, sc.prev.token.Events, sc.to.Events); err != nil {
			return err
		}
	}
	ids := make([]string, 0, len(configs))
	for id := range configs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	// The user's own receipts change the room's unread counts: such a
	// room comes again, with its counts.
	read := map[string]bool{}
	if sc.prev != nil && sc.to.Aux > sc.prev.token.Aux {
		rs, err := sc.s.receiptsBetween(ctx, ids, sc.prev.token.Aux, sc.to.Aux)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.UserID == sc.me.UserID {
				read[r.RoomID] = true
			}
		}
	}
	parsed := map[string]*requiredState{}
	counted := map[string]bool{}
	for _, id := range ids {
		c := cands[id]
		cfg := configs[id]
		key := fmt.Sprint(cfg.RequiredState)
		rs := parsed[key]
		if rs == nil {
			rs = parseRequiredState(cfg.RequiredState, sc.me.UserID)
			parsed[key] = rs
		}
		var had *sentRoom
		if sc.prev != nil {
			had = sc.prev.rooms[id]
		}
		m := c.m
		upTo := sc.to.Events
		if m.Membership != rooms.MembershipJoin {
			upTo = min(upTo, m.StreamPos)
		}
		initial := had == nil || (m.Membership == rooms.MembershipJoin && had.membership != rooms.MembershipJoin) ||
			(m.Membership != had.membership && (m.Membership == rooms.MembershipInvite || m.Membership == rooms.MembershipKnock))
		widened := !initial && rs.widens(had.requiredState)
		if !initial && !widened {
			moved := had.upTo < upTo && (had.upTo < sc.prev.token.Events || changed[id])
			if moved && had.upTo < sc.prev.token.Events && !changed[id] {
				// Out of range for a while: look at the room itself.
				evs, err := sc.s.store.RoomEvents(ctx, id, had.upTo, upTo, 1, true)
				if err != nil {
					return err
				}
				moved = len(evs) > 0 || m.Membership != had.membership
			}
			if !moved && m.Membership == had.membership && !read[id] {
				if had.upTo < upTo {
					nr := *had
					nr.upTo = upTo
					next.rooms[id] = &nr
				}
				continue
			}
		}
		room, sent, err := sc.room(ctx, c, cfg, rs, had, initial, widened, upTo)
		if err != nil {
			return err
		}
		next.rooms[id] = sent
		resp.Rooms[id] = room
		if m.Membership == rooms.MembershipJoin {
			counted[id] = true
		}
	}
	counts, err := sc.s.store.UnreadCounts(ctx, sc.me.UserID, counted, sc.to.Events)
	if err != nil {
		return err
	}
	for id, threads := range counts {
		for _, n := range threads {
			resp.Rooms[id].NotificationCount += n.Notifications
			resp.Rooms[id].HighlightCount += n.Highlights
		}
	}
	return nil
}

// room builds one room's entry and what the connection then has of it.
func (sc *slidingCtx) room(ctx context.Context, c *slidingCandidate, cfg *slidingRoomConfig, rs *requiredState, had *sentRoom, initial, widened bool, upTo int64) (*slidingRoom, *sentRoom, error) {
	s, m := sc.s, c.m
	out := &slidingRoom{BumpStamp: c.bump, IsDM: c.isDM, Initial: initial}
	sent := &sentRoom{upTo: upTo, membership: m.Membership, requiredState: rs.canonical, lazy: map[string]string{}}
	if had != nil && !initial {
		for u, e := range had.lazy {
			sent.lazy[u] = e
		}
	}
	if m.Membership == rooms.MembershipInvite || m.Membership == rooms.MembershipKnock {
		// An invitee sees stripped state only (and no timeline).
		stripped, err := s.strippedState(ctx, m)
		if err != nil {
			return nil, nil, err
		}
		out.InviteState = stripped
		for _, ev := range stripped {
			sc.nameFromStripped(out, ev)
		}
		return out, sent, nil
	}
	if m.Stripped != nil {
		// A rejected remote invite: nothing of the room is here.
		return out, sent, nil
	}

	// Timeline: the newest events up to timeline_limit, those since the
	// client last had the room otherwise.
	var after int64
	if !initial {
		after = had.upTo
	}
	var tf *roomEventFilter
	if len(sc.ignored) > 0 {
		tf = &roomEventFilter{ignored: sc.ignored}
	}
	limit := min(cfg.TimelineLimit, maxTimelineLimit)
	var timeline []*storage.Event
	limited := false
	if limit > 0 {
		var err error
		if timeline, limited, _, err = s.syncTimeline(ctx, sc.me.UserID, m.RoomID, after, upTo, limit, tf); err != nil {
			return nil, nil, err
		}
	} else if initial || after < upTo {
		limited = true // the client gets no events; older ones exist
	}
	out.Limited = &limited
	out.PrevBatch = streamToken{Events: timelineStart(timeline, upTo), Aux: sc.to.Aux}.String()
	live := 0
	if sc.prev != nil {
		for _, e := range timeline {
			if e.StreamPos > sc.prev.token.Events {
				live++
			}
		}
	}
	out.NumLive = &live

	// State: the current state (at the leave for a room left).
	var state storage.StateKeyMap
	var err error
	if m.Membership == rooms.MembershipJoin {
		state, err = s.store.CurrentState(ctx, m.RoomID)
	} else {
		state, err = s.store.StateAt(ctx, m.RoomID, upTo)
	}
	if err != nil {
		return nil, nil, err
	}
	want := map[string]bool{} // event IDs for required_state
	if initial || widened {
		for k, id := range state {
			if rs.wants(k) {
				want[id] = true
			}
		}
	} else {
		changes, err := s.store.StateChangesBetween(ctx, []string{m.RoomID}, had.upTo, upTo)
		if err != nil {
			return nil, nil, err
		}
		for _, ch := range changes[m.RoomID] {
			if ch.EventID != "" && rs.wants(ch.Key) && state[ch.Key] == ch.EventID {
				want[ch.EventID] = true
			}
		}
	}
	if rs.lazy {
		// $LAZY: the memberships of the timeline's senders the client has
		// not been sent on this connection.
		for _, e := range timeline {
			k := storage.StateKey{Type: rooms.TypeMember, StateKey: e.Sender}
			if id, ok := state[k]; ok && sent.lazy[e.Sender] != id {
				want[id] = true
				sent.lazy[e.Sender] = id
			}
		}
	}
	stateEvs, err := s.store.EventsByID(ctx, mapKeys(want))
	if err != nil {
		return nil, nil, err
	}
	slices.SortFunc(stateEvs, byStreamPos)
	f := s.formatterFor(sc.me)
	f.omitRoomID = true
	for _, part := range []struct {
		evs []*storage.Event
		out *[]any
	}{{stateEvs, &out.RequiredState}, {timeline, &out.Timeline}} {
		formatted, err := f.format(ctx, part.evs)
		if err != nil {
			return nil, nil, err
		}
		for _, ce := range formatted {
			*part.out = append(*part.out, ce)
		}
	}
	if err := sc.summary(ctx, m.RoomID, out, state); err != nil {
		return nil, nil, err
	}
	return out, sent, nil
}

func mapKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// summary fills name, avatar, member counts and, for a room without a
// name, its heroes (up to five other members, as /sync's m.heroes). Only
// the heroes' member events are read, however large the room.
func (sc *slidingCtx) summary(ctx context.Context, roomID string, out *slidingRoom, state storage.StateKeyMap) error {
	s := sc.s
	members, err := s.store.Members(ctx, roomID)
	if err != nil {
		return err
	}
	var joined, invited int
	var heroes, former []string
	for u, m := range members {
		switch m {
		case rooms.MembershipJoin:
			joined++
		case rooms.MembershipInvite:
			invited++
		}
		if u == sc.me.UserID {
			continue
		}
		if m == rooms.MembershipJoin || m == rooms.MembershipInvite {
			heroes = append(heroes, u)
		} else {
			former = append(former, u)
		}
	}
	out.JoinedCount, out.InvitedCount = &joined, &invited
	if len(heroes) == 0 {
		heroes = former
	}
	slices.Sort(heroes)
	heroes = heroes[:min(len(heroes), 5)]
	var ids []string
	for _, t := range []string{"m.room.name", "m.room.avatar"} {
		if id, ok := state[storage.StateKey{Type: t}]; ok {
			ids = append(ids, id)
		}
	}
	for _, u := range heroes {
		if id, ok := state[storage.StateKey{Type: rooms.TypeMember, StateKey: u}]; ok {
			ids = append(ids, id)
		}
	}
	evs, err := s.store.EventsByID(ctx, ids)
	if err != nil {
		return err
	}
	profiles := map[string]slidingHero{}
	for _, e := range evs {
		var c struct {
			Name        string `json:"name"`
			URL         string `json:"url"`
			DisplayName string `json:"displayname"`
			AvatarURL   string `json:"avatar_url"`
		}
		_ = json.Unmarshal(contentOf(e.JSON), &c)
		switch e.Type {
		case "m.room.name":
			out.Name = c.Name
		case "m.room.avatar":
			out.Avatar = c.URL
		case rooms.TypeMember:
			profiles[*e.StateKey] = slidingHero{UserID: *e.StateKey, DisplayName: c.DisplayName, AvatarURL: c.AvatarURL}
		}
	}
	if out.Name != "" {
		return nil
	}
	for _, u := range heroes {
		h, ok := profiles[u]
		if !ok {
			h = slidingHero{UserID: u}
		}
		out.Heroes = append(out.Heroes, h)
	}
	return nil
}

// nameFromStripped takes an invite's name and avatar from its stripped
// state.
func (sc *slidingCtx) nameFromStripped(out *slidingRoom, ev any) {
	m, ok := ev.(map[string]any)
	if !ok {
		return
	}
	raw, _ := json.Marshal(m["content"])
	var c struct {
		Name string `json:"name"`
		URL  string `json:"url"`
	}
	_ = json.Unmarshal(raw, &c)
	switch m["type"] {
	case "m.room.name":
		out.Name = c.Name
	case "m.room.avatar":
		out.Avatar = c.URL
	}
}
