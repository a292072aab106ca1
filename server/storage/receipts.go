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
	// Many members mark the same message read at once: groupTx.
	err := s.groupTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		id, err := s.nextAuxID(ctx, tx, "receipt")
		if err != nil {
			return err
		}
		r.StreamID = id
		s.receiptMarks.raise(r.RoomID, id) // before the commit (auxmarks.go)
		if _, err := tx.ExecContext(ctx, `INSERT INTO receipts (room_id, user_id, type, thread_id, event_id, ts, stream_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (room_id, user_id, type, thread_id) DO UPDATE SET event_id = excluded.event_id, ts = excluded.ts,
				stream_id = excluded.stream_id`,
			r.RoomID, r.UserID, r.Type, r.ThreadID, r.EventID, r.TS, id); err != nil {
			return fmt.Errorf("storage: put receipt: %w", err)
		}
		return nil
	}, nil)
	return r.StreamID, err
}

// ReceiptRoomsAfter lists the rooms among roomIDs that may have a receipt
// written after after (auxmarks.go): ReceiptsBetween reads only them.
func (s *Store) ReceiptRoomsAfter(roomIDs []string, after int64) []string {
	return s.receiptMarks.keysAfter(roomIDs, after)
}

// ReceiptsBetween lists the receipts of the rooms changed in (after, upTo],
// in stream order. Only the rooms with a receipt written after after are
// read (auxmarks.go).
func (s *Store) ReceiptsBetween(ctx context.Context, roomIDs []string, after, upTo int64) ([]Receipt, error) {
	roomIDs = s.receiptMarks.keysAfter(roomIDs, after)
	if len(roomIDs) == 0 {
		return nil, nil
	}
	cond, arg := s.inSet("room_id", 3, roomIDs)
	rows, err := s.read.QueryContext(ctx, `SELECT room_id, user_id, type, thread_id, event_id, ts, stream_id FROM receipts
		WHERE stream_id > $1 AND stream_id <= $2 AND `+cond+` ORDER BY stream_id`, after, upTo, arg)
	if err != nil {
		return nil, fmt.Errorf("storage: receipts since: %w", err)
	}
	defer rows.Close()
	var out []Receipt
	for rows.Next() {
		var r Receipt
		if err := rows.Scan(&r.RoomID, &r.UserID, &r.Type, &r.ThreadID, &r.EventID, &r.TS, &r.StreamID); err != nil {
			return nil, fmt.Errorf("storage: scan receipt: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: receipts since: %w", err)
	}
	return out, nil
}
