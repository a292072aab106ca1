package server

import (
	"context"
	"encoding/json"

	"hearth/server/federation"
	"hearth/server/storage"
)

// The federation sender's Outbox: the EDUs that must reach other servers
// even across failures and restarts (federation.Outbox). Two kinds are
// persisted, in the transaction of the change that makes them (migration
// 0013):
//
//   - device list pokes: a local user's device or cross-signing keys
//     changed, for each server sharing a room with them. They coalesce per
//     device, and become m.device_list_update / m.signing_key_update EDUs
//     only when sent, built from the keys as they are then, so a
//     destination that was down for a week gets one update per changed
//     device, not the week's history. prev_id chains each user's updates
//     to a destination from the last one it was sent
//     (device_list_outbound_last).
//   - m.direct_to_device EDUs, whose content is fixed when the client
//     sends them (federation_edu_outbox).
//
// The sender asks Pending for a destination's EDUs when it builds a
// transaction (device lists first, as Synapse sends them) and calls the
// acknowledgement once the transaction is delivered; only then are they
// forgotten. A transaction that failed, or a process that stopped, leaves
// them to the next transaction. A receiver that gets one twice drops the
// copy: to-device messages by message_id, device list updates by
// stream_id.
type fedOutbox struct{ s *Server }

// Destinations lists the destinations with EDUs waiting.
func (o fedOutbox) Destinations(ctx context.Context) ([]string, error) {
	return o.s.store.OutboxDestinations(ctx)
}

// Pending returns up to limit EDUs waiting for destination: one per
// device list poke, then the queued to-device EDUs.
func (o fedOutbox) Pending(ctx context.Context, destination string, limit int) ([]federation.EDU, func(context.Context) error, error) {
	st := o.s.store
	pokes, err := st.DeviceListPokes(ctx, destination, limit)
	if err != nil {
		return nil, nil, err
	}
	edus, err := o.s.deviceListEDUs(ctx, pokes)
	if err != nil {
		return nil, nil, err
	}
	var queued []storage.OutboxEDU
	if n := limit - len(pokes); n > 0 {
		if queued, err = st.OutboxEDUs(ctx, destination, n); err != nil {
			return nil, nil, err
		}
	}
	if len(pokes) == 0 && len(queued) == 0 {
		return nil, nil, nil
	}
	ids := make([]int64, 0, len(queued))
	for _, q := range queued {
		edus = append(edus, federation.EDU{Type: q.Type, Content: q.Content})
		ids = append(ids, q.ID)
	}
	ack := func(ctx context.Context) error {
		if err := st.DeviceListPokesSent(ctx, destination, pokes); err != nil {
			return err
		}
		return st.DeleteOutboxEDUs(ctx, ids)
	}
	return edus, ack, nil
}

// userKeys is what the device list EDUs of one user are built from.
type userKeys struct {
	devices map[string]bool   // the devices that exist
	names   map[string]string // their display names
	keys    *keysAnswer
}

// deviceListEDUs builds one EDU per poke, in order: an m.device_list_update
// for a device (deleted when it is gone), an m.signing_key_update for the
// cross-signing keys.
func (s *Server) deviceListEDUs(ctx context.Context, pokes []storage.DeviceListPoke) ([]federation.EDU, error) {
	users := map[string]*userKeys{}
	prev := map[string]int64{}
	out := make([]federation.EDU, 0, len(pokes))
	for _, p := range pokes {
		uk := users[p.UserID]
		if uk == nil {
			devices, err := s.store.Devices(ctx, p.UserID)
			if err != nil {
				return nil, err
			}
			uk = &userKeys{devices: map[string]bool{}, names: map[string]string{}, keys: newKeysAnswer()}
			for _, d := range devices {
				uk.devices[d.DeviceID] = true
				uk.names[d.DeviceID] = d.DisplayName
			}
			if err := s.localKeys(ctx, uk.keys, p.UserID, nil, ""); err != nil {
				return nil, err
			}
			users[p.UserID] = uk
			prev[p.UserID] = p.LastSent
		}
		var typ string
		content := map[string]any{"user_id": p.UserID}
		if p.DeviceID == "" {
			typ = "m.signing_key_update"
			if m := uk.keys.master[p.UserID]; m != nil {
				content["master_key"] = m
			}
			if ss := uk.keys.selfSigning[p.UserID]; ss != nil {
				content["self_signing_key"] = ss
			}
		} else {
			typ = "m.device_list_update"
			content["device_id"] = p.DeviceID
			content["stream_id"] = p.StreamID
			content["prev_id"] = []int64{}
			if last := prev[p.UserID]; last != 0 {
				content["prev_id"] = []int64{last}
			}
			prev[p.UserID] = p.StreamID
			if !uk.devices[p.DeviceID] {
				content["deleted"] = true
			} else if k, ok := uk.keys.devices[p.UserID][p.DeviceID]; ok {
				content["keys"] = k
			}
			if n := uk.names[p.DeviceID]; n != "" && s.cfg.AllowDeviceNameLookupOverFederation {
				content["device_display_name"] = n
			}
		}
		raw, err := json.Marshal(content)
		if err != nil {
			return nil, err
		}
		out = append(out, federation.EDU{Type: typ, Content: raw})
	}
	return out, nil
}

// wakeOutbox tells the federation sender the Outbox has new EDUs (after a
// local user's keys changed). It wakes every destination with some
// waiting, which is a small set: the sender forgets them once delivered.
func (s *Server) wakeOutbox(ctx context.Context) {
	if s.fedSender == nil {
		return
	}
	dests, err := s.store.OutboxDestinations(ctx)
	if err != nil {
		s.log.Warn("federation: cannot list the destinations with EDUs waiting", "err", err)
		return
	}
	s.fedSender.Wake(dests...)
}

// deviceListChanged wakes, after a change of userID's keys, the /sync of
// those who share a room with them and the servers that must be told.
func (s *Server) deviceListChanged(ctx context.Context, userID string) error {
	s.wakeOutbox(ctx)
	return s.notifyPeers(ctx, userID)
}
