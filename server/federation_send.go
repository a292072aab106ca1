package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/tidwall/gjson"

	"hearth/server/matrix"
	"hearth/server/rooms"
	"hearth/server/storage"
	"hearth/server/timeline"
)

// Transactions from other servers (spec: Server-Server API, "Transactions",
// PUT /_matrix/federation/v1/send/{txnId}). Each PDU goes through the room
// pipeline's checks on its own: one that fails never stops the others, and
// the answer lists what became of each. EDUs are applied when their sender
// belongs to the origin. A retried transaction is answered from the record
// of the first without being processed again.

const (
	maxTxnPDUs = 50
	maxTxnEDUs = 100
)

// inboundTxn is the body of PUT /send.
type inboundTxn struct {
	Origin         string            `json:"origin"`
	OriginServerTS int64             `json:"origin_server_ts"`
	PDUs           []json.RawMessage `json:"pdus"`
	EDUs           []struct {
		Type    string          `json:"edu_type"`
		Content json.RawMessage `json:"content"`
	} `json:"edus"`
}

// pduResult is one PDU's entry in the answer: empty when it was accepted.
type pduResult struct {
	Error string `json:"error,omitempty"`
}

// receiveTransaction processes a transaction from origin and returns the
// answer's body.
func (s *Server) receiveTransaction(ctx context.Context, origin, txnID string, body []byte) (map[string]any, error) {
	var txn inboundTxn
	if err := json.Unmarshal(body, &txn); err != nil {
		return nil, matrix.BadJSON("transaction is not valid JSON: %v", err)
	}
	if len(txn.PDUs) > maxTxnPDUs || len(txn.EDUs) > maxTxnEDUs {
		return nil, matrix.BadJSON("transaction has %d PDUs and %d EDUs; at most %d and %d are allowed", len(txn.PDUs), len(txn.EDUs), maxTxnPDUs, maxTxnEDUs)
	}
	if saved, ok, err := s.store.ReceivedTxn(ctx, origin, txnID); err != nil {
		return nil, err
	} else if ok {
		var resp map[string]any
		if err := json.Unmarshal(saved, &resp); err == nil {
			return resp, nil
		}
	}
	if s.fedSender != nil {
		// It is up: retry what it missed now. A failure to record that
		// only delays the retry until the back-off ends.
		if _, err := s.fedSender.Reset(ctx, origin); err != nil {
			s.log.Warn("federation: could not reset the back-off of a server that contacted us", "origin", origin, "err", err)
		}
	}
	results := s.receivePDUs(ctx, origin, txn.PDUs)
	for _, edu := range txn.EDUs {
		if err := s.receiveEDU(ctx, origin, edu.Type, edu.Content); err != nil {
			s.log.Info("federation: EDU ignored", "origin", origin, "edu_type", edu.Type, "reason", err)
		}
	}
	resp := map[string]any{"pdus": results}
	raw, err := json.Marshal(resp)
	if err != nil {
		return nil, err
	}
	if err := s.store.SaveReceivedTxn(ctx, origin, txnID, raw); err != nil {
		return nil, err
	}
	return resp, nil
}

// receivePDUs hands a transaction's PDUs to the room pipeline, grouped by
// room, and reports each by event ID. PDUs whose room or version this
// server does not know cannot even be named (their ID depends on the room
// version) and are left out of the answer, as Synapse does.
func (s *Server) receivePDUs(ctx context.Context, origin string, raws []json.RawMessage) map[string]pduResult {
	results := map[string]pduResult{}
	byRoom := map[string][]*rooms.Event{}
	var order []string
	for _, raw := range raws {
		roomID := gjson.GetBytes(raw, "room_id").String()
		room, err := s.store.RoomByID(ctx, roomID)
		if err == nil && !s.receivesFor(ctx, roomID) && !s.aboutLocalMember(raw) {
			err = storage.ErrNotFound
		}
		if err != nil {
			if id, ok, err := s.receiveOutOfRoomMembership(ctx, origin, roomID, raw); ok {
				results[id] = pduResult{}
				if err != nil {
					results[id] = pduResult{Error: err.Error()}
				}
				continue
			}
			s.log.Info("federation: PDU for a room this server is not in", "origin", origin, "room_id", roomID)
			continue
		}
		rv, ok := rooms.LookupVersion(room.RoomVersion)
		if !ok {
			continue
		}
		e, err := rooms.ParseEvent(rv, raw)
		if err != nil {
			s.log.Info("federation: malformed PDU", "origin", origin, "room_id", roomID, "err", err)
			continue
		}
		if _, seen := byRoom[roomID]; !seen {
			order = append(order, roomID)
		}
		byRoom[roomID] = append(byRoom[roomID], e)
	}
	for _, roomID := range order {
		if ok, err := s.serverAllowed(ctx, roomID, origin); err != nil || !ok {
			// The room's server ACL bars the origin (spec: "Server
			// Access Control Lists"): none of its events are taken.
			for _, e := range byRoom[roomID] {
				results[e.ID()] = pduResult{Error: "the room's server ACL denies " + origin}
			}
			continue
		}
		res, err := s.timeline.Receive(ctx, origin, timeline.Live, byRoom[roomID])
		if err != nil {
			s.log.Error("federation: persisting received events failed", "origin", origin, "room_id", roomID, "err", err)
			for _, e := range byRoom[roomID] {
				results[e.ID()] = pduResult{Error: "internal error"}
			}
			continue
		}
		for _, r := range res {
			switch r.Status {
			case timeline.Rejected, timeline.Dropped:
				results[r.EventID] = pduResult{Error: r.Err.Error()}
				s.log.Info("federation: event refused", "origin", origin, "event_id", r.EventID, "status", r.Status.String(), "reason", r.Err)
			default:
				results[r.EventID] = pduResult{}
				s.log.Debug("federation: event received", "origin", origin, "event_id", r.EventID, "status", r.Status.String(), "err", r.Err)
			}
		}
	}
	return results
}

