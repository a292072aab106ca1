package server

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/gjson"

	"hearth/server/federation"
	"hearth/server/matrix"
	"hearth/server/rooms"
	"hearth/server/storage"
)

// Spaces (spec: "Spaces"): a space is a room of type m.space whose
// m.space.child state events name its children. /hierarchy walks that tree
// depth first; /room_summary describes one room. Rooms this server is in
// are described from their current state, others are asked of the servers
// the m.space.child event names (GET /_matrix/federation/v1/hierarchy),
// whose answers are cached for a few minutes so that paging through a
// hierarchy does not ask again.

const (
	typeSpaceChild = "m.space.child"
	// Synapse's limits: children looked at per space, and rooms per page.
	maxChildrenPerSpace = 50
	maxHierarchyLimit   = 50
	// maxHierarchyWalk bounds the rooms one request looks at.
	maxHierarchyWalk = 1000
	// spaceCacheTTL is how long another server's answer is reused.
	spaceCacheTTL = 5 * time.Minute
)

// roomInfo describes a room as /hierarchy, /room_summary and the
// federation /hierarchy do (spec: RoomSummary).
type roomInfo struct {
	publicRoom
	RoomVersion    string   `json:"room_version,omitempty"`
	Encryption     string   `json:"encryption,omitempty"`
	AllowedRoomIDs []string `json:"allowed_room_ids,omitempty"`
}

// spaceRoom is a room with its m.space.child events, stripped (type,
// state_key, content, sender, origin_server_ts), when it is a space.
type spaceRoom struct {
	roomInfo
	ChildrenState []json.RawMessage `json:"children_state"`
}

// restricted reports whether the room's join rule admits members of other
// rooms (allowed_room_ids).
func (r *roomInfo) restricted() bool {
	return r.JoinRule == "restricted" || r.JoinRule == "knock_restricted"
}

// openToAll reports whether anyone may see the room's summary: it is world
// readable, or anyone may join or knock.
func (r *roomInfo) openToAll() bool {
	switch r.JoinRule {
	case "public", "knock", "knock_restricted":
		return true
	}
	return r.WorldReadable
}

// spaceChild is one usable m.space.child event.
type spaceChild struct {
	roomID    string
	via       []string
	order     string
	ts        int64
	suggested bool
}

// spaceChildren reads the usable children from stripped m.space.child
// events, in the spec's order: by a valid `order` first, then by the
// event's timestamp, then by room ID. Children without `via` are not
// children (the event is how a space removes one).
func spaceChildren(stripped []json.RawMessage, suggestedOnly bool) []spaceChild {
	var out []spaceChild
	for _, raw := range stripped {
		e := gjson.ParseBytes(raw)
		if e.Get("type").String() != typeSpaceChild {
			continue
		}
		c := spaceChild{roomID: e.Get("state_key").String(), ts: e.Get("origin_server_ts").Int(),
			suggested: e.Get("content.suggested").Type == gjson.True}
		if !strings.HasPrefix(c.roomID, "!") || (suggestedOnly && !c.suggested) {
			continue
		}
		via := e.Get("content.via")
		if !via.IsArray() {
			continue
		}
		for _, v := range via.Array() {
			if v.Type == gjson.String && v.Str != "" {
				c.via = append(c.via, v.Str)
			}
		}
		if len(c.via) == 0 {
			continue
		}
		if o := e.Get("content.order"); o.Type == gjson.String && validSpaceOrder(o.Str) {
			c.order = o.Str
		}
		out = append(out, c)
	}
	slices.SortStableFunc(out, func(a, b spaceChild) int {
		switch {
		case a.order != "" && b.order == "":
			return -1
		case a.order == "" && b.order != "":
			return 1
		case a.order != b.order:
			return strings.Compare(a.order, b.order)
		case a.ts != b.ts:
			return cmp.Compare(a.ts, b.ts)
		}
		return strings.Compare(a.roomID, b.roomID)
	})
	return out
}

// validSpaceOrder: at most 50 characters, each in the printable ASCII range
// 0x20–0x7E.
func validSpaceOrder(o string) bool {
	if len(o) > 50 {
		return false
	}
	for i := 0; i < len(o); i++ {
		if o[i] < 0x20 || o[i] > 0x7e {
			return false
		}
	}
	return true
}

// summaryStateTypes are the state events a room summary is made of.
var summaryStateTypes = []string{rooms.TypeCreate, rooms.TypeName, rooms.TypeTopic, rooms.TypeCanonicalAlias,
	"m.room.avatar", rooms.TypeJoinRules, rooms.TypeHistoryVis, rooms.TypeGuestAccess, "m.room.encryption"}

