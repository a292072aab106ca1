package server

import (
	"bytes"
	"encoding/json"
	"net/http"

	"hearth/server/matrix"
	"hearth/server/storage"
)

// Send-to-device messaging (spec: "Send-to-Device messaging"). Messages
// are queued per device on the aux stream and delivered by /sync
// (sync_e2ee.go), which deletes them once a later since token acknowledges
// them.

// maxToDevicePerSync bounds the messages one /sync delivers; the rest
// follow in the next one.
const maxToDevicePerSync = 100

// PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}
func (s *Server) putSendToDevice(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	evType, err := pathParam(r, "eventType")
	if err != nil {
		return err
	}
	txnID, err := pathParam(r, "txnId")
	if err != nil {
		return err
	}
	var req struct {
		Messages map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	// One message per target device: "*" and an explicit device ID may
	// both name the same device, and the explicit one wins.
	type target struct{ user, device string }
	byDevice := map[target]json.RawMessage{}
	var order []target
	for userID, devices := range req.Messages {
		if _, server, ok := matrix.SplitUserID(userID); !ok || server != s.cfg.ServerName {
			continue // no federation: remote users are unreachable
		}
		for _, content := range devices {
			if c := bytes.TrimSpace(content); len(c) == 0 || c[0] != '{' {
				return matrix.BadJSON("message content must be an object")
			}
		}
		// Messages to devices that do not exist would never be fetched.
		all, err := s.store.Devices(r.Context(), userID)
		if err != nil {
			return err
		}
		exists := make(map[string]bool, len(all))
		for _, d := range all {
			exists[d.DeviceID] = true
		}
		if content, ok := devices["*"]; ok {
			for _, d := range all {
				t := target{userID, d.DeviceID}
				if _, ok := byDevice[t]; !ok {
					order = append(order, t)
				}
				byDevice[t] = content
			}
		}
		for deviceID, content := range devices {
			if deviceID == "*" || !exists[deviceID] {
				continue
			}
			t := target{userID, deviceID}
			if _, ok := byDevice[t]; !ok {
				order = append(order, t)
			}
			byDevice[t] = content
		}
	}
	msgs := make([]storage.ToDeviceMessage, 0, len(order))
	users := map[string]bool{}
	for _, t := range order {
		msgs = append(msgs, storage.ToDeviceMessage{UserID: t.user, DeviceID: t.device, Sender: me.UserID, Type: evType, Content: byDevice[t]})
		users[t.user] = true
	}
	sent, err := s.store.SendToDevice(r.Context(), me.UserID, me.DeviceID, txnID, msgs, nil)
	if err != nil {
		return err
	}
	if sent {
		for u := range users {
			s.notifier.notifyUser(u)
		}
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}
