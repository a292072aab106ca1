package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/tidwall/gjson"

	"hearth/server/netguard"
	"hearth/server/rooms"
	"hearth/server/storage"
)

// Pushers deliver notifications to push gateways (spec: Push Gateway API,
// POST /_matrix/push/v1/notify), as Synapse's HTTP pusher does.
//
// The queue is persisted twice over: the notifications themselves (the
// evaluator's rows) and each pusher's position in them
// (pushers.last_stream_ordering). A worker per pusher reads the user's
// notifications after its position, skips those already read (a read
// receipt covers them), sends the rest one by one in order and moves its
// position after each delivery. When the gateway fails, the worker backs
// off (1 s, doubling up to an hour) and tries the same notification again;
// a gateway failing for more than a day has the notification skipped, so
// that a gateway coming back is not flooded with old ones. A gateway that
// answers with the pushkey in "rejected" has the pusher deleted. After a
// restart the workers resume from the stored positions.
//
// Gateways are reached through a netguard.Dialer: a gateway URL resolving to
// a private or reserved address is refused (ip_range_blacklist), unless
// ip_range_whitelist allows it, as for federation; Synapse sends pushes
// through the same blocklisting client.
//
// Email pushers are stored and listed; Hearth has no mailer, so nothing is
// sent to them.

// PoolOptions configure a Pool.
type PoolOptions struct {
	Store *storage.Store
	// Client sends to gateways; NewGatewayClient builds one.
	Client *http.Client
	Log    *slog.Logger
	Now    func() time.Time
	// MinRetry, MaxRetry bound the back-off of a failing gateway (1 s and
	// 1 h, Synapse's); GiveUpAfter is how long a gateway may fail before
	// a notification is skipped (a day).
	MinRetry, MaxRetry, GiveUpAfter time.Duration
	// OmitContent leaves the event content out of full-format pushes
	// (Synapse's push.include_content: false).
	OmitContent bool
}

// Pool runs the pushers.
type Pool struct {
	o   PoolOptions
	ctx context.Context

	mu      sync.Mutex
	byUser  map[string][]int64 // the users' HTTP pushers
	workers map[int64]*pusherWorker
	wg      sync.WaitGroup
}

// pusherWorker is one pusher's state in this process.
type pusherWorker struct {
	id      int64
	running bool
	// pending: notifications may be waiting; badge: receipts changed the
	// unread count.
	pending, badge bool
	reset          chan struct{}
	backoff        time.Duration
	lastBadge      int
	// gen counts the times the pusher was set again: a worker holding
	// the pusher as it was stops and reads it anew.
	gen uint64
}

// NewPool builds a Pool; Run starts it.
func NewPool(o PoolOptions) *Pool {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MinRetry <= 0 {
		o.MinRetry = time.Second
	}
	if o.MaxRetry <= 0 {
		o.MaxRetry = time.Hour
	}
	if o.GiveUpAfter <= 0 {
		o.GiveUpAfter = 24 * time.Hour
	}
	return &Pool{o: o, byUser: map[string][]int64{}, workers: map[int64]*pusherWorker{}}
}

// NewGatewayClient is the HTTP client for push gateways: it dials through d
// (the address policy), ignores proxies from the environment, follows no
// redirects and gives a gateway 30 s to answer.
func NewGatewayClient(d *netguard.Dialer) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           d.DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			MaxIdleConnsPerHost:   4,
			IdleConnTimeout:       90 * time.Second,
		},
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Run starts a worker for every pusher with notifications waiting and runs
// them until ctx ends.
func (p *Pool) Run(ctx context.Context) error {
	p.mu.Lock()
	p.ctx = ctx
	p.mu.Unlock()
	load := func() bool {
		users, err := p.o.Store.PusherUsers(ctx, "http")
		if err != nil {
			if ctx.Err() == nil {
				p.o.Log.Error("push: listing the pushers failed; retrying in a minute", "err", err)
			}
			return false
		}
		for _, u := range users {
			p.reload(ctx, u, false)
		}
		return true
	}
	loaded := load()
	// Now and then every pusher looks again, in case a wake was missed.
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			p.wg.Wait()
			return nil
		case <-tick.C:
			if !loaded {
				loaded = load()
			}
			p.mu.Lock()
			for _, ids := range p.byUser {
				for _, id := range ids {
					p.startLocked(id, true, false)
				}
			}
			p.mu.Unlock()
		}
	}
}

