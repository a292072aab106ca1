package server_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"hearth/server/servertest"
	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// The federation admin API on real destinations: two Hearths on loopback
// share a room, so the first records the second as a destination; the
// second's federation listener then stops, and the first's deliveries fail
// and back off until an admin resets the connection.

// waitDestination polls a destination's admin page until ok accepts it.
func waitDestination(t *testing.T, url, tok, what string, ok func(map[string]any) bool) map[string]any {
	t.Helper()
	var body map[string]any
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var status int
		if status, body = call(t, "GET", url, tok, nil); status == 200 && ok(body) {
			return body
		}
	}
	t.Fatalf("destination never %s: %v", what, body)
	return nil
}

// num reads a JSON number as an int64; -1 when it is null or missing.
func num(v any) int64 {
	if f, ok := v.(float64); ok {
		return int64(f)
	}
	return -1
}

func TestAdminFederationDestinations(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		a := fed.Start(t, e)
		b := fed.Start(t, e)
		ctx := t.Context()
		alice := newSyncUser(t, a, "alice")
		bob := newSyncUser(t, b, "bob")
		root := newRoomUser(t, a, "root")
		if err := a.Store.SetAdmin(ctx, string(root.id), true); err != nil {
			t.Fatal(err)
		}
		tok := root.tok
		dest := b.Cfg.ServerName
		base := a.URL + "/_synapse/admin/v1/federation/destinations"
		destURL := base + "/" + esc(dest)

		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "porch", Name: "Porch"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.JoinRoom(ctx, fmt.Sprintf("#porch:%s", a.Cfg.ServerName), nil); err != nil {
			t.Fatalf("bob joins over federation: %v", err)
		}
		bobSince := doSync(t, bob, "", "", 0).NextBatch
		if _, err := alice.cli.SendText(ctx, room.RoomID, "before"); err != nil {
			t.Fatal(err)
		}
		bobSince = waitMessage(t, bob, room.RoomID, bobSince, "before")

		// Healthy: the room's newest queued event is delivered.
		roomsOf := func() (int64, map[string]any) {
			t.Helper()
			status, body := call(t, "GET", destURL+"/rooms", tok, nil)
			rs, _ := body["rooms"].([]any)
			if status != 200 || len(rs) != 1 || body["total"] != float64(1) || body["next_token"] != nil {
				t.Fatalf("rooms: %d %v", status, body)
			}
			r := rs[0].(map[string]any)
			if r["room_id"] != string(room.RoomID) || len(r) != 2 {
				t.Fatalf("room entry: %v", r)
			}
			return num(r["stream_ordering"]), body
		}
		queued, _ := roomsOf()
		healthy := waitDestination(t, destURL, tok, "delivered to", func(d map[string]any) bool {
			return num(d["last_successful_stream_ordering"]) == queued
		})
		want := map[string]any{"destination": dest, "retry_last_ts": float64(0), "retry_interval": float64(0), "failure_ts": nil,
			"last_successful_stream_ordering": float64(queued)}
		if !maps.Equal(healthy, want) {
			t.Errorf("healthy destination: %v, want %v", healthy, want)
		}
		status, body := call(t, "GET", base, tok, nil)
		if ds, _ := body["destinations"].([]any); status != 200 || len(ds) != 1 || body["total"] != float64(1) || body["next_token"] != nil ||
			!maps.Equal(ds[0].(map[string]any), want) {
			t.Errorf("list: %d %v", status, body)
		}
		// Nothing to reset on a healthy destination: 400, as Synapse.
		if status, body = call(t, "POST", destURL+"/reset_connection", tok, map[string]any{}); status != 400 || body["errcode"] != "M_UNKNOWN" {
			t.Errorf("reset of a healthy destination: %d %v", status, body)
		}

		// Not for non-admins; unknown destinations are 404; bad parameters 400.
		for _, ep := range []struct{ method, url string }{
			{"GET", base}, {"GET", destURL}, {"GET", destURL + "/rooms"}, {"POST", destURL + "/reset_connection"},
		} {
			if status, body = call(t, ep.method, ep.url, alice.tok, map[string]any{}); status != 403 || body["errcode"] != "M_FORBIDDEN" {
				t.Errorf("%s %s as non-admin: %d %v", ep.method, ep.url, status, body)
			}
		}
		for _, ep := range []struct{ method, path string }{
			{"GET", "/nowhere.test"}, {"GET", "/nowhere.test/rooms"}, {"POST", "/nowhere.test/reset_connection"},
		} {
			if status, body = call(t, ep.method, base+ep.path, tok, map[string]any{}); status != 404 || body["errcode"] != "M_NOT_FOUND" {
				t.Errorf("%s %s: %d %v", ep.method, ep.path, status, body)
			}
		}
		for _, q := range []string{base + "?order_by=password", base + "?dir=x", base + "?from=-1", base + "?limit=-1", base + "?limit=ten",
			destURL + "/rooms?dir=x", destURL + "/rooms?from=-1"} {
			if status, body = call(t, "GET", q, tok, nil); status != 400 || body["errcode"] != "M_INVALID_PARAM" {
				t.Errorf("%s: %d %v", q, status, body)
			}
		}

		// b stops answering: a's delivery of the next message fails, and a
		// backs off (10 s, the sender's shortest back-off).
		b.FedHTTP.Close()
		if _, err := alice.cli.SendText(ctx, room.RoomID, "during the outage"); err != nil {
			t.Fatal(err)
		}
		failing := waitDestination(t, destURL, tok, "failing", func(d map[string]any) bool { return d["failure_ts"] != nil })
		queued, _ = roomsOf()
		firstFailure, lastTry := num(failing["failure_ts"]), num(failing["retry_last_ts"])
		if num(failing["retry_interval"]) != 10_000 || lastTry < firstFailure || num(failing["last_successful_stream_ordering"]) >= queued {
			t.Errorf("failing destination: %v (newest queued %d)", failing, queued)
		}
		if status, body = call(t, "GET", base+"?order_by=failure_ts&dir=b", tok, nil); status != 200 ||
			!maps.Equal(body["destinations"].([]any)[0].(map[string]any), failing) {
			t.Errorf("list while failing: %d %v", status, body)
		}

		// reset_connection retries at once, long before the back-off
		// would: the attempt fails again (b is still down), and the first
		// failure stays on record.
		if status, body = call(t, "POST", destURL+"/reset_connection", tok, map[string]any{}); status != 200 || len(body) != 0 {
			t.Fatalf("reset: %d %v", status, body)
		}
		retried := waitDestination(t, destURL, tok, "retried", func(d map[string]any) bool { return num(d["retry_last_ts"]) > lastTry })
		if num(retried["retry_last_ts"]) >= lastTry+10_000 || num(retried["failure_ts"]) != firstFailure {
			t.Errorf("after the reset: %v (failed first at %d, last tried at %d)", retried, firstFailure, lastTry)
		}
		entries, _, err := a.Store.AuditLog(ctx, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(entries, func(e storage.AuditEntry) bool {
			return e.Action == "federation.reset_connection" && e.Target == dest && e.Actor == string(root.id)
		}) {
			t.Errorf("reset not audited: %+v", entries)
		}

		// b is back; a reset gets the missed message through, and the
		// destination is healthy again.
		b.Restart(t)
		if status, body = call(t, "POST", destURL+"/reset_connection", tok, map[string]any{}); status != 200 {
			t.Fatalf("reset after b is back: %d %v", status, body)
		}
		waitMessage(t, bob, room.RoomID, bobSince, "during the outage")
		recovered := waitDestination(t, destURL, tok, "recovered", func(d map[string]any) bool {
			return d["failure_ts"] == nil && num(d["last_successful_stream_ordering"]) == queued
		})
		if num(recovered["retry_last_ts"]) != 0 || num(recovered["retry_interval"]) != 0 {
			t.Errorf("recovered destination: %v", recovered)
		}
	})
}

