package server

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"hearth/server/matrix"
	"hearth/server/rooms"
	"hearth/server/storage"
)

// Room administration: the Synapse admin API's room endpoints, and the
// operations the dashboard's rooms pages share with them.

// AdminRoom is a room as the admin API and the dashboard show it.
type AdminRoom struct {
	RoomID             string
	Name               string
	Topic              string
	Avatar             string
	CanonicalAlias     string
	JoinedMembers      int
	JoinedLocalMembers int
	Version            string
	Creator            string
	Encryption         string
	Federatable        bool
	Public             bool
	JoinRules          string
	GuestAccess        string
	HistoryVisibility  string
	StateEvents        int
	RoomType           string
	Blocked            bool
	CreatedTS          int64
}

func newAdminRoom(ri *storage.RoomInfo) *AdminRoom {
	c := func(typ, path string) string { return gjson.GetBytes(contentOf(ri.Content[typ]), path).String() }
	ar := &AdminRoom{RoomID: ri.RoomID, Name: c(rooms.TypeName, "name"), Topic: c(rooms.TypeTopic, "topic"),
		Avatar: c("m.room.avatar", "url"), CanonicalAlias: c(rooms.TypeCanonicalAlias, "alias"),
		JoinedMembers: ri.JoinedMembers, JoinedLocalMembers: ri.JoinedLocalMembers, Version: ri.RoomVersion,
		Creator: ri.Creator, Encryption: c(rooms.TypeEncryption, "algorithm"), Public: ri.IsPublic,
		JoinRules: c(rooms.TypeJoinRules, "join_rule"), GuestAccess: c(rooms.TypeGuestAccess, "guest_access"),
		HistoryVisibility: c(rooms.TypeHistoryVis, "history_visibility"), StateEvents: ri.StateEvents,
		RoomType: c(rooms.TypeCreate, "type"), Blocked: ri.Blocked, CreatedTS: ri.CreatedTS, Federatable: true}
	if f := gjson.GetBytes(contentOf(ri.Content[rooms.TypeCreate]), `m\.federate`); f.Exists() {
		ar.Federatable = f.Bool()
	}
	return ar
}

// RoomListFilter selects and orders rooms (Synapse's GET /v1/rooms).
type RoomListFilter struct {
	From, Limit int
	OrderBy     string
	// Reverse is dir=b: the opposite of order_by's natural order.
	Reverse bool
	Search  string
}

// roomOrders are Synapse's order_by values, each with its natural order;
// the counts sort largest first, as in Synapse.
var roomOrders = map[string]func(a, b *AdminRoom) int{
	"name":                 func(a, b *AdminRoom) int { return cmpEmptyLast(a.Name, b.Name) },
	"alphabetical":         func(a, b *AdminRoom) int { return cmpEmptyLast(a.Name, b.Name) },
	"canonical_alias":      func(a, b *AdminRoom) int { return cmpEmptyLast(a.CanonicalAlias, b.CanonicalAlias) },
	"joined_members":       func(a, b *AdminRoom) int { return cmp.Compare(b.JoinedMembers, a.JoinedMembers) },
	"size":                 func(a, b *AdminRoom) int { return cmp.Compare(b.JoinedMembers, a.JoinedMembers) },
	"joined_local_members": func(a, b *AdminRoom) int { return cmp.Compare(b.JoinedLocalMembers, a.JoinedLocalMembers) },
	"state_events":         func(a, b *AdminRoom) int { return cmp.Compare(b.StateEvents, a.StateEvents) },
	"version":              func(a, b *AdminRoom) int { return cmp.Compare(a.Version, b.Version) },
	"creator":              func(a, b *AdminRoom) int { return cmp.Compare(a.Creator, b.Creator) },
	"encryption":           func(a, b *AdminRoom) int { return cmpEmptyLast(a.Encryption, b.Encryption) },
	"federatable":          func(a, b *AdminRoom) int { return cmpBool(a.Federatable, b.Federatable) },
	"public":               func(a, b *AdminRoom) int { return cmpBool(a.Public, b.Public) },
	"join_rules":           func(a, b *AdminRoom) int { return cmpEmptyLast(a.JoinRules, b.JoinRules) },
	"guest_access":         func(a, b *AdminRoom) int { return cmpEmptyLast(a.GuestAccess, b.GuestAccess) },
	"history_visibility":   func(a, b *AdminRoom) int { return cmpEmptyLast(a.HistoryVisibility, b.HistoryVisibility) },
}

