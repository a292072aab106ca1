package server

import (
	"encoding/json"
	"net/http"
	"sort"
	"strconv"

	"hearth/server/matrix"
)

// The notification list (spec: Client-Server API, "Push Notifications":
// "Listing Notifications").

// GET /_matrix/client/v3/notifications
//
// The caller's notifications, newest first; from is the stream position
// to continue below (next_token), only=highlight keeps the highlights.
func (s *Server) getNotifications(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	ctx := r.Context()
	q := r.URL.Query()
	var before int64
	if v := q.Get("from"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return matrix.InvalidParam("from is not a token from next_token")
		}
		before = n
	}
	limit := 50
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return matrix.InvalidParam("limit must be a non-negative integer")
		}
		limit = min(max(n, 1), 1000)
	}
	ns, err := s.store.NotificationsOf(ctx, me.UserID, before, limit, q.Get("only") == "highlight")
	if err != nil {
		return err
	}
	read, err := s.store.ReadPositionsOf(ctx, me.UserID)
	if err != nil {
		return err
	}
	ids := make([]string, len(ns))
	for i, n := range ns {
		ids[i] = n.EventID
	}
	evs, err := s.store.EventsByID(ctx, ids)
	if err != nil {
		return err
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i].StreamPos > evs[j].StreamPos })
	f := &eventFormatter{store: s.store, viewer: me, now: s.now(), omitRoomID: true}
	formatted, err := f.format(ctx, evs)
	if err != nil {
		return err
	}
	byID := make(map[string]clientEvent, len(formatted))
	for _, ce := range formatted {
		byID[ce.EventID] = ce
	}
	out := make([]map[string]any, 0, len(ns))
	for _, n := range ns {
		ce, ok := byID[n.EventID]
		if !ok {
			continue // purged since
		}
		var actions []json.RawMessage
		if json.Unmarshal([]byte(n.Actions), &actions) != nil || actions == nil {
			actions = []json.RawMessage{}
		}
		out = append(out, map[string]any{"actions": actions, "event": ce, "profile_tag": "", "room_id": n.RoomID, "ts": n.TS,
			"read": n.StreamPos <= read.Of(n.RoomID, n.ThreadID)})
	}
	resp := map[string]any{"notifications": out}
	if len(ns) == limit {
		resp["next_token"] = strconv.FormatInt(ns[len(ns)-1].StreamPos, 10)
	}
	return writeJSON(w, http.StatusOK, resp)
}
