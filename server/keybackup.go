package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"hearth/server/matrix"
	"hearth/server/storage"
)

// Server-side key backups (spec: "Server-side key backups"). The server
// keeps the encrypted session keys opaque; it only compares the three
// fields the spec's replacement rule reads (storage.PutBackupKeys).

// backupVersionParam parses a version from the path or the query.
func backupVersionParam(v string) (int64, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		// Versions are opaque strings to clients; one we never issued
		// simply does not exist.
		return 0, matrix.NotFound("unknown backup version")
	}
	return n, nil
}

// backupVersionJSON is a version as the version endpoints answer it.
func backupVersionJSON(b *storage.BackupVersion) map[string]any {
	return map[string]any{
		"algorithm": b.Algorithm,
		"auth_data": json.RawMessage(b.AuthData),
		"count":     b.Count,
		"etag":      strconv.FormatInt(b.ETag, 10),
		"version":   strconv.FormatInt(b.Version, 10),
	}
}

// backupVersionBody is the body of POST and PUT /room_keys/version.
type backupVersionBody struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Version   *string         `json:"version"`
}

func (b *backupVersionBody) Validate() error {
	if b.Algorithm == "" {
		return matrix.MissingParam("algorithm is required")
	}
	if len(b.AuthData) == 0 || b.AuthData[0] != '{' {
		return matrix.BadJSON("auth_data must be an object")
	}
	return nil
}

// POST /_matrix/client/v3/room_keys/version
func (s *Server) postRoomKeysVersion(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	var req backupVersionBody
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	v, err := s.store.CreateBackupVersion(r.Context(), me.UserID, req.Algorithm, req.AuthData)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"version": strconv.FormatInt(v, 10)})
}

// GET /_matrix/client/v3/room_keys/version
// GET /_matrix/client/v3/room_keys/version/{version}
func (s *Server) getRoomKeysVersion(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	var v int64
	if p, err := pathParam(r, "version"); err != nil {
		return err
	} else if p != "" {
		if v, err = backupVersionParam(p); err != nil {
			return err
		}
	}
	b, err := s.store.BackupVersionOf(r.Context(), me.UserID, v)
	if errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("no current backup version")
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, backupVersionJSON(b))
}

// PUT /_matrix/client/v3/room_keys/version/{version}
func (s *Server) putRoomKeysVersion(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	p, err := pathParam(r, "version")
	if err != nil {
		return err
	}
	v, err := backupVersionParam(p)
	if err != nil {
		return err
	}
	var req backupVersionBody
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	if req.Version != nil && *req.Version != p {
		return matrix.InvalidParam("version in the body does not match the path")
	}
	b, err := s.store.BackupVersionOf(r.Context(), me.UserID, v)
	if errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("unknown backup version")
	}
	if err != nil {
		return err
	}
	if b.Algorithm != req.Algorithm {
		return matrix.InvalidParam("the algorithm of a backup version cannot change")
	}
	if err := s.store.UpdateBackupAuthData(r.Context(), me.UserID, v, req.AuthData); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// DELETE /_matrix/client/v3/room_keys/version/{version}
