package server

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"hearth/server/matrix"
	"hearth/server/rooms"
	"hearth/server/storage"
)

// End-to-end encryption keys (spec: "End-to-End Encryption", "Key
// management API" and "Cross-signing"). The server stores what devices
// upload and hands it out; it checks the signatures it can, so a device
// cannot publish keys for another device and cross-signing keys are signed
// by the master key, but it never sees private keys.

// signedObject is the part of a signed key object the server reads.
type signedObject struct {
	UserID     string                       `json:"user_id"`
	DeviceID   string                       `json:"device_id"`
	Algorithms []string                     `json:"algorithms"`
	Usage      []string                     `json:"usage"`
	Keys       map[string]string            `json:"keys"`
	Signatures map[string]map[string]string `json:"signatures"`
}

// decodeBase64 reads unpadded (or padded) standard base64, as the spec's
// keys and signatures use.
func decodeBase64(s string) ([]byte, error) {
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}

// signedBytes is the canonical JSON a signature on obj covers: obj without
// signatures and unsigned (spec: "Signing JSON").
func signedBytes(obj json.RawMessage) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		return nil, err
	}
	delete(m, "signatures")
	delete(m, "unsigned")
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	return rooms.CanonicalJSON(b)
}

// verifySignature checks sig (base64) by the ed25519 public key pub
// (base64) over obj.
func verifySignature(obj json.RawMessage, pub, sig string) bool {
	pk, err1 := decodeBase64(pub)
	sb, err2 := decodeBase64(sig)
	msg, err3 := signedBytes(obj)
	if err1 != nil || err2 != nil || err3 != nil || len(pk) != ed25519.PublicKeySize {
		return false
	}
	return ed25519.Verify(ed25519.PublicKey(pk), msg, sb)
}

// canonicalKey re-encodes an uploaded key object canonically, so an
// identical re-upload compares equal.
func canonicalKey(raw json.RawMessage) ([]byte, error) {
	b, err := rooms.CanonicalJSON(raw)
	if err != nil {
		return nil, matrix.BadJSON("invalid key object")
	}
	return b, nil
}

// splitKeyID splits "algorithm:id".
func splitKeyID(s string) (alg, id string, ok bool) {
	alg, id, ok = strings.Cut(s, ":")
	return alg, id, ok && alg != "" && id != ""
}

// oneTimeKeys parses the one_time_keys or fallback_keys of an upload.
func oneTimeKeys(in map[string]json.RawMessage, field string) ([]storage.OneTimeKey, error) {
	out := make([]storage.OneTimeKey, 0, len(in))
	for kid, raw := range in {
		alg, id, ok := splitKeyID(kid)
		if !ok {
			return nil, matrix.InvalidParam("%s: key ID %q is not algorithm:id", field, kid)
		}
		b, err := canonicalKey(raw)
		if err != nil {
			return nil, err
		}
		out = append(out, storage.OneTimeKey{Algorithm: alg, KeyID: id, JSON: b})
	}
	// A stable order keeps concurrent uploads from deadlocking each other.
	slices.SortFunc(out, func(a, b storage.OneTimeKey) int {
		return strings.Compare(a.Algorithm+":"+a.KeyID, b.Algorithm+":"+b.KeyID)
	})
	return out, nil
}

// otkCounts is the one_time_key_counts answer: signed_curve25519 is always
// present, so clients learn when they have none left.
func (s *Server) otkCounts(ctx context.Context, userID, deviceID string) (map[string]int, error) {
	c, err := s.store.OneTimeKeyCounts(ctx, userID, deviceID)
	if err != nil {
		return nil, err
	}
	if _, ok := c["signed_curve25519"]; !ok {
		c["signed_curve25519"] = 0
	}
	return c, nil
}

