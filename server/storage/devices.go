package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// Device is one of a user's sessions.
type Device struct {
	UserID            string
	DeviceID          string
	DisplayName       string
	CreatedTS         int64
	LastSeenTS        int64
	LastSeenIP        string
	LastSeenUserAgent string
}

const deviceColumns = `user_id, device_id, COALESCE(display_name, ''), created_ts, COALESCE(last_seen_ts, 0),
	COALESCE(last_seen_ip, ''), COALESCE(last_seen_user_agent, '')`

func scanDevice(row interface{ Scan(...any) error }) (*Device, error) {
	d := &Device{}
	err := row.Scan(&d.UserID, &d.DeviceID, &d.DisplayName, &d.CreatedTS, &d.LastSeenTS, &d.LastSeenIP, &d.LastSeenUserAgent)
	return d, err
}

// upsertDevice creates the device, or keeps it (and its keys) when the client
// logs in again with the same device ID. A display name given now replaces
// the old one; an empty one keeps it.
func upsertDevice(ctx context.Context, tx *sql.Tx, d *Device) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO devices (user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip, last_seen_user_agent)
		VALUES ($1, $2, $3, $4, $4, $5, $6)
		ON CONFLICT (user_id, device_id) DO UPDATE SET
			display_name = COALESCE(excluded.display_name, devices.display_name),
			last_seen_ts = excluded.last_seen_ts, last_seen_ip = excluded.last_seen_ip,
			last_seen_user_agent = excluded.last_seen_user_agent`,
		d.UserID, d.DeviceID, nullStr(d.DisplayName), nowMS(), nullStr(d.LastSeenIP), nullStr(d.LastSeenUserAgent))
	if err != nil {
		return fmt.Errorf("storage: upsert device %s/%s: %w", d.UserID, d.DeviceID, err)
	}
	return nil
}

// Devices lists a user's devices, oldest first.
func (s *Store) Devices(ctx context.Context, userID string) ([]*Device, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE user_id = $1 ORDER BY created_ts, device_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("storage: list devices: %w", err)
	}
	defer rows.Close()
	var out []*Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, fmt.Errorf("storage: list devices: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// Device returns one device.
func (s *Store) Device(ctx context.Context, userID, deviceID string) (*Device, error) {
	d, err := scanDevice(s.read.QueryRowContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID))
	if err != nil {
		return nil, notFound(err, "device")
	}
	return d, nil
}

// CreateDevice adds a device with no token (admin API).
func (s *Store) CreateDevice(ctx context.Context, d *Device) error {
	return s.tx(ctx, func(tx *sql.Tx) error { return upsertDevice(ctx, tx, d) })
}

// SetDeviceDisplayName renames a device. A new name is a change of the
// user's device list (the name is part of what others are told of a
// device), which changed reports.
func (s *Store) SetDeviceDisplayName(ctx context.Context, userID, deviceID, name string) (changed bool, err error) {
	err = s.tx(ctx, func(tx *sql.Tx) error {
		changed = false
		var old sql.NullString
		err := tx.QueryRowContext(ctx, `SELECT display_name FROM devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID).Scan(&old)
		if err != nil {
			return notFound(err, "read device")
		}
		if old.String == name {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET display_name = $1 WHERE user_id = $2 AND device_id = $3`, nullStr(name), userID, deviceID); err != nil {
			return fmt.Errorf("storage: rename device: %w", err)
		}
		if _, err := s.markDeviceListChange(ctx, tx, userID, deviceID); err != nil {
			return err
		}
		changed = true
		return nil
	})
	return changed, err
}

// LocalNotificationSettingsPrefix starts the account data type of a
// device's local notification settings (MSC3890), which go with the device.
const LocalNotificationSettingsPrefix = "org.matrix.msc3890.local_notification_settings."

// DeleteDevices removes devices and every token issued to them. Unknown
// device IDs are ignored, as the spec's delete_devices asks.
func (s *Store) DeleteDevices(ctx context.Context, userID string, deviceIDs []string) error {
	if len(deviceIDs) == 0 {
		return nil
	}
	args := []any{userID}
	for _, d := range deviceIDs {
		args = append(args, d)
	}
	in := inList(2, len(deviceIDs))
	defer s.tokensRevoked(userID, deviceIDs...)
	defer s.devicesDeleted(userID)
	return s.tx(ctx, func(tx *sql.Tx) error {
		for _, table := range []string{"access_tokens", "refresh_tokens", "devices", "pushers", "oauth_grants"} {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE user_id = $1 AND device_id IN (`+in+`)`, args...); err != nil {
				return fmt.Errorf("storage: delete devices: %w", err)
			}
		}
		// So do the devices' local notification settings (MSC3890), kept
		// in account data named after each device.
		types := []any{userID}
		for _, d := range deviceIDs {
			types = append(types, LocalNotificationSettingsPrefix+d)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM account_data WHERE user_id = $1 AND room_id = '' AND type IN (`+in+`)`, types...); err != nil {
			return fmt.Errorf("storage: delete devices' notification settings: %w", err)
		}
		// Their end-to-end keys and pending to-device messages go too (keys.go).
		return s.deleteDeviceKeys(ctx, tx, in, args)
	})
}

// TouchDevice records that the device was just used. It is called at most
// once a minute per token, so it does not write on every request.
func (s *Store) TouchDevice(ctx context.Context, userID, deviceID, ip, userAgent string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE devices SET last_seen_ts = $1, last_seen_ip = $2, last_seen_user_agent = $3
			WHERE user_id = $4 AND device_id = $5`, nowMS(), nullStr(ip), nullStr(userAgent), userID, deviceID)
		if err != nil {
			return fmt.Errorf("storage: touch device: %w", err)
		}
		return nil
	})
}
