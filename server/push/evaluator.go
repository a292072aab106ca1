package push

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/gjson"

	"hearth/server/cache"
	"hearth/server/rooms"
	"hearth/server/storage"
)

// The evaluator runs every user's push rules on every event, for every local
// member of the event's room (spec: "Server behaviour"), and records the
// events that notify someone: each step's rows are staged in the store,
// where they count at once, and written with the following steps' within
// flushEvery (storage.StageNotifications, FlushNotifications).
//
// Like the federation sender, it reads the event stream from a persisted
// position rather than keeping a queue of its own: the timeline's observer
// only wakes it. Notifications and the position are written in one
// transaction, so a crash loses nothing (what was not written is evaluated
// again) and never records an event twice. Evaluation never runs in the
// request that sent the event: a message in a room of 1,000 local members
// costs the sender nothing, and a burst of events is recorded in one
// transaction.
//
// The spec requires a notification count to appear in the same /sync
// response as the event that caused it. /sync therefore reads the event
// stream only up to what the evaluator has finished (Limit), and waiters
// are woken only once it has (the server's gate over the /sync notifier):
// an event reaches clients together with its counts.
//
// Evaluation uses the state after the event (its state group): who is
// joined, their display names, the member count and the sender's power.
// That is computed once per state group and cached, so the messages of a
// room, which share a group, pay for it once; a user's compiled rules are
// cached until their stored rules change.

const (
	// evalBatch bounds the events read and recorded at once.
	evalBatch = 100
	// persistEvery bounds how far the position may run ahead of what is
	// stored when nothing notified anyone (re-evaluated after a crash).
	persistEvery = 1000
	// stepEvery is the least time between two steps that stage
	// something, unless the first filled its batch: a step reads the
	// events and the rooms' heads again, whatever it carries. An event
	// after a quiet spell is evaluated at once; under load, /sync answers
	// wait up to this long for their counts.
	stepEvery = 10 * time.Millisecond
	// flushEvery is how long a step's rows stay staged at most before
	// they are written (storage.FlushNotifications), with those of the
	// steps after it: a notified member's page of the notifications'
	// index is written once per flush, not per step. flushRows writes
	// sooner, and so does a reader of whole rows (/notifications, a
	// pusher: storage.FlushWanted); maxStagedRows stops evaluation while
	// writes fail. Staged rows count at once, so nothing a client sees
	// waits for a flush: at a few messages a second, a flush every 100 ms
	// wrote each member's leaf for every message, a quarter of the
	// server's CPU in a fan-out to 20 members.
	flushEvery    = time.Second
	flushRows     = 2_000
	maxStagedRows = 50_000
)

// paceStep is how long to wait before the next step, given when the last
// step that recorded something started (zero: none yet) and whether it
// filled its batch (then the next runs at once: there is a backlog).
func paceStep(last time.Time, full bool, now time.Time) time.Duration {
	if full || last.IsZero() {
		return 0
	}
	return max(0, last.Add(stepEvery).Sub(now))
}

// Options configure an Evaluator.
type Options struct {
	Store      *storage.Store
	ServerName string
	Log        *slog.Logger
	Now        func() time.Time
	// Advanced is called, from the evaluator's goroutine, each time the
	// evaluated position moves, with the users who got notifications.
	Advanced func(pos int64, notified []string)
	// Defaults chooses the optional default rules (defaults.go).
	Defaults Defaults
	// MaxStaged is how many notification rows may wait staged while
	// writing them fails before evaluation stops until a write succeeds,
	// so that memory stays bounded; 0: maxStagedRows.
	MaxStaged int
	// FlushEvery is how long rows stay staged at most; 0: flushEvery.
	FlushEvery time.Duration
}

// Evaluator evaluates push rules; Run runs it.
type Evaluator struct {
	o    Options
	wake chan struct{}

	running   atomic.Bool
	evaluated atomic.Int64

	mu       sync.Mutex
	advanced chan struct{} // closed and replaced whenever evaluated moves

	users *cache.LRU[string, *userState]
	rooms *cache.LRU[int64, *roomState]

	// rows is the steps' buffer of notification rows, kept from one step
	// to the next (StageNotifications copies them) up to keepRows: a
	// buffer grown anew every step was 7% of the bytes the server
	// allocated with ten senders into a room of 20. Only Run's goroutine
	// steps.
	rows []storage.Notification
}

// keepRows bounds the rows' buffer kept from one step to the next: a step
// of a busy room of 200 members makes ~2,000 rows (240 KB).
const keepRows = 4096

