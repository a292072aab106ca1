package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/pushrules/pushgateway"

	"hearth/config"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// Pushers: POST /pushers/set and GET /pushers through mautrix-go, and
// delivery to a fake push gateway on loopback (which the test server may
// dial: ip_range_whitelist 127.0.0.0/8).

// fakeGateway is a push gateway on loopback. Each request takes the next
// planned answer ("ok" when none is left): "ok", "fail" (a 500) or
// "reject" (the pushkey rejected).
type fakeGateway struct {
	srv *httptest.Server

	mu    sync.Mutex
	plan  []string
	got   []gatewayPush
	wakes chan struct{}
}

type gatewayPush struct {
	at  time.Time
	req pushgateway.ReqPush
	raw map[string]any
}

func newFakeGateway(t *testing.T) *fakeGateway {
	t.Helper()
	g := &fakeGateway{wakes: make(chan struct{}, 100)}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_matrix/push/v1/notify" || r.Method != http.MethodPost {
			http.NotFound(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		p := gatewayPush{at: time.Now()}
		if json.Unmarshal(body, &p.req) != nil || json.Unmarshal(body, &p.raw) != nil {
			http.Error(w, "bad json", http.StatusBadRequest)
			return
		}
		g.mu.Lock()
		answer := "ok"
		if len(g.plan) > 0 {
			answer, g.plan = g.plan[0], g.plan[1:]
		}
		g.got = append(g.got, p)
		g.mu.Unlock()
		g.wakes <- struct{}{}
		switch answer {
		case "fail":
			http.Error(w, "try later", http.StatusInternalServerError)
		case "reject":
			json.NewEncoder(w).Encode(map[string]any{"rejected": []string{p.req.Notification.Devices[0].PushKey}})
		default:
			json.NewEncoder(w).Encode(map[string]any{"rejected": []string{}})
		}
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *fakeGateway) url() string { return g.srv.URL + "/_matrix/push/v1/notify" }

func (g *fakeGateway) answer(plan ...string) {
	g.mu.Lock()
	g.plan = append(g.plan, plan...)
	g.mu.Unlock()
}

// next waits for the next push the gateway receives.
func (g *fakeGateway) next(t *testing.T) gatewayPush {
	t.Helper()
	select {
	case <-g.wakes:
	case <-time.After(15 * time.Second):
		t.Fatal("no push reached the gateway")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.got[len(g.got)-1]
}

// quiet checks the gateway receives nothing for d.
func (g *fakeGateway) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-g.wakes:
		g.mu.Lock()
		defer g.mu.Unlock()
		t.Fatalf("unexpected push: %+v", g.got[len(g.got)-1].raw)
	case <-time.After(d):
	}
}

func loopbackGateways(c *config.Config) { c.IPRangeWhitelist = []string{"127.0.0.0/8"} }

func httpPusher(pushKey, url string, data map[string]any) *mautrix.Pusher {
	kind := mautrix.PusherKindHTTP
	d := mautrix.PusherData{"url": url}
	for k, v := range data {
		d[k] = v
	}
	return &mautrix.Pusher{Kind: &kind, AppID: "org.example.app", PushKey: pushKey, AppDisplayName: "Example",
		DeviceDisplayName: "Phone", Language: "en", Data: d}
}

