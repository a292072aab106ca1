package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Delayed events (MSC4140): events a local user scheduled to be sent later
// (server/delayed_events.go sends them). A row lives until its event is
// sent or it is cancelled. Claiming a row (processed = 1) is what makes
// cancel and restart stop finding it, as in Synapse: once sending began,
// the client can no longer stop it.

// DelayedEvent is one row of delayed_events.
type DelayedEvent struct {
	DelayID  string
	UserID   string
	DeviceID string
	RoomID   string
	Type     string
	StateKey *string
	Content  []byte
	DelayMS  int64
	SendTS   int64
	// CreatedPos is the event stream position when it was scheduled.
	CreatedPos int64
}

// RunningSince is when the delay started: scheduling or the last restart.
func (d *DelayedEvent) RunningSince() int64 { return d.SendTS - d.DelayMS }

// ErrTooManyDelayed is returned by AddDelayedEvent when the user has as
// many delayed events scheduled as allowed; RetryAfterMS says when the
// earliest of them is due (0: unknown).
type ErrTooManyDelayed struct{ RetryAfterMS int64 }

func (e *ErrTooManyDelayed) Error() string { return "storage: too many delayed events scheduled" }

const delayedColumns = `delay_id, user_id, device_id, room_id, event_type, state_key, content, delay_ms, send_ts, created_pos`

func scanDelayed(row interface{ Scan(...any) error }) (*DelayedEvent, error) {
	d := &DelayedEvent{}
	var sk sql.NullString
	var content string
	if err := row.Scan(&d.DelayID, &d.UserID, &d.DeviceID, &d.RoomID, &d.Type, &sk, &content, &d.DelayMS, &d.SendTS, &d.CreatedPos); err != nil {
		return nil, err
	}
	if sk.Valid {
		d.StateKey = &sk.String
	}
	d.Content = []byte(content)
	return d, nil
}

