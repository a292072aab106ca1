package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// User is one account row.
type User struct {
	UserID       string
	Localpart    string
	PasswordHash string // "" when the account has no password
	IsAdmin      bool
	IsGuest      bool
	UserType     string
	Deactivated  bool
	Erased       bool
	ShadowBanned bool
	Locked       bool
	Suspended    bool
	DisplayName  string
	AvatarURL    string
	CreatedTS    int64
}

const userColumns = `user_id, localpart, COALESCE(password_hash, ''), is_admin, is_guest, COALESCE(user_type, ''),
	deactivated, erased, shadow_banned, locked, suspended, COALESCE(displayname, ''), COALESCE(avatar_url, ''), created_ts`

func scanUser(row interface{ Scan(...any) error }) (*User, error) {
	u := &User{}
	var admin, guest, deact, erased, shadow, locked, suspended int
	err := row.Scan(&u.UserID, &u.Localpart, &u.PasswordHash, &admin, &guest, &u.UserType,
		&deact, &erased, &shadow, &locked, &suspended, &u.DisplayName, &u.AvatarURL, &u.CreatedTS)
	if err != nil {
		return nil, err
	}
	u.IsAdmin, u.IsGuest, u.Deactivated = admin != 0, guest != 0, deact != 0
	u.Erased, u.ShadowBanned, u.Locked, u.Suspended = erased != 0, shadow != 0, locked != 0, suspended != 0
	return u, nil
}

// CreateUser inserts a new account. It returns ErrConflict when the ID is taken.
func (s *Store) CreateUser(ctx context.Context, u *User) error {
	if u.CreatedTS == 0 {
		u.CreatedTS = nowMS()
	}
	defer s.userChanged(u.UserID)
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO users (user_id, localpart, password_hash, is_admin, is_guest, user_type,
			displayname, avatar_url, created_ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			u.UserID, u.Localpart, nullStr(u.PasswordHash), boolInt(u.IsAdmin), boolInt(u.IsGuest), nullStr(u.UserType),
			nullStr(u.DisplayName), nullStr(u.AvatarURL), u.CreatedTS)
		if isUnique(err) {
			return ErrConflict
		}
		if err != nil {
			return fmt.Errorf("storage: create user %s: %w", u.UserID, err)
		}
		return nil
	})
}

// UserByID returns the account, deactivated or not, through the users cache.
// The caller gets its own copy.
func (s *Store) UserByID(ctx context.Context, userID string) (*User, error) {
	u, err := s.c.users.GetOrLoad(userID, func() (User, error) {
		u, err := s.userByID(ctx, userID)
		if err != nil {
			return User{}, err
		}
		return *u, nil
	})
	if err != nil {
		return nil, err
	}
	return &u, nil
}

func (s *Store) userByID(ctx context.Context, userID string) (*User, error) {
	u, err := scanUser(s.read.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE user_id = $1`, userID))
	if err != nil {
		return nil, notFound(err, "user "+userID)
	}
	return u, nil
}

// UserExists reports whether the localpart is taken (deactivated accounts
// keep their name: Matrix IDs are never reused).
func (s *Store) LocalpartTaken(ctx context.Context, localpart string) (bool, error) {
	var n int
	err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM users WHERE localpart = $1`, localpart).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("storage: check localpart: %w", err)
	}
	return n > 0, nil
}

// SetPasswordHash replaces the user's password hash ("" removes it).
func (s *Store) SetPasswordHash(ctx context.Context, userID, hash string) error {
	return s.updateUser(ctx, userID, `UPDATE users SET password_hash = $1 WHERE user_id = $2`, nullStr(hash), userID)
}

// SetAdmin sets or clears the server-admin flag.
func (s *Store) SetAdmin(ctx context.Context, userID string, admin bool) error {
	return s.updateUser(ctx, userID, `UPDATE users SET is_admin = $1 WHERE user_id = $2`, boolInt(admin), userID)
}

// SetShadowBanned sets or clears the shadow-ban flag.
func (s *Store) SetShadowBanned(ctx context.Context, userID string, banned bool) error {
	return s.updateUser(ctx, userID, `UPDATE users SET shadow_banned = $1 WHERE user_id = $2`, boolInt(banned), userID)
}

// SetLocked sets or clears the locked flag.
func (s *Store) SetLocked(ctx context.Context, userID string, locked bool) error {
	return s.updateUser(ctx, userID, `UPDATE users SET locked = $1 WHERE user_id = $2`, boolInt(locked), userID)
}

// SetSuspended sets or clears the suspended flag.
func (s *Store) SetSuspended(ctx context.Context, userID string, suspended bool) error {
	return s.updateUser(ctx, userID, `UPDATE users SET suspended = $1 WHERE user_id = $2`, boolInt(suspended), userID)
}

