package storage

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
)

// MaxProfileSize is the spec's bound on a whole profile (spec v1.16,
// "Profiles": "the total profile MUST be under 64 KiB"), measured as the
// profile's JSON object: displayname, avatar_url and every custom field.
const MaxProfileSize = 64 << 10

// ErrProfileTooLarge is returned when a change would take the profile past
// MaxProfileSize.
var ErrProfileTooLarge = errors.New("storage: profile too large")

// ProfileFields returns the user's custom profile fields (every field but
// displayname and avatar_url), field name → JSON value.
func (s *Store) ProfileFields(ctx context.Context, userID string) (map[string]json.RawMessage, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT field, value FROM profile_fields WHERE user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("storage: profile fields of %s: %w", userID, err)
	}
	defer rows.Close()
	out := map[string]json.RawMessage{}
	for rows.Next() {
		var field, value string
		if err := rows.Scan(&field, &value); err != nil {
			return nil, fmt.Errorf("storage: profile fields of %s: %w", userID, err)
		}
		out[field] = json.RawMessage(value)
	}
	return out, rows.Err()
}

// ProfileField returns one custom field's JSON value, or ErrNotFound.
func (s *Store) ProfileField(ctx context.Context, userID, field string) (json.RawMessage, error) {
	var value string
	err := s.read.QueryRowContext(ctx, `SELECT value FROM profile_fields WHERE user_id = $1 AND field = $2`, userID, field).Scan(&value)
	if err != nil {
		return nil, notFound(err, "profile field "+field)
	}
	return json.RawMessage(value), nil
}

// SetProfileField sets a custom field to value (JSON), unless the profile
// would then be larger than MaxProfileSize (ErrProfileTooLarge). The size
// is checked in the same transaction as the write, so two concurrent
// changes cannot together pass the limit.
func (s *Store) SetProfileField(ctx context.Context, userID, field string, value json.RawMessage) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		profile, err := profileOf(ctx, tx, userID)
		if err != nil {
			return err
		}
		profile[field] = value
		if size, err := jsonSize(profile); err != nil {
			return err
		} else if size > MaxProfileSize {
			return ErrProfileTooLarge
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO profile_fields (user_id, field, value) VALUES ($1, $2, $3)
			ON CONFLICT (user_id, field) DO UPDATE SET value = excluded.value`, userID, field, string(value))
		if err != nil {
			return fmt.Errorf("storage: set profile field %s of %s: %w", field, userID, err)
		}
		return nil
	})
}

// DeleteProfileField removes a custom field; removing one that is not set
// is not an error.
func (s *Store) DeleteProfileField(ctx context.Context, userID, field string) error {
	if _, err := s.write.ExecContext(ctx, `DELETE FROM profile_fields WHERE user_id = $1 AND field = $2`, userID, field); err != nil {
		return fmt.Errorf("storage: delete profile field %s of %s: %w", field, userID, err)
	}
	return nil
}

// ProfileFits reports whether the profile stays within MaxProfileSize when
// field (displayname or avatar_url, kept in users) takes value.
func (s *Store) ProfileFits(ctx context.Context, userID, field, value string) (bool, error) {
	var profile map[string]json.RawMessage
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		profile, err = profileOf(ctx, tx, userID)
		return err
	})
	if err != nil {
		return false, err
	}
	delete(profile, field)
	if value != "" {
		profile[field], _ = json.Marshal(value)
	}
	size, err := jsonSize(profile)
	return size <= MaxProfileSize, err
}

// profileOf reads the user's whole profile: displayname and avatar_url from
// users, and the custom fields.
func profileOf(ctx context.Context, tx *sql.Tx, userID string) (map[string]json.RawMessage, error) {
	profile := map[string]json.RawMessage{}
	var name, avatar sql.NullString
	err := tx.QueryRowContext(ctx, `SELECT displayname, avatar_url FROM users WHERE user_id = $1`, userID).Scan(&name, &avatar)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("storage: profile of %s: %w", userID, err)
	}
	for field, v := range map[string]sql.NullString{"displayname": name, "avatar_url": avatar} {
		if v.Valid && v.String != "" {
			profile[field], _ = json.Marshal(v.String)
		}
	}
	rows, err := tx.QueryContext(ctx, `SELECT field, value FROM profile_fields WHERE user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("storage: profile of %s: %w", userID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var field, value string
		if err := rows.Scan(&field, &value); err != nil {
			return nil, fmt.Errorf("storage: profile of %s: %w", userID, err)
		}
		profile[field] = json.RawMessage(value)
	}
	return profile, rows.Err()
}

// jsonSize is the length of v encoded as compact JSON, without the HTML
// escaping encoding/json adds by default (which other servers' canonical
// JSON does not have).
func jsonSize(v any) (int, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return 0, err
	}
	return len(bytes.TrimSuffix(b.Bytes(), []byte("\n"))), nil
}
