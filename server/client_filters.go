package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"hearth/server/matrix"
	"hearth/server/storage"
)

// Filters (spec: Client-Server API, "Filtering"). A filter is stored as the
// JSON the client sent, once it has been checked, and parsed again when a
// /sync uses it.

// eventFilter is the spec's EventFilter; a nil list means "no restriction".
type eventFilter struct {
	Limit      *int     `json:"limit,omitempty"`
	Types      []string `json:"types,omitempty"`
	NotTypes   []string `json:"not_types,omitempty"`
	Senders    []string `json:"senders,omitempty"`
	NotSenders []string `json:"not_senders,omitempty"`
}

// roomEventFilter is the spec's RoomEventFilter (timeline, state, ephemeral,
// room account data).
type roomEventFilter struct {
	eventFilter
	Rooms                   []string `json:"rooms,omitempty"`
	NotRooms                []string `json:"not_rooms,omitempty"`
	ContainsURL             *bool    `json:"contains_url,omitempty"`
	LazyLoadMembers         bool     `json:"lazy_load_members,omitempty"`
	IncludeRedundantMembers bool     `json:"include_redundant_members,omitempty"`
	UnreadThreadNotifs      bool     `json:"unread_thread_notifications,omitempty"`
	// ignored holds the senders the user ignores (m.ignored_user_list):
	// their non-state events are left out. Set by the server, not the client.
	ignored map[string]bool
}

type roomFilter struct {
	Rooms        []string         `json:"rooms,omitempty"`
	NotRooms     []string         `json:"not_rooms,omitempty"`
	IncludeLeave bool             `json:"include_leave,omitempty"`
	Timeline     *roomEventFilter `json:"timeline,omitempty"`
	State        *roomEventFilter `json:"state,omitempty"`
	Ephemeral    *roomEventFilter `json:"ephemeral,omitempty"`
	AccountData  *roomEventFilter `json:"account_data,omitempty"`
}

// syncFilter is the spec's Filter, the body of POST /user/{userId}/filter.
type syncFilter struct {
	EventFields []string     `json:"event_fields,omitempty"`
	EventFormat string       `json:"event_format,omitempty"`
	AccountData *eventFilter `json:"account_data,omitempty"`
	Presence    *eventFilter `json:"presence,omitempty"`
	Room        *roomFilter  `json:"room,omitempty"`
}

// Validate checks the values JSON types cannot: limits, the event format,
// and the shape of room and user IDs in the lists.
func (f *syncFilter) Validate() error {
	if f.EventFormat != "" && f.EventFormat != "client" && f.EventFormat != "federation" {
		return matrix.InvalidParam("event_format must be client or federation")
	}
	for _, p := range f.EventFields {
		if p == "" {
			return matrix.InvalidParam("event_fields may not hold an empty path")
		}
	}
	checkEvent := func(name string, ef *eventFilter) error {
		if ef == nil {
			return nil
		}
		if ef.Limit != nil && *ef.Limit < 0 {
			return matrix.InvalidParam("%s.limit must not be negative", name)
		}
		for _, u := range append(append([]string{}, ef.Senders...), ef.NotSenders...) {
			if !strings.HasPrefix(u, "@") {
				return matrix.BadJSON("%s: %q is not a user ID", name, u)
			}
		}
		return nil
	}
	checkRooms := func(name string, ids ...[]string) error {
		for _, l := range ids {
			for _, r := range l {
				if !strings.HasPrefix(r, "!") {
					return matrix.BadJSON("%s: %q is not a room ID", name, r)
				}
			}
		}
		return nil
	}
	if err := checkEvent("account_data", f.AccountData); err != nil {
		return err
	}
	if err := checkEvent("presence", f.Presence); err != nil {
		return err
	}
	if rf := f.Room; rf != nil {
		if err := checkRooms("room", rf.Rooms, rf.NotRooms); err != nil {
			return err
		}
		for name, ref := range map[string]*roomEventFilter{"room.timeline": rf.Timeline, "room.state": rf.State,
			"room.ephemeral": rf.Ephemeral, "room.account_data": rf.AccountData} {
			if ref == nil {
				continue
			}
			if err := checkEvent(name, &ref.eventFilter); err != nil {
				return err
			}
			if err := checkRooms(name, ref.Rooms, ref.NotRooms); err != nil {
				return err
			}
		}
	}
	return nil
}

// parseFilter decodes and checks a filter definition.
func parseFilter(raw []byte) (*syncFilter, error) {
	f := &syncFilter{}
	if err := json.Unmarshal(raw, f); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, matrix.BadJSON("filter field %q has the wrong type", te.Field)
		}
		return nil, matrix.BadJSON("invalid filter: %v", err)
	}
	return f, f.Validate()
}

