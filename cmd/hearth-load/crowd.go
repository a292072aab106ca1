package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// crowdPhase is the 200-client scenario: -clients members of one room,
// each long-polling /sync and sending once every -interval (starting at a
// random point of the first interval) for -duration. Every member
// receives every other member's messages.
func (t *target) crowdPhase(ctx context.Context, o options) error {
	params := fmt.Sprintf("%d clients in 1 room, each sending every %v, %v%s", o.Clients, o.Interval, o.Duration, o.clientNote())
	fmt.Fprintf(t.log, "  crowd: %s\n", params)
	us, err := t.users(ctx, "crowd", o.Clients)
	if err != nil {
		return err
	}
	room, err := t.sharedRoom(ctx, us)
	if err != nil {
		return err
	}
	d := newDelivery(t.client, room, o, us)
	if err := d.addReceivers(ctx, us, func(i int) int { return i }); err != nil {
		return err
	}
	s := t.watchQuiet()
	start := time.Now()
	end := start.Add(o.Duration)
	took, done := d.measure(ctx, o.Grace, func(ctx context.Context) {
		var wg sync.WaitGroup
		for i := range us {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next := start.Add(rand.N(o.Interval)); next.Before(end) && sleepUntil(ctx, next); next = next.Add(o.Interval) {
					d.send(ctx, i)
				}
			}()
		}
		wg.Wait()
	})
	r := Result{Phase: "crowd", Params: params, Server: s.end()}
	d.report(&r, o.Duration, took, done)
	t.results = append(t.results, r)
	return ctx.Err()
}
