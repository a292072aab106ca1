package storage

import (
	"context"
	"fmt"
)

// PendingRedaction is a redaction waiting for the event it redacts.
type PendingRedaction struct {
	Redacts, RedactionID, RoomID, Sender string
	ByPower                              bool
}

// AddPendingRedaction records a redaction whose target this server does
// not have yet.
func (s *Store) AddPendingRedaction(ctx context.Context, p PendingRedaction) error {
	_, err := s.write.ExecContext(ctx, `INSERT INTO pending_redactions (redacts, redaction_id, room_id, sender, by_power)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, p.Redacts, p.RedactionID, p.RoomID, p.Sender, boolInt(p.ByPower))
	if err != nil {
		return fmt.Errorf("storage: add pending redaction: %w", err)
	}
	return nil
}

// TakePendingRedactions returns and forgets the redactions waiting for any
// of ids.
func (s *Store) TakePendingRedactions(ctx context.Context, ids []string) ([]PendingRedaction, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	cond, arg := s.inSet("redacts", 1, ids)
	rows, err := s.read.QueryContext(ctx, `SELECT redacts, redaction_id, room_id, sender, by_power FROM pending_redactions WHERE `+cond, arg)
	if err != nil {
		return nil, fmt.Errorf("storage: pending redactions: %w", err)
	}
	var out []PendingRedaction
	for rows.Next() {
		var p PendingRedaction
		var byPower int
		if err := rows.Scan(&p.Redacts, &p.RedactionID, &p.RoomID, &p.Sender, &byPower); err != nil {
			rows.Close()
			return nil, err
		}
		p.ByPower = byPower != 0
		out = append(out, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(out) == 0 {
		return nil, err
	}
	cond, arg = s.inSet("redacts", 1, ids)
	if _, err := s.write.ExecContext(ctx, `DELETE FROM pending_redactions WHERE `+cond, arg); err != nil {
		return nil, fmt.Errorf("storage: forget pending redactions: %w", err)
	}
	return out, nil
}
