package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// RemoteMedia is a cached copy of another server's media (remote_media).
type RemoteMedia struct {
	Origin        string // the server name of its mxc:// URI
	MediaID       string
	ContentType   string
	Size          int64
	UploadName    string
	CreatedTS     int64 // when it was fetched
	LastAccessTS  int64
	SHA256        string
	FileID        string // the file's name in this server's media store
	QuarantinedBy string // "" when not quarantined
	Authenticated bool
}

// RemoteMediaRef names another server's media.
type RemoteMediaRef struct{ Origin, MediaID string }

const remoteMediaColumns = `media_origin, media_id, content_type, size, upload_name, created_ts, last_access_ts, sha256,
	file_id, COALESCE(quarantined_by, ''), authenticated`

func scanRemoteMedia(row interface{ Scan(...any) error }) (*RemoteMedia, error) {
	m := &RemoteMedia{}
	var auth int
	err := row.Scan(&m.Origin, &m.MediaID, &m.ContentType, &m.Size, &m.UploadName, &m.CreatedTS, &m.LastAccessTS,
		&m.SHA256, &m.FileID, &m.QuarantinedBy, &auth)
	if err != nil {
		return nil, err
	}
	m.Authenticated = auth != 0
	return m, nil
}

// CreateRemoteMedia records a fetched copy; ErrConflict when one of the
// same media is recorded already.
func (s *Store) CreateRemoteMedia(ctx context.Context, m *RemoteMedia) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO remote_media (media_origin, media_id, content_type, size, upload_name,
			created_ts, last_access_ts, sha256, file_id, authenticated) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			m.Origin, m.MediaID, m.ContentType, m.Size, m.UploadName, m.CreatedTS, m.CreatedTS, m.SHA256, m.FileID,
			boolInt(m.Authenticated))
		if isUnique(err) {
			return ErrConflict
		}
		if err != nil {
			return fmt.Errorf("storage: create remote media %s/%s: %w", m.Origin, m.MediaID, err)
		}
		return nil
	})
}

// RemoteMediaByID returns the cached copy of origin's media, or ErrNotFound.
func (s *Store) RemoteMediaByID(ctx context.Context, origin, mediaID string) (*RemoteMedia, error) {
	m, err := scanRemoteMedia(s.read.QueryRowContext(ctx, `SELECT `+remoteMediaColumns+` FROM remote_media
		WHERE media_origin = $1 AND media_id = $2`, origin, mediaID))
	if err != nil {
		return nil, notFound(err, "remote media "+origin+"/"+mediaID)
	}
	return m, nil
}

// TouchRemoteMedia records a download of a cached copy.
func (s *Store) TouchRemoteMedia(ctx context.Context, origin, mediaID string, ts int64) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE remote_media SET last_access_ts = $1
			WHERE media_origin = $2 AND media_id = $3 AND last_access_ts < $1`, ts, origin, mediaID)
		if err != nil {
			return fmt.Errorf("storage: touch remote media %s/%s: %w", origin, mediaID, err)
		}
		return nil
	})
}

// RemoteMediaBefore lists the cached copies not downloaded since beforeTS,
// quarantined ones excepted: purging those would let them be fetched
// again, unquarantined (as in Synapse's purge_media_cache).
func (s *Store) RemoteMediaBefore(ctx context.Context, beforeTS int64) ([]*RemoteMedia, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT `+remoteMediaColumns+` FROM remote_media
		WHERE last_access_ts < $1 AND quarantined_by IS NULL ORDER BY media_origin, media_id`, beforeTS)
	if err != nil {
		return nil, fmt.Errorf("storage: old remote media: %w", err)
	}
	defer rows.Close()
	out := []*RemoteMedia{}
	for rows.Next() {
		m, err := scanRemoteMedia(rows)
		if err != nil {
			return nil, fmt.Errorf("storage: old remote media: %w", err)
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// DeleteRemoteMedia removes the rows of these copies, each only if it is
// still the same copy (same file), and returns those removed: a copy
// fetched again since it was listed is kept.
func (s *Store) DeleteRemoteMedia(ctx context.Context, ms []*RemoteMedia) ([]*RemoteMedia, error) {
	deleted := []*RemoteMedia{}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		deleted = deleted[:0]
		for _, m := range ms {
			res, err := tx.ExecContext(ctx, `DELETE FROM remote_media WHERE media_origin = $1 AND media_id = $2 AND file_id = $3`,
				m.Origin, m.MediaID, m.FileID)
			if err != nil {
				return fmt.Errorf("storage: delete remote media %s/%s: %w", m.Origin, m.MediaID, err)
			}
			if n, _ := res.RowsAffected(); n > 0 {
				deleted = append(deleted, m)
			}
		}
		return nil
	})
	return deleted, err
}

// SetRemoteMediaQuarantine quarantines cached copies (by is the admin) or
// releases them (by ""), and returns how many changed state. Media not in
// the cache is not counted.
func (s *Store) SetRemoteMediaQuarantine(ctx context.Context, refs []RemoteMediaRef, by string) (int, error) {
	n := 0
	err := s.tx(ctx, func(tx *sql.Tx) error {
		n = 0
		for _, r := range refs {
			var res sql.Result
			var err error
			if by == "" {
				res, err = tx.ExecContext(ctx, `UPDATE remote_media SET quarantined_by = NULL
					WHERE media_origin = $1 AND media_id = $2 AND quarantined_by IS NOT NULL`, r.Origin, r.MediaID)
			} else {
				res, err = tx.ExecContext(ctx, `UPDATE remote_media SET quarantined_by = $1
					WHERE media_origin = $2 AND media_id = $3 AND quarantined_by IS NULL`, by, r.Origin, r.MediaID)
			}
			if err != nil {
				return fmt.Errorf("storage: quarantine remote media %s/%s: %w", r.Origin, r.MediaID, err)
			}
			c, _ := res.RowsAffected()
			n += int(c)
		}
		return nil
	})
	return n, err
}

// RemoteMediaTotals counts the cached copies and their bytes.
func (s *Store) RemoteMediaTotals(ctx context.Context) (count, bytes int64, err error) {
	err = s.read.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(size), 0) FROM remote_media`).Scan(&count, &bytes)
	if err != nil {
		return 0, 0, fmt.Errorf("storage: remote media totals: %w", err)
	}
	return count, bytes, nil
}
