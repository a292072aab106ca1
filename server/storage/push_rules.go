package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Push rules (push_rules, push_rule_defaults): what a user defined and what
// they changed of the server-default rules. Package push merges them with
// the defaults; this file only stores rows. Reads go through a cache that
// every write here invalidates after its transaction: the evaluator reads
// the rules of every member of a room for every event.

// PushRule is one rule a user defined. Conditions and Actions are JSON
// arrays ("" for the conditions of content, room and sender rules).
type PushRule struct {
	Kind       string
	RuleID     string
	Priority   int64
	Pattern    string
	Conditions string
	Actions    string
	Enabled    bool
}

// PushRuleDefault is a user's change to a server-default rule: a nil
// Enabled or empty Actions keeps the default's.
type PushRuleDefault struct {
	Kind    string
	RuleID  string
	Enabled *bool
	Actions string
}

// PushRules is everything stored about a user's push rules. Rules are
// ordered by kind, then priority, highest first. Values handed out are
// shared with the cache: callers must not modify them.
type PushRules struct {
	Rules    []PushRule
	Defaults []PushRuleDefault
}

// ErrRuleAnchor is returned when a rule is placed before or after a rule
// of its kind that does not exist.
var ErrRuleAnchor = errors.New("storage: the rule named by before or after does not exist")

