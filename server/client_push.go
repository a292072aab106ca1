package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"hearth/server/matrix"
	"hearth/server/push"
	"hearth/server/storage"
)

// Pushers and the notification list (spec: Client-Server API, "Push
// Notifications": "Client behaviour" and "Listing Notifications").
// Delivery to push gateways is package push's (pusher.go).

// pusherJSON is the spec's Pusher.
type pusherJSON struct {
	PushKey           string          `json:"pushkey"`
	Kind              string          `json:"kind"`
	AppID             string          `json:"app_id"`
	AppDisplayName    string          `json:"app_display_name"`
	DeviceDisplayName string          `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag"`
	Lang              string          `json:"lang"`
	Data              json.RawMessage `json:"data"`
}

// GET /_matrix/client/v3/pushers
func (s *Server) getPushers(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	ps, err := s.store.PushersOf(r.Context(), me.UserID)
	if err != nil {
		return err
	}
	out := make([]pusherJSON, 0, len(ps))
	for _, p := range ps {
		out = append(out, pusherJSON{PushKey: p.PushKey, Kind: p.Kind, AppID: p.AppID, AppDisplayName: p.AppDisplayName,
			DeviceDisplayName: p.DeviceDisplayName, ProfileTag: p.ProfileTag, Lang: p.Lang, Data: json.RawMessage(p.Data)})
	}
	return writeJSON(w, http.StatusOK, map[string]any{"pushers": out})
}

// POST /_matrix/client/v3/pushers/set
//
// kind null deletes the caller's pusher for (app_id, pushkey); otherwise the
// pusher is created or updated, belonging to the calling device (and
// deleted with it). Unless append, other users' pushers with the same
// app_id and pushkey go (the device changed hands). Checks follow
// Synapse's: an http pusher needs data.url with the path
// /_matrix/push/v1/notify; an email pusher needs the address bound to the
// account as a 3PID, which Hearth does not do yet, so it is refused with
// M_THREEPID_NOT_FOUND as Synapse refuses an unbound one.
func (s *Server) postPushersSet(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	var body map[string]json.RawMessage
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	str := func(key string) (string, bool, error) {
		raw, ok := body[key]
		if !ok {
			return "", false, nil
		}
		var v string
		if json.Unmarshal(raw, &v) != nil {
			return "", true, matrix.BadJSON("%s must be a string", key)
		}
		return v, true, nil
	}
	ctx := r.Context()
	appID, hasApp, err := str("app_id")
	if err != nil {
		return err
	}
	pushKey, hasKey, err := str("pushkey")
	if err != nil {
		return err
	}
	if kindRaw, ok := body["kind"]; ok && strings.TrimSpace(string(kindRaw)) == "null" && hasApp && hasKey {
		if err := s.store.DeletePusher(ctx, me.UserID, appID, pushKey); err != nil {
			return err
		}
		s.pushers.Changed(ctx, me.UserID)
		return writeJSON(w, http.StatusOK, struct{}{})
	}
	var missing []string
	fields := map[string]string{}
	for _, key := range []string{"kind", "app_id", "app_display_name", "device_display_name", "pushkey", "lang", "data"} {
		if _, ok := body[key]; !ok {
			missing = append(missing, key)
			continue
		}
		if key == "data" {
			continue
		}
		v, _, err := str(key)
		if err != nil {
			return err
		}
		fields[key] = v
	}
	if len(missing) > 0 {
		return matrix.MissingParam("Missing params: %s", strings.Join(missing, ", "))
	}
	profileTag, _, err := str("profile_tag")
	if err != nil {
		return err
	}
	var data map[string]json.RawMessage
	if json.Unmarshal(body["data"], &data) != nil || data == nil {
		return matrix.BadJSON("data must be an object")
	}
	appendToOthers := false
	if raw, ok := body["append"]; ok && json.Unmarshal(raw, &appendToOthers) != nil {
		return matrix.BadJSON("append must be a boolean")
	}
	if len(pushKey) > 512 {
		return matrix.InvalidParam("pushkey is longer than 512 bytes")
	}
	if utf8.RuneCountInString(appID) > 64 {
		return matrix.InvalidParam("app_id is longer than 64 characters")
	}
	switch kind := fields["kind"]; kind {
	case "http":
		var u string
		if raw, ok := data["url"]; ok && json.Unmarshal(raw, &u) != nil {
			return matrix.MissingParam("Config Error: 'url' must be a string")
		}
		if err := push.CheckGatewayURL(u); err != nil {
			return matrix.MissingParam("Config Error: %v", err)
		}
	case "email":
		// As Synapse: the pushkey must be an address on the account.
		// Such pushers are kept and listed; Hearth sends no
		// notification emails (Synapse's email.enable_notifs off).
		canon, err := canonicalEmail(pushKey)
		owner := ""
		if err == nil {
			if owner, err = s.store.ThreePIDUser(ctx, "email", canon); err != nil && !errors.Is(err, storage.ErrNotFound) {
				return err
			}
		}
		if owner != me.UserID {
			return &matrix.Error{Code: "M_THREEPID_NOT_FOUND", Msg: "Email not found", Status: http.StatusBadRequest}
		}
	default:
		return matrix.InvalidParam("unknown pusher kind %q (http or email)", kind)
	}
	pos, err := s.store.MaxStreamPos(ctx)
	if err != nil {
		return err
	}
	p := &storage.Pusher{UserID: me.UserID, DeviceID: me.DeviceID, Kind: fields["kind"], AppID: appID, PushKey: pushKey,
		PushKeyTS: s.now().UnixMilli(), AppDisplayName: fields["app_display_name"], DeviceDisplayName: fields["device_display_name"],
		ProfileTag: profileTag, Lang: fields["lang"], Data: string(body["data"]), LastStreamOrdering: pos}
	removed, err := s.store.SetPusher(ctx, p, appendToOthers)
	if err != nil {
		return err
	}
	for _, u := range append(removed, me.UserID) {
		s.pushers.Changed(ctx, u)
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

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
