package rooms

import (
	"encoding/json/jsontext"
	"encoding/json/v2"
	"errors"
	"fmt"
	"slices"
)

// createRoom presets (client-server API POST /createRoom).
const (
	PresetPrivateChat        = "private_chat"
	PresetTrustedPrivateChat = "trusted_private_chat"
	PresetPublicChat         = "public_chat"
)

// InitialStateEvent is one entry of createRoom's initial_state.
type InitialStateEvent struct {
	Type     string         `json:"type"`
	StateKey string         `json:"state_key"`
	Content  jsontext.Value `json:"content"`
}

// CreateRoomRequest is what the createRoom endpoint has parsed and
// validated from the request (alias local part already turned into a full
// alias by the caller, which also reserves it in the directory).
type CreateRoomRequest struct {
	Version *RoomVersion
	// RoomID is "!opaque:server" for v1–11; must be empty for v12.
	RoomID  string
	Creator string
	// Preset; if empty, public_chat when Visibility is "public", else private_chat.
	Preset     string
	Visibility string
	// CanonicalAlias is the full alias from room_alias_name ("" for none).
	CanonicalAlias string
	Name, Topic    string
	Invite         []string
	// RemoteInvite are invitees of other servers: invitees like Invite
	// for the preset's power levels and v12's additional creators, but
	// with no invite event here, since their server must sign the invite
	// first (the caller sends it through federation once the room exists).
	RemoteInvite []string
	IsDirect     bool
	// CreationContent is merged into the m.room.create content
	// (room_version and, before v11, creator are set by the server).
	CreationContent map[string]jsontext.Value
	// PowerLevelOverride is power_level_content_override, merged at the top level.
	PowerLevelOverride map[string]jsontext.Value
	InitialState       []InitialStateEvent
	// CreatorJoin is the content of the creator's join (displayname and
	// avatar_url, as for any join); membership is set here.
	CreatorJoin map[string]any
}

// DefaultPowerLevels returns the default m.room.power_levels content for a
// new room (before power_level_content_override). The levels follow
// Synapse's defaults; for v12 creators are not listed (they have infinite
// power) and m.room.tombstone is set above state_default, as the spec's
// createRoom requires.
func DefaultPowerLevels(rv *RoomVersion, creator, preset string, invitees []string) map[string]any {
	users := map[string]int64{}
	if !rv.PrivilegedCreators {
		users[creator] = 100
		if preset == PresetTrustedPrivateChat {
			for _, u := range invitees {
				users[u] = 100
			}
		}
	}
	tombstone := int64(100)
	if rv.PrivilegedCreators {
		tombstone = 150
	}
	invite := int64(50)
	if preset == PresetPrivateChat || preset == PresetTrustedPrivateChat {
		invite = 0
	}
	return map[string]any{
		"users":          users,
		"users_default":  0,
		"events_default": 0,
		"state_default":  50,
		"ban":            50,
		"kick":           50,
		"redact":         50,
		"invite":         invite,
		"events": map[string]int64{
			"m.room.name":               50,
			"m.room.avatar":             50,
			"m.room.topic":              50,
			"m.room.canonical_alias":    50,
			"m.room.power_levels":       100,
			"m.room.history_visibility": 100,
			"m.room.encryption":         100,
			"m.room.server_acl":         100,
			"m.room.tombstone":          tombstone,
		},
		"notifications": map[string]int64{"room": 50},
	}
}

func strp(s string) *string { return &s }

// initialState returns the last initial_state entry of type typ with an
// empty state key: the one that ends up in the room's state.
func initialState(is []InitialStateEvent, typ string) (InitialStateEvent, bool) {
	for i := len(is) - 1; i >= 0; i-- {
		if is[i].Type == typ && is[i].StateKey == "" {
			return is[i], true
		}
	}
	return InitialStateEvent{}, false
}