// PushRulesOf returns a user's stored push rules (empty when none).
func (s *Store) PushRulesOf(ctx context.Context, userID string) (*PushRules, error) {
	return s.c.pushRules.GetOrLoad(userID, func() (*PushRules, error) {
		out := &PushRules{}
		rows, err := s.read.QueryContext(ctx, `SELECT kind, rule_id, priority, COALESCE(pattern, ''), COALESCE(conditions, ''), actions, enabled
			FROM push_rules WHERE user_id = $1 ORDER BY kind, priority DESC, rule_id`, userID)
		if err != nil {
			return nil, fmt.Errorf("storage: push rules of %s: %w", userID, err)
		}
		for rows.Next() {
			var r PushRule
			var enabled int
			if err := rows.Scan(&r.Kind, &r.RuleID, &r.Priority, &r.Pattern, &r.Conditions, &r.Actions, &enabled); err != nil {
				rows.Close()
				return nil, fmt.Errorf("storage: scan push rule: %w", err)
			}
			r.Enabled = enabled != 0
			out.Rules = append(out.Rules, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		rows, err = s.read.QueryContext(ctx, `SELECT kind, rule_id, enabled, COALESCE(actions, '') FROM push_rule_defaults WHERE user_id = $1`, userID)
		if err != nil {
			return nil, fmt.Errorf("storage: push rule defaults of %s: %w", userID, err)
		}
		defer rows.Close()
		for rows.Next() {
			var d PushRuleDefault
			var enabled sql.NullInt64
			if err := rows.Scan(&d.Kind, &d.RuleID, &enabled, &d.Actions); err != nil {
				return nil, fmt.Errorf("storage: scan push rule default: %w", err)
			}
			if enabled.Valid {
				b := enabled.Int64 != 0
				d.Enabled = &b
			}
			out.Defaults = append(out.Defaults, d)
		}
		return out, rows.Err()
	})
}

// PutPushRule creates or replaces a user-defined rule. With before (or
// after) it takes the place just above (below) that rule of its kind,
// which must exist (else ErrRuleAnchor); otherwise it becomes the kind's
// highest-priority rule, as Synapse places it. A replaced rule keeps its
// enabled state; a new one is enabled.
func (s *Store) PutPushRule(ctx context.Context, userID string, r PushRule, before, after string) error {
	defer s.c.pushRules.Remove(userID)
	return s.tx(ctx, func(tx *sql.Tx) error {
		enabled := 1
		var was int
		switch err := tx.QueryRowContext(ctx, `SELECT enabled FROM push_rules WHERE user_id = $1 AND kind = $2 AND rule_id = $3`,
			userID, r.Kind, r.RuleID).Scan(&was); {
		case err == nil:
			enabled = was
			if _, err := tx.ExecContext(ctx, `DELETE FROM push_rules WHERE user_id = $1 AND kind = $2 AND rule_id = $3`,
				userID, r.Kind, r.RuleID); err != nil {
				return fmt.Errorf("storage: replace push rule: %w", err)
			}
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("storage: read push rule: %w", err)
		}
		var prio int64
		if anchor := before + after; anchor != "" {
			var base int64
			err := tx.QueryRowContext(ctx, `SELECT priority FROM push_rules WHERE user_id = $1 AND kind = $2 AND rule_id = $3`,
				userID, r.Kind, anchor).Scan(&base)
			if errors.Is(err, sql.ErrNoRows) {
				return ErrRuleAnchor
			}
			if err != nil {
				return fmt.Errorf("storage: read push rule: %w", err)
			}
			// Higher priority goes first: before the anchor is one above
			// it, after it takes the anchor's place; what is at or above
			// that place moves up one to make room.
			prio = base
			if before != "" {
				prio = base + 1
			}
			if _, err := tx.ExecContext(ctx, `UPDATE push_rules SET priority = priority + 1 WHERE user_id = $1 AND kind = $2 AND priority >= $3`,
				userID, r.Kind, prio); err != nil {
				return fmt.Errorf("storage: make room for push rule: %w", err)
			}
		} else {
			var top sql.NullInt64
			if err := tx.QueryRowContext(ctx, `SELECT MAX(priority) FROM push_rules WHERE user_id = $1 AND kind = $2`,
				userID, r.Kind).Scan(&top); err != nil {
				return fmt.Errorf("storage: read push rule priorities: %w", err)
			}
			if top.Valid {
				prio = top.Int64 + 1
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO push_rules (user_id, kind, rule_id, priority, pattern, conditions, actions, enabled)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			userID, r.Kind, r.RuleID, prio, nullStr(r.Pattern), nullStr(r.Conditions), r.Actions, enabled)
		if err != nil {
			return fmt.Errorf("storage: put push rule: %w", err)
		}
		return nil
	})
}

// DeletePushRule deletes a user-defined rule, or returns ErrNotFound.
func (s *Store) DeletePushRule(ctx context.Context, userID, kind, ruleID string) error {
	defer s.c.pushRules.Remove(userID)
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM push_rules WHERE user_id = $1 AND kind = $2 AND rule_id = $3`, userID, kind, ruleID)
		if err != nil {
			return fmt.Errorf("storage: delete push rule: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// SetPushRuleEnabled enables or disables a rule: a user-defined one
// (ErrNotFound when it does not exist) or, with isDefault, a
// server-default one (the caller checked it exists).
func (s *Store) SetPushRuleEnabled(ctx context.Context, userID, kind, ruleID string, isDefault, enabled bool) error {
	if isDefault {
		return s.setPushRuleDefault(ctx, userID, kind, ruleID, `enabled`, boolInt(enabled))
	}
	return s.updatePushRule(ctx, userID, kind, ruleID, `enabled`, boolInt(enabled))
}

// SetPushRuleActions replaces a rule's actions (a JSON array), as
// SetPushRuleEnabled does its enabled state.
func (s *Store) SetPushRuleActions(ctx context.Context, userID, kind, ruleID string, isDefault bool, actions string) error {
	if isDefault {
		return s.setPushRuleDefault(ctx, userID, kind, ruleID, `actions`, actions)
	}
	return s.updatePushRule(ctx, userID, kind, ruleID, `actions`, actions)
}

// updatePushRule sets one column of a user-defined rule.
func (s *Store) updatePushRule(ctx context.Context, userID, kind, ruleID, column string, v any) error {
	defer s.c.pushRules.Remove(userID)
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE push_rules SET `+column+` = $1 WHERE user_id = $2 AND kind = $3 AND rule_id = $4`,
			v, userID, kind, ruleID)
		if err != nil {
			return fmt.Errorf("storage: update push rule: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// setPushRuleDefault records one change to a server-default rule.
func (s *Store) setPushRuleDefault(ctx context.Context, userID, kind, ruleID, column string, v any) error {
	defer s.c.pushRules.Remove(userID)
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO push_rule_defaults (user_id, kind, rule_id, `+column+`) VALUES ($1, $2, $3, $4)
			ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET `+column+` = excluded.`+column, userID, kind, ruleID, v)
		if err != nil {
			return fmt.Errorf("storage: change default push rule: %w", err)
		}
		return nil
	})
}
