package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/server"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// Delayed events (MSC4140) through mautrix-go and raw HTTP, on every
// storage engine: scheduling, the list, the three actions, sending on
// time, cancellation by another user's state, the limits and errors, and
// a server restart in the middle.

const delayedType = "org.example.delayed"

// delayedOn turns delayed events on, as Synapse's max_event_delay_duration,
// without the management rate limit (the tests poll the list).
func delayedOn(c *config.Config) {
	c.MaxEventDelayDuration = config.Duration(time.Hour)
	c.RCDelayedEventMgmt = config.RateLimit{BurstCount: 1}
}

// delayedPath is the unstable endpoint, with more path elements escaped.
func delayedPath(b *servertest.Bundle, elems ...string) string {
	p := b.URL + "/_matrix/client/unstable/org.matrix.msc4140/delayed_events"
	for _, e := range elems {
		p += "/" + url.PathEscape(e)
	}
	return p
}

// deDo sends a JSON request (token optional) and decodes the JSON answer.
func deDo(t *testing.T, method, u, token string, body any) (int, map[string]any) {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		js, _ := json.Marshal(body)
		rd = bytes.NewReader(js)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, u, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %v", method, u, err)
	}
	return resp.StatusCode, out
}

func wantErrcode(t *testing.T, what string, status int, body map[string]any, wantStatus int, wantCode string) {
	t.Helper()
	if status != wantStatus || body["errcode"] != wantCode {
		t.Fatalf("%s: got %d %v, want %d %s", what, status, body, wantStatus, wantCode)
	}
}

