package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// DashboardSession is a signed-in admin on the dashboard. The cookie holds
// the session ID; only its hash (HashToken) is stored.
type DashboardSession struct {
	IDHash    string
	UserID    string
	CreatedTS int64
	ExpiresTS int64
	IP        string
	UserAgent string
}

// CreateDashboardSession stores a new session.
func (s *Store) CreateDashboardSession(ctx context.Context, ds *DashboardSession) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO dashboard_sessions (id_hash, user_id, created_ts, expires_ts, ip, user_agent)
			VALUES ($1, $2, $3, $4, $5, $6)`, ds.IDHash, ds.UserID, ds.CreatedTS, ds.ExpiresTS, nullStr(ds.IP), nullStr(ds.UserAgent))
		if err != nil {
			return fmt.Errorf("storage: create dashboard session: %w", err)
		}
		return nil
	})
}

// DashboardSessionByHash returns the session, expired or not: the caller
// compares ExpiresTS with its clock.
func (s *Store) DashboardSessionByHash(ctx context.Context, idHash string) (*DashboardSession, error) {
	ds := &DashboardSession{}
	var ip, ua sql.NullString
	err := s.read.QueryRowContext(ctx, `SELECT id_hash, user_id, created_ts, expires_ts, ip, user_agent
		FROM dashboard_sessions WHERE id_hash = $1`, idHash).Scan(&ds.IDHash, &ds.UserID, &ds.CreatedTS, &ds.ExpiresTS, &ip, &ua)
	if err != nil {
		return nil, notFound(err, "dashboard session")
	}
	ds.IP, ds.UserAgent = ip.String, ua.String
	return ds, nil
}

// DeleteDashboardSession signs one session out (absent is fine).
func (s *Store) DeleteDashboardSession(ctx context.Context, idHash string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM dashboard_sessions WHERE id_hash = $1`, idHash); err != nil {
			return fmt.Errorf("storage: delete dashboard session: %w", err)
		}
		return nil
	})
}

// DeleteExpiredDashboardSessions removes sessions that expired before nowMS.
func (s *Store) DeleteExpiredDashboardSessions(ctx context.Context, nowMS int64) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM dashboard_sessions WHERE expires_ts <= $1`, nowMS); err != nil {
			return fmt.Errorf("storage: delete expired dashboard sessions: %w", err)
		}
		return nil
	})
}

// AuditEntry is one line of the audit log.
type AuditEntry struct {
	ID     int64
	TS     int64
	Actor  string
	Action string
	Target string
	Detail string
	IP     string
}

// AddAudit appends to the audit log. TS 0 means now.
func (s *Store) AddAudit(ctx context.Context, e AuditEntry) error {
	if e.TS == 0 {
		e.TS = nowMS()
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO audit_log (ts, actor, action, target, detail, ip) VALUES ($1, $2, $3, $4, $5, $6)`,
			e.TS, e.Actor, e.Action, e.Target, e.Detail, e.IP)
		if err != nil {
			return fmt.Errorf("storage: add audit entry: %w", err)
		}
		return nil
	})
}

// AuditLog returns one page of the audit log, newest first, and the total.
func (s *Store) AuditLog(ctx context.Context, from, limit int) ([]AuditEntry, int, error) {
	var total int
	if err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_log`).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("storage: count audit log: %w", err)
	}
	rows, err := s.read.QueryContext(ctx, `SELECT id, ts, actor, action, target, detail, ip FROM audit_log
		ORDER BY id DESC LIMIT $1 OFFSET $2`, limit, from)
	if err != nil {
		return nil, 0, fmt.Errorf("storage: read audit log: %w", err)
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var e AuditEntry
		if err := rows.Scan(&e.ID, &e.TS, &e.Actor, &e.Action, &e.Target, &e.Detail, &e.IP); err != nil {
			return nil, 0, fmt.Errorf("storage: read audit log: %w", err)
		}
		out = append(out, e)
	}
	return out, total, rows.Err()
}
