package server_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"

	"hearth/config"
	"hearth/server"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// These tests drive push rules, notification counts and GET /notifications
// through mautrix-go over HTTP, on every storage engine; pushers and their
// delivery to a fake gateway are in pusher_test.go.

// ruleIDsOf lists the rule IDs of one kind.
func ruleIDsOf(rules []*pushrules.PushRule) []string {
	out := []string{}
	for _, r := range rules {
		out = append(out, r.RuleID)
	}
	return out
}

// TestPushRulesDefaults: a new account's rules are the spec's predefined
// ones (v1.19, plus MSC3930's polls), identical in GET /pushrules/, the
// initial sync's m.push_rules and GET account_data.
func TestPushRulesDefaults(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice := newSyncUser(t, b, "alice")
		rules, err := alice.cli.GetPushRules(t.Context())
		if err != nil {
			t.Fatalf("GET /pushrules/: %v", err)
		}
		want := []string{".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
			".m.rule.is_user_mention", ".m.rule.is_room_mention", ".m.rule.tombstone", ".m.rule.reaction",
			".m.rule.room.server_acl", ".m.rule.suppress_edits", ".org.matrix.msc3930.rule.poll_response"}
		if got := ruleIDsOf(rules.Override); !slices.Equal(got, want) {
			t.Errorf("override rules: %v", got)
		}
		want = []string{".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one", ".m.rule.message",
			".m.rule.encrypted", ".org.matrix.msc3930.rule.poll_start_one_to_one", ".org.matrix.msc3930.rule.poll_start",
			".org.matrix.msc3930.rule.poll_end_one_to_one", ".org.matrix.msc3930.rule.poll_end"}
		if got := ruleIDsOf(rules.Underride); !slices.Equal(got, want) {
			t.Errorf("underride rules: %v", got)
		}
		if len(rules.Content)+len(rules.Room.Map)+len(rules.Sender.Map) != 0 {
			t.Errorf("content/room/sender rules on a new account: %+v %+v %+v", rules.Content, rules.Room, rules.Sender)
		}
		all := acctDo(t, b, "GET", "/_matrix/client/v3/pushrules/", alice.tok, nil)
		global, _ := all.body["global"].(map[string]any)
		for _, k := range []string{"override", "content", "postcontent", "room", "sender", "underride"} {
			if _, ok := global[k].([]any); !ok {
				t.Errorf("kind %s missing from GET /pushrules/: %v", k, global[k])
			}
		}
		p := "/_matrix/client/v3/pushrules/global/"
		r := acctDo(t, b, "GET", p+"override/.m.rule.is_user_mention", alice.tok, nil)
		raw, _ := json.Marshal(r.body["conditions"])
		if string(raw) != `[{"key":"content.m\\.mentions.user_ids","kind":"event_property_contains","value":"@alice:hearth.test"}]` {
			t.Errorf("is_user_mention conditions: %s", raw)
		}
		if r := acctDo(t, b, "GET", p+"override/.m.rule.master/enabled", alice.tok, nil); r.body["enabled"] != false {
			t.Errorf("master enabled: %v", r.body)
		}
		if r := acctDo(t, b, "GET", p+"underride/.m.rule.message/actions", alice.tok, nil); fmt.Sprint(r.body["actions"]) != "[notify]" {
			t.Errorf("message actions: %v", r.body)
		}

		// The same rules in the initial sync and in account data.
		first := doSync(t, alice, "", "", 0)
		pr := hasType(first.AccountData.Events, "m.push_rules")
		if pr == nil {
			t.Fatal("initial sync lacks m.push_rules")
		}
		fromSync, _ := json.Marshal(pr.Content.Raw["global"])
		fromAPI, _ := json.Marshal(global)
		if string(fromSync) != string(fromAPI) {
			t.Errorf("m.push_rules differs from GET /pushrules/:\n%s\n%s", fromSync, fromAPI)
		}
		ad := acctDo(t, b, "GET", "/_matrix/client/v3/user/"+esc(string(alice.id))+"/account_data/m.push_rules", alice.tok, nil)
		fromAD, _ := json.Marshal(ad.body["global"])
		if string(fromAD) != string(fromAPI) {
			t.Errorf("account data m.push_rules differs: %s", fromAD)
		}
		acctDo(t, b, "GET", "/_matrix/client/v3/pushrules/", "", nil).want(t, 401, "M_MISSING_TOKEN")
	})
}

