package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"hearth/server/federation"
	"hearth/server/matrix"
	"hearth/server/storage"
	"hearth/server/timeline"
)

// End-to-end encryption across servers (spec: Server-Server API, "Device
// management" and "End-to-End Encryption"):
//
//   - what other servers may ask about local users' keys (GET
//     /user/devices, POST /user/keys/query and /user/keys/claim);
//   - what this server asks other servers for its clients (/keys/query and
//     /keys/claim for remote users: one request per server, in parallel);
//   - the device lists of remote users this server tracks, because they
//     share a room with a local user, kept as Synapse keeps them: cached
//     when first fetched, then updated by their servers' m.device_list_update
//     and m.signing_key_update EDUs, and fetched again (resynced) whenever
//     an update's prev_id shows one was missed. A remote user's change takes
//     an aux stream position like a local one, so /sync's device_lists and
//     /keys/changes report it.
//
// Updates of local users' keys go the other way through the federation
// sender's Outbox (federation_outbox.go).

// resyncTimeout bounds one GET /user/devices.
const resyncTimeout = 30 * time.Second

// GET /_matrix/federation/v1/user/devices/{userId}
func (s *Server) getFederationUserDevices(w http.ResponseWriter, r *http.Request) error {
	userID, err := pathParam(r, "userId")
	if err != nil {
		return err
	}
	if !s.isLocalUser(userID) {
		return matrix.InvalidParam("user %s is not hosted on this server", userID)
	}
	resp, err := s.userDevices(r.Context(), userID)
	return answer(w, resp, err)
}

// userDevices is the GET /user/devices answer for the local user userID:
// their devices with keys, the stream_id of the newest change (the one
// m.device_list_update EDUs continue from) and their master and
// self-signing keys.
func (s *Server) userDevices(ctx context.Context, userID string) (map[string]any, error) {
	// The position first: a change made while the keys are read is then
	// in the answer and in an update with a later stream_id, which the
	// other server applies. Read after the keys, the position could name a
	// change the answer does not hold, and the update would be skipped.
	streamID, err := s.store.DeviceListStreamID(ctx, userID)
	if err != nil {
		return nil, err
	}
	devices, err := s.store.Devices(ctx, userID)
	if err != nil {
		return nil, err
	}
	keys := newKeysAnswer()
	if err := s.localKeys(ctx, keys, userID, nil, ""); err != nil {
		return nil, err
	}
	// keys is required of each device (spec: UserDeviceInfo), so devices
	// without keys, of no use to encryption, are left out.
	list := []map[string]any{}
	for _, d := range devices {
		if k, ok := keys.devices[userID][d.DeviceID]; ok {
			dev := map[string]any{"device_id": d.DeviceID, "keys": k}
			if s.cfg.AllowDeviceNameLookupOverFederation && d.DisplayName != "" {
				dev["device_display_name"] = d.DisplayName
			}
			list = append(list, dev)
		}
	}
	resp := map[string]any{"user_id": userID, "stream_id": streamID, "devices": list}
	if m := keys.master[userID]; m != nil {
		resp["master_key"] = m
	}
	if ss := keys.selfSigning[userID]; ss != nil {
		resp["self_signing_key"] = ss
	}
	return resp, nil
}

// POST /_matrix/federation/v1/user/keys/query
func (s *Server) postFederationUserKeysQuery(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	out := newKeysAnswer()
	for userID, wanted := range req.DeviceKeys {
		if s.isLocalUser(userID) {
			if err := s.localKeys(r.Context(), out, userID, wanted, ""); err != nil {
				return err
			}
		}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"device_keys": out.devices, "master_keys": out.master, "self_signing_keys": out.selfSigning})
}

// POST /_matrix/federation/v1/user/keys/claim
//
// Each one-time key is handed out once, whoever asks; a device without one
// left hands out its fallback key, as for local clients.
func (s *Server) postFederationUserKeysClaim(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	out := map[string]map[string]map[string]json.RawMessage{}
	if err := s.claimLocal(r.Context(), req.OneTimeKeys, out); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"one_time_keys": out})
}

