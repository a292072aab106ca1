package storage_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"hearth/server/storage"
)

// TestCheckpointerCopiesTheWAL: the writer leaves checkpoints to the
// checkpointer (checkpoint.go), so without it the pages written below
// would stay in the WAL, well under the writer's own backstop, and the
// database file would not grow.
func TestCheckpointerCopiesTheWAL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hearth.db")
	st, err := storage.Open(context.Background(), storage.Options{SQLitePath: path})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	before := fileSize(t, path)
	ctx := t.Context()
	// Write until the WAL is past the checkpointer's threshold (4 MiB of
	// 4 KiB pages), well under the writer's (32 MiB).
	for pos := int64(1); fileSize(t, path+"-wal") < 6<<20; pos++ {
		var rows []storage.Notification
		for u := range 200 {
			rows = append(rows, storage.Notification{UserID: fmt.Sprintf("@member%03d:hearth.test", u), StreamPos: pos,
				RoomID: "!room:hearth.test", EventID: fmt.Sprintf("$event%d", pos), ThreadID: "main", Actions: `["notify"]`, TS: pos, CumNotif: pos})
		}
		if err := st.RecordNotifications(ctx, pos, rows, nil); err != nil {
			t.Fatal(err)
		}
	}
	if wal := fileSize(t, path+"-wal"); wal < 5<<20 || wal > 30<<20 {
		t.Fatalf("the WAL holds %d bytes, not between the checkpointer's threshold and the writer's", wal)
	}
	deadline := time.Now().Add(10 * time.Second)
	for fileSize(t, path) < before+1<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("database file %d bytes (%d before the writes): the WAL was not checkpointed", fileSize(t, path), before)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}