// POST /_matrix/client/v3/keys/upload
func (s *Server) postKeysUpload(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	me := deviceFrom(ctx)
	var req struct {
		DeviceKeys   json.RawMessage            `json:"device_keys"`
		OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
		FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	up := &storage.KeyUpload{}
	if len(req.DeviceKeys) > 0 && string(req.DeviceKeys) != "null" {
		var dk signedObject
		if err := json.Unmarshal(req.DeviceKeys, &dk); err != nil {
			return matrix.BadJSON("device_keys is not a device keys object")
		}
		if dk.UserID != me.UserID || dk.DeviceID != me.DeviceID {
			return matrix.InvalidParam("device_keys must be this device's (user_id %s, device_id %s)", me.UserID, me.DeviceID)
		}
		if len(dk.Algorithms) == 0 {
			return matrix.BadJSON("device_keys.algorithms is required")
		}
		if dk.Keys["ed25519:"+me.DeviceID] == "" {
			return matrix.BadJSON("device_keys.keys must hold ed25519:%s", me.DeviceID)
		}
		// The self-signature is not checked here: other clients verify it
		// before trusting the keys, and Synapse accepts unsigned uploads
		// (Complement's tests upload random keys), so refusing them would
		// only break clients that work elsewhere.
		b, err := canonicalKey(req.DeviceKeys)
		if err != nil {
			return err
		}
		up.DeviceKeys = b
	}
	var err error
	if up.OneTimeKeys, err = oneTimeKeys(req.OneTimeKeys, "one_time_keys"); err != nil {
		return err
	}
	if up.FallbackKeys, err = oneTimeKeys(req.FallbackKeys, "fallback_keys"); err != nil {
		return err
	}
	changed, err := s.store.UploadKeys(ctx, me.UserID, me.DeviceID, up)
	if errors.Is(err, storage.ErrKeyConflict) {
		return matrix.InvalidParam("a one-time key with this ID was already uploaded with different content")
	}
	if err != nil {
		return err
	}
	if changed {
		if err := s.deviceListChanged(ctx, me.UserID); err != nil {
			return err
		}
	}
	counts, err := s.otkCounts(ctx, me.UserID, me.DeviceID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"one_time_key_counts": counts})
}

// isLocalUser reports whether userID is well-formed and on this server.
func (s *Server) isLocalUser(userID string) bool {
	_, server, ok := matrix.SplitUserID(userID)
	return ok && server == s.cfg.ServerName
}

// withSignatures adds to a stored key object the uploaded signatures on it
// (target key targetKey of targetUser) that viewer may see: those by the
// key's owner, and the viewer's own.
func withSignatures(raw []byte, sigs []storage.KeySignature, targetKey, viewer string, extra map[string]any) (json.RawMessage, error) {
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("stored key object: %w", err)
	}
	for _, sg := range sigs {
		if sg.TargetKey != targetKey || (sg.SignerUser != sg.TargetUser && sg.SignerUser != viewer) {
			continue
		}
		all, _ := obj["signatures"].(map[string]any)
		if all == nil {
			all = map[string]any{}
			obj["signatures"] = all
		}
		mine, _ := all[sg.SignerUser].(map[string]any)
		if mine == nil {
			mine = map[string]any{}
			all[sg.SignerUser] = mine
		}
		mine[sg.SignerKey] = sg.Signature
	}
	for k, v := range extra {
		obj[k] = v
	}
	b, err := json.Marshal(obj)
	return b, err
}

// keysAnswer is the answer to a keys query (the client's, or another
// server's, which has no user-signing keys), by user ID.
type keysAnswer struct {
	devices     map[string]map[string]json.RawMessage
	master      map[string]json.RawMessage
	selfSigning map[string]json.RawMessage
	userSigning map[string]json.RawMessage
}

func newKeysAnswer() *keysAnswer {
	return &keysAnswer{devices: map[string]map[string]json.RawMessage{}, master: map[string]json.RawMessage{},
		selfSigning: map[string]json.RawMessage{}, userSigning: map[string]json.RawMessage{}}
}

// localKeys adds the local user userID's keys to out: the devices in
// wanted (all when empty) and the cross-signing keys, with the signatures
// viewer may see. viewer "" is another server: it sees the owner's
// signatures only, no user-signing key, and device names only with
// allow_device_name_lookup_over_federation (off, as in Synapse).
func (s *Server) localKeys(ctx context.Context, out *keysAnswer, userID string, wanted []string, viewer string) error {
	keys, err := s.store.DeviceKeys(ctx, userID)
	if err != nil {
		return err
	}
	sigs, err := s.store.KeySignatures(ctx, userID)
	if err != nil {
		return err
	}
	names := map[string]string{}
	if viewer != "" || s.cfg.AllowDeviceNameLookupOverFederation {
		devices, err := s.store.Devices(ctx, userID)
		if err != nil {
			return err
		}
		for _, d := range devices {
			names[d.DeviceID] = d.DisplayName
		}
	}
	devs := map[string]json.RawMessage{}
	for deviceID, raw := range keys {
		if len(wanted) > 0 && !slices.Contains(wanted, deviceID) {
			continue
		}
		var extra map[string]any
		if n := names[deviceID]; n != "" {
			extra = map[string]any{"unsigned": map[string]any{"device_display_name": n}}
		}
		obj, err := withSignatures(raw, sigs, deviceID, viewer, extra)
		if err != nil {
			return err
		}
		devs[deviceID] = obj
	}
	out.devices[userID] = devs
	cs, err := s.store.CrossSigningKeys(ctx, userID)
	if err != nil {
		return err
	}
	for typ, dst := range map[string]map[string]json.RawMessage{"master": out.master, "self_signing": out.selfSigning, "user_signing": out.userSigning} {
		k := cs[typ]
		// A user's user-signing key is theirs alone (spec: "Cross-signing").
		if k == nil || (typ == "user_signing" && userID != viewer) {
			continue
		}
		obj, err := withSignatures(k.JSON, sigs, k.PublicKey, viewer, nil)
		if err != nil {
			return err
		}
		dst[userID] = obj
	}
	return nil
}

