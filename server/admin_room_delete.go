package server

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"hearth/server/matrix"
	"hearth/server/rooms"
	"hearth/server/secret"
	"hearth/server/storage"
)

// Deleting rooms: Synapse's DELETE /v1/rooms/<id> (synchronous) and
// DELETE /v2/rooms/<id> (asynchronous, with a delete ID whose status is
// stored, so a restart resumes an unfinished deletion instead of losing it).

// DeleteRoomRequest is the body of both DELETE endpoints.
type DeleteRoomRequest struct {
	NewRoomUserID string `json:"new_room_user_id,omitempty"`
	RoomName      string `json:"room_name,omitempty"`
	Message       string `json:"message,omitempty"`
	Block         bool   `json:"block"`
	// Purge defaults to true.
	Purge      *bool `json:"purge,omitempty"`
	ForcePurge bool  `json:"force_purge"`
	// Actor is who asked, kept so a resumed deletion is audited right.
	Actor Actor `json:"hearth_actor"`
}

func (q DeleteRoomRequest) purge() bool { return q.Purge == nil || *q.Purge }

// ShutdownResult is Synapse's shutdown_room object.
type ShutdownResult struct {
	KickedUsers       []string `json:"kicked_users"`
	FailedToKickUsers []string `json:"failed_to_kick_users"`
	LocalAliases      []string `json:"local_aliases"`
	NewRoomID         *string  `json:"new_room_id"`
}

// Synapse's defaults for the room users are moved to.
const (
	defaultNewRoomName = "Content Violation Notification"
	defaultNewRoomMsg  = "Sharing illegal content on this server is not permitted and rooms in violation will be blocked."
)

// validateDelete checks a request before anything happens.
func (s *Server) validateDelete(ctx context.Context, roomID string, req *DeleteRoomRequest) error {
	if !strings.HasPrefix(roomID, "!") || len(roomID) > 255 {
		return matrix.InvalidParam("%s is not a legal room ID", roomID)
	}
	if req.NewRoomUserID != "" {
		if _, server, ok := matrix.SplitUserID(req.NewRoomUserID); !ok || server != s.cfg.ServerName {
			return matrix.InvalidParam("User must be our own: %s", req.NewRoomUserID)
		}
		if _, err := s.store.UserByID(ctx, req.NewRoomUserID); errors.Is(err, storage.ErrNotFound) {
			return matrix.NotFound("new_room_user_id %s does not exist", req.NewRoomUserID)
		} else if err != nil {
			return err
		}
	}
	if _, err := s.store.RoomByID(ctx, roomID); errors.Is(err, storage.ErrNotFound) {
		if !req.Block {
			return matrix.NotFound("Unknown room id %s", roomID)
		}
	} else if err != nil {
		return err
	}
	return nil
}

// DeleteRoom shuts the room down and (by default) purges it, synchronously:
// Synapse's DELETE /v1/rooms/<id>.
func (s *Server) DeleteRoom(ctx context.Context, by Actor, roomID string, req DeleteRoomRequest) (*ShutdownResult, error) {
	req.Actor = by
	if err := s.validateDelete(ctx, roomID, &req); err != nil {
		return nil, err
	}
	res, err := s.shutdownRoom(ctx, roomID, req)
	if err != nil {
		return nil, err
	}
	if req.purge() {
		if err := s.purgeRoom(ctx, roomID, req, res); err != nil {
			return nil, err
		}
	}
	s.audit(ctx, by, "room.delete", roomID, fmt.Sprintf("block=%t purge=%t", req.Block, req.purge()))
	return res, nil
}

