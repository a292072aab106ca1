package server

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"path"
	"slices"
	"strings"

	"github.com/tidwall/gjson"

	"hearth/server/matrix"
	"hearth/server/rooms"
	"hearth/server/storage"
	"hearth/server/timeline"
)

// Memberships through this server (spec: Server-Server API, "Joining
// Rooms", "Leaving Rooms", "Knocking"): another server asks for a template
// (make_join, make_leave, make_knock), signs it, and sends it back
// (send_join, send_leave, send_knock). This server checks the event like any
// other received one, relays it to the room's other servers, and answers a
// join with the room's state and auth chain.

// makeMembership answers make_join, make_leave and make_knock for userID
// (a user of origin). versions are the room versions origin supports
// (make_join and make_knock; nil for make_leave).
func (s *Server) makeMembership(ctx context.Context, origin, roomID, userID, membership string, versions []string) (map[string]any, error) {
	if !fromOrigin(userID, origin) {
		return nil, matrix.Forbidden("%s is not a user of %s", userID, origin)
	}
	room, err := s.roomForServer(ctx, roomID, origin)
	if err != nil {
		return nil, err
	}
	if versions != nil && !slices.Contains(versions, room.RoomVersion) {
		return nil, &matrix.Error{Code: "M_INCOMPATIBLE_ROOM_VERSION", Msg: "your server does not support room version " + room.RoomVersion,
			Extra: map[string]any{"room_version": room.RoomVersion}}
	}
	content := map[string]any{"membership": membership}
	if membership == rooms.MembershipJoin {
		via, err := s.restrictedJoinVia(ctx, roomID, userID)
		if err != nil {
			return nil, err
		}
		if via != "" {
			content["join_authorised_via_users_server"] = via
		}
	}
	proto, rv, err := s.timeline.Proto(ctx, roomID, rooms.TypeMember, &userID, userID, content)
	var authErr *rooms.AuthError
	if errors.As(err, &authErr) {
		return nil, matrix.Forbidden("%s may not %s: %s", userID, membership, authErr.Reason)
	}
	if err != nil {
		return nil, sendError(err)
	}
	return map[string]any{"event": json.RawMessage(proto), "room_version": rv.ID}, nil
}

// roomForServer is the room, when this server is in it and origin is not
// barred from it by the room's server ACL.
func (s *Server) roomForServer(ctx context.Context, roomID, origin string) (*storage.Room, error) {
	room, err := s.store.RoomByID(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, matrix.NotFound("room %s is unknown to this server", roomID)
	}
	if err != nil {
		return nil, err
	}
	if ok, err := s.serverAllowed(ctx, roomID, origin); err != nil {
		return nil, err
	} else if !ok {
		return nil, matrix.Forbidden("server %s is denied by the room's server ACL", origin)
	}
	// A server whose users all left has a stale copy of the room: it can
	// neither vouch for joins nor serve its state.
	if in, err := s.inRoom(ctx, roomID); err != nil {
		return nil, err
	} else if !in {
		return nil, matrix.NotFound("this server is no longer in room %s", roomID)
	}
	return room, nil
}

// sendMembership answers send_join, send_leave and send_knock (v2): the
// event, signed by origin, must be the membership it names for a user of
// origin. Accepted, it is relayed to the room's other servers.
func (s *Server) sendMembership(ctx context.Context, origin, roomID, eventID, membership string, body []byte, omitMembers bool) (any, error) {
	room, err := s.roomForServer(ctx, roomID, origin)
	if err != nil {
		return nil, err
	}
	rv, ok := rooms.LookupVersion(room.RoomVersion)
	if !ok {
		return nil, matrix.NotFound("room %s is of an unknown version", roomID)
	}
	e, err := rooms.ParseEvent(rv, body)
	if err != nil {
		return nil, matrix.BadJSON("not an event of room version %s: %v", rv.ID, err)
	}
	sk, isState := e.StateKey()
	switch {
	case e.ID() != eventID:
		return nil, matrix.BadJSON("the event's ID is %s, not %s", e.ID(), eventID)
	case e.RoomID() != roomID:
		return nil, matrix.BadJSON("the event is for room %s", e.RoomID())
	case e.Type() != rooms.TypeMember || !isState || sk != e.Sender() || e.Membership() != membership:
		return nil, matrix.BadJSON("the event is not a %s of its sender", membership)
	case !fromOrigin(e.Sender(), origin):
		return nil, matrix.Forbidden("%s is not a user of %s", e.Sender(), origin)
	}
	if via := gjson.GetBytes(e.Content(), `join_authorised_via_users_server`).String(); via != "" && membership == rooms.MembershipJoin {
		// A restricted join names one of this server's users: this
		// server's signature vouches for it (auth rule 4.3.3, spec).
		if !s.isLocalUser(via) {
			return nil, matrix.Forbidden("join_authorised_via_users_server %s is not a user of this server", via)
		}
		signed, err := rooms.SignEvent(rv, e.JSON(), s.roomsKey())
		if err != nil {
			return nil, err
		}
		if e, err = rooms.ParseEvent(rv, signed); err != nil {
			return nil, err
		}
	}
	res, err := s.timeline.ReceiveRelayed(ctx, origin, e)
	if err != nil {
		return nil, err
	}
	switch res.Status {
	case timeline.Accepted, timeline.Known:
	default:
		return nil, matrix.Forbidden("the %s was not accepted (%s): %v", membership, res.Status, res.Err)
	}
	switch membership {
	case rooms.MembershipLeave:
		return struct{}{}, nil
	case rooms.MembershipKnock:
		// Full PDUs, as for invites (spec v1.16, MSC4311).
		state, err := s.inviteRoomState(ctx, roomID)
		if err != nil {
			return nil, err
		}
		return map[string]any{"knock_room_state": state}, nil
	}
	return s.joinAnswer(ctx, rv, e, omitMembers)
}

