package server_test

import (
	"fmt"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// Thread subscriptions (MSC4306) and their sliding sync extension and
// pagination (MSC4308), over HTTP on every storage engine.

func threadSubsOn(c *config.Config) { c.ExperimentalFeatures.MSC4306Enabled = true }

func subPath(room id.RoomID, root id.EventID) string {
	return "/_matrix/client/unstable/io.element.msc4306/rooms/" + esc(string(room)) + "/thread/" + esc(string(root)) + "/subscription"
}

// threadReply sends a message into root's thread.
func threadReply(t *testing.T, u roomUser, room id.RoomID, root id.EventID, body string) id.EventID {
	t.Helper()
	r, err := u.cli.SendMessageEvent(t.Context(), room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": body,
		"m.relates_to": map[string]any{"event_id": root, "rel_type": "m.thread"}})
	if err != nil {
		t.Fatal(err)
	}
	return r.EventID
}

func TestThreadSubscriptions(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e, threadSubsOn)
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		room := sharedRoom(t, alice)
		root := send(t, alice, room, "reply in a thread")
		p := subPath(room, root)

		// Not subscribed yet; a manual subscription; then none again.
		acctDo(t, b, "GET", p, alice.tok, nil).want(t, 404, "M_NOT_FOUND")
		acctDo(t, b, "PUT", p, alice.tok, map[string]any{}).want(t, 200, "")
		if r := acctDo(t, b, "GET", p, alice.tok, nil); r.status != 200 || r.body["automatic"] != false {
			t.Fatalf("manual subscription: %d %v", r.status, r.body)
		}
		acctDo(t, b, "DELETE", p, alice.tok, nil).want(t, 200, "")
		acctDo(t, b, "DELETE", p, alice.tok, nil).want(t, 200, "") // idempotent
		acctDo(t, b, "GET", p, alice.tok, nil).want(t, 404, "M_NOT_FOUND")

		// Automatic subscriptions name an event in the thread.
		acctDo(t, b, "PUT", p, alice.tok, map[string]any{"automatic": root}).want(t, 400, "IO.ELEMENT.MSC4306.M_NOT_IN_THREAD")
		other := send(t, alice, room, "another root")
		elsewhere := threadReply(t, alice, room, other, "not this thread")
		acctDo(t, b, "PUT", p, alice.tok, map[string]any{"automatic": elsewhere}).want(t, 400, "IO.ELEMENT.MSC4306.M_NOT_IN_THREAD")
		acctDo(t, b, "PUT", p, alice.tok, map[string]any{"automatic": "$missing:hearth.test"}).want(t, 404, "M_NOT_FOUND")
		acctDo(t, b, "PUT", p, alice.tok, map[string]any{"automatic": 7}).want(t, 400, "M_BAD_JSON")

		// Unsubscribing answers every event sent before it: an automatic
		// subscription caused by one of them is refused, by a later one not.
		p2root := send(t, alice, room, "second thread")
		p2 := subPath(room, p2root)
		r1 := threadReply(t, alice, room, p2root, "r1")
		acctDo(t, b, "PUT", p2, alice.tok, map[string]any{"automatic": r1}).want(t, 200, "")
		if r := acctDo(t, b, "GET", p2, alice.tok, nil); r.body["automatic"] != true {
			t.Fatalf("automatic subscription: %v", r.body)
		}
		// A manual subscription overrides an automatic one.
		acctDo(t, b, "PUT", p2, alice.tok, map[string]any{}).want(t, 200, "")
		if r := acctDo(t, b, "GET", p2, alice.tok, nil); r.body["automatic"] != false {
			t.Fatalf("manual over automatic: %v", r.body)
		}
		r2 := threadReply(t, alice, room, p2root, "r2")
		acctDo(t, b, "DELETE", p2, alice.tok, nil).want(t, 200, "")
		r3 := threadReply(t, alice, room, p2root, "r3")
		for _, cause := range []id.EventID{r1, r2} {
			acctDo(t, b, "PUT", p2, alice.tok, map[string]any{"automatic": cause}).want(t, 409, "IO.ELEMENT.MSC4306.M_CONFLICTING_UNSUBSCRIPTION")
			acctDo(t, b, "GET", p2, alice.tok, nil).want(t, 404, "M_NOT_FOUND")
		}
		acctDo(t, b, "PUT", p2, alice.tok, map[string]any{"automatic": r3}).want(t, 200, "")
		acctDo(t, b, "GET", p2, alice.tok, nil).want(t, 200, "")

		// Roots that do not exist, are not event IDs, or that the user may
		// not see.
		acctDo(t, b, "PUT", subPath(room, "$nothere:hearth.test"), alice.tok, map[string]any{}).want(t, 404, "M_NOT_FOUND")
		acctDo(t, b, "GET", subPath(room, "$nothere:hearth.test"), alice.tok, nil).want(t, 404, "M_NOT_FOUND")
		acctDo(t, b, "GET", subPath(room, "notanevent"), alice.tok, nil).want(t, 400, "M_INVALID_PARAM")
		private := newSyncUser(t, b, "carol")
		acctDo(t, b, "PUT", p, private.tok, map[string]any{}).want(t, 404, "M_NOT_FOUND")
		_ = bob
	})
}

