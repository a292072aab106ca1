package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// sendPhase measures send throughput and latency: for each sender count
// N, N senders into one room, then N senders each into a room of its own.
// (One sender runs once.) Each sender sends one message at a time, as fast as the server answers,
// for -send-time or until -send-max messages in all.
func (t *target) sendPhase(ctx context.Context, o options) error {
	for _, n := range o.Senders {
		us, err := t.users(ctx, fmt.Sprintf("send%d-", n), n)
		if err != nil {
			return err
		}
		room, err := t.sharedRoom(ctx, us)
		if err != nil {
			return err
		}
		shared := make([]string, n)
		for i := range shared {
			shared[i] = room
		}
		if err := t.sendRun(ctx, o, fmt.Sprintf("%d senders, 1 room", n), us, shared); err != nil {
			return err
		}
		if n == 1 {
			continue // one sender into its own room is the run above
		}
		own := make([]string, n)
		err = parallel(ctx, n, 8, func(ctx context.Context, i int) error {
			r, err := t.client.createRoom(ctx, us[i], "private_chat", "load")
			own[i] = r
			return err
		})
		if err != nil {
			return err
		}
		if err := t.sendRun(ctx, o, fmt.Sprintf("%d senders, %d rooms", n, n), us, own); err != nil {
			return err
		}
	}
	return nil
}

// sendRun has us[i] send into rooms[i] until time or count runs out.
func (t *target) sendRun(ctx context.Context, o options, params string, us []*user, rooms []string) error {
	params += fmt.Sprintf(", %v", o.SendTime)
	fmt.Fprintf(t.log, "  send: %s\n", params)
	var budget atomic.Int64
	budget.Store(int64(o.SendMax))
	var failed atomic.Int64
	lat := make([][]time.Duration, len(us))
	var firstErr error
	var errOnce sync.Once
	s := t.watchQuiet()
	start := time.Now()
	deadline := start.Add(o.SendTime)
	var wg sync.WaitGroup
	for i, u := range us {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; time.Now().Before(deadline) && budget.Add(-1) >= 0 && ctx.Err() == nil; seq++ {
				t0 := time.Now()
				err := t.client.send(ctx, u, rooms[i], loadMark{Sender: i, Seq: seq, Sent: t0.UnixMicro()})
				if err != nil {
					failed.Add(1)
					errOnce.Do(func() { firstErr = err })
					continue
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	r := Result{Phase: "send", Params: params, Server: s.end()}
	all := slices.Concat(lat...)
	r.add("messages", float64(len(all)), "")
	r.add("throughput", float64(len(all))/elapsed.Seconds(), "msg/s")
	r.addLatencies("send", all)
	r.add("failed sends", float64(failed.Load()), "")
	if r.Server != nil && len(all) > 0 {
		r.add("server CPU per message", r.Server.CPUSeconds*1000/float64(len(all)), "ms")
		// The work the run left (the push evaluator catching up) is its
		// own: counted here, not in the next run's figures.
		after, took, quiet := t.quiet()
		r.add("server CPU after the last send", after, "s")
		r.add("server busy after the last send", took.Seconds(), "s")
		r.add("server CPU per message, with what came after", (r.Server.CPUSeconds+after)*1000/float64(len(all)), "ms")
		if !quiet {
			r.Notes = append(r.Notes, fmt.Sprintf("the server was still busy %v after the last send", took.Round(time.Millisecond)))
		}
	}
	t.results = append(t.results, r)
	if firstErr != nil {
		fmt.Fprintf(t.log, "  first failed send: %v\n", firstErr)
	}
	if len(all) == 0 {
		return fmt.Errorf("no message was sent: %v", firstErr)
	}
	return ctx.Err()
}
