package server

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"hearth/server/matrix"
	"hearth/server/rooms"
	"hearth/server/storage"
)

// Receipts and read markers (spec: Client-Server API, "Receipts" and
// "Fully read markers"). m.read and m.read.private are receipts (stored,
// sent in /sync as m.receipt ephemeral events; private ones only to their
// owner); m.fully_read is room account data.

// checkReceiptTarget checks that the caller is in the room and the event
// belongs to it.
func (s *Server) checkReceiptTarget(ctx context.Context, userID, roomID, eventID string) error {
	m, err := s.store.Membership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if m != rooms.MembershipJoin {
		return matrix.Forbidden("you are not in room %s", roomID)
	}
	e, err := s.store.EventByID(ctx, eventID)
	if err != nil || e.RoomID != roomID {
		return matrix.NotFound("event %s not found in room %s", eventID, roomID)
	}
	return nil
}

// setReceipt stores one marker of type typ, set by a client of this server.
func (s *Server) setReceipt(ctx context.Context, userID, roomID, typ, eventID, threadID string) error {
	if err := s.checkReceiptTarget(ctx, userID, roomID, eventID); err != nil {
		return err
	}
	return s.putReceipt(ctx, userID, roomID, typ, eventID, threadID)
}

// setRemoteReceipt stores the read receipt of a user of another server.
// The user must be in the room, but the event need not be here yet: the
// receipt and the event travel separately (an EDU may well come before
// the PDU it points at), and a receipt dropped for that would be lost.
func (s *Server) setRemoteReceipt(ctx context.Context, userID, roomID, eventID, threadID string) error {
	m, err := s.store.Membership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if m != rooms.MembershipJoin {
		return fmt.Errorf("%s is not in room %s", userID, roomID)
	}
	if !strings.HasPrefix(eventID, "$") {
		return fmt.Errorf("%q is not an event ID", eventID)
	}
	return s.putReceipt(ctx, userID, roomID, "m.read", eventID, threadID)
}

// putReceipt stores a receipt, wakes the room's /sync and, for a local
// user's public receipt, tells the room's other servers.
func (s *Server) putReceipt(ctx context.Context, userID, roomID, typ, eventID, threadID string) error {
	if typ == "m.fully_read" {
		content, _ := json.Marshal(map[string]string{"event_id": eventID})
		if _, err := s.store.PutAccountData(ctx, userID, roomID, "m.fully_read", content); err != nil {
			return err
		}
		s.notifier.notifyUser(userID)
		return nil
	}
	rc := &storage.Receipt{RoomID: roomID, UserID: userID, Type: typ, ThreadID: threadID, EventID: eventID, TS: s.now().UnixMilli()}
	if _, err := s.store.PutReceipt(ctx, rc); err != nil {
		return err
	}
	s.notifier.notifyRoom(roomID)
	// A receipt clears notifications: the user's phones get the new
	// unread count (push.go).
	s.pushers.ReceiptsChanged(userID)
	if typ == "m.read" && s.isLocalUser(userID) {
		data := map[string]any{"ts": rc.TS}
		if threadID != "" {
			data["thread_id"] = threadID
		}
		s.sendEDU(roomID, "m.receipt", map[string]any{roomID: map[string]any{"m.read": map[string]any{
			userID: map[string]any{"event_ids": []string{eventID}, "data": data}}}})
	}
	return nil
}

// POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}
func (s *Server) postReceipt(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	typ, err := pathParam(r, "receiptType")
	if err != nil {
		return err
	}
	eventID, err := pathParam(r, "eventId")
	if err != nil {
		return err
	}
	var req struct {
		ThreadID string `json:"thread_id"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	switch typ {
	case "m.read", "m.read.private":
	case "m.fully_read":
		if req.ThreadID != "" {
			return matrix.InvalidParam("m.fully_read cannot be threaded")
		}
	default:
		return matrix.InvalidParam("unknown receipt type %q", typ)
	}
	if req.ThreadID != "" && req.ThreadID != "main" && !strings.HasPrefix(req.ThreadID, "$") {
		return matrix.InvalidParam("thread_id must be \"main\" or an event ID")
	}
	if err := s.setReceipt(r.Context(), me.UserID, roomID, typ, eventID, req.ThreadID); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// POST /_matrix/client/v3/rooms/{roomId}/read_markers
func (s *Server) postReadMarkers(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	var req struct {
		FullyRead   string `json:"m.fully_read"`
		Read        string `json:"m.read"`
		ReadPrivate string `json:"m.read.private"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	// Clients mostly name one event for all of them: it is checked once.
	checked := ""
	for _, m := range []struct{ typ, eventID string }{{"m.fully_read", req.FullyRead}, {"m.read", req.Read}, {"m.read.private", req.ReadPrivate}} {
		if m.eventID == "" {
			continue
		}
		if m.eventID != checked {
			if err := s.checkReceiptTarget(r.Context(), me.UserID, roomID, m.eventID); err != nil {
				return err
			}
			checked = m.eventID
		}
		if err := s.putReceipt(r.Context(), me.UserID, roomID, m.typ, m.eventID, ""); err != nil {
			return err
		}
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// receiptEvent renders receipts as one m.receipt ephemeral event for
// viewer, as JSON (nil when none is shown): content is event ID → receipt
// type → user ID → {ts, thread_id}. Other users' private receipts are left
// out; of a user's receipts of one type on one event, the unthreaded one
// wins. Every member a receipt wakes renders it, so it is written straight
// to bytes (in a crowd of members marking messages read, encoding nested
// maps through interfaces cost a tenth of the server's CPU).
func receiptEvent(viewer string, rs []storage.Receipt) json.RawMessage {
	type shown struct {
		ts     int64
		thread string
	}
	type key struct{ event, typ, user string }
	var order []key // first sighting of each (event, type, user)
	by := map[key]shown{}
	for _, rc := range rs {
		if rc.Type == "m.read.private" && rc.UserID != viewer {
			continue
		}
		k := key{rc.EventID, rc.Type, rc.UserID}
		// A user has room for one receipt of a type per event: when they
		// have an unthreaded and a threaded one for the same event, the
		// unthreaded one is shown (MSC4102, spec v1.11 "Threaded read
		// receipts"), whichever was sent last.
		if prev, ok := by[k]; ok {
			if prev.thread == "" || rc.ThreadID != "" {
				continue
			}
		} else {
			order = append(order, k)
		}
		by[k] = shown{rc.TS, rc.ThreadID}
	}
	if len(order) == 0 {
		return nil
	}
	// Grouped by event, then type: sorted, so that each object's keys
	// come together.
	slices.SortStableFunc(order, func(a, b key) int {
		return cmp.Or(strings.Compare(a.event, b.event), strings.Compare(a.typ, b.typ))
	})
	b := make([]byte, 0, 48+len(order)*96)
	b = append(b, `{"type":"m.receipt","content":{`...)
	for i, k := range order {
		newEvent := i == 0 || k.event != order[i-1].event
		newType := newEvent || k.typ != order[i-1].typ
		switch {
		case i == 0:
		case newEvent:
			b = append(b, "}},"...)
		case newType:
			b = append(b, "},"...)
		default:
			b = append(b, ',')
		}
		if newEvent {
			b = appendJSONString(b, k.event)
			b = append(b, ":{"...)
		}
		if newType {
			b = appendJSONString(b, k.typ)
			b = append(b, ":{"...)
		}
		r := by[k]
		b = appendJSONString(b, k.user)
		b = append(b, `:{"ts":`...)
		b = strconv.AppendInt(b, r.ts, 10)
		if r.thread != "" {
			b = append(b, `,"thread_id":`...)
			b = appendJSONString(b, r.thread)
		}
		b = append(b, '}')
	}
	return append(b, "}}}}"...)
}