// TestThreadSubscriptionsOff: without experimental_features.msc4306_enabled
// the endpoints are not served, /versions does not list them, and a
// thread reply notifies as any message does.
func TestThreadSubscriptionsOff(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		room := sharedRoom(t, alice, bob)
		root := send(t, alice, room, "root")
		acctDo(t, b, "PUT", subPath(room, root), bob.tok, map[string]any{}).want(t, 404, "M_UNRECOGNIZED")
		v := acctDo(t, b, "GET", "/_matrix/client/versions", "", nil)
		if v.body["unstable_features"].(map[string]any)["org.matrix.msc4306"] != false {
			t.Fatalf("versions: %v", v.body["unstable_features"])
		}
		threadReply(t, alice, room, root, "in the thread")
		syncCounts(t, bob, room, 2, 0)
	})
}

// TestThreadSubscriptionPush: with the feature on, a message in a thread
// notifies the members subscribed to it and no one else (MSC4306's
// default postcontent rules), while mentions still notify.
func TestThreadSubscriptionPush(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e, threadSubsOn)
		alice, bob, carol := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob"), newSyncUser(t, b, "carol")
		room := sharedRoom(t, alice, bob, carol)
		root := send(t, alice, room, "root")
		acctDo(t, b, "PUT", subPath(room, root), bob.tok, map[string]any{}).want(t, 200, "")
		threadReply(t, alice, room, root, "for subscribers")
		syncCounts(t, bob, room, 2, 0)
		syncCounts(t, carol, room, 1, 0) // the root only
		// A mention in the thread reaches carol anyway (override rules
		// come first).
		if _, err := alice.cli.SendMessageEvent(t.Context(), room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "carol?",
			"m.mentions":   map[string]any{"user_ids": []id.UserID{carol.id}},
			"m.relates_to": map[string]any{"event_id": root, "rel_type": "m.thread"}}); err != nil {
			t.Fatal(err)
		}
		syncCounts(t, carol, room, 2, 1)
		// The default rules are listed under postcontent.
		rules := acctDo(t, b, "GET", "/_matrix/client/v3/pushrules/", bob.tok, nil)
		pc := fmt.Sprint(rules.body["global"].(map[string]any)["postcontent"])
		for _, want := range []string{".io.element.msc4306.rule.unsubscribed_thread", ".io.element.msc4306.rule.subscribed_thread", "io.element.msc4306.thread_subscription"} {
			if !strings.Contains(pc, want) {
				t.Fatalf("postcontent rules lack %s: %s", want, pc)
			}
		}
	})
}