// SetUserType sets the user type ("" for a regular user).
func (s *Store) SetUserType(ctx context.Context, userID, userType string) error {
	return s.updateUser(ctx, userID, `UPDATE users SET user_type = $1 WHERE user_id = $2`, nullStr(userType), userID)
}

// SetDisplayName sets the profile display name ("" removes it).
func (s *Store) SetDisplayName(ctx context.Context, userID, name string) error {
	return s.updateUser(ctx, userID, `UPDATE users SET displayname = $1 WHERE user_id = $2`, nullStr(name), userID)
}

// SetAvatarURL sets the profile avatar ("" removes it).
func (s *Store) SetAvatarURL(ctx context.Context, userID, url string) error {
	return s.updateUser(ctx, userID, `UPDATE users SET avatar_url = $1 WHERE user_id = $2`, nullStr(url), userID)
}

// Reactivate clears the deactivated flag (admin API).
func (s *Store) Reactivate(ctx context.Context, userID string) error {
	return s.updateUser(ctx, userID, `UPDATE users SET deactivated = 0, erased = 0 WHERE user_id = $1`, userID)
}

// updateUser runs one UPDATE of users and drops the cached row.
func (s *Store) updateUser(ctx context.Context, userID, query string, args ...any) error {
	defer s.userChanged(userID)
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, query, args...)
		if err != nil {
			return fmt.Errorf("storage: update user %s: %w", userID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// DeactivateUser marks the account deactivated and removes what lets it
// act or be reached, in one transaction, so a crash never leaves a
// deactivated account that can still sign in: its password, every token,
// every device with its end-to-end keys and pending to-device messages
// (the device list change is recorded for the user's peers), its account
// data and its server-side key backup, as Synapse does. erase also clears
// the profile and marks the user erased (their events are then served
// redacted to users who were not in the room with them). Leaving rooms is
// the caller's work: it sends events.
func (s *Store) DeactivateUser(ctx context.Context, userID string, erase bool) error {
	defer s.userChanged(userID)
	defer s.tokensRevoked(userID)
	defer s.devicesDeleted(userID)
	defer s.c.pushRules.Remove(userID)
	// Their notifications go: so do the totals read of them (cumAt).
	defer s.c.notifTotals.RemoveFunc(func(k totalsKey, _ [2]int64) bool { return k.user == userID })
	defer s.c.unread.Remove(userID)
	defer s.c.threadHeads.Purge() // their heads, in whichever threads
	// Staged notifications are written first, so none is written after
	// the delete below.
	if err := s.waitWritten(ctx); err != nil {
		return err
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		q := `UPDATE users SET deactivated = 1, password_hash = NULL WHERE user_id = $1`
		if erase {
			q = `UPDATE users SET deactivated = 1, erased = 1, password_hash = NULL, displayname = NULL, avatar_url = NULL WHERE user_id = $1`
		}
		res, err := tx.ExecContext(ctx, q, userID)
		if err != nil {
			return fmt.Errorf("storage: deactivate %s: %w", userID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		if erase {
			if _, err := tx.ExecContext(ctx, `DELETE FROM profile_fields WHERE user_id = $1`, userID); err != nil {
				return fmt.Errorf("storage: erase profile of %s: %w", userID, err)
			}
		}
		devices, err := queryStrings(ctx, tx, `SELECT device_id FROM devices WHERE user_id = $1`, userID)
		if err != nil {
			return fmt.Errorf("storage: deactivate %s: %w", userID, err)
		}
		for _, q := range []string{
			`DELETE FROM access_tokens WHERE user_id = $1`,
			`DELETE FROM refresh_tokens WHERE user_id = $1`,
			`DELETE FROM openid_tokens WHERE user_id = $1`,
			`DELETE FROM devices WHERE user_id = $1`,
			`DELETE FROM login_tokens WHERE user_id = $1`,
			`DELETE FROM account_data WHERE user_id = $1`,
			`DELETE FROM backup_keys WHERE user_id = $1`,
			// Versions are marked, not removed: their numbers are never reused.
			`UPDATE backup_versions SET deleted = 1 WHERE user_id = $1`,
			// Pushers, push rules and notifications, as Synapse purges
			// them (its push rules go with the account data).
			`DELETE FROM pushers WHERE user_id = $1`,
			`DELETE FROM push_rules WHERE user_id = $1`,
			`DELETE FROM push_rule_defaults WHERE user_id = $1`,
			`DELETE FROM push_notifications WHERE user_id = $1`,
			`DELETE FROM push_thread_heads WHERE user_id = $1`,
			`DELETE FROM thread_subscriptions WHERE user_id = $1`,
		} {
			if _, err := tx.ExecContext(ctx, q, userID); err != nil {
				return fmt.Errorf("storage: deactivate %s: %w", userID, err)
			}
		}
		if len(devices) == 0 {
			return nil
		}
		args := []any{userID}
		for _, d := range devices {
			args = append(args, d)
		}
		return s.deleteDeviceKeys(ctx, tx, inList(2, len(devices)), args)
	})
}

// DeactivatedInRooms lists deactivated accounts that are still joined to,
// invited to or knocking on a room: deactivations whose leaving was cut
// short (or predates it), for the server to finish.
func (s *Store) DeactivatedInRooms(ctx context.Context) ([]string, error) {
	out, err := queryStrings(ctx, s.read, `SELECT u.user_id FROM users u WHERE u.deactivated = 1 AND (
		EXISTS (SELECT 1 FROM current_state c WHERE c.state_key = u.user_id AND c.type = 'm.room.member'
			AND c.membership IN ('join', 'invite', 'knock'))
		OR EXISTS (SELECT 1 FROM out_of_room_memberships o WHERE o.user_id = u.user_id AND o.membership IN ('invite', 'knock')))
		ORDER BY u.user_id`)
	if err != nil {
		return nil, fmt.Errorf("storage: deactivated users in rooms: %w", err)
	}
	return out, nil
}

// UserFilter selects users for the admin list.
type UserFilter struct {
	Name        string // substring of user ID or display name
	Guests      bool   // include guests
	Deactivated bool   // include deactivated accounts
	Admins      *bool  // only admins / only non-admins
	OrderBy     string // name, displayname, admin, deactivated, creation_ts, ...
	Desc        bool
	From, Limit int
}

var userOrderColumns = map[string]string{
	"name": "user_id", "displayname": "displayname", "admin": "is_admin", "deactivated": "deactivated",
	"is_guest": "is_guest", "creation_ts": "created_ts", "shadow_banned": "shadow_banned", "user_type": "user_type",
	"locked": "locked", "avatar_url": "avatar_url",
}

// ListUsers returns one page of users and the total that match.
func (s *Store) ListUsers(ctx context.Context, f UserFilter) ([]*User, int, error) {
	where, args := "WHERE 1=1", []any{}
	if f.Name != "" {
		args = append(args, "%"+lowerLike(f.Name)+"%")
		where += fmt.Sprintf(` AND (LOWER(user_id) LIKE $%d ESCAPE '\' OR LOWER(COALESCE(displayname, '')) LIKE $%d ESCAPE '\')`, len(args), len(args))
	}
	if !f.Guests {
		where += ` AND is_guest = 0`
	}
	if !f.Deactivated {
		where += ` AND deactivated = 0`
	}
	if f.Admins != nil {
		args = append(args, boolInt(*f.Admins))
		where += fmt.Sprintf(` AND is_admin = $%d`, len(args))
	}
	var total int
	if err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM users `+where, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("storage: count users: %w", err)
	}
	col, ok := userOrderColumns[f.OrderBy]
	if !ok {
		col = "user_id"
	}
	dir := "ASC"
	if f.Desc {
		dir = "DESC"
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	args = append(args, f.Limit, f.From)
	rows, err := s.read.QueryContext(ctx, fmt.Sprintf(`SELECT %s FROM users %s ORDER BY %s %s, user_id ASC LIMIT $%d OFFSET $%d`,
		userColumns, where, col, dir, len(args)-1, len(args)), args...)
	if err != nil {
		return nil, 0, fmt.Errorf("storage: list users: %w", err)
	}
	defer rows.Close()
	var out []*User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, 0, fmt.Errorf("storage: list users: %w", err)
		}
		out = append(out, u)
	}
	return out, total, rows.Err()
}

// CountUsers counts non-deactivated accounts.
func (s *Store) CountUsers(ctx context.Context) (int, error) {
	var n int
	err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM users WHERE deactivated = 0`).Scan(&n)
	return n, err
}

func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// lowerLike lower-cases a LIKE pattern fragment and escapes its wildcards.
func lowerLike(s string) string {
	r := []rune{}
	for _, c := range s {
		if c == '%' || c == '_' || c == '\\' {
			r = append(r, '\\')
		}
		r = append(r, c)
	}
	return toLower(string(r))
}

// HasAdmin reports whether any active account is a server admin (the
// first-run setup is offered until one is).
func (s *Store) HasAdmin(ctx context.Context) (bool, error) {
	var n int
	err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT 1 FROM users WHERE is_admin = 1 AND deactivated = 0 LIMIT 1) a`).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("storage: any admin: %w", err)
	}
	return n > 0, nil
}