// remoteTimeout is how long a client request waits for other servers: the
// request's timeout (ms), 10 s by default as in Synapse, at most a minute.
func remoteTimeout(ms *int64) time.Duration {
	if ms == nil || *ms <= 0 {
		return 10 * time.Second
	}
	return min(time.Duration(*ms)*time.Millisecond, time.Minute)
}

// POST /_matrix/client/v3/keys/query
//
// Remote users' keys come from the cache of the device lists this server
// tracks, or from their servers (federation_keys.go).
func (s *Server) postKeysQuery(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	me := deviceFrom(ctx)
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
		Timeout    *int64              `json:"timeout"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	out := newKeysAnswer()
	remote := map[string][]string{}
	for userID, wanted := range req.DeviceKeys {
		if !s.isLocalUser(userID) {
			if _, _, ok := matrix.SplitUserID(userID); ok {
				remote[userID] = wanted
			}
			continue
		}
		if err := s.localKeys(ctx, out, userID, wanted, me.UserID); err != nil {
			return err
		}
	}
	failures, err := s.remoteKeys(ctx, out, remote, me.UserID, remoteTimeout(req.Timeout))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{
		"failures":          failures,
		"device_keys":       out.devices,
		"master_keys":       out.master,
		"self_signing_keys": out.selfSigning,
		"user_signing_keys": out.userSigning,
	})
}

// claimLocal claims one key per device of local users in req (user →
// device → algorithm) into out.
func (s *Server) claimLocal(ctx context.Context, req map[string]map[string]string, out map[string]map[string]map[string]json.RawMessage) error {
	for userID, devices := range req {
		if !s.isLocalUser(userID) {
			continue
		}
		for deviceID, alg := range devices {
			k, err := s.store.ClaimOneTimeKey(ctx, userID, deviceID, alg)
			if errors.Is(err, storage.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if out[userID] == nil {
				out[userID] = map[string]map[string]json.RawMessage{}
			}
			out[userID][deviceID] = map[string]json.RawMessage{k.Algorithm + ":" + k.KeyID: k.JSON}
		}
	}
	return nil
}

// POST /_matrix/client/v3/keys/claim
func (s *Server) postKeysClaim(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
		Timeout     *int64                       `json:"timeout"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	out := map[string]map[string]map[string]json.RawMessage{}
	if err := s.claimLocal(ctx, req.OneTimeKeys, out); err != nil {
		return err
	}
	failures := s.claimRemote(ctx, req.OneTimeKeys, out, remoteTimeout(req.Timeout))
	return writeJSON(w, http.StatusOK, map[string]any{"one_time_keys": out, "failures": failures})
}

// GET /_matrix/client/v3/keys/changes
//
// Also served for POST, which mautrix-go's client sends.
func (s *Server) getKeysChanges(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	me := deviceFrom(ctx)
	q := r.URL.Query()
	if q.Get("from") == "" || q.Get("to") == "" {
		return matrix.MissingParam("from and to are required")
	}
	from, err := parseSyncToken(q.Get("from"))
	if err != nil {
		return err
	}
	to, err := parseSyncToken(q.Get("to"))
	if err != nil {
		return err
	}
	changed, left, _, err := s.deviceListDelta(ctx, me.UserID, from, to)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"changed": changed, "left": left})
}