// StartRoomDelete records a deletion and runs it in the background:
// Synapse's DELETE /v2/rooms/<id>. It returns the delete ID.
func (s *Server) StartRoomDelete(ctx context.Context, by Actor, roomID string, req DeleteRoomRequest) (string, error) {
	req.Actor = by
	if err := s.validateDelete(ctx, roomID, &req); err != nil {
		return "", err
	}
	running, err := s.store.RoomDeletes(ctx, roomID, true)
	if err != nil {
		return "", err
	}
	if len(running) > 0 {
		return "", matrix.InvalidParam("History purge already in progress for %s", roomID)
	}
	params, err := json.Marshal(req)
	if err != nil {
		return "", err
	}
	d := &storage.RoomDelete{DeleteID: secret.FromAlphabet("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", 16), RoomID: roomID,
		Status: storage.DeleteShuttingDown, Params: params, CreatedTS: s.now().UnixMilli()}
	if err := s.store.CreateRoomDelete(ctx, d); err != nil {
		return "", err
	}
	s.audit(ctx, by, "room.delete.start", roomID, fmt.Sprintf("delete_id=%s block=%t purge=%t", d.DeleteID, req.Block, req.purge()))
	// The deletion outlives this request, so Run owns it. Before Run runs
	// (or once it has stopped) the stored record is the queue: the next
	// Run resumes it.
	if !s.goBackground(func(ctx context.Context) { s.runRoomDelete(ctx, d.DeleteID, roomID, req) }) {
		s.log.Info("room deletion recorded; it starts when the server runs", "delete_id", d.DeleteID, "room_id", roomID)
	}
	return d.DeleteID, nil
}

// runRoomDelete carries out a recorded deletion, updating its status,
// unless this process is already doing so or it has finished. When ctx ends
// first, the deletion is left as it stands (every step is idempotent), for
// the next process to resume.
func (s *Server) runRoomDelete(ctx context.Context, deleteID, roomID string, req DeleteRoomRequest) {
	log := s.log.With("delete_id", deleteID, "room_id", roomID)
	if !s.bg.claimDelete(deleteID) {
		return
	}
	defer s.bg.releaseDelete(deleteID)
	// interrupted reports (and logs) an error that is only ctx ending.
	interrupted := func(err error) bool {
		if ctx.Err() == nil {
			return false
		}
		log.Info("room deletion interrupted by shutdown; the next start resumes it", "err", err)
		return true
	}
	// Read the status again now that it is ours: resumeRoomDeletes may have
	// listed a deletion that the admin API's goroutine has since finished.
	if d, err := s.store.RoomDeleteByID(ctx, deleteID); err != nil {
		if !interrupted(err) {
			log.Error("room deletion: status", "err", err)
		}
		return
	} else if d.Status == storage.DeleteComplete || d.Status == storage.DeleteFailed {
		return
	}
	fail := func(err error) {
		if interrupted(err) {
			return
		}
		log.Error("room deletion failed", "err", err)
		msg := "internal error"
		var me *matrix.Error
		if errors.As(err, &me) {
			msg = me.Msg
		}
		if uerr := s.store.UpdateRoomDelete(ctx, deleteID, storage.DeleteFailed, msg, nil); uerr != nil {
			log.Error("recording a failed room deletion failed", "err", uerr)
		}
	}
	if err := s.store.UpdateRoomDelete(ctx, deleteID, storage.DeleteShuttingDown, "", nil); err != nil {
		if !interrupted(err) {
			log.Error("room deletion: status", "err", err)
		}
		return
	}
	res, err := s.shutdownRoom(ctx, roomID, req)
	if err != nil {
		fail(err)
		return
	}
	result, _ := json.Marshal(res)
	if req.purge() {
		if err := s.store.UpdateRoomDelete(ctx, deleteID, storage.DeletePurging, "", result); err != nil {
			if !interrupted(err) {
				log.Error("room deletion: status", "err", err)
			}
			return
		}
		if err := s.purgeRoom(ctx, roomID, req, res); err != nil {
			fail(err)
			return
		}
	}
	if err := s.store.UpdateRoomDelete(ctx, deleteID, storage.DeleteComplete, "", result); err != nil {
		if !interrupted(err) {
			log.Error("room deletion: status", "err", err)
		}
		return
	}
	s.audit(ctx, req.Actor, "room.delete", roomID, fmt.Sprintf("delete_id=%s block=%t purge=%t", deleteID, req.Block, req.purge()))
}

