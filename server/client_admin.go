package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"hearth/server/matrix"
	"hearth/server/rooms"
	"hearth/server/storage"
)

// Server administration in the Client-Server API (spec: "Server
// Administration" and "Account moderation"): whois for a user's own
// sessions or an admin's look at anyone's, and locking and suspending
// accounts. The Synapse admin API offers the same through admin_users.go;
// both go through the shared operations in admin_ops.go.

// GET /_matrix/client/v3/admin/whois/{userId}
//
// Users may look themselves up; anyone else needs a server admin, checked
// before the user is looked up so the answer says nothing about who exists.
func (s *Server) getWhois(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	userID, err := pathParam(r, "userId")
	if err != nil {
		return err
	}
	if userID != me.UserID && !me.IsAdmin {
		return matrix.Forbidden("you are not a server admin")
	}
	_, server, ok := matrix.SplitUserID(userID)
	if !ok {
		return matrix.InvalidParam("%q is not a user ID", userID)
	}
	if server != s.cfg.ServerName {
		return matrix.InvalidParam("can only whois a local user")
	}
	out, err := s.whois(r.Context(), userID)
	if errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("user not found")
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, out)
}

// moderationTarget authorises an account moderation request and loads its
// {userId}, in the spec's order: the caller must be a server admin (before
// any lookup, against user enumeration); the user must be local (400
// M_INVALID_PARAM), exist and not be deactivated (404); and must not be
// another admin (403).
func (s *Server) moderationTarget(r *http.Request) (*storage.User, error) {
	me := deviceFrom(r.Context())
	if !me.IsAdmin {
		return nil, matrix.Forbidden("you are not a server admin")
	}
	userID, err := pathParam(r, "userId")
	if err != nil {
		return nil, err
	}
	_, server, ok := matrix.SplitUserID(userID)
	if !ok {
		return nil, matrix.InvalidParam("%q is not a user ID", userID)
	}
	if server != s.cfg.ServerName {
		return nil, matrix.InvalidParam("user does not belong to the local server")
	}
	u, err := s.store.UserByID(r.Context(), userID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && u.Deactivated) {
		return nil, matrix.NotFound("user not found")
	}
	if err != nil {
		return nil, err
	}
	if u.IsAdmin && u.UserID != me.UserID {
		return nil, matrix.Forbidden("the user is another server admin")
	}
	return u, nil
}

// moderationChange decodes the PUT body's one boolean, key, refusing a
// change to the caller's own account.
func moderationChange(r *http.Request, u *storage.User, key string) (bool, error) {
	var req map[string]any
	if err := decodeJSON(r, &req); err != nil {
		return false, err
	}
	raw, ok := req[key]
	if !ok {
		return false, matrix.MissingParam("%s is required", key)
	}
	v, ok := raw.(bool)
	if !ok {
		return false, matrix.BadJSON("%s must be a boolean", key)
	}
	if u.UserID == deviceFrom(r.Context()).UserID {
		return false, matrix.Forbidden("you cannot change this on your own account")
	}
	return v, nil
}

// GET /_matrix/client/v1/admin/lock/{userId}
func (s *Server) getLockStatus(w http.ResponseWriter, r *http.Request) error {
	u, err := s.moderationTarget(r)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]bool{"locked": u.Locked})
}

// PUT /_matrix/client/v1/admin/lock/{userId}
func (s *Server) putLockStatus(w http.ResponseWriter, r *http.Request) error {
	u, err := s.moderationTarget(r)
	if err != nil {
		return err
	}
	locked, err := moderationChange(r, u, "locked")
	if err != nil {
		return err
	}
	if err := s.SetUserLocked(r.Context(), s.clientActor(r), u.UserID, locked); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]bool{"locked": locked})
}

// GET /_matrix/client/v1/admin/suspend/{userId}
func (s *Server) getSuspendStatus(w http.ResponseWriter, r *http.Request) error {
	u, err := s.moderationTarget(r)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]bool{"suspended": u.Suspended})
}

// PUT /_matrix/client/v1/admin/suspend/{userId}
func (s *Server) putSuspendStatus(w http.ResponseWriter, r *http.Request) error {
	u, err := s.moderationTarget(r)
	if err != nil {
		return err
	}
	suspended, err := moderationChange(r, u, "suspended")
	if err != nil {
		return err
	}
	if err := s.SetUserSuspended(r.Context(), s.clientActor(r), u.UserID, suspended); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]bool{"suspended": suspended})
}

// suspendedMaySend decides what a suspended account may send through
// /send and /state: as in Synapse, only the corrective actions an admin may
// ask of it, redacting its own events and leaving rooms.
func (s *Server) suspendedMaySend(ctx context.Context, me *Device, roomID, typ string, stateKey *string, content []byte) error {
	if !me.Suspended {
		return nil
	}
	switch {
	case typ == rooms.TypeRedaction && stateKey == nil:
		var c struct {
			Redacts string `json:"redacts"`
		}
		_ = json.Unmarshal(content, &c)
		if c.Redacts != "" {
			te, err := s.store.EventByID(ctx, c.Redacts)
			if err != nil && !errors.Is(err, storage.ErrNotFound) {
				return err
			}
			if err == nil && te.RoomID == roomID && te.Sender == me.UserID {
				return nil
			}
		}
		return errUserSuspended("redact other users' events")
	case typ == rooms.TypeMember && stateKey != nil && *stateKey == me.UserID:
		var c struct {
			Membership string `json:"membership"`
		}
		if json.Unmarshal(content, &c) == nil && c.Membership == rooms.MembershipLeave {
			return nil
		}
	}
	return errUserSuspended("send events")
}

// clientActor is the admin acting through the client API, for the audit
// log.
func (s *Server) clientActor(r *http.Request) Actor {
	return Actor{UserID: deviceFrom(r.Context()).UserID, IP: clientIP(r, s.xForwarded(r)), Via: "client API"}
}
