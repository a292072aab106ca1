package server

import (
	"encoding/json"
	"errors"
	"net/http"

	"hearth/server/matrix"
	"hearth/server/push"
	"hearth/server/storage"
)

// Push rules (spec: Client-Server API, "Push Rules: API"). A user's rules
// are the server-default rules (package push), with the user's changes to
// their enabled state and actions, and the rules the user defined, stored
// per kind in priority order (storage/push_rules.go). Every change also
// moves the user's m.push_rules account data, so their clients' next
// /sync carries the new rules (pushRulesChanged).

// GET /_matrix/client/v3/pushrules/
func (s *Server) getPushRules(w http.ResponseWriter, r *http.Request) error {
	rs, err := s.pushRules(r.Context(), deviceFrom(r.Context()).UserID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, push.Rulesets{Global: rs})
}

// GET /_matrix/client/v3/pushrules/global/
func (s *Server) getPushRulesGlobal(w http.ResponseWriter, r *http.Request) error {
	rs, err := s.pushRules(r.Context(), deviceFrom(r.Context()).UserID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rs)
}

// pushRuleParams reads {kind} and {ruleId}.
func pushRuleParams(r *http.Request) (kind, ruleID string, err error) {
	if kind, err = pathParam(r, "kind"); err != nil {
		return "", "", err
	}
	if ruleID, err = pathParam(r, "ruleId"); err != nil {
		return "", "", err
	}
	if !push.ValidKind(kind) {
		return "", "", matrix.InvalidParam("unknown push rule kind %q", kind)
	}
	if ruleID == "" {
		return "", "", matrix.InvalidParam("missing rule ID")
	}
	return kind, ruleID, nil
}

// findPushRule resolves {kind}/{ruleId} to one of the caller's rules.
func (s *Server) findPushRule(r *http.Request) (*push.Rule, error) {
	kind, ruleID, err := pushRuleParams(r)
	if err != nil {
		return nil, err
	}
	rs, err := s.pushRules(r.Context(), deviceFrom(r.Context()).UserID)
	if err != nil {
		return nil, err
	}
	rule := rs.Find(kind, ruleID)
	if rule == nil {
		return nil, matrix.NotFound("no push rule %s/%s", kind, ruleID)
	}
	return rule, nil
}

// GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}
func (s *Server) getPushRule(w http.ResponseWriter, r *http.Request) error {
	rule, err := s.findPushRule(r)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rule)
}

// GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled
func (s *Server) getPushRuleEnabled(w http.ResponseWriter, r *http.Request) error {
	rule, err := s.findPushRule(r)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]bool{"enabled": rule.Enabled})
}

// GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions
func (s *Server) getPushRuleActions(w http.ResponseWriter, r *http.Request) error {
	rule, err := s.findPushRule(r)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"actions": rule.Actions})
}

// PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}
//
// Creates or replaces a user-defined rule. ?before= or ?after= (another
// user-defined rule of the kind) place it; otherwise it becomes the kind's
// highest-priority rule, as in Synapse. Rule IDs starting with "." belong to
// the server-default rules, which cannot be replaced (only enabled or given
// other actions), and clients cannot make postcontent rules (MSC4306).
func (s *Server) putPushRule(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	kind, ruleID, err := pushRuleParams(r)
	if err != nil {
		return err
	}
	if kind == "postcontent" {
		return matrix.InvalidParam("user-defined rules using postcontent are not accepted")
	}
	if err := push.ValidRuleID(ruleID); err != nil {
		return matrix.InvalidParam("%v", err)
	}
	var req struct {
		Pattern    *string            `json:"pattern"`
		Conditions *[]json.RawMessage `json:"conditions"`
		Actions    *[]json.RawMessage `json:"actions"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	rule := storage.PushRule{Kind: kind, RuleID: ruleID}
	switch kind {
	case "override", "underride":
		if req.Conditions == nil {
			return matrix.MissingParam("missing 'conditions'")
		}
		if err := push.CheckConditions(*req.Conditions); err != nil {
			return matrix.InvalidParam("%v", err)
		}
		raw, _ := json.Marshal(*req.Conditions)
		rule.Conditions = string(raw)
	case "content":
		if req.Pattern == nil {
			return matrix.MissingParam("content rule missing 'pattern'")
		}
		rule.Pattern = *req.Pattern
	}
	if req.Actions == nil {
		return matrix.MissingParam("no actions found")
	}
	if err := push.CheckActions(*req.Actions); err != nil {
		return matrix.InvalidParam("%v", err)
	}
	raw, _ := json.Marshal(*req.Actions)
	rule.Actions = string(raw)
	q := r.URL.Query()
	before, after := q.Get("before"), q.Get("after")
	if before != "" {
		after = "" // Synapse: before wins
	}
	err = s.store.PutPushRule(r.Context(), me.UserID, rule, before, after)
	if errors.Is(err, storage.ErrRuleAnchor) {
		return &matrix.Error{Code: "M_UNKNOWN", Status: http.StatusBadRequest,
			Msg: "before/after rule not found: " + before + after}
	}
	if err != nil {
		return err
	}
	if err := s.pushRulesChanged(r.Context(), me.UserID); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}
//
// Server-default rules cannot be deleted: like unknown rules, 404.
func (s *Server) deletePushRule(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	kind, ruleID, err := pushRuleParams(r)
	if err != nil {
		return err
	}
	err = s.store.DeletePushRule(r.Context(), me.UserID, kind, ruleID)
	if errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("no push rule %s/%s", kind, ruleID)
	}
	if err != nil {
		return err
	}
	if err := s.pushRulesChanged(r.Context(), me.UserID); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled
func (s *Server) putPushRuleEnabled(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Enabled *bool `json:"enabled"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Enabled == nil {
		return matrix.MissingParam("missing 'enabled'")
	}
	return s.changePushRule(w, r, func(userID, kind, ruleID string, isDefault bool) error {
		return s.store.SetPushRuleEnabled(r.Context(), userID, kind, ruleID, isDefault, *req.Enabled)
	})
}

// PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions
func (s *Server) putPushRuleActions(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Actions *[]json.RawMessage `json:"actions"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Actions == nil {
		return matrix.MissingParam("missing 'actions'")
	}
	if err := push.CheckActions(*req.Actions); err != nil {
		return matrix.InvalidParam("%v", err)
	}
	raw, _ := json.Marshal(*req.Actions)
	return s.changePushRule(w, r, func(userID, kind, ruleID string, isDefault bool) error {
		return s.store.SetPushRuleActions(r.Context(), userID, kind, ruleID, isDefault, string(raw))
	})
}

// changePushRule applies a change to an existing rule, user-defined or
// server-default (404 when there is none).
func (s *Server) changePushRule(w http.ResponseWriter, r *http.Request, change func(userID, kind, ruleID string, isDefault bool) error) error {
	me := deviceFrom(r.Context())
	kind, ruleID, err := pushRuleParams(r)
	if err != nil {
		return err
	}
	err = change(me.UserID, kind, ruleID, push.IsDefault(kind, ruleID, s.pushDefaults()))
	if errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("no push rule %s/%s", kind, ruleID)
	}
	if err != nil {
		return err
	}
	if err := s.pushRulesChanged(r.Context(), me.UserID); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}