func (s *Server) deleteRoomKeysVersion(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	p, err := pathParam(r, "version")
	if err != nil {
		return err
	}
	v, err := backupVersionParam(p)
	if err != nil {
		return err
	}
	if err := s.store.DeleteBackupVersion(r.Context(), me.UserID, v); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return matrix.NotFound("unknown backup version")
		}
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// backupKeyJSON is one key as stored and answered.
type backupKeyJSON struct {
	FirstMessageIndex *int64          `json:"first_message_index"`
	ForwardedCount    *int64          `json:"forwarded_count"`
	IsVerified        *bool           `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

func (k *backupKeyJSON) toStorage(roomID, sessionID string) (storage.BackupKey, error) {
	if k.FirstMessageIndex == nil || k.ForwardedCount == nil || k.IsVerified == nil {
		return storage.BackupKey{}, matrix.MissingParam("first_message_index, forwarded_count and is_verified are required")
	}
	if len(k.SessionData) == 0 || k.SessionData[0] != '{' {
		return storage.BackupKey{}, matrix.BadJSON("session_data must be an object")
	}
	return storage.BackupKey{RoomID: roomID, SessionID: sessionID, FirstMessageIndex: *k.FirstMessageIndex,
		ForwardedCount: *k.ForwardedCount, IsVerified: *k.IsVerified, SessionData: k.SessionData}, nil
}

// keysScope reads the optional roomId and sessionId path parameters.
func keysScope(r *http.Request) (roomID, sessionID string, err error) {
	if roomID, err = pathParam(r, "roomId"); err != nil {
		return "", "", err
	}
	sessionID, err = pathParam(r, "sessionId")
	return roomID, sessionID, err
}

// backupForKeys resolves ?version= for the keys endpoints. Writes must
// name the current version (spec: M_WRONG_ROOM_KEYS_VERSION otherwise).
func (s *Server) backupForKeys(r *http.Request, write bool) (*storage.BackupVersion, error) {
	me := deviceFrom(r.Context())
	q := r.URL.Query().Get("version")
	if q == "" {
		return nil, matrix.MissingParam("version is required")
	}
	v, err := backupVersionParam(q)
	if err != nil {
		return nil, err
	}
	if write {
		cur, err := s.store.BackupVersionOf(r.Context(), me.UserID, 0)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, matrix.NotFound("no current backup version")
		}
		if err != nil {
			return nil, err
		}
		if cur.Version != v {
			return nil, (&matrix.Error{Code: "M_WRONG_ROOM_KEYS_VERSION", Msg: "version is not the current backup version", Status: http.StatusForbidden}).
				With("current_version", strconv.FormatInt(cur.Version, 10))
		}
		return cur, nil
	}
	b, err := s.store.BackupVersionOf(r.Context(), me.UserID, v)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, matrix.NotFound("unknown backup version")
	}
	return b, err
}

// etagCount answers a keys write with the version's new etag and count.
func (s *Server) etagCount(w http.ResponseWriter, r *http.Request, version int64) error {
	me := deviceFrom(r.Context())
	b, err := s.store.BackupVersionOf(r.Context(), me.UserID, version)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"etag": strconv.FormatInt(b.ETag, 10), "count": b.Count})
}

// PUT /_matrix/client/v3/room_keys/keys
// PUT /_matrix/client/v3/room_keys/keys/{roomId}
// PUT /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}
func (s *Server) putRoomKeys(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	roomID, sessionID, err := keysScope(r)
	if err != nil {
		return err
	}
	var keys []storage.BackupKey
	switch {
	case sessionID != "":
		var k backupKeyJSON
		if err := decodeJSON(r, &k); err != nil {
			return err
		}
		sk, err := k.toStorage(roomID, sessionID)
		if err != nil {
			return err
		}
		keys = append(keys, sk)
	case roomID != "":
		var body struct {
			Sessions map[string]backupKeyJSON `json:"sessions"`
		}
		if err := decodeJSON(r, &body); err != nil {
			return err
		}
		for sid, k := range body.Sessions {
			sk, err := k.toStorage(roomID, sid)
			if err != nil {
				return err
			}
			keys = append(keys, sk)
		}
	default:
		var body struct {
			Rooms map[string]struct {
				Sessions map[string]backupKeyJSON `json:"sessions"`
			} `json:"rooms"`
		}
		if err := decodeJSON(r, &body); err != nil {
			return err
		}
		for rid, room := range body.Rooms {
			for sid, k := range room.Sessions {
				sk, err := k.toStorage(rid, sid)
				if err != nil {
					return err
				}
				keys = append(keys, sk)
			}
		}
	}
	b, err := s.backupForKeys(r, true)
	if err != nil {
		return err
	}
	if err := s.store.PutBackupKeys(r.Context(), me.UserID, b.Version, keys); err != nil {
		return err
	}
	return s.etagCount(w, r, b.Version)
}

// GET /_matrix/client/v3/room_keys/keys
// GET /_matrix/client/v3/room_keys/keys/{roomId}
// GET /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}
func (s *Server) getRoomKeys(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	roomID, sessionID, err := keysScope(r)
	if err != nil {
		return err
	}
	b, err := s.backupForKeys(r, false)
	if err != nil {
		return err
	}
	keys, err := s.store.BackupKeys(r.Context(), me.UserID, b.Version, roomID, sessionID)
	if err != nil {
		return err
	}
	toJSON := func(k *storage.BackupKey) backupKeyJSON {
		return backupKeyJSON{FirstMessageIndex: &k.FirstMessageIndex, ForwardedCount: &k.ForwardedCount, IsVerified: &k.IsVerified, SessionData: k.SessionData}
	}
	switch {
	case sessionID != "":
		if len(keys) == 0 {
			return matrix.NotFound("no key for this session")
		}
		return writeJSON(w, http.StatusOK, toJSON(&keys[0]))
	case roomID != "":
		// A room without keys is an empty object, not 404 (spec).
		sessions := map[string]backupKeyJSON{}
		for i := range keys {
			sessions[keys[i].SessionID] = toJSON(&keys[i])
		}
		return writeJSON(w, http.StatusOK, map[string]any{"sessions": sessions})
	}
	type roomKeys struct {
		Sessions map[string]backupKeyJSON `json:"sessions"`
	}
	out := map[string]roomKeys{}
	for i := range keys {
		rk, ok := out[keys[i].RoomID]
		if !ok {
			rk = roomKeys{Sessions: map[string]backupKeyJSON{}}
			out[keys[i].RoomID] = rk
		}
		rk.Sessions[keys[i].SessionID] = toJSON(&keys[i])
	}
	return writeJSON(w, http.StatusOK, map[string]any{"rooms": out})
}

// DELETE /_matrix/client/v3/room_keys/keys
// DELETE /_matrix/client/v3/room_keys/keys/{roomId}
// DELETE /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}
func (s *Server) deleteRoomKeys(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	roomID, sessionID, err := keysScope(r)
	if err != nil {
		return err
	}
	b, err := s.backupForKeys(r, false)
	if err != nil {
		return err
	}
	if err := s.store.DeleteBackupKeys(r.Context(), me.UserID, b.Version, roomID, sessionID); err != nil {
		return err
	}
	return s.etagCount(w, r, b.Version)
}