// userState is what evaluation needs of a user: their compiled rules
// (with the stored rows they were compiled from, to notice a change) and
// the users they ignore (m.ignored_user_list).
type userState struct {
	src     *storage.PushRules
	rules   *Rules
	ignored map[string]bool
}

// roomState is a room at a state group, as evaluation sees it. It is
// shared by every user of the cache: never modified once built.
type roomState struct {
	rv     *rooms.RoomVersion
	joined int
	// local are the local users joined, sorted; names their display names.
	local []string
	names map[string]string
	// plID and createID are the power levels and create events the power
	// was computed from.
	plID, createID string
	power          *rooms.PowerLevels
	notif          map[string]int64
}

// NewEvaluator builds an Evaluator; its caches are registered in the
// store's registry.
func NewEvaluator(o Options) *Evaluator {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.FlushEvery <= 0 {
		o.FlushEvery = flushEvery
	}
	r := o.Store.Caches()
	return &Evaluator{o: o, wake: make(chan struct{}, 1), advanced: make(chan struct{}),
		users: cache.NewLRU[string, *userState](r, "push_users", "user → compiled push rules and ignored users", 10_000).WithSize(userStateSize).WithMaxBytes(16 << 20),
		rooms: cache.NewLRU[int64, *roomState](r, "push_rooms", "state group → joined local members, member count, power levels for push", 1_000).WithSize(roomStateSize).WithMaxBytes(8 << 20)}
}

// Wake tells the evaluator events were persisted. Cheap; it never blocks.
func (e *Evaluator) Wake() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Running reports whether Run is evaluating.
func (e *Evaluator) Running() bool { return e.running.Load() }

// Evaluated is the stream position up to which every event has been
// evaluated and its notifications staged (they count from then on).
func (e *Evaluator) Evaluated() int64 { return e.evaluated.Load() }

// Limit caps an event stream position at what has been evaluated, while
// the evaluator runs (without it there are no counts to wait for).
func (e *Evaluator) Limit(pos int64) int64 {
	if !e.running.Load() {
		return pos
	}
	return min(pos, e.evaluated.Load())
}

