package rooms

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
)

// StateMap is room state as event IDs keyed by (type, state_key).
type StateMap map[StateKey]string

// IDs returns the state as event IDs.
func (s StateEvents) IDs() StateMap {
	m := make(StateMap, len(s))
	for k, e := range s {
		m[k] = e.ID()
	}
	return m
}

// EventProvider supplies events by ID for state resolution: every event of
// the state sets and of their auth chains must be available. Rejected
// events are returned with Rejected set.
type EventProvider interface {
	Event(ctx context.Context, id string) (*Event, error)
}

// EventMap is an in-memory EventProvider.
type EventMap map[string]*Event

// Event implements EventProvider.
func (m EventMap) Event(_ context.Context, id string) (*Event, error) {
	if e, ok := m[id]; ok {
		return e, nil
	}
	return nil, fmt.Errorf("rooms: unknown event %s", id)
}

// Add stores events by ID.
func (m EventMap) Add(events ...*Event) {
	for _, e := range events {
		m[e.ID()] = e
	}
}

// ResolveState resolves a set of room states (the states after each of an
// event's prev_events) with the room version's algorithm: state resolution
// v1 for room version 1, v2 for room versions 2–11 and v2.1 for 12 (rooms
// spec, "State resolution").
//
// One deliberate reading: the "full auth chain" of a state set is taken to
// include the set's own events (as Synapse computes the auth difference),
// so an event present in every state set is never part of the auth
// difference.
func ResolveState(ctx context.Context, rv *RoomVersion, states []StateMap, events EventProvider) (StateMap, error) {
	r := &resolver{ctx: ctx, rv: rv, events: events, chains: map[string]map[string]bool{}}
	if rv.StateRes == StateResV1 {
		return r.resolveV1(states)
	}
	return r.resolve(states)
}

type resolver struct {
	ctx    context.Context
	rv     *RoomVersion
	events EventProvider
	chains map[string]map[string]bool
}

func (r *resolver) get(id string) (*Event, error) {
	e, err := r.events.Event(r.ctx, id)
	if err != nil {
		return nil, err
	}
	if e == nil {
		return nil, fmt.Errorf("rooms: missing event %s", id)
	}
	return e, nil
}

// authChain returns the auth chain of an event (its auth events,
// recursively, not including itself).
func (r *resolver) authChain(id string) (map[string]bool, error) {
	if c, ok := r.chains[id]; ok {
		return c, nil
	}
	e, err := r.get(id)
	if err != nil {
		return nil, err
	}
	chain := map[string]bool{}
	for _, a := range e.AuthEventIDs() {
		chain[a] = true
		sub, err := r.authChain(a)
		if err != nil {
			return nil, err
		}
		for x := range sub {
			chain[x] = true
		}
	}
	r.chains[id] = chain
	return chain, nil
}

// partition splits the state sets into the unconflicted state map and the
// full conflicted set (conflicted state set ∪ auth difference, plus the
// conflicted state subgraph for v2.1).
func (r *resolver) partition(states []StateMap) (unconflicted StateMap, full map[string]bool, err error) {
	unconflicted = StateMap{}
	conflicted := map[string]bool{}
	keys := map[StateKey]bool{}
	for _, s := range states {
		for k := range s {
			keys[k] = true
		}
	}
	for k := range keys {
		first, ok := states[0][k]
		same := ok
		for _, s := range states[1:] {
			if v, ok := s[k]; !ok || v != first {
				same = false
			}
		}
		if same {
			unconflicted[k] = first
			continue
		}
		for _, s := range states {
			if v, ok := s[k]; ok {
				conflicted[v] = true
			}
		}
	}
	if len(conflicted) == 0 {
		return unconflicted, conflicted, nil
	}

	// Auth difference.
	full = maps.Clone(conflicted)
	counts := map[string]int{}
	for _, s := range states {
		chain := map[string]bool{}
		for _, id := range s {
			chain[id] = true
			c, err := r.authChain(id)
			if err != nil {
				return nil, nil, err
			}
			for x := range c {
				chain[x] = true
			}
		}
		for x := range chain {
			counts[x]++
		}
	}
	for x, n := range counts {
		if n < len(states) {
			full[x] = true
		}
	}
	if r.rv.StateRes == StateResV21 {
		sub, err := r.conflictedSubgraph(conflicted)
		if err != nil {
			return nil, nil, err
		}
		for x := range sub {
			full[x] = true
		}
	}
	return unconflicted, full, nil
}

