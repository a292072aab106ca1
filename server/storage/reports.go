package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// Reports users make about events, rooms and users (spec: "Reporting
// content"), read by admins.

// EventReport is one report about an event.
type EventReport struct {
	ID         int64
	ReceivedTS int64
	RoomID     string
	EventID    string
	UserID     string
	Reason     *string
	Score      *int64
}

// AddEventReport stores a report and sets its ID.
func (s *Store) AddEventReport(ctx context.Context, r *EventReport) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `INSERT INTO event_reports (received_ts, room_id, event_id, user_id, reason, score)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`, r.ReceivedTS, r.RoomID, r.EventID, r.UserID, r.Reason, r.Score).Scan(&r.ID)
		if err != nil {
			return fmt.Errorf("storage: add event report: %w", err)
		}
		return nil
	})
}

// EventReportFilter selects reports; empty fields match everything.
type EventReportFilter struct {
	From, Limit    int
	Desc           bool // newest first (Synapse's default, dir=b)
	UserID, RoomID string
}

const eventReportColumns = `id, received_ts, room_id, event_id, user_id, reason, score`

func scanEventReport(row interface{ Scan(...any) error }) (*EventReport, error) {
	r := &EventReport{}
	var reason sql.NullString
	var score sql.NullInt64
	if err := row.Scan(&r.ID, &r.ReceivedTS, &r.RoomID, &r.EventID, &r.UserID, &reason, &score); err != nil {
		return nil, err
	}
	if reason.Valid {
		r.Reason = &reason.String
	}
	if score.Valid {
		r.Score = &score.Int64
	}
	return r, nil
}

// EventReports returns one page of reports and how many match. user_id
// and room_id match as substrings, as in Synapse, and ignore case on both
// engines: LIKE alone ignores ASCII case on SQLite but not on PostgreSQL,
// so both sides are lowered (no ILIKE, which SQLite lacks).
func (s *Store) EventReports(ctx context.Context, f EventReportFilter) ([]*EventReport, int, error) {
	where := `WHERE ($1 = '' OR LOWER(user_id) LIKE LOWER($2) ESCAPE '\')
		AND ($3 = '' OR LOWER(room_id) LIKE LOWER($4) ESCAPE '\')`
	args := []any{f.UserID, "%" + escapeLike(f.UserID) + "%", f.RoomID, "%" + escapeLike(f.RoomID) + "%"}
	var total int
	if err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM event_reports `+where, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("storage: count event reports: %w", err)
	}
	order := "ASC"
	if f.Desc {
		order = "DESC"
	}
	rows, err := s.read.QueryContext(ctx, `SELECT `+eventReportColumns+` FROM event_reports `+where+
		` ORDER BY received_ts `+order+`, id `+order+` LIMIT $5 OFFSET $6`, append(args, f.Limit, f.From)...)
	if err != nil {
		return nil, 0, fmt.Errorf("storage: event reports: %w", err)
	}
	defer rows.Close()
	var out []*EventReport
	for rows.Next() {
		r, err := scanEventReport(rows)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, r)
	}
	return out, total, rows.Err()
}

// EventReportByID returns one report, or ErrNotFound.
func (s *Store) EventReportByID(ctx context.Context, id int64) (*EventReport, error) {
	r, err := scanEventReport(s.read.QueryRowContext(ctx, `SELECT `+eventReportColumns+` FROM event_reports WHERE id = $1`, id))
	if err != nil {
		return nil, notFound(err, "event report")
	}
	return r, nil
}

// DeleteEventReport removes a report, or returns ErrNotFound.
func (s *Store) DeleteEventReport(ctx context.Context, id int64) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM event_reports WHERE id = $1`, id)
		if err != nil {
			return fmt.Errorf("storage: delete event report: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// AddRoomReport stores a report about a room.
func (s *Store) AddRoomReport(ctx context.Context, roomID, userID, reason string, ts int64) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO room_reports (received_ts, room_id, user_id, reason) VALUES ($1, $2, $3, $4)`,
			ts, roomID, userID, reason)
		if err != nil {
			return fmt.Errorf("storage: add room report: %w", err)
		}
		return nil
	})
}

// AddUserReport stores a report about a user.
func (s *Store) AddUserReport(ctx context.Context, target, userID, reason string, ts int64) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO user_reports (received_ts, target_user_id, user_id, reason) VALUES ($1, $2, $3, $4)`,
			ts, target, userID, reason)
		if err != nil {
			return fmt.Errorf("storage: add user report: %w", err)
		}
		return nil
	})
}

// CountReports returns how many room and user reports are stored.
func (s *Store) CountReports(ctx context.Context) (rooms, users int64, err error) {
	if rooms, err = s.count(ctx, `SELECT COUNT(*) FROM room_reports`, "room reports"); err != nil {
		return 0, 0, err
	}
	users, err = s.count(ctx, `SELECT COUNT(*) FROM user_reports`, "user reports")
	return rooms, users, err
}
