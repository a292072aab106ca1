package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// The OAuth 2.0 API's state (migration 0023). Sessions it grants are
// ordinary devices and tokens (CreateLogin with a Grant); what is here is
// the state around them: registered clients, authorisation requests in
// flight, the grant behind each session, browser sign-ins and the ID-token
// signing key.

// CreateOAuthClient stores a registered client's metadata (JSON).
func (s *Store) CreateOAuthClient(ctx context.Context, clientID, metadata string) error {
	_, err := s.write.ExecContext(ctx, `INSERT INTO oauth_clients (client_id, metadata, created_ts) VALUES ($1, $2, $3)`,
		clientID, metadata, nowMS())
	if err != nil {
		return fmt.Errorf("storage: create oauth client: %w", err)
	}
	return nil
}

// OAuthClient returns a registered client's metadata, or ErrNotFound.
func (s *Store) OAuthClient(ctx context.Context, clientID string) (string, error) {
	var md string
	err := s.read.QueryRowContext(ctx, `SELECT metadata FROM oauth_clients WHERE client_id = $1`, clientID).Scan(&md)
	if err != nil {
		return "", notFound(err, "oauth client")
	}
	return md, nil
}

// OAuthAuthRequest is an authorisation request between /authorize and the
// token request.
type OAuthAuthRequest struct {
	ID       string
	ClientID string
	Data     string // the request, as JSON
	UserID   string // "": not approved yet
	AuthTS   int64
	Created  int64
}

// CreateOAuthAuthRequest stores a new authorisation request.
func (s *Store) CreateOAuthAuthRequest(ctx context.Context, id, clientID, data string, createdTS int64) error {
	_, err := s.write.ExecContext(ctx, `INSERT INTO oauth_auth_requests (id, client_id, data, created_ts) VALUES ($1, $2, $3, $4)`,
		id, clientID, data, createdTS)
	if err != nil {
		return fmt.Errorf("storage: create oauth auth request: %w", err)
	}
	return nil
}

const oauthAuthRequestColumns = `id, client_id, data, user_id, auth_ts, created_ts`

func scanOAuthAuthRequest(row interface{ Scan(...any) error }) (*OAuthAuthRequest, error) {
	a := &OAuthAuthRequest{}
	var user sql.NullString
	var auth sql.NullInt64
	if err := row.Scan(&a.ID, &a.ClientID, &a.Data, &user, &auth, &a.Created); err != nil {
		return nil, notFound(err, "oauth auth request")
	}
	a.UserID, a.AuthTS = user.String, auth.Int64
	return a, nil
}

// OAuthAuthRequestByID returns an authorisation request, or ErrNotFound.
func (s *Store) OAuthAuthRequestByID(ctx context.Context, id string) (*OAuthAuthRequest, error) {
	return scanOAuthAuthRequest(s.read.QueryRowContext(ctx, `SELECT `+oauthAuthRequestColumns+` FROM oauth_auth_requests WHERE id = $1`, id))
}

// ClaimOAuthAuthCode returns the request a code was issued for and forgets
// the code in the same statement, so a code can be presented once: a second
// attempt, even a concurrent one, finds nothing (RFC 6749 section 4.1.2).
func (s *Store) ClaimOAuthAuthCode(ctx context.Context, code string) (*OAuthAuthRequest, error) {
	return scanOAuthAuthRequest(s.write.QueryRowContext(ctx, `UPDATE oauth_auth_requests SET code_hash = NULL
		WHERE code_hash = $1 RETURNING `+oauthAuthRequestColumns, HashToken(code)))
}

