package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/tidwall/gjson"

	"hearth/server/federation"
	"hearth/server/matrix"
	"hearth/server/rooms"
	"hearth/server/storage"
	"hearth/server/timeline"
)

// Invites across servers (spec: Server-Server API, "Inviting to a room"):
// the inviting server builds the invite and has the invitee's server sign
// it (PUT /_matrix/federation/v2/invite) before it enters the room. An
// invitee on a server not in the room sees the invite through
// out-of-room memberships, with the stripped state the inviter sent, and
// rejects it through the inviting server (make_leave, send_leave).

// inviteRemote invites invitee, a user of another server, to roomID.
func (s *Server) inviteRemote(ctx context.Context, roomID, inviter, invitee string, content map[string]any) error {
	if s.fedClient == nil {
		return matrix.Forbidden("this server does not federate: %s cannot be invited", invitee)
	}
	_, server, _ := strings.Cut(invitee, ":")
	e, err := s.timeline.Build(ctx, roomID, timeline.NewEvent{Type: rooms.TypeMember, StateKey: &invitee, Sender: inviter, Content: content})
	if err != nil {
		return sendError(err)
	}
	stripped, err := s.inviteRoomState(ctx, roomID)
	if err != nil {
		return err
	}
	raw, err := s.fedClient.Invite(ctx, server, e, stripped)
	var re *federation.RemoteError
	if errors.As(err, &re) && re.Status < 500 {
		code := "M_FORBIDDEN"
		if re.Code == "M_INVITE_BLOCKED" {
			code = re.Code
		}
		return &matrix.Error{Code: code, Status: http.StatusForbidden, Msg: server + " refused the invite: " + re.Msg}
	}
	if err != nil {
		return &matrix.Error{Code: "M_UNKNOWN", Status: http.StatusBadGateway, Msg: "could not reach " + server + " to invite " + invitee, Err: err}
	}
	signed, err := rooms.ParseEvent(e.Version(), raw)
	if err != nil || signed.ID() != e.ID() {
		return &matrix.Error{Code: "M_UNKNOWN", Status: http.StatusBadGateway, Msg: server + " answered the invite with another event"}
	}
	if err := rooms.VerifyServerSignature(signed, server, s.keys.Lookup(ctx)); err != nil {
		return &matrix.Error{Code: "M_UNKNOWN", Status: http.StatusBadGateway, Msg: server + " did not sign the invite", Err: err}
	}
	res, err := s.timeline.ReceiveRelayed(ctx, server, signed)
	if err != nil {
		return err
	}
	if res.Status != timeline.Accepted && res.Status != timeline.Known {
		return matrix.Forbidden("the invite was not accepted (%s): %v", res.Status, res.Err)
	}
	return nil
}

// inviteRoomState is what an invitee's server is shown of the room: the
// current state events of strippedStateTypes, m.room.create first, as the
// PDUs they are. Since v1.16 (MSC4311) the spec wants full PDUs of the
// room's version here, so the invitee's server can check them; Synapse
// warns about stripped events and means to refuse them.
func (s *Server) inviteRoomState(ctx context.Context, roomID string) ([]json.RawMessage, error) {
	var out []json.RawMessage
	for _, t := range strippedStateTypes {
		e, err := s.store.CurrentStateEvent(ctx, roomID, t, "")
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, json.RawMessage(e.JSON))
	}
	return out, nil
}

// clientStrippedState turns the room state another server sent with an
// invite (full PDUs since v1.16, stripped events before) into what the
// Client-Server API shows an invitee: StrippedStateEvents with type,
// state_key, sender and content only. Entries of another room, or without
// those fields, are left out.
func clientStrippedState(roomID string, raws []json.RawMessage) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(raws))
	for _, raw := range raws {
		var e struct {
			RoomID   *string         `json:"room_id"`
			Type     *string         `json:"type"`
			StateKey *string         `json:"state_key"`
			Sender   *string         `json:"sender"`
			Content  json.RawMessage `json:"content"`
		}
		if json.Unmarshal(raw, &e) != nil || e.Type == nil || e.StateKey == nil || e.Sender == nil ||
			len(e.Content) == 0 || e.Content[0] != '{' {
			continue
		}
		// v12 create events carry no room_id: the room ID is their hash.
		if e.RoomID != nil && *e.RoomID != roomID {
			continue
		}
		ev := map[string]any{"type": *e.Type, "state_key": *e.StateKey, "sender": *e.Sender, "content": e.Content}
		if *e.Type == rooms.TypeCreate && *e.StateKey == "" {
			addCreateFields(ev, roomID, raw)
		}
		stripped, err := json.Marshal(ev)
		if err != nil {
			continue
		}
		out = append(out, stripped)
	}
	return out
}