// delayedRoom is a public room of alice's that bob joined, where anyone
// may send delayedType state.
func delayedRoom(t *testing.T, alice, bob roomUser) id.RoomID {
	t.Helper()
	created, err := alice.cli.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "public_chat",
		PowerLevelOverride: &event.PowerLevelsEventContent{Events: map[string]int{delayedType: 0}, Users: map[id.UserID]int{alice.id: 100}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.cli.JoinRoomByID(t.Context(), created.RoomID); err != nil {
		t.Fatal(err)
	}
	return created.RoomID
}

func scheduled(t *testing.T, u roomUser) []*event.ScheduledDelayedEvent {
	t.Helper()
	resp, err := u.cli.DelayedEvents(t.Context(), &mautrix.ReqDelayedEvents{})
	if err != nil {
		t.Fatalf("%s: list delayed events: %v", u.id, err)
	}
	return resp.Scheduled
}

// stateOf reads delayedType state; "" when there is none.
func stateOf(t *testing.T, u roomUser, room id.RoomID, key string) string {
	t.Helper()
	var c struct {
		Setter string `json:"setter"`
	}
	if err := u.cli.StateEvent(t.Context(), room, event.NewEventType(delayedType), key, &c); err != nil {
		return ""
	}
	return c.Setter
}

// timelineWith lists the room's delayedType message events, oldest first.
func timelineWith(t *testing.T, u roomUser, room id.RoomID) []*event.Event {
	t.Helper()
	msgs, err := u.cli.Messages(t.Context(), room, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []*event.Event
	for i := len(msgs.Chunk) - 1; i >= 0; i-- {
		if e := msgs.Chunk[i]; e.Type.Type == delayedType && e.StateKey == nil {
			out = append(out, e)
		}
	}
	return out
}

func TestDelayedEvents(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e, delayedOn)
		ctx := t.Context()
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		room := delayedRoom(t, alice, bob)
		if got := scheduled(t, alice); len(got) != 0 {
			t.Fatalf("delayed events before any: %v", got)
		}

		// A message, its retry under the same transaction ID, and the list.
		before := time.Now().UnixMilli()
		resp, err := alice.cli.SendMessageEvent(ctx, room, event.NewEventType(delayedType), map[string]any{"n": 1},
			mautrix.ReqSendEvent{UnstableDelay: 700 * time.Millisecond, TransactionID: "txn-1"})
		if err != nil || resp.UnstableDelayID == "" || resp.EventID != "" {
			t.Fatalf("delayed send: %+v %v", resp, err)
		}
		again, err := alice.cli.SendMessageEvent(ctx, room, event.NewEventType(delayedType), map[string]any{"n": 1},
			mautrix.ReqSendEvent{UnstableDelay: 700 * time.Millisecond, TransactionID: "txn-1"})
		if err != nil || again.UnstableDelayID != resp.UnstableDelayID {
			t.Fatalf("retried delayed send: %+v %v, want delay_id %s", again, err, resp.UnstableDelayID)
		}
		list := scheduled(t, alice)
		if len(list) != 1 || list[0].DelayID != resp.UnstableDelayID || list[0].RoomID != room || list[0].Delay != 700 ||
			list[0].StateKey != nil || list[0].Content.Raw["n"] != float64(1) ||
			list[0].RunningSince.UnixMilli() < before || list[0].RunningSince.UnixMilli() > time.Now().UnixMilli() {
			t.Fatalf("list: %+v", list)
		}
		if got := scheduled(t, bob); len(got) != 0 {
			t.Fatalf("bob sees alice's delayed events: %v", got)
		}
		if evs := timelineWith(t, alice, room); len(evs) != 0 {
			t.Fatalf("sent before its time: %v", evs)
		}
		waitFor(t, "the delayed message to be sent", func() bool { return len(timelineWith(t, bob, room)) == 1 })
		if got := scheduled(t, alice); len(got) != 0 {
			t.Fatalf("still listed after sending: %v", got)
		}
		sent := timelineWith(t, alice, room)[0]
		if sent.Sender != alice.id || sent.Content.Raw["n"] != float64(1) {
			t.Fatalf("sent event: %+v", sent)
		}
		if sent.Unsigned.TransactionID != "" {
			t.Fatalf("a delayed event shows a transaction_id the client never chose: %q", sent.Unsigned.TransactionID)
		}
		// The sender's /sync names the delay ID, as Synapse's does.
		_, syncBody := deDo(t, "GET", b.URL+"/_matrix/client/v3/sync?filter="+url.QueryEscape(bigTimeline), alice.tok, nil)
		var syncResp struct {
			Rooms struct {
				Join map[string]struct {
					Timeline struct {
						Events []struct {
							EventID  string         `json:"event_id"`
							Unsigned map[string]any `json:"unsigned"`
						} `json:"events"`
					} `json:"timeline"`
				} `json:"join"`
			} `json:"rooms"`
		}
		js, _ := json.Marshal(syncBody)
		if err := json.Unmarshal(js, &syncResp); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, ev := range syncResp.Rooms.Join[string(room)].Timeline.Events {
			if ev.EventID == string(sent.ID) {
				found = ev.Unsigned["org.matrix.msc4140.delay_id"] == string(resp.UnstableDelayID)
			}
		}
		if !found {
			t.Fatal("alice's sync does not carry unsigned.org.matrix.msc4140.delay_id")
		}

		// A state event sent on request, by a client without a token.
		st, err := alice.cli.SendStateEvent(ctx, room, event.NewEventType(delayedType), "on_send", map[string]any{"setter": "send"},
			mautrix.ReqSendEvent{UnstableDelay: 100 * time.Second})
		if err != nil || st.UnstableDelayID == "" {
			t.Fatalf("delayed state: %+v %v", st, err)
		}
		if got := stateOf(t, alice, room, "on_send"); got != "" {
			t.Fatalf("state set before sending: %q", got)
		}
		if code, body := deDo(t, "POST", delayedPath(b, string(st.UnstableDelayID), "send"), "", map[string]any{}); code != 200 {
			t.Fatalf("send action: %d %v", code, body)
		}
		if got := stateOf(t, alice, room, "on_send"); got != "send" {
			t.Fatalf("state after the send action: %q", got)
		}
		code, body := deDo(t, "POST", delayedPath(b, string(st.UnstableDelayID)), "", map[string]any{"action": "send"})
		wantErrcode(t, "send action again", code, body, 404, "M_NOT_FOUND")

		// Cancelled: never sent.
		st, err = alice.cli.SendStateEvent(ctx, room, event.NewEventType(delayedType), "never", map[string]any{"setter": "x"},
			mautrix.ReqSendEvent{UnstableDelay: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.cli.UpdateDelayedEvent(ctx, &mautrix.ReqUpdateDelayedEvent{DelayID: st.UnstableDelayID, Action: event.DelayActionCancel}); err != nil {
			t.Fatalf("cancel: %v", err)
		}
		code, body = deDo(t, "POST", delayedPath(b, string(st.UnstableDelayID), "cancel"), "", map[string]any{})
		wantErrcode(t, "cancel again", code, body, 404, "M_NOT_FOUND")
		time.Sleep(800 * time.Millisecond)
		if got := stateOf(t, alice, room, "never"); got != "" {
			t.Fatalf("cancelled state event was sent: %q", got)
		}

		// Restarted: due a full delay after the restart.
		st, err = alice.cli.SendStateEvent(ctx, room, event.NewEventType(delayedType), "restarted", map[string]any{"setter": "timeout"},
			mautrix.ReqSendEvent{UnstableDelay: 1500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		restartedAt := time.Now()
		if code, body := deDo(t, "POST", delayedPath(b, string(st.UnstableDelayID)), "", map[string]any{"action": "restart"}); code != 200 {
			t.Fatalf("restart: %d %v", code, body)
		}
		time.Sleep(time.Second)
		if got := stateOf(t, alice, room, "restarted"); got != "" {
			t.Fatalf("restarted event sent at its first time (%v after the restart)", time.Since(restartedAt))
		}
		if l := scheduled(t, alice); len(l) != 1 || l[0].RunningSince.UnixMilli() < restartedAt.UnixMilli()-5 {
			t.Fatalf("list after restart: %+v", l)
		}
		waitFor(t, "the restarted event", func() bool { return stateOf(t, alice, room, "restarted") == "timeout" })

		// Another user setting the same state cancels alice's delayed
		// state event; alice setting it herself does not.
		st, err = alice.cli.SendStateEvent(ctx, room, event.NewEventType(delayedType), "contested", map[string]any{"setter": "alice-later"},
			mautrix.ReqSendEvent{UnstableDelay: 100 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.cli.SendStateEvent(ctx, room, event.NewEventType(delayedType), "contested", map[string]any{"setter": "alice-now"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if l := scheduled(t, alice); len(l) != 1 {
			t.Fatalf("alice's own state change cancelled her delayed event: %+v", l)
		}
		if _, err := bob.cli.SendStateEvent(ctx, room, event.NewEventType(delayedType), "contested", map[string]any{"setter": "bob"}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "bob's state to cancel alice's delayed event", func() bool { return len(scheduled(t, alice)) == 0 })
		code, body = deDo(t, "POST", delayedPath(b, string(st.UnstableDelayID), "send"), "", map[string]any{})
		wantErrcode(t, "send of a cancelled event", code, body, 404, "M_NOT_FOUND")
		if got := stateOf(t, alice, room, "contested"); got != "bob" {
			t.Fatalf("contested state: %q", got)
		}

		// A delayed event the room refuses when due is dropped: bob
		// schedules a message, then leaves.
		if _, err := bob.cli.SendMessageEvent(ctx, room, event.NewEventType(delayedType), map[string]any{"n": 2},
			mautrix.ReqSendEvent{UnstableDelay: 300 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "bob's refused event to be dropped", func() bool { return len(scheduled(t, bob)) == 0 })
		if n := len(timelineWith(t, alice, room)); n != 1 {
			t.Fatalf("%d delayed messages in the room, want 1", n)
		}
	})
}

func TestDelayedEventsErrors(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		two := 2
		b := servertest.Start(t, e, func(c *config.Config) {
			c.MaxEventDelayDuration = config.Duration(10 * time.Second)
			c.ExperimentalFeatures.MSC4140MaxDelayedEventsPerUser = &two
			c.RCDelayedEventMgmt = config.RateLimit{PerSecond: 0.001, BurstCount: 6}
		})
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		room := delayedRoom(t, alice, bob)
		send := func(u roomUser, query string) (int, map[string]any) {
			return deDo(t, "PUT", fmt.Sprintf("%s/_matrix/client/v3/rooms/%s/send/%s/%d?%s", b.URL, url.PathEscape(string(room)),
				delayedType, time.Now().UnixNano(), query), u.tok, map[string]any{})
		}

		code, body := send(alice, "org.matrix.msc4140.delay=10001")
		wantErrcode(t, "delay over the maximum", code, body, 403, "M_FORBIDDEN")
		if !strings.Contains(fmt.Sprint(body["error"]), "10000ms") {
			t.Fatalf("error does not name the maximum: %v", body)
		}
		for _, bad := range []string{"-1", "abc", "1.5", ""} {
			code, body = send(alice, "org.matrix.msc4140.delay="+bad)
			wantErrcode(t, "delay "+bad, code, body, 400, "M_INVALID_PARAM")
		}
		code, body = deDo(t, "PUT", b.URL+"/_matrix/client/v3/rooms/"+url.PathEscape("!nowhere:hearth.test")+"/state/"+delayedType+"/k?org.matrix.msc4140.delay=10",
			alice.tok, map[string]any{})
		wantErrcode(t, "unknown room", code, body, 404, "M_NOT_FOUND")

		// Two scheduled at most: the third is 429 with a retry time.
		for i := range 2 {
			if code, body := send(alice, "org.matrix.msc4140.delay=9000"); code != 200 {
				t.Fatalf("delayed send %d: %d %v", i, code, body)
			}
		}
		code, body = send(alice, "org.matrix.msc4140.delay=9000")
		wantErrcode(t, "third delayed event", code, body, 429, "M_LIMIT_EXCEEDED")
		if ms, _ := body["retry_after_ms"].(float64); ms <= 0 || ms > 9000 {
			t.Fatalf("retry_after_ms: %v", body)
		}
		if code, body := send(bob, "org.matrix.msc4140.delay=9000"); code != 200 {
			t.Fatalf("bob's own limit: %d %v", code, body)
		}

		// The actions.
		code, body = deDo(t, "GET", delayedPath(b), "", nil)
		wantErrcode(t, "list without a token", code, body, 401, "M_MISSING_TOKEN")
		code, body = deDo(t, "POST", delayedPath(b, "nope"), "", map[string]any{})
		wantErrcode(t, "no action", code, body, 400, "M_MISSING_PARAM")
		code, body = deDo(t, "POST", delayedPath(b, "nope"), "", map[string]any{"action": "oops"})
		wantErrcode(t, "bad action", code, body, 400, "M_INVALID_PARAM")
		code, body = deDo(t, "POST", delayedPath(b, "nope", "oops"), "", map[string]any{})
		wantErrcode(t, "bad action path", code, body, 404, "M_UNRECOGNIZED")
		code, body = deDo(t, "POST", delayedPath(b, "nope", "restart"), "", map[string]any{})
		wantErrcode(t, "unknown delay ID", code, body, 404, "M_NOT_FOUND")
		code, body = deDo(t, "POST", delayedPath(b, "nope", "cancel"), "not-a-token", map[string]any{})
		wantErrcode(t, "bad token", code, body, 401, "M_UNKNOWN_TOKEN")

		// rc_delayed_event_mgmt: six per user, then 429; another user has
		// a bucket of its own.
		for i := 0; ; i++ {
			code, body = deDo(t, "GET", delayedPath(b), alice.tok, nil)
			if code == 429 {
				if i != 6 {
					t.Fatalf("limited after %d requests, want 6", i)
				}
				break
			}
			if code != 200 || i > 6 {
				t.Fatalf("list %d: %d %v", i, code, body)
			}
		}
		wantErrcode(t, "over the limit", code, body, 429, "M_LIMIT_EXCEEDED")
		if code, body := deDo(t, "GET", delayedPath(b), bob.tok, nil); code != 200 {
			t.Fatalf("bob limited by alice's requests: %d %v", code, body)
		}

		// Enabled: /versions and /capabilities say so.
		_, v := deDo(t, "GET", b.URL+"/_matrix/client/versions", "", nil)
		if v["unstable_features"].(map[string]any)["org.matrix.msc4140"] != true {
			t.Fatalf("versions: %v", v)
		}
		_, caps := deDo(t, "GET", b.URL+"/_matrix/client/v3/capabilities", alice.tok, nil)
		want := map[string]any{"max_delay_ms": float64(10000), "max_scheduled": float64(2)}
		if got := caps["capabilities"].(map[string]any)["org.matrix.msc4140.delayed_events"]; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("capabilities: %v", got)
		}
	})
}

// Off by default, as in Synapse: a delay is refused and nothing advertises
// the feature.
func TestDelayedEventsOffByDefault(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		room := delayedRoom(t, alice, bob)
		_, err := alice.cli.SendMessageEvent(t.Context(), room, event.NewEventType(delayedType), map[string]any{},
			mautrix.ReqSendEvent{UnstableDelay: time.Second})
		acctWantErr(t, err, 403, "M_FORBIDDEN")
		_, v := deDo(t, "GET", b.URL+"/_matrix/client/versions", "", nil)
		if v["unstable_features"].(map[string]any)["org.matrix.msc4140"] != false {
			t.Fatalf("versions advertises delayed events: %v", v)
		}
		_, caps := deDo(t, "GET", b.URL+"/_matrix/client/v3/capabilities", alice.tok, nil)
		if _, ok := caps["capabilities"].(map[string]any)["org.matrix.msc4140.delayed_events"]; ok {
			t.Fatalf("capabilities advertise delayed events: %v", caps)
		}
	})
}

// Delayed events survive a restart: those due while the server was down
// are sent when it is back, the others at their time; and one whose
// sending a process began, and maybe finished, without deleting it, is
// sent exactly once by the next.
func TestDelayedEventsSurviveRestart(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e, delayedOn)
		ctx := t.Context()
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		room := delayedRoom(t, alice, bob)
		typ := event.NewEventType(delayedType)
		if _, err := alice.cli.SendStateEvent(ctx, room, typ, "soon", map[string]any{"setter": "soon"},
			mautrix.ReqSendEvent{UnstableDelay: 600 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.cli.SendMessageEvent(ctx, room, typ, map[string]any{"n": "later"},
			mautrix.ReqSendEvent{UnstableDelay: 4 * time.Second}); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.cli.SendMessageEvent(ctx, room, typ, map[string]any{"n": "much later"},
			mautrix.ReqSendEvent{UnstableDelay: time.Hour}); err != nil {
			t.Fatal(err)
		}
		// Two more a process claimed when it stopped: one it never sent,
		// one it sent but did not delete.
		claimed := map[string]string{}
		for _, n := range []string{"claimed, not sent", "claimed and sent"} {
			r, err := alice.cli.SendMessageEvent(ctx, room, typ, map[string]any{"n": n}, mautrix.ReqSendEvent{UnstableDelay: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			claimed[n] = string(r.UnstableDelayID)
		}
		if err := server.ClaimDelayedForTest(b.Server, ctx, claimed["claimed, not sent"], false); err != nil {
			t.Fatal(err)
		}
		if err := server.ClaimDelayedForTest(b.Server, ctx, claimed["claimed and sent"], true); err != nil {
			t.Fatal(err)
		}
		if l := scheduled(t, alice); len(l) != 3 {
			t.Fatalf("%d scheduled before the restart, want 3 (claimed ones are not listed)", len(l))
		}

		b.Stop(t)
		time.Sleep(time.Second) // "soon" falls due while the server is down
		b.Start(t)

		waitFor(t, "the event due during the downtime", func() bool { return stateOf(t, alice, room, "soon") == "soon" })
		count := func() map[string]int {
			n := map[string]int{}
			for _, ev := range timelineWith(t, alice, room) {
				n[fmt.Sprint(ev.Content.Raw["n"])]++
			}
			return n
		}
		waitFor(t, "the claimed events to be sent", func() bool { c := count(); return c["claimed, not sent"] == 1 && c["claimed and sent"] == 1 })
		if l := scheduled(t, alice); len(l) != 2 {
			t.Fatalf("%d scheduled after the restart, want 2", len(l))
		}
		waitFor(t, "the event due after the restart", func() bool { return count()["later"] == 1 })
		time.Sleep(300 * time.Millisecond)
		if c := count(); c["later"] != 1 || c["claimed, not sent"] != 1 || c["claimed and sent"] != 1 || c["much later"] != 0 {
			t.Fatalf("sent after the restart: %v", c)
		}
		if l := scheduled(t, alice); len(l) != 1 || l[0].Content.Raw["n"] != "much later" {
			t.Fatalf("still scheduled: %+v", l)
		}
	})
}
