package storage

import "sync"

// A /sync reads the aux stream's parts (receipts of the user's rooms, the
// user's account data and to-device messages, device list changes)
// whenever that stream moved, and it moves for everything on it: with a
// room's members marking each message read, every member's long poll
// woke to read all of them, nearly always finding nothing; for a user in
// a thousand rooms the receipts alone were a thousand index searches. So
// the store keeps, per key (a room for receipts, a user for account data
// and to-device messages, one key for device lists), the highest position
// something of that kind may have been written at, and the readers skip
// what has nothing after the reader's position.
//
// A key's mark is raised inside the transaction that writes, before it
// commits, so before its position can become visible (as statedeltas.go's
// mark). Keys without a write since the store opened have no entry: all
// they have is at or below the aux position the store opened at (floor).
// A transaction that rolls back, or rows deleted since, leave the mark
// raised, which only costs a query.
type auxMarks struct {
	mu    sync.RWMutex
	floor int64
	at    map[string]int64
}

// auxMarks lists the store's marks.
func (s *Store) auxMarks() []*auxMarks {
	return []*auxMarks{&s.receiptMarks, &s.accountDataMarks, &s.toDeviceMarks, &s.deviceListMarks}
}

// raise records that something of key is written at pos.
func (m *auxMarks) raise(key string, pos int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.at == nil {
		m.at = map[string]int64{}
	}
	if pos > m.at[key] {
		m.at[key] = pos
	}
}

// after reports whether key may have something written after pos.
func (m *auxMarks) after(key string, pos int64) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return pos < m.floor || m.at[key] > pos
}

// keysAfter lists the keys among keys that may have something written
// after pos.
func (m *auxMarks) keysAfter(keys []string, pos int64) []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if pos < m.floor {
		return keys
	}
	var out []string
	for _, k := range keys {
		if m.at[k] > pos {
			out = append(out, k)
		}
	}
	return out
}

// size is the marks' entries and approximate memory.
func (m *auxMarks) size() (int, int64) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return positionsSize(m.at)
}
