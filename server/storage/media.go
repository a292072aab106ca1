package storage

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// Media is one local media repository row (local_media).
type Media struct {
	MediaID       string
	UserID        string
	ContentType   string
	Size          int64
	UploadName    string
	CreatedTS     int64
	LastAccessTS  int64
	SHA256        string
	QuarantinedBy string // "" when not quarantined
	Protected     bool
	Authenticated bool
	Pending       bool  // created with /create, content not uploaded yet
	ExpiresTS     int64 // pending: the upload deadline
}

const mediaColumns = `media_id, user_id, content_type, size, upload_name, created_ts, last_access_ts, sha256,
	COALESCE(quarantined_by, ''), protected, authenticated, pending, COALESCE(expires_ts, 0)`

func scanMedia(row interface{ Scan(...any) error }) (*Media, error) {
	m := &Media{}
	var prot, auth, pend int
	err := row.Scan(&m.MediaID, &m.UserID, &m.ContentType, &m.Size, &m.UploadName, &m.CreatedTS, &m.LastAccessTS,
		&m.SHA256, &m.QuarantinedBy, &prot, &auth, &pend, &m.ExpiresTS)
	if err != nil {
		return nil, err
	}
	m.Protected, m.Authenticated, m.Pending = prot != 0, auth != 0, pend != 0
	return m, nil
}

// CreateMedia records a media item; ErrConflict when the ID is taken.
func (s *Store) CreateMedia(ctx context.Context, m *Media) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		var exp any
		if m.ExpiresTS != 0 {
			exp = m.ExpiresTS
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO local_media (media_id, user_id, content_type, size, upload_name,
			created_ts, last_access_ts, sha256, protected, authenticated, pending, expires_ts)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
			m.MediaID, m.UserID, m.ContentType, m.Size, m.UploadName, m.CreatedTS, m.CreatedTS, m.SHA256,
			boolInt(m.Protected), boolInt(m.Authenticated), boolInt(m.Pending), exp)
		if isUnique(err) {
			return ErrConflict
		}
		if err != nil {
			return fmt.Errorf("storage: create media %s: %w", m.MediaID, err)
		}
		return nil
	})
}

// CompletePendingMedia fills in a pending row once its content is stored.
// It returns ErrNotFound when the row is not pending any more (someone
// uploaded first).
func (s *Store) CompletePendingMedia(ctx context.Context, m *Media) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE local_media SET content_type = $1, size = $2, upload_name = $3, sha256 = $4,
			created_ts = $5, last_access_ts = $5, pending = 0, expires_ts = NULL WHERE media_id = $6 AND pending = 1`,
			m.ContentType, m.Size, m.UploadName, m.SHA256, m.CreatedTS, m.MediaID)
		if err != nil {
			return fmt.Errorf("storage: complete media %s: %w", m.MediaID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// CountPendingMedia counts a user's unexpired pending uploads.
func (s *Store) CountPendingMedia(ctx context.Context, userID string, nowMS int64) (int, error) {
	var n int
	err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM local_media WHERE user_id = $1 AND pending = 1 AND expires_ts > $2`,
		userID, nowMS).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("storage: count pending media: %w", err)
	}
	return n, nil
}

// ExpiredPendingMedia lists pending rows whose deadline passed.
func (s *Store) ExpiredPendingMedia(ctx context.Context, nowMS int64) ([]string, error) {
	return s.mediaIDs(ctx, `SELECT media_id FROM local_media WHERE pending = 1 AND expires_ts <= $1`, nowMS)
}

// MediaByID returns one media row, or ErrNotFound.
func (s *Store) MediaByID(ctx context.Context, mediaID string) (*Media, error) {
	m, err := scanMedia(s.read.QueryRowContext(ctx, `SELECT `+mediaColumns+` FROM local_media WHERE media_id = $1`, mediaID))
	if err != nil {
		return nil, notFound(err, "media "+mediaID)
	}
	return m, nil
}

