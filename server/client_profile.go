package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
	_ "time/tzdata" // m.tz is checked against the IANA database
	"unicode/utf8"

	"hearth/server/federation"
	"hearth/server/matrix"
	"hearth/server/rooms"
	"hearth/server/storage"
)

// Profiles (spec: Client-Server API, "Profiles"). Other servers' users'
// profiles are asked of their servers. A change is copied into a
// new m.room.member join event in every room the user is joined to, as
// Synapse does, so other members see the new name.

const (
	maxDisplayNameLen = 256  // characters, as Synapse
	maxAvatarURLLen   = 1000 // bytes, as Synapse
)

// profileOf returns a user's profile, field name → JSON value: for a local
// user displayname and avatar_url (when set) and the custom fields, for
// another server's user what that server answers. field, when set, asks
// for that field alone (the federation query's field parameter). An
// unknown user is 404 M_NOT_FOUND.
func (s *Server) profileOf(ctx context.Context, userID, field string) (map[string]json.RawMessage, error) {
	if _, server, ok := matrix.SplitUserID(userID); !ok {
		return nil, matrix.InvalidParam("%q is not a user ID", userID)
	} else if server != s.cfg.ServerName {
		return s.remoteProfile(ctx, server, userID, field)
	}
	u, err := s.store.UserByID(ctx, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, matrix.NotFound("user %s not found", userID)
	}
	if err != nil {
		return nil, err
	}
	out := map[string]json.RawMessage{}
	switch field {
	case "", "displayname", "avatar_url":
		if field == "" {
			if out, err = s.store.ProfileFields(ctx, userID); err != nil {
				return nil, err
			}
		}
		for key, v := range map[string]string{"displayname": u.DisplayName, "avatar_url": u.AvatarURL} {
			if v != "" && (field == "" || field == key) {
				out[key], _ = json.Marshal(v)
			}
		}
	default:
		v, err := s.store.ProfileField(ctx, userID, field)
		if errors.Is(err, storage.ErrNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out[field] = v
	}
	return out, nil
}

// profileParam reads {userId} and answers its profile (or the one field).
func (s *Server) profileParam(r *http.Request, field string) (map[string]json.RawMessage, error) {
	userID, err := pathParam(r, "userId")
	if err != nil {
		return nil, err
	}
	return s.profileOf(r.Context(), userID, field)
}

// GET /_matrix/client/v3/profile/{userId}
//
// Every field: displayname, avatar_url and the custom ones (spec v1.16).
func (s *Server) getProfile(w http.ResponseWriter, r *http.Request) error {
	p, err := s.profileParam(r, "")
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, p)
}

// GET /_matrix/client/v3/profile/{userId}/displayname
//
// An unset name is {} (200), as before custom fields; other fields'
// absence is 404 (getProfileField).
func (s *Server) getDisplayName(w http.ResponseWriter, r *http.Request) error {
	p, err := s.profileParam(r, "displayname")
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, onlyField(p, "displayname"))
}

// GET /_matrix/client/v3/profile/{userId}/avatar_url
func (s *Server) getAvatarURL(w http.ResponseWriter, r *http.Request) error {
	p, err := s.profileParam(r, "avatar_url")
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, onlyField(p, "avatar_url"))
}

// onlyField keeps the one field of p, if it has a value other than null.
func onlyField(p map[string]json.RawMessage, field string) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	if v, ok := p[field]; ok && string(v) != "null" {
		out[field] = v
	}
	return out
}

// ownProfile checks that {userId} is the caller: a profile is changed only
// by its owner.
func ownProfile(r *http.Request, me *Device) error {
	target, err := pathParam(r, "userId")
	if err != nil {
		return err
	}
	if target != me.UserID {
		return matrix.Forbidden("you cannot change another user's profile")
	}
	return nil
}

// PUT /_matrix/client/v3/profile/{userId}/displayname
func (s *Server) putDisplayName(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	if err := ownProfile(r, me); err != nil {
		return err
	}
	var req map[string]json.RawMessage
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	raw, ok := req["displayname"]
	if !ok {
		return matrix.MissingParam("displayname is required")
	}
	var name *string // null removes the name
	if err := json.Unmarshal(raw, &name); err != nil {
		return matrix.BadJSON("displayname must be a string")
	}
	v := ""
	if name != nil {
		v = *name
	}
	if strings.IndexByte(v, 0) >= 0 {
		return matrix.BadJSON("displayname contains a NUL character")
	}
	if utf8.RuneCountInString(v) > maxDisplayNameLen {
		return matrix.InvalidParam("displayname is longer than %d characters", maxDisplayNameLen)
	}
	if err := s.profileFits(r.Context(), me.UserID, "displayname", v); err != nil {
		return err
	}
	if err := s.store.SetDisplayName(r.Context(), me.UserID, v); err != nil {
		return err
	}
	s.propagateProfile(r.Context(), me.UserID)
	return writeJSON(w, http.StatusOK, struct{}{})
}