// localSpaceRoom describes a room this server is in from its current state;
// the children are listed only when the room is a space.
func (s *Server) localSpaceRoom(ctx context.Context, roomID string) (*spaceRoom, error) {
	room, err := s.store.RoomByID(ctx, roomID)
	if err != nil {
		return nil, err
	}
	state, err := s.store.CurrentState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	var ids []string
	for k, id := range state {
		if k.Type == typeSpaceChild || (k.StateKey == "" && slices.Contains(summaryStateTypes, k.Type)) {
			ids = append(ids, id)
		}
	}
	sums, err := s.store.RoomSummaries(ctx, []string{roomID}, nil)
	if err != nil {
		return nil, err
	}
	joined := sums[roomID].JoinedMembers
	evs, err := s.store.EventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	content := map[string]gjson.Result{}
	var children []*storage.Event
	for _, e := range evs {
		if e.Type == typeSpaceChild {
			children = append(children, e)
			continue
		}
		content[e.Type] = gjson.ParseBytes(contentOf(e.JSON))
	}
	sr := &spaceRoom{roomInfo: roomInfo{publicRoom: publicRoom{RoomID: roomID,
		Name: content[rooms.TypeName].Get("name").String(), Topic: content[rooms.TypeTopic].Get("topic").String(),
		CanonicalAlias: content[rooms.TypeCanonicalAlias].Get("alias").String(), AvatarURL: content["m.room.avatar"].Get("url").String(),
		NumJoinedMembers: joined, WorldReadable: content[rooms.TypeHistoryVis].Get("history_visibility").String() == "world_readable",
		GuestCanJoin: content[rooms.TypeGuestAccess].Get("guest_access").String() == "can_join",
		JoinRule:     cmpOr(content[rooms.TypeJoinRules].Get("join_rule").String(), "invite"),
		RoomType:     content[rooms.TypeCreate].Get("type").String()},
		RoomVersion: room.RoomVersion, Encryption: content["m.room.encryption"].Get("algorithm").String()},
		ChildrenState: []json.RawMessage{}}
	if sr.restricted() {
		for _, a := range content[rooms.TypeJoinRules].Get("allow").Array() {
			if a.Get("type").String() == "m.room_membership" && a.Get("room_id").Type == gjson.String {
				sr.AllowedRoomIDs = append(sr.AllowedRoomIDs, a.Get("room_id").Str)
			}
		}
	}
	if sr.RoomType == "m.space" {
		slices.SortFunc(children, byStreamPos)
		for _, e := range children {
			// Events without a usable via are removed children.
			if raw := strippedSpaceChild(e); len(spaceChildren([]json.RawMessage{raw}, false)) == 1 {
				sr.ChildrenState = append(sr.ChildrenState, raw)
			}
		}
	}
	return sr, nil
}

func strippedSpaceChild(e *storage.Event) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"type": e.Type, "state_key": e.StateKey, "content": json.RawMessage(contentOf(e.JSON)),
		"sender": e.Sender, "origin_server_ts": e.OriginServerTS})
	return b
}

