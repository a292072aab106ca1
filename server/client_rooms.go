package server

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/json/jsontext"
	"errors"
	"net/http"
	"slices"
	"strings"

	"hearth/server/matrix"
	"hearth/server/rooms"
	"hearth/server/secret"
	"hearth/server/storage"
)

// roomIDParam reads {roomId} and checks its shape.
func roomIDParam(r *http.Request) (string, error) {
	id, err := pathParam(r, "roomId")
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(id, "!") || len(id) > 255 {
		return "", matrix.InvalidParam("%q is not a room ID", id)
	}
	return id, nil
}

// POST /_matrix/client/v3/createRoom
func (s *Server) postCreateRoom(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	var req struct {
		Visibility         string                     `json:"visibility"`
		RoomAliasName      string                     `json:"room_alias_name"`
		Name               string                     `json:"name"`
		Topic              string                     `json:"topic"`
		Invite             []string                   `json:"invite"`
		RoomVersion        string                     `json:"room_version"`
		CreationContent    map[string]json.RawMessage `json:"creation_content"`
		InitialState       []json.RawMessage          `json:"initial_state"`
		Preset             string                     `json:"preset"`
		IsDirect           bool                       `json:"is_direct"`
		PowerLevelOverride map[string]json.RawMessage `json:"power_level_content_override"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	version := req.RoomVersion
	if version == "" {
		version = s.cfg.DefaultRoomVersion
	}
	rv, ok := rooms.LookupVersion(version)
	if !ok {
		return &matrix.Error{Code: "M_UNSUPPORTED_ROOM_VERSION", Msg: "room version " + version + " is not supported"}
	}
	if rv.PrivilegedCreators {
		if _, err := parseAdditionalCreators(req.CreationContent["additional_creators"], "creation_content.additional_creators"); err != nil {
			return err
		}
	}
	switch req.Visibility {
	case "", "private", "public":
	default:
		return matrix.InvalidParam("visibility must be public or private")
	}
	switch req.Preset {
	case "", rooms.PresetPrivateChat, rooms.PresetPublicChat, rooms.PresetTrustedPrivateChat:
	default:
		return matrix.InvalidParam("unknown preset %q", req.Preset)
	}
	for _, u := range req.Invite {
		if _, _, ok := matrix.SplitUserID(u); !ok {
			return matrix.InvalidParam("%q is not a user ID", u)
		}
		if s.isLocalUser(u) {
			if err := s.checkInviteBlocked(r.Context(), u, me.UserID); err != nil {
				return err
			}
		}
	}
	alias := ""
	if req.RoomAliasName != "" {
		if strings.ContainsAny(req.RoomAliasName, ":# \x00") {
			return matrix.InvalidParam("room_alias_name may not contain ':', '#' or whitespace")
		}
		alias = "#" + req.RoomAliasName + ":" + s.cfg.ServerName
		if len(alias) > 255 {
			return matrix.InvalidParam("room alias is longer than 255 bytes")
		}
		if _, _, err := s.store.AliasRoom(r.Context(), alias); err == nil {
			return &matrix.Error{Code: "M_ROOM_IN_USE", Msg: "room alias already taken"}
		}
	}
	join, err := s.memberContent(r.Context(), rooms.MembershipJoin, me.UserID, "")
	if err != nil {
		return err
	}
	// Users of other servers are invited once the room exists, through
	// their servers (which must sign their invites).
	var local, remote []string
	for _, u := range req.Invite {
		if s.isLocalUser(u) {
			local = append(local, u)
		} else if !slices.Contains(remote, u) {
			remote = append(remote, u)
		}
	}
	cr := rooms.CreateRoomRequest{Version: rv, Creator: me.UserID, CreatorJoin: join, Preset: req.Preset, Visibility: req.Visibility,
		CanonicalAlias: alias, Name: req.Name, Topic: req.Topic, Invite: local, RemoteInvite: remote, IsDirect: req.IsDirect,
		CreationContent: toJSONText(req.CreationContent), PowerLevelOverride: toJSONText(req.PowerLevelOverride)}
	for i, raw := range req.InitialState {
		var is struct {
			Type     string          `json:"type"`
			StateKey *string         `json:"state_key"`
			Content  json.RawMessage `json:"content"`
		}
		if err := json.Unmarshal(raw, &is); err != nil || is.Type == "" || !isJSONObject(is.Content) {
			return matrix.BadJSON("initial_state[%d] must have a type and an object content", i)
		}
		sk := ""
		if is.StateKey != nil {
			sk = *is.StateKey
		}
		cr.InitialState = append(cr.InitialState, rooms.InitialStateEvent{Type: is.Type, StateKey: sk, Content: jsontext.Value(is.Content)})
	}
	roomID, err := s.createRoom(r.Context(), cr, req.Visibility == "public")
	if err != nil {
		return err
	}
	// A room made by hand to replace another (creation_content's
	// predecessor, then a tombstone in the old room): the creator joined
	// it, and takes their settings for the old room along, as any local
	// user who joins it does.
	s.joinedUpgradedRoom(r.Context(), me.UserID, roomID)
	if alias != "" {
		if err := s.store.CreateAlias(r.Context(), alias, roomID, me.UserID); errors.Is(err, storage.ErrConflict) {
			return &matrix.Error{Code: "M_ROOM_IN_USE", Msg: "room alias already taken"}
		} else if err != nil {
			return err
		}
	}
	for _, u := range remote {
		content, err := s.memberContent(r.Context(), rooms.MembershipInvite, u, "")
		if err != nil {
			return err
		}
		if req.IsDirect {
			content["is_direct"] = true
		}
		// The room exists whatever happens to an invite: a server that
		// cannot be reached or refuses costs its users their invite, not
		// the creator the room (Synapse fails the request instead, with
		// the room made all the same).
		if err := s.inviteRemote(r.Context(), roomID, me.UserID, u, content); err != nil {
			s.log.Warn("createRoom: invite of a user of another server failed", "room_id", roomID, "user_id", u, "err", err)
		}
	}
	resp := map[string]string{"room_id": roomID}
	if alias != "" {
		resp["room_alias"] = alias
	}
	return writeJSON(w, http.StatusOK, resp)
}

// createRoom builds a room's first events (rooms.CreateRoom) and persists
// them through the timeline: the one path for POST /createRoom, room
// upgrades and the rooms the server makes itself (server notices, the room
// a deleted room's users move to). public lists the room in the directory.
// Initial events the auth rules refuse are the request's fault: 400.
func (s *Server) createRoom(ctx context.Context, cr rooms.CreateRoomRequest, public bool) (string, error) {
	if !cr.Version.RoomIDFromCreateEvent {
		cr.RoomID = "!" + secret.FromAlphabet("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", 18) + ":" + s.cfg.ServerName
	}
	events, b, err := rooms.CreateRoom(cr, s.roomsKey(), func() int64 { return s.now().UnixMilli() })
	var authErr *rooms.AuthError
	switch {
	case errors.As(err, &authErr):
		return "", matrix.InvalidParam("the room's initial events are not valid: %s", authErr.Reason)
	case errors.Is(err, rooms.ErrEventTooLarge):
		return "", matrix.TooLarge("%v", err)
	case err != nil:
		return "", matrix.BadJSON("cannot create room: %v", err)
	}
	room := &storage.Room{RoomID: b.RoomID, RoomVersion: cr.Version.ID, Creator: cr.Creator, IsPublic: public}
	if err := s.timeline.CreateRoom(ctx, room, events, b); err != nil {
		return "", err
	}
	return room.RoomID, nil
}

func toJSONText(m map[string]json.RawMessage) map[string]jsontext.Value {
	if m == nil {
		return nil
	}
	out := make(map[string]jsontext.Value, len(m))
	for k, v := range m {
		out[k] = jsontext.Value(v)
	}
	return out
}

func isJSONObject(raw []byte) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && raw[0] == '{'
}

// withoutKey is the JSON object content without key.
func withoutKey(content json.RawMessage, key string) (json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(content, &m); err != nil {
		return nil, matrix.BadJSON("content must be a JSON object")
	}
	if _, ok := m[key]; !ok {
		return content, nil
	}
	delete(m, key)
	return json.Marshal(m)
}

// decodeContent reads an event content body: any JSON object. The body
// is the content as it came: the event it goes into is made canonical
// JSON whole when it is signed (rooms.signObject), so decoding it into a
// map and encoding it again here only did that work twice (4% of the
// server's CPU sending messages). A body with a member name twice is the
// exception: the event keeps the last, as encoding/json (and Synapse's
// parser) read it.
func decodeContent(r *http.Request) (json.RawMessage, error) {
	body, err := readJSONObject(r)
	if err != nil {
		return nil, err
	}
	if jsontext.Value(body).IsValid() { // no name twice (nor invalid UTF-8)
		return body, nil
	}
	var content map[string]json.RawMessage // carried: NUL characters and all
	if err := json.Unmarshal(body, &content); err != nil {
		return nil, matrix.BadJSON("invalid JSON: %v", err)
	}
	return json.Marshal(content)
}

// validateEventFields applies the spec's size limits on type and state_key.
func validateEventFields(typ string, stateKey *string) error {
	if typ == "" || len(typ) > 255 {
		return matrix.BadJSON("event type must be 1 to 255 bytes")
	}
	if stateKey != nil && len(*stateKey) > 255 {
		return matrix.BadJSON("state_key must be at most 255 bytes")
	}
	return nil
}

// txnScope is the scope a client transaction ID is unique in: the
// endpoint (send, or redact) and the room.
func txnScope(eventType, roomID string) string {
	if eventType == rooms.TypeRedaction {
		return "redact " + roomID
	}
	return "send " + roomID
}

// sendOne sends one event and maps a lost transaction-ID race to the event
// the first request made.
func (s *Server) sendOne(ctx context.Context, roomID string, ne newEvent) (string, error) {
	if ne.Device != nil && ne.TxnID != "" {
		id, mark, err := s.timeline.EventIDByTxn(ctx, ne.Sender, ne.Device.DeviceID, txnScope(ne.Type, roomID), ne.TxnID)
		if err == nil {
			return id, nil
		}
		if errors.Is(err, storage.ErrNotFound) {
			ne.txnChecked = mark
		}
	}
	evs, err := s.sendEvents(ctx, roomID, ne)
	if errors.Is(err, storage.ErrConflict) && ne.Device != nil && ne.TxnID != "" {
		return s.store.EventIDByTxn(ctx, ne.Sender, ne.Device.DeviceID, txnScope(ne.Type, roomID), ne.TxnID)
	}
	if err != nil {
		return "", err
	}
	return evs[0].EventID, nil
}

// PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}
func (s *Server) putSendEvent(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	typ, err := pathParam(r, "eventType")
	if err != nil {
		return err
	}
	txnID, err := pathParam(r, "txnId")
	if err != nil {
		return err
	}
	if err := validateEventFields(typ, nil); err != nil {
		return err
	}
	content, err := decodeContent(r)
	if err != nil {
		return err
	}
	if err := s.suspendedMaySend(r.Context(), me, roomID, typ, nil, content); err != nil {
		return err
	}
	if delay, ok, err := delayParam(r); err != nil {
		return err
	} else if ok {
		return s.scheduleDelayed(w, r, roomID, typ, nil, content, txnID, delay)
	}
	id, err := s.sendOne(r.Context(), roomID, newEvent{Type: typ, Sender: me.UserID, Content: jsontext.Value(content), Device: me, TxnID: txnID})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]string{"event_id": id})
}

// PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}
func (s *Server) putStateEvent(w http.ResponseWriter, r *http.Request) error {
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
	if err := validateEventFields(typ, &stateKey); err != nil {
		return err
	}
	content, err := decodeContent(r)
	if err != nil {
		return err
	}
	if err := s.suspendedMaySend(r.Context(), me, roomID, typ, &stateKey, content); err != nil {
		return err
	}
	if delay, ok, err := delayParam(r); err != nil {
		return err
	} else if ok {
		return s.scheduleDelayed(w, r, roomID, typ, &stateKey, content, "", delay)
	}
	id, err := s.setState(r.Context(), me, roomID, typ, stateKey, content, "")
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]string{"event_id": id})
}

// setState sends a state event for me, as PUT /state does (and a delayed
// state event when due). txnID, when set, makes the send idempotent under
// the delayed-event scope (delayed_events.go).
func (s *Server) setState(ctx context.Context, me *Device, roomID, typ, stateKey string, content json.RawMessage, txnID string) (string, error) {
	var err error
	// m.room.member needs no check here: the spec allows setting a
	// membership through this endpoint too, and the auth rules decide, as
	// they do behind the membership endpoints. Its
	// join_authorised_via_users_server is the server's to set, on a
	// restricted join it authorises, and the authorising user's server must
	// sign the event: one a client sent would make a join every other
	// server refuses (for want of that signature), so it is dropped, as
	// Synapse does and as the membership endpoints do.
	if typ == rooms.TypeMember {
		if content, err = withoutKey(content, "join_authorised_via_users_server"); err != nil {
			return "", err
		}
	}
	if typ == rooms.TypeCanonicalAlias {
		if err := s.checkCanonicalAlias(ctx, roomID, content); err != nil {
			return "", err
		}
	}
	// Setting state to what it already is makes no new event (Synapse
	// answers with the existing event's ID).
	if cur, err := s.store.CurrentStateEvent(ctx, roomID, typ, stateKey); err == nil && cur.Sender == me.UserID {
		var p pduFields
		if json.Unmarshal(cur.JSON, &p) == nil && jsonEqual(p.Content, content) {
			return cur.EventID, nil
		}
	}
	ne := newEvent{Type: typ, StateKey: &stateKey, Sender: me.UserID, Content: jsontext.Value(content), Device: me}
	if txnID != "" {
		return s.sendDelayedOnce(ctx, roomID, ne, txnID)
	}
	evs, err := s.sendEvents(ctx, roomID, ne)
	if err != nil {
		return "", err
	}
	return evs[0].EventID, nil
}

// checkCanonicalAlias applies the spec's rule for m.room.canonical_alias:
// every alias named must point at this room (400 M_BAD_ALIAS otherwise).
// Aliases on other servers cannot be checked without federation and are
// accepted.
func (s *Server) checkCanonicalAlias(ctx context.Context, roomID string, content []byte) error {
	var c struct {
		Alias      *string  `json:"alias"`
		AltAliases []string `json:"alt_aliases"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return matrix.BadJSON("m.room.canonical_alias content: %v", err)
	}
	check := c.AltAliases
	if c.Alias != nil && *c.Alias != "" {
		check = append(check, *c.Alias)
	}
	for _, a := range check {
		if !strings.HasPrefix(a, "#") || !strings.Contains(a, ":") {
			return matrix.InvalidParam("%q is not a room alias", a)
		}
		if a[strings.LastIndex(a, ":")+1:] != s.cfg.ServerName && !strings.HasSuffix(a, ":"+s.cfg.ServerName) {
			continue
		}
		target, _, err := s.store.AliasRoom(ctx, a)
		if err != nil || target != roomID {
			return &matrix.Error{Code: "M_BAD_ALIAS", Msg: "alias " + a + " does not point to this room"}
		}
	}
	return nil
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}

// PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}
func (s *Server) putRedact(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	target, err := pathParam(r, "eventId")
	if err != nil {
		return err
	}
	txnID, err := pathParam(r, "txnId")
	if err != nil {
		return err
	}
	var req struct {
		Reason *string `json:"reason"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	ctx := r.Context()
	te, err := s.store.EventByID(ctx, target)
	if err == nil && te.RoomID != roomID {
		return matrix.NotFound("event not found")
	}
	if errors.Is(err, storage.ErrNotFound) {
		// An event this server does not have (yet): the redaction still
		// goes to the room, for the servers that have it, from a user
		// who may redact anyone's events (whose event it is is unknown).
		if !strings.HasPrefix(target, "$") {
			return matrix.InvalidParam("%q is not an event ID", target)
		}
		te, err = nil, nil
	}
	if err != nil {
		return err
	}
	room, err := s.store.RoomByID(ctx, roomID)
	if err != nil {
		return err
	}
	rv, _ := rooms.LookupVersion(room.RoomVersion)
	// Only the sender or someone with the redact level may redact (the
	// auth rules accept the redaction event itself more widely: the
	// server decides whether it applies).
	if (te == nil || te.Sender != me.UserID) && me.Suspended {
		return errUserSuspended("redact other users' events")
	}
	if te == nil || te.Sender != me.UserID {
		allowed, err := s.hasPowerFor(ctx, roomID, me.UserID, "redact")
		if err != nil {
			return err
		}
		if !allowed {
			return matrix.Forbidden("you may not redact other users' events")
		}
	}
	content := map[string]any{}
	if req.Reason != nil {
		content["reason"] = *req.Reason
	}
	if rv.RedactsInContent {
		content["redacts"] = target
	}
	ne := newEvent{Type: rooms.TypeRedaction, Sender: me.UserID, Content: content, Device: me, TxnID: txnID}
	if id, _, err := s.timeline.EventIDByTxn(ctx, me.UserID, me.DeviceID, txnScope(rooms.TypeRedaction, roomID), txnID); err == nil {
		return writeJSON(w, http.StatusOK, map[string]string{"event_id": id})
	}
	evs, err := s.sendRedaction(ctx, roomID, ne, target, te)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]string{"event_id": evs.EventID})
}

// sendRedaction sends a redaction of targetID and applies it to its
// target in the store, when this server has it (target is nil otherwise). A redacted state event changes what the auth rules see, so the
// room's cached builder is dropped and reloaded from the redacted events.
func (s *Server) sendRedaction(ctx context.Context, roomID string, ne newEvent, targetID string, target *storage.Event) (*storage.Event, error) {
	room, err := s.store.RoomByID(ctx, roomID)
	if err != nil {
		return nil, err
	}
	rv, _ := rooms.LookupVersion(room.RoomVersion)
	if !rv.RedactsInContent {
		// Before v11 redacts is a top-level key, which the builder sets from content.
		if m, ok := ne.Content.(map[string]any); ok {
			m["redacts"] = targetID
		}
	}
	evs, err := s.sendEvents(ctx, roomID, ne)
	if err != nil {
		return nil, err
	}
	if target == nil {
		// Not here: nothing to redact locally.
		return evs[0], nil
	}
	redacted, err := rooms.Redact(rv, target.JSON)
	if err != nil {
		return nil, err
	}
	if err := s.store.RedactEvent(ctx, target.EventID, evs[0].EventID, redacted); err != nil {
		return nil, err
	}
	if target.IsState() {
		// The room's head holds the state event as it was.
		s.timeline.Invalidate(roomID)
	}
	return evs[0], nil
}

// hasPowerFor reports whether user's power level in the room's current
// state reaches the named level ("redact", "kick", "ban", "invite").
func (s *Server) hasPowerFor(ctx context.Context, roomID, userID, level string) (bool, error) {
	create, err := s.store.CurrentStateEvent(ctx, roomID, rooms.TypeCreate, "")
	if err != nil {
		return false, err
	}
	room, err := s.store.RoomByID(ctx, roomID)
	if err != nil {
		return false, err
	}
	rv, _ := rooms.LookupVersion(room.RoomVersion)
	ce, err := rooms.ParseStored(rv, create.JSON, create.EventID)
	if err != nil {
		return false, err
	}
	var pe *rooms.Event
	if pl, err := s.store.CurrentStateEvent(ctx, roomID, rooms.TypePowerLevels, ""); err == nil {
		if pe, err = rooms.ParseStored(rv, pl.JSON, pl.EventID); err != nil {
			return false, err
		}
	} else if !errors.Is(err, storage.ErrNotFound) {
		return false, err
	}
	pls := rooms.EffectivePowerLevels(rv, pe, ce)
	need := map[string]int64{"redact": pls.Redact, "kick": pls.Kick, "ban": pls.Ban, "invite": pls.Invite}[level]
	return pls.UserLevel(userID) >= need, nil
}

// eventInRoomFor returns the live event eventID of roomID if userID may see
// it, else nil (/event and thread subscriptions answer 404 for both).
func (s *Server) eventInRoomFor(ctx context.Context, userID, roomID, eventID string) (*storage.Event, error) {
	e, err := s.store.EventByID(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && (e.RoomID != roomID || !e.Live())) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return s.visibleEvent(ctx, userID, e)
}

// GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}
func (s *Server) getRoomEvent(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	eventID, err := pathParam(r, "eventId")
	if err != nil {
		return err
	}
	e, err := s.eventInRoomFor(r.Context(), me.UserID, roomID, eventID)
	if err != nil {
		return err
	}
	if e == nil {
		return matrix.NotFound("event not found")
	}
	f := s.formatterFor(me)
	out, err := f.format(r.Context(), []*storage.Event{e})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, out[0])
}

// GET /_matrix/client/v3/joined_rooms
func (s *Server) getJoinedRooms(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	rs, err := s.store.RoomsOfUser(r.Context(), me.UserID, rooms.MembershipJoin)
	if err != nil {
		return err
	}
	ids := make([]string, 0, len(rs))
	for _, m := range rs {
		ids = append(ids, m.RoomID)
	}
	return writeJSON(w, http.StatusOK, map[string][]string{"joined_rooms": ids})
}
