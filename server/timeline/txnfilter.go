package timeline

import (
	"context"
	"hash/maphash"

	"hearth/server/storage"
)

// Client transaction IDs: a send whose ID is new (nearly every send) used
// to read the store first (storage.EventIDByTxn), a read on a connection
// whose page cache every commit empties: 5% of the server's CPU with ten
// senders into one room, and a wait for a reader under load. txnFilter is
// a Bloom filter of every transaction ID stored: when it says "never
// stored", the read is skipped.
//
// It is exact in the direction that matters. A write's ID is added before
// the write counts as ended (inflight.dropTxn), and the filter is read
// under the same lock as the TxnMark taken with it. So an answer "not
// stored" at mark M means no write of the ID ended before M; one queued
// then is in inflight.txns, and one that ends after M is seen by
// checkTxn's endedSince(M), as after a read of the store. Until the IDs
// stored at start are loaded (loadTxnFilter), every answer is "maybe":
// the store is read as before. IDs of writes that failed, and IDs whose
// rows were deleted since (a device deleted, a room purged), stay in the
// filter: a "maybe" is only a read.

const (
	// txnFilterMinBits is the smallest filter: 128 KiB.
	txnFilterMinBits = 1 << 20
	// txnBitsPerID sizes a filter for the IDs stored when it is built:
	// with four probes, about 0.24% of new IDs read the store.
	txnBitsPerID = 16
	// txnFilterReload: a filter holding one ID for fewer than this many
	// bits (its false positives past 2.4%) is built again, twice as big.
	txnFilterReload = 8
	// txnLoadChunk is how many stored IDs one read loads.
	txnLoadChunk = 10000
)

type txnFilter struct {
	bits   []uint64
	ids    int // IDs added, stored ones and new ones
	loaded bool
	seed   maphash.Seed
}

// probes returns the filter's four bit positions for key.
func (f *txnFilter) probes(key string) [4]uint64 {
	h := maphash.String(f.seed, key)
	lo, hi := h&0xffffffff, h>>32|1
	mask := uint64(len(f.bits)*64 - 1)
	var p [4]uint64
	for i := range p {
		p[i] = (lo + uint64(i)*hi) & mask
	}
	return p
}

func (f *txnFilter) add(key string) {
	if f == nil {
		return
	}
	for _, b := range f.probes(key) {
		f.bits[b/64] |= 1 << (b % 64)
	}
	f.ids++
}

// mayHave reports whether key may have been stored.
func (f *txnFilter) mayHave(key string) bool {
	if f == nil || !f.loaded {
		return true
	}
	for _, b := range f.probes(key) {
		if f.bits[b/64]&(1<<(b%64)) == 0 {
			return false
		}
	}
	return true
}

// full reports whether a loaded filter has too many IDs for its size.
func (f *txnFilter) full() bool {
	return f != nil && f.loaded && f.ids*txnFilterReload > len(f.bits)*64
}

// txnFilterBits is the size, a power of two, for n stored IDs.
func txnFilterBits(n int) int {
	bits := txnFilterMinBits
	for bits < n*txnBitsPerID {
		bits *= 2
	}
	return bits
}

// EventIDByTxn returns the event a client's transaction ID already
// produced, or storage.ErrNotFound with the mark to pass as
// NewEvent.TxnChecked. The store is read only when the ID may have been
// stored.
func (t *Timeline) EventIDByTxn(ctx context.Context, sender, deviceID, scope, txnID string) (string, TxnMark, error) {
	key := txnKey(&storage.Event{Sender: sender, SenderDevice: deviceID, TxnScope: scope, TxnID: txnID})
	t.inflight.mu.Lock()
	mark := TxnMark{ends: t.inflight.ends, set: true}
	maybe := t.inflight.filter.mayHave(key)
	t.inflight.mu.Unlock()
	if !maybe {
		return "", mark, storage.ErrNotFound
	}
	id, err := t.store.EventIDByTxn(ctx, sender, deviceID, scope, txnID)
	return id, mark, err
}

// RunTxnFilter builds the transaction ID filter from the IDs stored, then
// builds it again, twice as big, whenever it fills (dropTxn asks), until
// ctx ends. While it builds, every ID is "maybe" stored. A failed build
// is logged and leaves the store read for every send until the next one.
func (t *Timeline) RunTxnFilter(ctx context.Context) {
	for {
		if err := t.loadTxnFilter(ctx); err != nil && ctx.Err() == nil {
			t.log.Warn("timeline: could not load the client transaction IDs; each send reads the store", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.inflight.reload:
		}
	}
}

func (t *Timeline) loadTxnFilter(ctx context.Context) error {
	n, err := t.store.CountTxnIDs(ctx)
	if err != nil {
		return err
	}
	f := &txnFilter{bits: make([]uint64, txnFilterBits(n)/64), seed: maphash.MakeSeed()}
	t.inflight.mu.Lock()
	// From here on every write that ends adds its ID to f; every one that
	// ended before is stored, and read below.
	t.inflight.filter = f
	t.inflight.mu.Unlock()
	var after storage.TxnIDKey
	for {
		keys, err := t.store.TxnIDs(ctx, after, txnLoadChunk)
		if err != nil {
			return err
		}
		t.inflight.mu.Lock()
		for _, k := range keys {
			f.add(txnKey(&storage.Event{Sender: k.UserID, SenderDevice: k.DeviceID, TxnScope: k.Scope, TxnID: k.TxnID}))
		}
		if len(keys) < txnLoadChunk {
			f.loaded = true
			t.inflight.mu.Unlock()
			return nil
		}
		t.inflight.mu.Unlock()
		after = keys[len(keys)-1]
	}
}

// TxnFilterLoaded reports whether the transaction ID filter is built, so
// that EventIDByTxn skips the store for IDs never stored.
func (t *Timeline) TxnFilterLoaded() bool {
	t.inflight.mu.Lock()
	defer t.inflight.mu.Unlock()
	return t.inflight.filter != nil && t.inflight.filter.loaded
}
