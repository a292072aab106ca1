package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"slices"

	"hearth/server/matrix"
	"hearth/server/storage"
)

// Send-to-device messaging (spec: "Send-to-Device messaging"). Messages
// are queued per device on the aux stream and delivered by /sync
// (sync_e2ee.go), which deletes them once a later since token acknowledges
// them. Messages for other servers' users go through the federation
// sender's Outbox (federation_outbox.go); those from other servers arrive
// as m.direct_to_device EDUs (receiveDirectToDevice).

// maxToDevicePerSync bounds the messages one /sync delivers; the rest
// follow in the next one.
const maxToDevicePerSync = 100

// PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}
//
// Messages to other servers' users go as one m.direct_to_device EDU per
// server, persisted with the transaction ID in the same database
// transaction (federation_outbox.go), so a retried request sends nothing
// twice and an accepted one reaches the server even across failures.
func (s *Server) putSendToDevice(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	me := deviceFrom(ctx)
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
	for _, devices := range req.Messages {
		for _, content := range devices {
			if c := bytes.TrimSpace(content); len(c) == 0 || c[0] != '{' {
				return matrix.BadJSON("message content must be an object")
			}
		}
	}
	msgs, users, err := s.localToDevice(ctx, me.UserID, evType, req.Messages)
	if err != nil {
		return err
	}
	remote, err := s.remoteToDevice(me.UserID, evType, req.Messages)
	if err != nil {
		return err
	}
	sent, err := s.store.SendToDevice(ctx, me.UserID, me.DeviceID, txnID, msgs, remote)
	if err != nil {
		return err
	}
	if sent {
		for _, u := range users {
			s.notifier.notifyUser(u)
		}
		if len(remote) > 0 {
			dests := make([]string, len(remote))
			for i, e := range remote {
				dests[i] = e.Destination
			}
			s.fedSender.Wake(dests...)
		}
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// localToDevice expands the messages for local users into one per target
// device: "*" names all of a user's devices, an explicit device ID wins
// over "*" for its device, and devices that do not exist are left out
// (their messages would never be fetched). users are the users reached.
func (s *Server) localToDevice(ctx context.Context, sender, evType string, messages map[string]map[string]json.RawMessage) ([]storage.ToDeviceMessage, []string, error) {
	type target struct{ user, device string }
	byDevice := map[target]json.RawMessage{}
	var order []target
	for userID, devices := range messages {
		if !s.isLocalUser(userID) {
			continue
		}
		all, err := s.store.Devices(ctx, userID)
		if err != nil {
			return nil, nil, err
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
	var users []string
	for _, t := range order {
		msgs = append(msgs, storage.ToDeviceMessage{UserID: t.user, DeviceID: t.device, Sender: sender, Type: evType, Content: byDevice[t]})
		if !slices.Contains(users, t.user) {
			users = append(users, t.user)
		}
	}
	return msgs, users, nil
}

// remoteToDevice builds one m.direct_to_device EDU per other server with
// users among messages (spec: Server-Server API, "Send-to-device
// messaging"), each with a message_id of its own for the receiver to drop
// copies by. Without federation, or to servers it may not send to, the
// messages are dropped, as to a device that does not exist.
func (s *Server) remoteToDevice(sender, evType string, messages map[string]map[string]json.RawMessage) ([]storage.OutboxEDU, error) {
	if s.fedSender == nil {
		return nil, nil
	}
	byServer := map[string]map[string]map[string]json.RawMessage{}
	for userID, devices := range messages {
		_, server, ok := matrix.SplitUserID(userID)
		if !ok || server == s.cfg.ServerName || len(devices) == 0 {
			continue
		}
		if s.fedTransport != nil && !s.fedTransport.Allowed(server) {
			continue
		}
		if byServer[server] == nil {
			byServer[server] = map[string]map[string]json.RawMessage{}
		}
		byServer[server][userID] = devices
	}
	out := make([]storage.OutboxEDU, 0, len(byServer))
	for server, msgs := range byServer {
		content, err := json.Marshal(map[string]any{"sender": sender, "type": evType, "message_id": rand.Text(), "messages": msgs})
		if err != nil {
			return nil, err
		}
		out = append(out, storage.OutboxEDU{Destination: server, Type: "m.direct_to_device", Content: content})
	}
	return out, nil
}

// receiveDirectToDevice queues an m.direct_to_device EDU's messages for
// local devices. The sender and message_id name the message: a copy
// (its transaction retried, or sent again after a lost acknowledgement) is
// dropped.
func (s *Server) receiveDirectToDevice(ctx context.Context, origin string, content json.RawMessage) error {
	var c struct {
		Sender    string                                `json:"sender"`
		Type      string                                `json:"type"`
		MessageID string                                `json:"message_id"`
		Messages  map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := decodeEDU(content, &c); err != nil {
		return err
	}
	if !fromOrigin(c.Sender, origin) {
		return errNotFromOrigin
	}
	if c.Type == "" || c.MessageID == "" {
		return errors.New("type and message_id are required")
	}
	for _, devices := range c.Messages {
		for d, m := range devices {
			if b := bytes.TrimSpace(m); len(b) == 0 || b[0] != '{' {
				delete(devices, d)
			}
		}
	}
	msgs, users, err := s.localToDevice(ctx, c.Sender, c.Type, c.Messages)
	if err != nil {
		return err
	}
	sent, err := s.store.SendToDevice(ctx, c.Sender, "", c.MessageID, msgs, nil)
	if err != nil {
		return err
	}
	if sent {
		for _, u := range users {
			s.notifier.notifyUser(u)
		}
	}
	return nil
}
