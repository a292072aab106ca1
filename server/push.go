package server

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"hearth/server/netguard"
	"hearth/server/push"
	"hearth/server/storage"
	"hearth/server/timeline"
)

// Push notifications: the evaluator (push rules on every event, package
// push), the pushers, and how they hook into the room pipeline and /sync.
// The handlers are in pushrules.go (rules) and client_push.go (pushers,
// GET /notifications); the counts in /sync in client_sync.go.

// startPush builds the evaluator and the pushers and puts the evaluator
// between the timeline and the /sync notifier (New; Run runs them).
func (s *Server) startPush(maxStaged int, flushEvery time.Duration) {
	s.pushGate = &pushGate{next: s.notifier}
	s.push = push.NewEvaluator(push.Options{Store: s.store, ServerName: s.cfg.ServerName, Log: s.log, Now: s.now,
		Defaults: s.pushDefaults(), MaxStaged: maxStaged, FlushEvery: flushEvery,
		Advanced: func(_ int64, notified []string) {
			s.pushGate.release()
			s.pushers.Notify(notified)
		}})
	s.pushGate.ev = s.push
	// Push gateways are dialled under the same address policy as other
	// servers (ip_range_blacklist, ip_range_whitelist), as in Synapse.
	deny, allow := s.cfg.FederationRanges()
	d := &netguard.Dialer{Policy: netguard.Policy{Deny: deny, Allow: allow, Name: "ip_range_blacklist"}}
	s.pushers = push.NewPool(push.PoolOptions{Store: s.store, Client: push.NewGatewayClient(d), Log: s.log, Now: s.now,
		OmitContent: !s.cfg.PushIncludeContent()})
	s.timeline.Observe(s.pushGate)
}

// runPush runs the evaluator and the pushers until ctx ends (Run).
func (s *Server) runPush(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.pushers.Run(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("pushers stopped", "err", err)
		}
	}()
	if err := s.push.Run(ctx); err != nil && ctx.Err() == nil {
		s.log.Error("push evaluator stopped", "err", err)
	}
	wg.Wait()
}

// pushGate is the timeline's observer in front of the /sync notifier: it
// wakes the evaluator, and holds each event's wake-up of /sync waiters
// until the evaluator has staged the event's notifications, so that a
// woken /sync finds the event and its counts together (spec: "Server
// behaviour"). Without a running evaluator it passes events straight on.
type pushGate struct {
	ev   *push.Evaluator
	next timeline.Observer

	mu   sync.Mutex
	held []*timeline.Persisted
}

func (g *pushGate) EventPersisted(p *timeline.Persisted) {
	g.ev.Wake()
	g.mu.Lock()
	if !g.ev.Running() || g.ev.Evaluated() >= p.Event.StreamPos {
		g.mu.Unlock()
		g.next.EventPersisted(p)
		return
	}
	g.held = append(g.held, heldWake(p))
	g.mu.Unlock()
}

// heldWake is what the notifier (the gate's next) reads of a persisted
// event: its room, type, state key and position, and the state it changed.
// The gate holds that alone, not the event's JSON and parsed PDU: while
// the evaluator lags behind a crowd, hundreds of events wait here.
func heldWake(p *timeline.Persisted) *timeline.Persisted {
	e := p.Event
	return &timeline.Persisted{Event: &storage.Event{EventID: e.EventID, RoomID: e.RoomID, Type: e.Type, StateKey: e.StateKey,
		StreamPos: e.StreamPos}, Changes: p.Changes, Local: p.Local}
}

// release passes on the events the evaluator has finished (all of them
// once it stopped).
func (g *pushGate) release() {
	g.mu.Lock()
	pos, running := g.ev.Evaluated(), g.ev.Running()
	var out []*timeline.Persisted
	keep := g.held[:0]
	for _, p := range g.held {
		if !running || p.Event.StreamPos <= pos {
			out = append(out, p)
		} else {
			keep = append(keep, p)
		}
	}
	clear(g.held[len(keep):])
	g.held = keep
	g.mu.Unlock()
	for _, p := range out {
		g.next.EventPersisted(p)
	}
}

// pushRules returns a user's whole ruleset, as clients see it.
func (s *Server) pushRules(ctx context.Context, userID string) (push.Ruleset, error) {
	stored, err := s.store.PushRulesOf(ctx, userID)
	if err != nil {
		return nil, err
	}
	return push.BuildRuleset(userID, stored, s.pushDefaults()), nil
}

// pushRulesChanged puts the user's new ruleset in their m.push_rules
// account data, so that their next /sync carries it (spec: "Push Rules:
// Events"), and wakes their syncs. The content /sync and GET account_data
// answer is always built from the rules themselves; storing it here only
// takes a position in the account data stream.
func (s *Server) pushRulesChanged(ctx context.Context, userID string) error {
	rs, err := s.pushRules(ctx, userID)
	if err != nil {
		return err
	}
	content, err := json.Marshal(push.Rulesets{Global: rs})
	if err != nil {
		return err
	}
	if _, err := s.store.PutAccountData(ctx, userID, "", "m.push_rules", content); err != nil {
		return err
	}
	s.notifier.notifyUser(userID)
	return nil
}

// CopyPushRulesOnUpgrade gives a user, in newRoomID, the push rules they
// have for oldRoomID: their enabled rules with a room_id condition (or of
// kind room) naming the old room, with the new room in its place and, as
// Synapse names them, the new room's ID as their rule ID. The room upgrade
// calls it for each local member of the old room as they join the new one
// (Synapse copies them then).
func (s *Server) CopyPushRulesOnUpgrade(ctx context.Context, userID, oldRoomID, newRoomID string) error {
	stored, err := s.store.PushRulesOf(ctx, userID)
	if err != nil {
		return err
	}
	copied := 0
	// Rules come highest priority first; each copy is added on top, so go
	// through them lowest first to keep their order. A copy already made
	// (the upgrade copies, then the join does) is left as it is.
	for i := len(stored.Rules) - 1; i >= 0; i-- {
		r, ok := push.RoomRuleCopy(stored.Rules[i], oldRoomID, newRoomID)
		if !ok || slices.ContainsFunc(stored.Rules, func(x storage.PushRule) bool {
			return x.Kind == r.Kind && x.RuleID == r.RuleID && x.Conditions == r.Conditions && x.Actions == r.Actions
		}) {
			continue
		}
		if err := s.store.PutPushRule(ctx, userID, r, "", ""); err != nil {
			return err
		}
		copied++
	}
	if copied == 0 {
		return nil
	}
	return s.pushRulesChanged(ctx, userID)
}

// pushDefaults are the optional server-default rules the config turns on.
func (s *Server) pushDefaults() push.Defaults {
	return push.Defaults{LegacyMentions: s.cfg.Push.LegacyMentionRules, ThreadSubscriptions: s.cfg.ExperimentalFeatures.MSC4306Enabled}
}
