package server

import (
	"context"
	"encoding/json"
	"encoding/json/jsontext"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"hearth/server/matrix"
	"hearth/server/secret"
	"hearth/server/storage"
	"hearth/server/timeline"
)

// Delayed events (MSC4140, as Synapse serves it): a client schedules an
// event with ?org.matrix.msc4140.delay=<ms> on PUT /send or PUT /state and
// gets a delay_id instead of an event ID. The server sends the event when
// the delay runs out, unless the client cancels it first, or restarts its
// delay (Element Call's "leave the call if I vanish": a call membership
// state event that keeps being restarted while the client is alive).
//
// Rows live in delayed_events (storage/delayed_events.go), so they survive
// a restart; one goroutine (runDelayed) sends what is due and sleeps until
// the next one. Sending claims a row first, then sends the event under the
// transaction ID delayedTxnPrefix+delay_id, then deletes the row: a process
// that stops in between sends the claimed rows again on start, and the
// transaction ID makes that second send return the first event instead of
// a duplicate.
//
// A delayed state event is cancelled when another user sets the same state
// (the timeline's observer below), as in Synapse.

// delayedTxnPrefix marks the transaction IDs of delayed sends: clientEvent
// shows them to the sender as unsigned.org.matrix.msc4140.delay_id, not as
// a transaction_id the client never chose.
const delayedTxnPrefix = "org.matrix.msc4140.delay:"

// delayedTxnScope is the scope of those transaction IDs (see txnScope).
func delayedTxnScope(roomID string) string { return "delayed " + roomID }

// delayedState is what the scheduler shares with requests and the
// timeline's observer.
type delayedState struct {
	// wake tells runDelayed that the next due time may have changed.
	wake chan struct{}
	mu   sync.Mutex
	// changed are state changes not yet checked against delayed state
	// events.
	changed []stateSet
}

// stateSet is one piece of room state someone set.
type stateSet struct {
	roomID, typ, stateKey, sender string
}

func (d *delayedState) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// startDelayed sets up the scheduler's state and observes the timeline
// (New; Run runs runDelayed).
func (s *Server) startDelayed() {
	s.delayed = &delayedState{wake: make(chan struct{}, 1)}
	s.timeline.Observe(delayedObserver{s.delayed})
}

// delayedObserver queues every state change for runDelayed, which cancels
// the delayed state events of other users for the same state.
type delayedObserver struct{ d *delayedState }

func (o delayedObserver) EventPersisted(p *timeline.Persisted) {
	var sets []stateSet
	for _, c := range p.Changes {
		if c.EventID == "" || c.EventID != p.Event.EventID {
			// A key left the state, or changed by a merge of forks (a
			// state reset), not by someone setting it: Synapse skips the
			// first and Hearth the second, whose sender is not at hand.
			continue
		}
		sets = append(sets, stateSet{roomID: p.Event.RoomID, typ: c.Key.Type, stateKey: c.Key.StateKey, sender: p.Event.Sender})
	}
	if len(sets) == 0 {
		return
	}
	o.d.mu.Lock()
	o.d.changed = append(o.d.changed, sets...)
	o.d.mu.Unlock()
	o.d.poke()
}

// delayParam reads ?org.matrix.msc4140.delay: absent (ok false), or a
// non-negative number of milliseconds (400 M_INVALID_PARAM otherwise, as
// Synapse's parse_integer).
func delayParam(r *http.Request) (time.Duration, bool, error) {
	q := r.URL.Query()
	if !q.Has("org.matrix.msc4140.delay") {
		return 0, false, nil
	}
	ms, err := strconv.ParseInt(q.Get("org.matrix.msc4140.delay"), 10, 64)
	if err != nil || ms < 0 || ms > 1<<53 {
		return 0, false, matrix.InvalidParam("org.matrix.msc4140.delay must be a non-negative integer of milliseconds")
	}
	return time.Duration(ms) * time.Millisecond, true, nil
}