// userMembership is the user's membership in a room, also in one this
// server is not in (a remote invite or knock).
func (s *Server) userMembership(ctx context.Context, roomID, userID string) (string, error) {
	m, err := s.store.Membership(ctx, roomID, userID)
	if err != nil || m != "" {
		return m, err
	}
	oor, err := s.store.OutOfRoomMembership(ctx, userID, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return oor.Membership, nil
}

// visibleToUser reports whether the user may see the room's summary
// (spec: "the room is accessible to the user"): the user is joined or
// invited, anyone may see it, or the join rule admits members of a room the
// user is joined to.
func (s *Server) visibleToUser(ctx context.Context, r *roomInfo, userID string) (bool, error) {
	m, err := s.userMembership(ctx, r.RoomID, userID)
	if err != nil {
		return false, err
	}
	if m == rooms.MembershipJoin || m == rooms.MembershipInvite || r.openToAll() {
		return true, nil
	}
	if r.restricted() {
		for _, allowed := range r.AllowedRoomIDs {
			if m, err := s.store.Membership(ctx, allowed, userID); err != nil {
				return false, err
			} else if m == rooms.MembershipJoin {
				return true, nil
			}
		}
	}
	return false, nil
}

// visibleToServer reports whether another server may see the room's
// summary: anyone may, or one of its users is joined or invited, or it has
// a user joined to a room the join rule admits (the asking server then
// checks its own user against allowed_room_ids).
func (s *Server) visibleToServer(ctx context.Context, r *roomInfo, origin string) (bool, error) {
	if r.openToAll() {
		return true, nil
	}
	members, err := s.store.Members(ctx, r.RoomID)
	if err != nil {
		return false, err
	}
	for u, m := range members {
		if fromOrigin(u, origin) && (m == rooms.MembershipJoin || m == rooms.MembershipInvite) {
			return true, nil
		}
	}
	if r.restricted() {
		for _, allowed := range r.AllowedRoomIDs {
			servers, err := s.store.JoinedServers(ctx, allowed)
			if err != nil {
				return false, err
			}
			if slices.Contains(servers, origin) {
				return true, nil
			}
		}
	}
	return false, nil
}

// spaceCache keeps other servers' answers about rooms this server is not
// in: a room with its children (from the room of a federation /hierarchy
// answer), a room without them (one of its children), or a room that server
// called inaccessible.
type spaceCache struct {
	mu      sync.Mutex
	entries map[string]spaceCacheEntry
}

type spaceCacheEntry struct {
	room         *spaceRoom // nil: inaccessible
	withChildren bool
	expires      time.Time
}

func (c *spaceCache) get(roomID string, now time.Time) (spaceCacheEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[roomID]
	if !ok || now.After(e.expires) {
		return spaceCacheEntry{}, false
	}
	return e, true
}

func (c *spaceCache) put(roomID string, e spaceCacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil || len(c.entries) >= 10000 {
		c.entries = map[string]spaceCacheEntry{}
	}
	if old, ok := c.entries[roomID]; ok && old.withChildren && !e.withChildren && old.expires.After(time.Now()) {
		return // keep the fuller answer
	}
	c.entries[roomID] = e
}

// fedHierarchy is the federation /hierarchy answer.
type fedHierarchy struct {
	Room                 *spaceRoom  `json:"room"`
	Children             []*roomInfo `json:"children"`
	InaccessibleChildren []string    `json:"inaccessible_children"`
}

// remoteSpaceRoom asks the servers in via (in order) about a room this
// server is not in, and caches what they say about it and its children.
// It returns nil when no server could describe it or it is inaccessible.
func (s *Server) remoteSpaceRoom(ctx context.Context, roomID string, via []string, suggestedOnly, needChildren bool) (*spaceRoom, error) {
	now := s.now()
	if e, ok := s.spaces.get(roomID, now); ok && (e.withChildren || !needChildren || e.room == nil || e.room.RoomType != "m.space") {
		return e.room, nil
	}
	if s.fedClient == nil {
		return nil, nil
	}
	q := url.Values{}
	if suggestedOnly {
		q.Set("suggested_only", "true")
	}
	var lastErr error
	for _, server := range via {
		if server == s.cfg.ServerName {
			continue
		}
		var resp fedHierarchy
		err := s.fedClient.Do(ctx, server, http.MethodGet, "/_matrix/federation/v1/hierarchy/"+url.PathEscape(roomID), q, nil, &resp)
		var re *federation.RemoteError
		if errors.As(err, &re) && re.Status == http.StatusNotFound {
			continue
		}
		if err != nil {
			lastErr = err
			continue
		}
		if resp.Room == nil || resp.Room.RoomID != roomID {
			lastErr = fmt.Errorf("%s answered about another room", server)
			continue
		}
		if resp.Room.ChildrenState == nil {
			resp.Room.ChildrenState = []json.RawMessage{}
		}
		expires := now.Add(spaceCacheTTL)
		s.spaces.put(roomID, spaceCacheEntry{room: resp.Room, withChildren: true, expires: expires})
		for _, c := range resp.Children {
			if c == nil || c.RoomID == "" || c.RoomID == roomID {
				continue
			}
			s.spaces.put(c.RoomID, spaceCacheEntry{room: &spaceRoom{roomInfo: *c, ChildrenState: []json.RawMessage{}}, expires: expires})
		}
		for _, id := range resp.InaccessibleChildren {
			s.spaces.put(id, spaceCacheEntry{expires: expires})
		}
		return resp.Room, nil
	}
	if lastErr != nil {
		s.log.Info("federation: no server could describe a room", "room_id", roomID, "via", via, "err", lastErr)
	}
	return nil, nil
}

// spaceRoomFor describes a room from here when this server is in it, else
// from the servers in via.
func (s *Server) spaceRoomFor(ctx context.Context, roomID string, via []string, suggestedOnly, needChildren bool) (*spaceRoom, error) {
	in, err := s.inRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if in {
		return s.localSpaceRoom(ctx, roomID)
	}
	return s.remoteSpaceRoom(ctx, roomID, via, suggestedOnly, needChildren)
}

// viaOf is the servers to ask about a room nobody named servers for: the
// one in its ID (room versions before 12 have one).
func viaOf(roomID string) []string {
	if _, server, ok := strings.Cut(roomID, ":"); ok {
		return []string{server}
	}
	return nil
}

// rootVia is the servers to ask about a room a client names without
// servers: the one in its ID (room versions before 12 have one), and that
// of whoever invited the user to it.
func (s *Server) rootVia(ctx context.Context, userID, roomID string) []string {
	via := viaOf(roomID)
	if m, err := s.store.OutOfRoomMembership(ctx, userID, roomID); err == nil {
		if e, err := s.store.EventByID(ctx, m.EventID); err == nil {
			if inviter := gjson.GetBytes(e.JSON, "sender").String(); strings.Contains(inviter, ":") {
				via = append(via, inviter[strings.Index(inviter, ":")+1:])
			}
		}
	}
	return via
}

// hierarchyToken is /hierarchy's from and next_batch: how many rooms of the
// walk were answered already, and the parameters they were answered for.
type hierarchyToken struct {
	skip          int
	maxDepth      int
	suggestedOnly bool
}

func (t hierarchyToken) String() string {
	sugg := 0
	if t.suggestedOnly {
		sugg = 1
	}
	return fmt.Sprintf("h%d_%d_%d", t.skip, t.maxDepth, sugg)
}

func parseHierarchyToken(v string) (hierarchyToken, bool) {
	parts := strings.Split(strings.TrimPrefix(v, "h"), "_")
	if !strings.HasPrefix(v, "h") || len(parts) != 3 {
		return hierarchyToken{}, false
	}
	skip, err1 := strconv.Atoi(parts[0])
	depth, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil || skip < 0 || (parts[2] != "0" && parts[2] != "1") {
		return hierarchyToken{}, false
	}
	return hierarchyToken{skip: skip, maxDepth: depth, suggestedOnly: parts[2] == "1"}, true
}

// GET /_matrix/client/v1/rooms/{roomId}/hierarchy
func (s *Server) getHierarchy(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	params := hierarchyToken{maxDepth: -1}
	switch v := q.Get("suggested_only"); v {
	case "", "false":
	case "true":
		params.suggestedOnly = true
	default:
		return matrix.InvalidParam("suggested_only must be true or false")
	}
	if v := q.Get("max_depth"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return matrix.InvalidParam("max_depth must be a non-negative integer")
		}
		params.maxDepth = n
	}
	limit := maxHierarchyLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return matrix.InvalidParam("limit must be a positive integer")
		}
		limit = min(n, maxHierarchyLimit)
	}
	if v := q.Get("from"); v != "" {
		t, ok := parseHierarchyToken(v)
		if !ok {
			return matrix.InvalidParam("unknown pagination token %q", v)
		}
		if t.maxDepth != params.maxDepth || t.suggestedOnly != params.suggestedOnly {
			return matrix.InvalidParam("the pagination token was made for other max_depth or suggested_only values")
		}
		params.skip = t.skip
	}
	page, more, err := s.walkHierarchy(r.Context(), me.UserID, roomID, params, limit)
	if err != nil {
		return err
	}
	resp := map[string]any{"rooms": page}
	if more {
		params.skip += len(page)
		resp["next_batch"] = params.String()
	}
	return writeJSON(w, http.StatusOK, resp)
}

