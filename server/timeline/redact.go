package timeline

import (
	"context"
	"errors"
	"strings"

	"hearth/server/rooms"
	"hearth/server/storage"
)

// Received redactions (spec: "Redactions"). From room version 3 on the
// auth rules accept any redaction event; whether it applies to its target
// is the receiving server's decision: it does when the redaction's sender
// may redact anyone's events (the redact power level, in the state before
// the redaction), or when both events' senders are of the same server. It
// applies once this server has both events: a redaction received before
// its target waits in the store (pending_redactions) until the target
// arrives. Applying one replaces the target's stored JSON with its
// redacted form, as local redactions do (server.sendRedaction).

// redaction applies, or keeps for later, an accepted received redaction.
func (rc *receiver) redaction(ctx context.Context, e *rooms.Event, sb *stateBefore) error {
	target := e.Redacts()
	if e.Type() != rooms.TypeRedaction || target == "" {
		return nil
	}
	byPower, err := rc.mayRedactAny(ctx, e.Sender(), sb.ids)
	if err != nil {
		return err
	}
	p := storage.PendingRedaction{Redacts: target, RedactionID: e.ID(), RoomID: e.RoomID(), Sender: e.Sender(), ByPower: byPower}
	te, err := rc.t.store.EventByID(ctx, target)
	if errors.Is(err, storage.ErrNotFound) {
		return rc.t.store.AddPendingRedaction(ctx, p)
	}
	if err != nil {
		return err
	}
	return rc.t.applyRedaction(ctx, rc.rv, te, p)
}

// mayRedactAny reports whether user reaches the redact level in a state.
func (rc *receiver) mayRedactAny(ctx context.Context, user string, ids rooms.StateMap) (bool, error) {
	var want []string
	for _, k := range []storage.StateKey{{Type: rooms.TypeCreate}, {Type: rooms.TypePowerLevels}} {
		if id, ok := ids[k]; ok {
			want = append(want, id)
		}
	}
	found, _, err := rc.lookup(ctx, want)
	if err != nil {
		return false, err
	}
	create, pl := found[ids[storage.StateKey{Type: rooms.TypeCreate}]], found[ids[storage.StateKey{Type: rooms.TypePowerLevels}]]
	if create == nil {
		return false, nil
	}
	levels := rooms.EffectivePowerLevels(rc.rv, pl, create)
	return levels.UserLevel(user) >= levels.Redact, nil
}

// applyPending applies the redactions that waited for events now stored.
func (rc *receiver) applyPending(ctx context.Context, ids []string) error {
	pending, err := rc.t.store.TakePendingRedactions(ctx, ids)
	if err != nil || len(pending) == 0 {
		return err
	}
	for _, p := range pending {
		te, err := rc.t.store.EventByID(ctx, p.Redacts)
		if err != nil {
			return err
		}
		if err := rc.t.applyRedaction(ctx, rc.rv, te, p); err != nil {
			return err
		}
	}
	return nil
}

// applyRedaction redacts the stored target when the redaction applies to
// it.
func (t *Timeline) applyRedaction(ctx context.Context, rv *rooms.RoomVersion, te *storage.Event, p storage.PendingRedaction) error {
	if te.RoomID != p.RoomID || te.RedactedBy != "" || te.Rejected {
		return nil
	}
	if !p.ByPower && serverOf(te.Sender) != serverOf(p.Sender) {
		t.log.Info("timeline: redaction not applied: its sender may not redact events of other servers",
			"redaction", p.RedactionID, "target", te.EventID, "sender", p.Sender)
		return nil
	}
	redacted, err := rooms.Redact(rv, te.JSON)
	if err != nil {
		return err
	}
	if err := t.store.RedactEvent(ctx, te.EventID, p.RedactionID, redacted); err != nil {
		return err
	}
	if te.StateKey != nil {
		// The room's head holds the state event as it was.
		t.Invalidate(te.RoomID)
	}
	return nil
}

func serverOf(userID string) string {
	_, server, _ := strings.Cut(userID, ":")
	return server
}
