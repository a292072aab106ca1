package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"hearth/server/matrix"
	"hearth/server/storage"
)

// The Synapse media admin API (docs/admin_api/media_admin_api.md,
// user_admin_api.md "List media uploaded by a user", statistics.md), and
// the media operations behind it. The operations are exported so the
// dashboard can offer the same list/usage/quarantine/protect/delete with
// the same rules and the same audit entries.

// MediaInfo returns one local media item; M_NOT_FOUND when unknown.
func (s *Server) MediaInfo(ctx context.Context, mediaID string) (*storage.Media, error) {
	m, err := s.store.MediaByID(ctx, mediaID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, matrix.NotFound("unknown media")
	}
	return m, err
}

// ListMedia returns a page of local media (f.UserID: one uploader's).
func (s *Server) ListMedia(ctx context.Context, f storage.MediaFilter) ([]*storage.Media, int, error) {
	return s.store.ListMedia(ctx, f)
}

// MediaUsage returns per-user media usage.
func (s *Server) MediaUsage(ctx context.Context, f storage.MediaUsageFilter) ([]storage.MediaUsage, int, error) {
	return s.store.MediaUsageByUser(ctx, f)
}

// MediaTotals counts all local media and their bytes.
func (s *Server) MediaTotals(ctx context.Context) (count, bytes int64, err error) {
	return s.store.MediaTotals(ctx)
}

// RemoteMediaInfo returns the cached copy of another server's media;
// M_NOT_FOUND when there is none.
func (s *Server) RemoteMediaInfo(ctx context.Context, origin, mediaID string) (*storage.RemoteMedia, error) {
	m, err := s.store.RemoteMediaByID(ctx, origin, mediaID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, matrix.NotFound("unknown media")
	}
	return m, err
}

// RemoteMediaTotals counts the copies in the remote media cache and their
// bytes.
func (s *Server) RemoteMediaTotals(ctx context.Context) (count, bytes int64, err error) {
	return s.store.RemoteMediaTotals(ctx)
}

// PurgeRemoteMedia deletes the copies of other servers' media not
// downloaded since beforeTS, rows first, then files, and returns how many
// it deleted. Quarantined copies are kept (purged, they could be fetched
// again unquarantined); the others are fetched again when next asked for.
func (s *Server) PurgeRemoteMedia(ctx context.Context, by Actor, beforeTS int64) (int, error) {
	old, err := s.store.RemoteMediaBefore(ctx, beforeTS)
	if err != nil {
		return 0, err
	}
	deleted, err := s.store.DeleteRemoteMedia(ctx, old)
	if err != nil {
		return 0, err
	}
	for _, m := range deleted {
		if err := s.media.removeRemote(m.FileID); err != nil {
			logFrom(ctx, s.log).Error("remote media file not removed", "media", m.Origin+"/"+m.MediaID, "err", err)
		}
	}
	if len(deleted) > 0 {
		s.audit(ctx, by, "media.purge_remote", fmt.Sprintf("%d item(s)", len(deleted)), fmt.Sprintf("before_ts=%d", beforeTS))
	}
	return len(deleted), nil
}

// QuarantineRemoteMedia quarantines (or releases) cached copies of other
// servers' media. It returns how many changed.
func (s *Server) QuarantineRemoteMedia(ctx context.Context, by Actor, refs []storage.RemoteMediaRef, quarantine bool) (int, error) {
	q := ""
	if quarantine {
		q = by.UserID
	}
	n, err := s.store.SetRemoteMediaQuarantine(ctx, refs, q)
	if err != nil {
		return 0, err
	}
	action := "media.quarantine"
	if !quarantine {
		action = "media.unquarantine"
	}
	if n > 0 {
		names := make([]string, 0, min(len(refs), 20))
		for _, r := range refs[:min(len(refs), 20)] {
			names = append(names, r.Origin+"/"+r.MediaID)
		}
		s.audit(ctx, by, action, strings.Join(names, ", "), fmt.Sprintf("%d item(s)", n))
	}
	return n, nil
}