func (r *resolver) resolve(states []StateMap) (StateMap, error) {
	if len(states) == 0 {
		return StateMap{}, nil
	}
	unconflicted, full, err := r.partition(states)
	if err != nil {
		return nil, err
	}
	if len(full) == 0 {
		return unconflicted, nil
	}

	// Step 1: power events and their auth chains within the full conflicted set.
	powerSet := map[string]bool{}
	for id := range full {
		e, err := r.get(id)
		if err != nil {
			return nil, err
		}
		if !isPowerEvent(e) {
			continue
		}
		powerSet[id] = true
		c, err := r.authChain(id)
		if err != nil {
			return nil, err
		}
		for x := range c {
			if full[x] {
				powerSet[x] = true
			}
		}
	}
	powerList, err := r.reverseTopologicalPowerOrder(powerSet)
	if err != nil {
		return nil, err
	}

	// Step 2.
	partial := StateMap{}
	if r.rv.StateRes == StateResV2 {
		partial = maps.Clone(unconflicted)
	}
	if err := r.iterativeAuthChecks(partial, powerList); err != nil {
		return nil, err
	}

	// Step 3: the rest by mainline ordering of the resolved power levels.
	var rest []string
	for id := range full {
		if !powerSet[id] {
			rest = append(rest, id)
		}
	}
	rest, err = r.mainlineOrder(partial[StateKey{Type: TypePowerLevels, StateKey: ""}], rest)
	if err != nil {
		return nil, err
	}
	// Step 4.
	if err := r.iterativeAuthChecks(partial, rest); err != nil {
		return nil, err
	}
	// Step 5.
	maps.Copy(partial, unconflicted)
	return partial, nil
}

// isPowerEvent: m.room.power_levels, m.room.join_rules, or a kick/ban
// (membership leave or ban with sender ≠ state_key).
func isPowerEvent(e *Event) bool {
	sk, ok := e.StateKey()
	if !ok {
		return false
	}
	switch e.Type() {
	case TypePowerLevels, TypeJoinRules:
		return sk == ""
	case TypeMember:
		m := e.Membership()
		return (m == MembershipLeave || m == MembershipBan) && sk != e.Sender()
	}
	return false
}

// conflictedSubgraph returns the events on auth_events paths between
// events of the conflicted state set, endpoints included (v2.1).
func (r *resolver) conflictedSubgraph(conflicted map[string]bool) (map[string]bool, error) {
	reach := map[string]bool{} // events reachable from a conflicted event
	for id := range conflicted {
		c, err := r.authChain(id)
		if err != nil {
			return nil, err
		}
		for x := range c {
			reach[x] = true
		}
	}
	memo := map[string]bool{}
	var leadsToConflicted func(id string) (bool, error)
	leadsToConflicted = func(id string) (bool, error) {
		if v, ok := memo[id]; ok {
			return v, nil
		}
		memo[id] = false
		e, err := r.get(id)
		if err != nil {
			return false, err
		}
		found := false
		for _, a := range e.AuthEventIDs() {
			ok := conflicted[a]
			if !ok {
				if ok, err = leadsToConflicted(a); err != nil {
					return false, err
				}
			}
			if ok {
				found = true
			}
		}
		memo[id] = found
		return found, nil
	}
	out := map[string]bool{}
	for x := range reach {
		if conflicted[x] {
			out[x] = true
			continue
		}
		ok, err := leadsToConflicted(x)
		if err != nil {
			return nil, err
		}
		if ok {
			out[x] = true
		}
	}
	for x := range conflicted {
		out[x] = true
	}
	return out, nil
}

// createFor returns the create event governing e: from its auth events
// (v1–11) or its room ID (v12).
func (r *resolver) createFor(e *Event) (*Event, error) {
	if e.IsCreate() {
		return e, nil
	}
	if r.rv.RoomIDFromCreateEvent {
		return r.get("$" + strings.TrimPrefix(e.RoomID(), "!"))
	}
	for _, id := range e.AuthEventIDs() {
		a, err := r.get(id)
		if err != nil {
			return nil, err
		}
		if a.IsCreate() {
			return a, nil
		}
	}
	return nil, nil
}

// senderPower is the sender's power level according to the event's own
// auth events (for the reverse topological power ordering).
func (r *resolver) senderPower(e *Event) (int64, error) {
	create, err := r.createFor(e)
	if err != nil {
		return 0, err
	}
	var pl *Event
	for _, id := range e.AuthEventIDs() {
		a, err := r.get(id)
		if err != nil {
			return 0, err
		}
		if a.Type() == TypePowerLevels && a.Key().StateKey == "" {
			pl = a
		}
	}
	if create == nil && pl == nil {
		return 0, nil
	}
	return EffectivePowerLevels(r.rv, pl, create).UserLevel(e.Sender()), nil
}