// POST /_matrix/client/v3/user/{userId}/filter
func (s *Server) postFilter(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	if err := s.ownUserParam(r, me); err != nil {
		return err
	}
	var raw json.RawMessage
	if err := decodeJSON(r, &raw); err != nil {
		return err
	}
	if _, err := parseFilter(raw); err != nil {
		return err
	}
	id, err := s.store.CreateFilter(r.Context(), me.UserID, raw)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]string{"filter_id": strconv.FormatInt(id, 10)})
}

// GET /_matrix/client/v3/user/{userId}/filter/{filterId}
func (s *Server) getFilter(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	if err := s.ownUserParam(r, me); err != nil {
		return err
	}
	fid, err := pathParam(r, "filterId")
	if err != nil {
		return err
	}
	def, err := s.storedFilter(r.Context(), me.UserID, fid)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	_, err = w.Write(def)
	return err
}

// storedFilter reads a filter by its ID; unknown IDs are 404 M_NOT_FOUND.
func (s *Server) storedFilter(ctx context.Context, userID, fid string) ([]byte, error) {
	id, err := strconv.ParseInt(fid, 10, 64)
	if err != nil {
		return nil, matrix.NotFound("no filter %q", fid)
	}
	def, err := s.store.Filter(ctx, userID, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, matrix.NotFound("no filter %q", fid)
	}
	return def, err
}

// ownUserParam checks that {userId} is the caller: these per-user
// resources are private (403 M_FORBIDDEN otherwise).
func (s *Server) ownUserParam(r *http.Request, me *Device) error {
	target, err := pathParam(r, "userId")
	if err != nil {
		return err
	}
	if target != me.UserID {
		return matrix.Forbidden("cannot access another user's data")
	}
	return nil
}

// globMatch matches a type or ID against a filter pattern where '*' stands
// for any run of characters (spec: "A '*' can be used as a wildcard").
func globMatch(pattern, s string) bool {
	if !strings.Contains(pattern, "*") {
		return pattern == s
	}
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, last)
}

func anyMatch(patterns []string, s string) bool {
	for _, p := range patterns {
		if globMatch(p, s) {
			return true
		}
	}
	return false
}

// allows reports whether an event of type typ from sender passes the
// filter; not_ lists win over the allow lists.
func (f *eventFilter) allows(typ, sender string) bool {
	if f == nil {
		return true
	}
	if anyMatch(f.NotTypes, typ) || (sender != "" && anyMatch(f.NotSenders, sender)) {
		return false
	}
	if f.Types != nil && !anyMatch(f.Types, typ) {
		return false
	}
	if f.Senders != nil && sender != "" && !anyMatch(f.Senders, sender) {
		return false
	}
	return true
}

// allowsRoom applies a rooms/not_rooms pair.
func allowsRoom(rooms, notRooms []string, roomID string) bool {
	if anyMatch(notRooms, roomID) {
		return false
	}
	return rooms == nil || anyMatch(rooms, roomID)
}

// allowsEvent applies a room event filter to an event's type, sender and,
// for contains_url, its content.
func (f *roomEventFilter) allowsEvent(e *storage.Event) bool {
	if f == nil {
		return true
	}
	if !f.eventFilter.allows(e.Type, e.Sender) || !allowsRoom(f.Rooms, f.NotRooms, e.RoomID) {
		return false
	}
	if f.ignored[e.Sender] && !e.IsState() {
		return false
	}
	if f.ContainsURL != nil {
		var c struct {
			URL *string `json:"url"`
		}
		_ = json.Unmarshal(contentOf(e.JSON), &c)
		if (c.URL != nil) != *f.ContainsURL {
			return false
		}
	}
	return true
}

// applyEventFields keeps only the listed dotted paths of a client event
// (spec: Filter.event_fields; "\." escapes a literal dot).
func applyEventFields(ev any, fields []string) any {
	if len(fields) == 0 {
		return ev
	}
	raw, err := json.Marshal(ev)
	if err != nil {
		return ev
	}
	var full map[string]any
	if json.Unmarshal(raw, &full) != nil {
		return ev
	}
	out := map[string]any{}
	for _, f := range fields {
		path := splitFieldPath(f)
		var src any = full
		dst := out
		for i, k := range path {
			m, ok := src.(map[string]any)
			if !ok {
				break
			}
			v, ok := m[k]
			if !ok {
				break
			}
			if i == len(path)-1 {
				dst[k] = v
				break
			}
			next, ok := dst[k].(map[string]any)
			if !ok {
				next = map[string]any{}
				dst[k] = next
			}
			dst, src = next, v
		}
	}
	return out
}

func splitFieldPath(f string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(f); i++ {
		switch {
		case f[i] == '\\' && i+1 < len(f) && f[i+1] == '.':
			cur.WriteByte('.')
			i++
		case f[i] == '.':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(f[i])
		}
	}
	return append(parts, cur.String())
}