// TestAdminFederationDestinationPages checks Synapse's paging and orders on
// destinations recorded the way the sender records them.
func TestAdminFederationDestinationPages(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := context.Background()
		tok := seedUser(t, b.Store, "root", "rootpw", true)
		base := b.URL + "/_synapse/admin/v1/federation/destinations"
		for _, d := range []string{"e.test", "c.test", "a.test", "d.test", "b.test"} {
			if err := b.Store.EnsureDestination(ctx, d, 0); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Store.QueueForDestinations(ctx, 0, []storage.DestinationRoom{
			{Destination: "c.test", RoomID: "!z:x", StreamPos: 7}, {Destination: "c.test", RoomID: "!y:x", StreamPos: 9},
			{Destination: "c.test", RoomID: "!x:x", StreamPos: 8},
		}); err != nil {
			t.Fatal(err)
		}
		if err := b.Store.DestinationFailed(ctx, "d.test", "timeout", 60_000); err != nil {
			t.Fatal(err)
		}
		page := func(q string) ([]string, any, any) {
			t.Helper()
			status, body := call(t, "GET", base+q, tok, nil)
			if status != 200 {
				t.Fatalf("%s: %d %v", q, status, body)
			}
			var names []string
			for _, d := range body["destinations"].([]any) {
				names = append(names, d.(map[string]any)["destination"].(string))
			}
			return names, body["total"], body["next_token"]
		}
		for _, tc := range []struct {
			q     string
			want  []string
			total float64
			next  any
		}{
			{"", []string{"a.test", "b.test", "c.test", "d.test", "e.test"}, 5, nil},
			{"?limit=2", []string{"a.test", "b.test"}, 5, "2"},
			{"?from=2&limit=2", []string{"c.test", "d.test"}, 5, "4"},
			{"?from=4&limit=2", []string{"e.test"}, 5, nil},
			{"?dir=b&limit=1", []string{"e.test"}, 5, "1"},
			{"?order_by=retry_interval&dir=b&limit=1", []string{"d.test"}, 5, "1"},
			{"?order_by=failure_ts", []string{"d.test", "a.test", "b.test", "c.test", "e.test"}, 5, nil},
			{"?destination=C.TE", []string{"c.test"}, 1, nil},
		} {
			if names, total, next := page(tc.q); !slices.Equal(names, tc.want) || total != tc.total || next != tc.next {
				t.Errorf("%q: %v total %v next %v; want %v total %v next %v", tc.q, names, total, next, tc.want, tc.total, tc.next)
			}
		}

		rooms := func(q string) ([]string, any) {
			t.Helper()
			status, body := call(t, "GET", base+"/c.test/rooms"+q, tok, nil)
			if status != 200 || body["total"] != float64(3) {
				t.Fatalf("rooms%s: %d %v", q, status, body)
			}
			var out []string
			for _, r := range body["rooms"].([]any) {
				rm := r.(map[string]any)
				out = append(out, fmt.Sprintf("%s@%v", rm["room_id"], rm["stream_ordering"]))
			}
			return out, body["next_token"]
		}
		if got, next := rooms("?limit=2"); !slices.Equal(got, []string{"!x:x@8", "!y:x@9"}) || next != "2" {
			t.Errorf("rooms, first page: %v %v", got, next)
		}
		if got, next := rooms("?from=2&limit=2"); !slices.Equal(got, []string{"!z:x@7"}) || next != nil {
			t.Errorf("rooms, last page: %v %v", got, next)
		}
		if got, _ := rooms("?dir=b"); !slices.Equal(got, []string{"!z:x@7", "!y:x@9", "!x:x@8"}) {
			t.Errorf("rooms, backwards: %v", got)
		}
		if status, body := call(t, "GET", base+"/a.test/rooms", tok, nil); status != 200 || body["total"] != float64(0) || len(body["rooms"].([]any)) != 0 {
			t.Errorf("a destination without rooms: %d %v", status, body)
		}
	})
}
