package server

import (
	"encoding/json"
	"errors"
	"net/http"

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
	if _, err := s.store.PutAccountData(r.Context(), me.UserID, roomID, typ, content); err != nil {
		return err
	}
	if roomID == "" && typ == "m.ignored_user_list" {
		s.push.IgnoredChanged(me.UserID) // the evaluator skips ignored senders
	}
	s.notifier.notifyUser(me.UserID)
	return writeJSON(w, http.StatusOK, struct{}{})
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