// TouchMedia records a download.
func (s *Store) TouchMedia(ctx context.Context, mediaID string, ts int64) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE local_media SET last_access_ts = $1 WHERE media_id = $2 AND last_access_ts < $1`, ts, mediaID)
		if err != nil {
			return fmt.Errorf("storage: touch media %s: %w", mediaID, err)
		}
		return nil
	})
}

// MediaFilter selects a page of media (Synapse's GET /users/<id>/media).
type MediaFilter struct {
	UserID  string
	From    int
	Limit   int
	OrderBy string // Synapse's names: media_id, upload_name, created_ts, last_access_ts, media_length, media_type, quarantined_by, safe_from_quarantine
	Desc    bool
}

// mediaOrderColumns maps Synapse's order_by names to columns. ListMedia
// writes the column into its SQL, so only this table may name one.
var mediaOrderColumns = map[string]string{
	"media_id": "media_id", "upload_name": "upload_name", "created_ts": "created_ts", "last_access_ts": "last_access_ts",
	"media_length": "size", "media_type": "content_type", "quarantined_by": "COALESCE(quarantined_by, '')",
	"safe_from_quarantine": "protected",
}

// MediaOrderKnown reports whether orderBy is one of Synapse's order_by
// names ListMedia sorts by.
func MediaOrderKnown(orderBy string) bool {
	_, ok := mediaOrderColumns[orderBy]
	return ok
}

// ListMedia returns one page of a user's uploaded media (pending uploads
// excluded) and the total.
func (s *Store) ListMedia(ctx context.Context, f MediaFilter) ([]*Media, int, error) {
	where, args := `WHERE pending = 0`, []any{}
	if f.UserID != "" {
		args = append(args, f.UserID)
		where += fmt.Sprintf(` AND user_id = $%d`, len(args))
	}
	var total int
	if err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM local_media `+where, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("storage: count media: %w", err)
	}
	col, ok := mediaOrderColumns[f.OrderBy]
	if !ok {
		col = "created_ts"
	}
	dir := "ASC"
	if f.Desc {
		dir = "DESC"
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	args = append(args, f.Limit, f.From)
	rows, err := s.read.QueryContext(ctx, fmt.Sprintf(`SELECT %s FROM local_media %s ORDER BY %s %s, media_id ASC LIMIT $%d OFFSET $%d`,
		mediaColumns, where, col, dir, len(args)-1, len(args)), args...)
	if err != nil {
		return nil, 0, fmt.Errorf("storage: list media: %w", err)
	}
	defer rows.Close()
	out := []*Media{}
	for rows.Next() {
		m, err := scanMedia(rows)
		if err != nil {
			return nil, 0, fmt.Errorf("storage: list media: %w", err)
		}
		out = append(out, m)
	}
	return out, total, rows.Err()
}

// DeleteMediaRows removes the rows and returns the IDs that existed.
func (s *Store) DeleteMediaRows(ctx context.Context, ids []string) ([]string, error) {
	deleted := []string{}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		deleted = deleted[:0]
		for _, id := range ids {
			res, err := tx.ExecContext(ctx, `DELETE FROM local_media WHERE media_id = $1`, id)
			if err != nil {
				return fmt.Errorf("storage: delete media %s: %w", id, err)
			}
			if n, _ := res.RowsAffected(); n > 0 {
				deleted = append(deleted, id)
			}
		}
		return nil
	})
	return deleted, err
}

// MediaIDsBefore lists uploaded media neither created nor downloaded since
// beforeTS, larger than sizeGT bytes, and not protected (Synapse's
// POST /media/delete).
func (s *Store) MediaIDsBefore(ctx context.Context, beforeTS, sizeGT int64) ([]string, error) {
	return s.mediaIDs(ctx, `SELECT media_id FROM local_media WHERE pending = 0 AND protected = 0
		AND created_ts < $1 AND last_access_ts < $1 AND size > $2 ORDER BY media_id`, beforeTS, sizeGT)
}

// UserMediaIDs lists every uploaded media ID of a user.
func (s *Store) UserMediaIDs(ctx context.Context, userID string) ([]string, error) {
	return s.mediaIDs(ctx, `SELECT media_id FROM local_media WHERE user_id = $1 AND pending = 0 ORDER BY media_id`, userID)
}