// TestPushRulesCRUD: rules of every kind a user may write, placed with
// before/after, enabled and given actions, changes to default rules, and
// deletion; each change reaches an incremental /sync.
func TestPushRulesCRUD(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice := newSyncUser(t, b, "alice")
		since := doSync(t, alice, "", "", 0).NextBatch
		cond := func(key, pattern string) []*pushrules.PushCondition {
			return []*pushrules.PushCondition{{Kind: pushrules.KindEventMatch, Key: key, Pattern: pattern}}
		}
		notify := []*pushrules.PushAction{{Action: pushrules.ActionNotify}}
		put := func(kind pushrules.PushRuleType, id string, req *mautrix.ReqPutPushRule) {
			t.Helper()
			if err := alice.cli.PutPushRule(ctx, "global", kind, id, req); err != nil {
				t.Fatalf("PUT %s/%s: %v", kind, id, err)
			}
		}
		overrides := func() []string {
			t.Helper()
			rules, err := alice.cli.GetPushRules(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var user []string
			for _, id := range ruleIDsOf(rules.Override) {
				if !strings.HasPrefix(id, ".") {
					user = append(user, id)
				}
			}
			return user
		}

		// Without before/after a rule goes first; before and after place it.
		put(pushrules.OverrideRule, "a", &mautrix.ReqPutPushRule{Conditions: cond("content.body", "a"), Actions: notify})
		put(pushrules.OverrideRule, "b", &mautrix.ReqPutPushRule{Conditions: cond("content.body", "b"), Actions: notify})
		if got := overrides(); !slices.Equal(got, []string{"b", "a"}) {
			t.Fatalf("two rules: %v", got)
		}
		put(pushrules.OverrideRule, "c", &mautrix.ReqPutPushRule{After: "b", Conditions: cond("content.body", "c"), Actions: notify})
		put(pushrules.OverrideRule, "d", &mautrix.ReqPutPushRule{Before: "b", Conditions: cond("content.body", "d"), Actions: notify})
		put(pushrules.OverrideRule, "e", &mautrix.ReqPutPushRule{After: "a", Conditions: cond("content.body", "e"), Actions: notify})
		if got := overrides(); !slices.Equal(got, []string{"d", "b", "c", "a", "e"}) {
			t.Fatalf("before/after: %v", got)
		}
		rules, _ := alice.cli.GetPushRules(ctx)
		if rules.Override[0].RuleID != ".m.rule.master" || rules.Override[1].RuleID != "d" || rules.Override[6].RuleID != ".m.rule.suppress_notices" {
			t.Fatalf("user overrides sit between master and the other defaults: %v", ruleIDsOf(rules.Override))
		}

		// Disabled, then replaced: the new content keeps the rule disabled;
		// replaced with after, it moves.
		if err := alice.cli.SetPushRuleEnabled(ctx, "global", pushrules.OverrideRule, "c", false); err != nil {
			t.Fatal(err)
		}
		put(pushrules.OverrideRule, "c", &mautrix.ReqPutPushRule{After: "e", Conditions: cond("content.body", "cc"), Actions: notify})
		r, err := alice.cli.GetPushRule(ctx, "global", pushrules.OverrideRule, "c")
		if err != nil || r.Enabled || r.Conditions[0].Pattern != "cc" {
			t.Fatalf("replaced rule: %+v %v", r, err)
		}
		if got := overrides(); !slices.Equal(got, []string{"d", "b", "a", "e", "c"}) {
			t.Fatalf("moved rule: %v", got)
		}
		if err := alice.cli.PutPushRuleActions(ctx, "global", pushrules.OverrideRule, "c",
			[]*pushrules.PushAction{{Action: pushrules.ActionNotify}, {Action: pushrules.ActionSetTweak, Tweak: pushrules.TweakHighlight}}); err != nil {
			t.Fatal(err)
		}
		p := "/_matrix/client/v3/pushrules/global/"
		if r := acctDo(t, b, "GET", p+"override/c/actions", alice.tok, nil); !strings.HasPrefix(fmt.Sprint(r.body["actions"]), "[notify map[set_tweak:highlight") {
			t.Fatalf("actions: %v", r.body)
		}

		// The other kinds.
		put(pushrules.ContentRule, "cake", &mautrix.ReqPutPushRule{Pattern: "cake*", Actions: notify})
		put(pushrules.RoomRule, "!room:hearth.test", &mautrix.ReqPutPushRule{Actions: []*pushrules.PushAction{}})
		put(pushrules.SenderRule, "@spam:hearth.test", &mautrix.ReqPutPushRule{Actions: []*pushrules.PushAction{}})
		put(pushrules.UnderrideRule, "u", &mautrix.ReqPutPushRule{Conditions: cond("type", "org.example.*"), Actions: notify})
		rules, _ = alice.cli.GetPushRules(ctx)
		if len(rules.Content) != 1 || rules.Content[0].Pattern != "cake*" || rules.Content[0].Default || len(rules.Room.Map) != 1 ||
			rules.Room.Map["!room:hearth.test"] == nil || len(rules.Sender.Map) != 1 || rules.Underride[0].RuleID != "u" {
			t.Fatalf("other kinds: content %+v room %+v sender %+v underride %v", rules.Content, rules.Room, rules.Sender, ruleIDsOf(rules.Underride))
		}

		// Default rules: enabled and actions change, the rest does not.
		if err := alice.cli.SetPushRuleEnabled(ctx, "global", pushrules.OverrideRule, ".m.rule.master", true); err != nil {
			t.Fatal(err)
		}
		if err := alice.cli.PutPushRuleActions(ctx, "global", pushrules.UnderrideRule, ".m.rule.message", []*pushrules.PushAction{}); err != nil {
			t.Fatal(err)
		}
		if r := acctDo(t, b, "GET", p+"override/.m.rule.master/enabled", alice.tok, nil); r.body["enabled"] != true {
			t.Fatalf("master not enabled: %v", r.body)
		}
		if r := acctDo(t, b, "GET", p+"underride/.m.rule.message", alice.tok, nil); fmt.Sprint(r.body["actions"]) != "[]" || r.body["default"] != true {
			t.Fatalf("message actions: %v", r.body)
		}
		acctDo(t, b, "PUT", p+"override/.m.rule.master", alice.tok, map[string]any{"conditions": []any{}, "actions": []any{}}).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "DELETE", p+"override/.m.rule.master", alice.tok, nil).want(t, 404, "M_NOT_FOUND")

		// Errors.
		acctDo(t, b, "PUT", p+"override/x?before=nope", alice.tok, map[string]any{"conditions": []any{}, "actions": []any{}}).want(t, 400, "M_UNKNOWN")
		acctDo(t, b, "PUT", p+"override/x?after=.m.rule.master", alice.tok, map[string]any{"conditions": []any{}, "actions": []any{}}).want(t, 400, "M_UNKNOWN")
		acctDo(t, b, "PUT", p+"override/x", alice.tok, map[string]any{"actions": []any{}}).want(t, 400, "M_MISSING_PARAM")
		acctDo(t, b, "PUT", p+"override/x", alice.tok, map[string]any{"conditions": []any{map[string]any{"key": "a"}}, "actions": []any{}}).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "PUT", p+"override/x", alice.tok, map[string]any{"conditions": []any{}}).want(t, 400, "M_MISSING_PARAM")
		acctDo(t, b, "PUT", p+"override/x", alice.tok, map[string]any{"conditions": []any{}, "actions": []any{"ring"}}).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "PUT", p+"content/x", alice.tok, map[string]any{"actions": []any{}}).want(t, 400, "M_MISSING_PARAM")
		acctDo(t, b, "PUT", p+"postcontent/x", alice.tok, map[string]any{"conditions": []any{}, "actions": []any{}}).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "PUT", p+"nonsense/x", alice.tok, map[string]any{"actions": []any{}}).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "PUT", p+"override/"+url.PathEscape("a/b"), alice.tok, map[string]any{"conditions": []any{}, "actions": []any{}}).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "PUT", p+"override/nope/enabled", alice.tok, map[string]any{"enabled": true}).want(t, 404, "M_NOT_FOUND")
		acctDo(t, b, "PUT", p+"override/.m.rule.nope/actions", alice.tok, map[string]any{"actions": []any{}}).want(t, 404, "M_NOT_FOUND")
		acctDo(t, b, "PUT", p+"override/c/enabled", alice.tok, map[string]any{}).want(t, 400, "M_MISSING_PARAM")
		acctDo(t, b, "GET", p+"override/nope", alice.tok, nil).want(t, 404, "M_NOT_FOUND")

		// Deletion.
		if err := alice.cli.DeletePushRule(ctx, "global", pushrules.OverrideRule, "b"); err != nil {
			t.Fatal(err)
		}
		acctDo(t, b, "DELETE", p+"override/b", alice.tok, nil).want(t, 404, "M_NOT_FOUND")
		if got := overrides(); !slices.Equal(got, []string{"d", "a", "e", "c"}) {
			t.Fatalf("after delete: %v", got)
		}

		// An incremental sync carries the rules as they are now.
		inc := doSync(t, alice, since, "", 0)
		pr := hasType(inc.AccountData.Events, "m.push_rules")
		if pr == nil {
			t.Fatal("incremental sync lacks m.push_rules after changes")
		}
		raw, _ := json.Marshal(pr.Content.Raw["global"])
		if !strings.Contains(string(raw), `"rule_id":"cake"`) || strings.Contains(string(raw), `"rule_id":"b"`) {
			t.Fatalf("synced rules are not the current ones: %s", raw)
		}
		// Another user's rules are theirs.
		bob := newSyncUser(t, b, "bob")
		if rules, _ := bob.cli.GetPushRules(ctx); len(rules.Content) != 0 || len(rules.Room.Map) != 0 {
			t.Fatalf("bob sees alice's rules: %+v", rules)
		}
	})
}

