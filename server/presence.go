package server

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"

	"hearth/server/matrix"
	"hearth/server/storage"
)

// Presence (spec: "Presence"). A user's presence is stored with an aux
// stream position taken whenever its state or status message changes;
// /sync sends it to the users who share a room with them. Syncing marks
// the user online (or set_presence) and keeps last_active_ts fresh without
// taking a new position, so a busy client does not wake its contacts.

// currentlyActiveFor is how recently a user must have been active for an
// online presence to count as currently_active.
const currentlyActiveFor = 5 * time.Minute

// presenceTouchEvery is how often /sync records a user's activity.
const presenceTouchEvery = time.Minute

// presenceGoneAfter is how long after their last activity (a /sync or a
// presence update) a user who is not offline is taken to be offline: a
// client that was closed says nothing. /sync polls last at most five
// minutes (maxSyncTimeout), so a connected client is never taken for gone.
const presenceGoneAfter = maxSyncTimeout + presenceTouchEvery

var presenceStates = []string{"online", "unavailable", "offline"}

// presenceContent is the m.presence content (and GET answer) of p.
func (s *Server) presenceContent(p *storage.Presence) map[string]any {
	ago := max(s.now().UnixMilli()-p.LastActiveTS, 0)
	state := p.State
	if time.Duration(ago)*time.Millisecond > presenceGoneAfter {
		state = "offline" // not yet published by expirePresence
	}
	c := map[string]any{
		"presence":         state,
		"last_active_ago":  ago,
		"currently_active": state == "online" && time.Duration(ago)*time.Millisecond < currentlyActiveFor,
	}
	if p.StatusMsg != nil {
		c["status_msg"] = *p.StatusMsg
	}
	return c
}

// setPresence stores p and wakes those who may see it; with touch it only
// records activity (storage.SetPresence).
func (s *Server) setPresence(ctx context.Context, p *storage.Presence, touch bool) error {
	changed, err := s.store.SetPresence(ctx, p, touch)
	if err != nil || !changed {
		return err
	}
	return s.notifyPeers(ctx, p.UserID)
}

// notifyPeers wakes the /sync of userID and of everyone sharing a room
// with them: presence and device list changes concern exactly those.
func (s *Server) notifyPeers(ctx context.Context, userID string) error {
	mems, err := s.store.RoomsOfUser(ctx, userID, "join")
	if err != nil {
		return err
	}
	for _, m := range mems {
		s.notifier.notifyRoom(m.RoomID)
	}
	s.notifier.notifyUser(userID)
	return nil
}

// expirePresence publishes as offline the users among peers who have been
// gone for presenceGoneAfter. There is no timer: the /sync of whoever can
// see them does it, so it costs nothing while nobody looks, and the change
// reaches the others through the stream like any other.
func (s *Server) expirePresence(ctx context.Context, peers []string) error {
	stale, err := s.store.StalePresence(ctx, peers, s.now().Add(-presenceGoneAfter).UnixMilli())
	if err != nil {
		return err
	}
	for i := range stale {
		p := stale[i]
		p.State = "offline"
		if err := s.setPresence(ctx, &p, false); err != nil {
			return err
		}
	}
	return nil
}

// syncSetPresence applies /sync's set_presence: "offline" leaves the
// presence alone, online and unavailable set it.
//
// Omitted, the spec says the user is marked online. Hearth records the
// activity, and publishes online only for a user who was offline; a user
// with no presence yet is stored online without publishing, as otherwise
// every new client's first /sync would wake the long polls of everyone
// sharing a room with the user. Element sets presence with PUT /presence,
// which publishes.
func (s *Server) syncSetPresence(ctx context.Context, me *Device, set string) error {
	touch := false
	switch set {
	case "":
		set, touch = "online", true
	case "offline":
		return nil
	case "online", "unavailable":
	default:
		return matrix.InvalidParam("set_presence must be online, offline or unavailable")
	}
	p := &storage.Presence{UserID: me.UserID, State: set, LastActiveTS: s.now().UnixMilli()}
	old, err := s.store.PresenceOf(ctx, me.UserID)
	switch {
	case err == nil:
		if touch && old.State == "offline" {
			// Back after being offline (gone, or set so): the spec's
			// "marked online", published.
			touch = false
		}
		// Most syncs change nothing: skip the write while the recorded
		// activity is recent.
		if (touch || old.State == set) && p.LastActiveTS-old.LastActiveTS < presenceTouchEvery.Milliseconds() {
			return nil
		}
		p.StatusMsg = old.StatusMsg
	case !errors.Is(err, storage.ErrNotFound):
		return err
	}
	return s.setPresence(ctx, p, touch)
}

// canSeePresence reports whether viewer may see target's presence: their
// own, or a user they share a room with.
func (s *Server) canSeePresence(ctx context.Context, viewer, target string) (bool, error) {
	if viewer == target {
		return true, nil
	}
	peers, err := s.store.UsersSharingRooms(ctx, viewer)
	if err != nil {
		return false, err
	}
	return slices.Contains(peers, target), nil
}

// GET /_matrix/client/v3/presence/{userId}/status
func (s *Server) getPresence(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	userID, err := pathParam(r, "userId")
	if err != nil {
		return err
	}
	if _, err := s.store.UserByID(r.Context(), userID); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return matrix.NotFound("unknown user")
		}
		return err
	}
	ok, err := s.canSeePresence(r.Context(), me.UserID, userID)
	if err != nil {
		return err
	}
	if !ok {
		return matrix.Forbidden("you do not share a room with this user")
	}
	p, err := s.store.PresenceOf(r.Context(), userID)
	if errors.Is(err, storage.ErrNotFound) {
		return writeJSON(w, http.StatusOK, map[string]any{"presence": "offline"})
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.presenceContent(p))
}

// PUT /_matrix/client/v3/presence/{userId}/status
func (s *Server) putPresence(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	userID, err := pathParam(r, "userId")
	if err != nil {
		return err
	}
	if userID != me.UserID {
		return matrix.Forbidden("cannot set another user's presence")
	}
	var req struct {
		Presence  string  `json:"presence"`
		StatusMsg *string `json:"status_msg"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Presence == "" {
		return matrix.MissingParam("presence is required")
	}
	if !slices.Contains(presenceStates, req.Presence) {
		return matrix.InvalidParam("presence must be online, unavailable or offline")
	}
	p := &storage.Presence{UserID: me.UserID, State: req.Presence, StatusMsg: req.StatusMsg, LastActiveTS: s.now().UnixMilli()}
	if err := s.setPresence(r.Context(), p, false); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}