// keysFailure is a server's entry in a keys answer's failures.
func keysFailure(err error) map[string]any {
	var re *federation.RemoteError
	if errors.As(err, &re) {
		return map[string]any{"status": re.Status, "message": re.Msg}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return map[string]any{"status": http.StatusGatewayTimeout, "message": "timed out"}
	}
	return map[string]any{"status": http.StatusServiceUnavailable, "message": err.Error()}
}

// byServer groups user IDs by their server.
func byServer[V any](users map[string]V) map[string][]string {
	out := map[string][]string{}
	for u := range users {
		if _, server, ok := matrix.SplitUserID(u); ok {
			out[server] = append(out[server], u)
		}
	}
	return out
}

// eachServer runs f for every server at once, under one timeout, and
// returns each one's error.
func eachServer(ctx context.Context, servers []string, timeout time.Duration, f func(ctx context.Context, server string) error) map[string]error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var mu sync.Mutex
	errs := map[string]error{}
	var wg sync.WaitGroup
	for _, server := range servers {
		wg.Go(func() {
			err := f(ctx, server)
			mu.Lock()
			errs[server] = err
			mu.Unlock()
		})
	}
	wg.Wait()
	return errs
}

// remoteKeys adds the keys of remote users (user → wanted devices, all
// when empty) to out, as viewer sees them, and returns the failures: the
// servers that could not be asked. A tracked user's keys come from the
// cache; the others' from their servers, whose answers are cached for the
// users this server tracks (Synapse keeps no cache of the others: nothing
// would keep it up to date).
func (s *Server) remoteKeys(ctx context.Context, out *keysAnswer, users map[string][]string, viewer string, timeout time.Duration) (map[string]any, error) {
	failures := map[string]any{}
	tracked := map[string]bool{}
	ask := map[string][]string{}
	for userID, wanted := range users {
		t, err := s.store.SharesRoomWithLocalUser(ctx, userID)
		if err != nil {
			return nil, err
		}
		tracked[userID] = t
		if t {
			l, err := s.store.RemoteDeviceListOf(ctx, userID)
			if err == nil {
				if err := s.addRemoteKeys(ctx, out, l, wanted, viewer); err != nil {
					return nil, err
				}
				continue
			}
			if !errors.Is(err, storage.ErrNotFound) {
				return nil, err
			}
		}
		ask[userID] = wanted
	}
	if len(ask) == 0 {
		return failures, nil
	}
	groups := byServer(ask)
	servers := make([]string, 0, len(groups))
	for server := range groups {
		servers = append(servers, server)
	}
	if s.fedClient == nil {
		for _, server := range servers {
			failures[server] = map[string]any{"status": http.StatusServiceUnavailable, "message": "this server does not federate"}
		}
		return failures, nil
	}
	var mu sync.Mutex
	var lists []*storage.RemoteDeviceList
	errs := eachServer(ctx, servers, timeout, func(ctx context.Context, server string) error {
		got, err := s.fetchRemoteKeys(ctx, server, groups[server])
		mu.Lock()
		lists = append(lists, got...)
		mu.Unlock()
		return err
	})
	for server, err := range errs {
		if err != nil {
			s.log.Info("federation: keys query failed", "server", server, "err", err)
			failures[server] = keysFailure(err)
		}
	}
	for _, l := range lists {
		if tracked[l.UserID] {
			if _, err := s.store.CacheRemoteDeviceList(ctx, l); err != nil {
				return nil, err
			}
		}
		if err := s.addRemoteKeys(ctx, out, l, ask[l.UserID], viewer); err != nil {
			return nil, err
		}
	}
	return failures, nil
}

