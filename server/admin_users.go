package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"hearth/server/matrix"
	"hearth/server/secret"
	"hearth/server/storage"
)

// GET /_synapse/admin/v1/server_version
func (s *Server) getAdminServerVersion(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]string{"server_version": "Hearth " + Version})
}

// adminUserJSON is the user object of Synapse's admin API. Synapse's list
// gives creation_ts in milliseconds but its single-user query in seconds
// (its table stores seconds); tools read each as Synapse sends it, so
// Hearth keeps the difference.
func adminUserJSON(u *storage.User, lastSeenTS int64, creationInMS bool) map[string]any {
	creation := u.CreatedTS / 1000
	if creationInMS {
		creation = u.CreatedTS
	}
	var userType, displayname, avatar any
	if u.UserType != "" {
		userType = u.UserType
	}
	if u.DisplayName != "" {
		displayname = u.DisplayName
	}
	if u.AvatarURL != "" {
		avatar = u.AvatarURL
	}
	var lastSeen any
	if lastSeenTS > 0 {
		lastSeen = lastSeenTS
	}
	return map[string]any{
		"name": u.UserID, "displayname": displayname, "avatar_url": avatar,
		"is_guest": u.IsGuest, "admin": u.IsAdmin, "user_type": userType,
		"deactivated": u.Deactivated, "erased": u.Erased, "shadow_banned": u.ShadowBanned,
		"locked": u.Locked, "suspended": u.Suspended, "approved": true,
		"creation_ts": creation, "last_seen_ts": lastSeen,
		"threepids": []any{}, "external_ids": []any{}, "appservice_id": nil,
		"consent_server_notice_sent": nil, "consent_version": nil, "consent_ts": nil,
	}
}

// localUserParam reads {userId} and insists it is one of ours: the admin
// API manages local accounts only.
func (s *Server) localUserParam(r *http.Request) (string, error) {
	userID, err := pathParam(r, "userId")
	if err != nil {
		return "", err
	}
	_, server, ok := matrix.SplitUserID(userID)
	if !ok {
		return "", matrix.InvalidParam("%q is not a user ID", userID)
	}
	if server != s.cfg.ServerName {
		return "", matrix.InvalidParam("this endpoint can only be used with local users")
	}
	return userID, nil
}

// apiActor is the admin calling the Synapse admin API, for the audit log.
func (s *Server) apiActor(r *http.Request) Actor {
	return Actor{UserID: deviceFrom(r.Context()).UserID, IP: clientIP(r, s.xForwarded(r)), Via: "api"}
}

// GET /_synapse/admin/v2/users and /v3/users
//
// Query: from, limit, name, user_id, guests, deactivated, admins, order_by,
// dir (f|b). v3 treats a missing deactivated as "both".
func (s *Server) getAdminUsers(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := storage.UserFilter{Name: q.Get("name"), OrderBy: q.Get("order_by"), Limit: 100}
	if f.Name == "" {
		f.Name = q.Get("user_id")
	}
	var err error
	if f.From, err = queryInt(r, "from", 0); err != nil {
		return err
	}
	if f.Limit, err = queryInt(r, "limit", 100); err != nil {
		return err
	}
	if f.From < 0 || f.Limit < 0 {
		return matrix.InvalidParam("from and limit must not be negative")
	}
	if f.Guests, err = queryBool(r, "guests", true); err != nil {
		return err
	}
	v3 := strings.Contains(r.URL.Path, "/v3/")
	if f.Deactivated, err = queryBool(r, "deactivated", v3); err != nil {
		return err
	}
	if v := q.Get("admins"); v != "" {
		b, err := queryBool(r, "admins", false)
		if err != nil {
			return err
		}
		f.Admins = &b
	}
	if f.OrderBy != "" {
		if _, ok := map[string]bool{"name": true, "is_guest": true, "admin": true, "user_type": true, "deactivated": true,
			"shadow_banned": true, "displayname": true, "avatar_url": true, "creation_ts": true, "last_seen_ts": true, "locked": true}[f.OrderBy]; !ok {
			return matrix.InvalidParam("unknown value for order_by: %s", f.OrderBy)
		}
	}
	switch q.Get("dir") {
	case "", "f":
	case "b":
		f.Desc = true
	default:
		return matrix.InvalidParam("unknown direction: %s", q.Get("dir"))
	}
	users, total, err := s.ListUsers(r.Context(), f)
	if err != nil {
		return err
	}
	out := make([]map[string]any, 0, len(users))
	for _, u := range users {
		out = append(out, adminUserJSON(&u.User, u.LastSeenTS, true))
	}
	body := map[string]any{"users": out, "total": total}
	if f.From+len(users) < total {
		body["next_token"] = strconv.Itoa(f.From + len(users))
	}
	return writeJSON(w, http.StatusOK, body)
}