// CreateRoom builds the event sequence of POST /createRoom in the order the
// spec prescribes: create, the creator's join, power_levels, canonical_alias,
// the preset's join_rules/history_visibility/guest_access (can_join only),
// initial_state,
// name and topic, then invites. A preset event whose type initial_state
// sets is left out, and power_levels in initial_state is sent in the
// defaults' place. Every event is authorised as it is added.
// The returned builder holds the room's state and forward extremity.
func CreateRoom(req CreateRoomRequest, key SigningKey, now func() int64) ([]*Event, *RoomBuilder, error) {
	rv := req.Version
	if rv == nil {
		return nil, nil, errors.New("rooms: CreateRoom needs a room version")
	}
	if rv.RoomIDFromCreateEvent != (req.RoomID == "") {
		return nil, nil, fmt.Errorf("rooms: room version %s: room ID must %s be chosen by the server", rv.ID, map[bool]string{true: "not", false: ""}[rv.RoomIDFromCreateEvent])
	}
	preset := req.Preset
	if preset == "" {
		preset = PresetPrivateChat
		if req.Visibility == "public" {
			preset = PresetPublicChat
		}
	}
	var joinRule, guestAccess string
	switch preset {
	case PresetPrivateChat, PresetTrustedPrivateChat:
		joinRule, guestAccess = JoinRuleInvite, "can_join"
	case PresetPublicChat:
		// No m.room.guest_access event: its absence forbids guests, and
		// Synapse sends none for this preset either.
		joinRule = JoinRulePublic
	default:
		return nil, nil, fmt.Errorf("rooms: unknown preset %q", preset)
	}

	b := NewRoomBuilder(rv, req.RoomID, key)
	b.Now = now
	var events []*Event
	add := func(typ string, stateKey *string, sender string, content any) error {
		e, err := b.Append(typ, stateKey, sender, content)
		if err != nil {
			return fmt.Errorf("rooms: createRoom %s: %w", typ, err)
		}
		events = append(events, e)
		return nil
	}

	createContent := map[string]any{}
	for k, v := range req.CreationContent {
		createContent[k] = v
	}
	createContent["room_version"] = rv.ID
	if rv.CreatorInContent {
		createContent["creator"] = req.Creator
	} else {
		delete(createContent, "creator")
	}
	invitees := append(slices.Clone(req.Invite), req.RemoteInvite...)
	if rv.PrivilegedCreators && preset == PresetTrustedPrivateChat && len(invitees) > 0 {
		var extra []string
		if raw, ok := req.CreationContent["additional_creators"]; ok {
			if err := json.Unmarshal(raw, &extra); err != nil {
				return nil, nil, fmt.Errorf("rooms: additional_creators: %w", err)
			}
		}
		for _, u := range invitees {
			if u != req.Creator && !slices.Contains(extra, u) {
				extra = append(extra, u)
			}
		}
		createContent["additional_creators"] = extra
	}
	if err := add(TypeCreate, strp(""), req.Creator, createContent); err != nil {
		return nil, nil, err
	}
	join := map[string]any{}
	for k, v := range req.CreatorJoin {
		join[k] = v
	}
	join["membership"] = MembershipJoin
	if err := add(TypeMember, strp(req.Creator), req.Creator, join); err != nil {
		return nil, nil, err
	}
	// Power levels in initial_state replace the defaults and the override
	// and take the defaults' place, as in Synapse: a room upgrade carries
	// the old room's levels this way, and the creator must have them
	// before the rest of the state is sent.
	var pl any
	if is, ok := initialState(req.InitialState, TypePowerLevels); ok {
		pl = is.Content
	} else {
		def := DefaultPowerLevels(rv, req.Creator, preset, invitees)
		for k, v := range req.PowerLevelOverride {
			def[k] = v
		}
		pl = def
	}
	if err := add(TypePowerLevels, strp(""), req.Creator, pl); err != nil {
		return nil, nil, err
	}
	if req.CanonicalAlias != "" {
		if err := add(TypeCanonicalAlias, strp(""), req.Creator, map[string]any{"alias": req.CanonicalAlias}); err != nil {
			return nil, nil, err
		}
	}
	presetEvents := []struct {
		typ     string
		content map[string]any
	}{
		{TypeJoinRules, map[string]any{"join_rule": joinRule}},
		{TypeHistoryVis, map[string]any{"history_visibility": "shared"}},
		{TypeGuestAccess, map[string]any{"guest_access": guestAccess}},
	}
	for _, pe := range presetEvents {
		if pe.typ == TypeGuestAccess && guestAccess == "" {
			// A room without the event is closed to guests (spec: "Guest
			// Access"): other servers' view of a room's first events is
			// then the same as of a Synapse room.
			continue
		}
		if _, set := initialState(req.InitialState, pe.typ); set {
			continue // initial_state sets it (Synapse sends only that one)
		}
		if err := add(pe.typ, strp(""), req.Creator, pe.content); err != nil {
			return nil, nil, err
		}
	}
	for _, is := range req.InitialState {
		if (is.Type == TypeName && req.Name != "") || (is.Type == TypeTopic && req.Topic != "") {
			continue // overwritten by name/topic
		}
		if is.Type == TypePowerLevels && is.StateKey == "" {
			continue // sent in the defaults' place above
		}
		if err := add(is.Type, strp(is.StateKey), req.Creator, is.Content); err != nil {
			return nil, nil, err
		}
	}
	if req.Name != "" {
		if err := add(TypeName, strp(""), req.Creator, map[string]any{"name": req.Name}); err != nil {
			return nil, nil, err
		}
	}
	if req.Topic != "" {
		topic := map[string]any{
			"topic":   req.Topic,
			"m.topic": map[string]any{"m.text": []map[string]string{{"body": req.Topic, "mimetype": "text/plain"}}},
		}
		if err := add(TypeTopic, strp(""), req.Creator, topic); err != nil {
			return nil, nil, err
		}
	}
	for _, u := range req.Invite {
		c := map[string]any{"membership": MembershipInvite}
		if req.IsDirect {
			c["is_direct"] = true
		}
		if err := add(TypeMember, strp(u), req.Creator, c); err != nil {
			return nil, nil, err
		}
	}
	return events, b, nil
}
