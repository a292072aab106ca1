package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	"hearth/server/matrix"
	"hearth/server/rooms"
	"hearth/server/storage"
	"hearth/server/timeline"
)

// memberContent is the content of a membership event the server sends for
// a user: with their profile for joins, as Synapse does, and the reason.
func (s *Server) memberContent(ctx context.Context, membership, userID, reason string) (map[string]any, error) {
	c := map[string]any{"membership": membership}
	if membership == rooms.MembershipJoin || membership == rooms.MembershipInvite || membership == rooms.MembershipKnock {
		u, err := s.store.UserByID(ctx, userID)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
		if u != nil {
			if u.DisplayName != "" {
				c["displayname"] = u.DisplayName
			}
			if u.AvatarURL != "" {
				c["avatar_url"] = u.AvatarURL
			}
		}
	}
	if reason != "" {
		c["reason"] = reason
	}
	return c, nil
}

// resolveRoom turns a room ID or an alias into a room ID, with the servers
// known to be in the room (from another server's directory).
func (s *Server) resolveRoom(ctx context.Context, idOrAlias string) (string, []string, error) {
	switch {
	case strings.HasPrefix(idOrAlias, "!"):
		return idOrAlias, nil, nil
	case strings.HasPrefix(idOrAlias, "#"):
		if _, server, ok := strings.Cut(idOrAlias, ":"); ok && server != s.cfg.ServerName && s.fedClient != nil {
			return s.remoteAlias(ctx, server, idOrAlias)
		}
		roomID, _, err := s.store.AliasRoom(ctx, idOrAlias)
		if errors.Is(err, storage.ErrNotFound) {
			return "", nil, matrix.NotFound("room alias %s not found", idOrAlias)
		}
		return roomID, nil, err
	}
	return "", nil, matrix.InvalidParam("%q is not a room ID or alias", idOrAlias)
}

type reasonBody struct {
	Reason string `json:"reason"`
}

// POST /_matrix/client/v3/join/{roomIdOrAlias}
func (s *Server) postJoinByIDOrAlias(w http.ResponseWriter, r *http.Request) error {
	idOrAlias, err := pathParam(r, "roomIdOrAlias")
	if err != nil {
		return err
	}
	roomID, servers, err := s.resolveRoom(r.Context(), idOrAlias)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	return s.join(w, r, roomID, append(append(q["via"], q["server_name"]...), servers...))
}

// POST /_matrix/client/v3/rooms/{roomId}/join
func (s *Server) postJoin(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	return s.join(w, r, roomID, nil)
}

