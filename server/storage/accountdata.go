package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// The aux stream orders every per-user change /sync reports besides events
// (account data, receipts). Each change takes the next aux_stream id inside
// its own transaction.

// nextAuxID takes the next aux stream position inside tx, a transaction of
// Store.tx (or txNoSync), which makes it visible to readers once tx has
// committed and every position below it has ended (auxStream). On
// PostgreSQL the table lock also serialises aux writers, which
// UpdateAccountData's read-modify-write relies on; SQLite has one writer
// anyway. A transaction holds the lock until it ends, so only its first
// position takes it (a batch of groupTx writes takes many).
func (s *Store) nextAuxID(ctx context.Context, tx *sql.Tx, kind string) (int64, error) {
	if s.d.Name == "postgres" && !s.aux.took(tx) {
		if _, err := tx.ExecContext(ctx, `LOCK TABLE aux_stream IN SHARE ROW EXCLUSIVE MODE`); err != nil {
			return 0, fmt.Errorf("storage: lock aux stream: %w", err)
		}
	}
	var id int64
	if err := tx.QueryRowContext(ctx, `INSERT INTO aux_stream (kind) VALUES ($1) RETURNING id`, kind).Scan(&id); err != nil {
		return 0, fmt.Errorf("storage: next aux id: %w", err)
	}
	s.aux.take(tx, id)
	return id, nil
}

// MaxAuxPos is the newest aux stream position readers may use: every
// change at or below it is committed (see auxStream).
func (s *Store) MaxAuxPos(context.Context) (int64, error) {
	return s.aux.current(), nil
}

// AccountData is one account data entry; RoomID is "" for global data.
type AccountData struct {
	RoomID   string
	Type     string
	Content  []byte
	StreamID int64
}

// AccountDataContent returns one entry's content, or ErrNotFound. Global
// entries are cached (caches.accountData): the caller must not modify the
// content.
func (s *Store) AccountDataContent(ctx context.Context, userID, roomID, typ string) ([]byte, error) {
	if roomID != "" {
		return s.accountDataContent(ctx, userID, roomID, typ)
	}
	c, err := s.c.accountData.GetOrLoad(userType{userID, typ}, func() ([]byte, error) {
		c, err := s.accountDataContent(ctx, userID, "", typ)
		if errors.Is(err, ErrNotFound) {
			return nil, nil
		}
		return c, err
	})
	if err == nil && c == nil {
		return nil, ErrNotFound
	}
	return c, err
}

func (s *Store) accountDataContent(ctx context.Context, userID, roomID, typ string) ([]byte, error) {
	var c string
	err := s.read.QueryRowContext(ctx, `SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3`,
		userID, roomID, typ).Scan(&c)
	if err != nil {
		return nil, notFound(err, "account data")
	}
	return []byte(c), nil
}

// PutAccountData sets an entry and returns its aux stream position.
func (s *Store) PutAccountData(ctx context.Context, userID, roomID, typ string, content []byte) (int64, error) {
	return s.UpdateAccountData(ctx, userID, roomID, typ, func([]byte) ([]byte, error) { return content, nil })
}

// UpdateAccountData replaces an entry with what fn makes of its current
// content (nil when absent), in one transaction, and returns the new aux
// stream position. Read-modify-write users (room tags) go through here so
// two concurrent edits cannot lose one another. fn may be called more
// than once (groupTx): it must depend on its argument alone.
func (s *Store) UpdateAccountData(ctx context.Context, userID, roomID, typ string, fn func(old []byte) ([]byte, error)) (int64, error) {
	var id int64
	var committed func()
	if roomID == "" {
		committed = func() { s.c.accountData.Remove(userType{userID, typ}) }
	}
	// Read markers move with read receipts, many at once: groupTx.
	err := s.groupTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		// Take the aux id (and, on PostgreSQL, its lock) before reading, so
		// concurrent read-modify-writes are serialised.
		if id, err = s.nextAuxID(ctx, tx, "account_data"); err != nil {
			return err
		}
		s.accountDataMarks.raise(userID, id) // before the commit (auxmarks.go)
		var old []byte
		var c string
		switch err := tx.QueryRowContext(ctx, `SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3`,
			userID, roomID, typ).Scan(&c); {
		case err == nil:
			old = []byte(c)
		case notFound(err, "") != ErrNotFound:
			return fmt.Errorf("storage: read account data: %w", err)
		}
		content, err := fn(old)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO account_data (user_id, room_id, type, content, stream_id) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content, stream_id = excluded.stream_id`,
			userID, roomID, typ, string(content), id); err != nil {
			return fmt.Errorf("storage: put account data: %w", err)
		}
		return nil
	}, committed)
	return id, err
}

// AccountDataBetween lists the user's entries changed in (after, upTo],
// global and per room; a user with nothing written after after is
// answered without a query (auxmarks.go).
func (s *Store) AccountDataBetween(ctx context.Context, userID string, after, upTo int64) ([]AccountData, error) {
	if !s.accountDataMarks.after(userID, after) {
		return nil, nil
	}
	rows, err := s.read.QueryContext(ctx, `SELECT room_id, type, content, stream_id FROM account_data
		WHERE user_id = $1 AND stream_id > $2 AND stream_id <= $3 ORDER BY stream_id`, userID, after, upTo)
	if err != nil {
		return nil, fmt.Errorf("storage: account data since: %w", err)
	}
	defer rows.Close()
	var out []AccountData
	for rows.Next() {
		var a AccountData
		var c string
		if err := rows.Scan(&a.RoomID, &a.Type, &c, &a.StreamID); err != nil {
			return nil, fmt.Errorf("storage: scan account data: %w", err)
		}
		a.Content = []byte(c)
		out = append(out, a)
	}
	return out, rows.Err()
}