// fetchRemoteKeys asks server for all the keys of users (POST
// /user/keys/query). What it answers about anyone else, or for other
// devices than the key objects name, is left out.
func (s *Server) fetchRemoteKeys(ctx context.Context, server string, users []string) ([]*storage.RemoteDeviceList, error) {
	q := map[string][]string{}
	for _, u := range users {
		q[u] = []string{}
	}
	var resp struct {
		DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
		MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
		SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
	}
	if err := s.fedClient.Do(ctx, server, http.MethodPost, "/_matrix/federation/v1/user/keys/query", nil, map[string]any{"device_keys": q}, &resp); err != nil {
		return nil, err
	}
	var out []*storage.RemoteDeviceList
	for _, u := range users {
		devs, ok := resp.DeviceKeys[u]
		if !ok {
			continue // unknown to its server
		}
		l := &storage.RemoteDeviceList{UserID: u, CrossSigning: map[string]*storage.CrossSigningKey{}}
		for deviceID, raw := range devs {
			if d, err := remoteDevice(u, deviceID, "", raw); err == nil {
				l.Devices = append(l.Devices, *d)
			}
		}
		l.CrossSigning = remoteCrossSigning(u, resp.MasterKeys[u], resp.SelfSigningKeys[u])
		out = append(out, l)
	}
	return out, nil
}

// remoteDevice checks a remote device's key object (it must be userID's
// deviceID's) and returns the device, its keys without unsigned, and the
// display name unsigned carries when name is "".
func remoteDevice(userID, deviceID, name string, raw json.RawMessage) (*storage.RemoteDevice, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("device keys of %s: %w", deviceID, err)
	}
	var o signedObject
	if err := json.Unmarshal(raw, &o); err != nil || o.UserID != userID || o.DeviceID != deviceID {
		return nil, fmt.Errorf("device keys of %s name another device", deviceID)
	}
	if name == "" {
		var u struct {
			Name string `json:"device_display_name"`
		}
		if json.Unmarshal(obj["unsigned"], &u) == nil {
			name = u.Name
		}
	}
	delete(obj, "unsigned")
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	return &storage.RemoteDevice{DeviceID: deviceID, DisplayName: name, Keys: b}, nil
}

// remoteCrossSigning checks a remote user's master and self-signing keys;
// a key that does not parse as the user's is left out (the clients verify
// the signatures).
func remoteCrossSigning(userID string, master, selfSigning json.RawMessage) map[string]*storage.CrossSigningKey {
	out := map[string]*storage.CrossSigningKey{}
	for typ, raw := range map[string]json.RawMessage{"master": master, "self_signing": selfSigning} {
		if len(raw) == 0 || string(raw) == "null" {
			continue
		}
		if k, _, err := crossSigningKey(raw, typ, userID); err == nil {
			out[typ] = k
		}
	}
	return out
}

// addRemoteKeys adds a remote user's keys to out, as viewer sees them:
// with their device names, and the viewer's own signatures on their master
// key (made with the viewer's user-signing key).
func (s *Server) addRemoteKeys(ctx context.Context, out *keysAnswer, l *storage.RemoteDeviceList, wanted []string, viewer string) error {
	devs := map[string]json.RawMessage{}
	for _, d := range l.Devices {
		if d.Keys == nil || (len(wanted) > 0 && !slices.Contains(wanted, d.DeviceID)) {
			continue
		}
		obj := json.RawMessage(d.Keys)
		if d.DisplayName != "" {
			var err error
			if obj, err = withSignatures(d.Keys, nil, "", viewer, map[string]any{"unsigned": map[string]any{"device_display_name": d.DisplayName}}); err != nil {
				return err
			}
		}
		devs[d.DeviceID] = obj
	}
	out.devices[l.UserID] = devs
	if len(l.CrossSigning) == 0 {
		return nil
	}
	sigs, err := s.store.KeySignatures(ctx, l.UserID)
	if err != nil {
		return err
	}
	for typ, dst := range map[string]map[string]json.RawMessage{"master": out.master, "self_signing": out.selfSigning} {
		if k := l.CrossSigning[typ]; k != nil {
			obj, err := withSignatures(k.JSON, sigs, k.PublicKey, viewer, nil)
			if err != nil {
				return err
			}
			dst[l.UserID] = obj
		}
	}
	return nil
}

// remoteCrossSigningKeys returns a remote user's master and self-signing
// keys, from the cache or their server (nil when it cannot answer), for
// checking the signatures a local user makes on them.
func (s *Server) remoteCrossSigningKeys(ctx context.Context, userID string) (map[string]*storage.CrossSigningKey, error) {
	if _, _, ok := matrix.SplitUserID(userID); !ok {
		return nil, nil
	}
	out := newKeysAnswer()
	if _, err := s.remoteKeys(ctx, out, map[string][]string{userID: nil}, "", 10*time.Second); err != nil {
		return nil, err
	}
	return remoteCrossSigning(userID, out.master[userID], out.selfSigning[userID]), nil
}

