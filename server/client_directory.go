package server

import (
	"context"
	"encoding/json"
	"encoding/json/jsontext"
	"errors"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"hearth/server/matrix"
	"hearth/server/rooms"
	"hearth/server/storage"
)

// Room aliases and the room directory (spec: Client-Server API, "Room
// aliases", "Listing rooms"). Aliases of other servers are looked up in
// their directories over federation; only local ones can be changed.

// aliasParam reads {roomAlias} and checks its shape: #localpart:server,
// at most 255 bytes.
func aliasParam(r *http.Request) (alias, server string, err error) {
	alias, err = pathParam(r, "roomAlias")
	if err != nil {
		return "", "", err
	}
	local, server, ok := strings.Cut(strings.TrimPrefix(alias, "#"), ":")
	if !strings.HasPrefix(alias, "#") || !ok || local == "" || server == "" || len(alias) > 255 ||
		strings.ContainsAny(local, " \t\n\x00") {
		return "", "", matrix.InvalidParam("%q is not a room alias", alias)
	}
	return alias, server, nil
}

// GET /_matrix/client/v3/directory/room/{roomAlias}
func (s *Server) getDirectoryRoom(w http.ResponseWriter, r *http.Request) error {
	alias, server, err := aliasParam(r)
	if err != nil {
		return err
	}
	if server != s.cfg.ServerName {
		// Another server's alias: ask its directory.
		if s.fedClient == nil {
			return matrix.NotFound("room alias %s not found (this server does not federate)", alias)
		}
		roomID, servers, err := s.remoteAlias(r.Context(), server, alias)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, map[string]any{"room_id": roomID, "servers": uniqueStrings(servers)})
	}
	roomID, _, err := s.store.AliasRoom(r.Context(), alias)
	if errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("room alias %s not found", alias)
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"room_id": roomID, "servers": []string{s.cfg.ServerName}})
}

