package server

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"

	"github.com/tidwall/gjson"

	"hearth/server/matrix"
	"hearth/server/rooms"
	"hearth/server/storage"
)

// What other servers may read of this server's rooms (spec: Server-Server
// API, "Retrieving events", "Backfilling and retrieving missing events",
// "Room state"), with history visibility applied to the asking server: a
// server sees an event when the room's history was shared or world
// readable then, or when one of its users was in the room (or invited,
// for invited visibility) at that event. Events it may not see are sent
// redacted, as Synapse does, so the DAG stays whole.

// serverCanSee reports whether server may see events whose state is
// group; cache remembers groups already decided.
func (s *Server) serverCanSee(ctx context.Context, server string, group int64, cache map[int64]bool) (bool, error) {
	if ok, seen := cache[group]; seen {
		return ok, nil
	}
	state, err := s.store.StateGroup(ctx, group)
	if err != nil {
		return false, err
	}
	visibility := "shared"
	if id, ok := state[storage.StateKey{Type: rooms.TypeHistoryVis}]; ok {
		if e, err := s.store.EventByID(ctx, id); err == nil {
			if v := gjson.GetBytes(contentOf(e.JSON), "history_visibility").String(); v != "" {
				visibility = v
			}
		}
	}
	ok := visibility == "world_readable" || visibility == "shared"
	if !ok {
		var ids []string
		for k, id := range state {
			if k.Type == rooms.TypeMember && fromOrigin(k.StateKey, server) {
				ids = append(ids, id)
			}
		}
		evs, err := s.store.EventsByID(ctx, ids)
		if err != nil {
			return false, err
		}
		for _, e := range evs {
			if e.Membership == rooms.MembershipJoin || (visibility == "invited" && e.Membership == rooms.MembershipInvite) {
				ok = true
				break
			}
		}
	}
	cache[group] = ok
	return ok, nil
}

// pdusFor renders events for server: as stored, or redacted where history
// visibility hides them from it.
func (s *Server) pdusFor(ctx context.Context, server string, rv *rooms.RoomVersion, evs []*storage.Event) ([]json.RawMessage, error) {
	cache := map[int64]bool{}
	out := make([]json.RawMessage, 0, len(evs))
	for _, e := range evs {
		pdu := json.RawMessage(e.JSON)
		if !e.Outlier {
			ok, err := s.serverCanSee(ctx, server, e.StateGroup, cache)
			if err != nil {
				return nil, err
			}
			if !ok {
				redacted, err := rooms.Redact(rv, e.JSON)
				if err != nil {
					return nil, err
				}
				pdu = json.RawMessage(redacted)
			}
		}
		out = append(out, pdu)
	}
	return out, nil
}

// roomOfServer checks that origin may read the room: it is not denied by
// the room's server ACL and has a user in the room (any membership: a
// server whose users left may still backfill what they saw), or the room
// is world readable.
func (s *Server) roomOfServer(ctx context.Context, roomID, origin string) (*storage.Room, *rooms.RoomVersion, error) {
	room, err := s.roomForServer(ctx, roomID, origin)
	if err != nil {
		return nil, nil, err
	}
	rv, ok := rooms.LookupVersion(room.RoomVersion)
	if !ok {
		return nil, nil, matrix.NotFound("room %s is of an unknown version", roomID)
	}
	members, err := s.store.Members(ctx, roomID)
	if err != nil {
		return nil, nil, err
	}
	for u := range members {
		if fromOrigin(u, origin) {
			return room, rv, nil
		}
	}
	if s.worldReadable(ctx, roomID) {
		return room, rv, nil
	}
	return nil, nil, matrix.Forbidden("server %s has no user in room %s", origin, roomID)
}

// eventForServer returns an event of a room origin may read.
func (s *Server) eventForServer(ctx context.Context, origin, eventID string) (*storage.Event, *rooms.RoomVersion, error) {
	e, err := s.store.EventByID(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && (e.Rejected || e.SoftFailed)) {
		return nil, nil, matrix.NotFound("event %s not found", eventID)
	}
	if err != nil {
		return nil, nil, err
	}
	_, rv, err := s.roomOfServer(ctx, e.RoomID, origin)
	if err != nil {
		return nil, nil, err
	}
	return e, rv, nil
}

