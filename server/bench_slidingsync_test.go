package server_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"hearth/server"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// BenchmarkSlidingSync measures simplified sliding sync for a user in
// many rooms with a 20-room range, as Element X asks for its room list:
// "first" is a new connection's first response, "update" the response to
// a message in one room (the message is sent outside the timed part).
// Room counts: HEARTH_BENCH_SLIDING_ROOMS (comma-separated; default
// 1000,5000). Setting up 5,000 rooms takes a few minutes on two cores.
//
//	HEARTH_TEST_POSTGRES=... go test ./server -run '^$' -bench BenchmarkSlidingSync -benchtime 50x
func BenchmarkSlidingSync(b *testing.B) {
	counts := []int{1000, 5000}
	if v := os.Getenv("HEARTH_BENCH_SLIDING_ROOMS"); v != "" {
		counts = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				b.Fatalf("HEARTH_BENCH_SLIDING_ROOMS: %q", v)
			}
			counts = append(counts, n)
		}
	}
	benchEngines(b, func(b *testing.B, e storagetest.Engine) {
		for _, n := range counts {
			b.Run(fmt.Sprintf("rooms=%d", n), func(b *testing.B) {
				benchSlidingSync(b, e, n)
			})
		}
	})
}

func benchSlidingSync(b *testing.B, e storagetest.Engine, n int) {
	// A database of its own for each room count: benchEngines hands every
	// count the same one.
	bundle := servertest.Start(b, storagetest.Another(b, e))
	ctx := context.Background()
	user := benchUser(b, bundle, "reader")
	other := benchUser(b, bundle, "writer")
	// The writer's rooms, which the reader joins; 8 clients at once.
	rooms := make([]id.RoomID, n)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				r, err := other.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: fmt.Sprintf("room %d", i)})
				if err == nil {
					_, err = user.JoinRoomByID(ctx, r.RoomID)
				}
				if err != nil {
					errs <- err
					return
				}
				rooms[i] = r.RoomID
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	body := map[string]any{
		"conn_id": "room-list",
		"lists": map[string]any{"all": map[string]any{
			"ranges":         [][]int{{0, 19}},
			"timeline_limit": 1,
			"required_state": [][]string{{"m.room.name", ""}, {"m.room.avatar", ""}, {"m.room.encryption", ""},
				{"m.room.member", "$LAZY"}, {"m.room.member", "$ME"}, {"m.room.create", ""}, {"m.space.child", "*"}},
			"filters": map[string]any{"not_room_types": []string{"m.space"}},
		}},
		"extensions": map[string]any{"account_data": map[string]any{"enabled": true}, "receipts": map[string]any{"enabled": true},
			"typing": map[string]any{"enabled": true}},
	}
	url := func(pos string) string {
		q := map[string]string{"timeout": "0"}
		if pos != "" {
			q["pos"] = pos
		}
		return user.BuildURLWithQuery(mautrix.ClientURLPath{"unstable", "org.matrix.simplified_msc3575", "sync"}, q)
	}
	do := func(pos string) *ssResp {
		var resp ssResp
		if _, err := user.MakeRequest(ctx, http.MethodPost, url(pos), body, &resp); err != nil {
			b.Fatal(err)
		}
		return &resp
	}
	// Let the push evaluator catch up with the setup's events first:
	// responses wait for it (currentStreamToken).
	pos, err := bundle.Store.MaxStreamPos(ctx)
	if err != nil {
		b.Fatal(err)
	}
	server.PushWait(ctx, bundle.Server, pos)
	b.Run("first", func(b *testing.B) {
		for b.Loop() {
			if r := do(""); len(r.Rooms) != 20 || r.Lists["all"].Count != n {
				b.Fatalf("%d rooms of %d", len(r.Rooms), r.Lists["all"].Count)
			}
		}
	})
	b.Run("update", func(b *testing.B) {
		pos := do("").Pos
		i := 0
		for b.Loop() {
			b.StopTimer()
			room := rooms[i%n]
			i++
			if _, err := other.SendText(ctx, room, "news"); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			r := do(pos)
			if r.Rooms[string(room)] == nil {
				b.Fatal("the bumped room did not come")
			}
			pos = r.Pos
		}
	})
}