// receivesFor reports whether this server takes events of a room it knows:
// while a user of its is in it, or while it is joining (no timeline yet).
// A room all its users left is not followed any more.
func (s *Server) receivesFor(ctx context.Context, roomID string) bool {
	if in, err := s.inRoom(ctx, roomID); err != nil || in {
		return err == nil
	}
	exts, err := s.store.ForwardExtremities(ctx, roomID)
	return err == nil && len(exts) == 0
}

// aboutLocalMember reports whether a PDU is a membership event of one of
// this server's users (a ban or an invite after they left still concerns
// them).
func (s *Server) aboutLocalMember(pdu []byte) bool {
	return gjson.GetBytes(pdu, "type").String() == rooms.TypeMember && s.isLocalUser(gjson.GetBytes(pdu, "state_key").String())
}

// errNotFromOrigin refuses an EDU about a user of another server.
var errNotFromOrigin = errors.New("about a user of another server than the origin")

// fromOrigin reports whether userID belongs to origin.
func fromOrigin(userID, origin string) bool {
	_, server, ok := strings.Cut(userID, ":")
	return ok && server == origin
}

// decodeEDU decodes an EDU's content into v. What the sender says of its
// users, rooms and devices may not hold a NUL character (nulString): no
// ID or name has one, and PostgreSQL cannot look one up, so such an EDU
// is ignored on both engines alike.
func decodeEDU(content json.RawMessage, v any) error {
	if err := json.Unmarshal(content, v); err != nil {
		return err
	}
	if field, ok := nulString(reflect.ValueOf(v), ""); ok {
		return fmt.Errorf("field %q contains a NUL character", field)
	}
	return nil
}

// receiveEDU applies one EDU (spec: "EDUs"). Unknown types are ignored.
func (s *Server) receiveEDU(ctx context.Context, origin, typ string, content json.RawMessage) error {
	switch typ {
	case "m.typing":
		var c struct {
			RoomID string `json:"room_id"`
			UserID string `json:"user_id"`
			Typing bool   `json:"typing"`
		}
		if err := decodeEDU(content, &c); err != nil {
			return err
		}
		if !fromOrigin(c.UserID, origin) {
			return errNotFromOrigin
		}
		if ok, err := s.serverAllowed(ctx, c.RoomID, origin); err != nil || !ok {
			return errors.New("denied by the room's server ACL")
		}
		if m, err := s.store.Membership(ctx, c.RoomID, c.UserID); err != nil || m != rooms.MembershipJoin {
			return errors.New("the user is not in the room")
		}
		// Other servers send no timeout: Synapse keeps a remote user
		// typing for 30 s unless told otherwise.
		s.setTyping(c.RoomID, c.UserID, c.Typing, 30*time.Second)
		return nil
	case "m.receipt":
		var c map[string]map[string]map[string]struct {
			EventIDs []string `json:"event_ids"`
			Data     struct {
				ThreadID string `json:"thread_id"`
			} `json:"data"`
		}
		if err := decodeEDU(content, &c); err != nil {
			return err
		}
		for roomID, byType := range c {
			for typ, byUser := range byType {
				if typ != "m.read" {
					continue // private receipts never leave their server
				}
				for userID, r := range byUser {
					if !fromOrigin(userID, origin) || len(r.EventIDs) == 0 {
						continue
					}
					if ok, err := s.serverAllowed(ctx, roomID, origin); err != nil || !ok {
						continue
					}
					if err := s.setRemoteReceipt(ctx, userID, roomID, r.EventIDs[0], r.Data.ThreadID); err != nil {
						s.log.Debug("federation: receipt ignored", "origin", origin, "user_id", userID, "room_id", roomID, "err", err)
					}
				}
			}
		}
		return nil
	case "m.presence":
		return s.receivePresence(ctx, origin, content)
	case "m.device_list_update":
		return s.receiveDeviceListUpdate(ctx, origin, content)
	case "m.signing_key_update":
		return s.receiveSigningKeyUpdate(ctx, origin, content)
	case "m.direct_to_device":
		return s.receiveDirectToDevice(ctx, origin, content)
	}
	return nil
}