func (s *Store) mediaIDs(ctx context.Context, q string, args ...any) ([]string, error) {
	rows, err := s.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: media ids: %w", err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("storage: media ids: %w", err)
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// SetMediaQuarantine quarantines the media (by is the admin) or releases it
// (by ""). Protected media is never quarantined, as in Synapse. It returns
// how many rows changed state.
func (s *Store) SetMediaQuarantine(ctx context.Context, ids []string, by string) (int, error) {
	n := 0
	err := s.tx(ctx, func(tx *sql.Tx) error {
		n = 0
		for _, id := range ids {
			var res sql.Result
			var err error
			if by == "" {
				res, err = tx.ExecContext(ctx, `UPDATE local_media SET quarantined_by = NULL WHERE media_id = $1 AND quarantined_by IS NOT NULL`, id)
			} else {
				res, err = tx.ExecContext(ctx, `UPDATE local_media SET quarantined_by = $1 WHERE media_id = $2 AND protected = 0`, by, id)
			}
			if err != nil {
				return fmt.Errorf("storage: quarantine media %s: %w", id, err)
			}
			c, _ := res.RowsAffected()
			n += int(c)
		}
		return nil
	})
	return n, err
}

// SetMediaProtected marks media safe from quarantine and age-based deletion.
func (s *Store) SetMediaProtected(ctx context.Context, mediaID string, protected bool) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE local_media SET protected = $1 WHERE media_id = $2`, boolInt(protected), mediaID)
		if err != nil {
			return fmt.Errorf("storage: protect media %s: %w", mediaID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// MediaUsage is one user's line in the media statistics.
type MediaUsage struct {
	UserID      string
	DisplayName string
	Count       int64
	Bytes       int64
}

// MediaUsageFilter selects Synapse's GET /statistics/users/media page.
type MediaUsageFilter struct {
	From, Limit     int
	OrderBy         string // user_id, displayname, media_length, media_count
	Desc            bool
	SearchTerm      string
	FromTS, UntilTS int64 // created_ts bounds; 0: none
}

var mediaUsageOrder = map[string]string{"user_id": "m.user_id", "displayname": "COALESCE(u.displayname, '')",
	"media_length": "media_length", "media_count": "media_count"}

// MediaUsageByUser sums each user's uploaded media; users without media
// are not listed.
func (s *Store) MediaUsageByUser(ctx context.Context, f MediaUsageFilter) ([]MediaUsage, int, error) {
	where, args := `WHERE m.pending = 0`, []any{}
	if f.FromTS > 0 {
		args = append(args, f.FromTS)
		where += fmt.Sprintf(` AND m.created_ts >= $%d`, len(args))
	}
	if f.UntilTS > 0 {
		args = append(args, f.UntilTS)
		where += fmt.Sprintf(` AND m.created_ts <= $%d`, len(args))
	}
	if f.SearchTerm != "" {
		args = append(args, "%"+lowerLike(f.SearchTerm)+"%")
		where += fmt.Sprintf(` AND (LOWER(m.user_id) LIKE $%d ESCAPE '\' OR LOWER(COALESCE(u.displayname, '')) LIKE $%d ESCAPE '\')`, len(args), len(args))
	}
	from := `FROM local_media m LEFT JOIN users u ON u.user_id = m.user_id ` + where + ` GROUP BY m.user_id, u.displayname`
	var total int
	if err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT m.user_id `+from+`) t`, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("storage: count media usage: %w", err)
	}
	col, ok := mediaUsageOrder[f.OrderBy]
	if !ok {
		col = "m.user_id"
	}
	dir := "ASC"
	if f.Desc {
		dir = "DESC"
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	args = append(args, f.Limit, f.From)
	rows, err := s.read.QueryContext(ctx, fmt.Sprintf(`SELECT m.user_id, COALESCE(u.displayname, ''), COUNT(*) AS media_count,
		SUM(m.size) AS media_length %s ORDER BY %s %s, m.user_id ASC LIMIT $%d OFFSET $%d`, from, col, dir, len(args)-1, len(args)), args...)
	if err != nil {
		return nil, 0, fmt.Errorf("storage: media usage: %w", err)
	}
	defer rows.Close()
	out := []MediaUsage{}
	for rows.Next() {
		var u MediaUsage
		if err := rows.Scan(&u.UserID, &u.DisplayName, &u.Count, &u.Bytes); err != nil {
			return nil, 0, fmt.Errorf("storage: media usage: %w", err)
		}
		out = append(out, u)
	}
	return out, total, rows.Err()
}

// MediaTotals counts all uploaded local media and their bytes.
func (s *Store) MediaTotals(ctx context.Context) (count, bytes int64, err error) {
	err = s.read.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(size), 0) FROM local_media WHERE pending = 0`).Scan(&count, &bytes)
	if err != nil {
		return 0, 0, fmt.Errorf("storage: media totals: %w", err)
	}
	return count, bytes, nil
}

// RoomEventsWithMXC returns the JSON of a room's events that mention an
// mxc:// URI, newest first (the admin API scans them for media).
func (s *Store) RoomEventsWithMXC(ctx context.Context, roomID string) ([]string, error) {
	return s.jsonRows(ctx, `SELECT json FROM events WHERE room_id = $1 AND outlier = 0 AND rejected = 0
		AND json LIKE '%mxc://%' ORDER BY stream_ordering DESC`, roomID)
}

// ProfileMXCs returns the avatar URLs still in use: users' profiles, and
// the current room avatars and per-room member avatars (their event JSON;
// the caller reads content.url / content.avatar_url).
func (s *Store) ProfileMXCs(ctx context.Context) (avatars []string, stateJSON []string, err error) {
	avatars, err = s.jsonRows(ctx, `SELECT avatar_url FROM users WHERE avatar_url LIKE 'mxc://%'`)
	if err != nil {
		return nil, nil, err
	}
	stateJSON, err = s.jsonRows(ctx, `SELECT e.json FROM current_state cs JOIN events e ON e.event_id = cs.event_id
		WHERE cs.type IN ('m.room.avatar', 'm.room.member') AND e.json LIKE '%mxc://%'`)
	return avatars, stateJSON, err
}

func (s *Store) jsonRows(ctx context.Context, q string, args ...any) ([]string, error) {
	rows, err := s.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: %s: %w", strings.Fields(q)[1], err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("storage: scan: %w", err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
