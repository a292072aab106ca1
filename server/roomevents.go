package server

import (
	"context"
	"errors"

	"hearth/server/matrix"
	"hearth/server/rooms"
	"hearth/server/storage"
	"hearth/server/timeline"
)

// Local events enter their room through the timeline (package timeline),
// like every other event. This file adapts the handlers' requests to it and
// its refusals to Matrix errors.

// roomsKey is the server's signing key in the form package rooms uses.
func (s *Server) roomsKey() rooms.SigningKey {
	return rooms.SigningKey{ServerName: s.cfg.ServerName, KeyID: s.key.ID, Private: s.key.Priv}
}

// newEvent is one event a local user asks for.
type newEvent struct {
	Type     string
	StateKey *string
	Sender   string
	Content  any
	// Device and TxnID make sends idempotent and fill unsigned.transaction_id.
	Device *Device
	TxnID  string
	// txnChecked is the mark taken before TxnID was looked up and not
	// found (timeline.NewEvent.TxnChecked).
	txnChecked timeline.TxnMark
	// IgnoreBlock lets the event into a blocked room: the leaves an admin's
	// room deletion sends for local users after blocking it.
	IgnoreBlock bool
}

// sendEvents appends events to a room in order. An event the auth rules
// refuse stops the batch with 403 M_FORBIDDEN and leaves the room unchanged
// from that event on; the events before it are returned.
func (s *Server) sendEvents(ctx context.Context, roomID string, evs ...newEvent) ([]*storage.Event, error) {
	tevs := make([]timeline.NewEvent, len(evs))
	for i, ne := range evs {
		tevs[i] = timeline.NewEvent{Type: ne.Type, StateKey: ne.StateKey, Sender: ne.Sender, Content: ne.Content, IgnoreBlock: ne.IgnoreBlock}
		if ne.Device != nil && ne.TxnID != "" {
			tevs[i].DeviceID, tevs[i].TxnID, tevs[i].TxnScope = ne.Device.DeviceID, ne.TxnID, txnScope(ne.Type, roomID)
			tevs[i].TxnChecked = ne.txnChecked
		}
	}
	out, err := s.timeline.Send(ctx, roomID, tevs...)
	return out, sendError(err)
}

// badContentRules are the auth rules that refuse an event for its content
// alone (m.room.power_levels: values not integers, users not user IDs,
// v12's creators listed), whatever the sender's power.
var badContentRules = map[string]bool{"10.1": true, "10.2": true, "10.3": true, "10.4": true}

// sendError turns what the timeline refuses into the client's error.
func sendError(err error) error {
	var authErr *rooms.AuthError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, timeline.ErrUnknownRoom):
		return &matrix.Error{Code: "M_NOT_FOUND", Msg: "unknown room", Err: err}
	case errors.Is(err, timeline.ErrRoomBlocked):
		return &matrix.Error{Code: "M_FORBIDDEN", Msg: "this room has been blocked on this server", Err: err}
	case errors.As(err, &authErr) && badContentRules[authErr.Rule]:
		// Not a matter of permission: the content can never be valid
		// (a malformed power levels event, a v12 creator listed in it),
		// whoever sends it. 400, as Synapse answers.
		return matrix.BadJSON("%s", authErr.Reason)
	case errors.As(err, &authErr):
		return matrix.Forbidden("%s", authErr.Reason)
	case errors.Is(err, rooms.ErrEventTooLarge):
		return matrix.TooLarge("%v", err)
	case errors.Is(err, rooms.ErrBadEvent):
		// e.g. integers beyond ±(2^53-1) or floats in a v6+ room.
		return matrix.BadJSON("%v", err)
	}
	return err
}
