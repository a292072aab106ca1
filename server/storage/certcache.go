package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/acme/autocert"
)

// CertCache is autocert's Cache over the store (table acme_cache): the
// ACME account key and the certificates live with the rest of the
// server's state, on SQLite and PostgreSQL alike.
type CertCache struct{ s *Store }

// CertCache returns the store's ACME cache.
func (s *Store) CertCache() CertCache { return CertCache{s} }

var _ autocert.Cache = CertCache{}

// Get returns the data stored under key, or autocert.ErrCacheMiss.
func (c CertCache) Get(ctx context.Context, key string) ([]byte, error) {
	var data []byte
	err := c.s.read.QueryRowContext(ctx, `SELECT data FROM acme_cache WHERE key = $1`, key).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, autocert.ErrCacheMiss
	}
	if err != nil {
		return nil, fmt.Errorf("storage: acme cache get %s: %w", key, err)
	}
	return data, nil
}

// Put stores data under key, replacing what was there.
func (c CertCache) Put(ctx context.Context, key string, data []byte) error {
	return c.s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO acme_cache (key, data, updated_ts) VALUES ($1, $2, $3)
			ON CONFLICT (key) DO UPDATE SET data = excluded.data, updated_ts = excluded.updated_ts`,
			key, data, time.Now().UnixMilli()); err != nil {
			return fmt.Errorf("storage: acme cache put %s: %w", key, err)
		}
		return nil
	})
}

// Delete removes key; a missing key is not an error.
func (c CertCache) Delete(ctx context.Context, key string) error {
	return c.s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM acme_cache WHERE key = $1`, key); err != nil {
			return fmt.Errorf("storage: acme cache delete %s: %w", key, err)
		}
		return nil
	})
}

// Keys lists the stored keys, for the dashboard.
func (c CertCache) Keys(ctx context.Context) ([]string, error) {
	rows, err := c.s.read.QueryContext(ctx, `SELECT key FROM acme_cache ORDER BY key`)
	if err != nil {
		return nil, fmt.Errorf("storage: acme cache keys: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, fmt.Errorf("storage: acme cache keys: %w", err)
		}
		out = append(out, k)
	}
	return out, rows.Err()
}