// TestPushRuleChangeWakesSync: a long-polling /sync returns when a push rule
// changes (Complement's TestPushSync).
func TestPushRuleChangeWakesSync(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice := newSyncUser(t, b, "alice")
		since := doSync(t, alice, "", "", 0).NextBatch
		done := make(chan *mautrix.RespSync, 1)
		go func() {
			r, err := alice.cli.FullSyncRequest(t.Context(), mautrix.ReqSync{Timeout: 20000, Since: since})
			if err != nil {
				t.Error(err)
			}
			done <- r
		}()
		waitParked(t, b, 1)
		start := time.Now()
		acctDo(t, b, "PUT", "/_matrix/client/v3/pushrules/global/room/"+esc("!foo:example.com"), alice.tok,
			map[string]any{"actions": []string{"notify"}}).want(t, 200, "")
		r := <-done
		if r == nil || hasType(r.AccountData.Events, "m.push_rules") == nil || time.Since(start) > 5*time.Second {
			t.Fatalf("sync after a rule change: %+v", r)
		}
	})
}

// syncCounts syncs until the room's counts are as wanted (the evaluator
// records notifications in the background) and returns the answer.
func syncCounts(t *testing.T, u roomUser, room id.RoomID, notif, highlight int) *mautrix.RespSync {
	t.Helper()
	var last *mautrix.UnreadNotificationCounts
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		r := doSync(t, u, "", `{"room":{"timeline":{"limit":1}}}`, 0)
		if jr := r.Rooms.Join[room]; jr != nil && jr.UnreadNotifications != nil {
			last = jr.UnreadNotifications
			if last.NotificationCount == notif && last.HighlightCount == highlight {
				return r
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s in %s: counts %+v, want notification_count %d highlight_count %d", u.id, room, last, notif, highlight)
	return nil
}

func mention(t *testing.T, from roomUser, room id.RoomID, body string, who ...id.UserID) id.EventID {
	t.Helper()
	r, err := from.cli.SendMessageEvent(t.Context(), room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": body,
		"m.mentions": map[string]any{"user_ids": who}})
	if err != nil {
		t.Fatal(err)
	}
	return r.EventID
}

// TestMentionHighlight: a mention raises highlight_count for the mentioned
// user only, everyone else in the room gets a plain notification, the
// sender none; a read receipt clears the reader's counts. The counts come
// in the same /sync answer as the event.
func TestMentionHighlight(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob, carol := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob"), newSyncUser(t, b, "carol")
		room := sharedRoom(t, alice, bob, carol)
		bobSince := doSync(t, bob, "", "", 0).NextBatch

		send(t, alice, room, "hello everyone")
		ev := mention(t, alice, room, "bob, look", bob.id)

		// Bob's next incremental sync has both events and their counts.
		inc := doSync(t, bob, bobSince, "", 0)
		jr := inc.Rooms.Join[room]
		if jr == nil || !slices.Contains(bodies(jr.Timeline.Events), "bob, look") {
			t.Fatalf("bob's sync lacks the mention: %+v", jr)
		}
		if c := jr.UnreadNotifications; c == nil || c.NotificationCount != 2 || c.HighlightCount != 1 {
			t.Fatalf("bob's counts with the event: %+v", c)
		}
		syncCounts(t, carol, room, 2, 0)
		syncCounts(t, alice, room, 0, 0)

		// GET /notifications lists them, newest first; only=highlight the
		// mention; pagination goes on from next_token.
		n := acctDo(t, b, "GET", "/_matrix/client/v3/notifications", bob.tok, nil)
		list, _ := n.body["notifications"].([]any)
		if n.status != 200 || len(list) != 2 {
			t.Fatalf("notifications: %d %v", n.status, n.body)
		}
		top := list[0].(map[string]any)
		if top["event"].(map[string]any)["event_id"] != string(ev) || top["read"] != false || top["room_id"] != string(room) {
			t.Fatalf("newest notification: %v", top)
		}
		if acts, _ := json.Marshal(top["actions"]); !strings.Contains(string(acts), `"highlight"`) {
			t.Fatalf("mention's actions: %s", acts)
		}
		hl := acctDo(t, b, "GET", "/_matrix/client/v3/notifications?only=highlight", bob.tok, nil)
		if l, _ := hl.body["notifications"].([]any); len(l) != 1 {
			t.Fatalf("only=highlight: %v", hl.body)
		}
		page := acctDo(t, b, "GET", "/_matrix/client/v3/notifications?limit=1", bob.tok, nil)
		tok, _ := page.body["next_token"].(string)
		if l, _ := page.body["notifications"].([]any); len(l) != 1 || tok == "" {
			t.Fatalf("first page: %v", page.body)
		}
		page = acctDo(t, b, "GET", "/_matrix/client/v3/notifications?limit=1&from="+tok, bob.tok, nil)
		if l, _ := page.body["notifications"].([]any); len(l) != 1 || l[0].(map[string]any)["event"].(map[string]any)["content"].(map[string]any)["body"] != "hello everyone" {
			t.Fatalf("second page: %v", page.body)
		}
		acctDo(t, b, "GET", "/_matrix/client/v3/notifications?from=x", bob.tok, nil).want(t, 400, "M_INVALID_PARAM")

		// Bob reads: his counts go to zero, carol's stay.
		if err := bob.cli.MarkRead(ctx, room, ev); err != nil {
			t.Fatal(err)
		}
		syncCounts(t, bob, room, 0, 0)
		syncCounts(t, carol, room, 2, 0)
		n = acctDo(t, b, "GET", "/_matrix/client/v3/notifications", bob.tok, nil)
		for _, x := range n.body["notifications"].([]any) {
			if x.(map[string]any)["read"] != true {
				t.Fatalf("notification not read after the receipt: %v", x)
			}
		}
		// A private receipt clears counts too.
		if err := carol.cli.SendReceipt(ctx, room, ev, event.ReceiptTypeReadPrivate, nil); err != nil {
			t.Fatal(err)
		}
		syncCounts(t, carol, room, 0, 0)

		// A user who ignores the sender gets nothing from them.
		if err := carol.cli.SetAccountData(ctx, "m.ignored_user_list", map[string]any{"ignored_users": map[string]any{string(alice.id): map[string]any{}}}); err != nil {
			t.Fatal(err)
		}
		mention(t, alice, room, "carol?", carol.id)
		syncCounts(t, bob, room, 1, 0)
		syncCounts(t, carol, room, 0, 0)
	})
}