// DeleteMedia deletes local media by ID, rows first (so nothing serves
// them any more), then files. It returns the IDs that existed.
func (s *Server) DeleteMedia(ctx context.Context, by Actor, ids []string) ([]string, error) {
	deleted, err := s.store.DeleteMediaRows(ctx, ids)
	if err != nil {
		return nil, err
	}
	for _, id := range deleted {
		if err := s.media.remove(id); err != nil {
			logFrom(ctx, s.log).Error("media file not removed", "media_id", id, "err", err)
		}
	}
	if len(deleted) > 0 {
		detail := strings.Join(deleted, ", ")
		if len(deleted) > 20 {
			detail = strings.Join(deleted[:20], ", ") + fmt.Sprintf(" and %d more", len(deleted)-20)
		}
		s.audit(ctx, by, "media.delete", fmt.Sprintf("%d item(s)", len(deleted)), detail)
	}
	return deleted, nil
}

// DeleteMediaBefore deletes local media neither uploaded nor downloaded
// since beforeTS and larger than sizeGT bytes. Protected media is kept;
// with keepProfiles, so is media used as a user or room avatar.
func (s *Server) DeleteMediaBefore(ctx context.Context, by Actor, beforeTS, sizeGT int64, keepProfiles bool) ([]string, error) {
	ids, err := s.store.MediaIDsBefore(ctx, beforeTS, sizeGT)
	if err != nil {
		return nil, err
	}
	if keepProfiles && len(ids) > 0 {
		keep, err := s.profileMedia(ctx)
		if err != nil {
			return nil, err
		}
		kept := ids[:0]
		for _, id := range ids {
			if !keep[id] {
				kept = append(kept, id)
			}
		}
		ids = kept
	}
	return s.DeleteMedia(ctx, by, ids)
}

// profileMedia is the set of local media IDs used as avatars.
func (s *Server) profileMedia(ctx context.Context) (map[string]bool, error) {
	avatars, stateJSON, err := s.store.ProfileMXCs(ctx)
	if err != nil {
		return nil, err
	}
	keep := map[string]bool{}
	add := func(mxc string) {
		if server, id, ok := splitMXC(mxc); ok && server == s.cfg.ServerName {
			keep[id] = true
		}
	}
	for _, a := range avatars {
		add(a)
	}
	for _, raw := range stateJSON {
		var ev struct {
			Content struct {
				URL       any `json:"url"`
				AvatarURL any `json:"avatar_url"`
			} `json:"content"`
		}
		if json.Unmarshal([]byte(raw), &ev) == nil {
			for _, v := range []any{ev.Content.URL, ev.Content.AvatarURL} {
				if s, ok := v.(string); ok {
					add(s)
				}
			}
		}
	}
	return keep, nil
}

// splitMXC parses mxc://server/id.
func splitMXC(uri string) (server, id string, ok bool) {
	rest, found := strings.CutPrefix(uri, "mxc://")
	if !found {
		return "", "", false
	}
	server, id, ok = strings.Cut(rest, "/")
	if !ok || server == "" || !mediaIDRe.MatchString(id) {
		return "", "", false
	}
	return server, id, true
}

// QuarantineMedia quarantines (or releases) local media. Protected media
// is left alone. It returns how many items changed.
func (s *Server) QuarantineMedia(ctx context.Context, by Actor, ids []string, quarantine bool) (int, error) {
	q := ""
	if quarantine {
		q = by.UserID
	}
	n, err := s.store.SetMediaQuarantine(ctx, ids, q)
	if err != nil {
		return 0, err
	}
	action := "media.quarantine"
	if !quarantine {
		action = "media.unquarantine"
	}
	if n > 0 {
		s.audit(ctx, by, action, strings.Join(ids[:min(len(ids), 20)], ", "), fmt.Sprintf("%d item(s)", n))
	}
	return n, nil
}

// RoomMedia lists the mxc:// URIs a room's events refer to (content.url,
// content.info.thumbnail_url, and their encrypted-file forms), split into
// this server's and other servers'.
func (s *Server) RoomMedia(ctx context.Context, roomID string) (local, remote []string, err error) {
	if _, err := s.store.RoomByID(ctx, roomID); errors.Is(err, storage.ErrNotFound) {
		return nil, nil, matrix.NotFound("room not found")
	} else if err != nil {
		return nil, nil, err
	}
	events, err := s.store.RoomEventsWithMXC(ctx, roomID)
	if err != nil {
		return nil, nil, err
	}
	local, remote = []string{}, []string{}
	seen := map[string]bool{}
	for _, raw := range events {
		var ev struct {
			Content struct {
				URL  any `json:"url"`
				File struct {
					URL any `json:"url"`
				} `json:"file"`
				Info struct {
					ThumbnailURL  any `json:"thumbnail_url"`
					ThumbnailFile struct {
						URL any `json:"url"`
					} `json:"thumbnail_file"`
				} `json:"info"`
			} `json:"content"`
		}
		if json.Unmarshal([]byte(raw), &ev) != nil {
			continue
		}
		c := ev.Content
		for _, v := range []any{c.URL, c.Info.ThumbnailURL, c.File.URL, c.Info.ThumbnailFile.URL} {
			uri, _ := v.(string)
			server, _, ok := splitMXC(uri)
			if !ok || seen[uri] {
				continue
			}
			seen[uri] = true
			if server == s.cfg.ServerName {
				local = append(local, uri)
			} else {
				remote = append(remote, uri)
			}
		}
	}
	return local, remote, nil
}

