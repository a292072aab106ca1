package rooms

import (
	"cmp"
	"crypto/sha1"
	"encoding/hex"
	"slices"
	"strings"
)

// resolveV1 is the state resolution algorithm of room version 1 (rooms
// spec, v1 "State resolution"). It is known to reset state and exists only
// to follow old rooms.
func (r *resolver) resolveV1(states []StateMap) (StateMap, error) {
	res := StateMap{}
	conflicts := map[StateKey][]string{}
	for _, s := range states {
		for k, id := range s {
			if prev, ok := res[k]; ok && prev != id {
				conflicts[k] = append(conflicts[k], prev)
				delete(res, k)
			}
			if list, ok := conflicts[k]; ok {
				if !slices.Contains(list, id) {
					conflicts[k] = append(list, id)
				}
				continue
			}
			res[k] = id
		}
	}
	if len(conflicts) == 0 {
		return res, nil
	}
	keys := make([]StateKey, 0, len(conflicts))
	for k := range conflicts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b StateKey) int {
		return cmp.Or(strings.Compare(a.Type, b.Type), strings.Compare(a.StateKey, b.StateKey))
	})
	type sorted struct {
		e    *Event
		sha1 string
	}
	load := func(ids []string) ([]sorted, error) {
		out := make([]sorted, 0, len(ids))
		for _, id := range ids {
			e, err := r.get(id)
			if err != nil {
				return nil, err
			}
			h := sha1.Sum([]byte(id))
			out = append(out, sorted{e, hex.EncodeToString(h[:])})
		}
		return out, nil
	}
	allowed := func(e *Event) (bool, error) {
		state := StateEvents{}
		for k, id := range res {
			ev, err := r.get(id)
			if err != nil {
				return false, err
			}
			state[k] = ev
		}
		return AuthorizeAgainstState(e, state, nil) == nil, nil
	}
	// Power levels, then join rules, then memberships: ascending depth,
	// descending sha1(event_id); the first is taken, each next one only
	// while it is allowed in the state so far.
	for _, typ := range []string{TypePowerLevels, TypeJoinRules, TypeMember} {
		for _, k := range keys {
			if k.Type != typ {
				continue
			}
			evs, err := load(conflicts[k])
			if err != nil {
				return nil, err
			}
			slices.SortFunc(evs, func(a, b sorted) int {
				return cmp.Or(cmp.Compare(a.e.Depth(), b.e.Depth()), strings.Compare(b.sha1, a.sha1))
			})
			res[k] = evs[0].e.ID()
			for _, s := range evs[1:] {
				ok, err := allowed(s.e)
				if err != nil {
					return nil, err
				}
				if !ok {
					break
				}
				res[k] = s.e.ID()
			}
		}
	}
	// Everything else: the highest depth, lowest sha1(event_id) that is
	// allowed in the resolved state.
	for _, k := range keys {
		if k.Type == TypePowerLevels || k.Type == TypeJoinRules || k.Type == TypeMember {
			continue
		}
		evs, err := load(conflicts[k])
		if err != nil {
			return nil, err
		}
		slices.SortFunc(evs, func(a, b sorted) int {
			return cmp.Or(cmp.Compare(b.e.Depth(), a.e.Depth()), strings.Compare(a.sha1, b.sha1))
		})
		for _, s := range evs {
			ok, err := allowed(s.e)
			if err != nil {
				return nil, err
			}
			if ok {
				res[k] = s.e.ID()
				break
			}
		}
	}
	return res, nil
}
