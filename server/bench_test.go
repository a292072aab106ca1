package server_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"hearth/server/servertest"
	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// Benchmarks run the real server over HTTP with the mautrix client, once
// per storage engine (PostgreSQL when HEARTH_TEST_POSTGRES is set). Run
// them with `make bench`.

func benchEngines(b *testing.B, fn func(b *testing.B, e storagetest.Engine)) {
	b.Run("sqlite", func(b *testing.B) {
		fn(b, storagetest.Engine{Name: "sqlite", Options: storage.Options{SQLitePath: filepath.Join(b.TempDir(), "hearth.db")}})
	})
	b.Run("postgres", func(b *testing.B) {
		dsn := os.Getenv(storagetest.EnvPostgres)
		if dsn == "" {
			b.Skip("PostgreSQL run skipped: " + storagetest.EnvPostgres + " is not set")
		}
		fn(b, storagetest.Engine{Name: "postgres", Options: storage.Options{Postgres: storagetest.FreshSchema(b, dsn), MaxConns: 8}})
	})
}

func benchUser(tb testing.TB, bundle *servertest.Bundle, name string) *mautrix.Client {
	tb.Helper()
	anon, err := mautrix.NewClient(bundle.URL, "", "")
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := anon.RegisterDummy(context.Background(), &mautrix.ReqRegister[any]{Username: name, Password: "bench password"})
	if err != nil {
		tb.Fatalf("register %s: %v", name, err)
	}
	cli, err := mautrix.NewClient(bundle.URL, resp.UserID, resp.AccessToken)
	if err != nil {
		tb.Fatal(err)
	}
	return cli
}

// BenchmarkSend measures message sends, one HTTP request each, from 8
// concurrent clients into one room.
func BenchmarkSend(b *testing.B) {
	benchEngines(b, func(b *testing.B, e storagetest.Engine) {
		bundle := servertest.Start(b, e)
		ctx := context.Background()
		cli := benchUser(b, bundle, "sender")
		room, err := cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			b.Fatal(err)
		}
		b.SetParallelism(4) // 4 × GOMAXPROCS(2) = 8 senders
		b.ResetTimer()
		start, cpuStart := time.Now(), processCPU(b)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := cli.SendText(ctx, room.RoomID, "benchmark message"); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		// The server's and the clients' CPU together: a busy machine
		// disturbs it less than events/s.
		b.ReportMetric(float64((processCPU(b)-cpuStart).Microseconds())/float64(b.N), "cpu-us/event")
	})
}

// BenchmarkSyncFanout measures how long after a send each member's
// long-polling /sync returns with the message: p50 and p99 over all
// members and iterations, with 20 and with 100 members. cpu-ms/delivery is
// the process's CPU time (server and the in-process clients together) per
// (message, member) delivery; `make load` measures the server's alone.
func BenchmarkSyncFanout(b *testing.B) {
	for _, members := range []int{20, 100} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			benchEngines(b, func(b *testing.B, e storagetest.Engine) { benchSyncFanout(b, e, members) })
		})
	}
}

func benchSyncFanout(b *testing.B, e storagetest.Engine, members int) {
	bundle := servertest.Start(b, e)
	ctx := context.Background()
	sender := benchUser(b, bundle, "sender")
	room, err := sender.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		b.Fatal(err)
	}
	clients := make([]*mautrix.Client, members)
	tokens := make([]string, members)
	for i := range clients {
		clients[i] = benchUser(b, bundle, fmt.Sprintf("member%d", i))
		if _, err := clients[i].JoinRoomByID(ctx, room.RoomID); err != nil {
			b.Fatal(err)
		}
	}
	for i := range clients {
		resp, err := clients[i].FullSyncRequest(ctx, mautrix.ReqSync{})
		if err != nil {
			b.Fatal(err)
		}
		tokens[i] = resp.NextBatch
	}
	var latencies []time.Duration
	var mu sync.Mutex
	cpuStart := processCPU(b)
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		var wg sync.WaitGroup
		ready := make(chan struct{}, members)
		var sent time.Time
		var sentMu sync.RWMutex
		sentMu.Lock()
		for i := range clients {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				since := tokens[i]
				ready <- struct{}{}
				for {
					resp, err := clients[i].FullSyncRequest(ctx, mautrix.ReqSync{Since: since, Timeout: 30000})
					if err != nil {
						b.Error(err)
						return
					}
					since = resp.NextBatch
					if j, ok := resp.Rooms.Join[room.RoomID]; ok && hasMessage(j.Timeline.Events) {
						sentMu.RLock()
						d := time.Since(sent)
						sentMu.RUnlock()
						mu.Lock()
						latencies = append(latencies, d)
						mu.Unlock()
						tokens[i] = since
						return
					}
				}
			}(i)
		}
		for range clients {
			<-ready
		}
		time.Sleep(20 * time.Millisecond) // let the requests reach their wait
		sent = time.Now()
		sentMu.Unlock()
		if _, err := sender.SendText(ctx, room.RoomID, "fan out"); err != nil {
			b.Fatal(err)
		}
		wg.Wait()
	}
	b.StopTimer()
	if len(latencies) > 0 {
		sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
		p := func(q float64) float64 {
			return float64(latencies[int(q*float64(len(latencies)-1))].Microseconds()) / 1000
		}
		b.ReportMetric(p(0.50), "p50-ms")
		b.ReportMetric(p(0.99), "p99-ms")
		b.ReportMetric(float64((processCPU(b)-cpuStart).Microseconds())/1000/float64(len(latencies)), "cpu-ms/delivery")
	}
}

// processCPU is the user and system CPU time this process has used.
func hasMessage(evs []*event.Event) bool {
	for _, e := range evs {
		if e.Type == event.EventMessage {
			return true
		}
	}
	return false
}

// BenchmarkInitialSync50Rooms measures an initial /sync for a user in 50
// rooms with 20 messages each.
func BenchmarkInitialSync50Rooms(b *testing.B) { benchInitialSync(b, 50) }

// BenchmarkInitialSync200Rooms is BenchmarkInitialSync50Rooms for 200
// rooms: the cost per room of an initial sync built from batched reads
// should not grow with the number of rooms.
func BenchmarkInitialSync200Rooms(b *testing.B) { benchInitialSync(b, 200) }

// processCPU is the user and system CPU time this process has used.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchInitialSync(b *testing.B, nRooms int) {
	benchEngines(b, func(b *testing.B, e storagetest.Engine) {
		bundle := servertest.Start(b, e)
		ctx := context.Background()
		cli := benchUser(b, bundle, "busy")
		for r := 0; r < nRooms; r++ {
			room, err := cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: fmt.Sprintf("room %d", r)})
			if err != nil {
				b.Fatal(err)
			}
			for m := 0; m < 20; m++ {
				if _, err := cli.SendText(ctx, room.RoomID, "history"); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ResetTimer()
		cpu0 := processCPU(b)
		for n := 0; n < b.N; n++ {
			resp, err := cli.FullSyncRequest(ctx, mautrix.ReqSync{})
			if err != nil {
				b.Fatal(err)
			}
			if len(resp.Rooms.Join) != nRooms {
				b.Fatalf("initial sync has %d rooms, want %d", len(resp.Rooms.Join), nRooms)
			}
		}
		// CPU (server and client: one process) tells more than wall time
		// on a busy machine.
		b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/op")
	})
}