// TestThreadNotificationCounts follows Complement's TestThreadedReceipts
// with m.mentions: counts per thread with the filter's
// unread_thread_notifications, threaded and unthreaded receipts clearing
// their part.
func TestThreadNotificationCounts(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		room := sharedRoom(t, alice, bob)
		sendRaw := func(typ event.Type, content map[string]any) id.EventID {
			t.Helper()
			r, err := alice.cli.SendMessageEvent(t.Context(), room, typ, content)
			if err != nil {
				t.Fatal(err)
			}
			return r.EventID
		}
		inThread := func(root id.EventID, body string, mentions ...id.UserID) map[string]any {
			c := map[string]any{"msgtype": "m.text", "body": body, "m.relates_to": map[string]any{"event_id": root, "rel_type": "m.thread"}}
			if len(mentions) > 0 {
				c["m.mentions"] = map[string]any{"user_ids": mentions}
			}
			return c
		}
		a := sendRaw(event.EventMessage, map[string]any{"msgtype": "m.text", "body": "Hello world!"})
		bb := sendRaw(event.EventMessage, inThread(a, "Start thread!"))
		sendRaw(event.EventMessage, inThread(a, "Thread response", bob.id))
		d := sendRaw(event.EventMessage, map[string]any{"msgtype": "m.text", "body": "Hello bob", "m.mentions": map[string]any{"user_ids": []id.UserID{bob.id}}})
		sendRaw(event.EventMessage, inThread(a, "End thread"))
		f := sendRaw(event.EventMessage, map[string]any{"msgtype": "m.text", "body": "Reference!",
			"m.relates_to": map[string]any{"event_id": a, "rel_type": "m.reference"}})
		g := sendRaw(event.EventReaction, map[string]any{"m.relates_to": map[string]any{"event_id": f, "rel_type": "m.annotation", "key": "x"}})

		threadFilter := url.QueryEscape(`{"room":{"timeline":{"unread_thread_notifications":true}}}`)
		// check syncs until the room's counts are as wanted, without and
		// with the filter.
		check := func(n, h, mainN, mainH, threadN, threadH int) {
			t.Helper()
			var plain, threaded acctReply
			deadline := time.Now().Add(10 * time.Second)
			for {
				plain = acctDo(t, b, "GET", "/_matrix/client/v3/sync", bob.tok, nil)
				threaded = acctDo(t, b, "GET", "/_matrix/client/v3/sync?filter="+threadFilter, bob.tok, nil)
				jr := plain.body["rooms"].(map[string]any)["join"].(map[string]any)[string(room)].(map[string]any)
				tj := threaded.body["rooms"].(map[string]any)["join"].(map[string]any)[string(room)].(map[string]any)
				got := fmt.Sprint(jr["unread_notifications"], jr["unread_thread_notifications"], tj["unread_notifications"],
					tj["unread_thread_notifications"])
				want := fmt.Sprint(map[string]any{"notification_count": float64(n), "highlight_count": float64(h)}, nil,
					map[string]any{"notification_count": float64(mainN), "highlight_count": float64(mainH)})
				wantThread := "<nil>"
				if threadN > 0 {
					wantThread = fmt.Sprint(map[string]any{string(a): map[string]any{"notification_count": float64(threadN), "highlight_count": float64(threadH)}})
				}
				want += " " + wantThread
				if got == want {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("counts %s, want %s", got, want)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		receipt := func(ev id.EventID, thread string) {
			t.Helper()
			body := map[string]any{}
			if thread != "" {
				body["thread_id"] = thread
			}
			acctDo(t, b, "POST", "/_matrix/client/v3/rooms/"+esc(string(room))+"/receipt/m.read/"+esc(string(ev)), bob.tok, body).want(t, 200, "")
		}
		// A, D, F in the main timeline (D a mention); B, C, E in A's thread
		// (C a mention); G a reaction, no notification.
		check(6, 2, 3, 1, 3, 1)
		receipt(a, "main")
		check(5, 2, 2, 1, 3, 1)
		receipt(bb, string(a))
		check(4, 2, 2, 1, 2, 1)
		receipt(d, "")
		check(2, 0, 1, 0, 1, 0)
		receipt(g, string(a))
		check(1, 0, 1, 0, 0, 0)
	})
}

// TestPushRulesCopiedOnUpgrade: the function the room upgrade calls copies
// a user's rules about the old room to the new one.
func TestPushRulesCopiedOnUpgrade(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice := newSyncUser(t, b, "alice")
		old, next := "!old:hearth.test", "!new:hearth.test"
		p := "/_matrix/client/v3/pushrules/global/"
		acctDo(t, b, "PUT", p+"room/"+esc(old), alice.tok, map[string]any{"actions": []any{}}).want(t, 200, "")
		acctDo(t, b, "PUT", p+"override/quiet", alice.tok, map[string]any{"actions": []any{},
			"conditions": []any{map[string]any{"kind": "event_match", "key": "room_id", "pattern": old}}}).want(t, 200, "")
		acctDo(t, b, "PUT", p+"room/"+esc("!other:hearth.test"), alice.tok, map[string]any{"actions": []any{}}).want(t, 200, "")
		since := doSync(t, alice, "", "", 0).NextBatch
		if err := b.Server.CopyPushRulesOnUpgrade(ctx, string(alice.id), old, next); err != nil {
			t.Fatal(err)
		}
		rules, _ := alice.cli.GetPushRules(ctx)
		if rules.Room.Map[next] == nil || rules.Room.Map[old] == nil || len(rules.Room.Map) != 3 {
			t.Fatalf("room rules after copy: %v", rules.Room.Map)
		}
		var copied *pushrules.PushRule
		for _, r := range rules.Override {
			if r.RuleID == next {
				copied = r
			}
		}
		if copied == nil || copied.Conditions[0].Pattern != next {
			t.Fatalf("override copy: %+v", copied)
		}
		if hasType(doSync(t, alice, since, "", 0).AccountData.Events, "m.push_rules") == nil {
			t.Fatal("copied rules not synced")
		}
	})
}