// Changed reloads a user's pushers after they were set or deleted, and
// starts those with notifications to send. A pusher set again retries its
// gateway at once.
func (p *Pool) Changed(ctx context.Context, userID string) { p.reload(ctx, userID, true) }

// reload reads a user's pushers and starts those with notifications to
// send; reset also ends a back-off (a pusher changed). The pool's own
// loads, at start and after a failure, do not: a gateway that failed is
// not retried early because the pool started late.
func (p *Pool) reload(ctx context.Context, userID string, reset bool) {
	ps, err := p.o.Store.PushersOf(ctx, userID)
	if err != nil {
		p.o.Log.Error("push: reading a user's pushers", "user_id", userID, "err", err)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var ids []int64
	for _, pu := range ps {
		if pu.Kind != "http" {
			continue
		}
		ids = append(ids, pu.ID)
		if w := p.workers[pu.ID]; w != nil && reset {
			w.backoff = 0
			w.gen++
			select {
			case w.reset <- struct{}{}:
			default:
			}
		}
		p.startLocked(pu.ID, true, false)
	}
	if len(ids) == 0 {
		delete(p.byUser, userID)
	} else {
		p.byUser[userID] = ids
	}
}

// Notify tells the pool these users got new notifications. Cheap; it never
// blocks.
func (p *Pool) Notify(users []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, u := range users {
		for _, id := range p.byUser[u] {
			p.startLocked(id, true, false)
		}
	}
}

// ReceiptsChanged tells the pool a user's read receipts moved: their
// pushers send the new unread count when it changed (Synapse's badge
// update), so a phone's badge goes down when the user reads elsewhere.
func (p *Pool) ReceiptsChanged(userID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range p.byUser[userID] {
		p.startLocked(id, false, true)
	}
}

// Running reports how many pusher workers are busy (tests).
func (p *Pool) Running() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, w := range p.workers {
		if w.running {
			n++
		}
	}
	return n
}

func (p *Pool) startLocked(id int64, pending, badge bool) {
	w := p.workers[id]
	if w == nil {
		w = &pusherWorker{id: id, reset: make(chan struct{}, 1), lastBadge: -1}
		p.workers[id] = w
	}
	w.pending = w.pending || pending
	w.badge = w.badge || badge
	if w.running || p.ctx == nil || p.ctx.Err() != nil {
		return
	}
	w.running = true
	p.wg.Add(1)
	go p.work(p.ctx, w)
}

// forgetLocked drops a deleted pusher.
func (p *Pool) forgetLocked(w *pusherWorker, userID string) {
	delete(p.workers, w.id)
	if userID == "" {
		return
	}
	ids := p.byUser[userID]
	for i, id := range ids {
		if id == w.id {
			ids = append(ids[:i:i], ids[i+1:]...)
			break
		}
	}
	if len(ids) == 0 {
		delete(p.byUser, userID)
	} else {
		p.byUser[userID] = ids
	}
}

// errPushFailed: the gateway could not be reached or failed; errRejected: it
// rejected the pushkey.
var (
	errPushFailed = errors.New("push: gateway failed")
	errRejected   = errors.New("push: gateway rejected the pushkey")
	errChanged    = errors.New("push: pusher set again")
)