// claimRemote claims the one-time keys of remote users in req from their
// servers (POST /user/keys/claim), into out, and returns the failures.
func (s *Server) claimRemote(ctx context.Context, req map[string]map[string]string, out map[string]map[string]map[string]json.RawMessage, timeout time.Duration) map[string]any {
	failures := map[string]any{}
	remote := map[string]map[string]string{}
	for userID, devices := range req {
		if !s.isLocalUser(userID) {
			remote[userID] = devices
		}
	}
	groups := byServer(remote)
	if len(groups) == 0 {
		return failures
	}
	servers := make([]string, 0, len(groups))
	for server := range groups {
		servers = append(servers, server)
	}
	if s.fedClient == nil {
		for _, server := range servers {
			failures[server] = map[string]any{"status": http.StatusServiceUnavailable, "message": "this server does not federate"}
		}
		return failures
	}
	var mu sync.Mutex
	errs := eachServer(ctx, servers, timeout, func(ctx context.Context, server string) error {
		q := map[string]map[string]string{}
		for _, u := range groups[server] {
			q[u] = remote[u]
		}
		var resp struct {
			OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
		}
		if err := s.fedClient.Do(ctx, server, http.MethodPost, "/_matrix/federation/v1/user/keys/claim", nil, map[string]any{"one_time_keys": q}, &resp); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for u, devices := range resp.OneTimeKeys {
			if q[u] == nil {
				continue // not asked of this server
			}
			for deviceID, keys := range devices {
				if _, asked := q[u][deviceID]; !asked || len(keys) == 0 {
					continue
				}
				if out[u] == nil {
					out[u] = map[string]map[string]json.RawMessage{}
				}
				out[u][deviceID] = keys
			}
		}
		return nil
	})
	for server, err := range errs {
		if err != nil {
			s.log.Info("federation: keys claim failed", "server", server, "err", err)
			failures[server] = keysFailure(err)
		}
	}
	return failures
}

// receiveDeviceListUpdate applies an m.device_list_update from origin
// about one of its users, when this server tracks them; an update that
// does not follow the last one applied (prev_id) starts a resync.
func (s *Server) receiveDeviceListUpdate(ctx context.Context, origin string, content json.RawMessage) error {
	var c struct {
		UserID      string          `json:"user_id"`
		DeviceID    string          `json:"device_id"`
		DisplayName string          `json:"device_display_name"`
		StreamID    int64           `json:"stream_id"`
		PrevID      []int64         `json:"prev_id"`
		Deleted     bool            `json:"deleted"`
		Keys        json.RawMessage `json:"keys"`
	}
	if err := decodeEDU(content, &c); err != nil {
		return err
	}
	if !fromOrigin(c.UserID, origin) {
		return errNotFromOrigin
	}
	if c.DeviceID == "" {
		return errors.New("no device_id")
	}
	tracked, err := s.store.SharesRoomWithLocalUser(ctx, c.UserID)
	if err != nil || !tracked {
		return err // untracked: nothing to keep up to date
	}
	u := &storage.RemoteDeviceUpdate{UserID: c.UserID, DeviceID: c.DeviceID, DisplayName: c.DisplayName, StreamID: c.StreamID,
		PrevIDs: c.PrevID, Deleted: c.Deleted}
	if !c.Deleted && len(c.Keys) > 0 && string(c.Keys) != "null" {
		d, err := remoteDevice(c.UserID, c.DeviceID, c.DisplayName, c.Keys)
		if err != nil {
			return err
		}
		u.Keys = d.Keys
	}
	res, err := s.store.ApplyRemoteDeviceUpdate(ctx, u)
	if err != nil {
		return err
	}
	if stop, err := s.forgetIfUntracked(ctx, c.UserID); stop || err != nil {
		return err
	}
	switch res {
	case storage.UpdateApplied:
		return s.notifyPeers(ctx, c.UserID)
	case storage.UpdateGap:
		s.resyncDeviceList(c.UserID)
	}
	return nil
}