// PUT /_matrix/client/v3/profile/{userId}/avatar_url
func (s *Server) putAvatarURL(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	if err := ownProfile(r, me); err != nil {
		return err
	}
	var req map[string]json.RawMessage
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	raw, ok := req["avatar_url"]
	if !ok {
		return matrix.MissingParam("avatar_url is required")
	}
	var url *string
	if err := json.Unmarshal(raw, &url); err != nil {
		return matrix.BadJSON("avatar_url must be a string")
	}
	v := ""
	if url != nil {
		v = *url
	}
	if strings.IndexByte(v, 0) >= 0 {
		return matrix.BadJSON("avatar_url contains a NUL character")
	}
	if len(v) > maxAvatarURLLen {
		return matrix.InvalidParam("avatar_url is longer than %d bytes", maxAvatarURLLen)
	}
	if err := s.profileFits(r.Context(), me.UserID, "avatar_url", v); err != nil {
		return err
	}
	if err := s.store.SetAvatarURL(r.Context(), me.UserID, v); err != nil {
		return err
	}
	s.propagateProfile(r.Context(), me.UserID)
	return writeJSON(w, http.StatusOK, struct{}{})
}

// Custom profile fields (spec v1.16, "Profiles"): any field named in the
// Common Namespaced Identifier Grammar, holding any JSON value, in a
// profile of at most 64 KiB in all. They are not copied into rooms (as in
// Synapse): member events carry the name and avatar only.

// maxProfileKeyLen is the longest field name, in bytes (spec: 255).
const maxProfileKeyLen = 255

// profileKeyRe is the grammar of custom field names: lower-case letters,
// digits, _ and -, in at least two dot-separated parts (m.tz,
// org.example.job_title).
var profileKeyRe = regexp.MustCompile(`^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)+$`)

// profileKeyParam reads and checks {keyName}.
func profileKeyParam(r *http.Request) (string, error) {
	key, err := pathParam(r, "keyName")
	if err != nil {
		return "", err
	}
	if len(key) > maxProfileKeyLen {
		return "", &matrix.Error{Code: "M_KEY_TOO_LARGE", Msg: fmt.Sprintf("profile field names are at most %d bytes", maxProfileKeyLen)}
	}
	if key != "displayname" && key != "avatar_url" && !profileKeyRe.MatchString(key) {
		return "", matrix.InvalidParam("%q is not a profile field name (use a namespaced name such as org.example.field)", key)
	}
	return key, nil
}

// errProfileTooLarge is the answer to a change past the 64 KiB limit.
var errProfileTooLarge = &matrix.Error{Code: "M_PROFILE_TOO_LARGE", Msg: fmt.Sprintf("the profile would be larger than %d bytes", storage.MaxProfileSize)}

// profileFits refuses a displayname or avatar_url that would take the
// profile past the limit.
func (s *Server) profileFits(ctx context.Context, userID, field, value string) error {
	ok, err := s.store.ProfileFits(ctx, userID, field, value)
	if err != nil {
		return err
	}
	if !ok {
		return errProfileTooLarge
	}
	return nil
}

// GET /_matrix/client/v3/profile/{userId}/{keyName}
func (s *Server) getProfileField(w http.ResponseWriter, r *http.Request) error {
	key, err := profileKeyParam(r)
	if err != nil {
		return err
	}
	p, err := s.profileParam(r, key)
	if err != nil {
		return err
	}
	v, ok := p[key]
	if !ok {
		return matrix.NotFound("the user has no profile field %s", key)
	}
	return writeJSON(w, http.StatusOK, map[string]json.RawMessage{key: v})
}