// RoomOrders lists the order_by values ListRooms accepts.
func RoomOrders() []string {
	out := make([]string, 0, len(roomOrders))
	for k := range roomOrders {
		if k != "alphabetical" && k != "size" {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// cmpEmptyLast orders strings case-insensitively with empty (unset) ones
// last.
func cmpEmptyLast(a, b string) int {
	switch {
	case a == b:
		return 0
	case a == "":
		return 1
	case b == "":
		return -1
	}
	return cmp.Or(cmp.Compare(strings.ToLower(a), strings.ToLower(b)), cmp.Compare(a, b))
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

// ListRooms returns one page of rooms and how many match the search. Rooms
// are sorted in memory: an appliance holds thousands of rooms, not
// millions, and every order Synapse offers then costs one code path.
func (s *Server) ListRooms(ctx context.Context, f RoomListFilter) ([]*AdminRoom, int, error) {
	less, ok := roomOrders[cmp.Or(f.OrderBy, "name")]
	if !ok {
		return nil, 0, matrix.InvalidParam("unknown value for order_by: %s", f.OrderBy)
	}
	ids, err := s.store.AllRoomIDs(ctx)
	if err != nil {
		return nil, 0, err
	}
	infos, err := s.store.RoomInfos(ctx, ids, s.cfg.ServerName)
	if err != nil {
		return nil, 0, err
	}
	term := strings.ToLower(strings.TrimSpace(f.Search))
	all := make([]*AdminRoom, 0, len(infos))
	for _, id := range ids {
		ri := infos[id]
		if ri == nil {
			continue
		}
		ar := newAdminRoom(ri)
		if term != "" && !strings.Contains(strings.ToLower(ar.Name), term) &&
			!strings.Contains(strings.ToLower(ar.CanonicalAlias), term) && !strings.Contains(strings.ToLower(ar.RoomID), term) {
			continue
		}
		all = append(all, ar)
	}
	slices.SortStableFunc(all, func(a, b *AdminRoom) int {
		c := less(a, b)
		if f.Reverse {
			c = -c
		}
		return cmp.Or(c, cmp.Compare(a.RoomID, b.RoomID))
	})
	total := len(all)
	from := min(max(f.From, 0), total)
	to := total
	if f.Limit >= 0 {
		to = min(from+f.Limit, total)
	}
	return all[from:to], total, nil
}

// Room returns one room; an unknown one is M_NOT_FOUND.
func (s *Server) Room(ctx context.Context, roomID string) (*AdminRoom, error) {
	infos, err := s.store.RoomInfos(ctx, []string{roomID}, s.cfg.ServerName)
	if err != nil {
		return nil, err
	}
	ri := infos[roomID]
	if ri == nil {
		return nil, matrix.NotFound("Room not found")
	}
	return newAdminRoom(ri), nil
}

// RoomMembers returns the room's current members by membership.
func (s *Server) RoomMembers(ctx context.Context, roomID string) (map[string]string, error) {
	return s.store.Members(ctx, roomID)
}

// JoinedMembers lists the room's joined members, sorted.
func (s *Server) JoinedMembers(ctx context.Context, roomID string) ([]string, error) {
	ms, err := s.store.Members(ctx, roomID)
	if err != nil {
		return nil, err
	}
	out := []string{}
	for u, m := range ms {
		if m == rooms.MembershipJoin {
			out = append(out, u)
		}
	}
	slices.Sort(out)
	return out, nil
}

// RoomServers lists the servers with a joined member in the room.
func (s *Server) RoomServers(ctx context.Context, roomID string) ([]string, error) {
	joined, err := s.JoinedMembers(ctx, roomID)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	out := []string{}
	for _, u := range joined {
		if _, server, ok := matrix.SplitUserID(u); ok && !seen[server] {
			seen[server] = true
			out = append(out, server)
		}
	}
	slices.Sort(out)
	return out, nil
}

// RoomState returns the room's current state events, sorted by type and
// state key.
func (s *Server) RoomState(ctx context.Context, roomID string) ([]*storage.Event, error) {
	st, err := s.store.CurrentState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	evs, err := s.stateEvents(ctx, st)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(evs, func(a, b *storage.Event) int {
		return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(*a.StateKey, *b.StateKey))
	})
	return evs, nil
}

// RoomBlocked reports whether the room is blocked, and by whom.
func (s *Server) RoomBlocked(ctx context.Context, roomID string) (bool, string, error) {
	b, err := s.store.BlockedRoom(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return false, "", nil
	}
	if err != nil {
		return false, "", err
	}
	return true, b.UserID, nil
}

// SetRoomBlocked blocks or unblocks a room (known here or not): a blocked
// room refuses joins and every other event, and leaves the room directory.
func (s *Server) SetRoomBlocked(ctx context.Context, by Actor, roomID string, blocked bool) error {
	if !strings.HasPrefix(roomID, "!") {
		return matrix.InvalidParam("%q is not a room ID", roomID)
	}
	// The room's cached head carries the old flag.
	err := s.timeline.Exclusive(roomID, func() error { return s.store.SetRoomBlocked(ctx, roomID, by.UserID, blocked) })
	if err != nil {
		return err
	}
	action := "room.block"
	if !blocked {
		action = "room.unblock"
	}
	s.audit(ctx, by, action, roomID, "")
	return nil
}

// adminRoomParam reads {roomId} and checks the room exists here.
func (s *Server) adminRoomParam(r *http.Request) (string, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return "", err
	}
	if _, err := s.store.RoomByID(r.Context(), roomID); errors.Is(err, storage.ErrNotFound) {
		return "", matrix.NotFound("Room not found")
	} else if err != nil {
		return "", err
	}
	return roomID, nil
}

// nullStr is s, or JSON null when empty (Synapse's unset columns).
func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func adminRoomJSON(ar *AdminRoom, details bool) map[string]any {
	m := map[string]any{
		"room_id": ar.RoomID, "name": nullStr(ar.Name), "canonical_alias": nullStr(ar.CanonicalAlias),
		"joined_members": ar.JoinedMembers, "joined_local_members": ar.JoinedLocalMembers, "version": ar.Version,
		"creator": ar.Creator, "encryption": nullStr(ar.Encryption), "federatable": ar.Federatable, "public": ar.Public,
		"join_rules": nullStr(ar.JoinRules), "guest_access": nullStr(ar.GuestAccess),
		"history_visibility": nullStr(ar.HistoryVisibility), "state_events": ar.StateEvents, "room_type": nullStr(ar.RoomType),
	}
	if details {
		m["topic"], m["avatar"] = nullStr(ar.Topic), nullStr(ar.Avatar)
	}
	return m
}

// GET /_synapse/admin/v1/rooms
//
// Query: from, limit (default 100), order_by, dir (f|b), search_term.
func (s *Server) getAdminRooms(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := RoomListFilter{OrderBy: q.Get("order_by"), Search: q.Get("search_term")}
	var err error
	if f.From, err = queryInt(r, "from", 0); err != nil {
		return err
	}
	if f.Limit, err = queryInt(r, "limit", 100); err != nil {
		return err
	}
	if f.From < 0 || f.Limit < 0 {
		return matrix.InvalidParam("from and limit must not be negative")
	}
	switch q.Get("dir") {
	case "", "f":
	case "b":
		f.Reverse = true
	default:
		return matrix.InvalidParam("unknown direction: %s", q.Get("dir"))
	}
	if q.Has("search_term") && f.Search == "" {
		return matrix.InvalidParam("search_term cannot be an empty string")
	}
	list, total, err := s.ListRooms(r.Context(), f)
	if err != nil {
		return err
	}
	out := make([]map[string]any, 0, len(list))
	for _, ar := range list {
		out = append(out, adminRoomJSON(ar, false))
	}
	body := map[string]any{"rooms": out, "offset": f.From, "total_rooms": total}
	if f.From+len(list) < total {
		body["next_batch"] = f.From + len(list)
	}
	if f.From > 0 {
		body["prev_batch"] = max(f.From-f.Limit, 0)
	}
	return writeJSON(w, http.StatusOK, body)
}

// GET /_synapse/admin/v1/rooms/{roomId}
func (s *Server) getAdminRoom(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	ar, err := s.Room(r.Context(), roomID)
	if err != nil {
		return err
	}
	body := adminRoomJSON(ar, true)
	devices := 0
	joined, err := s.JoinedMembers(r.Context(), roomID)
	if err != nil {
		return err
	}
	for _, u := range joined {
		if strings.HasSuffix(u, ":"+s.cfg.ServerName) {
			ds, err := s.store.Devices(r.Context(), u)
			if err != nil {
				return err
			}
			devices += len(ds)
		}
	}
	body["joined_local_devices"] = devices
	// forgotten: every local member who ever was in the room has forgotten
	// it (Synapse's rooms.is_forgotten-by-all).
	forgotten, err := s.forgottenByAll(r.Context(), roomID)
	if err != nil {
		return err
	}
	body["forgotten"] = forgotten
	return writeJSON(w, http.StatusOK, body)
}

// forgottenByAll reports whether every local user with a membership in the
// room has forgotten it.
func (s *Server) forgottenByAll(ctx context.Context, roomID string) (bool, error) {
	ms, err := s.store.Members(ctx, roomID)
	if err != nil {
		return false, err
	}
	some := false
	for u := range ms {
		if !strings.HasSuffix(u, ":"+s.cfg.ServerName) {
			continue
		}
		some = true
		f, err := s.store.IsForgotten(ctx, u, roomID)
		if err != nil || !f {
			return false, err
		}
	}
	return some, nil
}

// GET /_synapse/admin/v1/rooms/{roomId}/members
func (s *Server) getAdminRoomMembers(w http.ResponseWriter, r *http.Request) error {
	roomID, err := s.adminRoomParam(r)
	if err != nil {
		return err
	}
	joined, err := s.JoinedMembers(r.Context(), roomID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"members": joined, "total": len(joined)})
}

// GET /_synapse/admin/v1/rooms/{roomId}/state
func (s *Server) getAdminRoomState(w http.ResponseWriter, r *http.Request) error {
	roomID, err := s.adminRoomParam(r)
	if err != nil {
		return err
	}
	evs, err := s.RoomState(r.Context(), roomID)
	if err != nil {
		return err
	}
	fm := &eventFormatter{store: s.store, now: s.now(), noBundles: true}
	state, err := fm.format(r.Context(), evs)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"state": state})
}

