// Package rooms is Hearth's pure model of Matrix rooms: room versions 1–12,
// PDUs (building, hashing, signing, verifying, redacting), the
// authorisation rules, and state resolution v2/v2.1. It does no I/O.
//
// Room versions: LookupVersion / MustVersion return a *RoomVersion whose
// fields say how the version differs (event ID format, redaction rules,
// auth rule features, state resolution algorithm). DefaultRoomVersion is
// the default of config's default_room_version; Capability gives the
// m.room_versions capability.
//
// Events: an *Event is a PDU kept byte-for-byte as built or received, with
// parsed accessors. ParseEvent parses a received PDU (and computes its event
// ID); CheckReceived verifies signatures and returns the redacted event if
// the content hash does not match; BuildEvent makes a local event from an
// EventTemplate and a SigningKey; Redact/RedactEvent apply the version's
// redaction algorithm; ClientEvent gives the client-server format.
//
// Authorisation: AuthEventKeys is the spec's auth events selection;
// SelectAuthEvents picks those from a StateEvents map. Authorize applies
// the rules given the auth state; AuthorizeByAuthEvents checks an event
// against its own auth_events (including the rules on that list);
// AuthorizeAgainstState checks it against the state before it or the
// current state. Rejections are *AuthError (errors.Is ErrNotAuthorized)
// carrying the rule number and reason.
//
// Local rooms: RoomBuilder appends events to a room (prev_events, depth,
// auth_events, signing, authorisation); CreateRoom produces the whole
// POST /createRoom sequence for a preset. ResumeRoomBuilder continues an
// existing room from its current state and forward extremities, which is
// what send/state endpoints need.
//
// State resolution: ResolveState(ctx, version, states, provider) resolves state
// maps (event IDs keyed by type/state_key) with v1 (room version 1), v2
// (room versions 2–11) or v2.1 (12), fetching events through an
// EventProvider.
//
// All JSON uses encoding/json/v2; build with GOEXPERIMENT=jsonv2.
package rooms
