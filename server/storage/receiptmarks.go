package storage

import "sync"

// A /sync reads the receipts of the user's joined rooms whenever the aux
// stream moved, and it moves for everything on it (presence, to-device
// messages, device lists, account data, any room's receipts): for a user
// in a thousand rooms that was a thousand index searches on every wake-up,
// nearly always finding nothing. So the store keeps, per room, the
// highest position a receipt may have been written at, and ReceiptsBetween
// reads only the rooms with a receipt after the reader's position.
//
// A room's mark is raised inside the transaction that writes the receipt,
// before it commits, so before its position can become visible (as
// statedeltas.go's mark). Rooms without a receipt since the store opened
// have no entry: their receipts are all at or below the aux position the
// store opened at (floor). A transaction that rolls back, or receipts
// deleted with a room, leave the mark raised, which only costs a query.
type receiptMarks struct {
	mu    sync.RWMutex
	floor int64
	rooms map[string]int64
}

// raise records that a receipt of room is written at pos.
func (m *receiptMarks) raise(room string, pos int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.rooms == nil {
		m.rooms = map[string]int64{}
	}
	if pos > m.rooms[room] {
		m.rooms[room] = pos
	}
}

// roomsAfter lists the rooms among rooms that may have a receipt stored
// at a position after pos.
func (m *receiptMarks) roomsAfter(rooms []string, pos int64) []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if pos < m.floor {
		return rooms
	}
	var out []string
	for _, r := range rooms {
		if m.rooms[r] > pos {
			out = append(out, r)
		}
	}
	return out
}
