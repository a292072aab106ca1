package storage_test

import (
	"testing"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// TestPushPositionOnlyMovesForward: an evaluator that stops while its last
// batch committed without its knowing writes its older position on the
// way out; that must not move the stored position back, or the next
// evaluator records the same notifications again and fails on their keys
// (TestSyncSurvivesRestart's flake on PostgreSQL).
func TestPushPositionOnlyMovesForward(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := t.Context()
		if err := st.RecordNotifications(ctx, 9, nil, nil); err != nil {
			t.Fatal(err)
		}
		if err := st.SetPushPosition(ctx, 7); err != nil {
			t.Fatal(err)
		}
		if pos, err := st.PushPosition(ctx); err != nil || pos != 9 {
			t.Fatalf("position after an older write: %d, %v; want 9", pos, err)
		}
		if err := st.SetPushPosition(ctx, 12); err != nil {
			t.Fatal(err)
		}
		if pos, err := st.PushPosition(ctx); err != nil || pos != 12 {
			t.Fatalf("position after a newer write: %d, %v; want 12", pos, err)
		}
	})
}
