package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"hearth/server/matrix"
	"hearth/server/rooms"
	"hearth/server/storage"
)

// Server notices (Synapse's server_notices): messages from the server's
// system account into a room of each recipient's own, tagged
// m.server_notice. The recipient is invited and cannot reject the invite;
// once joined they may leave, and the next notice invites them back into
// the same room.

// serverNoticeTag marks the notices room in the recipient's room tags.
const serverNoticeTag = "m.server_notice"

// ServerNotice is a notice to send.
type ServerNotice struct {
	UserID   string
	Type     string // default m.room.message
	StateKey *string
	Content  json.RawMessage
	// TxnKey makes the send idempotent (PUT .../{txnId}): "" for none.
	TxnKey string
}

// noticesUser returns the system account, creating it on first use.
func (s *Server) noticesUser(ctx context.Context) (string, error) {
	nc := s.cfg.ServerNotices
	userID := matrix.UserID(nc.SystemMXIDLocalpart, s.cfg.ServerName)
	u, err := s.store.UserByID(ctx, userID)
	if err == nil {
		if u.Deactivated {
			return "", &matrix.Error{Code: "M_UNKNOWN", Msg: "the server notices account " + userID + " is deactivated", Status: http.StatusBadRequest}
		}
		return userID, nil
	}
	if !errors.Is(err, storage.ErrNotFound) {
		return "", err
	}
	if me := matrix.ValidateLocalpart(nc.SystemMXIDLocalpart, s.cfg.ServerName); me != nil {
		return "", me
	}
	nu := &storage.User{UserID: userID, Localpart: nc.SystemMXIDLocalpart, DisplayName: nc.SystemMXIDDisplayName,
		AvatarURL: nc.SystemMXIDAvatarURL, UserType: "bot"}
	if nu.DisplayName == "" {
		nu.DisplayName = nc.SystemMXIDLocalpart
	}
	if err := s.store.CreateUser(ctx, nu); err != nil && !errors.Is(err, storage.ErrConflict) {
		return "", err
	}
	return userID, nil
}

// SendServerNotice sends a notice, creating (or re-inviting into) the
// recipient's notices room, and returns the event ID.
func (s *Server) SendServerNotice(ctx context.Context, by Actor, n ServerNotice) (string, error) {
	if !s.cfg.ServerNotices.Enabled() {
		return "", &matrix.Error{Code: "M_UNKNOWN", Msg: "Server notices are not enabled on this server", Status: http.StatusBadRequest}
	}
	if _, server, ok := matrix.SplitUserID(n.UserID); !ok || server != s.cfg.ServerName {
		return "", matrix.InvalidParam("Server notices can only be sent to local users")
	}
	if u, err := s.store.UserByID(ctx, n.UserID); errors.Is(err, storage.ErrNotFound) {
		return "", matrix.NotFound("User not found")
	} else if err != nil {
		return "", err
	} else if u.Deactivated {
		return "", matrix.InvalidParam("Cannot send server notices to a deactivated user")
	}
	system, err := s.noticesUser(ctx)
	if err != nil {
		return "", err
	}
	roomID, err := s.noticeRoom(ctx, system, n.UserID)
	if err != nil {
		return "", err
	}
	ne := newEvent{Type: n.Type, StateKey: n.StateKey, Sender: system, Content: n.Content}
	if ne.Type == "" {
		ne.Type = "m.room.message"
	}
	if n.TxnKey != "" {
		// The system account has no devices: a per-admin pseudo-device
		// scopes the transaction ID as Synapse scopes it per requester.
		ne.Device, ne.TxnID = &Device{UserID: system, DeviceID: "server_notice:" + by.UserID}, n.TxnKey
	}
	id, err := s.sendOne(ctx, roomID, ne)
	if err != nil {
		return "", err
	}
	s.audit(ctx, by, "server_notice.send", n.UserID, "")
	return id, nil
}

// noticeRoom returns the user's notices room, creating it or inviting the
// user back as needed.
func (s *Server) noticeRoom(ctx context.Context, system, userID string) (string, error) {
	roomID, err := s.store.ServerNoticeRoom(ctx, userID)
	if errors.Is(err, storage.ErrNotFound) {
		rv, _ := rooms.LookupVersion(s.cfg.DefaultRoomVersion)
		// Only the system account may send or change anything.
		override := map[string]any{"events_default": 100, "invite": 100, "state_default": 100}
		raw, _ := json.Marshal(override)
		var pl map[string]json.RawMessage
		_ = json.Unmarshal(raw, &pl)
		if roomID, err = s.createRoom(ctx, rooms.CreateRoomRequest{Version: rv, Creator: system, Preset: rooms.PresetPrivateChat,
			Name: s.cfg.ServerNotices.Name(), PowerLevelOverride: toJSONText(pl)}, false); err != nil {
			return "", err
		}
		if err := s.store.SetServerNoticeRoom(ctx, userID, roomID); err != nil {
			return "", err
		}
	} else if err != nil {
		return "", err
	}
	m, err := s.store.Membership(ctx, roomID, userID)
	if err != nil {
		return "", err
	}
	if m != rooms.MembershipJoin && m != rooms.MembershipInvite {
		content, err := s.memberContent(ctx, rooms.MembershipInvite, userID, "")
		if err != nil {
			return "", err
		}
		if _, err := s.sendEvents(ctx, roomID, newEvent{Type: rooms.TypeMember, StateKey: &userID, Sender: system, Content: content}); err != nil {
			return "", err
		}
	}
	if _, err := s.store.UpdateAccountData(ctx, userID, roomID, "m.tag", func(old []byte) ([]byte, error) {
		tc := tagContent{}
		if old != nil {
			_ = json.Unmarshal(old, &tc)
		}
		if tc.Tags == nil {
			tc.Tags = map[string]json.RawMessage{}
		}
		if _, ok := tc.Tags[serverNoticeTag]; !ok {
			tc.Tags[serverNoticeTag] = json.RawMessage("{}")
		}
		return json.Marshal(tc)
	}); err != nil {
		return "", err
	}
	s.notifier.notifyUser(userID)
	return roomID, nil
}

// POST /_synapse/admin/v1/send_server_notice
// PUT /_synapse/admin/v1/send_server_notice/{txnId}
func (s *Server) postAdminServerNotice(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		UserID   string          `json:"user_id"`
		Content  json.RawMessage `json:"content"`
		Type     string          `json:"type"`
		StateKey *string         `json:"state_key"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.UserID == "" {
		return matrix.MissingParam("missing user_id")
	}
	if !isJSONObject(req.Content) {
		return matrix.MissingParam("content must be a JSON object")
	}
	n := ServerNotice{UserID: req.UserID, Type: req.Type, StateKey: req.StateKey, Content: req.Content}
	if r.Method == http.MethodPut {
		txn, err := pathParam(r, "txnId")
		if err != nil {
			return err
		}
		n.TxnKey = deviceFrom(r.Context()).DeviceID + "/" + txn
	}
	id, err := s.SendServerNotice(r.Context(), s.apiActor(r), n)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]string{"event_id": id})
}