// TestPushFollowsMembership: what rules see of the room follows its
// members: a two-member room notifies with a sound (room_one_to_one), a
// third member makes it a group, and the room is a DM again once they
// leave; a member's display name in the room is the one the legacy
// contains_display_name rule looks for.
func TestPushFollowsMembership(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e, func(c *config.Config) { c.Push.LegacyMentionRules = true })
		ctx := t.Context()
		alice, bob, carol := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob"), newSyncUser(t, b, "carol")
		room := sharedRoom(t, alice, bob)
		// latest returns the actions of bob's newest notification, once it
		// is the one for ev.
		latest := func(ev id.EventID) string {
			t.Helper()
			var got string
			waitFor(t, "bob's notification for "+string(ev), func() bool {
				n := acctDo(t, b, "GET", "/_matrix/client/v3/notifications?limit=1", bob.tok, nil)
				l, _ := n.body["notifications"].([]any)
				if len(l) == 0 {
					return false
				}
				top := l[0].(map[string]any)
				raw, _ := json.Marshal(top["actions"])
				got = string(raw)
				return top["event"].(map[string]any)["event_id"] == string(ev)
			})
			return got
		}
		if a := latest(send(t, alice, room, "just us")); !strings.Contains(a, `"sound"`) {
			t.Fatalf("two members: %s", a)
		}
		if _, err := carol.cli.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		if a := latest(send(t, alice, room, "three of us")); a != `["notify"]` {
			t.Fatalf("three members: %s", a)
		}
		if _, err := carol.cli.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		if a := latest(send(t, alice, room, "us again")); !strings.Contains(a, `"sound"`) {
			t.Fatalf("two members again: %s", a)
		}
		if err := bob.cli.SetDisplayName(ctx, "Robert"); err != nil {
			t.Fatal(err)
		}
		if a := latest(send(t, alice, room, "thanks robert!")); !strings.Contains(a, `"highlight"`) {
			t.Fatalf("display name in the body: %s", a)
		}
	})
}