// fedEvent answers GET /_matrix/federation/v1/event/{eventId}.
func (s *Server) fedEvent(ctx context.Context, origin, eventID string) (map[string]any, error) {
	e, rv, err := s.eventForServer(ctx, origin, eventID)
	if err != nil {
		return nil, err
	}
	pdus, err := s.pdusFor(ctx, origin, rv, []*storage.Event{e})
	if err != nil {
		return nil, err
	}
	return s.pduEnvelope(pdus), nil
}

// pduEnvelope is the "transaction" shape /event and /backfill answer with.
func (s *Server) pduEnvelope(pdus []json.RawMessage) map[string]any {
	return map[string]any{"origin": s.cfg.ServerName, "origin_server_ts": s.now().UnixMilli(), "pdus": pdus}
}

// fedState answers GET /state/{roomId} and /state_ids/{roomId}: the state
// before eventID and its auth chain, as events or as IDs.
func (s *Server) fedState(ctx context.Context, origin, roomID, eventID string, idsOnly bool) (map[string]any, error) {
	_, rv, err := s.roomOfServer(ctx, roomID, origin)
	if err != nil {
		return nil, err
	}
	if eventID == "" {
		return nil, matrix.MissingParam("event_id is required")
	}
	state, e, err := s.timeline.StateBefore(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && e.RoomID != roomID) {
		return nil, matrix.NotFound("event %s not found in room %s", eventID, roomID)
	}
	if err != nil {
		return nil, matrix.NotFound("no state is known at event %s", eventID)
	}
	ids := make([]string, 0, len(state))
	for _, id := range state {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	chain, err := s.timeline.AuthChain(ctx, rv, ids)
	if err != nil {
		return nil, err
	}
	if idsOnly {
		chainIDs := make([]string, len(chain))
		for i, c := range chain {
			chainIDs[i] = c.EventID
		}
		slices.Sort(chainIDs)
		return map[string]any{"pdu_ids": ids, "auth_chain_ids": chainIDs}, nil
	}
	evs, err := s.store.EventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	return map[string]any{"pdus": rawPDUs(evs), "auth_chain": rawPDUs(chain)}, nil
}

func rawPDUs(evs []*storage.Event) []json.RawMessage {
	out := make([]json.RawMessage, len(evs))
	for i, e := range evs {
		out[i] = json.RawMessage(e.JSON)
	}
	return out
}

// fedEventAuth answers GET /event_auth/{roomId}/{eventId}.
func (s *Server) fedEventAuth(ctx context.Context, origin, roomID, eventID string) (map[string]any, error) {
	e, rv, err := s.eventForServer(ctx, origin, eventID)
	if err != nil {
		return nil, err
	}
	if e.RoomID != roomID {
		return nil, matrix.NotFound("event %s not found in room %s", eventID, roomID)
	}
	chain, err := s.timeline.AuthChain(ctx, rv, []string{eventID})
	if err != nil {
		return nil, err
	}
	return map[string]any{"auth_chain": rawPDUs(chain)}, nil
}

const (
	maxBackfill       = 100
	maxMissingEvents  = 20
	defaultMissingLim = 10
)

// fedBackfill answers GET /backfill/{roomId}?v=...&limit=: the events
// from the given ones back through their prev_events, newest first, at
// most limit.
func (s *Server) fedBackfill(ctx context.Context, origin, roomID string, from []string, limit int) (map[string]any, error) {
	_, rv, err := s.roomOfServer(ctx, roomID, origin)
	if err != nil {
		return nil, err
	}
	if len(from) == 0 {
		return nil, matrix.MissingParam("v (the events to backfill from) is required")
	}
	limit = min(max(limit, 1), maxBackfill)
	evs, err := s.walkBack(ctx, roomID, from, nil, limit, 0)
	if err != nil {
		return nil, err
	}
	pdus, err := s.pdusFor(ctx, origin, rv, evs)
	if err != nil {
		return nil, err
	}
	return s.pduEnvelope(pdus), nil
}

// fedMissingEvents answers POST /get_missing_events/{roomId}: the events
// between earliest_events and latest_events (both excluded), walking back
// from the latest, oldest first.
func (s *Server) fedMissingEvents(ctx context.Context, origin, roomID string, body []byte) (map[string]any, error) {
	_, rv, err := s.roomOfServer(ctx, roomID, origin)
	if err != nil {
		return nil, err
	}
	var req struct {
		Earliest []string `json:"earliest_events"`
		Latest   []string `json:"latest_events"`
		Limit    int      `json:"limit"`
		MinDepth int64    `json:"min_depth"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, matrix.BadJSON("%v", err)
	}
	if len(req.Latest) == 0 {
		return nil, matrix.BadJSON("latest_events is required")
	}
	if req.Limit <= 0 {
		req.Limit = defaultMissingLim
	}
	req.Limit = min(req.Limit, maxMissingEvents)
	// The walk starts at the latest events' parents: the latest are what
	// the asking server has.
	var starts []string
	for _, id := range req.Latest {
		parents, err := s.store.PrevEvents(ctx, id)
		if err != nil {
			return nil, err
		}
		starts = append(starts, parents...)
	}
	stop := map[string]bool{}
	for _, id := range append(req.Earliest, req.Latest...) {
		stop[id] = true
	}
	evs, err := s.walkBack(ctx, roomID, starts, stop, req.Limit, req.MinDepth)
	if err != nil {
		return nil, err
	}
	slices.Reverse(evs)
	pdus, err := s.pdusFor(ctx, origin, rv, evs)
	if err != nil {
		return nil, err
	}
	return map[string]any{"events": pdus}, nil
}

// walkBack collects up to limit events of the room from starts back
// through prev_events, newest (deepest) first, not entering stop or events
// shallower than minDepth.
func (s *Server) walkBack(ctx context.Context, roomID string, starts []string, stop map[string]bool, limit int, minDepth int64) ([]*storage.Event, error) {
	seen := map[string]bool{}
	var out []*storage.Event
	frontier := []*storage.Event{}
	add := func(ids []string) error {
		var want []string
		for _, id := range ids {
			if !seen[id] && !stop[id] {
				seen[id] = true
				want = append(want, id)
			}
		}
		evs, err := s.store.EventsByID(ctx, want)
		if err != nil {
			return err
		}
		for _, e := range evs {
			if e.RoomID == roomID && !e.Outlier && e.Depth >= minDepth {
				frontier = append(frontier, e)
			}
		}
		return nil
	}
	if err := add(starts); err != nil {
		return nil, err
	}
	for len(frontier) > 0 && len(out) < limit {
		// Deepest first, so a page is the newest history.
		slices.SortFunc(frontier, func(a, b *storage.Event) int { return cmp.Compare(b.Depth, a.Depth) })
		e := frontier[0]
		frontier = frontier[1:]
		out = append(out, e)
		parents, err := s.store.PrevEvents(ctx, e.EventID)
		if err != nil {
			return nil, err
		}
		if err := add(parents); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// fedQueryDirectory answers GET /query/directory for a local alias.
func (s *Server) fedQueryDirectory(ctx context.Context, alias string) (map[string]any, error) {
	if !strings.HasSuffix(alias, ":"+s.cfg.ServerName) {
		return nil, matrix.NotFound("%s is not an alias of this server", alias)
	}
	roomID, _, err := s.store.AliasRoom(ctx, alias)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, matrix.NotFound("room alias %s not found", alias)
	}
	if err != nil {
		return nil, err
	}
	servers, err := s.store.JoinedServers(ctx, roomID)
	if err != nil {
		return nil, err
	}
	// This server first: it answered, so it is up.
	servers = slices.Clone(servers) // the store's list is shared
	slices.SortFunc(servers, func(a, b string) int {
		switch {
		case a == s.cfg.ServerName:
			return -1
		case b == s.cfg.ServerName:
			return 1
		}
		return strings.Compare(a, b)
	})
	return map[string]any{"room_id": roomID, "servers": servers}, nil
}

// fedTimestampToEvent answers GET /timestamp_to_event/{roomId}: the event
// of the room closest to ts in the direction asked, among those origin may
// see.
func (s *Server) fedTimestampToEvent(ctx context.Context, origin, roomID string, ts int64, forwards bool) (map[string]any, error) {
	if _, _, err := s.roomOfServer(ctx, roomID, origin); err != nil {
		return nil, err
	}
	evs, err := s.store.EventsNearTimestamp(ctx, roomID, ts, forwards, 100)
	if err != nil {
		return nil, err
	}
	cache := map[int64]bool{}
	for _, e := range evs {
		if ok, err := s.serverCanSee(ctx, origin, e.StateGroup, cache); err != nil {
			return nil, err
		} else if ok {
			return map[string]any{"event_id": e.EventID, "origin_server_ts": e.OriginServerTS}, nil
		}
	}
	return nil, matrix.NotFound("no event found from %d", ts)
}