// walkHierarchy walks the space tree from root depth first, and answers
// the accessible rooms after the first p.skip, up to limit, and whether
// more follow.
func (s *Server) walkHierarchy(ctx context.Context, userID, root string, p hierarchyToken, limit int) ([]*spaceRoom, bool, error) {
	type entry struct {
		roomID string
		via    []string
		depth  int
	}
	stack := []entry{{roomID: root, via: s.rootVia(ctx, userID, root)}}
	seen := map[string]bool{}
	var page []*spaceRoom
	answered := 0
	for len(stack) > 0 && len(seen) < maxHierarchyWalk {
		e := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[e.roomID] {
			continue
		}
		seen[e.roomID] = true
		descend := p.maxDepth < 0 || e.depth < p.maxDepth
		room, err := s.spaceRoomFor(ctx, e.roomID, e.via, p.suggestedOnly, descend)
		if err != nil {
			return nil, false, err
		}
		visible := false
		if room != nil {
			if visible, err = s.visibleToUser(ctx, &room.roomInfo, userID); err != nil {
				return nil, false, err
			}
		}
		if !visible {
			if e.roomID == root {
				return nil, false, matrix.Forbidden("you cannot see room %s: it is not public and you are not in it", root)
			}
			continue
		}
		if answered >= p.skip {
			if len(page) == limit {
				return page, true, nil
			}
			shown := *room
			if p.suggestedOnly {
				shown.ChildrenState = filterSuggested(room.ChildrenState)
			}
			page = append(page, &shown)
		}
		answered++
		if !descend || room.RoomType != "m.space" {
			continue
		}
		children := spaceChildren(room.ChildrenState, p.suggestedOnly)
		if len(children) > maxChildrenPerSpace {
			children = children[:maxChildrenPerSpace]
		}
		// Pushed last first, so the first child is walked next.
		for i := len(children) - 1; i >= 0; i-- {
			if !seen[children[i].roomID] {
				stack = append(stack, entry{roomID: children[i].roomID, via: children[i].via, depth: e.depth + 1})
			}
		}
	}
	return page, false, nil
}

