package server

import (
	"encoding/json"
	"net/http"

	"hearth/server/matrix"
	"hearth/server/storage"
)

// Device management (spec: Client-Server API, "Device management"). Deleting
// devices signs them out for good, so it needs the user's password through
// user-interactive auth.

// deviceJSON is a device as the client API shows it.
type deviceJSON struct {
	DeviceID    string `json:"device_id"`
	DisplayName string `json:"display_name,omitempty"`
	LastSeenIP  string `json:"last_seen_ip,omitempty"`
	LastSeenTS  int64  `json:"last_seen_ts,omitempty"`
}

func toDeviceJSON(d *storage.Device) deviceJSON {
	return deviceJSON{DeviceID: d.DeviceID, DisplayName: d.DisplayName, LastSeenIP: d.LastSeenIP, LastSeenTS: d.LastSeenTS}
}

// GET /_matrix/client/v3/devices
func (s *Server) getDevices(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	ds, err := s.store.Devices(r.Context(), me.UserID)
	if err != nil {
		return err
	}
	out := make([]deviceJSON, 0, len(ds))
	for _, d := range ds {
		out = append(out, toDeviceJSON(d))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"devices": out})
}

// GET /_matrix/client/v3/devices/{deviceId}
func (s *Server) getDevice(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	id, err := pathParam(r, "deviceId")
	if err != nil {
		return err
	}
	d, err := s.store.Device(r.Context(), me.UserID, id)
	if err != nil {
		return err // ErrNotFound → 404 M_NOT_FOUND
	}
	return writeJSON(w, http.StatusOK, toDeviceJSON(d))
}

// PUT /_matrix/client/v3/devices/{deviceId}
//
// Only renames: creating devices this way is for application services
// (MSC4190), which Hearth does not host yet, so an unknown device is 404.
func (s *Server) putDevice(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	id, err := pathParam(r, "deviceId")
	if err != nil {
		return err
	}
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.DisplayName == nil {
		// Nothing to change, but the device must still be the caller's.
		if _, err := s.store.Device(r.Context(), me.UserID, id); err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, struct{}{})
	}
	if err := checkDeviceFields("", *req.DisplayName); err != nil {
		return err
	}
	changed, err := s.store.SetDeviceDisplayName(r.Context(), me.UserID, id, *req.DisplayName)
	if err != nil {
		return err
	}
	if changed {
		// Those who share a room with the user, here and on other
		// servers, are told the device list changed (as Synapse does).
		if err := s.deviceListChanged(r.Context(), me.UserID); err != nil {
			return err
		}
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// DELETE /_matrix/client/v3/devices/{deviceId}
func (s *Server) deleteDevice(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	id, err := pathParam(r, "deviceId")
	if err != nil {
		return err
	}
	// An unknown device is reported before the user is asked for a password
	// that would then achieve nothing.
	if _, err := s.store.Device(r.Context(), me.UserID, id); err != nil {
		return err
	}
	var fields map[string]json.RawMessage
	if err := decodeJSON(r, &fields); err != nil {
		return err
	}
	se, _, err := s.uia(w, r, fields, uiaSpec{flows: passwordFlows, user: me.UserID})
	if err != nil || se == nil {
		return err
	}
	if err := s.store.DeleteDevices(r.Context(), me.UserID, []string{id}); err != nil {
		return err
	}
	// Its keys went with it: wake those who track them (keys.go).
	if err := s.deviceListChanged(r.Context(), me.UserID); err != nil {
		return err
	}
	if err := s.store.DeleteUIASession(r.Context(), se.id); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// POST /_matrix/client/v3/delete_devices
//
// Unknown device IDs are ignored, as the spec says.
func (s *Server) postDeleteDevices(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	var fields map[string]json.RawMessage
	if err := decodeJSON(r, &fields); err != nil {
		return err
	}
	var req struct {
		Devices *[]string `json:"devices"`
	}
	if err := unmarshalFields(fields, &req); err != nil {
		return err
	}
	// Without a session no body can have been bound yet, so the list must
	// be here; with one, the bound body may hold it.
	if req.Devices == nil && !hasUIASession(fields) {
		return matrix.MissingParam("devices is required")
	}
	se, body, err := s.uia(w, r, fields, uiaSpec{flows: passwordFlows, user: me.UserID})
	if err != nil || se == nil {
		return err
	}
	req.Devices = nil
	if err := unmarshalFields(body, &req); err != nil {
		return err
	}
	if req.Devices == nil {
		return matrix.MissingParam("devices is required")
	}
	if err := s.store.DeleteDevices(r.Context(), me.UserID, *req.Devices); err != nil {
		return err
	}
	if err := s.deviceListChanged(r.Context(), me.UserID); err != nil {
		return err
	}
	if err := s.store.DeleteUIASession(r.Context(), se.id); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}