func scanDelayedRows(rows *sql.Rows, err error) ([]*DelayedEvent, error) {
	if err != nil {
		return nil, fmt.Errorf("storage: delayed events: %w", err)
	}
	defer rows.Close()
	var out []*DelayedEvent
	for rows.Next() {
		d, err := scanDelayed(rows)
		if err != nil {
			return nil, fmt.Errorf("storage: scan delayed event: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// AddDelayedEvent stores d (SendTS already set). txnID, when not empty, is
// the client's transaction ID: a second add with the same user, device,
// room and txnID stores nothing and returns the first one's delay ID. limit
// is the most delayed events the user may have scheduled (0: no limit);
// beyond it the add fails with *ErrTooManyDelayed. It returns the delay
// ID the event has.
func (s *Store) AddDelayedEvent(ctx context.Context, d *DelayedEvent, txnID string, limit int, now int64) (string, error) {
	id := d.DelayID
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if txnID != "" {
			var existing string
			err := tx.QueryRowContext(ctx, `SELECT delay_id FROM delayed_events WHERE user_id = $1 AND device_id = $2 AND room_id = $3 AND txn_id = $4`,
				d.UserID, d.DeviceID, d.RoomID, txnID).Scan(&existing)
			if err == nil {
				id = existing
				return nil
			} else if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("storage: delayed event by txn: %w", err)
			}
		}
		if limit > 0 {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM delayed_events WHERE user_id = $1`, d.UserID).Scan(&n); err != nil {
				return fmt.Errorf("storage: count delayed events: %w", err)
			}
			if n >= limit {
				// When the one that brings the user back under the limit is
				// due (Synapse's retry_after_ms).
				var due sql.NullInt64
				if err := tx.QueryRowContext(ctx, `SELECT MAX(send_ts) FROM (SELECT send_ts FROM delayed_events
					WHERE user_id = $1 ORDER BY send_ts LIMIT $2) AS earliest`, d.UserID, n-limit+1).Scan(&due); err != nil {
					return fmt.Errorf("storage: delayed events due: %w", err)
				}
				return &ErrTooManyDelayed{RetryAfterMS: max(due.Int64-now, 0)}
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO delayed_events (`+delayedColumns+`, txn_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
			d.DelayID, d.UserID, d.DeviceID, d.RoomID, d.Type, d.StateKey, string(d.Content), d.DelayMS, d.SendTS, d.CreatedPos, nullStr(txnID))
		if err != nil {
			return fmt.Errorf("storage: add delayed event: %w", err)
		}
		return nil
	})
	return id, err
}

// DelayedEventsOfUser lists the user's scheduled (not yet claimed) delayed
// events, the soonest due first; ids, when given, restricts the list to
// those delay IDs.
func (s *Store) DelayedEventsOfUser(ctx context.Context, userID string, ids []string) ([]*DelayedEvent, error) {
	q := `SELECT ` + delayedColumns + ` FROM delayed_events WHERE user_id = $1 AND processed = 0`
	args := []any{userID}
	if len(ids) > 0 {
		q += ` AND delay_id IN (` + inList(2, len(ids)) + `)`
		for _, id := range ids {
			args = append(args, id)
		}
	}
	return scanDelayedRows(s.read.QueryContext(ctx, q+` ORDER BY send_ts, delay_id`, args...))
}

// CancelDelayedEvent deletes a scheduled delayed event; ErrNotFound when
// there is none (never was, sent, being sent or cancelled).
func (s *Store) CancelDelayedEvent(ctx context.Context, delayID string) error {
	res, err := s.write.ExecContext(ctx, `DELETE FROM delayed_events WHERE delay_id = $1 AND processed = 0`, delayID)
	if err != nil {
		return fmt.Errorf("storage: cancel delayed event: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// RestartDelayedEvent makes a scheduled delayed event due delay_ms after
// now; ErrNotFound when there is no such scheduled event.
func (s *Store) RestartDelayedEvent(ctx context.Context, delayID string, now int64) error {
	res, err := s.write.ExecContext(ctx, `UPDATE delayed_events SET send_ts = $1 + delay_ms WHERE delay_id = $2 AND processed = 0`, now, delayID)
	if err != nil {
		return fmt.Errorf("storage: restart delayed event: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// ClaimDelayedEvent marks one scheduled delayed event as being sent (the
// send action) and returns it; ErrNotFound when there is no such
// scheduled event.
func (s *Store) ClaimDelayedEvent(ctx context.Context, delayID string) (*DelayedEvent, error) {
	var d *DelayedEvent
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE delayed_events SET processed = 1 WHERE delay_id = $1 AND processed = 0`, delayID)
		if err != nil {
			return fmt.Errorf("storage: claim delayed event: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		d, err = scanDelayed(tx.QueryRowContext(ctx, `SELECT `+delayedColumns+` FROM delayed_events WHERE delay_id = $1`, delayID))
		if err != nil {
			return notFound(err, "claimed delayed event")
		}
		return nil
	})
	return d, err
}

// ClaimDueDelayedEvents marks up to 100 delayed events due at now as
// being sent and returns them, the earliest due first; with resume, also
// those claimed before and never deleted (by a process stopped while
// sending them). The caller sends them and deletes each.
func (s *Store) ClaimDueDelayedEvents(ctx context.Context, now int64, resume bool) ([]*DelayedEvent, error) {
	var out []*DelayedEvent
	err := s.tx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `UPDATE delayed_events SET processed = 1 WHERE delay_id IN
			(SELECT delay_id FROM delayed_events WHERE processed = 0 AND send_ts <= $1 ORDER BY send_ts LIMIT 100)
			RETURNING delay_id`, now)
		if err != nil {
			return fmt.Errorf("storage: claim due delayed events: %w", err)
		}
		var ids []any
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return fmt.Errorf("storage: claim due delayed events: %w", err)
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("storage: claim due delayed events: %w", err)
		}
		q := `SELECT ` + delayedColumns + ` FROM delayed_events WHERE processed = 1`
		if !resume {
			if len(ids) == 0 {
				return nil
			}
			q += ` AND delay_id IN (` + inList(1, len(ids)) + `)`
		} else {
			ids = nil
		}
		out, err = scanDelayedRows(tx.QueryContext(ctx, q+` ORDER BY send_ts, delay_id`, ids...))
		return err
	})
	return out, err
}

// DeleteDelayedEvent removes a delayed event once it was sent (or could
// not be).
func (s *Store) DeleteDelayedEvent(ctx context.Context, delayID string) error {
	if _, err := s.write.ExecContext(ctx, `DELETE FROM delayed_events WHERE delay_id = $1`, delayID); err != nil {
		return fmt.Errorf("storage: delete delayed event: %w", err)
	}
	return nil
}

// NextDelayedEventDue is when the next scheduled delayed event is due;
// ok is false when none is scheduled.
func (s *Store) NextDelayedEventDue(ctx context.Context) (ts int64, ok bool, err error) {
	var due sql.NullInt64
	if err := s.read.QueryRowContext(ctx, `SELECT MIN(send_ts) FROM delayed_events WHERE processed = 0`).Scan(&due); err != nil {
		return 0, false, fmt.Errorf("storage: next delayed event: %w", err)
	}
	return due.Int64, due.Valid, nil
}

// CancelDelayedStateEvents deletes the scheduled delayed state events for
// one piece of room state, except those of exceptUser (who set it): MSC4140
// cancels a delayed state event when someone else changes that state. It
// returns how many it deleted.
func (s *Store) CancelDelayedStateEvents(ctx context.Context, roomID, typ, stateKey, exceptUser string) (int64, error) {
	res, err := s.write.ExecContext(ctx, `DELETE FROM delayed_events WHERE room_id = $1 AND event_type = $2 AND state_key = $3
		AND user_id <> $4 AND processed = 0`, roomID, typ, stateKey, exceptUser)
	if err != nil {
		return 0, fmt.Errorf("storage: cancel delayed state events: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}