// TestPusherDelivery: a notification reaches the gateway in the full format
// (with the badge and the rule's tweaks) and in event_id_only; a failed push
// is retried after a back-off; a receipt sends the new badge; a rejected
// pushkey removes the pusher.
func TestPusherDelivery(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e, loopbackGateways)
		ctx := t.Context()
		gw := newFakeGateway(t)
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		room := sharedRoom(t, alice, bob)
		if err := bob.cli.SetPusher(ctx, httpPusher("bob-phone", gw.url(), map[string]any{"custom": "kept"})); err != nil {
			t.Fatalf("set pusher: %v", err)
		}
		ps, err := bob.cli.GetPushers(ctx)
		if err != nil || len(ps.Pushers) != 1 || ps.Pushers[0].PushKey != "bob-phone" || ps.Pushers[0].Data["custom"] != "kept" {
			t.Fatalf("GET /pushers: %+v %v", ps, err)
		}

		// Full format, with alice's name in the room.
		if err := alice.cli.SetDisplayName(ctx, "Alice"); err != nil {
			t.Fatal(err)
		}
		ev := mention(t, alice, room, "bob, look", bob.id)
		p := gw.next(t)
		n := p.req.Notification
		if n.EventID != ev || n.RoomID != room || n.Type != "m.room.message" || n.Sender != alice.id || n.RoomName != "Sync" ||
			n.SenderDisplayName != "Alice" || n.Priority != "high" || n.Counts == nil || n.Counts.Unread != 1 {
			t.Fatalf("full push: %+v", p.raw)
		}
		if c := p.raw["notification"].(map[string]any)["content"].(map[string]any); c["body"] != "bob, look" {
			t.Fatalf("content: %v", c)
		}
		d := n.Devices[0]
		if d.AppID != "org.example.app" || d.PushKey != "bob-phone" || d.PushKeyTS == 0 || d.Data["custom"] != "kept" || d.Data["url"] != nil ||
			d.Tweaks["highlight"] != true || d.Tweaks["sound"] != "default" {
			t.Fatalf("device: %+v", p.raw["notification"].(map[string]any)["devices"])
		}
		// Alice's own message is not pushed to her (she has no pusher
		// anyway), and bob's own messages are not pushed to him.
		send(t, bob, room, "my own message")
		gw.quiet(t, 300*time.Millisecond)

		// A failure is retried with the same event, after a back-off.
		gw.answer("fail")
		ev = send(t, alice, room, "second")
		first := gw.next(t)
		retry := gw.next(t)
		if first.req.Notification.EventID != ev || retry.req.Notification.EventID != ev || retry.at.Sub(first.at) < 900*time.Millisecond {
			t.Fatalf("retry: %s at %v, then %s at %v", first.req.Notification.EventID, first.at, retry.req.Notification.EventID, retry.at)
		}
		// Two members: .m.rule.room_one_to_one, with a sound.
		if retry.req.Notification.Priority != "high" || retry.req.Notification.Devices[0].Tweaks["highlight"] != nil ||
			retry.req.Notification.Counts.Unread != 1 {
			t.Fatalf("plain message push: %+v", retry.raw)
		}

		// event_id_only: the pusher set again with a format.
		if err := bob.cli.SetPusher(ctx, httpPusher("bob-phone", gw.url(), map[string]any{"format": "event_id_only"})); err != nil {
			t.Fatal(err)
		}
		ev = send(t, alice, room, "third")
		p = gw.next(t)
		notif := p.raw["notification"].(map[string]any)
		dev := notif["devices"].([]any)[0].(map[string]any)
		if notif["event_id"] != string(ev) || notif["room_id"] != string(room) || notif["type"] != nil || notif["sender"] != nil ||
			notif["content"] != nil || dev["tweaks"] != nil || dev["data"].(map[string]any)["format"] != "event_id_only" ||
			notif["counts"].(map[string]any)["unread"] != float64(1) {
			t.Fatalf("event_id_only push: %v", p.raw)
		}

		// Reading sends the new badge (nothing unread: 0).
		if err := bob.cli.MarkRead(ctx, room, ev); err != nil {
			t.Fatal(err)
		}
		p = gw.next(t)
		notif = p.raw["notification"].(map[string]any)
		if notif["event_id"] != nil || notif["counts"].(map[string]any)["unread"] != nil && notif["counts"].(map[string]any)["unread"] != float64(0) {
			t.Fatalf("badge update: %v", p.raw)
		}

		// A rejected pushkey removes the pusher.
		gw.answer("reject")
		send(t, alice, room, "fourth")
		gw.next(t)
		waitFor(t, "the rejected pusher to be removed", func() bool {
			ps, err := bob.cli.GetPushers(ctx)
			return err == nil && len(ps.Pushers) == 0
		})
		send(t, alice, room, "fifth")
		gw.quiet(t, 500*time.Millisecond)
	})
}

// TestPusherResumesAfterRestart: notifications recorded while the gateway
// was failing are delivered by the next process.
func TestPusherResumesAfterRestart(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e, loopbackGateways)
		ctx := t.Context()
		gw := newFakeGateway(t)
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		room := sharedRoom(t, alice, bob)
		if err := bob.cli.SetPusher(ctx, httpPusher("k", gw.url(), nil)); err != nil {
			t.Fatal(err)
		}
		gw.answer("fail")
		ev := send(t, alice, room, "while failing")
		if gw.next(t).req.Notification.EventID != ev {
			t.Fatal("first attempt")
		}
		b.Restart(t)
		waitFor(t, "the push after the restart", func() bool {
			gw.mu.Lock()
			defer gw.mu.Unlock()
			return len(gw.got) >= 2 && gw.got[len(gw.got)-1].req.Notification.EventID == ev
		})
	})
}

// TestPusherPrivateGatewayRefused: without ip_range_whitelist, a gateway on
// a loopback address is never contacted.
func TestPusherPrivateGatewayRefused(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		gw := newFakeGateway(t)
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		room := sharedRoom(t, alice, bob)
		if err := bob.cli.SetPusher(t.Context(), httpPusher("k", gw.url(), nil)); err != nil {
			t.Fatal(err)
		}
		send(t, alice, room, "hello")
		waitFor(t, "the push to fail", func() bool {
			ps, err := b.Store.PushersOf(t.Context(), string(bob.id))
			return err == nil && len(ps) == 1 && ps[0].FailingSince > 0
		})
		gw.quiet(t, 200*time.Millisecond)
	})
}

