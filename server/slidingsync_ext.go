package server

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"

	"hearth/server/matrix"
	"hearth/server/push"
	"hearth/server/rooms"
	"hearth/server/storage"
)

// Sliding sync's extensions (MSC4186 and the MSCs it names): to_device
// (MSC3885), e2ee (MSC3884), account_data (MSC3959), receipts (MSC3960)
// and typing (MSC3961), and thread_subscriptions (MSC4308, with
// experimental_features.msc4306_enabled). Each is answered only when
// enabled, from the same stores /sync reads.

type slidingToDevice struct {
	NextBatch string `json:"next_batch"`
	Events    []any  `json:"events"`
}

func (e *slidingToDevice) isEmpty() bool { return len(e.Events) == 0 }

type slidingE2EE struct {
	DeviceLists                  *deviceLists   `json:"device_lists,omitempty"`
	DeviceOneTimeKeysCount       map[string]int `json:"device_one_time_keys_count"`
	DeviceUnusedFallbackKeyTypes []string       `json:"device_unused_fallback_key_types"`
}

// isEmpty: key counts are state, not news (as /sync's e2eeEmpty).
func (e *slidingE2EE) isEmpty() bool {
	return e.DeviceLists == nil || (len(e.DeviceLists.Changed) == 0 && len(e.DeviceLists.Left) == 0)
}

type slidingAccountData struct {
	Global []any            `json:"global"`
	Rooms  map[string][]any `json:"rooms"`
}

func (e *slidingAccountData) isEmpty() bool { return len(e.Global) == 0 && len(e.Rooms) == 0 }

// slidingRoomsExt is the receipts and typing extensions' shape: one
// ephemeral event per room.
type slidingRoomsExt struct {
	Rooms map[string]any `json:"rooms"`
}

func (e *slidingRoomsExt) isEmpty() bool { return len(e.Rooms) == 0 }

// inScope lists the rooms an extension applies to: those of the lists it
// names that are in range, and the subscriptions it names ("*" or absent:
// all).
func (sc *slidingCtx) inScope(scope *slidingExtScope, inLists map[string][]string) []string {
	all := func(p *[]string) bool { return p == nil || slices.Contains(*p, "*") }
	var out []string
	seen := map[string]bool{}
	for id, names := range inLists {
		if all(scope.Lists) || slices.ContainsFunc(names, func(n string) bool { return slices.Contains(*scope.Lists, n) }) {
			out = append(out, id)
			seen[id] = true
		}
	}
	for id := range sc.req.RoomSubscriptions {
		if seen[id] {
			continue
		}
		if all(scope.Rooms) || slices.Contains(*scope.Rooms, id) {
			out = append(out, id)
			seen[id] = true
		}
	}
	slices.Sort(out)
	return out
}

