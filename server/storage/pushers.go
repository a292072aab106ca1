package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// Pushers (spec: POST /pushers/set). A pusher belongs to the device that set
// it, and is deleted with it (DeleteDevices, DeleteUserTokens,
// DeactivateUser), as Synapse deletes pushers with their device.

// Pusher is one row of pushers. Data is the JSON object the client gave.
type Pusher struct {
	ID                 int64
	UserID             string
	DeviceID           string
	Kind               string
	AppID              string
	PushKey            string
	PushKeyTS          int64
	AppDisplayName     string
	DeviceDisplayName  string
	ProfileTag         string
	Lang               string
	Data               string
	LastStreamOrdering int64
	LastSuccess        int64
	FailingSince       int64
}

const pusherColumns = `id, user_id, device_id, kind, app_id, pushkey, pushkey_ts, app_display_name, device_display_name,
	profile_tag, lang, data, last_stream_ordering, COALESCE(last_success, 0), COALESCE(failing_since, 0)`

func scanPushers(rows *sql.Rows, err error) ([]*Pusher, error) {
	if err != nil {
		return nil, fmt.Errorf("storage: pushers: %w", err)
	}
	defer rows.Close()
	var out []*Pusher
	for rows.Next() {
		p := &Pusher{}
		if err := rows.Scan(&p.ID, &p.UserID, &p.DeviceID, &p.Kind, &p.AppID, &p.PushKey, &p.PushKeyTS, &p.AppDisplayName,
			&p.DeviceDisplayName, &p.ProfileTag, &p.Lang, &p.Data, &p.LastStreamOrdering, &p.LastSuccess, &p.FailingSince); err != nil {
			return nil, fmt.Errorf("storage: scan pusher: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// SetPusher creates the user's pusher for (app_id, pushkey) or replaces its
// settings. An existing pusher keeps its device (one device may change
// another's pusher), and, as in Synapse, every pusher set starts delivering
// from now: LastStreamOrdering is the caller's current stream position.
// Unless appendToOthers, the pushers of other users with the same app_id
// and pushkey are deleted (spec: the append flag); their user IDs are
// returned.
func (s *Store) SetPusher(ctx context.Context, p *Pusher, appendToOthers bool) ([]string, error) {
	var removed []string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if !appendToOthers {
			rows, err := tx.QueryContext(ctx, `DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3 RETURNING user_id`,
				p.AppID, p.PushKey, p.UserID)
			if err != nil {
				return fmt.Errorf("storage: remove other users' pushers: %w", err)
			}
			for rows.Next() {
				var u string
				if err := rows.Scan(&u); err != nil {
					rows.Close()
					return err
				}
				removed = append(removed, u)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO pushers (user_id, device_id, kind, app_id, pushkey, pushkey_ts, app_display_name,
			device_display_name, profile_tag, lang, data, last_stream_ordering) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
			ON CONFLICT (app_id, pushkey, user_id) DO UPDATE SET kind = excluded.kind, pushkey_ts = excluded.pushkey_ts,
				app_display_name = excluded.app_display_name, device_display_name = excluded.device_display_name,
				profile_tag = excluded.profile_tag, lang = excluded.lang, data = excluded.data,
				last_stream_ordering = excluded.last_stream_ordering, last_success = NULL, failing_since = NULL`,
			p.UserID, p.DeviceID, p.Kind, p.AppID, p.PushKey, p.PushKeyTS, p.AppDisplayName, p.DeviceDisplayName, p.ProfileTag,
			p.Lang, p.Data, p.LastStreamOrdering)
		if err != nil {
			return fmt.Errorf("storage: set pusher: %w", err)
		}
		return nil
	})
	return removed, err
}

// DeletePusher deletes the user's pusher for (app_id, pushkey), if any.
func (s *Store) DeletePusher(ctx context.Context, userID, appID, pushKey string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3`,
			userID, appID, pushKey); err != nil {
			return fmt.Errorf("storage: delete pusher: %w", err)
		}
		return nil
	})
}

// PushersOf lists a user's pushers, oldest first.
func (s *Store) PushersOf(ctx context.Context, userID string) ([]*Pusher, error) {
	return scanPushers(s.read.QueryContext(ctx, `SELECT `+pusherColumns+` FROM pushers WHERE user_id = $1 ORDER BY id`, userID))
}

// PusherByID returns one pusher, or ErrNotFound (it was deleted).
func (s *Store) PusherByID(ctx context.Context, id int64) (*Pusher, error) {
	ps, err := scanPushers(s.read.QueryContext(ctx, `SELECT `+pusherColumns+` FROM pushers WHERE id = $1`, id))
	if err != nil {
		return nil, err
	}
	if len(ps) == 0 {
		return nil, ErrNotFound
	}
	return ps[0], nil
}

// PusherUsers lists the users with a pusher of kind.
func (s *Store) PusherUsers(ctx context.Context, kind string) ([]string, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT DISTINCT user_id FROM pushers WHERE kind = $1`, kind)
	if err != nil {
		return nil, fmt.Errorf("storage: pusher users: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// PusherProgress records how far a pusher got: its notifications up to pos
// were delivered (success set) or given up on, and whether its gateway is
// failing (failingSince, 0 when not). ErrNotFound: the pusher was deleted
// meanwhile.
func (s *Store) PusherProgress(ctx context.Context, id, pos, success, failingSince int64) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE pushers SET
			last_stream_ordering = CASE WHEN last_stream_ordering < $2 THEN $2 ELSE last_stream_ordering END,
			last_success = COALESCE($3, last_success), failing_since = $4 WHERE id = $1`,
			id, pos, nullInt(success), nullInt(failingSince))
		if err != nil {
			return fmt.Errorf("storage: pusher progress: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// DeletePusherByID deletes one pusher (its gateway rejected its pushkey).
func (s *Store) DeletePusherByID(ctx context.Context, id int64) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM pushers WHERE id = $1`, id); err != nil {
			return fmt.Errorf("storage: delete pusher: %w", err)
		}
		return nil
	})
}
