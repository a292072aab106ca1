package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// To-device messages (spec: "Send-to-Device messaging"). Each message takes
// an aux stream position; /sync delivers a device's messages above its since
// token and deletes those at or below it, which the device has
// acknowledged by sending that token.

// ToDeviceMessage is one message to one device.
type ToDeviceMessage struct {
	UserID, DeviceID string
	Sender, Type     string
	Content          []byte
	StreamID         int64
}

// SendToDevice queues msgs for local devices, and remote (m.direct_to_device
// EDUs) for other servers, unless the sender's transaction txnID was seen
// already, in which case it does nothing and reports false.
//
// Messages received from other servers come through here too, with
// senderDevice "" and the EDU's message_id as txnID: a message delivered
// twice (its transaction retried) is queued once.
func (s *Store) SendToDevice(ctx context.Context, senderUser, senderDevice, txnID string, msgs []ToDeviceMessage, remote []OutboxEDU) (bool, error) {
	sent := false
	// After the transaction, the recipients' queues are not known empty.
	defer func() {
		for _, m := range msgs {
			s.c.toDeviceEmpty.Remove(userDevice{m.UserID, m.DeviceID})
		}
	}()
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO to_device_txns (user_id, device_id, txn_id, created_ts) VALUES ($1, $2, $3, $4)
			ON CONFLICT (user_id, device_id, txn_id) DO NOTHING`, senderUser, senderDevice, txnID, nowMS())
		if err != nil {
			return fmt.Errorf("storage: to-device txn: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		sent = true
		if err := s.queueOutboxEDUs(ctx, tx, remote); err != nil {
			return err
		}
		if len(msgs) == 0 {
			return nil
		}
		id, err := s.nextAuxID(ctx, tx, "to_device")
		if err != nil {
			return err
		}
		for _, m := range msgs {
			s.toDeviceMarks.raise(m.UserID, id) // before the commit (auxmarks.go)
			if _, err := tx.ExecContext(ctx, `INSERT INTO to_device (stream_id, user_id, device_id, sender, type, content) VALUES ($1, $2, $3, $4, $5, $6)`,
				id, m.UserID, m.DeviceID, m.Sender, m.Type, string(m.Content)); err != nil {
				return fmt.Errorf("storage: queue to-device message: %w", err)
			}
		}
		return nil
	})
	return sent, err
}

// AckToDevice deletes the device's messages at or below upTo.
func (s *Store) AckToDevice(ctx context.Context, userID, deviceID string, upTo int64) error {
	// Skip the write transaction when there is nothing to delete, which
	// is nearly always, and the read too when the queue was found empty
	// since the last message sent to the device (toDeviceEmpty).
	k := userDevice{userID, deviceID}
	if _, ok := s.c.toDeviceEmpty.Get(k); ok {
		return nil
	}
	gen := s.c.toDeviceEmpty.Generation()
	var n, all int
	if err := s.read.QueryRowContext(ctx, `SELECT COUNT(CASE WHEN stream_id <= $3 THEN 1 END), COUNT(*) FROM to_device
		WHERE user_id = $1 AND device_id = $2`, userID, deviceID, upTo).Scan(&n, &all); err != nil {
		return fmt.Errorf("storage: count acknowledged to-device messages: %w", err)
	}
	if all == 0 {
		s.c.toDeviceEmpty.AddIfGeneration(k, true, gen)
	}
	if n == 0 {
		return nil
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM to_device WHERE user_id = $1 AND device_id = $2 AND stream_id <= $3`,
			userID, deviceID, upTo); err != nil {
			return fmt.Errorf("storage: delete acknowledged to-device messages: %w", err)
		}
		return nil
	})
}

// ToDeviceBetween returns up to limit of the device's messages in
// (after, upTo], oldest first; without a message to the user after after,
// no query (auxmarks.go).
func (s *Store) ToDeviceBetween(ctx context.Context, userID, deviceID string, after, upTo int64, limit int) ([]ToDeviceMessage, error) {
	if !s.toDeviceMarks.after(userID, after) {
		return nil, nil
	}
	rows, err := s.read.QueryContext(ctx, `SELECT stream_id, sender, type, content FROM to_device
		WHERE user_id = $1 AND device_id = $2 AND stream_id > $3 AND stream_id <= $4 ORDER BY stream_id LIMIT $5`,
		userID, deviceID, after, upTo, limit)
	if err != nil {
		return nil, fmt.Errorf("storage: to-device messages: %w", err)
	}
	defer rows.Close()
	var out []ToDeviceMessage
	for rows.Next() {
		m := ToDeviceMessage{UserID: userID, DeviceID: deviceID}
		var c string
		if err := rows.Scan(&m.StreamID, &m.Sender, &m.Type, &c); err != nil {
			return nil, fmt.Errorf("storage: scan to-device message: %w", err)
		}
		m.Content = []byte(c)
		out = append(out, m)
	}
	return out, rows.Err()
}

// Presence is a user's presence (spec: "Presence").
type Presence struct {
	UserID       string
	State        string
	StatusMsg    *string
	LastActiveTS int64
	StreamID     int64
}