// GET /_synapse/admin/v2/users/{userId}
func (s *Server) getAdminUser(w http.ResponseWriter, r *http.Request) error {
	userID, err := s.localUserParam(r)
	if err != nil {
		return err
	}
	u, err := s.User(r.Context(), userID)
	if err != nil {
		return err
	}
	body := adminUserJSON(&u.User, u.LastSeenTS, false)
	if body["threepids"], err = s.adminThreePIDs(r, userID); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, body)
}

// adminThreePIDs is the user's threepids as the admin API shows them.
func (s *Server) adminThreePIDs(r *http.Request, userID string) ([]map[string]any, error) {
	ts, err := s.store.UserThreePIDs(r.Context(), userID)
	if err != nil {
		return nil, err
	}
	return threePIDsJSON(ts), nil
}

// adminThreePIDList checks the threepids of a PUT: each has a medium
// (email or msisdn) and an address, emails are stored in canonical form,
// and none may be on another account (409 M_THREEPID_IN_USE, before
// anything changes).
func (s *Server) adminThreePIDList(r *http.Request, userID string, in []struct {
	Medium  string `json:"medium"`
	Address string `json:"address"`
}) ([]storage.ThreePID, error) {
	now := s.now().UnixMilli()
	out := make([]storage.ThreePID, 0, len(in))
	for i, t := range in {
		if t.Medium == "" || t.Address == "" {
			return nil, matrix.MissingParam("threepids[%d] needs medium and address", i)
		}
		switch t.Medium {
		case "email":
			canon, err := canonicalEmail(t.Address)
			if err != nil {
				return nil, err
			}
			t.Address = canon
		case "msisdn":
		default:
			return nil, matrix.InvalidParam("threepids[%d].medium must be email or msisdn", i)
		}
		owner, err := s.store.ThreePIDUser(r.Context(), t.Medium, t.Address)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
		if owner != "" && owner != userID {
			return nil, &matrix.Error{Code: "M_THREEPID_IN_USE", Msg: t.Address + " is already on another account", Status: http.StatusConflict}
		}
		out = append(out, storage.ThreePID{Medium: t.Medium, Address: t.Address, UserID: userID, ValidatedAt: now, AddedAt: now})
	}
	return out, nil
}

// GET /_synapse/admin/v1/threepid/{medium}/users/{address}
func (s *Server) getAdminThreePIDUser(w http.ResponseWriter, r *http.Request) error {
	medium, err := pathParam(r, "medium")
	if err != nil {
		return err
	}
	address, err := pathParam(r, "address")
	if err != nil {
		return err
	}
	if medium == "email" {
		if canon, err := canonicalEmail(address); err == nil {
			address = canon
		}
	}
	userID, err := s.store.ThreePIDUser(r.Context(), medium, address)
	if errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("User not found")
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]string{"user_id": userID})
}

