package rooms

import (
	"slices"
	"strconv"
)

// EventIDFormat is how a room version derives event IDs.
type EventIDFormat int

const (
	// EventIDRandom is the v1/v2 format "$opaque:server"; the ID travels in
	// the PDU's event_id field.
	EventIDRandom EventIDFormat = iota
	// EventIDHashBase64 is v3's "$" + unpadded standard base64 of the
	// reference hash.
	EventIDHashBase64
	// EventIDHashURLSafe is v4+'s "$" + unpadded URL-safe base64 of the
	// reference hash.
	EventIDHashURLSafe
)

// RedactionRules selects the redaction algorithm.
type RedactionRules int

const (
	// RedactV1 is the algorithm of room versions 1–5 (m.room.aliases keeps aliases).
	RedactV1 RedactionRules = iota
	// RedactV6 drops the aliases exception (v6, v7).
	RedactV6
	// RedactV8 keeps join_rules.allow (v8).
	RedactV8
	// RedactV9 also keeps member join_authorised_via_users_server (v9, v10).
	RedactV9
	// RedactV11 is the v11 algorithm (v11 and v12): all of create content,
	// power_levels.invite, redaction.redacts, third_party_invite.signed; no
	// origin/membership/prev_state top-level keys.
	RedactV11
)

// StateResAlgorithm names the state resolution algorithm of a room version.
type StateResAlgorithm string

const (
	StateResV1  StateResAlgorithm = "v1"
	StateResV2  StateResAlgorithm = "v2"
	StateResV21 StateResAlgorithm = "v2.1"
)

// RoomVersion describes the behaviour that differs between room versions
// (https://spec.matrix.org/v1.19/rooms/).
type RoomVersion struct {
	ID        string
	Stable    bool
	EventIDs  EventIDFormat
	Redaction RedactionRules
	StateRes  StateResAlgorithm

	// SpecialCasedAliases: v1–5 auth rule for m.room.aliases (state_key must be the sender's domain).
	SpecialCasedAliases bool
	// RedactionAuthRule: v1–2 auth rule for m.room.redaction (redact level or same-domain).
	RedactionAuthRule bool
	// EnforceKeyValidity: v5+ signing keys must be valid at origin_server_ts.
	EnforceKeyValidity bool
	// StrictCanonicalJSON: v6+ rejects floats and out-of-range integers.
	StrictCanonicalJSON bool
	// NotificationsPowerLevels: v6+ validates power_levels.notifications.
	NotificationsPowerLevels bool
	// Knocking: v7+ knock join rule and membership.
	Knocking bool
	// RestrictedJoins: v8+ restricted join rule, join_authorised_via_users_server.
	RestrictedJoins bool
	// KnockRestricted: v10+ knock_restricted join rule.
	KnockRestricted bool
	// IntegerPowerLevels: v10+ power level values must be JSON integers.
	IntegerPowerLevels bool
	// CreatorInContent: v1–10 m.room.create content.creator is required and
	// names the creator; v11+ uses the create event's sender.
	CreatorInContent bool
	// RedactsInContent: v11+ m.room.redaction carries redacts in content.
	RedactsInContent bool
	// PrivilegedCreators: v12 creators (sender + additional_creators) have
	// infinite power and must not appear in power_levels.users.
	PrivilegedCreators bool
	// RoomIDFromCreateEvent: v12 room ID is "!" + the create event's hash; the
	// create event has no room_id and is never selected as an auth event.
	RoomIDFromCreateEvent bool
}

var roomVersions = func() map[string]*RoomVersion {
	m := make(map[string]*RoomVersion, 12)
	for v := 1; v <= 12; v++ {
		rv := &RoomVersion{
			ID:                       strconv.Itoa(v),
			Stable:                   true,
			EventIDs:                 EventIDHashURLSafe,
			StateRes:                 StateResV2,
			SpecialCasedAliases:      v <= 5,
			RedactionAuthRule:        v <= 2,
			EnforceKeyValidity:       v >= 5,
			StrictCanonicalJSON:      v >= 6,
			NotificationsPowerLevels: v >= 6,
			Knocking:                 v >= 7,
			RestrictedJoins:          v >= 8,
			KnockRestricted:          v >= 10,
			IntegerPowerLevels:       v >= 10,
			CreatorInContent:         v <= 10,
			RedactsInContent:         v >= 11,
			PrivilegedCreators:       v >= 12,
			RoomIDFromCreateEvent:    v >= 12,
		}
		switch {
		case v <= 2:
			rv.EventIDs = EventIDRandom
		case v == 3:
			rv.EventIDs = EventIDHashBase64
		}
		switch {
		case v <= 5:
			rv.Redaction = RedactV1
		case v <= 7:
			rv.Redaction = RedactV6
		case v == 8:
			rv.Redaction = RedactV8
		case v <= 10:
			rv.Redaction = RedactV9
		default:
			rv.Redaction = RedactV11
		}
		switch {
		case v == 1:
			rv.StateRes = StateResV1
		case v >= 12:
			rv.StateRes = StateResV21
		}
		m[rv.ID] = rv
	}
	return m
}()

// DefaultRoomVersion is the version of new rooms when the configuration
// names none (config's default_room_version). The spec (v1.16 on) lets
// servers stay on 11 while version 12 spreads; Synapse and Tuwunel do,
// because a server that lacks version 12 cannot join its rooms.
const DefaultRoomVersion = "11"

// LookupVersion returns the room version with the given identifier, or
// nil and false when it is not known. An empty string is not accepted:
// callers handling legacy create events without room_version must pass "1".
func LookupVersion(id string) (*RoomVersion, bool) {
	rv, ok := roomVersions[id]
	return rv, ok
}

// MustVersion is LookupVersion for identifiers known at compile time.
func MustVersion(id string) *RoomVersion {
	rv, ok := roomVersions[id]
	if !ok {
		panic("rooms: unknown room version " + id)
	}
	return rv
}

// KnownVersions lists known room version identifiers in numeric order.
func KnownVersions() []string {
	out := make([]string, 0, len(roomVersions))
	for id := range roomVersions {
		out = append(out, id)
	}
	slices.SortFunc(out, func(a, b string) int {
		x, _ := strconv.Atoi(a)
		y, _ := strconv.Atoi(b)
		return x - y
	})
	return out
}

// RoomVersionsCapability is the value of the m.room_versions capability of
// GET /_matrix/client/v3/capabilities.
type RoomVersionsCapability struct {
	Default   string            `json:"default"`
	Available map[string]string `json:"available"`
}

// Capability returns the m.room_versions capability for a server whose
// new rooms get version def.
func Capability(def string) RoomVersionsCapability {
	c := RoomVersionsCapability{Default: def, Available: make(map[string]string, len(roomVersions))}
	for id, rv := range roomVersions {
		if rv.Stable {
			c.Available[id] = "stable"
		} else {
			c.Available[id] = "unstable"
		}
	}
	return c
}