// join joins the user to the room: here when this server is in the room,
// else through one of servers (or another server known to be in it).
func (s *Server) join(w http.ResponseWriter, r *http.Request, roomID string, servers []string) error {
	me := deviceFrom(r.Context())
	// The body's other keys go into the membership content, as Synapse
	// does (clients use this for custom join metadata).
	var body map[string]json.RawMessage
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	var reason string
	if raw, ok := body["reason"]; ok && json.Unmarshal(raw, &reason) != nil {
		return matrix.BadJSON("reason must be a string")
	}
	ctx := r.Context()
	content, err := s.memberContent(ctx, rooms.MembershipJoin, me.UserID, reason)
	if err != nil {
		return err
	}
	for k, v := range body {
		switch k {
		case "membership", "reason", "third_party_signed", "join_authorised_via_users_server":
		default:
			if _, set := content[k]; !set {
				content[k] = v
			}
		}
	}
	if remote, others, err := s.joinsRemotely(ctx, roomID); err != nil {
		return err
	} else if remote {
		// An invite names the server to join through: the inviter's.
		if m, err := s.store.OutOfRoomMembership(ctx, me.UserID, roomID); err == nil && m.Membership == rooms.MembershipInvite {
			if inv, err := s.store.EventByID(ctx, m.EventID); err == nil {
				if _, server, ok := strings.Cut(inv.Sender, ":"); ok {
					servers = append([]string{server}, servers...)
				}
			}
		}
		if err := s.joinRemote(ctx, me.UserID, roomID, joinServers(roomID, servers, others), content); err != nil {
			return err
		}
		if err := s.store.DeleteOutOfRoomMembership(ctx, me.UserID, roomID); err != nil {
			return err
		}
		s.joinedUpgradedRoom(ctx, me.UserID, roomID)
		return writeJSON(w, http.StatusOK, map[string]string{"room_id": roomID})
	}
	// Joining again with nothing changed makes no new event (Synapse does
	// the same, and clients retry joins).
	if cur, err := s.store.CurrentStateEvent(ctx, roomID, rooms.TypeMember, me.UserID); err == nil && cur.Membership == rooms.MembershipJoin {
		if b, err := json.Marshal(content); err == nil && jsonEqual(contentOf(cur.JSON), b) {
			return writeJSON(w, http.StatusOK, map[string]string{"room_id": roomID})
		}
	}
	if via, err := s.restrictedJoinVia(ctx, roomID, me.UserID); cannotAuthorise(err) {
		// A restricted room this server cannot let the user into (no
		// local member may invite, or it cannot check the allowed rooms):
		// another server of the room may, through make_join/send_join
		// (spec: "Restricted rooms"; Synapse does the same).
		others, oerr := s.store.JoinedServers(ctx, roomID)
		if oerr != nil {
			return oerr
		}
		if slices.ContainsFunc(others, func(o string) bool { return o != s.cfg.ServerName }) {
			// The servers the client named first, then the room's (this
			// one is skipped).
			if err := s.joinRemote(ctx, me.UserID, roomID, append(slices.Clone(servers), others...), content); err != nil {
				return err
			}
			s.joinedUpgradedRoom(ctx, me.UserID, roomID)
			return writeJSON(w, http.StatusOK, map[string]string{"room_id": roomID})
		}
		return err
	} else if err != nil {
		return err
	} else if via != "" {
		content["join_authorised_via_users_server"] = via
	}
	before, err := s.store.Membership(ctx, roomID, me.UserID)
	if err != nil {
		return err
	}
	if _, err := s.sendEvents(ctx, roomID, newEvent{Type: rooms.TypeMember, StateKey: &me.UserID, Sender: me.UserID, Content: content}); err != nil {
		if errors.Is(err, timeline.ErrUnknownRoom) {
			return matrix.NotFound("room %s is not known to this server", roomID)
		}
		return err
	}
	if before != rooms.MembershipJoin {
		s.joinedUpgradedRoom(ctx, me.UserID, roomID)
	}
	return writeJSON(w, http.StatusOK, map[string]string{"room_id": roomID})
}

// cannotAuthorise reports whether err is restrictedJoinVia's answer that
// this server cannot authorise a restricted join.
func cannotAuthorise(err error) bool {
	var me *matrix.Error
	return errors.As(err, &me) && (me.Code == "M_UNABLE_TO_GRANT_JOIN" || me.Code == "M_UNABLE_TO_AUTHORISE_JOIN")
}

// joinedUpgradedRoom copies a user's settings from the room the joined
// room replaced, if it replaced one (copyUserRoomSettings). The join has
// happened: a failure here is logged, not reported.
func (s *Server) joinedUpgradedRoom(ctx context.Context, userID, roomID string) {
	if err := s.copySettingsOnJoin(ctx, userID, roomID); err != nil {
		logFrom(ctx, s.log).Warn("cannot copy room settings to an upgraded room", "room_id", roomID, "user_id", userID, "err", err)
	}
}