// extensions fills the enabled extensions.
func (sc *slidingCtx) extensions(ctx context.Context, cands map[string]*slidingCandidate, inLists map[string][]string, resp *slidingResponse, next *connState) error {
	ext := &sc.req.Extensions
	// Scoped extensions see only the rooms this response could show
	// (a subscription to a room the user is not in shows nothing).
	known := func(ids []string) []string {
		return slices.DeleteFunc(ids, func(id string) bool { return cands[id] == nil })
	}
	// initialRooms are the rooms the client gets in full now: their
	// ephemeral data and account data start from the beginning.
	isInitial := func(id string) bool {
		if sc.prev == nil {
			return true
		}
		r := resp.Rooms[id]
		return (r != nil && r.Initial) || sc.prev.rooms[id] == nil
	}
	if ext.ToDevice != nil && ext.ToDevice.on() {
		td, err := sc.toDevice(ctx)
		if err != nil {
			return err
		}
		resp.Extensions["to_device"] = td
	}
	if ext.E2EE.on() {
		e, err := sc.e2ee(ctx)
		if err != nil {
			return err
		}
		resp.Extensions["e2ee"] = e
	}
	if ext.AccountData.on() {
		ad, err := sc.accountData(ctx, known(sc.inScope(ext.AccountData, inLists)), isInitial)
		if err != nil {
			return err
		}
		resp.Extensions["account_data"] = ad
	}
	if ext.Receipts.on() {
		out := &slidingRoomsExt{Rooms: map[string]any{}}
		var fresh, old []string
		for _, id := range known(sc.inScope(ext.Receipts, inLists)) {
			if cands[id].m.Membership != rooms.MembershipJoin {
				continue
			}
			if isInitial(id) {
				fresh = append(fresh, id)
			} else {
				old = append(old, id)
			}
		}
		for _, part := range []struct {
			ids   []string
			after int64
		}{{fresh, 0}, {old, sc.prevAux()}} {
			if len(part.ids) == 0 {
				continue
			}
			rs, err := sc.s.receiptsBetween(ctx, part.ids, part.after, sc.to.Aux)
			if err != nil {
				return err
			}
			byRoom := map[string][]storage.Receipt{}
			for _, r := range rs {
				if !sc.ignored[r.UserID] {
					byRoom[r.RoomID] = append(byRoom[r.RoomID], r)
				}
			}
			for id, list := range byRoom {
				if ev := receiptEvent(sc.me.UserID, list); ev != nil {
					out.Rooms[id] = ev
				}
			}
		}
		resp.Extensions["receipts"] = out
	}
	if ext.Typing.on() {
		out := &slidingRoomsExt{Rooms: map[string]any{}}
		var fresh, old []string
		for _, id := range known(sc.inScope(ext.Typing, inLists)) {
			if cands[id].m.Membership != rooms.MembershipJoin {
				continue
			}
			if isInitial(id) {
				fresh = append(fresh, id)
			} else {
				old = append(old, id)
			}
		}
		var since int64
		if sc.prev != nil {
			since = sc.prev.token.Typing
		}
		for _, part := range []struct {
			ids     []string
			since   int64
			initial bool
		}{{fresh, 0, true}, {old, since, false}} {
			for id, users := range sc.s.notifier.typing.changedSince(part.ids, part.since, part.initial) {
				users = slices.DeleteFunc(users, func(u string) bool { return sc.ignored[u] })
				out.Rooms[id] = map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": users}}
			}
		}
		resp.Extensions["typing"] = out
	}
	// Thread subscriptions (MSC4308): the changes since the connection's
	// last response, at most limit (default 100) of the newest, with a
	// prev_batch for the pagination endpoint when there may be more; left
	// out when there is nothing, as Synapse does.
	if ts := ext.ThreadSubscriptions; ts != nil && ts.Enabled != nil && *ts.Enabled && sc.s.cfg.ExperimentalFeatures.MSC4306Enabled {
		limit := 100
		if ts.Limit != nil {
			limit = *ts.Limit
		}
		changes, err := sc.s.store.ThreadSubscriptionsBetween(ctx, sc.me.UserID, sc.prevAux(), sc.to.Aux, limit)
		if err != nil {
			return err
		}
		if out, more := threadSubscriptionChanges(changes, limit); len(changes) > 0 {
			out.PrevBatch = more
			resp.Extensions["io.element.msc4308.thread_subscriptions"] = out
		}
	}
	return nil
}

func (sc *slidingCtx) prevAux() int64 {
	if sc.prev == nil {
		return 0
	}
	return sc.prev.token.Aux
}

// toDevice acknowledges the messages up to since and returns the next
// ones, at most limit (default and cap: /sync's).
func (sc *slidingCtx) toDevice(ctx context.Context) (*slidingToDevice, error) {
	opt := sc.req.Extensions.ToDevice
	var since int64
	if opt.Since != "" {
		var err error
		if since, err = strconv.ParseInt(opt.Since, 10, 64); err != nil || since < 0 {
			return nil, matrix.InvalidParam("to_device since is not a position this server gave")
		}
		since = min(since, sc.to.Aux)
		if err := sc.s.store.AckToDevice(ctx, sc.me.UserID, sc.me.DeviceID, since); err != nil {
			return nil, err
		}
	}
	limit := maxToDevicePerSync
	if opt.Limit > 0 {
		limit = min(opt.Limit, maxToDevicePerSync)
	}
	msgs, err := sc.s.store.ToDeviceBetween(ctx, sc.me.UserID, sc.me.DeviceID, since, sc.to.Aux, limit)
	if err != nil {
		return nil, err
	}
	next := sc.to.Aux
	if len(msgs) == limit {
		next = msgs[len(msgs)-1].StreamID
	}
	out := &slidingToDevice{NextBatch: strconv.FormatInt(next, 10), Events: make([]any, 0, len(msgs))}
	for _, m := range msgs {
		out.Events = append(out.Events, map[string]any{"type": m.Type, "sender": m.Sender, "content": json.RawMessage(m.Content)})
	}
	return out, nil
}