// ApproveOAuthAuthRequest records that userID approved the request.
func (s *Store) ApproveOAuthAuthRequest(ctx context.Context, id, userID string, authTS int64) error {
	res, err := s.write.ExecContext(ctx, `UPDATE oauth_auth_requests SET user_id = $1, auth_ts = $2 WHERE id = $3 AND user_id IS NULL`,
		userID, authTS, id)
	if err != nil {
		return fmt.Errorf("storage: approve oauth auth request: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// SetOAuthAuthCode stores the (hash of the) code issued for an approved
// request. A request gets one code.
func (s *Store) SetOAuthAuthCode(ctx context.Context, id, code string) error {
	res, err := s.write.ExecContext(ctx, `UPDATE oauth_auth_requests SET code_hash = $1 WHERE id = $2 AND user_id IS NOT NULL AND code_hash IS NULL`,
		HashToken(code), id)
	if err != nil {
		return fmt.Errorf("storage: set oauth auth code: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// DeleteOAuthAuthRequest forgets a request (absent is fine).
func (s *Store) DeleteOAuthAuthRequest(ctx context.Context, id string) error {
	if _, err := s.write.ExecContext(ctx, `DELETE FROM oauth_auth_requests WHERE id = $1`, id); err != nil {
		return fmt.Errorf("storage: delete oauth auth request: %w", err)
	}
	return nil
}

// DeleteOAuthStateBefore drops authorisation requests created before
// requestsBeforeTS, and browser sessions and device codes expired at nowTS.
func (s *Store) DeleteOAuthStateBefore(ctx context.Context, requestsBeforeTS, nowTS int64) error {
	if _, err := s.write.ExecContext(ctx, `DELETE FROM oauth_auth_requests WHERE created_ts < $1`, requestsBeforeTS); err != nil {
		return fmt.Errorf("storage: expire oauth auth requests: %w", err)
	}
	if _, err := s.write.ExecContext(ctx, `DELETE FROM oauth_browser_sessions WHERE expires_ts <= $1`, nowTS); err != nil {
		return fmt.Errorf("storage: expire oauth browser sessions: %w", err)
	}
	if _, err := s.write.ExecContext(ctx, `DELETE FROM oauth_device_codes WHERE expires_ts <= $1`, nowTS); err != nil {
		return fmt.Errorf("storage: expire oauth device codes: %w", err)
	}
	return nil
}

// OAuthGrant is what a session obtained through the OAuth 2.0 API was
// granted: to which client, with which scope.
type OAuthGrant struct {
	UserID, DeviceID string
	ClientID         string
	Scope            string // space-separated
	AuthTS           int64
}

func upsertOAuthGrant(ctx context.Context, tx *sql.Tx, g *OAuthGrant) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO oauth_grants (user_id, device_id, client_id, scope, auth_ts) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, device_id) DO UPDATE SET client_id = excluded.client_id, scope = excluded.scope, auth_ts = excluded.auth_ts`,
		g.UserID, g.DeviceID, g.ClientID, g.Scope, g.AuthTS)
	if err != nil {
		return fmt.Errorf("storage: record oauth grant: %w", err)
	}
	return nil
}

// OAuthGrantByRefreshToken returns the grant behind a refresh token that
// still works (unused, or kept for a retry: see RefreshSession), or
// ErrNotFound (also for sessions that did not come from the OAuth 2.0 API).
func (s *Store) OAuthGrantByRefreshToken(ctx context.Context, refresh string) (*OAuthGrant, error) {
	g := &OAuthGrant{}
	err := s.read.QueryRowContext(ctx, `SELECT g.user_id, g.device_id, g.client_id, g.scope, g.auth_ts
		FROM refresh_tokens r JOIN oauth_grants g ON g.user_id = r.user_id AND g.device_id = r.device_id
		WHERE r.token_hash = $1`, HashToken(refresh)).Scan(&g.UserID, &g.DeviceID, &g.ClientID, &g.Scope, &g.AuthTS)
	if err != nil {
		return nil, notFound(err, "oauth grant")
	}
	return g, nil
}

// OAuthGrants returns a user's grants by device ID.
func (s *Store) OAuthGrants(ctx context.Context, userID string) (map[string]*OAuthGrant, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT user_id, device_id, client_id, scope, auth_ts FROM oauth_grants WHERE user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("storage: oauth grants: %w", err)
	}
	defer rows.Close()
	out := map[string]*OAuthGrant{}
	for rows.Next() {
		g := &OAuthGrant{}
		if err := rows.Scan(&g.UserID, &g.DeviceID, &g.ClientID, &g.Scope, &g.AuthTS); err != nil {
			return nil, fmt.Errorf("storage: oauth grants: %w", err)
		}
		out[g.DeviceID] = g
	}
	return out, rows.Err()
}

// OAuthBrowserSession is a browser signed in on the OAuth pages.
type OAuthBrowserSession struct {
	IDHash    string
	UserID    string
	CreatedTS int64
	ExpiresTS int64
}

// CreateOAuthBrowserSession stores a browser sign-in.
func (s *Store) CreateOAuthBrowserSession(ctx context.Context, bs *OAuthBrowserSession) error {
	_, err := s.write.ExecContext(ctx, `INSERT INTO oauth_browser_sessions (id_hash, user_id, created_ts, expires_ts) VALUES ($1, $2, $3, $4)`,
		bs.IDHash, bs.UserID, bs.CreatedTS, bs.ExpiresTS)
	if err != nil {
		return fmt.Errorf("storage: create oauth browser session: %w", err)
	}
	return nil
}

// OAuthBrowserSessionByHash returns a browser sign-in, expired or not.
func (s *Store) OAuthBrowserSessionByHash(ctx context.Context, idHash string) (*OAuthBrowserSession, error) {
	bs := &OAuthBrowserSession{}
	err := s.read.QueryRowContext(ctx, `SELECT id_hash, user_id, created_ts, expires_ts FROM oauth_browser_sessions WHERE id_hash = $1`,
		idHash).Scan(&bs.IDHash, &bs.UserID, &bs.CreatedTS, &bs.ExpiresTS)
	if err != nil {
		return nil, notFound(err, "oauth browser session")
	}
	return bs, nil
}

// DeleteOAuthBrowserSession signs a browser out (absent is fine).
func (s *Store) DeleteOAuthBrowserSession(ctx context.Context, idHash string) error {
	if _, err := s.write.ExecContext(ctx, `DELETE FROM oauth_browser_sessions WHERE id_hash = $1`, idHash); err != nil {
		return fmt.Errorf("storage: delete oauth browser session: %w", err)
	}
	return nil
}

// OAuthSigningKey returns the ID-token signing key, storing candidate
// first if there is none yet (the first writer wins, so concurrent starts
// agree on one key).
func (s *Store) OAuthSigningKey(ctx context.Context, candidateID, candidatePEM string) (keyID, pem string, err error) {
	_, err = s.write.ExecContext(ctx, `INSERT INTO oauth_signing_keys (key_id, private_pem, created_ts)
		SELECT CAST($1 AS TEXT), CAST($2 AS TEXT), CAST($3 AS BIGINT) WHERE NOT EXISTS (SELECT 1 FROM oauth_signing_keys)`, candidateID, candidatePEM, nowMS())
	if err != nil {
		return "", "", fmt.Errorf("storage: store oauth signing key: %w", err)
	}
	err = s.write.QueryRowContext(ctx, `SELECT key_id, private_pem FROM oauth_signing_keys ORDER BY created_ts, key_id LIMIT 1`).Scan(&keyID, &pem)
	if err != nil {
		return "", "", fmt.Errorf("storage: oauth signing key: %w", err)
	}
	return keyID, pem, nil
}

// RefreshTokenOwner returns the user and device of a refresh token that
// still works (of any session), or ErrNotFound.
func (s *Store) RefreshTokenOwner(ctx context.Context, refresh string) (userID, deviceID string, err error) {
	err = s.read.QueryRowContext(ctx, `SELECT user_id, device_id FROM refresh_tokens WHERE token_hash = $1`,
		HashToken(refresh)).Scan(&userID, &deviceID)
	if err != nil {
		return "", "", notFound(err, "refresh token")
	}
	return userID, deviceID, nil
}

// OAuthDeviceCode is a device authorisation in progress.
type OAuthDeviceCode struct {
	UserCode  string
	ClientID  string
	Scope     string // space-separated
	ExpiresTS int64
	UserID    string // set once approved
	AuthTS    int64
	Denied    bool
}

// Decided reports whether the user has approved or denied it.
func (d *OAuthDeviceCode) Decided() bool { return d.UserID != "" || d.Denied }

const oauthDeviceColumns = `user_code, client_id, scope, expires_ts, user_id, auth_ts, denied`

func scanOAuthDeviceCode(row interface{ Scan(...any) error }) (*OAuthDeviceCode, error) {
	d := &OAuthDeviceCode{}
	var user sql.NullString
	var auth sql.NullInt64
	var denied int
	if err := row.Scan(&d.UserCode, &d.ClientID, &d.Scope, &d.ExpiresTS, &user, &auth, &denied); err != nil {
		return nil, notFound(err, "oauth device code")
	}
	d.UserID, d.AuthTS, d.Denied = user.String, auth.Int64, denied != 0
	return d, nil
}

// CreateOAuthDeviceCode stores a new device authorisation; ErrConflict
// when the user code is taken (the caller draws another).
func (s *Store) CreateOAuthDeviceCode(ctx context.Context, deviceCode string, d *OAuthDeviceCode) error {
	_, err := s.write.ExecContext(ctx, `INSERT INTO oauth_device_codes (device_code_hash, user_code, client_id, scope, expires_ts)
		VALUES ($1, $2, $3, $4, $5)`, HashToken(deviceCode), d.UserCode, d.ClientID, d.Scope, d.ExpiresTS)
	if isUnique(err) {
		return ErrConflict
	}
	if err != nil {
		return fmt.Errorf("storage: create oauth device code: %w", err)
	}
	return nil
}

// OAuthDeviceCodeByUserCode returns the authorisation a user code names.
func (s *Store) OAuthDeviceCodeByUserCode(ctx context.Context, userCode string) (*OAuthDeviceCode, error) {
	return scanOAuthDeviceCode(s.read.QueryRowContext(ctx, `SELECT `+oauthDeviceColumns+` FROM oauth_device_codes WHERE user_code = $1`, userCode))
}

// DecideOAuthDeviceCode records the user's answer: approved by userID, or
// denied. Only an undecided, unexpired authorisation can be decided.
func (s *Store) DecideOAuthDeviceCode(ctx context.Context, userCode, userID string, denied bool, nowTS int64) error {
	res, err := s.write.ExecContext(ctx, `UPDATE oauth_device_codes SET user_id = $1, auth_ts = $2, denied = $3
		WHERE user_code = $4 AND user_id IS NULL AND denied = 0 AND expires_ts > $2`, nullStr(userID), nowTS, boolInt(denied), userCode)
	if err != nil {
		return fmt.Errorf("storage: decide oauth device code: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// TakeOAuthDeviceCode reads a device code's state for the polling client;
// once it is decided the row is deleted in the same transaction, so the
// decision is handed out once.
func (s *Store) TakeOAuthDeviceCode(ctx context.Context, clientID, deviceCode string) (*OAuthDeviceCode, error) {
	var d *OAuthDeviceCode
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		d, err = scanOAuthDeviceCode(tx.QueryRowContext(ctx, `SELECT `+oauthDeviceColumns+` FROM oauth_device_codes
			WHERE device_code_hash = $1 AND client_id = $2`, HashToken(deviceCode), clientID))
		if err != nil {
			return err
		}
		if d.Decided() {
			if _, err := tx.ExecContext(ctx, `DELETE FROM oauth_device_codes WHERE device_code_hash = $1`, HashToken(deviceCode)); err != nil {
				return fmt.Errorf("storage: take oauth device code: %w", err)
			}
		}
		return nil
	})
	return d, err
}
