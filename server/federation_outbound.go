package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"hearth/server/federation"
	"hearth/server/matrix"
	"hearth/server/rooms"
	"hearth/server/storage"
	"hearth/server/timeline"
)

// Client requests that need other servers: joining a room this server is
// not in, through one of the servers that is.

// joinRemote joins userID to roomID through the first of servers that lets
// it (spec: "Joining Rooms": make_join, then send_join), with content as
// the membership content, and persists the room's state and the join.
func (s *Server) joinRemote(ctx context.Context, userID, roomID string, servers []string, content map[string]any) error {
	if s.fedClient == nil {
		return matrix.NotFound("room %s is not known to this server, and it does not federate", roomID)
	}
	var errs []error
	tried := map[string]bool{s.cfg.ServerName: true}
	for _, server := range servers {
		if server == "" || tried[server] {
			continue
		}
		tried[server] = true
		err := s.joinThrough(ctx, server, userID, roomID, content)
		if err == nil {
			return nil
		}
		s.log.Info("federation: join through a server failed", "room_id", roomID, "server", server, "err", err)
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return matrix.NotFound("no server to join room %s through: give one with via or server_name", roomID)
	}
	// The last server's refusal says most; a 403 from a resident server
	// is the client's answer as it is.
	var re *federation.RemoteError
	if errors.As(errs[len(errs)-1], &re) {
		switch re.Status {
		case http.StatusForbidden:
			return matrix.Forbidden("%s refused the join: %s", re.Destination, re.Msg)
		case http.StatusNotFound:
			return matrix.NotFound("%s does not know room %s", re.Destination, roomID)
		case http.StatusBadRequest:
			if re.Code == "M_INCOMPATIBLE_ROOM_VERSION" {
				return &matrix.Error{Code: "M_INCOMPATIBLE_ROOM_VERSION", Msg: re.Msg}
			}
		}
	}
	return &matrix.Error{Code: "M_UNKNOWN", Status: http.StatusBadGateway, Msg: fmt.Sprintf("could not join room %s through %d servers", roomID, len(errs)),
		Err: errors.Join(errs...)}
}

// joinThrough runs make_join and send_join against one server.
func (s *Server) joinThrough(ctx context.Context, server, userID, roomID string, content map[string]any) error {
	proto, rv, err := s.fedClient.MakeMembership(ctx, server, rooms.MembershipJoin, roomID, userID)
	if err != nil {
		return err
	}
	// The template's content may carry the resident's choices (a
	// restricted join's authorising user); ours adds the profile.
	merged := map[string]any{}
	if err := json.Unmarshal([]byte(gjson.GetBytes(proto, "content").Raw), &merged); err != nil && gjson.GetBytes(proto, "content").Exists() {
		return fmt.Errorf("template content: %w", err)
	}
	for k, v := range content {
		if _, set := merged[k]; !set || k == "membership" {
			merged[k] = v
		}
	}
	if gjson.GetBytes(proto, "sender").String() != userID || gjson.GetBytes(proto, "state_key").String() != userID ||
		gjson.GetBytes(proto, "room_id").String() != roomID || gjson.GetBytes(proto, "type").String() != rooms.TypeMember {
		return fmt.Errorf("%s answered make_join with a template for another event", server)
	}
	join, err := rooms.CompleteProto(rv, proto, merged, s.roomsKey())
	if err != nil {
		return fmt.Errorf("complete the join template of %s: %w", server, err)
	}
	var resp federation.SendJoinResponse
	if err := s.fedClient.SendMembership(ctx, server, rooms.MembershipJoin, join, &resp); err != nil {
		return err
	}
	if len(resp.Event) > 0 {
		// Restricted joins come back signed by the resident server too.
		signed, err := rooms.ParseEvent(rv, resp.Event)
		if err != nil || signed.ID() != join.ID() {
			return fmt.Errorf("%s answered send_join with another event", server)
		}
		join = signed
	}
	state := parseRoomEvents(rv, resp.State)
	chain := parseRoomEvents(rv, resp.AuthChain)
	if _, err := s.timeline.Join(ctx, server, rv, join, state, chain); err != nil {
		return fmt.Errorf("persist the join of %s: %w", roomID, err)
	}
	return nil
}

