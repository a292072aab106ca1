package server

import (
	"context"
	"encoding/json"
	"slices"

	"hearth/server/rooms"
	"hearth/server/storage"
)

// The parts of /sync that serve end-to-end encryption and the ephemeral
// streams: to-device messages, device list changes, one-time key counts,
// presence and typing (spec: "Extensions to /sync" of the modules).

// deviceLists is /sync's device_lists (and the /keys/changes answer).
type deviceLists struct {
	Changed []string `json:"changed"`
	Left    []string `json:"left"`
}

// syncToDevice deletes the to-device messages the since token
// acknowledges and returns those in (since.Aux, to.Aux], at most
// maxToDevicePerSync; when there are more, to.Aux is lowered to the last
// one returned, so the next sync continues from there.
func (s *Server) syncToDevice(ctx context.Context, req *syncRequest, since streamToken, to *streamToken) ([]any, error) {
	me := req.me
	if req.since != nil {
		if err := s.store.AckToDevice(ctx, me.UserID, me.DeviceID, since.Aux); err != nil {
			return nil, err
		}
	}
	if since.Aux >= to.Aux {
		return []any{}, nil // nothing new: the aux stream did not move
	}
	msgs, err := s.store.ToDeviceBetween(ctx, me.UserID, me.DeviceID, since.Aux, to.Aux, maxToDevicePerSync)
	if err != nil {
		return nil, err
	}
	if len(msgs) == maxToDevicePerSync {
		to.Aux = msgs[len(msgs)-1].StreamID
	}
	out := make([]any, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, map[string]any{"type": m.Type, "sender": m.Sender, "content": json.RawMessage(m.Content)})
	}
	return out, nil
}

// deviceListDelta computes device_lists for userID between two tokens
// (spec: "Tracking the device list for a user"): changed holds the users
// sharing a room with userID whose keys changed, or who newly share one
// (they joined, or userID joined their room); left holds those who no
// longer share any room with userID after a leave in between. met holds
// the users who newly share a room (a subset of changed).
func (s *Server) deviceListDelta(ctx context.Context, userID string, since, to streamToken) (changed, left, met []string, err error) {
	mems, err := s.store.RoomsOfUser(ctx, userID)
	if err != nil {
		return nil, nil, nil, err
	}
	return s.deviceListDeltaIn(ctx, userID, mems, since, to)
}

// deviceListDeltaIn is deviceListDelta given the user's rooms. Key changes
// are on the aux stream and the rest comes from membership changes, so
// when neither moved (most incremental syncs: a message arrived) it reads
// nothing else. When one did, only the users it names are checked against
// the user's rooms (sharingAmong), never everyone sharing a room with the
// user: those whose keys changed, those whose membership changed, and the
// members of a room the user joined or left.
func (s *Server) deviceListDeltaIn(ctx context.Context, userID string, mems []storage.RoomMembership, since, to streamToken) (changed, left, met []string, err error) {
	changed, left = []string{}, []string{}
	roomIDs := make([]string, 0, len(mems))
	for _, m := range mems {
		roomIDs = append(roomIDs, m.RoomID)
	}
	var moves []storage.MembershipChange
	if since.Events < to.Events {
		if moves, err = s.membershipChangesBetween(ctx, roomIDs, since.Events, to.Events); err != nil {
			return nil, nil, nil, err
		}
	}
	if since.Aux >= to.Aux && len(moves) == 0 {
		return changed, left, nil, nil
	}
	var keyChanges []string
	if since.Aux < to.Aux {
		if keyChanges, err = s.store.DeviceListChangedUsers(ctx, since.Aux, to.Aux); err != nil {
			return nil, nil, nil, err
		}
	}
	cands := slices.Clone(keyChanges)
	// The members of each room the user joined or left: everyone in it is
	// new to the user, or may be gone.
	roomMembers := map[string]map[string]string{}
	for _, mv := range moves {
		cands = append(cands, mv.UserID)
		if mv.UserID != userID || roomMembers[mv.RoomID] != nil ||
			(mv.Membership != rooms.MembershipJoin && mv.Membership != rooms.MembershipLeave && mv.Membership != rooms.MembershipBan) {
			continue
		}
		members, err := s.store.Members(ctx, mv.RoomID)
		if err != nil {
			return nil, nil, nil, err
		}
		roomMembers[mv.RoomID] = members
		for u := range members {
			cands = append(cands, u)
		}
	}
	sharing, err := s.sharingAmong(ctx, userID, cands)
	if err != nil {
		return nil, nil, nil, err
	}
	ch, lf, joins := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, u := range keyChanges {
		ch[u] = true
	}
	for _, mv := range moves {
		joined := mv.Membership == rooms.MembershipJoin
		left := mv.Membership == rooms.MembershipLeave || mv.Membership == rooms.MembershipBan
		switch {
		case mv.UserID == userID && (joined || left):
			// On a join the user is listed too, for their other devices
			// (as Synapse does; Complement expects it).
			if joined {
				ch[userID] = true
			}
			for u, m := range roomMembers[mv.RoomID] {
				if m != rooms.MembershipJoin || u == userID {
					continue
				}
				if sharing[u] {
					ch[u], joins[u] = true, true
				} else {
					lf[u] = true
				}
			}
		case joined && sharing[mv.UserID]:
			ch[mv.UserID], joins[mv.UserID] = true, true
		case left && !sharing[mv.UserID]:
			lf[mv.UserID] = true
		}
	}
	for u := range ch {
		if sharing[u] {
			changed = append(changed, u)
			if joins[u] {
				met = append(met, u)
			}
		}
	}
	for u := range lf {
		if !sharing[u] {
			left = append(left, u)
		}
	}
	slices.Sort(changed)
	slices.Sort(left)
	return changed, left, met, nil
}