// addCreateFields makes a stripped m.room.create event the whole event, as
// clients are shown it since v1.16 (MSC4311: the create event in
// invite_state and knock_state is the full event, so a client knows the
// room's version and creators for sure): event ID and timestamp too, when
// the inviting server sent the full PDU.
func addCreateFields(ev map[string]any, roomID string, raw []byte) {
	ver := gjson.GetBytes(raw, "content.room_version").String()
	if ver == "" {
		ver = "1" // the create event of a version 1 room may lack it
	}
	rv, ok := rooms.LookupVersion(ver)
	ts := gjson.GetBytes(raw, "origin_server_ts")
	if !ok || ts.Type != gjson.Number {
		return
	}
	pdu, err := rooms.ParseEvent(rv, raw)
	if err != nil {
		return
	}
	ev["event_id"], ev["origin_server_ts"], ev["room_id"] = pdu.ID(), ts.Int(), roomID
}

// receiveInvite answers PUT /_matrix/federation/v2/invite/{roomId}/{eventId}:
// origin invites one of this server's users. The invite is signed and
// returned; when this server is not in the room, the invitee is shown it
// as an out-of-room membership.
func (s *Server) receiveInvite(ctx context.Context, origin, roomID, eventID string, body []byte) (any, error) {
	var req struct {
		Event           json.RawMessage   `json:"event"`
		RoomVersion     string            `json:"room_version"`
		InviteRoomState []json.RawMessage `json:"invite_room_state"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, matrix.BadJSON("%v", err)
	}
	rv, ok := rooms.LookupVersion(req.RoomVersion)
	if !ok {
		return nil, &matrix.Error{Code: "M_INCOMPATIBLE_ROOM_VERSION", Msg: "this server does not support room version " + req.RoomVersion,
			Extra: map[string]any{"room_version": req.RoomVersion}}
	}
	e, err := rooms.ParseEvent(rv, req.Event)
	if err != nil {
		return nil, matrix.BadJSON("not an event of room version %s: %v", rv.ID, err)
	}
	invitee, isState := e.StateKey()
	switch {
	case e.ID() != eventID || e.RoomID() != roomID:
		return nil, matrix.BadJSON("the event is not %s in %s", eventID, roomID)
	case e.Type() != rooms.TypeMember || !isState || e.Membership() != rooms.MembershipInvite:
		return nil, matrix.BadJSON("the event is not an invite")
	case !fromOrigin(e.Sender(), origin):
		return nil, matrix.Forbidden("%s is not a user of %s", e.Sender(), origin)
	case !s.isLocalUser(invitee):
		return nil, matrix.Forbidden("%s is not a user of this server", invitee)
	}
	if ok, err := s.serverAllowed(ctx, roomID, origin); err != nil {
		return nil, err
	} else if !ok {
		return nil, matrix.Forbidden("server %s is denied by the room's server ACL", origin)
	}
	if u, err := s.store.UserByID(ctx, invitee); errors.Is(err, storage.ErrNotFound) || (err == nil && u.Deactivated) {
		return nil, matrix.NotFound("user %s not found", invitee)
	} else if err != nil {
		return nil, err
	}
	if err := rooms.VerifyServerSignature(e, origin, s.keys.Lookup(ctx)); err != nil {
		return nil, matrix.Forbidden("the invite is not signed by %s: %v", origin, err)
	}
	if err := s.checkInviteBlocked(ctx, invitee, e.Sender()); err != nil {
		return nil, err
	}
	signed, err := rooms.SignEvent(rv, e.JSON(), s.roomsKey())
	if err != nil {
		return nil, err
	}
	if inRoom, err := s.inRoom(ctx, roomID); err != nil {
		return nil, err
	} else if !inRoom {
		// The invite reaches this server only this way: keep it, and
		// show it to the invitee.
		se, err := rooms.ParseEvent(rv, signed)
		if err != nil {
			return nil, err
		}
		if err := s.recordOutOfRoom(ctx, se, invitee, rooms.MembershipInvite, clientStrippedState(roomID, req.InviteRoomState)); err != nil {
			return nil, err
		}
	}
	return map[string]any{"event": json.RawMessage(signed)}, nil
}

// inRoom reports whether a user of this server is joined to the room.
func (s *Server) inRoom(ctx context.Context, roomID string) (bool, error) {
	servers, err := s.store.JoinedServers(ctx, roomID)
	if err != nil {
		return false, err
	}
	for _, srv := range servers {
		if srv == s.cfg.ServerName {
			return true, nil
		}
	}
	return false, nil
}

// recordOutOfRoom stores a membership event of a room this server is not in
// (as an outlier) and shows it to the local user.
func (s *Server) recordOutOfRoom(ctx context.Context, e *rooms.Event, userID, membership string, stripped []json.RawMessage) error {
	se := &storage.NewEvent{Event: storage.Event{EventID: e.ID(), RoomID: e.RoomID(), Type: e.Type(), Sender: e.Sender(),
		Depth: e.Depth(), OriginServerTS: e.OriginServerTS(), JSON: e.JSON(), Membership: e.Membership()}}
	sk, _ := e.StateKey()
	se.StateKey = &sk
	if err := s.store.PersistOutliers(ctx, []*storage.NewEvent{se}); err != nil {
		return err
	}
	if stripped == nil {
		stripped = []json.RawMessage{}
	}
	raw, err := json.Marshal(stripped)
	if err != nil {
		return err
	}
	if err := s.store.SetOutOfRoomMembership(ctx, userID, e.RoomID(), e.Version().ID, membership, e.ID(), raw); err != nil {
		return err
	}
	s.notifier.notifyUser(userID)
	return nil
}

// receiveOutOfRoomMembership takes, from a room this server is not in, the
// one kind of event that concerns it: the inviter rescinding a local
// user's invite (a leave, or a ban, of the invitee by the user who invited
// them), which the inviting server sends to the invitee's server. The
// invitee sees the invite end as if they had rejected it. ok reports
// whether the event was such a membership at all (so that it has an ID to
// answer for); err why it was refused. A kick by anyone else is not shown
// (Synapse does not either): this server cannot check that it was allowed.
func (s *Server) receiveOutOfRoomMembership(ctx context.Context, origin, roomID string, raw []byte) (eventID string, ok bool, err error) {
	target := gjson.GetBytes(raw, "state_key").String()
	if gjson.GetBytes(raw, "type").String() != rooms.TypeMember || !s.isLocalUser(target) {
		return "", false, nil
	}
	m, err := s.store.OutOfRoomMembership(ctx, target, roomID)
	if err != nil || m.Membership != rooms.MembershipInvite {
		return "", false, nil
	}
	rv, known := rooms.LookupVersion(m.RoomVersion)
	if !known {
		return "", false, nil
	}
	e, err := rooms.ParseEvent(rv, raw)
	if err != nil {
		return "", false, nil
	}
	invite, err := s.store.EventByID(ctx, m.EventID)
	if err != nil {
		return e.ID(), true, err
	}
	switch mb := e.Membership(); {
	case mb != rooms.MembershipLeave && mb != rooms.MembershipBan:
		return e.ID(), true, errors.New("not a leave or ban of an invited user")
	case e.Sender() != invite.Sender:
		return e.ID(), true, errors.New("only the inviter can rescind an invite here")
	case !fromOrigin(e.Sender(), origin):
		return e.ID(), true, errNotFromOrigin
	case !e.VerifyContentHash():
		return e.ID(), true, errors.New("content hash mismatch")
	}
	if err := rooms.VerifyServerSignature(e, origin, s.keys.Lookup(ctx)); err != nil {
		return e.ID(), true, err
	}
	var stripped []json.RawMessage
	_ = json.Unmarshal(m.Stripped, &stripped)
	return e.ID(), true, s.recordOutOfRoom(ctx, e, target, rooms.MembershipLeave, stripped)
}

// leaveOutOfRoom answers a local user's leave of a room this server is not
// in (rejecting an invite, withdrawing a knock): through a server that is
// in it (make_leave, send_leave): the inviting server, or for a knock the
// servers the room's stripped state came from. When none can be reached
// the leave is recorded here only, as Synapse does for invites, so the
// user is not stuck with the membership.
func (s *Server) leaveOutOfRoom(ctx context.Context, userID string, m *storage.RoomMembership, reason string) error {
	last, err := s.store.EventByID(ctx, m.EventID)
	if err != nil {
		return err
	}
	content := map[string]any{"membership": rooms.MembershipLeave}
	if reason != "" {
		content["reason"] = reason
	}
	var leave *rooms.Event
	if s.fedClient != nil {
		for _, server := range s.outOfRoomServers(m, last) {
			proto, rv, err := s.fedClient.MakeMembership(ctx, server, rooms.MembershipLeave, m.RoomID, userID)
			if err == nil {
				if leave, err = rooms.CompleteProto(rv, proto, content, s.roomsKey()); err == nil {
					err = s.fedClient.SendMembership(ctx, server, rooms.MembershipLeave, leave, nil)
				}
			}
			if err == nil {
				break
			}
			s.log.Info("federation: leaving a room through another server failed",
				"room_id", m.RoomID, "membership", m.Membership, "server", server, "err", err)
			leave = nil
		}
	}
	if leave == nil {
		if leave, err = s.localLeave(m, last, userID, content); err != nil {
			return err
		}
	}
	var stripped []json.RawMessage
	_ = json.Unmarshal(m.Stripped, &stripped)
	return s.recordOutOfRoom(ctx, leave, userID, rooms.MembershipLeave, stripped)
}

// outOfRoomServers are the servers to leave a room this server is not in
// through: an invite's sender's server; for a knock, the servers of the
// stripped state's senders and the room ID's server (before v12).
func (s *Server) outOfRoomServers(m *storage.RoomMembership, last *storage.Event) []string {
	var out []string
	add := func(userOrRoom string) {
		if _, server, ok := strings.Cut(userOrRoom, ":"); ok && server != s.cfg.ServerName && !slices.Contains(out, server) {
			out = append(out, server)
		}
	}
	if m.Membership == rooms.MembershipInvite {
		add(last.Sender)
		return out
	}
	var stripped []struct {
		Sender string `json:"sender"`
	}
	_ = json.Unmarshal(m.Stripped, &stripped)
	for _, e := range stripped {
		add(e.Sender)
	}
	add(m.RoomID)
	return out
}

// localLeave builds a leave that follows an invite or a knock (last) in a
// room this server is not in, signed here: the record of a leave no other
// server heard.
func (s *Server) localLeave(m *storage.RoomMembership, last *storage.Event, userID string, content map[string]any) (*rooms.Event, error) {
	rv, ok := rooms.LookupVersion(m.RoomVersion)
	if !ok {
		return nil, fmt.Errorf("room %s has unknown version %q", m.RoomID, m.RoomVersion)
	}
	t := rooms.EventTemplate{RoomID: m.RoomID, Type: rooms.TypeMember, StateKey: &userID, Sender: userID,
		Content: content, PrevEvents: []string{last.EventID}, AuthEvents: []string{last.EventID}, Depth: last.Depth + 1,
		OriginServerTS: s.now().UnixMilli()}
	if rv.EventIDs == rooms.EventIDRandom {
		le, err := rooms.ParseEvent(rv, last.JSON)
		if err != nil {
			return nil, err
		}
		h, err := le.ReferenceHashB64()
		if err != nil {
			return nil, err
		}
		t.RefHashes = map[string]string{last.EventID: h}
	}
	return rooms.BuildEvent(rv, t, s.roomsKey())
}

// knockRemote knocks on a room this server is not in, through the first of
// servers that takes it (make_knock, send_knock); the knock is shown to
// the user as an out-of-room membership with the room's stripped state.
func (s *Server) knockRemote(ctx context.Context, userID, roomID string, servers []string, content map[string]any) error {
	if s.fedClient == nil {
		return matrix.NotFound("room %s is not known to this server, and it does not federate", roomID)
	}
	var lastErr error
	tried := map[string]bool{s.cfg.ServerName: true}
	for _, server := range servers {
		if server == "" || tried[server] {
			continue
		}
		tried[server] = true
		proto, rv, err := s.fedClient.MakeMembership(ctx, server, rooms.MembershipKnock, roomID, userID)
		if err != nil {
			lastErr = err
			continue
		}
		knock, err := rooms.CompleteProto(rv, proto, content, s.roomsKey())
		if err != nil {
			lastErr = err
			continue
		}
		var resp struct {
			KnockRoomState []json.RawMessage `json:"knock_room_state"`
		}
		if err := s.fedClient.SendMembership(ctx, server, rooms.MembershipKnock, knock, &resp); err != nil {
			lastErr = err
			continue
		}
		return s.recordOutOfRoom(ctx, knock, userID, rooms.MembershipKnock, clientStrippedState(roomID, resp.KnockRoomState))
	}
	var re *federation.RemoteError
	if errors.As(lastErr, &re) && re.Status == http.StatusForbidden {
		return matrix.Forbidden("%s refused the knock: %s", re.Destination, re.Msg)
	}
	if lastErr == nil {
		return matrix.NotFound("no server to knock on room %s through", roomID)
	}
	return &matrix.Error{Code: "M_UNKNOWN", Status: http.StatusBadGateway, Msg: "could not knock on room " + roomID, Err: lastErr}
}