// joinsRemotely reports whether a join to roomID must go through another
// server: this server does not know the room, or none of its users is in
// it (its copy of the room is no longer kept up to date) while others are.
// others are the servers with members in the room.
func (s *Server) joinsRemotely(ctx context.Context, roomID string) (bool, []string, error) {
	if s.fedClient == nil {
		return false, nil, nil
	}
	if _, err := s.store.RoomByID(ctx, roomID); errors.Is(err, storage.ErrNotFound) {
		return true, nil, nil
	} else if err != nil {
		return false, nil, err
	}
	servers, err := s.store.JoinedServers(ctx, roomID)
	if err != nil {
		return false, nil, err
	}
	if len(servers) == 0 || slices.Contains(servers, s.cfg.ServerName) {
		return false, nil, nil
	}
	return true, servers, nil
}

// remoteAlias resolves an alias of another server through its directory
// (GET /_matrix/federation/v1/query/directory).
func (s *Server) remoteAlias(ctx context.Context, server, alias string) (string, []string, error) {
	var resp struct {
		RoomID  string   `json:"room_id"`
		Servers []string `json:"servers"`
	}
	err := s.fedClient.Do(ctx, server, http.MethodGet, "/_matrix/federation/v1/query/directory", url.Values{"room_alias": {alias}}, nil, &resp)
	if federation.IsNotFound(err) {
		return "", nil, matrix.NotFound("room alias %s not found", alias)
	}
	if err != nil {
		return "", nil, &matrix.Error{Code: "M_UNKNOWN", Status: http.StatusBadGateway, Msg: fmt.Sprintf("could not ask %s about %s", server, alias), Err: err}
	}
	// The spec's room IDs have no NUL character (and no server would
	// store one); the servers are server names, or no use.
	if !strings.HasPrefix(resp.RoomID, "!") || strings.IndexByte(resp.RoomID, 0) >= 0 {
		return "", nil, &matrix.Error{Code: "M_UNKNOWN", Status: http.StatusBadGateway, Msg: fmt.Sprintf("%s answered for %s without a room ID", server, alias)}
	}
	servers := slices.DeleteFunc(resp.Servers, func(name string) bool { return !matrix.ValidServerName(name) })
	return resp.RoomID, append(servers, server), nil
}

// parseRoomEvents parses PDUs of a room version, leaving malformed ones out.
func parseRoomEvents(rv *rooms.RoomVersion, raws []json.RawMessage) []*rooms.Event {
	out := make([]*rooms.Event, 0, len(raws))
	for _, raw := range raws {
		if e, err := rooms.ParseEvent(rv, raw); err == nil {
			out = append(out, e)
		}
	}
	return out
}

// joinServers lists the servers to try joining roomID through, each once:
// those named (the inviter's, those the client named); only when there are
// none, those last seen in the room (seen, when this server was in it
// before), then the room ID's own server (v1–11 room IDs name the server
// that created the room, which may have left it since). A client that
// names servers means those: a restricted room's join must fail when none
// of them can authorise it, not succeed through a server the client did
// not name (as in Synapse).
func joinServers(roomID string, named, seen []string) []string {
	if out := uniqueStrings(named); len(out) > 0 {
		return out
	}
	out := uniqueStrings(seen)
	if _, server, ok := strings.Cut(roomID, ":"); ok && !slices.Contains(out, server) {
		out = append(out, server)
	}
	return out
}

// backfill fetches history of roomID older than what this server has from
// another server in the room (GET /_matrix/federation/v1/backfill) and
// stores it; it returns how many events it added.
func (s *Server) backfill(ctx context.Context, roomID string, limit int) (int, error) {
	if s.fedClient == nil {
		return 0, nil
	}
	from, err := s.store.BackwardExtremities(ctx, roomID, 20)
	if err != nil || len(from) == 0 {
		return 0, err
	}
	room, err := s.store.RoomByID(ctx, roomID)
	if err != nil {
		return 0, err
	}
	rv, ok := rooms.LookupVersion(room.RoomVersion)
	if !ok {
		return 0, nil
	}
	servers, err := s.store.JoinedServers(ctx, roomID)
	if err != nil {
		return 0, err
	}
	q := url.Values{"v": from, "limit": {strconv.Itoa(min(max(limit, 10), 100))}}
	for _, server := range servers {
		if server == s.cfg.ServerName {
			continue
		}
		var resp struct {
			PDUs []json.RawMessage `json:"pdus"`
		}
		if err := s.fedClient.Do(ctx, server, http.MethodGet, "/_matrix/federation/v1/backfill/"+url.PathEscape(roomID), q, nil, &resp); err != nil {
			s.log.Info("federation: backfill failed", "room_id", roomID, "server", server, "err", err)
			continue
		}
		res, err := s.timeline.Receive(ctx, server, timeline.Backfill, parseRoomEvents(rv, resp.PDUs))
		if err != nil {
			return 0, err
		}
		n := 0
		for _, r := range res {
			if r.Status == timeline.Accepted {
				n++
			}
		}
		if n > 0 {
			return n, nil
		}
	}
	return 0, nil
}