// QuarantineRoomMedia quarantines every media item the room refers to:
// local media, and the cached copies of other servers' (a copy not cached
// is not fetched to be quarantined).
func (s *Server) QuarantineRoomMedia(ctx context.Context, by Actor, roomID string) (int, error) {
	local, remote, err := s.RoomMedia(ctx, roomID)
	if err != nil {
		return 0, err
	}
	ids := make([]string, 0, len(local))
	for _, uri := range local {
		_, id, _ := splitMXC(uri)
		ids = append(ids, id)
	}
	n, err := s.QuarantineMedia(ctx, by, ids, true)
	if err != nil || len(remote) == 0 {
		return n, err
	}
	refs := make([]storage.RemoteMediaRef, 0, len(remote))
	for _, uri := range remote {
		origin, id, _ := splitMXC(uri)
		refs = append(refs, storage.RemoteMediaRef{Origin: origin, MediaID: id})
	}
	nr, err := s.QuarantineRemoteMedia(ctx, by, refs, true)
	return n + nr, err
}

// QuarantineUserMedia quarantines everything a user uploaded.
func (s *Server) QuarantineUserMedia(ctx context.Context, by Actor, userID string) (int, error) {
	ids, err := s.store.UserMediaIDs(ctx, userID)
	if err != nil {
		return 0, err
	}
	return s.QuarantineMedia(ctx, by, ids, true)
}

// ProtectMedia marks local media safe from quarantine and age-based
// deletion, or removes the mark.
func (s *Server) ProtectMedia(ctx context.Context, by Actor, mediaID string, protect bool) error {
	if err := s.store.SetMediaProtected(ctx, mediaID, protect); errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("unknown media")
	} else if err != nil {
		return err
	}
	s.audit(ctx, by, "media.protect", mediaID, fmt.Sprintf("protected=%t", protect))
	return nil
}

// adminMediaJSON is a media item in Synapse's user media list.
func adminMediaJSON(m *storage.Media) map[string]any {
	var q any
	if m.QuarantinedBy != "" {
		q = m.QuarantinedBy
	}
	return map[string]any{
		"media_id": m.MediaID, "media_type": m.ContentType, "media_length": m.Size, "upload_name": nullIfEmpty(m.UploadName),
		"created_ts": m.CreatedTS, "last_access_ts": m.LastAccessTS, "quarantined_by": q, "safe_from_quarantine": m.Protected,
	}
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// localMediaParams reads {serverName}/{mediaId} and insists on local media.
func (s *Server) localMediaParams(r *http.Request, what string) (string, error) {
	server, err := pathParam(r, "serverName")
	if err != nil {
		return "", err
	}
	if server != s.cfg.ServerName {
		return "", matrix.InvalidParam("can only %s local media", what)
	}
	id, err := pathParam(r, "mediaId")
	if err != nil {
		return "", err
	}
	if !mediaIDRe.MatchString(id) {
		return "", matrix.NotFound("unknown media")
	}
	return id, nil
}

// GET /_synapse/admin/v1/media/{serverName}/{mediaId}
func (s *Server) getAdminMedia(w http.ResponseWriter, r *http.Request) error {
	server, err := pathParam(r, "serverName")
	if err != nil {
		return err
	}
	id, err := pathParam(r, "mediaId")
	if err != nil {
		return err
	}
	if server != s.cfg.ServerName {
		return s.getAdminRemoteMedia(w, r, server, id)
	}
	m, err := s.MediaInfo(r.Context(), id)
	if err != nil {
		return err
	}
	var q any
	if m.QuarantinedBy != "" {
		q = m.QuarantinedBy
	}
	return writeJSON(w, http.StatusOK, map[string]any{"media_info": map[string]any{
		"media_origin": s.cfg.ServerName, "user_id": m.UserID, "media_id": m.MediaID, "media_type": m.ContentType,
		"media_length": m.Size, "upload_name": nullIfEmpty(m.UploadName), "created_ts": m.CreatedTS,
		"last_access_ts": m.LastAccessTS, "quarantined_by": q, "authenticated": m.Authenticated,
		"safe_from_quarantine": m.Protected, "sha256": m.SHA256,
	}})
}

// getAdminRemoteMedia answers GET /v1/media for a cached copy of another
// server's media, in the shape Synapse gives its remote_media_cache rows.
func (s *Server) getAdminRemoteMedia(w http.ResponseWriter, r *http.Request, origin, id string) error {
	m, err := s.RemoteMediaInfo(r.Context(), origin, id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"media_info": map[string]any{
		"media_origin": m.Origin, "media_id": m.MediaID, "media_type": m.ContentType, "media_length": m.Size,
		"upload_name": nullIfEmpty(m.UploadName), "created_ts": m.CreatedTS, "last_access_ts": m.LastAccessTS,
		"filesystem_id": m.FileID, "quarantined_by": nullIfEmpty(m.QuarantinedBy), "authenticated": m.Authenticated,
		"sha256": m.SHA256,
	}})
}

// DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}
func (s *Server) deleteAdminMedia(w http.ResponseWriter, r *http.Request) error {
	id, err := s.localMediaParams(r, "delete")
	if err != nil {
		return err
	}
	if _, err := s.MediaInfo(r.Context(), id); err != nil {
		return err
	}
	deleted, err := s.DeleteMedia(r.Context(), s.apiActor(r), []string{id})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"deleted_media": deleted, "total": len(deleted)})
}

// POST /_synapse/admin/v1/media/delete
// POST /_synapse/admin/v1/media/{serverName}/delete
//
// Query: before_ts (required, ms), size_gt (bytes, default 0),
// keep_profiles (default true).
func (s *Server) postAdminMediaDelete(w http.ResponseWriter, r *http.Request) error {
	if server := chi.URLParam(r, "serverName"); server != "" && server != s.cfg.ServerName {
		return matrix.InvalidParam("can only delete local media")
	}
	q := r.URL.Query()
	if q.Get("before_ts") == "" {
		return matrix.MissingParam("missing integer query parameter before_ts")
	}
	before, err := strconv.ParseInt(q.Get("before_ts"), 10, 64)
	if err != nil || before < 0 {
		return matrix.InvalidParam("query parameter before_ts must be a positive integer")
	}
	if before < 30_000_000_000 {
		// Synapse's guard against seconds passed for milliseconds.
		return matrix.InvalidParam("query parameter before_ts you provided is from the year 1970; double check that you are providing a timestamp in milliseconds")
	}
	var sizeGT int64
	if v := q.Get("size_gt"); v != "" {
		if sizeGT, err = strconv.ParseInt(v, 10, 64); err != nil || sizeGT < 0 {
			return matrix.InvalidParam("query parameter size_gt must be a non-negative integer")
		}
	}
	keep, err := queryBool(r, "keep_profiles", true)
	if err != nil {
		return err
	}
	deleted, err := s.DeleteMediaBefore(r.Context(), s.apiActor(r), before, sizeGT, keep)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"deleted_media": deleted, "total": len(deleted)})
}

// POST /_synapse/admin/v1/purge_media_cache
//
// Deletes the cached copies of other servers' media not downloaded since
// before_ts (ms), quarantined ones excepted (PurgeRemoteMedia).
func (s *Server) postAdminPurgeMediaCache(w http.ResponseWriter, r *http.Request) error {
	v := r.URL.Query().Get("before_ts")
	if v == "" {
		return matrix.MissingParam("missing integer query parameter before_ts")
	}
	before, err := strconv.ParseInt(v, 10, 64)
	if err != nil || before < 0 {
		return matrix.InvalidParam("query parameter before_ts must be a positive integer")
	}
	n, err := s.PurgeRemoteMedia(r.Context(), s.apiActor(r), before)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]int{"deleted": n})
}

// POST /_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}
func (s *Server) postAdminQuarantineMedia(w http.ResponseWriter, r *http.Request) error {
	return s.quarantineOne(w, r, true)
}

// POST /_synapse/admin/v1/media/unquarantine/{serverName}/{mediaId}
func (s *Server) postAdminUnquarantineMedia(w http.ResponseWriter, r *http.Request) error {
	return s.quarantineOne(w, r, false)
}

