package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Thread subscriptions (MSC4306; migration 0033). Every change takes the
// next aux stream position, which is the subscription's bump_stamp.

// ErrUnsubscribedLater is SubscribeThread's answer when an automatic
// subscription's cause event is one the user had already seen when they
// unsubscribed (MSC4306's M_CONFLICTING_UNSUBSCRIPTION).
var ErrUnsubscribedLater = errors.New("storage: the user unsubscribed after the cause event")

// ThreadCause locates an automatic subscription's cause event.
type ThreadCause struct {
	StreamPos, Depth int64
}

// ThreadSubscription is one (un)subscription as the stream reports it.
type ThreadSubscription struct {
	RoomID, RootID string
	Subscribed     bool
	Automatic      bool
	StreamID       int64
}

// SubscribeThread subscribes userID to the thread of root in roomID:
// manually when cause is nil, else automatically because of the cause
// event. An existing manual subscription wins over everything, an
// automatic one over another automatic one (no change, position 0); an
// automatic subscription after an unsubscription that came after its cause
// is ErrUnsubscribedLater. It returns the change's aux position.
func (s *Store) SubscribeThread(ctx context.Context, userID, roomID, root string, cause *ThreadCause) (int64, error) {
	var id int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var subscribed, automatic int
		var atPos, atDepth sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT subscribed, automatic, unsubscribed_at_pos, unsubscribed_at_depth
			FROM thread_subscriptions WHERE user_id = $1 AND room_id = $2 AND root_id = $3`, userID, roomID, root).
			Scan(&subscribed, &automatic, &atPos, &atDepth)
		exists := err == nil
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("storage: read thread subscription: %w", err)
		}
		if exists && subscribed == 1 && (automatic == 0 || cause != nil) {
			return nil
		}
		if exists && subscribed == 0 && cause != nil && atPos.Valid && unsubscribedAfter(*cause, atPos.Int64, atDepth.Int64) {
			return ErrUnsubscribedLater
		}
		if id, err = s.nextAuxID(ctx, tx, "thread_subscription"); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO thread_subscriptions
			(user_id, room_id, root_id, subscribed, automatic, stream_id, unsubscribed_at_pos, unsubscribed_at_depth)
			VALUES ($1, $2, $3, 1, $4, $5, NULL, NULL)
			ON CONFLICT (user_id, room_id, root_id) DO UPDATE SET subscribed = 1, automatic = $4, stream_id = $5,
				unsubscribed_at_pos = NULL, unsubscribed_at_depth = NULL`,
			userID, roomID, root, boolInt(cause != nil), id)
		if err != nil {
			return fmt.Errorf("storage: subscribe to thread: %w", err)
		}
		return nil
	})
	return id, err
}

// unsubscribedAfter: the unsubscription came after the cause event, so it
// already answered it. Live events compare by stream position; an event
// that came as history (position ≤ 0) by depth.
func unsubscribedAfter(cause ThreadCause, atPos, atDepth int64) bool {
	if cause.StreamPos > 0 {
		return atPos >= cause.StreamPos
	}
	return atDepth >= cause.Depth
}

// UnsubscribeThread ends userID's subscription to a thread, remembering
// how far the room had gone; unsubscribing when not subscribed changes
// nothing (position 0).
func (s *Store) UnsubscribeThread(ctx context.Context, userID, roomID, root string) (int64, error) {
	var id int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var subscribed int
		err := tx.QueryRowContext(ctx, `SELECT subscribed FROM thread_subscriptions WHERE user_id = $1 AND room_id = $2 AND root_id = $3`,
			userID, roomID, root).Scan(&subscribed)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && subscribed == 0) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("storage: read thread subscription: %w", err)
		}
		var pos, depth sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT MAX(stream_ordering), MAX(depth) FROM events WHERE room_id = $1`, roomID).Scan(&pos, &depth); err != nil {
			return fmt.Errorf("storage: room position: %w", err)
		}
		if id, err = s.nextAuxID(ctx, tx, "thread_subscription"); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE thread_subscriptions SET subscribed = 0, automatic = 0, stream_id = $4,
			unsubscribed_at_pos = $5, unsubscribed_at_depth = $6 WHERE user_id = $1 AND room_id = $2 AND root_id = $3`,
			userID, roomID, root, id, pos.Int64, depth.Int64)
		if err != nil {
			return fmt.Errorf("storage: unsubscribe from thread: %w", err)
		}
		return nil
	})
	return id, err
}

// ThreadSubscriptionOf reports whether userID is subscribed to the thread
// and whether automatically; ErrNotFound when not subscribed.
func (s *Store) ThreadSubscriptionOf(ctx context.Context, userID, roomID, root string) (automatic bool, err error) {
	var subscribed, auto int
	err = s.read.QueryRowContext(ctx, `SELECT subscribed, automatic FROM thread_subscriptions WHERE user_id = $1 AND room_id = $2 AND root_id = $3`,
		userID, roomID, root).Scan(&subscribed, &auto)
	if err != nil {
		return false, notFound(err, "thread subscription")
	}
	if subscribed == 0 {
		return false, ErrNotFound
	}
	return auto == 1, nil
}

// ThreadSubscriptionsBetween returns userID's latest (un)subscriptions
// with after < stream_id ≤ upTo: the newest limit of them, oldest first.
func (s *Store) ThreadSubscriptionsBetween(ctx context.Context, userID string, after, upTo int64, limit int) ([]ThreadSubscription, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT room_id, root_id, subscribed, automatic, stream_id FROM thread_subscriptions
		WHERE user_id = $1 AND stream_id > $2 AND stream_id <= $3 ORDER BY stream_id DESC LIMIT $4`, userID, after, upTo, limit)
	if err != nil {
		return nil, fmt.Errorf("storage: thread subscriptions: %w", err)
	}
	defer rows.Close()
	var out []ThreadSubscription
	for rows.Next() {
		var t ThreadSubscription
		var sub, auto int
		if err := rows.Scan(&t.RoomID, &t.RootID, &sub, &auto, &t.StreamID); err != nil {
			return nil, fmt.Errorf("storage: thread subscriptions: %w", err)
		}
		t.Subscribed, t.Automatic = sub == 1, auto == 1
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: thread subscriptions: %w", err)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

// ThreadSubscribers returns the users subscribed to a thread.
func (s *Store) ThreadSubscribers(ctx context.Context, roomID, root string) (map[string]bool, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT user_id FROM thread_subscriptions WHERE room_id = $1 AND root_id = $2 AND subscribed = 1`, roomID, root)
	if err != nil {
		return nil, fmt.Errorf("storage: thread subscribers: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("storage: thread subscribers: %w", err)
		}
		out[u] = true
	}
	return out, rows.Err()
}