// joinAnswer is send_join's answer: the room's state before the join and
// the auth chain of that state and of the join.
func (s *Server) joinAnswer(ctx context.Context, rv *rooms.RoomVersion, join *rooms.Event, omitMembers bool) (map[string]any, error) {
	before, _, err := s.timeline.StateBefore(ctx, join.ID())
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(before))
	for _, id := range before {
		ids = append(ids, id)
	}
	state, err := s.store.EventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	chain, err := s.timeline.AuthChain(ctx, rv, append(slices.Clone(ids), join.ID()))
	if err != nil {
		return nil, err
	}
	pdus := func(evs []*storage.Event) []json.RawMessage {
		out := make([]json.RawMessage, 0, len(evs))
		for _, e := range evs {
			out = append(out, e.JSON)
		}
		return out
	}
	_ = omitMembers // partial-state joins (MSC3706) are not offered: the whole state is sent
	return map[string]any{
		"origin":          s.cfg.ServerName,
		"state":           pdus(state),
		"auth_chain":      pdus(chain),
		"event":           json.RawMessage(join.JSON()),
		"members_omitted": false,
	}, nil
}

// serverAllowed applies the room's m.room.server_acl to a server (spec:
// "Server Access Control Lists"): denied when it matches a deny glob, or
// matches no allow glob, or is an IP literal while allow_ip_literals is
// false. A room without an ACL allows everyone.
func (s *Server) serverAllowed(ctx context.Context, roomID, server string) (bool, error) {
	ev, err := s.store.CurrentStateEvent(ctx, roomID, "m.room.server_acl", "")
	if errors.Is(err, storage.ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return aclAllows(contentOf(ev.JSON), server), nil
}

// aclAllows evaluates an m.room.server_acl content for server.
func aclAllows(content []byte, server string) bool {
	var acl struct {
		Allow           []string `json:"allow"`
		Deny            []string `json:"deny"`
		AllowIPLiterals *bool    `json:"allow_ip_literals"`
	}
	if json.Unmarshal(content, &acl) != nil {
		return true // not an ACL the server can read: not applied, as Synapse
	}
	host := server
	if h, _, err := net.SplitHostPort(server); err == nil {
		host = h
	}
	host = strings.ToLower(strings.Trim(host, "[]"))
	if acl.AllowIPLiterals != nil && !*acl.AllowIPLiterals && net.ParseIP(host) != nil {
		return false
	}
	for _, g := range acl.Deny {
		if aclGlob(g, host) {
			return false
		}
	}
	for _, g := range acl.Allow {
		if aclGlob(g, host) {
			return true
		}
	}
	return false
}

// aclGlob matches a server ACL glob (* any sequence, ? one character),
// case-insensitively, against the whole name.
func aclGlob(glob, name string) bool {
	// path.Match treats '/' and '[' specially; server names have neither
	// meaning, so escape brackets and keep '*' and '?'.
	g := strings.NewReplacer(`\`, `\\`, `[`, `\[`, `]`, `\]`).Replace(strings.ToLower(glob))
	ok, err := path.Match(g, name)
	return err == nil && ok
}