func (p *Pool) work(ctx context.Context, w *pusherWorker) {
	defer p.wg.Done()
	userID := ""
	stop := func(forget bool) {
		p.mu.Lock()
		w.running = false
		if forget {
			p.forgetLocked(w, userID)
		}
		p.mu.Unlock()
	}
	for ctx.Err() == nil {
		p.mu.Lock()
		pending, badge, gen := w.pending, w.badge, w.gen
		w.pending, w.badge = false, false
		if !pending && !badge {
			w.running = false
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		pu, err := p.o.Store.PusherByID(ctx, w.id)
		if errors.Is(err, storage.ErrNotFound) {
			stop(true)
			return
		}
		if err != nil {
			if ctx.Err() == nil {
				p.o.Log.Error("push: reading a pusher", "pusher", w.id, "err", err)
			}
			stop(false)
			return
		}
		userID = pu.UserID
		gw, err := parseGateway(pu)
		if err != nil {
			p.o.Log.Warn("push: pusher has no usable gateway URL", "user_id", pu.UserID, "app_id", pu.AppID, "err", err)
			stop(false)
			return
		}
		if pending {
			err := p.deliverPending(ctx, w, pu, gw, gen)
			switch {
			case errors.Is(err, errRejected):
				stop(true)
				return
			case errors.Is(err, errChanged):
				p.mu.Lock()
				w.pending = true
				p.mu.Unlock()
				continue
			case errors.Is(err, errPushFailed):
				p.mu.Lock()
				w.backoff = min(max(2*w.backoff, p.o.MinRetry), p.o.MaxRetry)
				wait := w.backoff
				w.pending = true
				p.mu.Unlock()
				p.o.Log.Info("push: gateway failed; retrying later", "user_id", pu.UserID, "app_id", pu.AppID, "retry_in", wait)
				select {
				case <-ctx.Done():
				case <-w.reset:
				case <-time.After(wait):
				}
				continue
			case err != nil:
				if ctx.Err() == nil {
					p.o.Log.Error("push: delivering notifications", "user_id", pu.UserID, "app_id", pu.AppID, "err", err)
				}
				stop(false)
				return
			}
			p.mu.Lock()
			w.backoff = 0
			p.mu.Unlock()
		}
		if badge {
			p.sendBadge(ctx, w, pu, gw)
		}
	}
	stop(false)
}

// gateway is where and how a pusher's notifications go.
type gateway struct {
	url         string
	eventIDOnly bool
	// data is the pusher's data without url (spec: forwarded to the
	// gateway, format and custom keys included).
	data map[string]any
}

func parseGateway(pu *storage.Pusher) (*gateway, error) {
	var data map[string]any
	if err := json.Unmarshal([]byte(pu.Data), &data); err != nil {
		return nil, err
	}
	u, _ := data["url"].(string)
	if err := CheckGatewayURL(u); err != nil {
		return nil, err
	}
	delete(data, "url")
	format, _ := data["format"].(string)
	return &gateway{url: u, eventIDOnly: format == "event_id_only", data: data}, nil
}

// CheckGatewayURL checks a pusher's data.url as Synapse does: an absolute
// http(s) URL whose path is /_matrix/push/v1/notify.
func CheckGatewayURL(raw string) error {
	if raw == "" {
		return errors.New("'url' required in data for HTTP pusher")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("'url' must be an absolute http or https URL")
	}
	if u.Path != "/_matrix/push/v1/notify" {
		return errors.New("'url' must have a path of '/_matrix/push/v1/notify'")
	}
	return nil
}

// deliverPending sends the pusher's unread notifications in order, as the
// pusher was at generation gen (errChanged once it was set again).
func (p *Pool) deliverPending(ctx context.Context, w *pusherWorker, pu *storage.Pusher, gw *gateway, gen uint64) error {
	after, failingSince := pu.LastStreamOrdering, pu.FailingSince
	for {
		// The evaluator records notifications in stream order, in
		// transactions of whole batches: whatever is there may be sent.
		ns, err := p.o.Store.NotificationsAfter(ctx, pu.UserID, after, math.MaxInt64, 50)
		if err != nil || len(ns) == 0 {
			return err
		}
		read, err := p.o.Store.ReadPositionsOf(ctx, pu.UserID)
		if err != nil {
			return err
		}
		moved := false
		for _, n := range ns {
			if n.StreamPos <= read.Of(n.RoomID, n.ThreadID) {
				after, moved = n.StreamPos, true // read elsewhere already
				continue
			}
			p.mu.Lock()
			changed := w.gen != gen
			p.mu.Unlock()
			if changed {
				return errChanged // what was skipped is skipped again
			}
			err := p.push(ctx, w, pu, gw, n)
			now := p.o.Now().UnixMilli()
			switch {
			case err == nil:
				after, moved, failingSince = n.StreamPos, false, 0
				if err := p.o.Store.PusherProgress(ctx, pu.ID, after, now, 0); err != nil {
					if errors.Is(err, storage.ErrNotFound) {
						return errRejected // deleted meanwhile: stop as if rejected
					}
					return err
				}
			case errors.Is(err, errRejected):
				p.o.Log.Info("push: gateway rejected the pushkey; removing the pusher", "user_id", pu.UserID, "app_id", pu.AppID)
				if err := p.o.Store.DeletePusherByID(ctx, pu.ID); err != nil {
					return err
				}
				return errRejected
			case errors.Is(err, errPushFailed):
				p.o.Log.Warn("push: could not push a notification", "user_id", pu.UserID, "app_id", pu.AppID, "err", err)
				if failingSince == 0 {
					failingSince = now
				}
				if time.Duration(now-failingSince)*time.Millisecond > p.o.GiveUpAfter {
					// Failing for a day: skip it, so that a gateway that is
					// fixed is not sent a backlog of stale notifications.
					p.o.Log.Warn("push: giving up on a notification", "user_id", pu.UserID, "app_id", pu.AppID, "event_id", n.EventID)
					after, failingSince = n.StreamPos, 0
					if err := p.o.Store.PusherProgress(ctx, pu.ID, after, 0, 0); err != nil {
						return err
					}
					continue
				}
				if err := p.o.Store.PusherProgress(ctx, pu.ID, after, 0, failingSince); err != nil && !errors.Is(err, storage.ErrNotFound) {
					return err
				}
				return err
			default:
				return err
			}
		}
		if moved {
			if err := p.o.Store.PusherProgress(ctx, pu.ID, after, 0, failingSince); err != nil {
				if errors.Is(err, storage.ErrNotFound) {
					return errRejected
				}
				return err
			}
		}
	}
}

// push sends one notification.
func (p *Pool) push(ctx context.Context, w *pusherWorker, pu *storage.Pusher, gw *gateway, n storage.Notification) error {
	ev, err := p.o.Store.EventByID(ctx, n.EventID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil // purged: nothing to say
	}
	if err != nil {
		return err
	}
	var raw []json.RawMessage
	_ = json.Unmarshal([]byte(n.Actions), &raw)
	tweaks := Actions{Raw: raw}.Tweaks()
	badge, err := p.BadgeCount(ctx, pu.UserID)
	if err != nil {
		return err
	}
	prio := "low"
	if ev.Type == "m.room.encrypted" || tweaks["highlight"] == true || tweaks["sound"] != nil {
		// High priority only when it makes a sound or a highlight, or may
		// (encrypted), as Synapse decides.
		prio = "high"
	}
	content := map[string]any{"event_id": ev.EventID, "room_id": ev.RoomID, "prio": prio, "counts": map[string]any{"unread": badge}}
	if gw.eventIDOnly {
		tweaks = nil // event_id_only carries no tweaks (Synapse)
	} else {
		content["id"] = ev.EventID // deprecated, still read by some gateways
		content["type"] = ev.Type
		content["sender"] = ev.Sender
		if ev.Type == rooms.TypeMember && ev.StateKey != nil {
			content["membership"] = ev.Membership
			content["user_is_target"] = *ev.StateKey == pu.UserID
		}
		if c := gjson.GetBytes(ev.JSON, "content"); !p.o.OmitContent && c.IsObject() && len(c.Map()) > 0 {
			content["content"] = json.RawMessage(c.Raw)
		}
		names, err := p.eventNames(ctx, ev)
		if err != nil {
			return err
		}
		for k, v := range names {
			content[k] = v
		}
	}
	rejected, err := p.post(ctx, pu, gw, content, tweaks)
	if err != nil {
		return err
	}
	for _, k := range rejected {
		if k == pu.PushKey {
			return errRejected
		}
	}
	p.mu.Lock()
	w.lastBadge = badge
	p.mu.Unlock()
	return nil
}

// eventNames are the sender's display name and the room's name at the event
// (m.room.name, else the canonical alias), for full-format pushes.
func (p *Pool) eventNames(ctx context.Context, ev *storage.Event) (map[string]string, error) {
	out := map[string]string{"sender_display_name": ev.Sender}
	state, err := p.o.Store.StateGroup(ctx, ev.StateGroup)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, k := range []storage.StateKey{{Type: "m.room.name"}, {Type: "m.room.canonical_alias"}, {Type: rooms.TypeMember, StateKey: ev.Sender}} {
		if id := state[k]; id != "" {
			ids = append(ids, id)
		}
	}
	evs, err := p.o.Store.EventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	var name, alias string
	for _, s := range evs {
		switch s.Type {
		case "m.room.name":
			name = gjson.GetBytes(s.JSON, "content.name").Str
		case "m.room.canonical_alias":
			alias = gjson.GetBytes(s.JSON, "content.alias").Str
		case rooms.TypeMember:
			if dn := gjson.GetBytes(s.JSON, "content.displayname").Str; dn != "" {
				out["sender_display_name"] = dn
			}
		}
	}
	if name == "" {
		name = alias
	}
	if name != "" {
		out["room_name"] = name
	}
	return out, nil
}

// BadgeCount is the unread count pushes carry (Synapse's, grouped by room):
// the rooms with unread notifications plus the pending invites.
func (p *Pool) BadgeCount(ctx context.Context, userID string) (int, error) {
	mems, err := p.o.Store.RoomsOfUser(ctx, userID, rooms.MembershipJoin, rooms.MembershipInvite)
	if err != nil {
		return 0, err
	}
	joined := map[string]bool{}
	badge := 0
	for _, m := range mems {
		if m.Membership == rooms.MembershipInvite {
			badge++
		} else {
			joined[m.RoomID] = true
		}
	}
	if len(joined) == 0 {
		return badge, nil
	}
	counts, err := p.o.Store.UnreadCounts(ctx, userID, joined, math.MaxInt64)
	if err != nil {
		return 0, err
	}
	return badge + len(counts), nil
}

// sendBadge sends the unread count alone when it changed since the last
// push (best effort, not retried: the next push carries it anyway).
func (p *Pool) sendBadge(ctx context.Context, w *pusherWorker, pu *storage.Pusher, gw *gateway) {
	badge, err := p.BadgeCount(ctx, pu.UserID)
	if err != nil {
		return
	}
	p.mu.Lock()
	same := w.lastBadge == badge
	p.mu.Unlock()
	if same {
		return
	}
	content := map[string]any{"id": "", "type": nil, "sender": "", "counts": map[string]any{"unread": badge}}
	if _, err := p.post(ctx, pu, gw, content, nil); err != nil {
		p.o.Log.Info("push: could not send a badge update", "user_id", pu.UserID, "app_id", pu.AppID, "err", err)
		return
	}
	p.mu.Lock()
	w.lastBadge = badge
	p.mu.Unlock()
}

// post sends {"notification": content} with the pusher as its one device,
// and returns the pushkeys the gateway rejected.
func (p *Pool) post(ctx context.Context, pu *storage.Pusher, gw *gateway, content map[string]any, tweaks map[string]any) ([]string, error) {
	device := map[string]any{"app_id": pu.AppID, "pushkey": pu.PushKey, "pushkey_ts": pu.PushKeyTS / 1000, "data": gw.data}
	if len(tweaks) > 0 {
		device["tweaks"] = tweaks
	}
	content["devices"] = []any{device}
	body, err := json.Marshal(map[string]any{"notification": content})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, gw.url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errPushFailed, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.o.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errPushFailed, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%w: the gateway answered %d", errPushFailed, resp.StatusCode)
	}
	var r struct {
		Rejected []string `json:"rejected"`
	}
	_ = json.Unmarshal(raw, &r) // a 2xx without a body rejects nothing
	return r.Rejected, nil
}
