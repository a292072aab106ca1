package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"

	"hearth/server/matrix"
	"hearth/server/push"
	"hearth/server/storage"
)

// Client config (spec: Client-Server API, "Client Config") and room tagging
// ("Room Tagging"). Both live in account_data; every change takes an aux
// stream position and wakes /sync.

// accountDataParams reads {userId} (must be the caller), {type}, and
// {roomId} when the route has one.
func (s *Server) accountDataParams(r *http.Request, withRoom bool) (me *Device, roomID, typ string, err error) {
	me = deviceFrom(r.Context())
	if err = s.ownUserParam(r, me); err != nil {
		return
	}
	if withRoom {
		if roomID, err = roomIDParam(r); err != nil {
			return
		}
	}
	typ, err = pathParam(r, "type")
	if err == nil && typ == "" {
		err = matrix.InvalidParam("missing account data type")
	}
	return
}

// GET /_matrix/client/v3/user/{userId}/account_data/{type}
func (s *Server) getAccountData(w http.ResponseWriter, r *http.Request) error {
	return s.serveAccountData(w, r, false)
}

// GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}
func (s *Server) getRoomAccountData(w http.ResponseWriter, r *http.Request) error {
	return s.serveAccountData(w, r, true)
}

func (s *Server) serveAccountData(w http.ResponseWriter, r *http.Request, withRoom bool) error {
	me, roomID, typ, err := s.accountDataParams(r, withRoom)
	if err != nil {
		return err
	}
	if !withRoom && typ == "m.push_rules" {
		// Always the rules as they are (push.go), stored or not.
		rs, err := s.pushRules(r.Context(), me.UserID)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, push.Rulesets{Global: rs})
	}
	c, err := s.store.AccountDataContent(r.Context(), me.UserID, roomID, typ)
	if err == nil && s.accountDataDeleted(c) {
		err = storage.ErrNotFound
	}
	if errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("no account data of type %s", typ)
	}
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	_, err = w.Write(c)
	return err
}

// PUT /_matrix/client/v3/user/{userId}/account_data/{type}
func (s *Server) putAccountData(w http.ResponseWriter, r *http.Request) error {
	return s.storeAccountData(w, r, false)
}

// PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}
func (s *Server) putRoomAccountData(w http.ResponseWriter, r *http.Request) error {
	return s.storeAccountData(w, r, true)
}

func (s *Server) storeAccountData(w http.ResponseWriter, r *http.Request, withRoom bool) error {
	me, roomID, typ, err := s.accountDataParams(r, withRoom)
	if err != nil {
		return err
	}
	// The server manages these two itself (clients use /read_markers and
	// /pushrules), so a PUT here is refused with M_BAD_JSON.
	if typ == "m.fully_read" || typ == "m.push_rules" {
		return matrix.BadJSON("%s cannot be set through account data; use the dedicated endpoint", typ)
	}
	var content json.RawMessage
	if err := decodeJSON(r, &content); err != nil {
		return err
	}
	if s.accountDataDeleted(content) {
		content = json.RawMessage(`{}`)
	}
	return s.writeAccountData(w, r, me, roomID, typ, content)
}

// writeAccountData stores an entry (or its deletion, {}), tells the push
// evaluator when the ignored users changed and wakes the user's syncs.
func (s *Server) writeAccountData(w http.ResponseWriter, r *http.Request, me *Device, roomID, typ string, content json.RawMessage) error {
	if _, err := s.store.PutAccountData(r.Context(), me.UserID, roomID, typ, content); err != nil {
		return err
	}
	if roomID == "" && typ == "m.ignored_user_list" {
		s.push.IgnoredChanged(me.UserID) // the evaluator skips ignored senders
	}
	s.notifier.notifyUser(me.UserID)
	return writeJSON(w, http.StatusOK, struct{}{})
}

// Deleting account data (MSC3391, with experimental_features.msc3391_enabled
// as in Synapse): an entry is deleted by a DELETE on the unstable path or a
// PUT of {}. It stays stored as {} under a new aux position, so that an
// incremental /sync tells clients ({"type": ..., "content": {}}); GET then
// answers 404 and initial syncs leave it out.

