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

// viewableState returns the state a user may read: the current state while
// joined (or when the room is world-readable), the state when they left
// for former members, else 403 M_FORBIDDEN.
func (s *Server) viewableState(ctx context.Context, roomID, userID string) (storage.StateKeyMap, error) {
	if _, err := s.store.RoomByID(ctx, roomID); errors.Is(err, storage.ErrNotFound) {
		return nil, matrix.Forbidden("you are not in room %s", roomID)
	} else if err != nil {
		return nil, err
	}
	m, err := s.store.Membership(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	if m == rooms.MembershipJoin {
		return s.store.CurrentState(ctx, roomID)
	}
	if m == rooms.MembershipLeave || m == rooms.MembershipBan {
		mem, err := s.store.CurrentStateEvent(ctx, roomID, rooms.TypeMember, userID)
		if err != nil {
			return nil, err
		}
		return s.store.StateGroup(ctx, mem.StateGroup)
	}
	if s.worldReadable(ctx, roomID) {
		return s.store.CurrentState(ctx, roomID)
	}
	return nil, matrix.Forbidden("you are not in room %s", roomID)
}

// worldReadable reports whether the room's current history visibility is
// world_readable.
func (s *Server) worldReadable(ctx context.Context, roomID string) bool {
	hv, err := s.store.CurrentStateEvent(ctx, roomID, rooms.TypeHistoryVis, "")
	if err != nil {
		return false
	}
	var c struct {
		HistoryVisibility string `json:"history_visibility"`
	}
	return json.Unmarshal(contentOf(hv.JSON), &c) == nil && c.HistoryVisibility == "world_readable"
}

// stateEvents loads and orders a state map's events.
func (s *Server) stateEvents(ctx context.Context, state storage.StateKeyMap) ([]*storage.Event, error) {
	ids := make([]string, 0, len(state))
	for _, id := range state {
		ids = append(ids, id)
	}
	return s.store.EventsByID(ctx, ids)
}

// GET /_matrix/client/v3/rooms/{roomId}/state
func (s *Server) getRoomState(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	state, err := s.viewableState(r.Context(), roomID, me.UserID)
	if err != nil {
		return err
	}
	evs, err := s.stateEvents(r.Context(), state)
	if err != nil {
		return err
	}
	f := s.formatterFor(me)
	out, err := f.format(r.Context(), evs)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, out)
}

// GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}
//
// Answers the content, or the whole event with ?format=event.
func (s *Server) getStateEvent(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	typ, err := pathParam(r, "eventType")
	if err != nil {
		return err
	}
	stateKey, err := pathParam(r, "stateKey")
	if err != nil {
		return err
	}
	state, err := s.viewableState(r.Context(), roomID, me.UserID)
	if err != nil {
		return err
	}
	id, ok := state[storage.StateKey{Type: typ, StateKey: stateKey}]
	if !ok {
		return matrix.NotFound("no %s state event with state key %q", typ, stateKey)
	}
	e, err := s.store.EventByID(r.Context(), id)
	if err != nil {
		return err
	}
	if r.URL.Query().Get("format") == "event" {
		f := s.formatterFor(me)
		out, err := f.format(r.Context(), []*storage.Event{e})
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, out[0])
	}
	w.Header().Set("Content-Type", "application/json")
	_, err = w.Write(contentOf(e.JSON))
	return err
}

// GET /_matrix/client/v3/rooms/{roomId}/joined_members
//
// Only current members (or anyone, for world-readable rooms) may ask:
// unlike /state, a former member does not get the list as it was.
func (s *Server) getJoinedMembers(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	if m, err := s.store.Membership(r.Context(), roomID, me.UserID); err != nil {
		return err
	} else if m != rooms.MembershipJoin && !s.worldReadable(r.Context(), roomID) {
		return matrix.Forbidden("you are not in room %s", roomID)
	}
	state, err := s.store.CurrentState(r.Context(), roomID)
	if err != nil {
		return err
	}
	var ids []string
	for k, id := range state {
		if k.Type == rooms.TypeMember {
			ids = append(ids, id)
		}
	}
	evs, err := s.store.EventsByID(r.Context(), ids)
	if err != nil {
		return err
	}
	joined := map[string]any{}
	for _, e := range evs {
		if e.Membership != rooms.MembershipJoin || e.StateKey == nil {
			continue
		}
		var c struct {
			DisplayName *string `json:"displayname"`
			AvatarURL   *string `json:"avatar_url"`
		}
		_ = json.Unmarshal(contentOf(e.JSON), &c)
		joined[*e.StateKey] = map[string]*string{"display_name": c.DisplayName, "avatar_url": c.AvatarURL}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"joined": joined})
}

// GET /_matrix/client/v3/rooms/{roomId}/members
//
// Query: at (a sync token or event-stream position; state at that point),
// membership and not_membership filters.
func (s *Server) getMembers(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	state, err := s.viewableState(ctx, roomID, me.UserID)
	if err != nil {
		return err
	}
	if at := r.URL.Query().Get("at"); at != "" {
		if state, err = s.stateAtToken(ctx, roomID, at); err != nil {
			return err
		}
	}
	q := r.URL.Query()
	want, notWant := q.Get("membership"), q.Get("not_membership")
	var ids []string
	for k, id := range state {
		if k.Type == rooms.TypeMember {
			ids = append(ids, id)
		}
	}
	evs, err := s.store.EventsByID(ctx, ids)
	if err != nil {
		return err
	}
	kept := evs[:0]
	for _, e := range evs {
		if (want != "" && e.Membership != want) || (notWant != "" && e.Membership == notWant) {
			continue
		}
		kept = append(kept, e)
	}
	f := s.formatterFor(me)
	out, err := f.format(ctx, kept)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"chunk": out})
}

// stateAtToken returns the room state at a stream position token: the
// room's current state as it was then.
func (s *Server) stateAtToken(ctx context.Context, roomID, token string) (storage.StateKeyMap, error) {
	pos, err := parseStreamToken(token)
	if err != nil {
		return nil, err
	}
	return s.store.StateAt(ctx, roomID, pos)
}