// PresenceOf returns a user's presence, or ErrNotFound.
func (s *Store) PresenceOf(ctx context.Context, userID string) (*Presence, error) {
	p := Presence{UserID: userID}
	var msg sql.NullString
	err := s.read.QueryRowContext(ctx, `SELECT state, status_msg, last_active_ts, stream_id FROM presence WHERE user_id = $1`, userID).
		Scan(&p.State, &msg, &p.LastActiveTS, &p.StreamID)
	if err != nil {
		return nil, notFound(err, "presence")
	}
	if msg.Valid {
		p.StatusMsg = &msg.String
	}
	return &p, nil
}

// SetPresence stores a presence. When only last_active_ts moves (the state
// and message are unchanged) it takes no stream position, so busy clients
// do not wake their contacts' /sync; it reports whether it took one. With
// touch set it only records activity: an existing presence keeps its state
// and a new one is stored at stream position 0, seen by initial syncs only.
func (s *Store) SetPresence(ctx context.Context, p *Presence, touch bool) (bool, error) {
	changed := false
	// Every client's /sync may set presence: groupTx.
	err := s.groupTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		changed = false // a second run (groupTx) starts afresh
		var state string
		var msg sql.NullString
		err := tx.QueryRowContext(ctx, `SELECT state, status_msg FROM presence WHERE user_id = $1`, p.UserID).Scan(&state, &msg)
		if err != nil && notFound(err, "") != ErrNotFound {
			return fmt.Errorf("storage: read presence: %w", err)
		}
		if touch && err != nil {
			if _, err := tx.ExecContext(ctx, `INSERT INTO presence (user_id, state, status_msg, last_active_ts, stream_id) VALUES ($1, $2, $3, $4, 0)`,
				p.UserID, p.State, p.StatusMsg, p.LastActiveTS); err != nil {
				return fmt.Errorf("storage: put presence: %w", err)
			}
			return nil
		}
		same := err == nil && state == p.State && msg.Valid == (p.StatusMsg != nil) && (p.StatusMsg == nil || msg.String == *p.StatusMsg)
		if same || touch {
			_, err := tx.ExecContext(ctx, `UPDATE presence SET last_active_ts = $2 WHERE user_id = $1`, p.UserID, p.LastActiveTS)
			if err != nil {
				return fmt.Errorf("storage: touch presence: %w", err)
			}
			return nil
		}
		id, err := s.nextAuxID(ctx, tx, "presence")
		if err != nil {
			return err
		}
		changed = true
		if _, err := tx.ExecContext(ctx, `INSERT INTO presence (user_id, state, status_msg, last_active_ts, stream_id) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, status_msg = excluded.status_msg,
				last_active_ts = excluded.last_active_ts, stream_id = excluded.stream_id`,
			p.UserID, p.State, p.StatusMsg, p.LastActiveTS, id); err != nil {
			return fmt.Errorf("storage: put presence: %w", err)
		}
		return nil
	}, nil)
	return changed, err
}

// PresenceBetween lists the presence of the users among candidates that
// changed in (after, upTo], in stream order.
func (s *Store) PresenceBetween(ctx context.Context, candidates []string, after, upTo int64) ([]Presence, error) {
	if len(candidates) == 0 {
		return nil, nil
	}
	cond, arg := s.inSet("user_id", 3, candidates)
	return s.queryPresence(ctx, "presence since", `SELECT user_id, state, status_msg, last_active_ts, stream_id FROM presence
		WHERE stream_id > $1 AND stream_id <= $2 AND `+cond+` ORDER BY stream_id`, after, upTo, arg)
}

// PresenceChanges lists every presence that changed in (after, upTo], in
// stream order: one row a user, so no more than the users known.
func (s *Store) PresenceChanges(ctx context.Context, after, upTo int64) ([]Presence, error) {
	return s.queryPresence(ctx, "presence since", `SELECT user_id, state, status_msg, last_active_ts, stream_id FROM presence
		WHERE stream_id > $1 AND stream_id <= $2 ORDER BY stream_id`, after, upTo)
}

// StalePresence lists the users who are not offline but were last active
// before the given time (Unix ms); with a non-empty server name, only
// users whose ID ends in ":"+server (and perhaps a few more: LIKE ignores
// ASCII case on SQLite, so callers check the IDs they need to).
func (s *Store) StalePresence(ctx context.Context, before int64, server string) ([]Presence, error) {
	q := `SELECT user_id, state, status_msg, last_active_ts, stream_id FROM presence
		WHERE state <> 'offline' AND last_active_ts < $1`
	args := []any{before}
	if server != "" {
		// Server names have no % or _ (spec: "Server name").
		q += ` AND user_id LIKE $2`
		args = append(args, "%:"+server)
	}
	return s.queryPresence(ctx, "stale presence", q, args...)
}

// queryPresence runs a query of presence rows.
func (s *Store) queryPresence(ctx context.Context, op, query string, args ...any) ([]Presence, error) {
	rows, err := s.read.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: %s: %w", op, err)
	}
	defer rows.Close()
	var out []Presence
	for rows.Next() {
		var p Presence
		var msg sql.NullString
		if err := rows.Scan(&p.UserID, &p.State, &msg, &p.LastActiveTS, &p.StreamID); err != nil {
			return nil, fmt.Errorf("storage: scan presence: %w", err)
		}
		if msg.Valid {
			p.StatusMsg = &msg.String
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: %s: %w", op, err)
	}
	return out, nil
}