// crossSigningKey parses and checks one uploaded cross-signing key of type
// typ: it is the caller's, names its usage, and holds one ed25519 key.
func crossSigningKey(raw json.RawMessage, typ, userID string) (*storage.CrossSigningKey, *signedObject, error) {
	var o signedObject
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, nil, matrix.BadJSON("%s_key is not a cross-signing key", typ)
	}
	if o.UserID != userID {
		return nil, nil, matrix.InvalidParam("%s_key.user_id must be %s", typ, userID)
	}
	if !slices.Contains(o.Usage, typ) {
		return nil, nil, matrix.InvalidParam("%s_key.usage must include %s", typ, typ)
	}
	if len(o.Keys) != 1 {
		return nil, nil, matrix.InvalidParam("%s_key must hold exactly one key", typ)
	}
	var pub string
	for kid, v := range o.Keys {
		alg, id, ok := splitKeyID(kid)
		if !ok || alg != "ed25519" || id != v {
			return nil, nil, matrix.InvalidParam("%s_key.keys must be {\"ed25519:<key>\": \"<key>\"}", typ)
		}
		pub = v
	}
	b, err := canonicalKey(raw)
	if err != nil {
		return nil, nil, err
	}
	return &storage.CrossSigningKey{Type: typ, PublicKey: pub, JSON: b}, &o, nil
}