// WaitFor waits until events up to pos are evaluated, the evaluator stops
// or ctx ends.
func (e *Evaluator) WaitFor(ctx context.Context, pos int64) {
	for e.running.Load() && e.evaluated.Load() < pos {
		e.mu.Lock()
		ch := e.advanced
		e.mu.Unlock()
		if !e.running.Load() || e.evaluated.Load() >= pos {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// IgnoredChanged drops what is cached of a user's m.ignored_user_list.
// Whoever writes that account data must call it.
func (e *Evaluator) IgnoredChanged(userID string) { e.users.Remove(userID) }

func (e *Evaluator) setEvaluated(pos int64, notified []string) {
	e.evaluated.Store(pos)
	e.mu.Lock()
	close(e.advanced)
	e.advanced = make(chan struct{})
	e.mu.Unlock()
	if e.o.Advanced != nil {
		e.o.Advanced(pos, notified)
	}
}

// Run evaluates events until ctx ends. It returns nil then, and an error
// only when ctx ended before the stored position could be read.
func (e *Evaluator) Run(ctx context.Context) error {
	var pos int64
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 10*time.Second) {
		var err error
		if pos, err = e.o.Store.PushPosition(ctx); err == nil {
			break
		}
		e.o.Log.Error("push: reading the evaluated position failed; retrying", "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
	e.evaluated.Store(pos)
	e.running.Store(true)
	defer func() {
		e.running.Store(false)
		// A clean stop keeps what was evaluated; a failed write is only
		// more work for the next start.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		e.o.Store.StageNotifications(pos, nil, nil)
		_ = e.o.Store.FlushNotifications(wctx)
		cancel()
		e.setEvaluated(pos, nil) // wake whoever waits: the cap is gone
	}()
	// The tick writes whatever is staged, the position alone too, at
	// least this often.
	tick := time.NewTicker(max(5*time.Second, e.o.FlushEvery))
	defer tick.Stop()
	retry := time.Duration(0)
	var (
		lastStep time.Time // the last step that recorded something
		full     bool      // it filled its batch
		staged   time.Time // when rows were first staged since the last flush
		flushErr time.Duration
		flushAt  time.Time // no flush before this after a failed one
	)
	// flush writes the staged rows once they are flushEvery old or
	// flushRows many, or a reader waits for them (force: whatever is
	// staged, the position too).
	flush := func(force bool) {
		select {
		case <-e.o.Store.FlushWanted():
			force = true // a reader waits for the rows
		default:
		}
		rows, ahead := e.o.Store.Staged()
		due := rows >= flushRows || (rows > 0 && time.Since(staged) >= e.o.FlushEvery) || ahead >= persistEvery
		if !(due || (force && ahead > 0)) || time.Now().Before(flushAt) {
			return
		}
		if err := e.o.Store.FlushNotifications(ctx); err != nil {
			if ctx.Err() == nil {
				flushErr = min(max(2*flushErr, 100*time.Millisecond), 10*time.Second)
				flushAt = time.Now().Add(flushErr)
				e.o.Log.Error("push: writing notifications failed; retrying", "retry_in", flushErr, "err", err)
			}
			return
		}
		flushErr, flushAt, staged = 0, time.Time{}, time.Time{}
	}
	maxStaged := e.o.MaxStaged
	if maxStaged <= 0 {
		maxStaged = maxStagedRows
	}
	for {
		if rows, _ := e.o.Store.Staged(); rows >= maxStaged {
			// The writes are failing: evaluate no further until they
			// work again, so memory stays bounded.
			flush(true)
			if rows, _ := e.o.Store.Staged(); rows >= maxStaged {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(time.Until(flushAt)):
				}
				continue
			}
		}
		if d := paceStep(lastStep, full, time.Now()); d > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(d):
			}
		}
		began := time.Now()
		next, notified, stored, more, err := e.step(ctx, pos)
		switch {
		case err != nil && ctx.Err() == nil:
			retry = min(max(2*retry, 100*time.Millisecond), 10*time.Second)
			e.o.Log.Error("push: evaluating events failed; retrying", "after", pos, "retry_in", retry, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(retry):
			}
			continue
		case err != nil:
			return nil
		}
		retry = 0
		if next > pos {
			// Only a step that staged rows paces the next: one that found
			// nobody to notify has nothing to share.
			lastStep, full = time.Time{}, more
			if stored {
				lastStep = began
				if staged.IsZero() {
					staged = began
				}
			} else {
				e.o.Store.StageNotifications(next, nil, nil)
			}
			pos = next
			e.setEvaluated(pos, notified)
			flush(false)
			continue
		}
		flush(false)
		var flushDue <-chan time.Time
		if rows, _ := e.o.Store.Staged(); rows > 0 {
			flushDue = time.After(max(time.Until(staged.Add(e.o.FlushEvery)), time.Until(flushAt)))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-e.wake:
		case <-flushDue:
		case <-e.o.Store.FlushWanted():
			flush(true)
		case <-tick.C:
			flush(true)
		}
	}
}

// step evaluates the next batch of events after pos. It returns the new
// position, the users notified, whether the position was stored, and
// whether the batch was full (more may be waiting).
func (e *Evaluator) step(ctx context.Context, pos int64) (next int64, notified []string, stored, full bool, err error) {
	upTo, err := e.o.Store.MaxStreamPos(ctx)
	if err != nil || upTo <= pos {
		return pos, nil, false, false, err
	}
	evs, err := e.o.Store.PushEventsAfter(ctx, pos, upTo, evalBatch)
	if err != nil {
		return pos, nil, false, false, err
	}
	next, full = upTo, len(evs) == evalBatch
	if full {
		next = evs[len(evs)-1].StreamPos
	}
	b := &batch{rows: e.rows[:0], heads: map[headKey]*storage.ThreadHead{}, loaded: map[[2]string]bool{}}
	e.rows = nil // this step's until it is staged
	for _, ev := range evs {
		if err := e.evaluate(ctx, ev, b); err != nil {
			return pos, nil, false, false, err
		}
	}
	if len(b.rows) == 0 {
		e.keep(b.rows)
		return next, nil, false, full, nil
	}
	heads := make([]storage.ThreadHead, 0, len(b.heads))
	seen := map[string]bool{}
	for _, h := range b.heads {
		if h.StreamPos > 0 && h.StreamPos > pos {
			heads = append(heads, *h)
		}
	}
	for _, r := range b.rows {
		if !seen[r.UserID] {
			seen[r.UserID] = true
			notified = append(notified, r.UserID)
		}
	}
	e.o.Store.StageNotifications(next, b.rows, heads)
	e.keep(b.rows)
	return next, notified, true, full, nil
}

// keep keeps a step's rows buffer for the next step, emptied, unless it
// grew past keepRows.
func (e *Evaluator) keep(rows []storage.Notification) {
	if cap(rows) <= keepRows {
		clear(rows) // nothing kept alive by rows already staged
		e.rows = rows[:0]
	}
}

// headKey names a (user, room, thread).
type headKey struct{ user, room, thread string }

// batch is what one step records.
type batch struct {
	rows  []storage.Notification
	heads map[headKey]*storage.ThreadHead
	// loaded: the heads of a (room, thread) were read from the store.
	loaded map[[2]string]bool
}

// head returns the current head of a (user, room, thread), reading the
// room's thread from the store once per batch.
func (e *Evaluator) head(ctx context.Context, b *batch, user, room, thread string) (*storage.ThreadHead, error) {
	if !b.loaded[[2]string{room, thread}] {
		stored, err := e.o.Store.ThreadHeads(ctx, room, thread)
		if err != nil {
			return nil, err
		}
		for u, h := range stored {
			k := headKey{u, room, thread}
			if _, ok := b.heads[k]; !ok {
				h := h
				b.heads[k] = &h
			}
		}
		b.loaded[[2]string{room, thread}] = true
	}
	k := headKey{user, room, thread}
	h := b.heads[k]
	if h == nil {
		h = &storage.ThreadHead{UserID: user, RoomID: room, ThreadID: thread}
		b.heads[k] = h
	}
	return h, nil
}

// evaluate runs the rules of the event's local members on it.
func (e *Evaluator) evaluate(ctx context.Context, ev *storage.Event, b *batch) error {
	if ev.StateGroup == 0 {
		return nil
	}
	rs, err := e.roomState(ctx, ev.RoomID, ev.StateGroup)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) || errors.Is(err, errUnusable) {
			e.o.Log.Warn("push: cannot evaluate an event", "event_id", ev.EventID, "room_id", ev.RoomID, "err", err)
			return nil
		}
		return err
	}
	targets := rs.local
	// An invite reaches a local user who is not in the room yet
	// (.m.rule.invite_for_me), as in Synapse.
	if ev.Type == rooms.TypeMember && ev.StateKey != nil && ev.Membership == rooms.MembershipInvite &&
		e.isLocal(*ev.StateKey) && !slices.Contains(rs.local, *ev.StateKey) {
		targets = append(slices.Clip(targets), *ev.StateKey)
	}
	if len(targets) == 0 || (len(targets) == 1 && targets[0] == ev.Sender) {
		return nil
	}
	fe := NewEvent(ev.JSON)
	room := &Room{MemberCount: rs.joined, SenderPower: rs.power.UserLevel(ev.Sender), NotificationLevels: rs.notif}
	thread := ""
	now := e.o.Now().UnixMilli()
	// Thread subscriptions (MSC4306): read once per event in a thread, and
	// only when some target's rules ask.
	var subscribers map[string]bool
	inThread := e.o.Defaults.ThreadSubscriptions && ev.RelType == "m.thread" && ev.RelatesTo != ""
	// Room for a row a target, rather than doubling up to it.
	b.rows = slices.Grow(b.rows, len(targets))
	for _, u := range targets {
		if u == ev.Sender {
			continue // spec: never for events the user sent
		}
		us, err := e.userState(ctx, u)
		if err != nil {
			return err
		}
		if !ev.IsState() && us.ignored[ev.Sender] {
			continue
		}
		ts := NotInThread
		if inThread && us.rules.usesThreads {
			if subscribers == nil {
				if subscribers, err = e.o.Store.ThreadSubscribers(ctx, ev.RoomID, ev.RelatesTo); err != nil {
					return err
				}
			}
			ts = InUnsubscribedThread
			if subscribers[u] {
				ts = InSubscribedThread
			}
		}
		acts, ok := us.rules.Evaluate(fe, room, rs.names[u], ts)
		if !ok || !acts.Notify {
			continue
		}
		if thread == "" {
			if thread, err = e.o.Store.ThreadOf(ctx, ev.RelatesTo, ev.RelType); err != nil {
				return err
			}
		}
		h, err := e.head(ctx, b, u, ev.RoomID, thread)
		if err != nil {
			return err
		}
		h.StreamPos = ev.StreamPos
		h.CumNotif++
		if acts.Highlight {
			h.CumHighlight++
		}
		b.rows = append(b.rows, storage.Notification{UserID: u, StreamPos: ev.StreamPos, RoomID: ev.RoomID, EventID: ev.EventID,
			ThreadID: thread, Highlight: acts.Highlight, Actions: acts.JSON, TS: now, CumNotif: h.CumNotif, CumHighlight: h.CumHighlight})
	}
	return nil
}