// TestPushRulesFollowUpgrade: POST /upgrade gives the upgrading user their
// rules about the old room in the new one at once, and another local member
// when they join the new room (Complement's TestPushRuleRoomUpgrade).
func TestPushRulesFollowUpgrade(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		room := sharedRoom(t, alice, bob)
		for _, u := range []roomUser{alice, bob} {
			acctDo(t, b, "PUT", "/_matrix/client/v3/pushrules/global/room/"+esc(string(room)), u.tok,
				map[string]any{"actions": []any{}}).want(t, 200, "")
		}
		next := upgrade(t, b, alice, room, map[string]any{"new_version": "11"})
		hasRule := func(u roomUser, roomID id.RoomID) bool {
			t.Helper()
			rules, err := u.cli.GetPushRules(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return rules.Room.Map[string(roomID)] != nil
		}
		if !hasRule(alice, next) || !hasRule(alice, room) {
			t.Fatal("alice's room rule not carried to the new room")
		}
		if _, err := bob.cli.JoinRoomByID(ctx, next); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "bob's rule in the new room", func() bool { return hasRule(bob, next) })
		// The copied rule works: a message in the new room does not
		// notify alice.
		send(t, bob, next, "quiet please")
		syncCounts(t, alice, next, 0, 0)
	})
}