// GET /_synapse/admin/v1/rooms/{roomId}/messages
//
// As the client /messages (from, to, dir, limit, filter), but the admin
// need not be in the room and history visibility does not apply.
func (s *Server) getAdminRoomMessages(w http.ResponseWriter, r *http.Request) error {
	roomID, err := s.adminRoomParam(r)
	if err != nil {
		return err
	}
	return s.serveMessages(w, r, adminReader(), roomID)
}

// GET /_synapse/admin/v1/rooms/{roomId}/context/{eventId}
//
// As the client /context, for any event of the room.
func (s *Server) getAdminRoomContext(w http.ResponseWriter, r *http.Request) error {
	roomID, err := s.adminRoomParam(r)
	if err != nil {
		return err
	}
	return s.serveContext(w, r, adminReader(), roomID)
}

// GET /_synapse/admin/v1/rooms/{roomId}/timestamp_to_event
func (s *Server) getAdminTimestampToEvent(w http.ResponseWriter, r *http.Request) error {
	roomID, err := s.adminRoomParam(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil {
		return matrix.InvalidParam("ts must be an integer")
	}
	forwards := true // Synapse's default for the admin form
	switch q.Get("dir") {
	case "f", "":
	case "b":
		forwards = false
	default:
		return matrix.InvalidParam("dir must be f or b")
	}
	evs, err := s.store.EventsNearTimestamp(r.Context(), roomID, ts, forwards, 1)
	if err != nil {
		return err
	}
	if len(evs) == 0 {
		return matrix.NotFound("Unable to find event from %d in direction %s", ts, cmp.Or(q.Get("dir"), "f"))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"event_id": evs[0].EventID, "origin_server_ts": evs[0].OriginServerTS})
}