// PUT /_matrix/client/v3/directory/room/{roomAlias}
//
// Only local aliases, only for a room the caller is joined to (the spec
// lets servers add such checks); 409 when the alias is taken.
func (s *Server) putDirectoryRoom(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	ctx := r.Context()
	alias, server, err := aliasParam(r)
	if err != nil {
		return err
	}
	var req struct {
		RoomID string `json:"room_id"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.RoomID == "" {
		return matrix.MissingParam("room_id is required")
	}
	if !strings.HasPrefix(req.RoomID, "!") {
		return matrix.InvalidParam("%q is not a room ID", req.RoomID)
	}
	if server != s.cfg.ServerName {
		return matrix.InvalidParam("room aliases must end in :%s", s.cfg.ServerName)
	}
	if _, err := s.store.RoomByID(ctx, req.RoomID); errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("room %s not found", req.RoomID)
	} else if err != nil {
		return err
	}
	if !me.IsAdmin {
		m, err := s.store.Membership(ctx, req.RoomID, me.UserID)
		if err != nil {
			return err
		}
		if m != rooms.MembershipJoin {
			return matrix.Forbidden("you must be joined to the room to give it an alias")
		}
	}
	err = s.store.CreateAlias(ctx, alias, req.RoomID, me.UserID)
	if errors.Is(err, storage.ErrConflict) {
		return &matrix.Error{Code: "M_UNKNOWN", Status: http.StatusConflict, Msg: "room alias " + alias + " already exists"}
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// DELETE /_matrix/client/v3/directory/room/{roomAlias}
//
// Allowed for the alias's creator, server admins, and users who may change
// the room's m.room.canonical_alias (as Synapse). An alias deleted from
// the canonical alias event is removed from it too.
func (s *Server) deleteDirectoryRoom(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	ctx := r.Context()
	alias, server, err := aliasParam(r)
	if err != nil {
		return err
	}
	if server != s.cfg.ServerName {
		return matrix.NotFound("room alias %s not found", alias)
	}
	roomID, creator, err := s.store.AliasRoom(ctx, alias)
	if errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("room alias %s not found", alias)
	}
	if err != nil {
		return err
	}
	if creator != me.UserID && !me.IsAdmin {
		ok, err := s.canSendState(ctx, roomID, me.UserID, rooms.TypeCanonicalAlias)
		if err != nil {
			return err
		}
		if !ok {
			return matrix.Forbidden("you may not delete this alias")
		}
	}
	if err := s.store.DeleteAlias(ctx, alias); errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("room alias %s not found", alias)
	} else if err != nil {
		return err
	}
	s.dropCanonicalAlias(ctx, roomID, alias, me.UserID)
	return writeJSON(w, http.StatusOK, struct{}{})
}

// dropCanonicalAlias removes a deleted alias from the room's canonical alias
// event, sent as the deleting user. Failing that (they may lack the power)
// the event keeps a dangling alias, which clients tolerate; it is logged.
func (s *Server) dropCanonicalAlias(ctx context.Context, roomID, alias, sender string) {
	cur, err := s.store.CurrentStateEvent(ctx, roomID, rooms.TypeCanonicalAlias, "")
	if err != nil {
		return
	}
	var c map[string]json.RawMessage
	if json.Unmarshal(contentOf(cur.JSON), &c) != nil {
		return
	}
	changed := false
	var main string
	if json.Unmarshal(c["alias"], &main) == nil && main == alias {
		delete(c, "alias")
		changed = true
	}
	var alts []string
	if json.Unmarshal(c["alt_aliases"], &alts) == nil {
		kept := alts[:0]
		for _, a := range alts {
			if a != alias {
				kept = append(kept, a)
			}
		}
		if len(kept) != len(alts) {
			b, _ := json.Marshal(kept)
			c["alt_aliases"] = b
			changed = true
		}
	}
	if !changed {
		return
	}
	content, _ := json.Marshal(c)
	empty := ""
	if _, err := s.sendEvents(ctx, roomID, newEvent{Type: rooms.TypeCanonicalAlias, StateKey: &empty, Sender: sender, Content: jsontext.Value(content)}); err != nil {
		logFrom(ctx, s.log).Info("could not update canonical alias after deleting an alias", "room", roomID, "alias", alias, "err", err)
	}
}

// roomPowerLevels returns the effective power levels of the room's current
// state.
func (s *Server) roomPowerLevels(ctx context.Context, roomID string) (*rooms.PowerLevels, error) {
	room, err := s.store.RoomByID(ctx, roomID)
	if err != nil {
		return nil, err
	}
	rv, ok := rooms.LookupVersion(room.RoomVersion)
	if !ok {
		return nil, errors.New("room " + roomID + " has unknown version " + room.RoomVersion)
	}
	create, err := s.store.CurrentStateEvent(ctx, roomID, rooms.TypeCreate, "")
	if err != nil {
		return nil, err
	}
	ce, err := rooms.ParseStored(rv, create.JSON, create.EventID)
	if err != nil {
		return nil, err
	}
	var pe *rooms.Event
	if pl, err := s.store.CurrentStateEvent(ctx, roomID, rooms.TypePowerLevels, ""); err == nil {
		if pe, err = rooms.ParseStored(rv, pl.JSON, pl.EventID); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	return rooms.EffectivePowerLevels(rv, pe, ce), nil
}

// canSendState reports whether a joined user's power reaches the level for
// a state event of type typ.
func (s *Server) canSendState(ctx context.Context, roomID, userID, typ string) (bool, error) {
	m, err := s.store.Membership(ctx, roomID, userID)
	if err != nil || m != rooms.MembershipJoin {
		return false, err
	}
	pls, err := s.roomPowerLevels(ctx, roomID)
	if err != nil {
		return false, err
	}
	return pls.UserLevel(userID) >= pls.EventLevel(typ, true), nil
}

// GET /_matrix/client/v3/rooms/{roomId}/aliases
func (s *Server) getRoomAliases(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	// Members and, in world-readable rooms, anyone (spec).
	m, err := s.store.Membership(ctx, roomID, me.UserID)
	if err != nil {
		return err
	}
	if m != rooms.MembershipJoin && !me.IsAdmin {
		hv, err := s.store.CurrentStateEvent(ctx, roomID, rooms.TypeHistoryVis, "")
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		if err != nil || gjson.GetBytes(contentOf(hv.JSON), "history_visibility").String() != "world_readable" {
			return matrix.Forbidden("you are not in room %s", roomID)
		}
	}
	aliases, err := s.store.RoomAliases(ctx, roomID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"aliases": aliases})
}

// GET /_matrix/client/v3/directory/list/room/{roomId}
func (s *Server) getDirectoryVisibility(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	room, err := s.store.RoomByID(r.Context(), roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("room %s not found", roomID)
	}
	if err != nil {
		return err
	}
	vis := "private"
	if room.IsPublic {
		vis = "public"
	}
	return writeJSON(w, http.StatusOK, map[string]string{"visibility": vis})
}

// PUT /_matrix/client/v3/directory/list/room/{roomId}
//
// Publishing is for server admins and members who may change the room's
// canonical alias (Synapse's rule).
func (s *Server) putDirectoryVisibility(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	var req struct {
		Visibility string `json:"visibility"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	switch req.Visibility {
	case "public", "private":
	case "":
		return matrix.MissingParam("visibility is required")
	default:
		return matrix.InvalidParam("visibility must be public or private")
	}
	if _, err := s.store.RoomByID(ctx, roomID); errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("room %s not found", roomID)
	} else if err != nil {
		return err
	}
	if !me.IsAdmin {
		ok, err := s.canSendState(ctx, roomID, me.UserID, rooms.TypeCanonicalAlias)
		if err != nil {
			return err
		}
		if !ok {
			return matrix.Forbidden("you may not change this room's visibility in the directory")
		}
	}
	if err := s.store.SetRoomPublic(ctx, roomID, req.Visibility == "public"); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// publicRoomsRequest is the body of POST /publicRooms (GET takes the same
// values, bar the filter, as query parameters).
type publicRoomsRequest struct {
	Limit  int    `json:"limit"`
	Since  string `json:"since"`
	Server string `json:"server"`
	Filter struct {
		GenericSearchTerm string     `json:"generic_search_term"`
		RoomTypes         *[]*string `json:"room_types"`
	} `json:"filter"`
	IncludeAllNetworks   bool   `json:"include_all_networks"`
	ThirdPartyInstanceID string `json:"third_party_instance_id"`
}

// publicRoom is one PublishedRoomsChunk entry.
type publicRoom struct {
	RoomID           string `json:"room_id"`
	Name             string `json:"name,omitempty"`
	Topic            string `json:"topic,omitempty"`
	CanonicalAlias   string `json:"canonical_alias,omitempty"`
	AvatarURL        string `json:"avatar_url,omitempty"`
	NumJoinedMembers int    `json:"num_joined_members"`
	WorldReadable    bool   `json:"world_readable"`
	GuestCanJoin     bool   `json:"guest_can_join"`
	JoinRule         string `json:"join_rule,omitempty"`
	RoomType         string `json:"room_type,omitempty"`
}

// GET /_matrix/client/v3/publicRooms
func (s *Server) getPublicRooms(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	req := publicRoomsRequest{Since: q.Get("since"), Server: q.Get("server")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return matrix.InvalidParam("limit must be a non-negative integer")
		}
		req.Limit = n
	}
	return s.publicRooms(w, r, req)
}

