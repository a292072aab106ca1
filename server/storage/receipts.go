package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// Receipt is one user's receipt in a room (spec: "Receipts").
type Receipt struct {
	RoomID   string
	UserID   string
	Type     string // m.read, m.read.private
	ThreadID string // "" unthreaded, "main", or a thread root event ID
	EventID  string
	TS       int64
	StreamID int64
}

// PutReceipt records a receipt, replacing the user's previous one of the
// same type and thread, and returns its aux stream position.
func (s *Store) PutReceipt(ctx context.Context, r *Receipt) (int64, error) {
	defer s.c.unread.Remove(r.UserID)
	err := s.tx(ctx, func(tx *sql.Tx) error {
		id, err := s.nextAuxID(ctx, tx, "receipt")
		if err != nil {
			return err
		}
		r.StreamID = id
		if _, err := tx.ExecContext(ctx, `INSERT INTO receipts (room_id, user_id, type, thread_id, event_id, ts, stream_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (room_id, user_id, type, thread_id) DO UPDATE SET event_id = excluded.event_id, ts = excluded.ts,
				stream_id = excluded.stream_id`,
			r.RoomID, r.UserID, r.Type, r.ThreadID, r.EventID, r.TS, id); err != nil {
			return fmt.Errorf("storage: put receipt: %w", err)
		}
		return nil
	})
	return r.StreamID, err
}

// ReceiptsBetween lists the receipts of the rooms changed in (after, upTo],
// in stream order.
func (s *Store) ReceiptsBetween(ctx context.Context, roomIDs []string, after, upTo int64) ([]Receipt, error) {
	var out []Receipt
	for start := 0; start < len(roomIDs); start += 500 {
		chunk := roomIDs[start:min(start+500, len(roomIDs))]
		args := []any{after, upTo}
		for _, r := range chunk {
			args = append(args, r)
		}
		rows, err := s.read.QueryContext(ctx, `SELECT room_id, user_id, type, thread_id, event_id, ts, stream_id FROM receipts
			WHERE stream_id > $1 AND stream_id <= $2 AND room_id IN (`+inList(3, len(chunk))+`) ORDER BY stream_id`, args...)
		if err != nil {
			return nil, fmt.Errorf("storage: receipts since: %w", err)
		}
		for rows.Next() {
			var r Receipt
			if err := rows.Scan(&r.RoomID, &r.UserID, &r.Type, &r.ThreadID, &r.EventID, &r.TS, &r.StreamID); err != nil {
				rows.Close()
				return nil, fmt.Errorf("storage: scan receipt: %w", err)
			}
			out = append(out, r)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