func (e *Evaluator) isLocal(userID string) bool {
	return strings.HasSuffix(userID, ":"+e.o.ServerName) && strings.HasPrefix(userID, "@")
}

// userState returns a user's compiled rules and ignored users, compiling
// again when the stored rules changed.
func (e *Evaluator) userState(ctx context.Context, userID string) (*userState, error) {
	src, err := e.o.Store.PushRulesOf(ctx, userID)
	if err != nil {
		return nil, err
	}
	if us, ok := e.users.Get(userID); ok && us.src == src {
		return us, nil
	}
	gen := e.users.Generation()
	us := &userState{src: src, rules: CompileStored(userID, src, e.o.Defaults)}
	raw, err := e.o.Store.AccountDataContent(ctx, userID, "", "m.ignored_user_list")
	switch {
	case err == nil:
		var c struct {
			IgnoredUsers map[string]json.RawMessage `json:"ignored_users"`
		}
		if json.Unmarshal(raw, &c) == nil && len(c.IgnoredUsers) > 0 {
			us.ignored = make(map[string]bool, len(c.IgnoredUsers))
			for u := range c.IgnoredUsers {
				us.ignored[u] = true
			}
		}
	case !errors.Is(err, storage.ErrNotFound):
		return nil, err
	}
	e.users.AddIfGeneration(userID, us, gen)
	return us, nil
}