// POST /_matrix/client/v3/publicRooms
func (s *Server) postPublicRooms(w http.ResponseWriter, r *http.Request) error {
	var req publicRoomsRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Limit < 0 {
		return matrix.InvalidParam("limit must be a non-negative integer")
	}
	return s.publicRooms(w, r, req)
}

// publicRooms answers the client's room directory: this server's, or
// another server's (asked over federation) when req.Server names one.
func (s *Server) publicRooms(w http.ResponseWriter, r *http.Request, req publicRoomsRequest) error {
	if req.Server != "" && req.Server != s.cfg.ServerName {
		resp, err := s.remotePublicRooms(r.Context(), req)
		return answer(w, resp, err)
	}
	resp, err := s.publicRoomList(r.Context(), req)
	return answer(w, resp, err)
}

// publicRoomList lists the published rooms, largest first, paged by offset
// (tokens are "o<offset>").
func (s *Server) publicRoomList(ctx context.Context, req publicRoomsRequest) (map[string]any, error) {
	if req.ThirdPartyInstanceID != "" {
		return map[string]any{"chunk": []publicRoom{}, "total_room_count_estimate": 0}, nil
	}
	offset := 0
	if req.Since != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(req.Since, "o"))
		if !strings.HasPrefix(req.Since, "o") || err != nil || n < 0 {
			return nil, matrix.InvalidParam("invalid since token %q", req.Since)
		}
		offset = n
	}
	ids, err := s.store.PublicRoomIDs(ctx)
	if err != nil {
		return nil, err
	}
	sums, err := s.store.RoomSummaries(ctx, ids, []string{rooms.TypeName, rooms.TypeTopic, rooms.TypeCanonicalAlias,
		"m.room.avatar", rooms.TypeJoinRules, rooms.TypeHistoryVis, rooms.TypeGuestAccess, rooms.TypeCreate})
	if err != nil {
		return nil, err
	}
	term := strings.ToLower(strings.TrimSpace(req.Filter.GenericSearchTerm))
	all := make([]publicRoom, 0, len(ids))
	for _, id := range ids {
		sum := sums[id]
		c := func(typ, path string) string { return gjson.GetBytes(sum.Content[typ], "content."+path).String() }
		pr := publicRoom{RoomID: id, Name: c(rooms.TypeName, "name"), Topic: c(rooms.TypeTopic, "topic"),
			CanonicalAlias: c(rooms.TypeCanonicalAlias, "alias"), AvatarURL: c("m.room.avatar", "url"),
			NumJoinedMembers: sum.JoinedMembers, WorldReadable: c(rooms.TypeHistoryVis, "history_visibility") == "world_readable",
			GuestCanJoin: c(rooms.TypeGuestAccess, "guest_access") == "can_join", JoinRule: c(rooms.TypeJoinRules, "join_rule"),
			RoomType: c(rooms.TypeCreate, "type")}
		if pr.JoinRule == "" {
			pr.JoinRule = "public"
		}
		if term != "" && !strings.Contains(strings.ToLower(pr.Name), term) && !strings.Contains(strings.ToLower(pr.Topic), term) &&
			!strings.Contains(strings.ToLower(pr.CanonicalAlias), term) && !strings.Contains(strings.ToLower(id), term) {
			continue
		}
		if types := req.Filter.RoomTypes; types != nil && !roomTypeAllowed(*types, pr.RoomType) {
			continue
		}
		all = append(all, pr)
	}
	sort.SliceStable(all, func(i, j int) bool {
		if all[i].NumJoinedMembers != all[j].NumJoinedMembers {
			return all[i].NumJoinedMembers > all[j].NumJoinedMembers
		}
		return all[i].RoomID < all[j].RoomID
	})
	limit := req.Limit
	if limit == 0 || limit > 500 {
		limit = min(len(all), 500)
	}
	lo := min(offset, len(all))
	hi := min(lo+limit, len(all))
	resp := map[string]any{"chunk": all[lo:hi], "total_room_count_estimate": len(all)}
	if hi < len(all) {
		resp["next_batch"] = "o" + strconv.Itoa(hi)
	}
	if lo > 0 {
		resp["prev_batch"] = "o" + strconv.Itoa(max(lo-limit, 0))
	}
	return resp, nil
}