func (r *resolver) reverseTopologicalPowerOrder(set map[string]bool) ([]string, error) {
	type node struct {
		e     *Event
		power int64
		in    int
		out   []string
	}
	nodes := make(map[string]*node, len(set))
	for id := range set {
		e, err := r.get(id)
		if err != nil {
			return nil, err
		}
		p, err := r.senderPower(e)
		if err != nil {
			return nil, err
		}
		nodes[id] = &node{e: e, power: p}
	}
	for id, n := range nodes {
		for _, a := range n.e.AuthEventIDs() {
			if an, ok := nodes[a]; ok {
				n.in++
				an.out = append(an.out, id)
			}
		}
	}
	less := func(a, b *node) int {
		return cmp.Or(
			cmp.Compare(b.power, a.power), // greater power first
			cmp.Compare(a.e.OriginServerTS(), b.e.OriginServerTS()),
			strings.Compare(a.e.ID(), b.e.ID()),
		)
	}
	var ready []*node
	for _, n := range nodes {
		if n.in == 0 {
			ready = append(ready, n)
		}
	}
	out := make([]string, 0, len(nodes))
	for len(ready) > 0 {
		i := 0
		for j := 1; j < len(ready); j++ {
			if less(ready[j], ready[i]) < 0 {
				i = j
			}
		}
		n := ready[i]
		ready = slices.Delete(ready, i, i+1)
		out = append(out, n.e.ID())
		for _, c := range n.out {
			cn := nodes[c]
			cn.in--
			if cn.in == 0 {
				ready = append(ready, cn)
			}
		}
	}
	if len(out) != len(nodes) {
		return nil, errors.New("rooms: auth event graph has a cycle")
	}
	return out, nil
}

func (r *resolver) powerLevelsAuthEvent(e *Event) (*Event, error) {
	for _, id := range e.AuthEventIDs() {
		a, err := r.get(id)
		if err != nil {
			return nil, err
		}
		if a.Type() == TypePowerLevels && a.Key().StateKey == "" {
			return a, nil
		}
	}
	return nil, nil
}

func (r *resolver) mainlineOrder(plID string, ids []string) ([]string, error) {
	mainline := map[string]int{}
	if plID != "" {
		p, err := r.get(plID)
		for i := 0; p != nil; i++ {
			if err != nil {
				return nil, err
			}
			mainline[p.ID()] = i
			p, err = r.powerLevelsAuthEvent(p)
		}
		if err != nil {
			return nil, err
		}
	}
	type item struct {
		e   *Event
		pos int
	}
	items := make([]item, 0, len(ids))
	for _, id := range ids {
		e, err := r.get(id)
		if err != nil {
			return nil, err
		}
		pos := math.MaxInt
		p, err := r.powerLevelsAuthEvent(e)
		for p != nil {
			if err != nil {
				return nil, err
			}
			if i, ok := mainline[p.ID()]; ok {
				pos = i
				break
			}
			p, err = r.powerLevelsAuthEvent(p)
		}
		if err != nil {
			return nil, err
		}
		items = append(items, item{e, pos})
	}
	slices.SortFunc(items, func(a, b item) int {
		return cmp.Or(
			cmp.Compare(b.pos, a.pos), // greater mainline position first
			cmp.Compare(a.e.OriginServerTS(), b.e.OriginServerTS()),
			strings.Compare(a.e.ID(), b.e.ID()),
		)
	})
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.e.ID()
	}
	return out, nil
}

// iterativeAuthChecks applies each event to state if it passes the auth
// rules against the state (falling back to its own non-rejected auth
// events for keys the state lacks).
func (r *resolver) iterativeAuthChecks(state StateMap, ids []string) error {
	for _, id := range ids {
		e, err := r.get(id)
		if err != nil {
			return err
		}
		if !e.IsState() {
			continue
		}
		auth := StateEvents{}
		for _, aid := range e.AuthEventIDs() {
			a, err := r.get(aid)
			if err != nil {
				return err
			}
			if !a.Rejected && a.IsState() {
				auth[a.Key()] = a
			}
		}
		keys := e.AuthEventKeys()
		keys = append(keys, StateKey{Type: TypeCreate, StateKey: ""})
		for _, k := range keys {
			if sid, ok := state[k]; ok {
				se, err := r.get(sid)
				if err != nil {
					return err
				}
				auth[k] = se
			}
		}
		if r.rv.RoomIDFromCreateEvent && auth.Get(TypeCreate, "") == nil && !e.IsCreate() {
			if c, err := r.createFor(e); err == nil && c != nil && !c.Rejected {
				auth[StateKey{Type: TypeCreate, StateKey: ""}] = c
			}
		}
		if Authorize(e, auth, nil) == nil {
			state[e.Key()] = e.ID()
		}
	}
	return nil
}
