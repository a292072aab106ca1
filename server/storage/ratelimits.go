package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// RateLimitOverride replaces the message rate limit for one user; zeros mean
// "not limited" (Synapse's override_ratelimit admin API).
type RateLimitOverride struct {
	MessagesPerSecond float64
	BurstCount        float64
}

// RateLimitOverride returns the user's override, or ErrNotFound.
func (s *Store) RateLimitOverride(ctx context.Context, userID string) (*RateLimitOverride, error) {
	o := &RateLimitOverride{}
	err := s.read.QueryRowContext(ctx, `SELECT messages_per_second, burst_count FROM ratelimit_overrides WHERE user_id = $1`, userID).
		Scan(&o.MessagesPerSecond, &o.BurstCount)
	if err != nil {
		return nil, notFound(err, "rate limit override")
	}
	return o, nil
}

// SetRateLimitOverride sets or replaces the user's override.
func (s *Store) SetRateLimitOverride(ctx context.Context, userID string, o RateLimitOverride) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO ratelimit_overrides (user_id, messages_per_second, burst_count) VALUES ($1, $2, $3)
			ON CONFLICT (user_id) DO UPDATE SET messages_per_second = excluded.messages_per_second, burst_count = excluded.burst_count`,
			userID, o.MessagesPerSecond, o.BurstCount)
		if err != nil {
			return fmt.Errorf("storage: set rate limit override: %w", err)
		}
		return nil
	})
}

// DeleteRateLimitOverride removes the user's override (absent is fine).
func (s *Store) DeleteRateLimitOverride(ctx context.Context, userID string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM ratelimit_overrides WHERE user_id = $1`, userID); err != nil {
			return fmt.Errorf("storage: delete rate limit override: %w", err)
		}
		return nil
	})
}