// e2ee: key counts always, device list changes since the connection's
// last response.
func (sc *slidingCtx) e2ee(ctx context.Context) (*slidingE2EE, error) {
	me := sc.me
	out := &slidingE2EE{}
	var err error
	if out.DeviceOneTimeKeysCount, err = sc.s.otkCounts(ctx, me.UserID, me.DeviceID); err != nil {
		return nil, err
	}
	if out.DeviceUnusedFallbackKeyTypes, err = sc.s.store.UnusedFallbackKeyTypes(ctx, me.UserID, me.DeviceID); err != nil {
		return nil, err
	}
	if out.DeviceUnusedFallbackKeyTypes == nil {
		out.DeviceUnusedFallbackKeyTypes = []string{}
	}
	if sc.prev != nil {
		changed, left, _, err := sc.s.deviceListDelta(ctx, me.UserID, sc.prev.token, sc.to)
		if err != nil {
			return nil, err
		}
		out.DeviceLists = &deviceLists{Changed: changed, Left: left}
	}
	return out, nil
}

// accountData: global account data (with the push rules, as /sync sends
// them), and the room account data of the rooms in scope; all of it on a
// new connection or for a room new to it, what changed otherwise.
func (sc *slidingCtx) accountData(ctx context.Context, scoped []string, isInitial func(string) bool) (*slidingAccountData, error) {
	me := sc.me.UserID
	out := &slidingAccountData{Global: []any{}, Rooms: map[string][]any{}}
	inScope := make(map[string]bool, len(scoped))
	needAll := sc.prev == nil
	for _, id := range scoped {
		inScope[id] = true
		needAll = needAll || isInitial(id)
	}
	var all []storage.AccountData
	var err error
	if needAll {
		if all, err = sc.s.store.AccountDataBetween(ctx, me, 0, sc.to.Aux); err != nil {
			return nil, err
		}
		all = sc.s.withoutDeletedAccountData(all)
	}
	changes := all
	if sc.prev != nil {
		if changes, err = sc.s.store.AccountDataBetween(ctx, me, sc.prev.token.Aux, sc.to.Aux); err != nil {
			return nil, err
		}
	}
	pushRules := func() (any, error) {
		rs, err := sc.s.pushRules(ctx, me)
		return push.Rulesets{Global: rs}, err
	}
	hasPushRules := false
	for _, a := range changes {
		if a.RoomID != "" {
			continue
		}
		ev := map[string]any{"type": a.Type, "content": json.RawMessage(a.Content)}
		if a.Type == "m.push_rules" {
			hasPushRules = true
			if ev["content"], err = pushRules(); err != nil {
				return nil, err
			}
		}
		out.Global = append(out.Global, ev)
	}
	if sc.prev == nil && !hasPushRules {
		content, err := pushRules()
		if err != nil {
			return nil, err
		}
		out.Global = append(out.Global, map[string]any{"type": "m.push_rules", "content": content})
	}
	add := func(a storage.AccountData) {
		out.Rooms[a.RoomID] = append(out.Rooms[a.RoomID], map[string]any{"type": a.Type, "content": json.RawMessage(a.Content)})
	}
	for _, a := range all {
		if a.RoomID != "" && inScope[a.RoomID] && isInitial(a.RoomID) {
			add(a)
		}
	}
	if sc.prev != nil {
		for _, a := range changes {
			if a.RoomID != "" && inScope[a.RoomID] && !isInitial(a.RoomID) {
				add(a)
			}
		}
	}
	return out, nil
}
