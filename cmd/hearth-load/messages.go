package main

import (
	"context"
	"fmt"
	"time"

	"github.com/tidwall/gjson"
)

// messagesPhase measures /messages pagination: -page-runs times, page
// backwards through a room of -page-messages messages, -page-limit events
// a request, from the newest to the room's creation.
func (t *target) messagesPhase(ctx context.Context, o options) error {
	params := fmt.Sprintf("%d messages, %d a page, %d runs", o.PageMessages, o.PageLimit, o.PageRuns)
	fmt.Fprintf(t.log, "  messages: %s\n", params)
	us, err := t.users(ctx, "page", 1)
	if err != nil {
		return err
	}
	u := us[0]
	room, err := t.client.createRoom(ctx, u, "private_chat", "history")
	if err != nil {
		return err
	}
	const writers = 4
	err = parallel(ctx, writers, writers, func(ctx context.Context, w int) error {
		for m := w; m < o.PageMessages; m += writers {
			if err := t.client.send(ctx, u, room, loadMark{Sender: w, Seq: m, Sent: time.Now().UnixMicro()}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s := t.watchQuiet()
	var lat []time.Duration
	events := 0
	start := time.Now()
	for range o.PageRuns {
		from, seen := "", 0
		for {
			t0 := time.Now()
			b, err := t.client.messages(ctx, u, room, from, "", o.PageLimit)
			if err != nil {
				return err
			}
			lat = append(lat, time.Since(t0))
			chunk := gjson.GetBytes(b, "chunk").Array()
			seen += len(chunk)
			from = gjson.GetBytes(b, "end").String()
			if len(chunk) == 0 || from == "" {
				break
			}
		}
		if seen < o.PageMessages {
			return fmt.Errorf("paginated %d events, want at least the %d messages", seen, o.PageMessages)
		}
		events += seen
	}
	elapsed := time.Since(start)
	r := Result{Phase: "messages", Params: params, Server: s.end()}
	r.add("requests", float64(len(lat)), "")
	r.addLatencies("page", lat)
	r.add("events paginated", float64(events)/elapsed.Seconds(), "events/s")
	if r.Server != nil {
		r.add("server CPU per page", r.Server.CPUSeconds*1000/float64(len(lat)), "ms")
	}
	t.results = append(t.results, r)
	return nil
}