// TestPushersSet: POST /pushers/set's checks, append, kind null, and the
// pushers going with their device (logout) or with the other devices on a
// password change, as in Synapse (Complement's TestChangePasswordPushers).
func TestPushersSet(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, carol := newSyncUser(t, b, "alice"), newSyncUser(t, b, "carol")
		const url = "https://push.example.org/_matrix/push/v1/notify"
		set := "/_matrix/client/v3/pushers/set"
		full := func(extra map[string]any) map[string]any {
			m := map[string]any{"kind": "http", "app_id": "org.example.app", "pushkey": "shared", "app_display_name": "App",
				"device_display_name": "Phone", "lang": "en", "data": map[string]any{"url": url}}
			for k, v := range extra {
				m[k] = v
			}
			return m
		}
		acctDo(t, b, "POST", set, alice.tok, map[string]any{"kind": "http", "app_id": "a", "pushkey": "k"}).want(t, 400, "M_MISSING_PARAM")
		acctDo(t, b, "POST", set, alice.tok, full(map[string]any{"data": map[string]any{}})).want(t, 400, "M_MISSING_PARAM")
		acctDo(t, b, "POST", set, alice.tok, full(map[string]any{"data": map[string]any{"url": "https://push.example.org/notify"}})).want(t, 400, "M_MISSING_PARAM")
		acctDo(t, b, "POST", set, alice.tok, full(map[string]any{"kind": "email", "app_id": "m.email", "pushkey": "a@example.org"})).want(t, 400, "M_THREEPID_NOT_FOUND")
		acctDo(t, b, "POST", set, alice.tok, full(map[string]any{"kind": "carrier-pigeon"})).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "POST", set, alice.tok, full(map[string]any{"data": "x"})).want(t, 400, "M_BAD_JSON")
		acctDo(t, b, "POST", set, "", full(nil)).want(t, 401, "M_MISSING_TOKEN")

		pushers := func(u roomUser) []mautrix.Pusher {
			t.Helper()
			ps, err := u.cli.GetPushers(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return ps.Pushers
		}
		acctDo(t, b, "POST", set, alice.tok, full(map[string]any{"profile_tag": "tag"})).want(t, 200, "")
		if ps := pushers(alice); len(ps) != 1 || ps[0].ProfileTag != "tag" || ps[0].DeviceDisplayName != "Phone" {
			t.Fatalf("alice's pushers: %+v", ps)
		}
		// The same device in other hands: carol takes over the pushkey.
		acctDo(t, b, "POST", set, carol.tok, full(nil)).want(t, 200, "")
		if len(pushers(alice)) != 0 || len(pushers(carol)) != 1 {
			t.Fatal("append false did not remove alice's pusher")
		}
		acctDo(t, b, "POST", set, alice.tok, full(map[string]any{"append": true})).want(t, 200, "")
		if len(pushers(alice)) != 1 || len(pushers(carol)) != 1 {
			t.Fatal("append true removed carol's pusher")
		}
		// Updating keeps one pusher.
		acctDo(t, b, "POST", set, alice.tok, full(map[string]any{"append": true, "lang": "fr"})).want(t, 200, "")
		if ps := pushers(alice); len(ps) != 1 || ps[0].Language != "fr" {
			t.Fatalf("update: %+v", ps)
		}
		// kind null deletes.
		acctDo(t, b, "POST", set, alice.tok, map[string]any{"kind": nil, "app_id": "org.example.app", "pushkey": "shared"}).want(t, 200, "")
		if len(pushers(alice)) != 0 || len(pushers(carol)) != 1 {
			t.Fatal("kind null")
		}

		// A pusher goes with its device: logout.
		phone := acctLogin(t, b, "alice", acctPW, "PHONE")
		acctDo(t, b, "POST", set, phone.AccessToken, full(map[string]any{"pushkey": "phone"})).want(t, 200, "")
		acctDo(t, b, "POST", set, alice.tok, full(map[string]any{"pushkey": "desk"})).want(t, 200, "")
		if len(pushers(alice)) != 2 {
			t.Fatal("two devices, two pushers")
		}
		if _, err := acctClient(t, b, phone.AccessToken).Logout(ctx); err != nil {
			t.Fatal(err)
		}
		if ps := pushers(alice); len(ps) != 1 || ps[0].PushKey != "desk" {
			t.Fatalf("after logout: %+v", ps)
		}
		// A password change signs the other devices out: their pushers go,
		// the caller's stays.
		tablet := acctLogin(t, b, "alice", acctPW, "TABLET")
		acctDo(t, b, "POST", set, tablet.AccessToken, full(map[string]any{"pushkey": "tablet"})).want(t, 200, "")
		acctUIA(t, b, "POST", "/_matrix/client/v3/account/password", alice.tok, map[string]any{"new_password": "another good passphrase"},
			func(s string) map[string]any { return acctPasswordAuth("alice", acctPW, s) }).want(t, 200, "")
		if ps := pushers(alice); len(ps) != 1 || ps[0].PushKey != "desk" {
			t.Fatalf("after password change: %+v", ps)
		}
	})
}