// remotePublicRooms asks another server for its room directory
// (GET or, with a filter, POST /_matrix/federation/v1/publicRooms).
func (s *Server) remotePublicRooms(ctx context.Context, req publicRoomsRequest) (map[string]any, error) {
	if s.fedClient == nil {
		return nil, matrix.NotFound("cannot list the rooms of %s: this server does not federate", req.Server)
	}
	var resp map[string]any
	var err error
	if req.Filter.GenericSearchTerm != "" || req.Filter.RoomTypes != nil || req.IncludeAllNetworks || req.ThirdPartyInstanceID != "" {
		body := req
		body.Server = ""
		err = s.fedClient.Do(ctx, req.Server, http.MethodPost, "/_matrix/federation/v1/publicRooms", nil, body, &resp)
	} else {
		q := url.Values{}
		if req.Limit > 0 {
			q.Set("limit", strconv.Itoa(req.Limit))
		}
		if req.Since != "" {
			q.Set("since", req.Since)
		}
		err = s.fedClient.Do(ctx, req.Server, http.MethodGet, "/_matrix/federation/v1/publicRooms", q, nil, &resp)
	}
	var re *federation.RemoteError
	switch {
	case errors.As(err, &re) && re.Status < 500:
		return nil, &matrix.Error{Code: cmpOr(re.Code, "M_UNKNOWN"), Status: re.Status, Msg: req.Server + ": " + re.Msg}
	case err != nil:
		return nil, &matrix.Error{Code: "M_UNKNOWN", Status: http.StatusBadGateway, Msg: "could not ask " + req.Server + " for its rooms", Err: err}
	}
	return resp, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// remoteTimestampToEvent asks the room's other servers for the event
// closest to ts (GET /_matrix/federation/v1/timestamp_to_event), and
// answers the first event found that this server can also read about.
func (s *Server) remoteTimestampToEvent(ctx context.Context, roomID, ts, dir string) (*storage.Event, bool) {
	if s.fedClient == nil {
		return nil, false
	}
	room, err := s.store.RoomByID(ctx, roomID)
	if err != nil {
		return nil, false
	}
	rv, ok := rooms.LookupVersion(room.RoomVersion)
	if !ok {
		return nil, false
	}
	servers, err := s.store.JoinedServers(ctx, roomID)
	if err != nil {
		return nil, false
	}
	for _, server := range servers {
		if server == s.cfg.ServerName {
			continue
		}
		var resp struct {
			EventID        string `json:"event_id"`
			OriginServerTS int64  `json:"origin_server_ts"`
		}
		q := url.Values{"ts": {ts}, "dir": {dir}}
		if err := s.fedClient.Do(ctx, server, http.MethodGet, "/_matrix/federation/v1/timestamp_to_event/"+url.PathEscape(roomID), q, nil, &resp); err != nil {
			continue
		}
		if !strings.HasPrefix(resp.EventID, "$") {
			continue
		}
		// The event itself, as backfilled history (spec: the server
		// "should try to backfill this event"), so that /context and
		// /messages can start from it; its own timestamp, not the one
		// claimed, is what counts.
		if se, err := s.store.EventByID(ctx, resp.EventID); err == nil && se.Live() {
			return se, true
		}
		ev, err := federation.Fetcher{Client: s.fedClient}.Event(ctx, server, rv, resp.EventID)
		if err != nil || ev.ID() != resp.EventID || ev.RoomID() != roomID {
			continue
		}
		if _, err := s.timeline.Receive(ctx, server, timeline.Backfill, []*rooms.Event{ev}); err != nil {
			continue
		}
		if se, err := s.store.EventByID(ctx, resp.EventID); err == nil && se.Live() {
			return se, true
		}
	}
	return nil, false
}

// nextToGap reports whether some of e's prev events are not in this
// server's timeline: history it lacks may lie just before e.
func (s *Server) nextToGap(ctx context.Context, e *storage.Event) (bool, error) {
	prevs, err := s.store.PrevEvents(ctx, e.EventID)
	if err != nil {
		return false, err
	}
	have, err := s.store.EventsByID(ctx, prevs)
	if err != nil {
		return false, err
	}
	placed := 0
	for _, p := range have {
		if !p.Outlier {
			placed++
		}
	}
	return placed < len(prevs), nil
}
