package server_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// searchBenchWords is the vocabulary of the benchmark's messages.
var searchBenchWords = strings.Fields(`apple river stone window garden yellow quiet market engine paper
	silver morning bridge candle forest little window orange planet coffee summer winter music doctor
	letter pocket rabbit island shadow thunder velvet wander basket copper harbor lantern meadow needle
	orchard pepper quartz ribbon saddle timber umbrella valley walnut yonder zephyr anchor blossom canyon`)

// BenchmarkSearch measures POST /search over HTTP with mautrix-go in a
// room of 10,000 messages from 8 senders, each message 8 to 20 words of a
// 50-word vocabulary: a word found in one message ("unique"), in about 1%
// of them ("frequent", 100) and in every one ("everywhere", 10,000), in
// both orders; and the request Element sends (recent order, one event of
// context each side, profiles). The room is filled once per engine, and
// PostgreSQL's statistics are refreshed after, as autovacuum would.
func BenchmarkSearch(b *testing.B) {
	benchEngines(b, func(b *testing.B, e storagetest.Engine) {
		bundle := servertest.Start(b, e)
		ctx := context.Background()
		owner := benchUser(b, bundle, "owner")
		room, err := owner.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			b.Fatal(err)
		}
		const messages, senders = 10000, 8
		start := time.Now()
		var wg sync.WaitGroup
		for g := range senders {
			cli := benchUser(b, bundle, fmt.Sprintf("sender%d", g))
			if _, err := cli.JoinRoomByID(ctx, room.RoomID); err != nil {
				b.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(g), 1))
				for i := g; i < messages; i += senders {
					words := []string{"everywhere"}
					for range 8 + rng.IntN(12) {
						words = append(words, searchBenchWords[rng.IntN(len(searchBenchWords))])
					}
					if i%100 == 50 {
						words = append(words, "frequent")
					}
					if i == messages/2 {
						words = append(words, "unique")
					}
					rng.Shuffle(len(words), func(a, c int) { words[a], words[c] = words[c], words[a] })
					if _, err := cli.SendText(ctx, room.RoomID, strings.Join(words, " ")); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if b.Failed() {
			return
		}
		b.Logf("%s: filled the room with %d messages in %v", e.Name, messages, time.Since(start).Round(time.Millisecond))
		if e.Name == "postgres" {
			// As autovacuum would, within a minute: right after the
			// burst, the planner's statistics still describe an empty
			// room, and reading a result's context costs several times
			// more (see the README).
			analyze(b, e.Options.Postgres)
		}
		for _, tc := range []struct {
			name, term, order string
			want              int
			context           bool
		}{
			{"unique/rank", "unique", "rank", 1, false},
			{"unique/recent", "unique", "recent", 1, false},
			{"frequent/rank", "frequent", "rank", 100, false},
			{"frequent/recent", "frequent", "recent", 100, false},
			{"everywhere/rank", "everywhere", "rank", messages, false},
			{"everywhere/recent", "everywhere", "recent", messages, false},
			{"frequent/element", "frequent", "recent", 100, true},
		} {
			b.Run(tc.name, func(b *testing.B) {
				req := &mautrix.ReqSearch{SearchTerm: tc.term, OrderBy: tc.order, Filter: &mautrix.FilterPart{Rooms: []id.RoomID{room.RoomID}}}
				if tc.context {
					req.EventContext = mautrix.SearchEventContext{BeforeLimit: 1, AfterLimit: 1, IncludeProfile: true}
				}
				for b.Loop() {
					resp, err := owner.Search(ctx, req)
					if err != nil {
						b.Fatal(err)
					}
					if resp.Count != tc.want || len(resp.Results) != min(tc.want, 10) {
						b.Fatalf("%s: count %d, %d results", tc.term, resp.Count, len(resp.Results))
					}
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/search")
			})
		}
	})
}

// analyze refreshes PostgreSQL's statistics of the database at dsn.
func analyze(tb testing.TB, dsn string) {
	tb.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`ANALYZE`); err != nil {
		tb.Fatal(err)
	}
}