// TestThreadSubscriptionsSlidingSync: the MSC4308 extension carries the
// changes since the connection's last response, newest first up to limit
// with a prev_batch the pagination endpoint continues from.
func TestThreadSubscriptionsSlidingSync(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e, threadSubsOn)
		alice := newSyncUser(t, b, "alice")
		room := sharedRoom(t, alice)
		ss := func(pos string, limit int) acctReply {
			t.Helper()
			path := "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?timeout=0"
			if pos != "" {
				path += "&pos=" + pos
			}
			r := acctDo(t, b, "POST", path, alice.tok, map[string]any{"extensions": map[string]any{
				"io.element.msc4308.thread_subscriptions": map[string]any{"enabled": true, "limit": limit}}})
			r.want(t, 200, "")
			return r
		}
		ext := func(r acctReply) map[string]any {
			exts, _ := r.body["extensions"].(map[string]any)
			m, _ := exts["io.element.msc4308.thread_subscriptions"].(map[string]any)
			return m
		}
		first := ss("", 2)
		if ext(first) != nil {
			t.Fatalf("no subscriptions yet: %v", ext(first))
		}
		var roots []id.EventID
		for i := range 3 {
			roots = append(roots, send(t, alice, room, fmt.Sprint("root ", i)))
			acctDo(t, b, "PUT", subPath(room, roots[i]), alice.tok, map[string]any{}).want(t, 200, "")
		}
		acctDo(t, b, "DELETE", subPath(room, roots[0]), alice.tok, nil).want(t, 200, "")
		// Four changes, the last three shown: roots 1 and 2 subscribed,
		// root 0 unsubscribed (its latest change), and a prev_batch.
		next := ss(first.body["pos"].(string), 3)
		got := ext(next)
		sub, _ := got["subscribed"].(map[string]any)[string(room)].(map[string]any)
		unsub, _ := got["unsubscribed"].(map[string]any)[string(room)].(map[string]any)
		if len(sub) != 2 || sub[string(roots[1])] == nil || sub[string(roots[2])] == nil || unsub[string(roots[0])] == nil {
			t.Fatalf("incremental extension: %v", got)
		}
		if s := sub[string(roots[1])].(map[string]any); s["automatic"] != false || s["bump_stamp"] == nil {
			t.Fatalf("subscription fields: %v", s)
		}
		if got["prev_batch"] == nil {
			t.Fatalf("a full page has a prev_batch: %v", got)
		}
		// The pagination endpoint from prev_batch down to the pos the
		// request named (a sliding sync pos the connection still holds):
		// root 0's change is already superseded, so nothing older is left.
		pg := acctDo(t, b, "GET", "/_matrix/client/unstable/io.element.msc4308/thread_subscriptions?dir=b&limit=10&from="+got["prev_batch"].(string)+
			"&to="+first.body["pos"].(string), alice.tok, nil)
		pg.want(t, 200, "")
		if pg.body["subscribed"] != nil || pg.body["unsubscribed"] != nil || pg.body["end"] != nil {
			t.Fatalf("older page: %v", pg.body)
		}
		// Nothing new: the extension is left out.
		if x := ext(ss(next.body["pos"].(string), 3)); x != nil {
			t.Fatalf("no changes: %v", x)
		}
		// All of it, one per page.
		all := acctDo(t, b, "GET", "/_matrix/client/unstable/io.element.msc4308/thread_subscriptions?dir=b&limit=1", alice.tok, nil)
		if all.body["end"] == nil || all.body["unsubscribed"] == nil {
			t.Fatalf("newest page: %v", all.body)
		}
		acctDo(t, b, "GET", "/_matrix/client/unstable/io.element.msc4308/thread_subscriptions?dir=f", alice.tok, nil).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "GET", "/_matrix/client/unstable/io.element.msc4308/thread_subscriptions?dir=b&from=x", alice.tok, nil).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "GET", "/_matrix/client/unstable/io.element.msc4308/thread_subscriptions?dir=b&to=unknownpos", alice.tok, nil).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "GET", "/_matrix/client/unstable/io.element.msc4308/thread_subscriptions?dir=b&limit=0", alice.tok, nil).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "POST", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?timeout=0", alice.tok, map[string]any{"extensions": map[string]any{
			"io.element.msc4308.thread_subscriptions": map[string]any{"enabled": true, "limit": 0}}}).want(t, 400, "M_INVALID_PARAM")
	})
}