// resumeRoomDeletes restarts the deletions a previous process left
// unfinished, and those recorded before Run started. Each step is
// idempotent: leaving users already gone is skipped, and purging a purged
// room deletes nothing.
func (s *Server) resumeRoomDeletes(ctx context.Context) {
	ds, err := s.store.RoomDeletes(ctx, "", true)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("looking for unfinished room deletions failed", "err", err)
		}
		return
	}
	for _, d := range ds {
		if ctx.Err() != nil {
			return
		}
		var req DeleteRoomRequest
		if err := json.Unmarshal(d.Params, &req); err != nil {
			_ = s.store.UpdateRoomDelete(ctx, d.DeleteID, storage.DeleteFailed, "unreadable request", nil)
			continue
		}
		s.log.Info("resuming room deletion", "delete_id", d.DeleteID, "room_id", d.RoomID)
		s.runRoomDelete(ctx, d.DeleteID, d.RoomID, req)
	}
}

// shutdownRoom blocks the room if asked, makes every local member leave
// (moving them to a new room when new_room_user_id is set), unpublishes it
// and removes its local aliases.
func (s *Server) shutdownRoom(ctx context.Context, roomID string, req DeleteRoomRequest) (*ShutdownResult, error) {
	res := &ShutdownResult{KickedUsers: []string{}, FailedToKickUsers: []string{}, LocalAliases: []string{}}
	if req.Block {
		err := s.timeline.Exclusive(roomID, func() error { return s.store.SetRoomBlocked(ctx, roomID, req.Actor.UserID, true) })
		if err != nil {
			return nil, err
		}
	}
	if _, err := s.store.RoomByID(ctx, roomID); errors.Is(err, storage.ErrNotFound) {
		return res, nil // blocked before this server knew it, or already purged
	} else if err != nil {
		return nil, err
	}
	if req.NewRoomUserID != "" {
		id, err := s.createViolationRoom(ctx, req)
		if err != nil {
			return nil, err
		}
		res.NewRoomID = &id
	}
	members, err := s.store.Members(ctx, roomID)
	if err != nil {
		return nil, err
	}
	local := make([]string, 0, len(members))
	for u, m := range members {
		if strings.HasSuffix(u, ":"+s.cfg.ServerName) && (m == rooms.MembershipJoin || m == rooms.MembershipInvite || m == rooms.MembershipKnock) {
			local = append(local, u)
		}
	}
	slices.Sort(local)
	for _, u := range local {
		wasJoined := members[u] == rooms.MembershipJoin
		content, _ := s.memberContent(ctx, rooms.MembershipLeave, u, "")
		_, err := s.sendEvents(ctx, roomID, newEvent{Type: rooms.TypeMember, StateKey: &u, Sender: u, Content: content, IgnoreBlock: true})
		if err != nil {
			s.log.Warn("room deletion: could not remove a member", "room_id", roomID, "user_id", u, "err", err)
			res.FailedToKickUsers = append(res.FailedToKickUsers, u)
			continue
		}
		if err := s.store.ForgetRoom(ctx, u, roomID); err != nil {
			return nil, err
		}
		res.KickedUsers = append(res.KickedUsers, u)
		if res.NewRoomID != nil && wasJoined && u != req.NewRoomUserID {
			if err := s.forceJoin(ctx, *res.NewRoomID, u, req.NewRoomUserID); err != nil {
				s.log.Warn("room deletion: could not move a member to the new room", "user_id", u, "err", err)
			}
		}
	}
	aliases, err := s.store.RoomAliases(ctx, roomID)
	if err != nil {
		return nil, err
	}
	for _, a := range aliases {
		if err := s.store.DeleteAlias(ctx, a); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
		res.LocalAliases = append(res.LocalAliases, a)
	}
	if err := s.store.SetRoomPublic(ctx, roomID, false); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	return res, nil
}