// receiveSigningKeyUpdate applies an m.signing_key_update: a remote user's
// new master or self-signing key.
func (s *Server) receiveSigningKeyUpdate(ctx context.Context, origin string, content json.RawMessage) error {
	var c struct {
		UserID      string          `json:"user_id"`
		Master      json.RawMessage `json:"master_key"`
		SelfSigning json.RawMessage `json:"self_signing_key"`
	}
	if err := decodeEDU(content, &c); err != nil {
		return err
	}
	if !fromOrigin(c.UserID, origin) {
		return errNotFromOrigin
	}
	tracked, err := s.store.SharesRoomWithLocalUser(ctx, c.UserID)
	if err != nil || !tracked {
		return err
	}
	var keys []*storage.CrossSigningKey
	for _, k := range remoteCrossSigning(c.UserID, c.Master, c.SelfSigning) {
		keys = append(keys, k)
	}
	// A resync running now may have read the list before these keys, and
	// store it after them: it runs again. (One that starts later reads
	// them.)
	s.resyncs.again(c.UserID)
	cached, err := s.store.PutRemoteCrossSigningKeys(ctx, c.UserID, keys)
	if err != nil {
		return err
	}
	if !cached {
		s.resyncDeviceList(c.UserID) // nothing to update: fetch it all
	}
	return s.notifyPeers(ctx, c.UserID)
}

// resyncs runs at most one resync per user at a time; one asked for while
// another runs runs again after it, since the running one may have read
// the list before the change that asked for it.
type resyncs struct {
	mu sync.Mutex
	// state: 1 running, 2 running and wanted again
	state map[string]int
}

// begin reports whether the caller should run userID's resync.
func (r *resyncs) begin(userID string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state == nil {
		r.state = map[string]int{}
	}
	if r.state[userID] > 0 {
		r.state[userID] = 2
		return false
	}
	r.state[userID] = 1
	return true
}

// again makes userID's resync, if one is running, run once more.
func (r *resyncs) again(userID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state[userID] > 0 {
		r.state[userID] = 2
	}
}

// end reports whether userID's resync must run again.
func (r *resyncs) end(userID string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state[userID] == 2 {
		r.state[userID] = 1
		return true
	}
	delete(r.state, userID)
	return false
}

// resyncDeviceList fetches userID's device list from their server again,
// in the background (spec: "Device management": an update was missed).
func (s *Server) resyncDeviceList(userID string) {
	if s.fedClient == nil || !s.resyncs.begin(userID) {
		return
	}
	started := s.goBackground(func(ctx context.Context) {
		for {
			if err := s.resync(ctx, userID); err != nil && ctx.Err() == nil {
				s.log.Info("federation: device list resync failed", "user_id", userID, "err", err)
			}
			if !s.resyncs.end(userID) || ctx.Err() != nil {
				return
			}
		}
	})
	if !started {
		s.resyncs.end(userID)
	}
}

// resync replaces userID's cached device list with their server's (GET
// /user/devices). When that fails the cache is dropped, so clients'
// queries ask the server themselves; either way the user's devices are
// reported changed.
func (s *Server) resync(ctx context.Context, userID string) error {
	if tracked, err := s.store.SharesRoomWithLocalUser(ctx, userID); err != nil || !tracked {
		return err
	}
	l, ferr := s.fetchUserDevices(ctx, userID)
	if ferr == nil {
		ferr = s.store.ResyncRemoteDeviceList(ctx, l)
	}
	if ferr == nil {
		if stop, err := s.forgetIfUntracked(ctx, userID); stop || err != nil {
			return err
		}
	}
	if ferr != nil {
		if err := s.store.ForgetRemoteDeviceList(ctx, userID); err != nil {
			return errors.Join(ferr, err)
		}
		if err := s.store.MarkDeviceListChange(ctx, userID); err != nil {
			return errors.Join(ferr, err)
		}
	}
	return errors.Join(ferr, s.notifyPeers(ctx, userID))
}

