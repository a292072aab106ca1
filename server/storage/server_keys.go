package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Other servers' signing keys and the signed responses they came in
// (server/federation/keyring.go decides what to keep; this file only
// stores it).

// ServerKey is one public signing key of another server.
type ServerKey struct {
	ServerName string
	KeyID      string // "ed25519:abc"
	PublicKey  string // unpadded base64
	// ValidUntilTS is when the key stops being trusted (ms): for a current
	// key the capped valid_until_ts of its response, for an old key its
	// expired_ts.
	ValidUntilTS int64
	// ExpiredTS is set (ms) for a key listed in old_verify_keys: it
	// verifies events, never requests. 0 for a current key.
	ExpiredTS  int64
	FromServer string // the server itself, or the notary that vouched for it
	FetchedTS  int64
}

// ServerKeyResponse is a server's signed /_matrix/key/v2/server object.
type ServerKeyResponse struct {
	ServerName   string
	FromServer   string
	ValidUntilTS int64 // ms, capped
	FetchedTS    int64 // ms
	JSON         []byte
}

// ServerKeys returns every stored key of serverName, ordered by key ID;
// none is an empty slice, not an error.
func (s *Store) ServerKeys(ctx context.Context, serverName string) ([]ServerKey, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT server_name, key_id, public_key, valid_until_ts, expired_ts, from_server, fetched_ts
		FROM server_keys WHERE server_name = $1 ORDER BY key_id`, serverName)
	if err != nil {
		return nil, fmt.Errorf("storage: server keys of %s: %w", serverName, err)
	}
	defer rows.Close()
	var out []ServerKey
	for rows.Next() {
		var k ServerKey
		var expired sql.NullInt64
		if err := rows.Scan(&k.ServerName, &k.KeyID, &k.PublicKey, &k.ValidUntilTS, &expired, &k.FromServer, &k.FetchedTS); err != nil {
			return nil, fmt.Errorf("storage: server keys of %s: %w", serverName, err)
		}
		k.ExpiredTS = expired.Int64
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: server keys of %s: %w", serverName, err)
	}
	return out, nil
}

// StoreServerKeys writes keys (each replacing the stored row with its
// server name and key ID) and, when resp is not nil, the response they
// came in, in one transaction. A response replaces the stored one of its
// server only if it is valid at least as long: a notary's older copy never
// displaces a fresher answer.
func (s *Store) StoreServerKeys(ctx context.Context, keys []ServerKey, resp *ServerKeyResponse) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		for _, k := range keys {
			var expired sql.NullInt64
			if k.ExpiredTS != 0 {
				expired = sql.NullInt64{Int64: k.ExpiredTS, Valid: true}
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO server_keys
				(server_name, key_id, public_key, valid_until_ts, expired_ts, from_server, fetched_ts)
				VALUES ($1, $2, $3, $4, $5, $6, $7)
				ON CONFLICT (server_name, key_id) DO UPDATE SET public_key = excluded.public_key,
					valid_until_ts = excluded.valid_until_ts, expired_ts = excluded.expired_ts,
					from_server = excluded.from_server, fetched_ts = excluded.fetched_ts`,
				k.ServerName, k.KeyID, k.PublicKey, k.ValidUntilTS, expired, k.FromServer, k.FetchedTS); err != nil {
				return fmt.Errorf("storage: store key %s of %s: %w", k.KeyID, k.ServerName, err)
			}
		}
		if resp == nil {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO server_key_responses
			(server_name, from_server, valid_until_ts, fetched_ts, response) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (server_name) DO UPDATE SET from_server = excluded.from_server,
				valid_until_ts = excluded.valid_until_ts, fetched_ts = excluded.fetched_ts, response = excluded.response
			WHERE excluded.valid_until_ts >= server_key_responses.valid_until_ts`,
			resp.ServerName, resp.FromServer, resp.ValidUntilTS, resp.FetchedTS, string(resp.JSON)); err != nil {
			return fmt.Errorf("storage: store key response of %s: %w", resp.ServerName, err)
		}
		return nil
	})
}

// ServerKeyResponseOf returns the stored key response of serverName;
// ErrNotFound when there is none.
func (s *Store) ServerKeyResponseOf(ctx context.Context, serverName string) (*ServerKeyResponse, error) {
	r := &ServerKeyResponse{}
	var body string
	err := s.read.QueryRowContext(ctx, `SELECT server_name, from_server, valid_until_ts, fetched_ts, response
		FROM server_key_responses WHERE server_name = $1`, serverName).Scan(&r.ServerName, &r.FromServer, &r.ValidUntilTS, &r.FetchedTS, &body)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("storage: key response of %s: %w", serverName, err)
	}
	r.JSON = []byte(body)
	return r, nil
}