// GET /_synapse/admin/v1/rooms/{roomId}/block
func (s *Server) getAdminRoomBlock(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	blocked, by, err := s.RoomBlocked(r.Context(), roomID)
	if err != nil {
		return err
	}
	body := map[string]any{"block": blocked}
	if blocked {
		body["user_id"] = by
	}
	return writeJSON(w, http.StatusOK, body)
}

// PUT /_synapse/admin/v1/rooms/{roomId}/block
func (s *Server) putAdminRoomBlock(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	var req struct {
		Block *bool `json:"block"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Block == nil {
		return matrix.MissingParam("missing block (a boolean)")
	}
	if err := s.SetRoomBlocked(r.Context(), s.apiActor(r), roomID, *req.Block); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"block": *req.Block})
}

// GET /_synapse/admin/v1/rooms/{roomId}/forward_extremities
func (s *Server) getAdminForwardExtremities(w http.ResponseWriter, r *http.Request) error {
	roomID, err := s.adminRoomParam(r)
	if err != nil {
		return err
	}
	exts, err := s.store.ForwardExtremities(r.Context(), roomID)
	if err != nil {
		return err
	}
	ids := make([]string, len(exts))
	for i, x := range exts {
		ids[i] = x.EventID
	}
	evs, err := s.store.EventsByID(r.Context(), ids)
	if err != nil {
		return err
	}
	ts := map[string]int64{}
	for _, e := range evs {
		ts[e.EventID] = e.OriginServerTS
	}
	results := make([]map[string]any, 0, len(exts))
	for _, x := range exts {
		results = append(results, map[string]any{"event_id": x.EventID, "state_group": x.StateGroup, "depth": x.Depth, "received_ts": ts[x.EventID]})
	}
	return writeJSON(w, http.StatusOK, map[string]any{"count": len(results), "results": results})
}

// DELETE /_synapse/admin/v1/rooms/{roomId}/forward_extremities
//
// Keeps only the newest extremity, for rooms whose DAG has too many leaves.
func (s *Server) deleteAdminForwardExtremities(w http.ResponseWriter, r *http.Request) error {
	roomID, err := s.adminRoomParam(r)
	if err != nil {
		return err
	}
	n, err := s.timeline.DropExtremities(r.Context(), roomID)
	if err != nil {
		return err
	}
	s.audit(r.Context(), s.apiActor(r), "room.forward_extremities.delete", roomID, fmt.Sprintf("deleted=%d", n))
	return writeJSON(w, http.StatusOK, map[string]any{"deleted": n})
}

// localAdminOf finds the local joined member of the room with the highest
// power level that can change power levels, and that level.
func (s *Server) localAdminOf(ctx context.Context, roomID string) (string, *rooms.PowerLevels, error) {
	pls, err := s.roomPowerLevels(ctx, roomID)
	if err != nil {
		return "", nil, err
	}
	joined, err := s.JoinedMembers(ctx, roomID)
	if err != nil {
		return "", nil, err
	}
	best, bestLevel := "", int64(-1<<62)
	for _, u := range joined {
		if !strings.HasSuffix(u, ":"+s.cfg.ServerName) {
			continue
		}
		if l := pls.UserLevel(u); l > bestLevel && l >= pls.EventLevel(rooms.TypePowerLevels, true) {
			best, bestLevel = u, l
		}
	}
	if best == "" {
		return "", nil, matrix.InvalidParam("No local admin user in room")
	}
	return best, pls, nil
}

// MakeRoomAdmin gives userID the highest power level a local room admin
// has, joining them first (inviting them when the room is not public), as
// Synapse's make_room_admin.
func (s *Server) MakeRoomAdmin(ctx context.Context, by Actor, roomID, userID string) error {
	admin, pls, err := s.localAdminOf(ctx, roomID)
	if err != nil {
		return err
	}
	if err := s.forceJoin(ctx, roomID, userID, admin); err != nil {
		return err
	}
	level := pls.UserLevel(admin)
	if level == rooms.PowerInfinite { // a v12 creator: give the highest listed level
		level = 100
		for _, l := range pls.Users {
			level = max(level, l)
		}
	}
	if slices.Contains(pls.Creators, userID) || pls.UserLevel(userID) >= level {
		s.audit(ctx, by, "room.make_admin", roomID, userID)
		return nil
	}
	content := map[string]any{}
	if pl, err := s.store.CurrentStateEvent(ctx, roomID, rooms.TypePowerLevels, ""); err == nil {
		if err := json.Unmarshal(contentOf(pl.JSON), &content); err != nil {
			return err
		}
	} else if !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	users, _ := content["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
	}
	users[userID] = level
	content["users"] = users
	empty := ""
	if _, err := s.sendEvents(ctx, roomID, newEvent{Type: rooms.TypePowerLevels, StateKey: &empty, Sender: admin, Content: content}); err != nil {
		return err
	}
	s.audit(ctx, by, "room.make_admin", roomID, userID)
	return nil
}

// forceJoin joins a local user to the room: directly when the join rules
// allow it, or after an invite from inviter (a local member) otherwise.
func (s *Server) forceJoin(ctx context.Context, roomID, userID, inviter string) error {
	m, err := s.store.Membership(ctx, roomID, userID)
	if err != nil || m == rooms.MembershipJoin {
		return err
	}
	if m == rooms.MembershipBan {
		return matrix.Forbidden("%s is banned from the room", userID)
	}
	content, err := s.memberContent(ctx, rooms.MembershipJoin, userID, "")
	if err != nil {
		return err
	}
	join := newEvent{Type: rooms.TypeMember, StateKey: &userID, Sender: userID, Content: content}
	jr, err := s.store.CurrentStateEvent(ctx, roomID, rooms.TypeJoinRules, "")
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	public := err == nil && gjson.GetBytes(contentOf(jr.JSON), "join_rule").String() == rooms.JoinRulePublic
	if public || m == rooms.MembershipInvite {
		_, err := s.sendEvents(ctx, roomID, join)
		return err
	}
	if inviter == "" {
		return matrix.Forbidden("the room is not public and no local admin of it can invite %s", userID)
	}
	ic, err := s.memberContent(ctx, rooms.MembershipInvite, userID, "")
	if err != nil {
		return err
	}
	_, err = s.sendEvents(ctx, roomID, newEvent{Type: rooms.TypeMember, StateKey: &userID, Sender: inviter, Content: ic}, join)
	return err
}

// adminTargetUser reads the optional user_id of a body, defaulting to the
// calling admin, and insists on a local, existing account.
func (s *Server) adminTargetUser(ctx context.Context, r *http.Request, userID string) (string, error) {
	if userID == "" {
		userID = deviceFrom(r.Context()).UserID
	}
	if _, server, ok := matrix.SplitUserID(userID); !ok || server != s.cfg.ServerName {
		return "", matrix.InvalidParam("This endpoint can only be used with local users")
	}
	if _, err := s.store.UserByID(ctx, userID); errors.Is(err, storage.ErrNotFound) {
		return "", matrix.NotFound("User not found")
	} else if err != nil {
		return "", err
	}
	return userID, nil
}

// adminRoomOrAlias resolves {roomIdOrAlias} (also read as {roomId}) to a
// room this server has.
func (s *Server) adminRoomOrAlias(r *http.Request, param string) (string, error) {
	idOrAlias, err := pathParam(r, param)
	if err != nil {
		return "", err
	}
	roomID, _, err := s.resolveRoom(r.Context(), idOrAlias)
	if err != nil {
		return "", err
	}
	if _, err := s.store.RoomByID(r.Context(), roomID); errors.Is(err, storage.ErrNotFound) {
		return "", matrix.NotFound("Room not found")
	} else if err != nil {
		return "", err
	}
	return roomID, nil
}

// POST /_synapse/admin/v1/rooms/{roomIdOrAlias}/make_room_admin
func (s *Server) postAdminMakeRoomAdmin(w http.ResponseWriter, r *http.Request) error {
	roomID, err := s.adminRoomOrAlias(r, "roomId")
	if err != nil {
		return err
	}
	var req struct {
		UserID string `json:"user_id"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	userID, err := s.adminTargetUser(r.Context(), r, req.UserID)
	if err != nil {
		return err
	}
	if err := s.MakeRoomAdmin(r.Context(), s.apiActor(r), roomID, userID); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// POST /_synapse/admin/v1/join/{roomIdOrAlias}
//
// Joins a local user to a room: a public one directly; another only when
// the calling admin is in it with power to invite (as Synapse).
func (s *Server) postAdminJoin(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	roomID, err := s.adminRoomOrAlias(r, "roomIdOrAlias")
	if err != nil {
		return err
	}
	var req struct {
		UserID string `json:"user_id"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.UserID == "" {
		return matrix.MissingParam("missing user_id")
	}
	userID, err := s.adminTargetUser(ctx, r, req.UserID)
	if err != nil {
		return err
	}
	inviter := ""
	me := deviceFrom(ctx).UserID
	if m, err := s.store.Membership(ctx, roomID, me); err != nil {
		return err
	} else if m == rooms.MembershipJoin {
		if ok, err := s.hasPowerFor(ctx, roomID, me, "invite"); err != nil {
			return err
		} else if ok {
			inviter = me
		}
	}
	if err := s.forceJoin(ctx, roomID, userID, inviter); err != nil {
		return err
	}
	s.audit(ctx, s.apiActor(r), "room.force_join", roomID, userID)
	return writeJSON(w, http.StatusOK, map[string]string{"room_id": roomID})
}

// anyUserParam reads {userId} as any well-formed user ID.
func anyUserParam(r *http.Request) (string, error) {
	userID, err := pathParam(r, "userId")
	if err != nil {
		return "", err
	}
	if _, _, ok := matrix.SplitUserID(userID); !ok {
		return "", matrix.InvalidParam("%q is not a user ID", userID)
	}
	return userID, nil
}

// GET /_synapse/admin/v1/users/{userId}/joined_rooms
func (s *Server) getAdminUserJoinedRooms(w http.ResponseWriter, r *http.Request) error {
	userID, err := anyUserParam(r)
	if err != nil {
		return err
	}
	ms, err := s.store.RoomsOfUser(r.Context(), userID, rooms.MembershipJoin)
	if err != nil {
		return err
	}
	ids := make([]string, 0, len(ms))
	for _, m := range ms {
		ids = append(ids, m.RoomID)
	}
	return writeJSON(w, http.StatusOK, map[string]any{"joined_rooms": ids, "total": len(ids)})
}

// GET /_synapse/admin/v1/users/{userId}/memberships
func (s *Server) getAdminUserMemberships(w http.ResponseWriter, r *http.Request) error {
	userID, err := anyUserParam(r)
	if err != nil {
		return err
	}
	ms, err := s.store.RoomsOfUser(r.Context(), userID)
	if err != nil {
		return err
	}
	out := make(map[string]string, len(ms))
	for _, m := range ms {
		out[m.RoomID] = m.Membership
	}
	return writeJSON(w, http.StatusOK, map[string]any{"memberships": out})
}
