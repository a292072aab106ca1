package main

import (
	"context"
	"fmt"
	"time"
)

// fanoutPhase measures delivery to R receivers long-polling /sync in one
// room while one sender sends at -fanout-rate for -fanout-time: delivery
// latency, loss, stalled /syncs, and the server's CPU per (message,
// receiver) delivery.
func (t *target) fanoutPhase(ctx context.Context, o options) error {
	for _, n := range o.Receivers {
		params := fmt.Sprintf("%d receivers, %g msg/s, %v%s", n, o.FanoutRate, o.FanoutTime, o.clientNote())
		fmt.Fprintf(t.log, "  fanout: %s\n", params)
		us, err := t.users(ctx, fmt.Sprintf("fan%d-", n), n+1)
		if err != nil {
			return err
		}
		room, err := t.sharedRoom(ctx, us)
		if err != nil {
			return err
		}
		d := newDelivery(t.client, room, o, us[:1])
		if err := d.addReceivers(ctx, us[1:], func(int) int { return -1 }); err != nil {
			return err
		}
		s := t.watchQuiet()
		start := time.Now()
		var sendTime time.Duration
		took, done := d.measure(ctx, o.Grace, func(ctx context.Context) {
			every := time.Duration(float64(time.Second) / o.FanoutRate)
			for next := start; next.Before(start.Add(o.FanoutTime)) && sleepUntil(ctx, next); next = next.Add(every) {
				d.send(ctx, 0)
			}
			sendTime = time.Since(start)
		})
		r := Result{Phase: "fanout", Params: params, Server: s.end()}
		d.report(&r, sendTime, took, done)
		t.results = append(t.results, r)
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}
