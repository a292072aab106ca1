package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"hearth/server/federation"
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

// Presence across servers (spec: Server-Server API, "Presence"). A local
// user's published presence goes as an m.presence EDU to the servers that
// share a room with them, and goes again every federationPresencePing
// while they stay active, as other servers take a user they hear nothing
// of for gone (Synapse after 30 minutes). Other servers' users' presence,
// for users in a room with this server's, is stored like a local user's
// and reaches /sync the same way; it is taken as offline after
// federationPresenceTimeout without news.
const (
	federationPresencePing    = 25 * time.Minute
	federationPresenceTimeout = 30 * time.Minute
)

// presenceSent records when a local user's presence last went out.
type presenceSent struct {
	mu   sync.Mutex
	last map[string]time.Time
}

// due reports whether userID's presence has not gone out for a ping
// interval.
func (p *presenceSent) due(userID string, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return now.Sub(p.last[userID]) >= federationPresencePing
}

func (p *presenceSent) mark(userID string, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last == nil {
		p.last = map[string]time.Time{}
	}
	p.last[userID] = now
}

// goneAfter is how long after their last news a user who is not offline
// is taken to be offline: a local user's client says nothing when closed;
// another server's user, until their server's next ping.
func (s *Server) goneAfter(userID string) time.Duration {
	if s.isLocalUser(userID) {
		return presenceGoneAfter
	}
	return federationPresenceTimeout
}

// presenceContent is the m.presence content (and GET answer) of p.
func (s *Server) presenceContent(p *storage.Presence) map[string]any {
	ago := max(s.now().UnixMilli()-p.LastActiveTS, 0)
	state := p.State
	if time.Duration(ago)*time.Millisecond > s.goneAfter(p.UserID) {
		state = "offline" // not yet published by sweepPresence
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
	s.shared.presence.Remove(p.UserID)
	if err != nil {
		return err
	}
	if s.fedSender != nil && s.isLocalUser(p.UserID) && (changed || s.presenceSent.due(p.UserID, s.now())) {
		s.sendPresence(ctx, p.UserID)
	}
	if !changed {
		return nil
	}
	return s.notifyPeers(ctx, p.UserID)
}

// sendPresence sends a local user's presence, as stored, to the servers
// sharing a room with them. Failures are logged: presence is best effort.
func (s *Server) sendPresence(ctx context.Context, userID string) {
	p, err := s.store.PresenceOf(ctx, userID)
	if err != nil {
		return
	}
	// One query for all the user's rooms (it was one a room: a thousand
	// for a user in a thousand rooms, at every change and ping).
	peers, err := s.store.UsersSharingRooms(ctx, userID)
	if err != nil {
		s.log.Warn("federation: cannot list the users sharing a room for presence", "user_id", userID, "err", err)
		return
	}
	var servers []string
	seen := map[string]bool{s.cfg.ServerName: true}
	for _, u := range peers {
		if _, srv, ok := strings.Cut(u, ":"); ok && !seen[srv] {
			seen[srv] = true
			servers = append(servers, srv)
		}
	}
	s.presenceSent.mark(userID, s.now())
	if len(servers) == 0 {
		return
	}
	c := s.presenceContent(p)
	c["user_id"] = userID
	raw, err := json.Marshal(map[string]any{"push": []any{c}})
	if err != nil {
		return
	}
	s.fedSender.SendEDUs(servers, federation.EDU{Type: "m.presence", Content: raw})
}

// receivePresence applies an m.presence EDU: the presence of origin's
// users who are in a room with this server (of others it has no use).
func (s *Server) receivePresence(ctx context.Context, origin string, content json.RawMessage) error {
	var c struct {
		Push []struct {
			UserID        string  `json:"user_id"`
			Presence      string  `json:"presence"`
			StatusMsg     *string `json:"status_msg"`
			LastActiveAgo int64   `json:"last_active_ago"`
		} `json:"push"`
	}
	if err := decodeEDU(content, &c); err != nil {
		return err
	}
	for _, u := range c.Push {
		if !fromOrigin(u.UserID, origin) || !slices.Contains(presenceStates, u.Presence) {
			continue
		}
		if mems, err := s.store.RoomsOfUser(ctx, u.UserID, "join"); err != nil {
			return err
		} else if len(mems) == 0 {
			continue
		}
		p := &storage.Presence{UserID: u.UserID, State: u.Presence, StatusMsg: u.StatusMsg,
			LastActiveTS: s.now().UnixMilli() - max(u.LastActiveAgo, 0)}
		if err := s.setPresence(ctx, p, false); err != nil {
			return err
		}
	}
	return nil
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

// presenceSweepEvery is how often, at most, presence is swept for users
// gone quiet.
const presenceSweepEvery = 15 * time.Second

// sweepPresence publishes as offline the users who have been gone for
// goneAfter. There is no timer: a /sync that wants presence does it, at
// most every presenceSweepEvery, so it costs nothing while nobody looks,
// and the change reaches everyone who can see them through the stream
// like any other. It reads the users not offline and quiet for long
// (an index of their own), across the server: what a /sync costs does not
// grow with how many users share a room with the syncing one.
func (s *Server) sweepPresence(ctx context.Context) error {
	now := s.now()
	last := s.presenceSwept.Load()
	if now.UnixNano()-last < int64(presenceSweepEvery) || !s.presenceSwept.CompareAndSwap(last, now.UnixNano()) {
		return nil
	}
	stale, err := s.store.StalePresence(ctx, now.Add(-federationPresenceTimeout).UnixMilli(), "")
	if err != nil {
		return err
	}
	seen := make(map[string]bool, len(stale))
	for _, p := range stale {
		seen[p.UserID] = true
	}
	// This server's users are gone sooner than other servers' users.
	local, err := s.store.StalePresence(ctx, now.Add(-presenceGoneAfter).UnixMilli(), s.cfg.ServerName)
	if err != nil {
		return err
	}
	for _, p := range local {
		if s.isLocalUser(p.UserID) && !seen[p.UserID] {
			stale = append(stale, p)
		}
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
	old, err := s.shared.presence.GetOrLoad(me.UserID, func() (storage.Presence, error) {
		p, err := s.store.PresenceOf(ctx, me.UserID)
		if err != nil {
			return storage.Presence{}, err
		}
		return *p, nil
	})
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
	sharing, err := s.sharingAmong(ctx, viewer, []string{target})
	if err != nil {
		return false, err
	}
	return sharing[target], nil
}

// GET /_matrix/client/v3/presence/{userId}/status
func (s *Server) getPresence(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	userID, err := pathParam(r, "userId")
	if err != nil {
		return err
	}
	if s.isLocalUser(userID) {
		if _, err := s.store.UserByID(r.Context(), userID); err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				return matrix.NotFound("unknown user")
			}
			return err
		}
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
