package storage

import (
	"context"
	"fmt"
	"sync"
)

// Sliding sync orders a user's rooms by their bump stamps, and every
// response reads the stamps of all of them: for a user in 1,000 rooms a
// query of 1,000 rows, on every update, was half of the response's CPU.
// The store keeps every room's stamp in memory instead, as stored: loaded
// when it opens (one row a room), raised once a batch that bumps a room
// has committed (before its positions become visible, so a reader that
// sees an event finds its room's stamp raised), and dropped with a purged
// room's rows. Stamps only move forward, so raising is taking the larger.
type bumpStamps struct {
	mu    sync.RWMutex
	rooms map[string]int64
}

// loadBumpStamps reads every room's stamp.
func (s *Store) loadBumpStamps(ctx context.Context) error {
	rows, err := s.write.QueryContext(ctx, `SELECT room_id, stream_ordering FROM room_bump_stamps`)
	if err != nil {
		return fmt.Errorf("storage: read bump stamps: %w", err)
	}
	defer rows.Close()
	b := &s.bumps
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rooms = map[string]int64{}
	for rows.Next() {
		var room string
		var pos int64
		if err := rows.Scan(&room, &pos); err != nil {
			return fmt.Errorf("storage: scan bump stamp: %w", err)
		}
		b.rooms[room] = pos
	}
	return rows.Err()
}

// raise records stamps committed.
func (b *bumpStamps) raise(stamps map[string]int64) {
	if len(stamps) == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for room, pos := range stamps {
		if old, ok := b.rooms[room]; !ok || pos > old {
			b.rooms[room] = pos
		}
	}
}

// drop forgets a purged room's stamp.
func (b *bumpStamps) drop(room string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.rooms, room)
}

// size is the rooms held and their estimated bytes, for the caches page.
func (b *bumpStamps) size() (int, int64) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return positionsSize(b.rooms)
}

// positionEntryBytes estimates a map entry beside its key's bytes.
const positionEntryBytes = 48

// positionsSize is the entries of a map of stream positions by string
// (bump stamps, aux marks) and their estimated bytes.
func positionsSize(m map[string]int64) (int, int64) {
	n := int64(0)
	for k := range m {
		n += int64(len(k)) + positionEntryBytes
	}
	return len(m), n
}

// BumpStamps returns the bump stamps of the rooms (rooms without a bump
// event are absent), from memory.
func (s *Store) BumpStamps(_ context.Context, roomIDs []string) (map[string]int64, error) {
	out := make(map[string]int64, len(roomIDs))
	s.bumps.mu.RLock()
	defer s.bumps.mu.RUnlock()
	for _, r := range roomIDs {
		if pos, ok := s.bumps.rooms[r]; ok {
			out[r] = pos
		}
	}
	return out, nil
}