// PUT /_matrix/client/v3/profile/{userId}/{keyName}
//
// displayname and avatar_url keep their own rules and are copied into the
// user's rooms (putDisplayName, putAvatarURL). m.tz must name a zone of the
// IANA database; other fields take any JSON value, null included (stored,
// as the spec recommends, not taken as a deletion).
func (s *Server) putProfileField(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	if err := ownProfile(r, me); err != nil {
		return err
	}
	key, err := profileKeyParam(r)
	if err != nil {
		return err
	}
	switch key {
	case "displayname":
		return s.putDisplayName(w, r)
	case "avatar_url":
		return s.putAvatarURL(w, r)
	}
	var req map[string]json.RawMessage
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	raw, ok := req[key]
	if !ok {
		return matrix.MissingParam("the body must hold the field %s", key)
	}
	if key == "m.tz" {
		var tz string
		if json.Unmarshal(raw, &tz) != nil || !validTimeZone(tz) {
			return matrix.InvalidParam("m.tz must be a time zone of the IANA database, such as Europe/London")
		}
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return matrix.BadJSON("the value of %s is not valid JSON", key)
	}
	err = s.store.SetProfileField(r.Context(), me.UserID, key, compact.Bytes())
	if errors.Is(err, storage.ErrProfileTooLarge) {
		return errProfileTooLarge
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// DELETE /_matrix/client/v3/profile/{userId}/{keyName}
//
// Removing a field that is not set succeeds, as the spec says.
// Removing displayname or avatar_url clears it in the user's rooms too.
func (s *Server) deleteProfileField(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	if err := ownProfile(r, me); err != nil {
		return err
	}
	key, err := profileKeyParam(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	switch key {
	case "displayname", "avatar_url":
		set := s.store.SetDisplayName
		if key == "avatar_url" {
			set = s.store.SetAvatarURL
		}
		if err := set(ctx, me.UserID, ""); err != nil {
			return err
		}
		s.propagateProfile(ctx, me.UserID)
	default:
		if err := s.store.DeleteProfileField(ctx, me.UserID, key); err != nil {
			return err
		}
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// validTimeZone reports whether tz names a zone of the IANA time zone
// database (embedded in the binary, so the answer does not depend on the
// host's files).
func validTimeZone(tz string) bool {
	if tz == "" || tz == "Local" {
		return false
	}
	_, err := time.LoadLocation(tz)
	return err == nil
}

// propagateProfile sends a join event carrying the user's new profile into
// every room they are joined to, keeping the rest of their current member
// content. A room that refuses (or fails) is logged and skipped: the
// profile itself has changed either way.
func (s *Server) propagateProfile(ctx context.Context, userID string) {
	log := logFrom(ctx, s.log)
	u, err := s.store.UserByID(ctx, userID)
	if err != nil {
		log.Error("profile propagation: load user", "user", userID, "err", err)
		return
	}
	joined, err := s.store.RoomsOfUser(ctx, userID, rooms.MembershipJoin)
	if err != nil {
		log.Error("profile propagation: list rooms", "user", userID, "err", err)
		return
	}
	for _, m := range joined {
		if err := s.updateMemberProfile(ctx, m.RoomID, u); err != nil {
			log.Warn("profile propagation failed", "user", userID, "room", m.RoomID, "err", err)
		}
	}
}

// updateMemberProfile sends the user's profile into one room, unless their
// member event already shows it.
func (s *Server) updateMemberProfile(ctx context.Context, roomID string, u *storage.User) error {
	cur, err := s.store.CurrentStateEvent(ctx, roomID, rooms.TypeMember, u.UserID)
	if err != nil {
		return err
	}
	if cur.Membership != rooms.MembershipJoin {
		return nil
	}
	content := map[string]json.RawMessage{}
	if err := json.Unmarshal(contentOf(cur.JSON), &content); err != nil {
		return err
	}
	var oldName, oldAvatar string
	_ = json.Unmarshal(content["displayname"], &oldName)
	_ = json.Unmarshal(content["avatar_url"], &oldAvatar)
	if oldName == u.DisplayName && oldAvatar == u.AvatarURL {
		return nil
	}
	// A profile change is not a new join: its reason and restricted-join
	// authorisation belong to the original event.
	delete(content, "reason")
	delete(content, "join_authorised_via_users_server")
	for key, v := range map[string]string{"displayname": u.DisplayName, "avatar_url": u.AvatarURL} {
		if v == "" {
			delete(content, key)
		} else {
			b, _ := json.Marshal(v)
			content[key] = b
		}
	}
	_, err = s.sendEvents(ctx, roomID, newEvent{Type: rooms.TypeMember, StateKey: &u.UserID, Sender: u.UserID, Content: content})
	return err
}

// remoteProfile asks a user's server for their profile, or for one field
// of it (GET /_matrix/federation/v1/query/profile).
func (s *Server) remoteProfile(ctx context.Context, server, userID, field string) (map[string]json.RawMessage, error) {
	if s.fedClient == nil {
		return nil, matrix.NotFound("profile of %s not found: this server does not federate", userID)
	}
	q := url.Values{"user_id": {userID}}
	if field != "" {
		q.Set("field", field)
	}
	p := map[string]json.RawMessage{}
	err := s.fedClient.Do(ctx, server, http.MethodGet, "/_matrix/federation/v1/query/profile", q, nil, &p)
	if federation.IsNotFound(err) {
		if field != "" && field != "displayname" && field != "avatar_url" {
			// The user may exist without the field.
			return map[string]json.RawMessage{}, nil
		}
		return nil, matrix.NotFound("user %s not found", userID)
	}
	if err != nil {
		return nil, &matrix.Error{Code: "M_UNKNOWN", Status: http.StatusBadGateway, Msg: "could not ask " + server + " for the profile", Err: err}
	}
	return p, nil
}
