package server

import (
	"context"
	"encoding/json"
	"encoding/json/jsontext"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/tidwall/gjson"

	"hearth/server/matrix"
	"hearth/server/rooms"
	"hearth/server/storage"
	"hearth/server/timeline"
)

// Room upgrades (spec: Client-Server API, "Room Upgrades"), done the way
// Synapse does them: a new room is created through createRoom's code path
// with the old room's transferable state, bans are copied, local aliases
// and the directory listing move, the old room gets a tombstone and
// restricted power levels, and local members keep their tags and direct
// chat mapping for the new room.

// upgradeStateTypes are the state events copied to the new room: the
// spec's recommended list, in Synapse's order. A space also takes its
// children (upgradeSpaceChild).
var upgradeStateTypes = []string{rooms.TypeJoinRules, rooms.TypeName, rooms.TypeTopic, rooms.TypeHistoryVis,
	rooms.TypeGuestAccess, "m.room.avatar", rooms.TypeEncryption, "m.room.server_acl", rooms.TypePowerLevels}

const (
	typeTombstone      = "m.room.tombstone"
	roomTypeSpace      = "m.space"
	tombstoneBody      = "This room has been replaced"
	upgradeBanBatchLen = 100
)

// upgradeLocks keeps two upgrades of one room from running at once, as
// Synapse does: the second would tombstone the room again, pointing at a
// room of its own.
type upgradeLocks struct {
	mu    sync.Mutex
	rooms map[string]bool
}

func (u *upgradeLocks) start(roomID string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.rooms[roomID] {
		return false
	}
	if u.rooms == nil {
		u.rooms = map[string]bool{}
	}
	u.rooms[roomID] = true
	return true
}

func (u *upgradeLocks) done(roomID string) {
	u.mu.Lock()
	delete(u.rooms, roomID)
	u.mu.Unlock()
}