// errUnusable marks a room whose state cannot be read for evaluation (an
// unknown room version): its events are skipped.
var errUnusable = errors.New("push: room state unusable")

// roomState returns the room at a state group. A group that changes a
// few keys of a cached one (a join, a leave, a new name: most state
// events) is derived from it, reading only the events it changes, so a
// stream of joins to a large room costs each the join, not the room.
func (e *Evaluator) roomState(ctx context.Context, roomID string, group int64) (*roomState, error) {
	if rs, ok := e.rooms.Get(group); ok {
		return rs, nil
	}
	gen := e.rooms.Generation()
	prev, delta, err := e.o.Store.StateGroupDelta(ctx, group)
	if err != nil {
		return nil, err
	}
	var rs *roomState
	if base, ok := e.rooms.Get(prev); ok && prev != 0 && len(delta) <= 50 {
		rs, err = e.applyDelta(ctx, base, delta)
	}
	if rs == nil && err == nil {
		rs, err = e.fullRoomState(ctx, roomID, group)
	}
	if err != nil {
		return nil, err
	}
	e.rooms.AddIfGeneration(group, rs, gen)
	return rs, nil
}

// applyDelta is base (the state of the delta's parent group) with delta
// applied, or nil when it cannot tell (a key removed: forks merged), for
// the caller to compute the room afresh. What a member had before is read
// from the replaced event each member event names (replaces_state).
func (e *Evaluator) applyDelta(ctx context.Context, base *roomState, delta storage.StateKeyMap) (*roomState, error) {
	rs := *base
	var keys []storage.StateKey
	powerChanged := false
	for k, id := range delta {
		if id == "" {
			return nil, nil
		}
		switch {
		case k.Type == rooms.TypeMember:
			keys = append(keys, k)
		case k.Type == rooms.TypePowerLevels && k.StateKey == "":
			rs.plID, powerChanged = id, true
		case k.Type == rooms.TypeCreate && k.StateKey == "":
			rs.createID, powerChanged = id, true
		}
	}
	if len(keys) > 0 {
		ids := make([]string, len(keys))
		for i, k := range keys {
			ids[i] = delta[k]
		}
		rows, err := e.o.Store.MemberRows(ctx, ids)
		if err != nil {
			return nil, err
		}
		membership := make(map[string]string, 2*len(rows))
		before := map[storage.StateKey]string{}
		var replaced []string
		for _, r := range rows {
			membership[r.EventID] = r.Membership
			if r.ReplacesState != "" {
				before[storage.StateKey{Type: rooms.TypeMember, StateKey: r.UserID}] = r.ReplacesState
				replaced = append(replaced, r.ReplacesState)
			}
		}
		old, err := e.o.Store.MemberRows(ctx, replaced)
		if err != nil {
			return nil, err
		}
		for _, r := range old {
			membership[r.EventID] = r.Membership
		}
		var named []string
		copied := false
		for _, k := range keys {
			was := before[k] != "" && membership[before[k]] == rooms.MembershipJoin
			is := delta[k] != "" && membership[delta[k]] == rooms.MembershipJoin
			switch {
			case is && !was:
				rs.joined++
			case was && !is:
				rs.joined--
			}
			if !e.isLocal(k.StateKey) || (!was && !is) {
				continue
			}
			if !copied {
				rs.local, rs.names, copied = slices.Clone(rs.local), maps.Clone(rs.names), true
			}
			i, found := slices.BinarySearch(rs.local, k.StateKey)
			delete(rs.names, k.StateKey)
			switch {
			case is && !found:
				rs.local = slices.Insert(rs.local, i, k.StateKey)
			case !is && found:
				rs.local = slices.Delete(rs.local, i, i+1)
			}
			if is {
				named = append(named, delta[k])
			}
		}
		if len(named) > 0 {
			evs, err := e.o.Store.EventsByID(ctx, named)
			if err != nil {
				return nil, err
			}
			for _, ev := range evs {
				if n := gjson.GetBytes(ev.JSON, "content.displayname"); ev.StateKey != nil && n.Type == gjson.String && n.Str != "" {
					rs.names[*ev.StateKey] = n.Str
				}
			}
		}
	}
	if powerChanged {
		if err := e.loadPower(ctx, &rs); err != nil {
			return nil, err
		}
	}
	return &rs, nil
}