// DELETE /_matrix/client/unstable/org.matrix.msc3391/user/{userId}/account_data/{type}
func (s *Server) deleteAccountData(w http.ResponseWriter, r *http.Request) error {
	return s.removeAccountData(w, r, false)
}

// DELETE /_matrix/client/unstable/org.matrix.msc3391/user/{userId}/rooms/{roomId}/account_data/{type}
func (s *Server) deleteRoomAccountData(w http.ResponseWriter, r *http.Request) error {
	return s.removeAccountData(w, r, true)
}

func (s *Server) removeAccountData(w http.ResponseWriter, r *http.Request, withRoom bool) error {
	me, roomID, typ, err := s.accountDataParams(r, withRoom)
	if err != nil {
		return err
	}
	if typ == "m.fully_read" || typ == "m.push_rules" {
		return matrix.BadJSON("%s cannot be deleted through account data", typ)
	}
	return s.writeAccountData(w, r, me, roomID, typ, json.RawMessage(`{}`))
}

// accountDataDeleted: with MSC3391 on, an empty object is a deleted entry.
func (s *Server) accountDataDeleted(content []byte) bool {
	if !s.cfg.ExperimentalFeatures.MSC3391Enabled {
		return false
	}
	var m map[string]json.RawMessage
	return json.Unmarshal(content, &m) == nil && m != nil && len(m) == 0
}

// withoutDeletedAccountData drops deleted entries (for initial syncs).
func (s *Server) withoutDeletedAccountData(list []storage.AccountData) []storage.AccountData {
	if !s.cfg.ExperimentalFeatures.MSC3391Enabled {
		return list
	}
	return slices.DeleteFunc(list, func(a storage.AccountData) bool { return s.accountDataDeleted(a.Content) })
}

// tagContent is the content of m.tag room account data.
type tagContent struct {
	Tags map[string]json.RawMessage `json:"tags"`
}

// GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags
func (s *Server) getTags(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	if err := s.ownUserParam(r, me); err != nil {
		return err
	}
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	tc := tagContent{Tags: map[string]json.RawMessage{}}
	c, err := s.store.AccountDataContent(r.Context(), me.UserID, roomID, "m.tag")
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	if c != nil {
		_ = json.Unmarshal(c, &tc)
		if tc.Tags == nil {
			tc.Tags = map[string]json.RawMessage{}
		}
	}
	return writeJSON(w, http.StatusOK, tc)
}

// PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}
func (s *Server) putTag(w http.ResponseWriter, r *http.Request) error {
	var body map[string]any
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	if o, ok := body["order"]; ok {
		if f, ok := o.(float64); !ok || f < 0 || f > 1 {
			return matrix.BadJSON("order must be a number between 0 and 1")
		}
	}
	tag, _ := json.Marshal(body)
	return s.editTag(w, r, tag)
}

// DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}
func (s *Server) deleteTag(w http.ResponseWriter, r *http.Request) error {
	return s.editTag(w, r, nil)
}

// editTag sets (info != nil) or removes one tag in the room's m.tag data.
func (s *Server) editTag(w http.ResponseWriter, r *http.Request, info json.RawMessage) error {
	me := deviceFrom(r.Context())
	if err := s.ownUserParam(r, me); err != nil {
		return err
	}
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	tag, err := pathParam(r, "tag")
	if err != nil {
		return err
	}
	if tag == "" || len(tag) > 255 {
		return matrix.InvalidParam("invalid tag name")
	}
	_, err = s.store.UpdateAccountData(r.Context(), me.UserID, roomID, "m.tag", func(old []byte) ([]byte, error) {
		tc := tagContent{}
		if old != nil {
			_ = json.Unmarshal(old, &tc)
		}
		if tc.Tags == nil {
			tc.Tags = map[string]json.RawMessage{}
		}
		if info == nil {
			delete(tc.Tags, tag)
		} else {
			tc.Tags[tag] = info
		}
		return json.Marshal(tc)
	})
	if err != nil {
		return err
	}
	s.notifier.notifyUser(me.UserID)
	return writeJSON(w, http.StatusOK, struct{}{})
}