func (s *Server) quarantineOne(w http.ResponseWriter, r *http.Request, quarantine bool) error {
	origin, err := pathParam(r, "serverName")
	if err != nil {
		return err
	}
	if origin != s.cfg.ServerName {
		// Another server's media: its cached copy, when there is one.
		id, err := pathParam(r, "mediaId")
		if err != nil {
			return err
		}
		if _, err := s.RemoteMediaInfo(r.Context(), origin, id); err != nil {
			return err
		}
		refs := []storage.RemoteMediaRef{{Origin: origin, MediaID: id}}
		if _, err := s.QuarantineRemoteMedia(r.Context(), s.apiActor(r), refs, quarantine); err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, struct{}{})
	}
	id, err := s.localMediaParams(r, "quarantine")
	if err != nil {
		return err
	}
	if _, err := s.MediaInfo(r.Context(), id); err != nil {
		return err
	}
	if _, err := s.QuarantineMedia(r.Context(), s.apiActor(r), []string{id}, quarantine); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// POST /_synapse/admin/v1/room/{roomId}/media/quarantine
// POST /_synapse/admin/v1/quarantine_media/{roomId} (deprecated form)
func (s *Server) postAdminQuarantineRoomMedia(w http.ResponseWriter, r *http.Request) error {
	roomID, err := pathParam(r, "roomId")
	if err != nil {
		return err
	}
	n, err := s.QuarantineRoomMedia(r.Context(), s.apiActor(r), roomID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]int{"num_quarantined": n})
}

// POST /_synapse/admin/v1/user/{userId}/media/quarantine
func (s *Server) postAdminQuarantineUserMedia(w http.ResponseWriter, r *http.Request) error {
	userID, err := s.localUserParam(r)
	if err != nil {
		return err
	}
	n, err := s.QuarantineUserMedia(r.Context(), s.apiActor(r), userID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]int{"num_quarantined": n})
}

// POST /_synapse/admin/v1/media/protect/{mediaId}
func (s *Server) postAdminProtectMedia(w http.ResponseWriter, r *http.Request) error {
	return s.protectOne(w, r, true)
}

// POST /_synapse/admin/v1/media/unprotect/{mediaId}
func (s *Server) postAdminUnprotectMedia(w http.ResponseWriter, r *http.Request) error {
	return s.protectOne(w, r, false)
}

func (s *Server) protectOne(w http.ResponseWriter, r *http.Request, protect bool) error {
	id, err := pathParam(r, "mediaId")
	if err != nil {
		return err
	}
	if !mediaIDRe.MatchString(id) {
		return matrix.NotFound("unknown media")
	}
	if err := s.ProtectMedia(r.Context(), s.apiActor(r), id, protect); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// GET /_synapse/admin/v1/room/{roomId}/media
func (s *Server) getAdminRoomMedia(w http.ResponseWriter, r *http.Request) error {
	roomID, err := pathParam(r, "roomId")
	if err != nil {
		return err
	}
	local, remote, err := s.RoomMedia(r.Context(), roomID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"local": local, "remote": remote})
}

// userMediaFilter reads from, limit, order_by and dir (Synapse's user media list).
func userMediaFilter(r *http.Request, userID string) (storage.MediaFilter, error) {
	f := storage.MediaFilter{UserID: userID, OrderBy: r.URL.Query().Get("order_by")}
	var err error
	if f.From, err = queryInt(r, "from", 0); err != nil {
		return f, err
	}
	if f.Limit, err = queryInt(r, "limit", 100); err != nil {
		return f, err
	}
	if f.From < 0 {
		return f, matrix.InvalidParam("query parameter from must be a string representing a positive integer")
	}
	if f.Limit < 0 {
		return f, matrix.InvalidParam("query parameter limit must be a string representing a positive integer")
	}
	if f.OrderBy == "" {
		f.OrderBy = "created_ts"
	} else if !storage.MediaOrderKnown(f.OrderBy) {
		return f, matrix.InvalidParam("unknown value for order_by: %s", f.OrderBy)
	}
	f.Desc, err = queryDir(r)
	return f, err
}

// queryDir reads dir: f (default) or b.
func queryDir(r *http.Request) (bool, error) {
	switch d := r.URL.Query().Get("dir"); d {
	case "", "f":
		return false, nil
	case "b":
		return true, nil
	default:
		return false, matrix.InvalidParam("unknown direction: %s", d)
	}
}

