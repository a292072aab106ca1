package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/tidwall/gjson"
)

// initSyncPhase measures an initial /sync (no token, no filter: the
// whole account) for one user in each of -init-rooms rooms with
// -init-messages messages each. The rooms grow in turn: the user of the
// 200-room run is the one of the 50-room run with 150 more rooms.
func (t *target) initSyncPhase(ctx context.Context, o options) error {
	us, err := t.users(ctx, "init", 1)
	if err != nil {
		return err
	}
	u := us[0]
	var rooms []string
	for _, n := range o.InitRooms {
		params := fmt.Sprintf("%d rooms × %d messages, %d syncs", n, o.InitMessages, o.InitRuns)
		fmt.Fprintf(t.log, "  initsync: %s\n", params)
		have := len(rooms)
		if n > have {
			rooms = append(rooms, make([]string, n-have)...)
			err := parallel(ctx, n-have, 4, func(ctx context.Context, i int) error {
				room, err := t.client.createRoom(ctx, u, "private_chat", fmt.Sprintf("room %d", have+i))
				if err != nil {
					return err
				}
				rooms[have+i] = room
				for m := range o.InitMessages {
					if err := t.client.send(ctx, u, room, loadMark{Seq: m, Sent: time.Now().UnixMicro()}); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		s := t.watchQuiet()
		var lat []time.Duration
		var size int
		for range o.InitRuns {
			t0 := time.Now()
			b, err := t.client.sync(ctx, u, "", 0, "")
			if err != nil {
				return err
			}
			lat = append(lat, time.Since(t0))
			size = len(b)
			if got := len(gjson.GetBytes(b, "rooms.join").Map()); got < n {
				return fmt.Errorf("initial sync has %d joined rooms, want %d", got, n)
			}
		}
		r := Result{Phase: "initsync", Params: params, Server: s.end()}
		r.add("min", ms(slices.Min(lat)), "ms")
		r.addLatencies("sync", lat)
		r.add("response size", float64(size)/1024, "KiB")
		if r.Server != nil {
			r.add("server CPU per sync", r.Server.CPUSeconds*1000/float64(len(lat)), "ms")
			r.add("server CPU per room per sync", r.Server.CPUSeconds*1000/float64(len(lat)*n), "ms")
		}
		t.results = append(t.results, r)
	}
	return nil
}