// fullRoomState computes the room at a group from its whole state.
func (e *Evaluator) fullRoomState(ctx context.Context, roomID string, group int64) (*roomState, error) {
	room, err := e.o.Store.RoomByID(ctx, roomID)
	if err != nil {
		return nil, err
	}
	rv, ok := rooms.LookupVersion(room.RoomVersion)
	if !ok {
		return nil, errUnusable
	}
	state, err := e.o.Store.StateGroup(ctx, group)
	if err != nil {
		return nil, err
	}
	var memberIDs []string
	for k, id := range state {
		if k.Type == rooms.TypeMember {
			memberIDs = append(memberIDs, id)
		}
	}
	members, err := e.o.Store.MemberRows(ctx, memberIDs)
	if err != nil {
		return nil, err
	}
	rs := &roomState{rv: rv, names: map[string]string{}, plID: state[storage.StateKey{Type: rooms.TypePowerLevels}],
		createID: state[storage.StateKey{Type: rooms.TypeCreate}]}
	var localIDs []string
	for _, m := range members {
		if m.Membership != rooms.MembershipJoin {
			continue
		}
		rs.joined++
		if e.isLocal(m.UserID) {
			rs.local = append(rs.local, m.UserID)
			localIDs = append(localIDs, m.EventID)
		}
	}
	slices.Sort(rs.local)
	evs, err := e.o.Store.EventsByID(ctx, localIDs)
	if err != nil {
		return nil, err
	}
	for _, ev := range evs {
		if n := gjson.GetBytes(ev.JSON, "content.displayname"); ev.StateKey != nil && n.Type == gjson.String && n.Str != "" {
			rs.names[*ev.StateKey] = n.Str
		}
	}
	if err := e.loadPower(ctx, rs); err != nil {
		return nil, err
	}
	return rs, nil
}

// loadPower computes rs's power levels from its power levels and create
// events.
func (e *Evaluator) loadPower(ctx context.Context, rs *roomState) error {
	var ids []string
	for _, id := range []string{rs.plID, rs.createID} {
		if id != "" {
			ids = append(ids, id)
		}
	}
	evs, err := e.o.Store.EventsByID(ctx, ids)
	if err != nil {
		return err
	}
	var pl, create *rooms.Event
	for _, ev := range evs {
		pe, err := rooms.ParseEvent(rs.rv, ev.JSON)
		if err != nil {
			continue
		}
		if ev.EventID == rs.plID {
			pl = pe
		} else {
			create = pe
		}
	}
	rs.power = rooms.EffectivePowerLevels(rs.rv, pl, create)
	rs.notif = map[string]int64{}
	if pl != nil {
		gjson.GetBytes(pl.Content(), "notifications").ForEach(func(k, v gjson.Result) bool {
			switch v.Type {
			case gjson.Number:
				if n, err := strconv.ParseInt(v.Raw, 10, 64); err == nil {
					rs.notif[k.Str] = n
				}
			case gjson.String:
				if n, err := strconv.ParseInt(strings.TrimSpace(v.Str), 10, 64); err == nil && !rs.rv.IntegerPowerLevels {
					rs.notif[k.Str] = n
				}
			}
			return true
		})
	}
	return nil
}
