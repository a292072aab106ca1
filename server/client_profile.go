package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"unicode/utf8"

	"hearth/server/federation"
	"hearth/server/matrix"
	"hearth/server/rooms"
	"hearth/server/storage"
)

// Profiles (spec: Client-Server API, "Profiles"). Other servers' users'
// profiles are asked of their servers. A change is copied into a
// new m.room.member join event in every room the user is joined to, as
// Synapse does, so other members see the new name.

const (
	maxDisplayNameLen = 256  // characters, as Synapse
	maxAvatarURLLen   = 1000 // bytes, as Synapse
)

// profileUser reads {userId} and loads the local user; unknown and remote
// users are 404 M_NOT_FOUND.
func (s *Server) profileUser(r *http.Request) (*storage.User, error) {
	userID, err := pathParam(r, "userId")
	if err != nil {
		return nil, err
	}
	if _, server, ok := matrix.SplitUserID(userID); !ok {
		return nil, matrix.InvalidParam("%q is not a user ID", userID)
	} else if server != s.cfg.ServerName {
		return s.remoteProfile(r.Context(), server, userID)
	}
	u, err := s.store.UserByID(r.Context(), userID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, matrix.NotFound("user %s not found", userID)
	}
	return u, err
}

// GET /_matrix/client/v3/profile/{userId}
func (s *Server) getProfile(w http.ResponseWriter, r *http.Request) error {
	u, err := s.profileUser(r)
	if err != nil {
		return err
	}
	out := map[string]string{}
	if u.DisplayName != "" {
		out["displayname"] = u.DisplayName
	}
	if u.AvatarURL != "" {
		out["avatar_url"] = u.AvatarURL
	}
	return writeJSON(w, http.StatusOK, out)
}

// GET /_matrix/client/v3/profile/{userId}/displayname
func (s *Server) getDisplayName(w http.ResponseWriter, r *http.Request) error {
	u, err := s.profileUser(r)
	if err != nil {
		return err
	}
	out := map[string]string{}
	if u.DisplayName != "" {
		out["displayname"] = u.DisplayName
	}
	return writeJSON(w, http.StatusOK, out)
}

// GET /_matrix/client/v3/profile/{userId}/avatar_url
func (s *Server) getAvatarURL(w http.ResponseWriter, r *http.Request) error {
	u, err := s.profileUser(r)
	if err != nil {
		return err
	}
	out := map[string]string{}
	if u.AvatarURL != "" {
		out["avatar_url"] = u.AvatarURL
	}
	return writeJSON(w, http.StatusOK, out)
}

// ownProfile checks that {userId} is the caller: a profile is changed only
// by its owner.
func ownProfile(r *http.Request, me *Device) error {
	target, err := pathParam(r, "userId")
	if err != nil {
		return err
	}
	if target != me.UserID {
		return matrix.Forbidden("you cannot change another user's profile")
	}
	return nil
}

// PUT /_matrix/client/v3/profile/{userId}/displayname
func (s *Server) putDisplayName(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	if err := ownProfile(r, me); err != nil {
		return err
	}
	var req map[string]json.RawMessage
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	raw, ok := req["displayname"]
	if !ok {
		return matrix.MissingParam("displayname is required")
	}
	var name *string // null removes the name
	if err := json.Unmarshal(raw, &name); err != nil {
		return matrix.BadJSON("displayname must be a string")
	}
	v := ""
	if name != nil {
		v = *name
	}
	if utf8.RuneCountInString(v) > maxDisplayNameLen {
		return matrix.InvalidParam("displayname is longer than %d characters", maxDisplayNameLen)
	}
	if err := s.store.SetDisplayName(r.Context(), me.UserID, v); err != nil {
		return err
	}
	s.propagateProfile(r.Context(), me.UserID)
	return writeJSON(w, http.StatusOK, struct{}{})
}