// restrictedJoinVia picks, for a join to a restricted room by a user who is
// neither invited nor joined, a local member with power to invite, once
// the user satisfies one of the join rule's allow conditions (spec:
// "Restricted rooms"). It returns "" when no authorising user is needed or
// the conditions are not met (then the auth rules refuse the join).
func (s *Server) restrictedJoinVia(ctx context.Context, roomID, userID string) (string, error) {
	jr, err := s.store.CurrentStateEvent(ctx, roomID, rooms.TypeJoinRules, "")
	if errors.Is(err, storage.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var c struct {
		JoinRule string `json:"join_rule"`
		Allow    []struct {
			Type   string `json:"type"`
			RoomID string `json:"room_id"`
		} `json:"allow"`
	}
	if json.Unmarshal(contentOf(jr.JSON), &c) != nil || (c.JoinRule != rooms.JoinRuleRestricted && c.JoinRule != rooms.JoinRuleKnockRestricted) {
		return "", nil
	}
	if m, err := s.store.Membership(ctx, roomID, userID); err != nil || m == rooms.MembershipJoin || m == rooms.MembershipInvite {
		return "", err
	}
	// Only the allowed rooms this server is in can be checked: its copy
	// of a room it left is no longer kept up to date, and may still show
	// the user as a member long after they left.
	satisfied, unverifiable := false, false
	for _, a := range c.Allow {
		if a.Type != "m.room_membership" {
			continue
		}
		servers, err := s.store.JoinedServers(ctx, a.RoomID)
		if err != nil {
			return "", err
		}
		if !slices.Contains(servers, s.cfg.ServerName) {
			unverifiable = true
			continue
		}
		if m, err := s.store.Membership(ctx, a.RoomID, userID); err != nil {
			return "", err
		} else if m == rooms.MembershipJoin {
			satisfied = true
			break
		}
	}
	if !satisfied && unverifiable {
		// Another server, in the allowed room, may be able to (spec:
		// make_join's M_UNABLE_TO_AUTHORISE_JOIN).
		return "", &matrix.Error{Code: "M_UNABLE_TO_AUTHORISE_JOIN", Msg: "this server is not in the rooms that allow the join, and cannot check them"}
	}
	if !satisfied {
		return "", nil
	}
	members, err := s.store.Members(ctx, roomID)
	if err != nil {
		return "", err
	}
	for u, m := range members {
		if m != rooms.MembershipJoin || !strings.HasSuffix(u, ":"+s.cfg.ServerName) {
			continue
		}
		if ok, err := s.hasPowerFor(ctx, roomID, u, "invite"); err != nil {
			return "", err
		} else if ok {
			return u, nil
		}
	}
	return "", &matrix.Error{Code: "M_UNABLE_TO_GRANT_JOIN", Msg: "no local user can authorise the join"}
}

// POST /_matrix/client/v3/knock/{roomIdOrAlias}
func (s *Server) postKnock(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	idOrAlias, err := pathParam(r, "roomIdOrAlias")
	if err != nil {
		return err
	}
	roomID, servers, err := s.resolveRoom(r.Context(), idOrAlias)
	if err != nil {
		return err
	}
	var req reasonBody
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	content, err := s.memberContent(r.Context(), rooms.MembershipKnock, me.UserID, req.Reason)
	if err != nil {
		return err
	}
	if remote, others, err := s.joinsRemotely(r.Context(), roomID); err != nil {
		return err
	} else if remote {
		q := r.URL.Query()
		servers = append(append(q["via"], q["server_name"]...), servers...)
		if err := s.knockRemote(r.Context(), me.UserID, roomID, joinServers(roomID, servers, others), content); err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, map[string]string{"room_id": roomID})
	}
	if _, err := s.sendEvents(r.Context(), roomID, newEvent{Type: rooms.TypeMember, StateKey: &me.UserID, Sender: me.UserID, Content: content}); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]string{"room_id": roomID})
}