// roomTypeAllowed applies filter.room_types, where null stands for rooms
// without a type.
func roomTypeAllowed(types []*string, roomType string) bool {
	for _, t := range types {
		if (t == nil && roomType == "") || (t != nil && *t == roomType) {
			return true
		}
	}
	return false
}

// POST /_matrix/client/v3/user_directory/search
//
// Users who share a room with the caller or sit in a published room,
// matched on user ID or display name.
func (s *Server) postUserDirectorySearch(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	var req struct {
		SearchTerm *string `json:"search_term"`
		Limit      *int    `json:"limit"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.SearchTerm == nil {
		return matrix.MissingParam("search_term is required")
	}
	limit := 10
	if req.Limit != nil {
		if *req.Limit < 0 {
			return matrix.InvalidParam("limit must be a non-negative integer")
		}
		limit = min(*req.Limit, 1000)
	}
	users, err := s.store.SearchUserDirectory(r.Context(), me.UserID, strings.TrimSpace(*req.SearchTerm), limit)
	if err != nil {
		return err
	}
	limited := len(users) > limit
	if limited {
		users = users[:limit]
	}
	type result struct {
		UserID      string `json:"user_id"`
		DisplayName string `json:"display_name,omitempty"`
		AvatarURL   string `json:"avatar_url,omitempty"`
	}
	results := make([]result, 0, len(users))
	for _, u := range users {
		results = append(results, result{UserID: u.UserID, DisplayName: u.DisplayName, AvatarURL: u.AvatarURL})
	}
	return writeJSON(w, http.StatusOK, map[string]any{"results": results, "limited": limited})
}

// uniqueStrings is list without repeats, in first-seen order.
func uniqueStrings(list []string) []string {
	out := make([]string, 0, len(list))
	for _, s := range list {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