// PUT /_matrix/client/v3/profile/{userId}/avatar_url
func (s *Server) putAvatarURL(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	if err := ownProfile(r, me); err != nil {
		return err
	}
	var req map[string]json.RawMessage
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	raw, ok := req["avatar_url"]
	if !ok {
		return matrix.MissingParam("avatar_url is required")
	}
	var url *string
	if err := json.Unmarshal(raw, &url); err != nil {
		return matrix.BadJSON("avatar_url must be a string")
	}
	v := ""
	if url != nil {
		v = *url
	}
	if len(v) > maxAvatarURLLen {
		return matrix.InvalidParam("avatar_url is longer than %d bytes", maxAvatarURLLen)
	}
	if err := s.store.SetAvatarURL(r.Context(), me.UserID, v); err != nil {
		return err
	}
	s.propagateProfile(r.Context(), me.UserID)
	return writeJSON(w, http.StatusOK, struct{}{})
}

// propagateProfile sends a join event carrying the user's new profile into
// every room they are joined to, keeping the rest of their current member
// content. A room that refuses (or fails) is logged and skipped: the
// profile itself has changed either way.
func (s *Server) propagateProfile(ctx context.Context, userID string) {
	log := logFrom(ctx, s.log)
	u, err := s.store.UserByID(ctx, userID)
	if err != nil {
		log.Error("profile propagation: load user", "user", userID, "err", err)
		return
	}
	joined, err := s.store.RoomsOfUser(ctx, userID, rooms.MembershipJoin)
	if err != nil {
		log.Error("profile propagation: list rooms", "user", userID, "err", err)
		return
	}
	for _, m := range joined {
		if err := s.updateMemberProfile(ctx, m.RoomID, u); err != nil {
			log.Warn("profile propagation failed", "user", userID, "room", m.RoomID, "err", err)
		}
	}
}

// updateMemberProfile sends the user's profile into one room, unless their
// member event already shows it.
func (s *Server) updateMemberProfile(ctx context.Context, roomID string, u *storage.User) error {
	cur, err := s.store.CurrentStateEvent(ctx, roomID, rooms.TypeMember, u.UserID)
	if err != nil {
		return err
	}
	if cur.Membership != rooms.MembershipJoin {
		return nil
	}
	content := map[string]json.RawMessage{}
	if err := json.Unmarshal(contentOf(cur.JSON), &content); err != nil {
		return err
	}
	var oldName, oldAvatar string
	_ = json.Unmarshal(content["displayname"], &oldName)
	_ = json.Unmarshal(content["avatar_url"], &oldAvatar)
	if oldName == u.DisplayName && oldAvatar == u.AvatarURL {
		return nil
	}
	// A profile change is not a new join: its reason and restricted-join
	// authorisation belong to the original event.
	delete(content, "reason")
	delete(content, "join_authorised_via_users_server")
	for key, v := range map[string]string{"displayname": u.DisplayName, "avatar_url": u.AvatarURL} {
		if v == "" {
			delete(content, key)
		} else {
			b, _ := json.Marshal(v)
			content[key] = b
		}
	}
	_, err = s.sendEvents(ctx, roomID, newEvent{Type: rooms.TypeMember, StateKey: &u.UserID, Sender: u.UserID, Content: content})
	return err
}

// remoteProfile asks a user's server for their profile
// (GET /_matrix/federation/v1/query/profile).
func (s *Server) remoteProfile(ctx context.Context, server, userID string) (*storage.User, error) {
	if s.fedClient == nil {
		return nil, matrix.NotFound("profile of %s not found: this server does not federate", userID)
	}
	var p struct {
		DisplayName string `json:"displayname"`
		AvatarURL   string `json:"avatar_url"`
	}
	err := s.fedClient.Do(ctx, server, http.MethodGet, "/_matrix/federation/v1/query/profile", url.Values{"user_id": {userID}}, nil, &p)
	if federation.IsNotFound(err) {
		return nil, matrix.NotFound("user %s not found", userID)
	}
	if err != nil {
		return nil, &matrix.Error{Code: "M_UNKNOWN", Status: http.StatusBadGateway, Msg: "could not ask " + server + " for the profile", Err: err}
	}
	return &storage.User{UserID: userID, DisplayName: p.DisplayName, AvatarURL: p.AvatarURL}, nil
}