// TestDeactivationDropsPushRulesAndPushers: a deactivated account keeps
// neither pushers nor push rules, as in Synapse.
func TestDeactivationDropsPushRulesAndPushers(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		reg := acctRegister(t, b, "alice")
		acctDo(t, b, "PUT", "/_matrix/client/v3/pushrules/global/sender/"+esc("@spam:hearth.test"), reg.AccessToken,
			map[string]any{"actions": []any{}}).want(t, 200, "")
		acctDo(t, b, "POST", "/_matrix/client/v3/pushers/set", reg.AccessToken, map[string]any{"kind": "http", "app_id": "a",
			"pushkey": "k", "app_display_name": "A", "device_display_name": "D", "lang": "en",
			"data": map[string]any{"url": "https://push.example.org/_matrix/push/v1/notify"}}).want(t, 200, "")
		acctUIA(t, b, "POST", "/_matrix/client/v3/account/deactivate", reg.AccessToken, map[string]any{},
			func(s string) map[string]any { return acctPasswordAuth("alice", acctPW, s) }).want(t, 200, "")
		ps, err := b.Store.PushersOf(ctx, "@alice:hearth.test")
		if err != nil || len(ps) != 0 {
			t.Fatalf("pushers after deactivation: %+v %v", ps, err)
		}
		rules, err := b.Store.PushRulesOf(ctx, "@alice:hearth.test")
		if err != nil || len(rules.Rules) != 0 {
			t.Fatalf("push rules after deactivation: %+v %v", rules, err)
		}
	})
}

// TestNotificationsAskForTheFlush: GET /notifications answers with rows the
// evaluator still holds staged, by having them written at once, not at its
// next flush (an hour away here).
func TestNotificationsAskForTheFlush(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.StartWith(t, e, func(d *server.Deps) { d.PushFlushEvery = time.Hour })
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		room := sharedRoom(t, alice, bob)
		send(t, alice, room, "staged")
		// The count reaches bob's /sync from the staged rows.
		syncCounts(t, bob, room, 1, 0)
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, "GET", b.URL+"/_matrix/client/v3/notifications", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+bob.tok)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET /notifications with the rows staged: %v (it waited for the evaluator's next flush)", err)
		}
		defer res.Body.Close()
		var body struct {
			Notifications []struct {
				Event struct {
					Content map[string]any `json:"content"`
				} `json:"event"`
			} `json:"notifications"`
		}
		if err := json.NewDecoder(res.Body).Decode(&body); err != nil || res.StatusCode != 200 {
			t.Fatalf("GET /notifications: %d, %v", res.StatusCode, err)
		}
		if len(body.Notifications) != 1 || body.Notifications[0].Event.Content["body"] != "staged" {
			t.Fatalf("notifications: %+v", body.Notifications)
		}
	})
}