// POST /_matrix/client/v3/keys/device_signing/upload
//
// The first upload needs no user-interactive auth (as Synapse: a new
// account's client sets cross-signing up right after login); replacing
// keys does, since it resets the user's trust.
func (s *Server) postDeviceSigningUpload(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	me := deviceFrom(ctx)
	var fields map[string]json.RawMessage
	if err := decodeJSON(r, &fields); err != nil {
		return err
	}
	existing, err := s.store.CrossSigningKeys(ctx, me.UserID)
	if err != nil {
		return err
	}
	// Parse first without auth to see whether this replaces anything; a
	// request carrying only auth uses the body its UIA session bound.
	news, err := parseCrossSigningUpload(fields, me.UserID, existing)
	if err != nil && !hasUIASession(fields) {
		return err
	}
	// UIA when the upload replaces keys, or when it is only an auth dict
	// (its session's body then). The same keys again succeed whatever
	// auth they carry, even a finished session's: a client repeating its
	// upload (MSC3967, as Synapse does).
	onlyAuth := err != nil || len(news) == 0
	if (hasUIASession(fields) && onlyAuth) || replacesKeys(news, existing) {
		se, bound, err := s.uia(w, r, fields, s.crossSigningResetUIA(r, me.UserID))
		if err != nil || se == nil {
			return err
		}
		if err := s.store.DeleteUIASession(ctx, se.id); err != nil {
			return err
		}
		s.xsReset.used(me.UserID)
		if news, err = parseCrossSigningUpload(bound, me.UserID, existing); err != nil {
			return err
		}
	}
	if len(news) > 0 {
		if err := s.store.PutCrossSigningKeys(ctx, me.UserID, news); err != nil {
			return err
		}
		if err := s.deviceListChanged(ctx, me.UserID); err != nil {
			return err
		}
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// replacesKeys reports whether an upload changes keys of a user who has
// cross-signing keys already: once a master key exists, any key but the
// very same ones needs the password, as in Synapse.
func replacesKeys(news []*storage.CrossSigningKey, existing map[string]*storage.CrossSigningKey) bool {
	if existing["master"] == nil {
		return false
	}
	for _, k := range news {
		if old := existing[k.Type]; old == nil || string(old.JSON) != string(k.JSON) {
			return true
		}
	}
	return false
}

// parseCrossSigningUpload checks the keys of a device_signing/upload body:
// the self-signing and user-signing keys must be signed by the master key
// (the new one, or the stored one when no master key is uploaded).
func parseCrossSigningUpload(fields map[string]json.RawMessage, userID string, existing map[string]*storage.CrossSigningKey) ([]*storage.CrossSigningKey, error) {
	var out []*storage.CrossSigningKey
	masterPub := ""
	if m := existing["master"]; m != nil {
		masterPub = m.PublicKey
	}
	if raw, ok := fields["master_key"]; ok && string(raw) != "null" {
		k, _, err := crossSigningKey(raw, "master", userID)
		if err != nil {
			return nil, err
		}
		masterPub = k.PublicKey
		out = append(out, k)
	}
	for _, typ := range []string{"self_signing", "user_signing"} {
		raw, ok := fields[typ+"_key"]
		if !ok || string(raw) == "null" {
			continue
		}
		k, o, err := crossSigningKey(raw, typ, userID)
		if err != nil {
			return nil, err
		}
		if masterPub == "" {
			return nil, matrix.MissingParam("master_key is required")
		}
		sig := o.Signatures[userID]["ed25519:"+masterPub]
		if sig == "" || !verifySignature(raw, masterPub, sig) {
			return nil, &matrix.Error{Code: "M_INVALID_SIGNATURE", Msg: typ + "_key is not signed by the master key"}
		}
		out = append(out, k)
	}
	return out, nil
}

// POST /_matrix/client/v3/keys/signatures/upload
//
// The caller may sign their own devices with their self-signing key, their
// own master key with one of their devices, and other users' master keys
// with their user-signing key. Each signature is checked against the key
// the server holds; bad ones are reported in failures.
func (s *Server) postSignaturesUpload(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	me := deviceFrom(ctx)
	var req map[string]map[string]json.RawMessage
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	myCS, err := s.store.CrossSigningKeys(ctx, me.UserID)
	if err != nil {
		return err
	}
	myDevices, err := s.store.DeviceKeys(ctx, me.UserID)
	if err != nil {
		return err
	}
	failures := map[string]map[string]any{}
	fail := func(user, key, code, msg string) {
		if failures[user] == nil {
			failures[user] = map[string]any{}
		}
		failures[user][key] = map[string]any{"errcode": code, "error": msg}
	}
	var good []storage.KeySignature
	for userID, objs := range req {
		var theirCS map[string]*storage.CrossSigningKey
		var theirDevices map[string][]byte
		if userID == me.UserID {
			theirCS, theirDevices = myCS, myDevices
		} else if s.isLocalUser(userID) {
			if theirCS, err = s.store.CrossSigningKeys(ctx, userID); err != nil {
				return err
			}
		} else if theirCS, err = s.remoteCrossSigningKeys(ctx, userID); err != nil {
			return err
		}
		for keyID, raw := range objs {
			var o signedObject
			if json.Unmarshal(raw, &o) != nil {
				fail(userID, keyID, "M_BAD_JSON", "not a signed key object")
				continue
			}
			// The stored object the signature must cover, and the keys
			// allowed to sign it.
			var stored []byte
			signers := map[string]string{} // "ed25519:<id>" → public key
			switch {
			case userID == me.UserID && theirDevices[keyID] != nil:
				stored = theirDevices[keyID]
				if ss := myCS["self_signing"]; ss != nil {
					signers["ed25519:"+ss.PublicKey] = ss.PublicKey
				}
			case theirCS["master"] != nil && theirCS["master"].PublicKey == keyID:
				stored = theirCS["master"].JSON
				if userID == me.UserID {
					for dev, dk := range myDevices {
						var d signedObject
						if json.Unmarshal(dk, &d) == nil && d.Keys["ed25519:"+dev] != "" {
							signers["ed25519:"+dev] = d.Keys["ed25519:"+dev]
						}
					}
				} else if us := myCS["user_signing"]; us != nil {
					signers["ed25519:"+us.PublicKey] = us.PublicKey
				}
			default:
				fail(userID, keyID, "M_NOT_FOUND", "unknown key")
				continue
			}
			var storedObj signedObject
			_ = json.Unmarshal(stored, &storedObj)
			if len(o.Signatures[me.UserID]) == 0 {
				fail(userID, keyID, "M_INVALID_SIGNATURE", "no signature by "+me.UserID)
				continue
			}
			for signerKey, sig := range o.Signatures[me.UserID] {
				if storedObj.Signatures[me.UserID][signerKey] == sig {
					// Already on the object (its self-signature, or one
					// uploaded with it): uploading it again is harmless.
					continue
				}
				pub, ok := signers[signerKey]
				if !ok || !verifySignature(stored, pub, sig) {
					fail(userID, keyID, "M_INVALID_SIGNATURE", "invalid signature by "+signerKey)
					continue
				}
				good = append(good, storage.KeySignature{TargetUser: userID, TargetKey: keyID, SignerUser: me.UserID, SignerKey: signerKey, Signature: sig})
			}
		}
	}
	if len(good) > 0 {
		if err := s.store.PutKeySignatures(ctx, good); err != nil {
			return err
		}
		notified := map[string]bool{}
		for _, g := range good {
			if !notified[g.TargetUser] {
				notified[g.TargetUser] = true
				if err := s.deviceListChanged(ctx, g.TargetUser); err != nil {
					return err
				}
			}
		}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"failures": failures})
}
