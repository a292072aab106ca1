package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"hearth/server"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
	"hearth/server/timeline"
)

// BenchmarkPushEvaluate1000Members measures the push evaluator on a message
// in a room of 1,000 local members: from the message's persistence to its
// 999 notifications recorded (every member's rules run, each notified;
// docs/push.md). eval-ms/op is that wait alone; ns/op adds the send.
func BenchmarkPushEvaluate1000Members(b *testing.B) {
	benchEngines(b, func(b *testing.B, e storagetest.Engine) {
		bundle := servertest.Start(b, e)
		ctx := context.Background()
		cli := benchUser(b, bundle, "sender")
		room, err := cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			b.Fatal(err)
		}
		tl := bundle.Server.Timeline()
		var last int64
		joinStart := time.Now()
		for start := 0; start < 999; start += 100 {
			var joins []timeline.NewEvent
			for i := start; i < min(start+100, 999); i++ {
				u := fmt.Sprintf("@member%d:hearth.test", i)
				joins = append(joins, timeline.NewEvent{Type: "m.room.member", StateKey: &u, Sender: u,
					Content: map[string]any{"membership": "join", "displayname": fmt.Sprintf("Member %d", i)}})
			}
			evs, err := tl.Send(ctx, string(room.RoomID), joins...)
			if err != nil {
				b.Fatal(err)
			}
			last = evs[len(evs)-1].StreamPos
		}
		// The joins are evaluated too (each changes the room a little).
		server.PushWait(ctx, bundle.Server, last)
		joining := time.Since(joinStart)
		var waited time.Duration
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			evs, err := tl.Send(ctx, string(room.RoomID), timeline.NewEvent{Type: "m.room.message", Sender: string(cli.UserID),
				Content: map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("message %d", i)}})
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			server.PushWait(ctx, bundle.Server, evs[0].StreamPos)
			waited += time.Since(start)
		}
		b.ReportMetric(float64(waited.Microseconds())/1000/float64(b.N), "eval-ms/op")
		b.ReportMetric(float64(joining.Milliseconds()), "ms-for-999-joins")
	})
}