// POST /_matrix/client/v3/rooms/{roomId}/leave
func (s *Server) postLeave(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	var req reasonBody
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if err := s.leaveRefused(r.Context(), roomID, me.UserID); err != nil {
		return err
	}
	if err := s.leaveRoom(r.Context(), me.UserID, roomID, req.Reason); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// leaveRoom makes a local user leave a room, reject an invite or withdraw
// a knock: in the room when this server is in it, else through a server
// that is (leaveOutOfRoom). A user may leave a blocked room, as in
// Synapse.
func (s *Server) leaveRoom(ctx context.Context, userID, roomID, reason string) error {
	m, err := s.store.OutOfRoomMembership(ctx, userID, roomID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	if m != nil && (m.Membership == rooms.MembershipInvite || m.Membership == rooms.MembershipKnock) {
		if cur, err := s.store.Membership(ctx, roomID, userID); err != nil {
			return err
		} else if cur != rooms.MembershipJoin {
			return s.leaveOutOfRoom(ctx, userID, m, reason)
		}
	}
	content, err := s.memberContent(ctx, rooms.MembershipLeave, userID, reason)
	if err != nil {
		return err
	}
	_, err = s.sendEvents(ctx, roomID, newEvent{Type: rooms.TypeMember, StateKey: &userID, Sender: userID, Content: content, IgnoreBlock: true})
	return err
}

// POST /_matrix/client/v3/rooms/{roomId}/forget
func (s *Server) postForget(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	m, err := s.store.Membership(r.Context(), roomID, me.UserID)
	if err != nil {
		return err
	}
	if m == rooms.MembershipJoin || m == rooms.MembershipInvite || m == rooms.MembershipKnock {
		return &matrix.Error{Code: "M_UNKNOWN", Msg: "you are still in this room: leave it first", Status: http.StatusBadRequest}
	}
	if m == "" {
		return matrix.NotFound("you have never been in this room")
	}
	if err := s.store.ForgetRoom(r.Context(), me.UserID, roomID); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// targetMembership handles invite, kick, ban and unban: a membership event
// about another user, sent by the caller.
func (s *Server) targetMembership(w http.ResponseWriter, r *http.Request, membership string) error {
	me := deviceFrom(r.Context())
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	var req struct {
		UserID string `json:"user_id"`
		Reason string `json:"reason"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.UserID == "" {
		return matrix.MissingParam("missing user_id")
	}
	if _, _, ok := matrix.SplitUserID(req.UserID); !ok {
		return matrix.InvalidParam("%q is not a user ID", req.UserID)
	}
	ctx := r.Context()
	if membership == "unban" {
		if m, err := s.store.Membership(ctx, roomID, req.UserID); err != nil {
			return err
		} else if m != rooms.MembershipBan {
			return matrix.Forbidden("%s is not banned", req.UserID)
		}
		membership = rooms.MembershipLeave
	}
	if membership == "kick" {
		if m, err := s.store.Membership(ctx, roomID, req.UserID); err != nil {
			return err
		} else if m != rooms.MembershipJoin && m != rooms.MembershipInvite && m != rooms.MembershipKnock {
			return matrix.Forbidden("%s is not in the room", req.UserID)
		}
		membership = rooms.MembershipLeave
	}
	if membership == rooms.MembershipInvite {
		if m, err := s.store.Membership(ctx, roomID, req.UserID); err != nil {
			return err
		} else if m == rooms.MembershipJoin {
			return matrix.Forbidden("%s is already in the room", req.UserID)
		} else if m == rooms.MembershipBan {
			return matrix.Forbidden("%s is banned from the room", req.UserID)
		}
	}
	content, err := s.memberContent(ctx, membership, req.UserID, req.Reason)
	if err != nil {
		return err
	}
	if membership == rooms.MembershipInvite && !s.isLocalUser(req.UserID) {
		// The invitee's server must sign the invite first.
		if err := s.inviteRemote(ctx, roomID, me.UserID, req.UserID, content); err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, struct{}{})
	}
	if membership == rooms.MembershipInvite {
		if err := s.checkInviteBlocked(ctx, req.UserID, me.UserID); err != nil {
			return err
		}
	}
	if _, err := s.sendEvents(ctx, roomID, newEvent{Type: rooms.TypeMember, StateKey: &req.UserID, Sender: me.UserID, Content: content}); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// POST /_matrix/client/v3/rooms/{roomId}/invite
func (s *Server) postInvite(w http.ResponseWriter, r *http.Request) error {
	return s.targetMembership(w, r, rooms.MembershipInvite)
}

// POST /_matrix/client/v3/rooms/{roomId}/kick
func (s *Server) postKick(w http.ResponseWriter, r *http.Request) error {
	return s.targetMembership(w, r, "kick")
}

// POST /_matrix/client/v3/rooms/{roomId}/ban
func (s *Server) postBan(w http.ResponseWriter, r *http.Request) error {
	return s.targetMembership(w, r, rooms.MembershipBan)
}

// POST /_matrix/client/v3/rooms/{roomId}/unban
func (s *Server) postUnban(w http.ResponseWriter, r *http.Request) error {
	return s.targetMembership(w, r, "unban")
}