// PUT /_synapse/admin/v2/users/{userId}
//
// Creates the account (201) or modifies it (200). Fields left out are left
// alone; password changes log out every device unless logout_devices is false.
func (s *Server) putAdminUser(w http.ResponseWriter, r *http.Request) error {
	userID, err := s.localUserParam(r)
	if err != nil {
		return err
	}
	var req struct {
		Password      *string `json:"password"`
		LogoutDevices *bool   `json:"logout_devices"`
		DisplayName   *string `json:"displayname"`
		AvatarURL     *string `json:"avatar_url"`
		Admin         *bool   `json:"admin"`
		Deactivated   *bool   `json:"deactivated"`
		Locked        *bool   `json:"locked"`
		UserType      *string `json:"user_type"`
		ThreePIDs     *[]struct {
			Medium  string `json:"medium"`
			Address string `json:"address"`
		} `json:"threepids"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	var threePIDs []storage.ThreePID
	if req.ThreePIDs != nil {
		if threePIDs, err = s.adminThreePIDList(r, userID, *req.ThreePIDs); err != nil {
			return err
		}
	}
	created, err := s.UpsertUser(r.Context(), s.apiActor(r), userID, UserChanges{
		Password: req.Password, LogoutDevices: req.LogoutDevices, DisplayName: req.DisplayName, AvatarURL: req.AvatarURL,
		Admin: req.Admin, Deactivated: req.Deactivated, Locked: req.Locked, UserType: req.UserType,
	})
	if err != nil {
		return err
	}
	if req.ThreePIDs != nil {
		err := s.store.SetUserThreePIDs(r.Context(), userID, threePIDs)
		if errors.Is(err, storage.ErrConflict) {
			return &matrix.Error{Code: "M_THREEPID_IN_USE", Msg: "an address is already on another account", Status: http.StatusConflict}
		}
		if err != nil {
			return err
		}
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	u, err := s.User(r.Context(), userID)
	if err != nil {
		return err
	}
	body := adminUserJSON(&u.User, u.LastSeenTS, false)
	if body["threepids"], err = s.adminThreePIDs(r, userID); err != nil {
		return err
	}
	return writeJSON(w, status, body)
}

// POST /_synapse/admin/v1/deactivate/{userId}
func (s *Server) postAdminDeactivate(w http.ResponseWriter, r *http.Request) error {
	userID, err := s.localUserParam(r)
	if err != nil {
		return err
	}
	var req struct {
		Erase bool `json:"erase"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if err := s.DeactivateUser(r.Context(), s.apiActor(r), userID, req.Erase); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": "success"})
}

// POST /_synapse/admin/v1/reset_password/{userId}
func (s *Server) postAdminResetPassword(w http.ResponseWriter, r *http.Request) error {
	userID, err := s.localUserParam(r)
	if err != nil {
		return err
	}
	var req struct {
		NewPassword   *string `json:"new_password"`
		LogoutDevices *bool   `json:"logout_devices"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.NewPassword == nil {
		return matrix.MissingParam("missing new_password")
	}
	if err := s.ResetPassword(r.Context(), s.apiActor(r), userID, *req.NewPassword, req.LogoutDevices == nil || *req.LogoutDevices); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// GET /_synapse/admin/v1/users/{userId}/admin
func (s *Server) getAdminUserAdmin(w http.ResponseWriter, r *http.Request) error {
	userID, err := s.localUserParam(r)
	if err != nil {
		return err
	}
	u, err := s.store.UserByID(r.Context(), userID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]bool{"admin": u.IsAdmin})
}

// PUT /_synapse/admin/v1/users/{userId}/admin
func (s *Server) putAdminUserAdmin(w http.ResponseWriter, r *http.Request) error {
	userID, err := s.localUserParam(r)
	if err != nil {
		return err
	}
	var req struct {
		Admin *bool `json:"admin"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Admin == nil {
		return matrix.MissingParam("missing key: admin")
	}
	if err := s.SetUserAdmin(r.Context(), s.apiActor(r), userID, *req.Admin); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// GET /_synapse/admin/v1/whois/{userId}
func (s *Server) getAdminWhois(w http.ResponseWriter, r *http.Request) error {
	userID, err := s.localUserParam(r)
	if err != nil {
		return err
	}
	out, err := s.whois(r.Context(), userID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, out)
}

// whois describes a local user's sessions: per device, the address, user
// agent and time it was last seen. The Synapse admin API and the client
// API's /admin/whois (client_admin.go) answer with it alike.
func (s *Server) whois(ctx context.Context, userID string) (map[string]any, error) {
	if _, err := s.store.UserByID(ctx, userID); err != nil {
		return nil, err
	}
	devs, err := s.store.Devices(ctx, userID)
	if err != nil {
		return nil, err
	}
	devices := map[string]any{}
	for _, d := range devs {
		conns := []map[string]any{}
		if d.LastSeenTS > 0 {
			conns = append(conns, map[string]any{"ip": d.LastSeenIP, "last_seen": d.LastSeenTS, "user_agent": d.LastSeenUserAgent})
		}
		devices[d.DeviceID] = map[string]any{"sessions": []map[string]any{{"connections": conns}}}
	}
	return map[string]any{"user_id": userID, "devices": devices}, nil
}

// PUT /_synapse/admin/v1/suspend/{userId}
//
// Synapse's form of PUT /_matrix/client/v1/admin/suspend: the body's key is
// suspend, and the answer names the user.
func (s *Server) putAdminSuspend(w http.ResponseWriter, r *http.Request) error {
	userID, err := s.localUserParam(r)
	if err != nil {
		return err
	}
	var req struct {
		Suspend *bool `json:"suspend"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Suspend == nil {
		return matrix.MissingParam("missing key: suspend")
	}
	if err := s.SetUserSuspended(r.Context(), s.apiActor(r), userID, *req.Suspend); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]bool{"user_" + userID + "_suspended": *req.Suspend})
}

// POST /_synapse/admin/v1/users/{userId}/login
//
// Issues a token to act as the user, with no device; valid_until_ms bounds
// it. An admin cannot use it on themselves.
func (s *Server) postAdminLoginAsUser(w http.ResponseWriter, r *http.Request) error {
	userID, err := s.localUserParam(r)
	if err != nil {
		return err
	}
	var req struct {
		ValidUntilMS int64 `json:"valid_until_ms"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	admin := deviceFrom(r.Context())
	if admin.UserID == userID {
		return matrix.InvalidParam("cannot use admin API to login as self")
	}
	u, err := s.store.UserByID(r.Context(), userID)
	if err != nil {
		return err
	}
	if u.Deactivated {
		return matrix.InvalidParam("user is deactivated")
	}
	tok := secret.Token("syt_")
	if err := s.store.CreatePuppetToken(r.Context(), userID, admin.UserID, tok, req.ValidUntilMS); err != nil {
		return err
	}
	logFrom(r.Context(), s.log).Info("admin logged in as user", "admin", admin.UserID, "target", userID)
	s.audit(r.Context(), s.apiActor(r), "user.login_as", userID, "")
	return writeJSON(w, http.StatusOK, map[string]string{"access_token": tok})
}

// POST /_synapse/admin/v1/users/{userId}/shadow_ban
func (s *Server) postAdminShadowBan(w http.ResponseWriter, r *http.Request) error {
	return s.setShadowBan(w, r, true)
}

// DELETE /_synapse/admin/v1/users/{userId}/shadow_ban
func (s *Server) deleteAdminShadowBan(w http.ResponseWriter, r *http.Request) error {
	return s.setShadowBan(w, r, false)
}

func (s *Server) setShadowBan(w http.ResponseWriter, r *http.Request, banned bool) error {
	userID, err := s.localUserParam(r)
	if err != nil {
		return err
	}
	if err := s.store.SetShadowBanned(r.Context(), userID, banned); err != nil {
		return err
	}
	s.audit(r.Context(), s.apiActor(r), "user.shadow_ban", userID, "shadow_banned="+strconv.FormatBool(banned))
	return writeJSON(w, http.StatusOK, struct{}{})
}

// GET /_synapse/admin/v1/users/{userId}/override_ratelimit
func (s *Server) getAdminRateLimit(w http.ResponseWriter, r *http.Request) error {
	userID, err := s.localUserParam(r)
	if err != nil {
		return err
	}
	o, err := s.store.RateLimitOverride(r.Context(), userID)
	if errors.Is(err, storage.ErrNotFound) {
		return writeJSON(w, http.StatusOK, struct{}{})
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]float64{"messages_per_second": o.MessagesPerSecond, "burst_count": o.BurstCount})
}

// POST /_synapse/admin/v1/users/{userId}/override_ratelimit
func (s *Server) postAdminRateLimit(w http.ResponseWriter, r *http.Request) error {
	userID, err := s.localUserParam(r)
	if err != nil {
		return err
	}
	var req struct {
		MessagesPerSecond *float64 `json:"messages_per_second"`
		BurstCount        *float64 `json:"burst_count"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	o := storage.RateLimitOverride{}
	if req.MessagesPerSecond != nil {
		o.MessagesPerSecond = *req.MessagesPerSecond
	}
	if req.BurstCount != nil {
		o.BurstCount = *req.BurstCount
	}
	if o.MessagesPerSecond < 0 || o.BurstCount < 0 {
		return matrix.InvalidParam("messages_per_second and burst_count must be positive integers")
	}
	if _, err := s.store.UserByID(r.Context(), userID); err != nil {
		return err
	}
	if err := s.store.SetRateLimitOverride(r.Context(), userID, o); err != nil {
		return err
	}
	s.audit(r.Context(), s.apiActor(r), "user.ratelimit_override", userID, "")
	return writeJSON(w, http.StatusOK, map[string]float64{"messages_per_second": o.MessagesPerSecond, "burst_count": o.BurstCount})
}

// DELETE /_synapse/admin/v1/users/{userId}/override_ratelimit
func (s *Server) deleteAdminRateLimit(w http.ResponseWriter, r *http.Request) error {
	userID, err := s.localUserParam(r)
	if err != nil {
		return err
	}
	if err := s.store.DeleteRateLimitOverride(r.Context(), userID); err != nil {
		return err
	}
	s.audit(r.Context(), s.apiActor(r), "user.ratelimit_override_removed", userID, "")
	return writeJSON(w, http.StatusOK, struct{}{})
}

// GET /_synapse/admin/v1/username_available?username=
func (s *Server) getAdminUsernameAvailable(w http.ResponseWriter, r *http.Request) error {
	name := strings.ToLower(r.URL.Query().Get("username"))
	if me := matrix.ValidateLocalpart(name, s.cfg.ServerName); me != nil {
		return me
	}
	taken, err := s.store.LocalpartTaken(r.Context(), name)
	if err != nil {
		return err
	}
	if taken {
		return matrix.UserInUse("user ID already taken")
	}
	return writeJSON(w, http.StatusOK, map[string]bool{"available": true})
}

// adminDeviceJSON is a device in the admin API's shape.
func adminDeviceJSON(d *storage.Device) map[string]any {
	out := map[string]any{"device_id": d.DeviceID, "user_id": d.UserID, "display_name": nil,
		"last_seen_ip": nil, "last_seen_ts": nil, "last_seen_user_agent": nil}
	if d.DisplayName != "" {
		out["display_name"] = d.DisplayName
	}
	if d.LastSeenTS > 0 {
		out["last_seen_ts"], out["last_seen_ip"], out["last_seen_user_agent"] = d.LastSeenTS, d.LastSeenIP, d.LastSeenUserAgent
	}
	return out
}

// GET /_synapse/admin/v2/users/{userId}/devices
func (s *Server) getAdminDevices(w http.ResponseWriter, r *http.Request) error {
	userID, err := s.localUserParam(r)
	if err != nil {
		return err
	}
	if _, err := s.store.UserByID(r.Context(), userID); err != nil {
		return err
	}
	devs, err := s.store.Devices(r.Context(), userID)
	if err != nil {
		return err
	}
	out := make([]map[string]any, 0, len(devs))
	for _, d := range devs {
		out = append(out, adminDeviceJSON(d))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"devices": out, "total": len(out)})
}

// POST /_synapse/admin/v2/users/{userId}/devices
func (s *Server) postAdminDevice(w http.ResponseWriter, r *http.Request) error {
	userID, err := s.localUserParam(r)
	if err != nil {
		return err
	}
	var req struct {
		DeviceID string `json:"device_id"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.DeviceID == "" {
		return matrix.MissingParam("missing device_id")
	}
	if _, err := s.store.UserByID(r.Context(), userID); err != nil {
		return err
	}
	if err := s.store.CreateDevice(r.Context(), &storage.Device{UserID: userID, DeviceID: req.DeviceID}); err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, struct{}{})
}

// adminDeviceParams reads {userId} (a local user) and {deviceId}.
func (s *Server) adminDeviceParams(r *http.Request) (userID, deviceID string, err error) {
	if userID, err = s.localUserParam(r); err != nil {
		return "", "", err
	}
	deviceID, err = pathParam(r, "deviceId")
	return userID, deviceID, err
}

// GET /_synapse/admin/v2/users/{userId}/devices/{deviceId}
func (s *Server) getAdminDevice(w http.ResponseWriter, r *http.Request) error {
	userID, deviceID, err := s.adminDeviceParams(r)
	if err != nil {
		return err
	}
	d, err := s.store.Device(r.Context(), userID, deviceID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, adminDeviceJSON(d))
}

// PUT /_synapse/admin/v2/users/{userId}/devices/{deviceId}
func (s *Server) putAdminDevice(w http.ResponseWriter, r *http.Request) error {
	userID, deviceID, err := s.adminDeviceParams(r)
	if err != nil {
		return err
	}
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.DisplayName != nil {
		changed, err := s.store.SetDeviceDisplayName(r.Context(), userID, deviceID, *req.DisplayName)
		if err != nil {
			return err
		}
		if changed {
			if err := s.deviceListChanged(r.Context(), userID); err != nil {
				return err
			}
		}
	} else if _, err := s.store.Device(r.Context(), userID, deviceID); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// DELETE /_synapse/admin/v2/users/{userId}/devices/{deviceId}
func (s *Server) deleteAdminDevice(w http.ResponseWriter, r *http.Request) error {
	userID, deviceID, err := s.adminDeviceParams(r)
	if err != nil {
		return err
	}
	if err := s.DeleteUserDevices(r.Context(), s.apiActor(r), userID, []string{deviceID}); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// POST /_synapse/admin/v2/users/{userId}/delete_devices
func (s *Server) postAdminDeleteDevices(w http.ResponseWriter, r *http.Request) error {
	userID, err := s.localUserParam(r)
	if err != nil {
		return err
	}
	var req struct {
		Devices []string `json:"devices"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Devices == nil {
		return matrix.MissingParam("missing devices")
	}
	if err := s.DeleteUserDevices(r.Context(), s.apiActor(r), userID, req.Devices); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

func regTokenJSON(t *storage.RegistrationToken) map[string]any {
	var uses, exp any
	if t.UsesAllowed != nil {
		uses = *t.UsesAllowed
	}
	if t.ExpiryTime != nil {
		exp = *t.ExpiryTime
	}
	return map[string]any{"token": t.Token, "uses_allowed": uses, "pending": t.Pending, "completed": t.Completed, "expiry_time": exp}
}

// GET /_synapse/admin/v1/registration_tokens?valid=true|false
func (s *Server) getAdminRegTokens(w http.ResponseWriter, r *http.Request) error {
	var valid *bool
	if r.URL.Query().Get("valid") != "" {
		want, err := queryBool(r, "valid", true)
		if err != nil {
			return err
		}
		valid = &want
	}
	toks, err := s.RegTokens(r.Context(), valid)
	if err != nil {
		return err
	}
	out := []map[string]any{}
	for _, t := range toks {
		out = append(out, regTokenJSON(t))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"registration_tokens": out})
}

// POST /_synapse/admin/v1/registration_tokens/new
func (s *Server) postAdminRegTokenNew(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Token       *string `json:"token"`
		UsesAllowed *int    `json:"uses_allowed"`
		ExpiryTime  *int64  `json:"expiry_time"`
		Length      *int    `json:"length"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	t, err := s.CreateRegToken(r.Context(), s.apiActor(r), NewRegToken{Token: req.Token, UsesAllowed: req.UsesAllowed,
		ExpiryTime: req.ExpiryTime, Length: req.Length})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, regTokenJSON(t))
}

// GET /_synapse/admin/v1/registration_tokens/{token}
func (s *Server) getAdminRegToken(w http.ResponseWriter, r *http.Request) error {
	name, err := pathParam(r, "token")
	if err != nil {
		return err
	}
	t, err := s.store.RegistrationTokenByID(r.Context(), name)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, regTokenJSON(t))
}

// PUT /_synapse/admin/v1/registration_tokens/{token}
//
// A field that is present and null clears the limit; an absent one is kept.
func (s *Server) putAdminRegToken(w http.ResponseWriter, r *http.Request) error {
	name, err := pathParam(r, "token")
	if err != nil {
		return err
	}
	var req map[string]json.RawMessage
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	t, err := s.store.RegistrationTokenByID(r.Context(), name)
	if err != nil {
		return err
	}
	if raw, ok := req["uses_allowed"]; ok {
		t.UsesAllowed = nil
		if string(raw) != "null" {
			var n int
			if json.Unmarshal(raw, &n) != nil || !validUsesAllowed(n) {
				return errUsesAllowed()
			}
			t.UsesAllowed = &n
		}
	}
	if raw, ok := req["expiry_time"]; ok {
		t.ExpiryTime = nil
		if string(raw) != "null" {
			var n int64
			if json.Unmarshal(raw, &n) != nil || n < s.now().UnixMilli() {
				return matrix.InvalidParam("expiry_time must be an integer not in the past, or null")
			}
			t.ExpiryTime = &n
		}
	}
	if err := s.store.UpdateRegistrationToken(r.Context(), name, t.UsesAllowed, t.ExpiryTime); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, regTokenJSON(t))
}

// DELETE /_synapse/admin/v1/registration_tokens/{token}
func (s *Server) deleteAdminRegToken(w http.ResponseWriter, r *http.Request) error {
	name, err := pathParam(r, "token")
	if err != nil {
		return err
	}
	if err := s.DeleteRegToken(r.Context(), s.apiActor(r), name); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// queryInt reads a non-required integer query parameter.
func queryInt(r *http.Request, name string, def int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, matrix.InvalidParam("query parameter %s must be an integer", name)
	}
	return n, nil
}
