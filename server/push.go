package server

import (
	"context"
	"encoding/json"

	"hearth/server/push"
)

// Push rules as clients see them, kept in step with the m.push_rules
// account data (package push merges and evaluates them). The handlers are
// in pushrules.go.

// pushRules returns a user's whole ruleset, as clients see it.
func (s *Server) pushRules(ctx context.Context, userID string) (push.Ruleset, error) {
	stored, err := s.store.PushRulesOf(ctx, userID)
	if err != nil {
		return nil, err
	}
	return push.BuildRuleset(userID, stored, s.cfg.Push.LegacyMentionRules), nil
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
	// through them lowest first to keep their order.
	for i := len(stored.Rules) - 1; i >= 0; i-- {
		r, ok := push.RoomRuleCopy(stored.Rules[i], oldRoomID, newRoomID)
		if !ok {
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