// POST /_matrix/client/v3/rooms/{roomId}/upgrade
func (s *Server) postRoomUpgrade(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	var req struct {
		NewVersion         *string         `json:"new_version"`
		AdditionalCreators json.RawMessage `json:"additional_creators"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.NewVersion == nil {
		return matrix.MissingParam("new_version is required")
	}
	rv, ok := rooms.LookupVersion(*req.NewVersion)
	if !ok {
		return &matrix.Error{Code: "M_UNSUPPORTED_ROOM_VERSION", Msg: "this server does not support room version " + *req.NewVersion}
	}
	var extra []string
	if rv.PrivilegedCreators {
		// Versions without additional creators ignore the field (spec).
		if extra, err = parseAdditionalCreators(req.AdditionalCreators, "additional_creators"); err != nil {
			return err
		}
	}
	newRoomID, err := s.upgradeRoom(r.Context(), me.UserID, roomID, rv, extra)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]string{"replacement_room": newRoomID})
}

// parseAdditionalCreators reads an additional_creators value: absent or
// null is none; anything but an array of strings is M_BAD_JSON, a string
// that is not a user ID M_INVALID_PARAM (spec v1.16, room version 12).
func parseAdditionalCreators(raw json.RawMessage, field string) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, matrix.BadJSON("%s must be an array of user IDs", field)
	}
	out := make([]string, 0, len(list))
	for _, item := range list {
		var u string
		if err := json.Unmarshal(item, &u); err != nil {
			return nil, matrix.BadJSON("%s must be an array of user IDs", field)
		}
		if !matrix.ValidUserID(u) {
			return nil, matrix.InvalidParam("%s: %q is not a valid user ID", field, u)
		}
		if !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out, nil
}

// upgradeRoom replaces roomID by a new room of version rv, created by
// userID, with extra as its additional creators (v12 on), and returns the
// new room's ID.
func (s *Server) upgradeRoom(ctx context.Context, userID, roomID string, rv *rooms.RoomVersion, extra []string) (string, error) {
	old, err := s.store.RoomByID(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return "", matrix.NotFound("unknown room %s", roomID)
	}
	if err != nil {
		return "", err
	}
	oldRV, ok := rooms.LookupVersion(old.RoomVersion)
	if !ok {
		return "", matrix.NotFound("unknown room %s", roomID)
	}
	if !s.upgrades.start(roomID) {
		return "", &matrix.Error{Code: "M_UNKNOWN", Status: http.StatusBadRequest, Msg: "an upgrade for this room is currently in progress"}
	}
	defer s.upgrades.done(roomID)
	// The caller must be allowed to send the tombstone (spec, step 1):
	// built on the room's head, not stored, so the auth rules decide
	// before anything is created.
	if _, err := s.timeline.Build(ctx, roomID, timeline.NewEvent{Type: typeTombstone, StateKey: new(string), Sender: userID,
		Content: map[string]any{"body": tombstoneBody, "replacement_room": ""}}); err != nil {
		return "", sendError(err)
	}
	// From here on the upgrade runs to its end even if the client goes
	// away: a new room without the old one's tombstone helps nobody.
	ctx = context.WithoutCancel(ctx)
	state, err := s.store.CurrentState(ctx, roomID)
	if err != nil {
		return "", err
	}
	byKey, err := s.upgradeStateEvents(ctx, state)
	if err != nil {
		return "", err
	}
	create := byKey[storage.StateKey{Type: rooms.TypeCreate}]
	if create == nil {
		return "", matrix.NotFound("unknown room %s", roomID)
	}
	createContent := contentOf(create.JSON)

	// The new room's create event: predecessor, room type and federation
	// flag carried over (spec, step 2), additional creators as asked.
	predecessor := map[string]any{"room_id": roomID}
	// event_id is "the last known event in the old room" (deprecated since
	// v1.16 but still to be set where practical).
	if exts, err := s.store.ForwardExtremities(ctx, roomID); err != nil {
		return "", err
	} else if len(exts) > 0 {
		predecessor["event_id"] = exts[0].EventID
	}
	creation := map[string]jsontext.Value{"predecessor": mustJSON(predecessor)}
	if t := gjson.GetBytes(createContent, "type"); t.Exists() {
		creation["type"] = jsontext.Value(t.Raw)
	}
	if f := gjson.GetBytes(createContent, `m\.federate`); f.Type == gjson.False {
		creation["m.federate"] = jsontext.Value("false")
	}
	extra = slices.DeleteFunc(extra, func(u string) bool { return u == userID })
	if len(extra) > 0 {
		creation["additional_creators"] = mustJSON(extra)
	}

	// Transferable state (spec, step 3), the power levels adjusted so the
	// upgrading user can send all of it.
	var initial []rooms.InitialStateEvent
	var finalPL map[string]any // the new room's levels once the copy is done
	for _, typ := range upgradeStateTypes {
		e := byKey[storage.StateKey{Type: typ}]
		if e == nil {
			continue
		}
		content := contentOf(e.JSON)
		if typ == rooms.TypePowerLevels {
			pl, final := upgradePowerLevels(oldRV, rv, content, userID, extra)
			content, finalPL = mustJSON(pl), final
		}
		initial = append(initial, rooms.InitialStateEvent{Type: typ, Content: jsontext.Value(content)})
	}
	if gjson.GetBytes(createContent, "type").String() == roomTypeSpace {
		// A space keeps its children; an emptied child event is a removed
		// child.
		for _, k := range slices.SortedFunc(maps.Keys(byKey), func(a, b storage.StateKey) int { return strings.Compare(a.StateKey, b.StateKey) }) {
			if e := byKey[k]; k.Type == typeSpaceChild && string(contentOf(e.JSON)) != "{}" {
				initial = append(initial, rooms.InitialStateEvent{Type: k.Type, StateKey: k.StateKey, Content: jsontext.Value(contentOf(e.JSON))})
			}
		}
	}
	newRoomID, err := s.createRoom(ctx, rooms.CreateRoomRequest{Version: rv, Creator: userID, Preset: rooms.PresetPrivateChat,
		CreationContent: creation, InitialState: initial}, old.IsPublic)
	if err != nil {
		return "", err
	}

	// Bans follow the room (Synapse copies them, with their reasons).
	if err := s.copyBans(ctx, roomID, newRoomID, userID, state); err != nil {
		return "", err
	}
	// The tombstone (spec, step 5).
	if _, err := s.sendEvents(ctx, roomID, newEvent{Type: typeTombstone, StateKey: new(string), Sender: userID,
		Content: map[string]any{"body": tombstoneBody, "replacement_room": newRoomID}}); err != nil {
		return "", err
	}
	// Local aliases and the canonical alias (spec, step 4), and the
	// directory listing.
	if err := s.moveAliases(ctx, roomID, newRoomID, userID, byKey[storage.StateKey{Type: rooms.TypeCanonicalAlias}]); err != nil {
		return "", err
	}
	if old.IsPublic {
		if err := s.store.SetRoomPublic(ctx, roomID, false); err != nil {
			return "", err
		}
	}
	// Local members keep their room settings.
	members, err := s.store.Members(ctx, roomID)
	if err != nil {
		return "", err
	}
	for u, m := range members {
		if m == rooms.MembershipJoin && s.isLocalUser(u) {
			if err := s.copyUserRoomSettings(ctx, u, roomID, newRoomID); err != nil {
				return "", err
			}
		}
	}
	// The old room: only moderators may speak or invite (spec, step 6).
	if pl := byKey[storage.StateKey{Type: rooms.TypePowerLevels}]; pl != nil {
		if restricted, changed := restrictPowerLevels(oldRV, contentOf(pl.JSON)); changed {
			if _, err := s.sendEvents(ctx, roomID, newEvent{Type: rooms.TypePowerLevels, StateKey: new(string), Sender: userID, Content: restricted}); err != nil {
				// The upgrade itself is done; a user who may send the
				// tombstone but not power levels keeps the old levels.
				logFrom(ctx, s.log).Warn("room upgrade: cannot restrict the old room's power levels", "room_id", roomID, "err", err)
			}
		}
	}
	// The new room: the copied levels without the upgrading user's
	// temporary raise.
	if finalPL != nil {
		if _, err := s.sendEvents(ctx, newRoomID, newEvent{Type: rooms.TypePowerLevels, StateKey: new(string), Sender: userID, Content: finalPL}); err != nil {
			return "", err
		}
	}
	return newRoomID, nil
}

// upgradeStateEvents loads the current state events an upgrade reads: the
// create event, the transferable state, the canonical alias, space
// children and bans.
func (s *Server) upgradeStateEvents(ctx context.Context, state map[storage.StateKey]string) (map[storage.StateKey]*storage.Event, error) {
	want := map[string]bool{rooms.TypeCreate: true, rooms.TypeCanonicalAlias: true, typeSpaceChild: true}
	for _, t := range upgradeStateTypes {
		want[t] = true
	}
	byID := map[string]storage.StateKey{}
	var ids []string
	for k, id := range state {
		if want[k.Type] && (k.StateKey == "" || k.Type == typeSpaceChild) {
			byID[id] = k
			ids = append(ids, id)
		}
	}
	evs, err := s.store.EventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[storage.StateKey]*storage.Event, len(evs))
	for _, e := range evs {
		out[byID[e.EventID]] = e
	}
	return out, nil
}

// upgradePowerLevels returns the power levels the new room is created
// with and, when they differ, the levels to set once the state is copied
// (nil otherwise). Both are the old room's levels, readable by the new
// version; in v12 on the creators are left out of users, as they must be;
// before v12 the upgrading user is raised, for the copy only, to the level
// that every copied event and ban needs (Synapse's rule).
func upgradePowerLevels(oldRV, newRV *rooms.RoomVersion, content []byte, userID string, extra []string) (initial, final map[string]any) {
	final = rooms.CopyPowerLevels(oldRV, content)
	users, _ := final["users"].(map[string]int64)
	if users == nil {
		users = map[string]int64{}
		final["users"] = users
	}
	if newRV.PrivilegedCreators {
		delete(users, userID)
		for _, u := range extra {
			delete(users, u)
		}
		return final, nil
	}
	level := func(key string, def int64) int64 {
		if n, ok := final[key].(int64); ok {
			return n
		}
		return def
	}
	need := max(level("state_default", 50), level("ban", 50))
	if events, ok := final["events"].(map[string]int64); ok {
		for _, n := range events {
			need = max(need, n)
		}
	}
	current, ok := users[userID]
	if !ok {
		current = level("users_default", 0)
	}
	if current >= need {
		return final, nil
	}
	initial = maps.Clone(final)
	raised := maps.Clone(users)
	raised[userID] = need
	initial["users"] = raised
	return initial, final
}

// restrictPowerLevels raises events_default and invite in the old room's
// levels to the greater of 50 and users_default+1 (spec, step 6), and
// reports whether anything changed.
func restrictPowerLevels(rv *rooms.RoomVersion, content []byte) (map[string]any, bool) {
	pl := rooms.CopyPowerLevels(rv, content)
	usersDefault, _ := pl["users_default"].(int64)
	restricted := max(usersDefault+1, 50)
	changed := false
	for _, key := range []string{"events_default", "invite"} {
		if n, _ := pl[key].(int64); n < restricted {
			pl[key] = restricted
			changed = true
		}
	}
	return pl, changed
}

// copyBans bans in the new room everyone banned from the old one, with the
// old ban's content (its reason).
func (s *Server) copyBans(ctx context.Context, oldRoom, newRoom, userID string, state map[storage.StateKey]string) error {
	var ids []string
	for k, id := range state {
		if k.Type == rooms.TypeMember {
			ids = append(ids, id)
		}
	}
	members, err := s.store.EventsByID(ctx, ids)
	if err != nil {
		return err
	}
	var bans []newEvent
	for _, e := range members {
		if e.Membership == rooms.MembershipBan && e.StateKey != nil {
			var c map[string]any
			if json.Unmarshal(contentOf(e.JSON), &c) != nil {
				c = map[string]any{"membership": rooms.MembershipBan}
			}
			bans = append(bans, newEvent{Type: rooms.TypeMember, StateKey: e.StateKey, Sender: userID, Content: c})
		}
	}
	for len(bans) > 0 {
		n := min(len(bans), upgradeBanBatchLen)
		sent, err := s.sendEvents(ctx, newRoom, bans[:n]...)
		var me *matrix.Error
		if errors.As(err, &me) && me.Code == "M_FORBIDDEN" {
			// A ban the upgrading user may not send (the banned user
			// outranks them) is left out; the batch goes on after it.
			logFrom(ctx, s.log).Warn("room upgrade: a ban is not copied", "room_id", newRoom, "user_id", *bans[len(sent)].StateKey, "err", err)
			bans = bans[len(sent)+1:]
			continue
		}
		if err != nil {
			return err
		}
		bans = bans[n:]
	}
	return nil
}

// moveAliases points the old room's local aliases at the new room, and
// moves the canonical alias event: emptied in the old room, copied to the
// new one (as Synapse does).
func (s *Server) moveAliases(ctx context.Context, oldRoom, newRoom, userID string, canonical *storage.Event) error {
	if canonical != nil && string(contentOf(canonical.JSON)) != "{}" {
		if _, err := s.sendEvents(ctx, oldRoom, newEvent{Type: rooms.TypeCanonicalAlias, StateKey: new(string), Sender: userID,
			Content: map[string]any{}}); err != nil {
			logFrom(ctx, s.log).Warn("room upgrade: cannot remove the old room's canonical alias", "room_id", oldRoom, "err", err)
		}
	}
	if err := s.store.MoveAliases(ctx, oldRoom, newRoom); err != nil {
		return err
	}
	if canonical != nil && string(contentOf(canonical.JSON)) != "{}" {
		if _, err := s.sendEvents(ctx, newRoom, newEvent{Type: rooms.TypeCanonicalAlias, StateKey: new(string), Sender: userID,
			Content: json.RawMessage(contentOf(canonical.JSON))}); err != nil {
			return err
		}
	}
	return nil
}

// copyUserRoomSettings carries a local user's settings for an upgraded
// room over to its replacement, as Synapse does on upgrade and when the
// user joins the new room: the room's tags (m.tag), its place in the
// direct chat mapping (m.direct), and the push rules about it
// (CopyPushRulesOnUpgrade, push.go).
func (s *Server) copyUserRoomSettings(ctx context.Context, userID, oldRoom, newRoom string) error {
	if err := s.CopyPushRulesOnUpgrade(ctx, userID, oldRoom, newRoom); err != nil {
		return err
	}
	changed := false
	direct, err := s.store.AccountDataContent(ctx, userID, "", "m.direct")
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	if direct != nil {
		var m map[string][]string
		if json.Unmarshal(direct, &m) == nil {
			for _, key := range slices.Sorted(maps.Keys(m)) {
				if slices.Contains(m[key], oldRoom) && !slices.Contains(m[key], newRoom) {
					if _, err := s.store.UpdateAccountData(ctx, userID, "", "m.direct", func(cur []byte) ([]byte, error) {
						var now map[string]any
						if json.Unmarshal(cur, &now) != nil || now == nil {
							now = map[string]any{}
						}
						list, _ := now[key].([]any)
						now[key] = append(list, newRoom)
						return json.Marshal(now)
					}); err != nil {
						return err
					}
					changed = true
					break
				}
			}
		}
	}
	tags, err := s.store.AccountDataContent(ctx, userID, oldRoom, "m.tag")
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	var old tagContent
	if tags != nil && json.Unmarshal(tags, &old) == nil && len(old.Tags) > 0 {
		if _, err := s.store.UpdateAccountData(ctx, userID, newRoom, "m.tag", func(cur []byte) ([]byte, error) {
			tc := tagContent{}
			if cur != nil {
				_ = json.Unmarshal(cur, &tc)
			}
			if tc.Tags == nil {
				tc.Tags = map[string]json.RawMessage{}
			}
			maps.Copy(tc.Tags, old.Tags)
			return json.Marshal(tc)
		}); err != nil {
			return err
		}
		changed = true
	}
	if changed {
		s.notifier.notifyUser(userID)
	}
	return nil
}

// copySettingsOnJoin runs copyUserRoomSettings when a local user has just
// joined a room that replaced another.
func (s *Server) copySettingsOnJoin(ctx context.Context, userID, roomID string) error {
	create, err := s.store.CurrentStateEvent(ctx, roomID, rooms.TypeCreate, "")
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	old := gjson.GetBytes(contentOf(create.JSON), "predecessor.room_id").String()
	if old == "" || old == roomID {
		return nil
	}
	return s.copyUserRoomSettings(ctx, userID, old, roomID)
}

// mustJSON encodes a value built here (maps, strings), which cannot fail.
func mustJSON(v any) jsontext.Value {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