// scheduleDelayed answers a PUT /send or /state that has a delay: it stores
// the event for later and answers {"delay_id"}. Synapse's checks, in its
// order: delayed events enabled (403 M_FORBIDDEN otherwise), the delay
// within max_event_delay_duration (403 M_FORBIDDEN), the room known (404
// M_NOT_FOUND), the user's scheduled events under the maximum (429
// M_LIMIT_EXCEEDED). Whether the user may send the event is for the auth
// rules when it is sent, as in Synapse.
func (s *Server) scheduleDelayed(w http.ResponseWriter, r *http.Request, roomID, typ string, stateKey *string, content json.RawMessage, txnID string, delay time.Duration) error {
	me := deviceFrom(r.Context())
	if !s.cfg.DelayedEventsEnabled() {
		return matrix.Forbidden("Sending delayed events has been disallowed")
	}
	if max := s.cfg.MaxEventDelayDuration.Std(); delay > max {
		return matrix.Forbidden("The requested delay (%dms) exceeds the allowed maximum (%dms)", delay.Milliseconds(), max.Milliseconds())
	}
	if len(content) > 65536 {
		return matrix.TooLarge("event content is larger than 65536 bytes")
	}
	if _, err := s.store.RoomByID(r.Context(), roomID); errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("unknown room")
	} else if err != nil {
		return err
	}
	pos, err := s.store.MaxStreamPos(r.Context())
	if err != nil {
		return err
	}
	now := s.now().UnixMilli()
	d := &storage.DelayedEvent{DelayID: "hde_" + secret.FromAlphabet("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", 20),
		UserID: me.UserID, DeviceID: me.DeviceID, RoomID: roomID, Type: typ, StateKey: stateKey, Content: content,
		DelayMS: delay.Milliseconds(), SendTS: now + delay.Milliseconds(), CreatedPos: pos}
	id, err := s.store.AddDelayedEvent(r.Context(), d, txnID, s.cfg.MaxDelayedEventsPerUser(), now)
	var tooMany *storage.ErrTooManyDelayed
	if errors.As(err, &tooMany) {
		e := matrix.LimitExceeded(time.Duration(tooMany.RetryAfterMS) * time.Millisecond)
		e.Msg = "The maximum number of delayed events has been reached."
		return e
	} else if err != nil {
		return err
	}
	s.delayed.poke()
	return writeJSON(w, http.StatusOK, map[string]string{"delay_id": id})
}

// GET /_matrix/client/unstable/org.matrix.msc4140/delayed_events
//
// The caller's scheduled delayed events, the soonest due first, in
// Synapse's shape ({"delayed_events": [...]}, no pagination: a user has at
// most msc4140_max_delayed_events_per_user). ?delay_id= (repeatable)
// narrows the list, as the MSC's current draft has it.
func (s *Server) getDelayedEvents(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	if err := s.limits.delayedMgmt.take(me.UserID); err != nil {
		return err
	}
	ids := r.URL.Query()["delay_id"]
	if len(ids) > 100 {
		return matrix.InvalidParam("at most 100 delay_id parameters")
	}
	evs, err := s.store.DelayedEventsOfUser(r.Context(), me.UserID, ids)
	if err != nil {
		return err
	}
	type delayedJSON struct {
		DelayID      string         `json:"delay_id"`
		RoomID       string         `json:"room_id"`
		Type         string         `json:"type"`
		StateKey     *string        `json:"state_key,omitempty"`
		Delay        int64          `json:"delay"`
		RunningSince int64          `json:"running_since"`
		Content      jsontext.Value `json:"content"`
	}
	out := make([]delayedJSON, 0, len(evs))
	for _, d := range evs {
		out = append(out, delayedJSON{DelayID: d.DelayID, RoomID: d.RoomID, Type: d.Type, StateKey: d.StateKey,
			Delay: d.DelayMS, RunningSince: d.RunningSince(), Content: jsontext.Value(d.Content)})
	}
	return writeJSON(w, http.StatusOK, map[string]any{"delayed_events": out})
}

// POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delayId}
//
// {"action": "cancel" | "restart" | "send"}. As in Synapse, no access token
// is needed: the delay ID is the secret (a client hands it to a service
// that restarts it for it); one that is given must be valid.
func (s *Server) postDelayedEvent(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Action *string `json:"action"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Action == nil {
		return matrix.MissingParam("'action' is missing")
	}
	switch *req.Action {
	case "cancel", "restart", "send":
	default:
		return matrix.InvalidParam("'action' is not one of 'cancel', 'restart', 'send'")
	}
	return s.updateDelayed(w, r, *req.Action)
}

// POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delayId}/cancel
// POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delayId}/restart
// POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delayId}/send
//
// The newer per-action paths of the MSC (Synapse serves both forms).
func (s *Server) postDelayedEventAction(action string) apiFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		return s.updateDelayed(w, r, action)
	}
}

// updateDelayed carries out a management action: 404 M_NOT_FOUND when no
// delayed event with that ID is scheduled (any more).
func (s *Server) updateDelayed(w http.ResponseWriter, r *http.Request, action string) error {
	key := "ip " + clientIP(r, s.xForwarded(r))
	if me := deviceFrom(r.Context()); me != nil {
		key = me.UserID
	}
	if err := s.limits.delayedMgmt.take(key); err != nil {
		return err
	}
	delayID, err := pathParam(r, "delayId")
	if err != nil {
		return err
	}
	ctx := r.Context()
	switch action {
	case "cancel":
		err = s.store.CancelDelayedEvent(ctx, delayID)
	case "restart":
		err = s.store.RestartDelayedEvent(ctx, delayID, s.now().UnixMilli())
	case "send":
		var d *storage.DelayedEvent
		if d, err = s.store.ClaimDelayedEvent(ctx, delayID); err == nil {
			// Sent now, whatever happens to the request: the row is
			// claimed and only a send deletes it.
			err = s.sendDelayed(context.WithoutCancel(ctx), d)
		}
	}
	if errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("Delayed event not found")
	} else if err != nil {
		return err
	}
	s.delayed.poke()
	return writeJSON(w, http.StatusOK, struct{}{})
}

// runDelayed sends delayed events when they are due, until ctx ends (Run).
// Its first round also sends the rows a previous process claimed and did
// not finish.
func (s *Server) runDelayed(ctx context.Context) {
	resume := true
	for ctx.Err() == nil {
		s.cancelOverriddenDelayed(ctx)
		evs, err := s.store.ClaimDueDelayedEvents(ctx, s.now().UnixMilli(), resume)
		if err != nil {
			s.log.Error("delayed events: claim", "err", err)
		} else {
			resume = false
			s.sendDelayedBatch(ctx, evs)
		}
		wait := time.Hour
		if err != nil {
			wait = 5 * time.Second
		} else if due, ok, err := s.store.NextDelayedEventDue(ctx); err != nil {
			s.log.Error("delayed events: next due", "err", err)
			wait = 5 * time.Second
		} else if ok {
			wait = max(time.Duration(due-s.now().UnixMilli())*time.Millisecond, 0)
		}
		if err == nil && len(evs) > 0 {
			continue // there may be more due than one round claims
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-s.delayed.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// sendDelayedBatch sends claimed delayed events in order. Of several state
// events for the same state due together, the first is sent and the others
// dropped (Synapse's rule: the others would be overwritten at once).
func (s *Server) sendDelayedBatch(ctx context.Context, evs []*storage.DelayedEvent) {
	sent := map[stateSet]bool{}
	for _, d := range evs {
		if ctx.Err() != nil {
			return // the rows stay claimed: the next process sends them
		}
		var key stateSet
		if d.StateKey != nil {
			key = stateSet{roomID: d.RoomID, typ: d.Type, stateKey: *d.StateKey}
			if sent[key] {
				if err := s.store.DeleteDelayedEvent(ctx, d.DelayID); err != nil {
					s.log.Error("delayed events: delete", "delay_id", d.DelayID, "err", err)
				}
				continue
			}
		}
		if err := s.sendDelayed(ctx, d); errors.Is(err, storage.ErrNotFound) {
			continue
		} else if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("delayed event not sent", "delay_id", d.DelayID, "room_id", d.RoomID, "user_id", d.UserID, "err", err)
			continue
		}
		if d.StateKey != nil {
			sent[key] = true
		}
	}
}

// sendDelayed sends one claimed delayed event and deletes its row. A send
// the room refuses (the user left, lost power) deletes it too: retrying
// would be refused again. An error of the server's own (the store) keeps
// it for the next process. storage.ErrNotFound: another user set the
// state since it was scheduled, and the event was dropped.
func (s *Server) sendDelayed(ctx context.Context, d *storage.DelayedEvent) error {
	err := s.deliverDelayed(ctx, d)
	var merr *matrix.Error
	if err != nil && !errors.Is(err, storage.ErrNotFound) && !errors.As(err, &merr) {
		return err
	}
	if derr := s.store.DeleteDelayedEvent(ctx, d.DelayID); derr != nil {
		return derr
	}
	return err
}

// deliverDelayed sends a delayed event's event, at most once whatever the
// number of calls.
func (s *Server) deliverDelayed(ctx context.Context, d *storage.DelayedEvent) error {
	me := &Device{UserID: d.UserID, DeviceID: d.DeviceID}
	txnID := delayedTxnPrefix + d.DelayID
	if d.StateKey != nil {
		if s.overriddenSince(ctx, d) {
			return storage.ErrNotFound
		}
		_, err := s.setState(ctx, me, d.RoomID, d.Type, *d.StateKey, d.Content, txnID)
		return err
	}
	ne := newEvent{Type: d.Type, Sender: d.UserID, Content: jsontext.Value(d.Content), Device: me}
	_, err := s.sendDelayedOnce(ctx, d.RoomID, ne, txnID)
	return err
}

// overriddenSince reports whether another user set the delayed state
// event's state after it was scheduled: the observer cancels such events,
// this catches a change the observer had no time to act on before a
// restart.
func (s *Server) overriddenSince(ctx context.Context, d *storage.DelayedEvent) bool {
	cur, err := s.store.CurrentStateEvent(ctx, d.RoomID, d.Type, *d.StateKey)
	return err == nil && cur.StreamPos > d.CreatedPos && cur.Sender != d.UserID
}

// sendDelayedOnce sends ne under the delayed-event transaction ID txnID:
// an event already sent under it (by a process that stopped before
// deleting the row) is returned instead of sending it again.
func (s *Server) sendDelayedOnce(ctx context.Context, roomID string, ne newEvent, txnID string) (string, error) {
	scope := delayedTxnScope(roomID)
	if ne.Device.DeviceID != "" {
		if id, err := s.store.EventIDByTxn(ctx, ne.Sender, ne.Device.DeviceID, scope, txnID); err == nil {
			return id, nil
		}
	}
	te := timeline.NewEvent{Type: ne.Type, StateKey: ne.StateKey, Sender: ne.Sender, Content: ne.Content,
		DeviceID: ne.Device.DeviceID, TxnID: txnID, TxnScope: scope}
	out, err := s.timeline.Send(ctx, roomID, te)
	if errors.Is(err, storage.ErrConflict) && ne.Device.DeviceID != "" {
		return s.store.EventIDByTxn(ctx, ne.Sender, ne.Device.DeviceID, scope, txnID)
	}
	if err != nil {
		return "", sendError(err)
	}
	return out[0].EventID, nil
}

// cancelOverriddenDelayed cancels, for every state change the observer
// queued, the other users' delayed state events for that state.
func (s *Server) cancelOverriddenDelayed(ctx context.Context) {
	s.delayed.mu.Lock()
	changed := s.delayed.changed
	s.delayed.changed = nil
	s.delayed.mu.Unlock()
	for _, c := range changed {
		if _, err := s.store.CancelDelayedStateEvents(ctx, c.roomID, c.typ, c.stateKey, c.sender); err != nil {
			s.log.Error("delayed events: cancel for a state change", "room_id", c.roomID, "err", err)
		}
	}
}

// delayIDOfTxn is the delay ID behind a delayed send's transaction ID.
func delayIDOfTxn(txnID string) (string, bool) {
	return strings.CutPrefix(txnID, delayedTxnPrefix)
}