// adminUserForMedia reads {userId}: local and existing.
func (s *Server) adminUserForMedia(r *http.Request) (string, error) {
	userID, err := s.localUserParam(r)
	if err != nil {
		return "", err
	}
	if _, err := s.store.UserByID(r.Context(), userID); errors.Is(err, storage.ErrNotFound) {
		return "", matrix.NotFound("unknown user")
	} else if err != nil {
		return "", err
	}
	return userID, nil
}

// GET /_synapse/admin/v1/users/{userId}/media
func (s *Server) getAdminUserMedia(w http.ResponseWriter, r *http.Request) error {
	userID, err := s.adminUserForMedia(r)
	if err != nil {
		return err
	}
	f, err := userMediaFilter(r, userID)
	if err != nil {
		return err
	}
	media, total, err := s.ListMedia(r.Context(), f)
	if err != nil {
		return err
	}
	out := make([]map[string]any, 0, len(media))
	for _, m := range media {
		out = append(out, adminMediaJSON(m))
	}
	body := map[string]any{"media": out, "total": total}
	if f.From+len(media) < total {
		body["next_token"] = f.From + len(media)
	}
	return writeJSON(w, http.StatusOK, body)
}

// DELETE /_synapse/admin/v1/users/{userId}/media
//
// Deletes the page of the user's media that GET would list with the same
// from, limit, order_by and dir.
func (s *Server) deleteAdminUserMedia(w http.ResponseWriter, r *http.Request) error {
	userID, err := s.adminUserForMedia(r)
	if err != nil {
		return err
	}
	f, err := userMediaFilter(r, userID)
	if err != nil {
		return err
	}
	media, _, err := s.ListMedia(r.Context(), f)
	if err != nil {
		return err
	}
	ids := make([]string, 0, len(media))
	for _, m := range media {
		ids = append(ids, m.MediaID)
	}
	deleted, err := s.DeleteMedia(r.Context(), s.apiActor(r), ids)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"deleted_media": deleted, "total": len(deleted)})
}

// GET /_synapse/admin/v1/statistics/users/media
//
// Query: from, limit, order_by (user_id, displayname, media_length,
// media_count), dir, search_term, from_ts, until_ts.
func (s *Server) getAdminMediaStatistics(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := storage.MediaUsageFilter{OrderBy: q.Get("order_by")}
	var err error
	if f.From, err = queryInt(r, "from", 0); err != nil {
		return err
	}
	if f.Limit, err = queryInt(r, "limit", 100); err != nil {
		return err
	}
	if f.From < 0 {
		return matrix.InvalidParam("query parameter from must be a string representing a positive integer")
	}
	if f.Limit < 0 {
		return matrix.InvalidParam("query parameter limit must be a string representing a positive integer")
	}
	if f.OrderBy == "" {
		f.OrderBy = "user_id"
	} else if _, ok := mediaUsageOrderNames[f.OrderBy]; !ok {
		return matrix.InvalidParam("unknown value for order_by: %s", f.OrderBy)
	}
	for _, p := range []struct {
		name string
		dst  *int64
	}{{"from_ts", &f.FromTS}, {"until_ts", &f.UntilTS}} {
		if v := q.Get(p.name); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return matrix.InvalidParam("query parameter %s must be a string representing a positive integer", p.name)
			}
			*p.dst = n
		}
	}
	if f.UntilTS > 0 && f.UntilTS < f.FromTS {
		return matrix.InvalidParam("query parameter until_ts must be greater than from_ts")
	}
	if q.Has("search_term") {
		if f.SearchTerm = q.Get("search_term"); f.SearchTerm == "" {
			return matrix.InvalidParam("query parameter search_term cannot be empty")
		}
	}
	if f.Desc, err = queryDir(r); err != nil {
		return err
	}
	usage, total, err := s.MediaUsage(r.Context(), f)
	if err != nil {
		return err
	}
	users := make([]map[string]any, 0, len(usage))
	for _, u := range usage {
		users = append(users, map[string]any{"user_id": u.UserID, "displayname": nullIfEmpty(u.DisplayName),
			"media_count": u.Count, "media_length": u.Bytes})
	}
	body := map[string]any{"users": users, "total": total}
	if f.From+len(usage) < total {
		body["next_token"] = f.From + len(usage)
	}
	return writeJSON(w, http.StatusOK, body)
}

var mediaUsageOrderNames = map[string]bool{"user_id": true, "displayname": true, "media_length": true, "media_count": true}
