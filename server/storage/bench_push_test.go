package storage_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// BenchmarkRecordNotifications measures the push evaluator's write for
// one message in a room of 200 local members: 199 notification rows and
// their thread heads (docs/push.md), on SQLite and, with
// HEARTH_TEST_POSTGRES set, on PostgreSQL. cpu-us/op is this process's
// CPU time per message (user and system, so SQLite's WAL writes count),
// which a busy machine disturbs less than ns/op; PostgreSQL's work is in
// its server, so there ns/op is the figure.
func BenchmarkRecordNotifications(b *testing.B) {
	engines := []string{"sqlite"}
	if os.Getenv(storagetest.EnvPostgres) != "" {
		engines = append(engines, "postgres")
	}
	for _, engine := range engines {
		for _, perStep := range []int{1, 8} {
			b.Run(fmt.Sprintf("%s/events-per-step=%d", engine, perStep), func(b *testing.B) {
				benchRecordNotifications(b, engine, perStep)
			})
		}
	}
}

func benchRecordNotifications(b *testing.B, engine string, perStep int) {
	opts := storage.Options{SQLitePath: filepath.Join(b.TempDir(), "hearth.db")}
	if engine == "postgres" {
		opts = storage.Options{Postgres: storagetest.FreshSchema(b, os.Getenv(storagetest.EnvPostgres)), MaxConns: 8}
	}
	st, err := storage.Open(context.Background(), opts)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	const members = 200
	cum := make([]int64, members)
	pos := int64(0)
	cpu0 := cpuTime()
	n := 0
	for b.Loop() {
		var rows []storage.Notification
		heads := map[int]storage.ThreadHead{}
		for range perStep {
			pos++
			for u := 1; u < members; u++ {
				cum[u]++
				user := fmt.Sprintf("@member%03d:hearth.test", u)
				rows = append(rows, storage.Notification{UserID: user, StreamPos: pos, RoomID: "!room:hearth.test",
					EventID: fmt.Sprintf("$event%d", pos), ThreadID: "main", Actions: `["notify"]`, TS: pos, CumNotif: cum[u]})
				heads[u] = storage.ThreadHead{UserID: user, RoomID: "!room:hearth.test", ThreadID: "main", StreamPos: pos, CumNotif: cum[u]}
			}
		}
		hs := make([]storage.ThreadHead, 0, len(heads))
		for _, h := range heads {
			hs = append(hs, h)
		}
		if err := st.RecordNotifications(ctx, pos, rows, hs); err != nil {
			b.Fatal(err)
		}
		n += perStep
	}
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(n), "cpu-us/event")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