// filterSuggested keeps the m.space.child events marked suggested.
func filterSuggested(stripped []json.RawMessage) []json.RawMessage {
	out := []json.RawMessage{}
	for _, raw := range stripped {
		if gjson.GetBytes(raw, "content.suggested").Type == gjson.True {
			out = append(out, raw)
		}
	}
	return out
}

// fedHierarchyOf answers GET /_matrix/federation/v1/hierarchy/{roomId}:
// the room, if origin may see it, and those of its children this server is
// in, as accessible or not to origin.
func (s *Server) fedHierarchyOf(ctx context.Context, origin, roomID string, suggestedOnly bool) (*fedHierarchy, error) {
	in, err := s.inRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if !in {
		return nil, matrix.NotFound("this server is not in room %s", roomID)
	}
	if ok, err := s.serverAllowed(ctx, roomID, origin); err != nil {
		return nil, err
	} else if !ok {
		return nil, matrix.Forbidden("server %s is denied by the room's server ACL", origin)
	}
	room, err := s.localSpaceRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if ok, err := s.visibleToServer(ctx, &room.roomInfo, origin); err != nil {
		return nil, err
	} else if !ok {
		return nil, matrix.NotFound("room %s is not accessible to %s", roomID, origin)
	}
	if suggestedOnly {
		room.ChildrenState = filterSuggested(room.ChildrenState)
	}
	resp := &fedHierarchy{Room: room, Children: []*roomInfo{}, InaccessibleChildren: []string{}}
	children := spaceChildren(room.ChildrenState, suggestedOnly)
	if len(children) > maxChildrenPerSpace {
		children = children[:maxChildrenPerSpace]
	}
	for _, c := range children {
		if in, err := s.inRoom(ctx, c.roomID); err != nil {
			return nil, err
		} else if !in {
			continue
		}
		child, err := s.localSpaceRoom(ctx, c.roomID)
		if err != nil {
			return nil, err
		}
		ok, err := s.visibleToServer(ctx, &child.roomInfo, origin)
		if err != nil {
			return nil, err
		}
		if allowed, err := s.serverAllowed(ctx, c.roomID, origin); err != nil {
			return nil, err
		} else if !ok || !allowed {
			resp.InaccessibleChildren = append(resp.InaccessibleChildren, c.roomID)
			continue
		}
		resp.Children = append(resp.Children, &child.roomInfo)
	}
	return resp, nil
}

// GET /_matrix/client/v1/room_summary/{roomIdOrAlias}
//
// Authentication is optional: without it only rooms anyone may see are
// described, and without membership.
func (s *Server) getRoomSummary(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	idOrAlias, err := pathParam(r, "roomIdOrAlias")
	if err != nil {
		return err
	}
	roomID, servers, err := s.resolveRoom(ctx, idOrAlias)
	if err != nil {
		return err
	}
	via := append(append(r.URL.Query()["via"], servers...), viaOf(roomID)...)
	room, err := s.spaceRoomFor(ctx, roomID, via, false, false)
	if err != nil {
		return err
	}
	notFound := matrix.NotFound("room %s is unknown to this server, or you may not see it", idOrAlias)
	if room == nil {
		return notFound
	}
	resp := map[string]any{}
	b, _ := json.Marshal(room.roomInfo)
	_ = json.Unmarshal(b, &resp)
	me := deviceFrom(ctx)
	if me == nil {
		if !room.openToAll() {
			return notFound
		}
		return writeJSON(w, http.StatusOK, resp)
	}
	if ok, err := s.visibleToUser(ctx, &room.roomInfo, me.UserID); err != nil {
		return err
	} else if !ok {
		return notFound
	}
	m, err := s.userMembership(ctx, roomID, me.UserID)
	if err != nil {
		return err
	}
	resp["membership"] = cmpOr(m, rooms.MembershipLeave)
	return writeJSON(w, http.StatusOK, resp)
}