// TestPushWritesFailing: while the store refuses notification rows (a
// trigger added beside the server, then dropped), the evaluator counts
// what it staged at once, stops evaluating once PushMaxStaged rows wait
// (memory stays bounded), retries the write with back-off, and stores
// every row once the store accepts them again.
func TestPushWritesFailing(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		const maxStaged = 3
		b := servertest.StartWith(t, e, func(d *server.Deps) { d.PushMaxStaged = maxStaged })
		ctx := t.Context()
		alice, bob := newRoomUser(t, b, "alice"), newRoomUser(t, b, "bob")
		created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		if _, err := bob.cli.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		// A second connection to the server's database: it waits for the
		// server's writer to let go of the lock.
		driver, dsn := "sqlite", "file:"+e.Options.SQLitePath+"?_pragma=busy_timeout(10000)"
		if e.Options.Postgres != "" {
			driver, dsn = "pgx", e.Options.Postgres
		}
		db, err := sql.Open(driver, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		exec := func(q string) {
			t.Helper()
			if _, err := db.ExecContext(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		stored := func() int {
			t.Helper()
			var n int
			if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM push_notifications WHERE user_id = $1`, string(bob.id)).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		if e.Options.Postgres != "" {
			exec(`CREATE FUNCTION refuse_notification() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$`)
			exec(`CREATE TRIGGER refuse_notification BEFORE INSERT ON push_notifications FOR EACH ROW EXECUTE FUNCTION refuse_notification()`)
		} else {
			exec(`CREATE TRIGGER refuse_notification BEFORE INSERT ON push_notifications BEGIN SELECT RAISE(ABORT, 'refused by the test'); END`)
		}
		send := func(body string) {
			t.Helper()
			if _, err := alice.cli.SendText(ctx, room, body); err != nil {
				t.Fatal(err)
			}
		}
		send("one")
		send("two")
		syncCounts(t, bob, room, 2, 0)
		time.Sleep(300 * time.Millisecond) // past a flush, which fails
		if n := stored(); n != 0 {
			t.Fatalf("%d notification rows stored past the trigger", n)
		}
		send("three")
		syncCounts(t, bob, room, maxStaged, 0)
		// maxStaged rows wait: nothing after them is evaluated.
		for _, body := range []string{"four", "five", "six"} {
			send(body)
		}
		time.Sleep(500 * time.Millisecond)
		syncCounts(t, bob, room, maxStaged, 0)

		// A reader of whole rows asks for the staged ones to be written
		// while the evaluator backs off from failed writes: it waits, and
		// gets them once the store takes them again.
		type reply struct {
			n   int
			err error
		}
		got := make(chan reply, 1)
		go func() {
			req, err := http.NewRequestWithContext(ctx, "GET", b.URL+"/_matrix/client/v3/notifications", nil)
			if err != nil {
				got <- reply{err: err}
				return
			}
			req.Header.Set("Authorization", "Bearer "+bob.tok)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				got <- reply{err: err}
				return
			}
			defer res.Body.Close()
			var body struct {
				Notifications []json.RawMessage `json:"notifications"`
			}
			if res.StatusCode != http.StatusOK {
				got <- reply{err: fmt.Errorf("status %d", res.StatusCode)}
				return
			}
			err = json.NewDecoder(res.Body).Decode(&body)
			got <- reply{len(body.Notifications), err}
		}()
		select {
		case r := <-got:
			t.Fatalf("GET /notifications answered while its rows could not be written: %+v", r)
		case <-time.After(300 * time.Millisecond):
		}

		if e.Options.Postgres != "" {
			exec(`DROP TRIGGER refuse_notification ON push_notifications`)
		} else {
			exec(`DROP TRIGGER refuse_notification`)
		}
		select {
		case r := <-got:
			// At least the rows staged when it asked; the evaluator may
			// have gone on to the rest meanwhile.
			if r.err != nil || r.n < maxStaged || r.n > 6 {
				t.Fatalf("GET /notifications once the rows could be written: %d notifications, %v; want %d to 6", r.n, r.err, maxStaged)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("GET /notifications still waiting 15 s after the store took the rows again")
		}
		syncCounts(t, bob, room, 6, 0)
		deadline := time.Now().Add(15 * time.Second)
		for stored() != 6 {
			if time.Now().After(deadline) {
				t.Fatalf("%d notification rows stored 15 s after the store accepted them again, want 6", stored())
			}
			time.Sleep(20 * time.Millisecond)
		}
		resp := acctDo(t, b, "GET", "/_matrix/client/v3/notifications", bob.tok, nil)
		if n := len(resp.body["notifications"].([]any)); n != 6 {
			t.Fatalf("GET /notifications: %d notifications, want 6", n)
		}
	})
}