// sharingListAbove is the number of users above which sharingAmong reads
// everyone sharing a room with the user rather than the users' own rooms.
const sharingListAbove = 1000

// sharingAmong reports which of users share a joined room with userID, who
// always shares with themselves (their other devices, their own
// presence). The map may hold more users than were asked about.
func (s *Server) sharingAmong(ctx context.Context, userID string, users []string) (map[string]bool, error) {
	var found []string
	var err error
	if len(users) > sharingListAbove {
		found, err = s.store.UsersSharingRooms(ctx, userID)
	} else {
		found, err = s.store.UsersSharingRoomWith(ctx, userID, users)
	}
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(found)+1)
	for _, u := range found {
		out[u] = true
	}
	out[userID] = true
	return out, nil
}

// syncE2EE fills the encryption and presence parts of a /sync answer for
// the changes in (since, to]; joined are the joined rooms the room filter
// allows.
func (s *Server) syncE2EE(ctx context.Context, req *syncRequest, since, to streamToken, joined []string, resp *syncResponse) error {
	me := req.me
	var err error
	if resp.DeviceOneTimeKeysCount, err = s.otkCounts(ctx, me.UserID, me.DeviceID); err != nil {
		return err
	}
	if resp.DeviceUnusedFallbackKeyTypes, err = s.store.UnusedFallbackKeyTypes(ctx, me.UserID, me.DeviceID); err != nil {
		return err
	}
	var met []string
	if req.since != nil {
		var changed, left []string
		if changed, left, met, err = s.deviceListDeltaIn(ctx, me.UserID, req.mems, since, to); err != nil {
			return err
		}
		resp.DeviceLists = deviceLists{Changed: changed, Left: left}
	}

	// Presence of everyone sharing a room with the user, and their own:
	// all of it in an initial sync, what changed in an incremental one.
	if pf := req.filter.Presence; pf == nil || pf.allows("m.presence", "") {
		// Published now, seen from the next sync on (presence.go).
		if err := s.sweepPresence(ctx); err != nil {
			return err
		}
		var ps []storage.Presence
		switch {
		case req.since == nil:
			peers, err := s.store.UsersSharingRooms(ctx, me.UserID)
			if err != nil {
				return err
			}
			if !slices.Contains(peers, me.UserID) {
				peers = append(peers, me.UserID)
			}
			// after -1: also the presence only activity recorded (presence.go)
			if ps, err = s.store.PresenceBetween(ctx, peers, -1, to.Aux); err != nil {
				return err
			}
		case since.Aux < to.Aux:
			// What changed on the whole server in between (one row a
			// user), kept to those the user may see.
			all, err := s.store.PresenceChanges(ctx, since.Aux, to.Aux)
			if err != nil {
				return err
			}
			if len(all) > 0 {
				users := make([]string, len(all))
				for i := range all {
					users[i] = all[i].UserID
				}
				sharing, err := s.sharingAmong(ctx, me.UserID, users)
				if err != nil {
					return err
				}
				ps = slices.DeleteFunc(all, func(p storage.Presence) bool { return !sharing[p.UserID] })
			}
		}
		// Users who newly share a room are sent their presence even if
		// it did not change: the client has not seen it before.
		if len(met) > 0 {
			more, err := s.store.PresenceBetween(ctx, met, -1, to.Aux)
			if err != nil {
				return err
			}
			for _, p := range more {
				if !slices.ContainsFunc(ps, func(q storage.Presence) bool { return q.UserID == p.UserID }) {
					ps = append(ps, p)
				}
			}
		}
		for i := range ps {
			if pf != nil && !pf.allows("m.presence", ps[i].UserID) {
				continue
			}
			resp.Presence.Events = append(resp.Presence.Events, map[string]any{
				"type": "m.presence", "sender": ps[i].UserID, "content": s.presenceContent(&ps[i]),
			})
		}
	}
	return nil
}

// syncTyping adds typing, as an ephemeral event, to each of the joined
// rooms (those the room filter allows) whose typing list changed since
// since.
func (s *Server) syncTyping(req *syncRequest, since streamToken, joined []string, resp *syncResponse) {
	rf := req.filter.room()
	if eph := rf.Ephemeral; eph == nil || eph.allows("m.typing", "") {
		for roomID, users := range s.notifier.typing.changedSince(joined, since.Typing, req.since == nil) {
			if eph != nil && !allowsRoom(eph.Rooms, eph.NotRooms, roomID) {
				continue
			}
			if len(req.ignored) > 0 {
				users = slices.DeleteFunc(users, func(u string) bool { return req.ignored[u] })
			}
			jr := resp.Rooms.Join[roomID]
			if jr == nil {
				jr = &joinedRoom{
					Timeline:            timelineBlock{Events: []any{}},
					Ephemeral:           eventsBlock{Events: []any{}},
					AccountData:         eventsBlock{Events: []any{}},
					UnreadNotifications: map[string]int{"notification_count": 0, "highlight_count": 0},
				}
				resp.Rooms.Join[roomID] = jr
			}
			jr.Ephemeral.Events = append(jr.Ephemeral.Events, map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": users}})
		}
	}
}

// e2eeEmpty reports whether the parts syncE2EE and syncToDevice fill carry
// nothing new (key counts are state, not news).
func (r *syncResponse) e2eeEmpty() bool {
	return len(r.ToDevice.Events) == 0 && len(r.Presence.Events) == 0 &&
		len(r.DeviceLists.Changed) == 0 && len(r.DeviceLists.Left) == 0
}