// createViolationRoom makes the room users of a deleted room are moved to,
// with the admin's message in it.
func (s *Server) createViolationRoom(ctx context.Context, req DeleteRoomRequest) (string, error) {
	rv, _ := rooms.LookupVersion(s.cfg.DefaultRoomVersion)
	roomID, err := s.createRoom(ctx, rooms.CreateRoomRequest{Version: rv, Creator: req.NewRoomUserID, Preset: rooms.PresetPublicChat,
		Name: cmp.Or(req.RoomName, defaultNewRoomName)}, false)
	if err != nil {
		return "", err
	}
	_, err = s.sendEvents(ctx, roomID, newEvent{Type: "m.room.message", Sender: req.NewRoomUserID,
		Content: map[string]any{"msgtype": "m.text", "body": cmp.Or(req.Message, defaultNewRoomMsg)}})
	return roomID, err
}

// purgeRoom removes the room from the database once no local user is left
// in it (unless force_purge).
func (s *Server) purgeRoom(ctx context.Context, roomID string, req DeleteRoomRequest, res *ShutdownResult) error {
	if len(res.FailedToKickUsers) > 0 && !req.ForcePurge {
		return matrix.InvalidParam("Users are still joined to this room")
	}
	return s.timeline.Exclusive(roomID, func() error { return s.store.PurgeRoom(ctx, roomID) })
}

// RoomDeleteStatus returns one deletion; an unknown ID is M_NOT_FOUND.
func (s *Server) RoomDeleteStatus(ctx context.Context, deleteID string) (*storage.RoomDelete, error) {
	d, err := s.store.RoomDeleteByID(ctx, deleteID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, matrix.NotFound("delete id '%s' not found", deleteID)
	}
	return d, err
}

// RoomDeleteStatuses lists a room's deletions, oldest first.
func (s *Server) RoomDeleteStatuses(ctx context.Context, roomID string) ([]*storage.RoomDelete, error) {
	return s.store.RoomDeletes(ctx, roomID, false)
}

func deleteStatusJSON(d *storage.RoomDelete) map[string]any {
	m := map[string]any{"delete_id": d.DeleteID, "room_id": d.RoomID, "status": d.Status,
		"shutdown_room": json.RawMessage(d.Result)}
	if d.Error != "" {
		m["error"] = d.Error
	}
	if string(d.Result) == "{}" {
		m["shutdown_room"] = &ShutdownResult{KickedUsers: []string{}, FailedToKickUsers: []string{}, LocalAliases: []string{}}
	}
	return m
}

// DELETE /_synapse/admin/v1/rooms/{roomId}
func (s *Server) deleteAdminRoomV1(w http.ResponseWriter, r *http.Request) error {
	roomID, err := pathParam(r, "roomId")
	if err != nil {
		return err
	}
	var req DeleteRoomRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	res, err := s.DeleteRoom(r.Context(), s.apiActor(r), roomID, req)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, res)
}

// DELETE /_synapse/admin/v2/rooms/{roomId}
func (s *Server) deleteAdminRoomV2(w http.ResponseWriter, r *http.Request) error {
	roomID, err := pathParam(r, "roomId")
	if err != nil {
		return err
	}
	var req DeleteRoomRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	id, err := s.StartRoomDelete(r.Context(), s.apiActor(r), roomID, req)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]string{"delete_id": id})
}

// GET /_synapse/admin/v2/rooms/{roomId}/delete_status
func (s *Server) getAdminRoomDeleteStatus(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	ds, err := s.RoomDeleteStatuses(r.Context(), roomID)
	if err != nil {
		return err
	}
	if len(ds) == 0 {
		return matrix.NotFound("No delete task for room_id '%s' found", roomID)
	}
	out := make([]map[string]any, 0, len(ds))
	for _, d := range ds {
		out = append(out, deleteStatusJSON(d))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"results": out})
}

// GET /_synapse/admin/v2/rooms/delete_status/{deleteId}
func (s *Server) getAdminDeleteStatus(w http.ResponseWriter, r *http.Request) error {
	id, err := pathParam(r, "deleteId")
	if err != nil {
		return err
	}
	d, err := s.RoomDeleteStatus(r.Context(), id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, deleteStatusJSON(d))
}