// forgetIfUntracked drops userID's cached device list when no local user
// shares a room with them any more (stop): they left while an update was
// applied or their list fetched, and the leave dropped the cache before
// this stored it.
func (s *Server) forgetIfUntracked(ctx context.Context, userID string) (stop bool, err error) {
	tracked, err := s.store.SharesRoomWithLocalUser(ctx, userID)
	if err != nil || tracked {
		return false, err
	}
	return true, s.store.ForgetRemoteDeviceList(ctx, userID)
}

// fetchUserDevices asks userID's server for their device list.
func (s *Server) fetchUserDevices(ctx context.Context, userID string) (*storage.RemoteDeviceList, error) {
	_, server, _ := matrix.SplitUserID(userID)
	ctx, cancel := context.WithTimeout(ctx, resyncTimeout)
	defer cancel()
	var resp struct {
		UserID   string `json:"user_id"`
		StreamID int64  `json:"stream_id"`
		Devices  []struct {
			DeviceID    string          `json:"device_id"`
			DisplayName string          `json:"device_display_name"`
			Keys        json.RawMessage `json:"keys"`
		} `json:"devices"`
		Master      json.RawMessage `json:"master_key"`
		SelfSigning json.RawMessage `json:"self_signing_key"`
	}
	if err := s.fedClient.Do(ctx, server, http.MethodGet, "/_matrix/federation/v1/user/devices/"+url.PathEscape(userID), nil, nil, &resp); err != nil {
		return nil, err
	}
	if resp.UserID != userID {
		return nil, fmt.Errorf("%s answered for %q", server, resp.UserID)
	}
	l := &storage.RemoteDeviceList{UserID: userID, StreamID: resp.StreamID, CrossSigning: remoteCrossSigning(userID, resp.Master, resp.SelfSigning)}
	for _, d := range resp.Devices {
		if d.DeviceID == "" {
			continue
		}
		rd := &storage.RemoteDevice{DeviceID: d.DeviceID, DisplayName: d.DisplayName}
		if len(d.Keys) > 0 && string(d.Keys) != "null" {
			var err error
			if rd, err = remoteDevice(userID, d.DeviceID, d.DisplayName, d.Keys); err != nil {
				continue
			}
		}
		l.Devices = append(l.Devices, *rd)
	}
	return l, nil
}

// deviceListObserver drops the cached device lists of remote users who no
// longer share a room with a local user (their leave, or a local user's):
// their servers stop sending updates, so the cache would go stale
// unnoticed, and be trusted again if they came back.
type deviceListObserver struct{ s *Server }

func (o deviceListObserver) EventPersisted(p *timeline.Persisted) {
	var users []string
	for _, c := range p.Changes {
		// Only a member who was in the state may have left: a key new to
		// the state (a join, the whole state of a room just joined)
		// untracks nobody, nor does the event's own join.
		if c.Key.Type != "m.room.member" || c.PrevEventID == "" ||
			(c.EventID == p.Event.EventID && p.Event.Membership == "join") {
			continue
		}
		users = append(users, c.Key.StateKey)
	}
	if len(users) == 0 {
		return
	}
	roomID := p.Event.RoomID
	o.s.goBackground(func(ctx context.Context) {
		if err := o.s.forgetUntracked(ctx, roomID, users); err != nil && ctx.Err() == nil {
			o.s.log.Warn("federation: dropping untracked device lists", "room_id", roomID, "err", err)
		}
	})
}

// forgetUntracked drops the cached device lists of the remote users among
// users, and of the room's remote members if a local user is among users,
// who share no room with a local user any more.
func (s *Server) forgetUntracked(ctx context.Context, roomID string, users []string) error {
	var cands []string
	local := false
	for _, u := range users {
		if s.isLocalUser(u) {
			local = true
		} else {
			cands = append(cands, u)
		}
	}
	if local {
		members, err := s.store.Members(ctx, roomID)
		if err != nil {
			return err
		}
		for u := range members {
			if !s.isLocalUser(u) {
				cands = append(cands, u)
			}
		}
	}
	_, err := s.store.ForgetUntrackedDeviceLists(ctx, cands)
	return err
}
