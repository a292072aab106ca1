package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"hearth/server/rooms"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// Federation benchmarks: real Hearth servers on loopback over TLS (as in
// federation_test.go), once per storage engine.

// BenchmarkFederationInbound measures received transactions of 50 PDUs
// (messages of one room, each checked and persisted): PDUs per second, and
// the p99 time to answer a transaction.
func BenchmarkFederationInbound(b *testing.B) {
	benchEngines(b, func(b *testing.B, e storagetest.Engine) {
		fed := servertest.NewFederation(b)
		a, origin := fed.Start(b, e), fed.Start(b, e)
		ctx := context.Background()
		alice, bob := benchUser(b, a, "alice"), benchUser(b, origin, "bob")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := bob.JoinRoom(ctx, string(room.RoomID), &mautrix.ReqJoinRoom{Via: []string{a.Cfg.ServerName}}); err != nil {
			b.Fatal(err)
		}
		// bob's messages, built as his server would, on a chain.
		builder := originBuilder(b, a, origin, string(room.RoomID))
		txns := make([][]json.RawMessage, b.N)
		for i := range txns {
			for j := 0; j < 50; j++ {
				ev, err := builder.Append("m.room.message", nil, string(bob.UserID), map[string]any{"msgtype": "m.text", "body": "bench"})
				if err != nil {
					b.Fatal(err)
				}
				txns[i] = append(txns[i], json.RawMessage(ev.JSON()))
			}
		}
		cli := fed.Client(b, origin)
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		start := time.Now()
		for i, pdus := range txns {
			t0 := time.Now()
			txn := map[string]any{"origin": origin.Cfg.ServerName, "origin_server_ts": time.Now().UnixMilli(), "pdus": pdus}
			var resp struct {
				PDUs map[string]struct {
					Error string `json:"error"`
				} `json:"pdus"`
			}
			if err := cli.Do(ctx, a.Cfg.ServerName, http.MethodPut, fmt.Sprintf("/_matrix/federation/v1/send/bench-%d", i), nil, txn, &resp); err != nil {
				b.Fatal(err)
			}
			for id, r := range resp.PDUs {
				if r.Error != "" {
					b.Fatalf("%s refused: %s", id, r.Error)
				}
			}
			lat = append(lat, time.Since(t0))
		}
		b.StopTimer()
		b.ReportMetric(float64(50*b.N)/time.Since(start).Seconds(), "PDUs/s")
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms/txn")
	})
}

// originBuilder builds events as origin's server would, on dest's current
// view of the room.
func originBuilder(tb testing.TB, dest, origin *servertest.Bundle, roomID string) *rooms.RoomBuilder {
	tb.Helper()
	ctx := context.Background()
	rv := rooms.MustVersion(rooms.DefaultRoomVersion)
	if room, err := dest.Store.RoomByID(ctx, roomID); err == nil {
		rv, _ = rooms.LookupVersion(room.RoomVersion)
	}
	parse := func(id string) *rooms.Event {
		se, err := dest.Store.EventByID(ctx, id)
		if err != nil {
			tb.Fatal(err)
		}
		e, err := rooms.ParseEvent(rv, se.JSON)
		if err != nil {
			tb.Fatal(err)
		}
		return e
	}
	state, err := dest.Store.CurrentState(ctx, roomID)
	if err != nil {
		tb.Fatal(err)
	}
	evs := rooms.StateEvents{}
	for k, id := range state {
		evs[k] = parse(id)
	}
	exts, err := dest.Store.ForwardExtremities(ctx, roomID)
	if err != nil {
		tb.Fatal(err)
	}
	var extEvs []*rooms.Event
	for _, x := range exts {
		extEvs = append(extEvs, parse(x.EventID))
	}
	key, err := origin.Cfg.LoadSigningKey()
	if err != nil {
		tb.Fatal(err)
	}
	return rooms.ResumeRoomBuilder(rv, roomID, rooms.SigningKey{ServerName: origin.Cfg.ServerName, KeyID: key.ID, Private: key.Priv}, evs, extEvs)
}

// BenchmarkFederationFanout measures how long after a send every one of 10
// other servers in the room has the message: p50 and p99.
func BenchmarkFederationFanout(b *testing.B) {
	benchEngines(b, func(b *testing.B, e storagetest.Engine) {
		fed := servertest.NewFederation(b)
		a := fed.Start(b, e)
		ctx := context.Background()
		alice := benchUser(b, a, "alice")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			b.Fatal(err)
		}
		var others []*servertest.Bundle
		for i := 0; i < 10; i++ {
			o := fed.Start(b, e)
			u := benchUser(b, o, fmt.Sprintf("user%d", i))
			if _, err := u.JoinRoom(ctx, string(room.RoomID), &mautrix.ReqJoinRoom{Via: []string{a.Cfg.ServerName}}); err != nil {
				b.Fatal(err)
			}
			others = append(others, o)
		}
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for n := 0; n < b.N; n++ {
			t0 := time.Now()
			resp, err := alice.SendText(ctx, room.RoomID, "fan out")
			if err != nil {
				b.Fatal(err)
			}
			for _, o := range others {
				for !hasEvent(o, resp.EventID) {
					if time.Since(t0) > 30*time.Second {
						b.Fatalf("%s never got %s", o.Cfg.ServerName, resp.EventID)
					}
					time.Sleep(200 * time.Microsecond)
				}
			}
			lat = append(lat, time.Since(t0))
		}
		b.StopTimer()
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	})
}

func hasEvent(srv *servertest.Bundle, eventID id.EventID) bool {
	_, err := srv.Store.EventByID(context.Background(), string(eventID))
	return err == nil
}
