package server_test

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/server"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// These tests drive /sync and the streams around it (account data, tags,
// filters, receipts, push rules) through mautrix-go over HTTP, on every
// storage engine.

// newSyncUser is newRoomUser with the client's UserID set (mautrix needs it
// for the per-user endpoints).
func newSyncUser(t *testing.T, b *servertest.Bundle, name string) roomUser {
	t.Helper()
	u := newRoomUser(t, b, name)
	u.cli.UserID = u.id
	return u
}

// doSync runs one /sync; filter is inline JSON or a filter ID.
func doSync(t *testing.T, u roomUser, since, filter string, timeoutMS int) *mautrix.RespSync {
	t.Helper()
	resp, err := u.cli.FullSyncRequest(t.Context(), mautrix.ReqSync{Timeout: timeoutMS, Since: since, FilterID: filter})
	if err != nil {
		t.Fatalf("sync as %s (since %q): %v", u.id, since, err)
	}
	return resp
}

// bodies lists the body of every m.room.message event.
func bodies(evs []*event.Event) []string {
	var out []string
	for _, e := range evs {
		if e.Type == event.EventMessage {
			b, _ := e.Content.Raw["body"].(string)
			out = append(out, b)
		}
	}
	return out
}

// memberKeys lists the state keys of the m.room.member events.
func memberKeys(evs []*event.Event) []string {
	var out []string
	for _, e := range evs {
		if e.Type == event.StateMember && e.StateKey != nil {
			out = append(out, *e.StateKey)
		}
	}
	slices.Sort(out)
	return out
}

func hasType(evs []*event.Event, typ string) *event.Event {
	for _, e := range evs {
		if e.Type.Type == typ {
			return e
		}
	}
	return nil
}

// sharedRoom creates a public room of owner's that the others join.
func sharedRoom(t *testing.T, owner roomUser, others ...roomUser) id.RoomID {
	t.Helper()
	created, err := owner.cli.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Sync"})
	if err != nil {
		t.Fatalf("createRoom: %v", err)
	}
	for _, o := range others {
		if _, err := o.cli.JoinRoomByID(t.Context(), created.RoomID); err != nil {
			t.Fatalf("%s join: %v", o.id, err)
		}
	}
	return created.RoomID
}

func send(t *testing.T, u roomUser, room id.RoomID, body string) id.EventID {
	t.Helper()
	r, err := u.cli.SendText(t.Context(), room, body)
	if err != nil {
		t.Fatalf("%s send %q: %v", u.id, body, err)
	}
	return r.EventID
}

const bigTimeline = `{"room":{"timeline":{"limit":2000}}}`

// waitParked waits until n /sync requests are asleep in a long poll.
func waitParked(t *testing.T, b *servertest.Bundle, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for server.SyncWaiters(b.Server) < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d syncs parked", server.SyncWaiters(b.Server), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSyncLongPollWakes(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob, carol := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob"), newSyncUser(t, b, "carol")
		room := sharedRoom(t, alice, bob)

		first := doSync(t, bob, "", "", 0)
		if first.Rooms.Join[room] == nil {
			t.Fatalf("initial sync lacks the joined room: %+v", first.Rooms)
		}
		carolFirst := doSync(t, carol, "", "", 0)

		// Bob and Carol park long polls with a 30 s timeout. Carol is not in
		// the room: Alice's message must wake Bob, and leave Carol asleep.
		const timeout = 30000
		type result struct {
			resp *mautrix.RespSync
			err  error
			at   time.Time
		}
		bobDone, carolDone := make(chan result, 1), make(chan result, 1)
		go func() {
			r, err := bob.cli.FullSyncRequest(t.Context(), mautrix.ReqSync{Timeout: timeout, Since: first.NextBatch})
			bobDone <- result{r, err, time.Now()}
		}()
		carolStart := time.Now()
		go func() {
			r, err := carol.cli.FullSyncRequest(t.Context(), mautrix.ReqSync{Timeout: 1500, Since: carolFirst.NextBatch})
			carolDone <- result{r, err, time.Now()}
		}()
		waitParked(t, b, 2)

		sentAt := time.Now()
		evID := send(t, alice, room, "wake up")
		sendReturned := time.Now()
		var got result
		select {
		case got = <-bobDone:
		case <-time.After(10 * time.Second):
			t.Fatal("long poll did not wake within 10 s of the event")
		}
		if got.err != nil {
			t.Fatal(got.err)
		}
		wake := got.at.Sub(sentAt)
		t.Logf("%s: long poll returned %v after the send started (%v after it was acknowledged)", e.Name, wake, got.at.Sub(sendReturned))
		if wake > 2*time.Second {
			t.Fatalf("long poll took %v to wake (timeout %d ms)", wake, timeout)
		}
		jr := got.resp.Rooms.Join[room]
		if jr == nil || len(jr.Timeline.Events) != 1 || jr.Timeline.Events[0].ID != evID || jr.Timeline.Limited {
			t.Fatalf("woken sync: %+v", got.resp.Rooms.Join)
		}

		c := <-carolDone
		if c.err != nil {
			t.Fatal(c.err)
		}
		if !c.resp.Rooms.IsZero() {
			t.Fatalf("carol, outside the room, was sent %+v", c.resp.Rooms)
		}
		if waited := c.at.Sub(carolStart); waited < 1500*time.Millisecond {
			t.Fatalf("carol's poll returned after %v, before its 1.5 s timeout, with nothing", waited)
		}
		if c.resp.NextBatch == "" {
			t.Fatal("empty next_batch")
		}
	})
}

// TestSyncManyWaiters parks 200 long polls (50 per member) and checks one
// event wakes every one of them promptly, and a non-member's stay asleep.
func TestSyncManyWaiters(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, outsider := newSyncUser(t, b, "alice"), newSyncUser(t, b, "outsider")
		members := []roomUser{alice, newSyncUser(t, b, "m1"), newSyncUser(t, b, "m2"), newSyncUser(t, b, "m3")}
		room := sharedRoom(t, alice, members[1:]...)
		const perMember = 50
		type result struct {
			ok bool
			at time.Time
		}
		results := make(chan result, len(members)*perMember)
		for _, m := range members {
			since := doSync(t, m, "", "", 0).NextBatch
			for range perMember {
				go func() {
					r, err := m.cli.FullSyncRequest(t.Context(), mautrix.ReqSync{Timeout: 30000, Since: since})
					ok := err == nil && r.Rooms.Join[room] != nil && len(r.Rooms.Join[room].Timeline.Events) == 1
					results <- result{ok, time.Now()}
				}()
			}
		}
		outsiderSince := doSync(t, outsider, "", "", 0).NextBatch
		outsiderDone := make(chan *mautrix.RespSync, 1)
		go func() {
			r, _ := outsider.cli.FullSyncRequest(t.Context(), mautrix.ReqSync{Timeout: 30000, Since: outsiderSince})
			outsiderDone <- r
		}()
		waitParked(t, b, int64(len(members)*perMember)+1)

		sent := time.Now()
		send(t, alice, room, "everyone up")
		var slowest time.Duration
		for range len(members) * perMember {
			select {
			case r := <-results:
				if !r.ok {
					t.Fatal("a waiter woke without the event")
				}
				slowest = max(slowest, r.at.Sub(sent))
			case <-time.After(15 * time.Second):
				t.Fatal("not every waiter woke within 15 s")
			}
		}
		t.Logf("%s: %d waiters woke, the last %v after the send started", e.Name, len(members)*perMember, slowest)
		if slowest > 5*time.Second {
			t.Fatalf("slowest waiter took %v", slowest)
		}
		select {
		case r := <-outsiderDone:
			t.Fatalf("the outsider's poll returned: %+v", r)
		default:
		}
		if n := server.SyncWaiters(b.Server); n != 1 {
			t.Fatalf("%d polls still parked, want the outsider's alone", n)
		}
	})
}

func TestSyncConcurrentSenders(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx, cancel := context.WithTimeout(t.Context(), 120*time.Second)
		defer cancel()
		const senders, each = 20, 50
		owner := newSyncUser(t, b, "owner")
		var users []roomUser
		for i := range senders {
			users = append(users, newSyncUser(t, b, fmt.Sprintf("sender%d", i)))
		}
		room := sharedRoom(t, owner, users...)

		// Three members follow the room with long polls while the senders
		// write; each collects the message bodies in the order seen.
		observers := []roomUser{owner, users[0], users[senders-1]}
		seen := make([][]string, len(observers))
		var obs sync.WaitGroup
		for i, o := range observers {
			since := doSync(t, o, "", bigTimeline, 0).NextBatch
			obs.Add(1)
			go func() {
				defer obs.Done()
				for len(seen[i]) < senders*each && ctx.Err() == nil {
					resp, err := o.cli.FullSyncRequest(ctx, mautrix.ReqSync{Timeout: 5000, Since: since, FilterID: bigTimeline})
					if err != nil {
						t.Errorf("observer %s: %v", o.id, err)
						return
					}
					if jr := resp.Rooms.Join[room]; jr != nil {
						if jr.Timeline.Limited {
							t.Errorf("observer %s: timeline limited", o.id)
							return
						}
						seen[i] = append(seen[i], bodies(jr.Timeline.Events)...)
					}
					since = resp.NextBatch
				}
			}()
		}

		start := time.Now()
		var wg sync.WaitGroup
		for i, u := range users {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range each {
					if _, err := u.cli.SendText(ctx, room, fmt.Sprintf("%d-%d", i, j)); err != nil {
						t.Errorf("sender %d message %d: %v", i, j, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		t.Logf("%s: %d messages sent by %d senders in %v", e.Name, senders*each, senders, time.Since(start))
		obs.Wait()
		if t.Failed() {
			return
		}

		// Everyone saw everything once, in the same order, and each
		// sender's messages in the order sent.
		for i, s := range seen {
			if len(s) != senders*each {
				t.Fatalf("observer %d saw %d messages, want %d", i, len(s), senders*each)
			}
			if !slices.Equal(s, seen[0]) {
				t.Fatalf("observer %d saw another order than observer 0", i)
			}
		}
		next := make([]int, senders)
		for _, body := range seen[0] {
			var i, j int
			fmt.Sscanf(body, "%d-%d", &i, &j)
			if j != next[i] {
				t.Fatalf("sender %d: message %d seen where %d was due", i, j, next[i])
			}
			next[i]++
		}
		// A fresh initial sync agrees with the followers.
		fresh := doSync(t, users[5], "", bigTimeline, 0)
		if got := bodies(fresh.Rooms.Join[room].Timeline.Events); !slices.Equal(got, seen[0]) {
			t.Fatalf("initial sync order differs: %d messages", len(got))
		}
	})
}

func TestSyncSurvivesRestart(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		room := sharedRoom(t, alice, bob)
		since := doSync(t, bob, "", "", 0).NextBatch
		send(t, alice, room, "before restart")
		if err := bob.cli.SetAccountData(t.Context(), "org.example.pref", map[string]any{"v": 1}); err != nil {
			t.Fatal(err)
		}

		b.Restart(t)

		send(t, alice, room, "after restart")
		// The new process's push evaluator catches up from its stored
		// position first, and /sync shows events only once their counts
		// are known, so the answer may come in more than one step: follow
		// the tokens until the last message, without a gap.
		var got []string
		prefSeen := false
		next := since
		deadline := time.Now().Add(10 * time.Second)
		for !slices.Contains(got, "after restart") {
			if time.Now().After(deadline) {
				t.Fatalf("sync after restart: only %v", got)
			}
			resp := doSync(t, bob, next, "", 1000)
			if jr := resp.Rooms.Join[room]; jr != nil {
				if jr.Timeline.Limited {
					t.Fatalf("sync after restart is limited: %+v", jr.Timeline)
				}
				got = append(got, bodies(jr.Timeline.Events)...)
			}
			prefSeen = prefSeen || hasType(resp.AccountData.Events, "org.example.pref") != nil
			next = resp.NextBatch
		}
		if !slices.Equal(got, []string{"before restart", "after restart"}) {
			t.Fatalf("timeline after restart: %v", got)
		}
		if !prefSeen {
			t.Fatal("account data lost across the restart")
		}
		// The new token is quiet, and the new process's notifier wakes a
		// long poll on it.
		again := doSync(t, bob, next, "", 0)
		if !again.Rooms.IsZero() {
			t.Fatalf("sync after catching up: %+v", again.Rooms)
		}
		done := make(chan *mautrix.RespSync, 1)
		go func() {
			r, err := bob.cli.FullSyncRequest(t.Context(), mautrix.ReqSync{Timeout: 30000, Since: again.NextBatch})
			if err != nil {
				t.Error(err)
			}
			done <- r
		}()
		waitParked(t, b, 1)
		send(t, alice, room, "wake after restart")
		select {
		case r := <-done:
			if r == nil || r.Rooms.Join[room] == nil || !slices.Equal(bodies(r.Rooms.Join[room].Timeline.Events), []string{"wake after restart"}) {
				t.Fatalf("woken sync after restart: %+v", r)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("long poll after restart did not wake")
		}
	})
}

func TestSyncLimitedTimeline(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		room := sharedRoom(t, alice, bob)
		for i := range 12 {
			send(t, alice, room, fmt.Sprint("m", i))
		}
		const five = `{"room":{"timeline":{"limit":5}}}`
		first := doSync(t, bob, "", five, 0)
		jr := first.Rooms.Join[room]
		if !jr.Timeline.Limited || jr.Timeline.PrevBatch == "" {
			t.Fatalf("initial timeline not limited: limited=%v prev_batch=%q", jr.Timeline.Limited, jr.Timeline.PrevBatch)
		}
		if got := bodies(jr.Timeline.Events); !slices.Equal(got, []string{"m7", "m8", "m9", "m10", "m11"}) {
			t.Fatalf("initial timeline: %v", got)
		}
		// The state is the state at the start of the timeline: the room's
		// creation and both members are there, and no message is.
		if hasType(jr.State.Events, "m.room.create") == nil || !slices.Equal(memberKeys(jr.State.Events), []string{string(alice.id), string(bob.id)}) {
			t.Fatalf("initial state: %d events, members %v", len(jr.State.Events), memberKeys(jr.State.Events))
		}

		// Incremental: a topic change falls outside the 5-event window, so
		// it must arrive in the state block.
		if _, err := alice.cli.SendStateEvent(t.Context(), room, event.StateTopic, "", map[string]string{"topic": "new topic"}); err != nil {
			t.Fatal(err)
		}
		for i := 12; i < 20; i++ {
			send(t, alice, room, fmt.Sprint("m", i))
		}
		incResp := doSync(t, bob, first.NextBatch, five, 0)
		inc := incResp.Rooms.Join[room]
		if inc == nil || !inc.Timeline.Limited || inc.Timeline.PrevBatch == "" {
			t.Fatalf("incremental timeline not limited: %+v", inc)
		}
		if got := bodies(inc.Timeline.Events); !slices.Equal(got, []string{"m15", "m16", "m17", "m18", "m19"}) {
			t.Fatalf("incremental timeline: %v", got)
		}
		topic := hasType(inc.State.Events, "m.room.topic")
		if topic == nil || topic.Content.Raw["topic"] != "new topic" || len(inc.State.Events) != 1 {
			t.Fatalf("incremental state delta: %+v", inc.State.Events)
		}
		// Not limited: everything since fits, and the state block is empty.
		send(t, alice, room, "m20")
		small := doSync(t, bob, incResp.NextBatch, five, 0).Rooms.Join[room]
		if small == nil || small.Timeline.Limited || len(small.State.Events) != 0 || !slices.Equal(bodies(small.Timeline.Events), []string{"m20"}) {
			t.Fatalf("small incremental: limited=%v state=%d %v", small.Timeline.Limited, len(small.State.Events), bodies(small.Timeline.Events))
		}

		// prev_batch leads /messages to the events just before the window,
		// once /messages is routed on this tree.
		msgs := acctDo(t, b, "GET", "/_matrix/client/v3/rooms/"+esc(string(room))+"/messages?dir=b&limit=3&from="+url.QueryEscape(inc.Timeline.PrevBatch), bob.tok, nil)
		if msgs.errcode() != "M_UNRECOGNIZED" {
			var got []string
			chunk, _ := msgs.body["chunk"].([]any)
			for _, c := range chunk {
				content, _ := c.(map[string]any)["content"].(map[string]any)
				if body, ok := content["body"].(string); ok {
					got = append(got, body)
				}
			}
			if msgs.status != 200 || !slices.Equal(got, []string{"m14", "m13", "m12"}) {
				t.Fatalf("/messages from prev_batch: %d %v", msgs.status, got)
			}
		}
	})
}

// TestSyncNewlyJoinedLimited: a room joined since the last sync is
// limited unless its timeline is the whole room, so the client knows to
// paginate for what a filter or the limit left out (Complement's TestSync,
// "Newly joined room has correct timeline in incremental sync").
func TestSyncNewlyJoinedLimited(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob, carol := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob"), newSyncUser(t, b, "carol")
		room := sharedRoom(t, alice)
		for i := range 8 {
			send(t, alice, room, fmt.Sprint("m", i))
		}
		const messagesOnly = `{"room":{"timeline":{"limit":10,"types":["m.room.message"]},"state":{"types":[]}}}`
		bobSince := doSync(t, bob, "", messagesOnly, 0).NextBatch
		carolSince := doSync(t, carol, "", bigTimeline, 0).NextBatch
		for _, u := range []roomUser{bob, carol} {
			if _, err := u.cli.JoinRoomByID(t.Context(), room); err != nil {
				t.Fatal(err)
			}
		}
		// Every message fits, but the room's state events were filtered out.
		jr := doSync(t, bob, bobSince, messagesOnly, 0).Rooms.Join[room]
		if jr == nil || len(bodies(jr.Timeline.Events)) != 8 || !jr.Timeline.Limited {
			t.Fatalf("filtered newly joined room: %+v", jr)
		}
		// The whole room fits: not limited.
		jr = doSync(t, carol, carolSince, bigTimeline, 0).Rooms.Join[room]
		if jr == nil || hasType(jr.Timeline.Events, "m.room.create") == nil || jr.Timeline.Limited {
			t.Fatalf("whole newly joined room: %+v", jr)
		}
	})
}

func TestSyncLazyLoadMembers(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob, carol, dave := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob"), newSyncUser(t, b, "carol"), newSyncUser(t, b, "dave")
		room := sharedRoom(t, alice, bob, carol, dave)
		for i := range 4 {
			send(t, dave, room, fmt.Sprint("d", i))
		}
		const lazy = `{"room":{"timeline":{"limit":3},"state":{"lazy_load_members":true}}}`
		first := doSync(t, bob, "", lazy, 0)
		jr := first.Rooms.Join[room]
		// Only the timeline's sender and the user themself.
		if got := memberKeys(jr.State.Events); !slices.Equal(got, []string{string(bob.id), string(dave.id)}) {
			t.Fatalf("lazy members: %v", got)
		}
		if hasType(jr.State.Events, "m.room.create") == nil || hasType(jr.State.Events, "m.room.power_levels") == nil {
			t.Fatal("lazy loading dropped non-member state")
		}
		if jr.Summary.JoinedMemberCount == nil || *jr.Summary.JoinedMemberCount != 4 || len(jr.Summary.Heroes) != 3 {
			t.Fatalf("summary: %+v", jr.Summary)
		}
		// Without lazy loading every member is sent.
		if got := memberKeys(doSync(t, bob, "", `{"room":{"timeline":{"limit":3}}}`, 0).Rooms.Join[room].State.Events); len(got) != 4 {
			t.Fatalf("full members: %v", got)
		}

		// Incremental: Dave's membership was already sent to this device,
		// Carol's was not.
		send(t, dave, room, "d4")
		send(t, carol, room, "c0")
		inc := doSync(t, bob, first.NextBatch, lazy, 0).Rooms.Join[room]
		if got := memberKeys(inc.State.Events); !slices.Equal(got, []string{string(carol.id)}) {
			t.Fatalf("incremental lazy members: %v", got)
		}
		// include_redundant_members sends them again.
		const redundant = `{"room":{"timeline":{"limit":3},"state":{"lazy_load_members":true,"include_redundant_members":true}}}`
		red := doSync(t, bob, first.NextBatch, redundant, 0).Rooms.Join[room]
		if got := memberKeys(red.State.Events); !slices.Equal(got, []string{string(bob.id), string(carol.id), string(dave.id)}) {
			t.Fatalf("redundant lazy members: %v", got)
		}
	})
}

func TestSyncMembershipSections(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Secret",
			InitialState: []*event.Event{{Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}}}}})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		send(t, alice, room, "before invite")
		since := doSync(t, bob, "", "", 0).NextBatch

		// Invite: stripped state and the invite itself.
		if _, err := alice.cli.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.id}); err != nil {
			t.Fatal(err)
		}
		resp := doSync(t, bob, since, "", 0)
		inv := resp.Rooms.Invite[room]
		if inv == nil {
			t.Fatalf("no invite: %+v", resp.Rooms)
		}
		types := map[string]bool{}
		for _, ev := range inv.State.Events {
			types[ev.Type.Type] = true
			if ev.Type.Type == "m.room.create" {
				// The create event whole (spec v1.16, MSC4311).
				if ev.ID == "" || ev.Timestamp == 0 || ev.RoomID != room {
					t.Fatalf("invite_state create event not whole: %+v", ev)
				}
				continue
			}
			if ev.ID != "" || ev.Content.Raw == nil {
				t.Fatalf("invite_state event not stripped: %+v", ev)
			}
		}
		member := hasType(inv.State.Events, "m.room.member")
		if !types["m.room.create"] || !types["m.room.join_rules"] || !types["m.room.name"] || member == nil ||
			member.Content.Raw["membership"] != "invite" || *member.StateKey != string(bob.id) || types["m.room.power_levels"] {
			t.Fatalf("invite_state: %v", types)
		}

		// Join: the room moves to join with its full state; history from
		// before the join is hidden (history_visibility joined).
		if _, err := bob.cli.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		resp = doSync(t, bob, resp.NextBatch, "", 0)
		jr := resp.Rooms.Join[room]
		if jr == nil || hasType(jr.State.Events, "m.room.create") == nil {
			t.Fatalf("join section: %+v", resp.Rooms)
		}
		if got := bodies(jr.Timeline.Events); len(got) != 0 {
			t.Fatalf("history before the join leaked: %v", got)
		}

		// Leave: the leave section holds the leave and nothing after it.
		send(t, alice, room, "while joined")
		if _, err := bob.cli.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		send(t, alice, room, "after leave")
		resp = doSync(t, bob, resp.NextBatch, "", 0)
		lr := resp.Rooms.Leave[room]
		if lr == nil || resp.Rooms.Join[room] != nil || len(lr.Timeline.Events) == 0 {
			t.Fatalf("leave section: %+v", resp.Rooms)
		}
		last := lr.Timeline.Events[len(lr.Timeline.Events)-1]
		if got := bodies(lr.Timeline.Events); !slices.Equal(got, []string{"while joined"}) ||
			last.Type != event.StateMember || last.Content.Raw["membership"] != "leave" {
			t.Fatalf("leave timeline: %v, last %s", got, last.Type.Type)
		}
		// Nothing more arrives for the left room.
		send(t, alice, room, "much later")
		if later := doSync(t, bob, resp.NextBatch, "", 0); !later.Rooms.IsZero() {
			t.Fatalf("left room still syncing: %+v", later.Rooms)
		}

		// Initial syncs list left rooms only with include_leave.
		if plain := doSync(t, bob, "", "", 0); plain.Rooms.Leave[room] != nil {
			t.Fatal("left room in an initial sync without include_leave")
		}
		withLeave := doSync(t, bob, "", `{"room":{"include_leave":true}}`, 0).Rooms.Leave[room]
		if withLeave == nil {
			t.Fatal("include_leave: left room missing")
		}
		if got := bodies(withLeave.Timeline.Events); !slices.Equal(got, []string{"while joined"}) {
			t.Fatalf("include_leave timeline: %v", got)
		}
		// full_state resends a joined room's whole state with no news.
		quiet := doSync(t, alice, "", "", 0).NextBatch
		full, err := alice.cli.FullSyncRequest(ctx, mautrix.ReqSync{Since: quiet, FullState: true})
		if err != nil || full.Rooms.Join[room] == nil || hasType(full.Rooms.Join[room].State.Events, "m.room.create") == nil {
			t.Fatalf("full_state: %+v %v", full, err)
		}

		// Knock: the knock section with stripped state.
		knockRoom, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Door", RoomVersion: "7",
			InitialState: []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}}})
		if err != nil {
			t.Fatal(err)
		}
		beforeKnock := doSync(t, bob, "", "", 0).NextBatch
		if r := acctDo(t, b, "POST", "/_matrix/client/v3/knock/"+esc(string(knockRoom.RoomID)), bob.tok, map[string]any{"reason": "let me in"}); r.status != 200 {
			t.Fatalf("knock: %d %v", r.status, r.body)
		}
		kr := doSync(t, bob, beforeKnock, "", 0).Rooms.Knock[knockRoom.RoomID]
		if kr == nil || hasType(kr.State.Events, "m.room.name") == nil || hasType(kr.State.Events, "m.room.member") == nil ||
			hasType(kr.State.Events, "m.room.member").Content.Raw["membership"] != "knock" {
			t.Fatalf("knock section: %+v", kr)
		}

		// Forgotten rooms are gone even with include_leave.
		if _, err := bob.cli.ForgetRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		if doSync(t, bob, "", `{"room":{"include_leave":true}}`, 0).Rooms.Leave[room] != nil {
			t.Fatal("forgotten room still listed")
		}
	})
}

func TestSyncAccountDataAndTags(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		room := sharedRoom(t, alice)
		first := doSync(t, alice, "", "", 0)
		if rules := hasType(first.AccountData.Events, "m.push_rules"); rules == nil || rules.Content.Raw["global"] == nil {
			t.Fatal("initial sync lacks m.push_rules account data")
		}

		// Global and room account data round trip.
		if err := alice.cli.SetAccountData(ctx, "org.example.settings", map[string]any{"theme": "dark"}); err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if err := alice.cli.GetAccountData(ctx, "org.example.settings", &got); err != nil || got["theme"] != "dark" {
			t.Fatalf("get account data: %v %v", got, err)
		}
		if err := alice.cli.SetRoomAccountData(ctx, room, "org.example.room", map[string]any{"pinned": true}); err != nil {
			t.Fatal(err)
		}
		base := "/_matrix/client/v3/user/" + esc(string(alice.id))
		if r := acctDo(t, b, "GET", base+"/rooms/"+esc(string(room))+"/account_data/org.example.room", alice.tok, nil); r.status != 200 || r.body["pinned"] != true {
			t.Fatalf("get room account data: %d %v", r.status, r.body)
		}
		acctDo(t, b, "GET", base+"/account_data/org.example.missing", alice.tok, nil).want(t, 404, "M_NOT_FOUND")
		acctDo(t, b, "GET", base+"/account_data/org.example.settings", bob.tok, nil).want(t, 403, "M_FORBIDDEN")
		acctDo(t, b, "PUT", base+"/account_data/org.example.settings", bob.tok, map[string]any{}).want(t, 403, "M_FORBIDDEN")
		acctDo(t, b, "PUT", base+"/account_data/m.push_rules", alice.tok, map[string]any{}).want(t, 400, "M_BAD_JSON")
		acctDo(t, b, "PUT", base+"/rooms/"+esc(string(room))+"/account_data/m.fully_read", alice.tok, map[string]any{"event_id": "$x"}).want(t, 400, "M_BAD_JSON")
		acctDo(t, b, "PUT", base+"/account_data/org.example.settings", alice.tok, `[1]`).want(t, 400, "M_BAD_JSON")

		// Tags: stored as m.tag room account data.
		if err := alice.cli.AddTag(ctx, room, event.RoomTagFavourite, 0.25); err != nil {
			t.Fatal(err)
		}
		if err := alice.cli.AddTag(ctx, room, "u.work", 0.5); err != nil {
			t.Fatal(err)
		}
		if err := alice.cli.RemoveTag(ctx, room, "u.work"); err != nil {
			t.Fatal(err)
		}
		tags, err := alice.cli.GetTags(ctx, room)
		if err != nil || len(tags.Tags) != 1 || tags.Tags[event.RoomTagFavourite].Order != "0.25" {
			t.Fatalf("tags: %+v %v", tags, err)
		}
		acctDo(t, b, "PUT", base+"/rooms/"+esc(string(room))+"/tags/u.bad", alice.tok, map[string]any{"order": "high"}).want(t, 400, "M_BAD_JSON")

		// All of it arrives in the next sync, global and per room.
		resp := doSync(t, alice, first.NextBatch, "", 0)
		if s := hasType(resp.AccountData.Events, "org.example.settings"); s == nil || s.Content.Raw["theme"] != "dark" {
			t.Fatalf("global account data in sync: %+v", resp.AccountData.Events)
		}
		jr := resp.Rooms.Join[room]
		if jr == nil {
			t.Fatal("room account data did not bring the room into the sync")
		}
		tag := hasType(jr.AccountData.Events, "m.tag")
		if hasType(jr.AccountData.Events, "org.example.room") == nil || tag == nil {
			t.Fatalf("room account data in sync: %+v", jr.AccountData.Events)
		}
		if tg, _ := tag.Content.Raw["tags"].(map[string]any); len(tg) != 1 || tg["m.favourite"] == nil {
			t.Fatalf("m.tag in sync: %v", tag.Content.Raw)
		}
		// An account-data filter keeps only what it names.
		only := doSync(t, alice, first.NextBatch, `{"account_data":{"types":["org.example.*"]},"room":{"account_data":{"not_types":["m.tag"]}}}`, 0)
		if len(only.AccountData.Events) != 1 || hasType(only.Rooms.Join[room].AccountData.Events, "m.tag") != nil {
			t.Fatalf("filtered account data: %+v / %+v", only.AccountData.Events, only.Rooms.Join[room].AccountData.Events)
		}
	})
}

func TestSyncFilters(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		room, other := sharedRoom(t, alice), sharedRoom(t, alice)
		base := "/_matrix/client/v3/user/" + esc(string(alice.id)) + "/filter"

		// Stored and read back as sent.
		def := map[string]any{"event_fields": []string{"type", "content.body"},
			"room": map[string]any{"rooms": []string{string(room)}, "timeline": map[string]any{"limit": 2, "not_types": []string{"m.room.member"}}}}
		created := acctDo(t, b, "POST", base, alice.tok, def)
		fid, _ := created.body["filter_id"].(string)
		if created.status != 200 || fid == "" {
			t.Fatalf("create filter: %d %v", created.status, created.body)
		}
		back := acctDo(t, b, "GET", base+"/"+fid, alice.tok, nil)
		if rf, _ := back.body["room"].(map[string]any); back.status != 200 || rf["timeline"] == nil {
			t.Fatalf("get filter: %d %v", back.status, back.body)
		}
		acctDo(t, b, "GET", base+"/999999", alice.tok, nil).want(t, 404, "M_NOT_FOUND")
		acctDo(t, b, "GET", "/_matrix/client/v3/user/"+esc(string(bob.id))+"/filter/"+fid, bob.tok, nil).want(t, 404, "M_NOT_FOUND")
		acctDo(t, b, "GET", base+"/"+fid, bob.tok, nil).want(t, 403, "M_FORBIDDEN")
		acctDo(t, b, "POST", base, alice.tok, map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": "ten"}}}).want(t, 400, "M_BAD_JSON")
		acctDo(t, b, "POST", base, alice.tok, map[string]any{"room": map[string]any{"rooms": []string{"not-a-room"}}}).want(t, 400, "M_BAD_JSON")
		acctDo(t, b, "POST", base, alice.tok, map[string]any{"event_format": "xml"}).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "POST", base, alice.tok, map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": -1}}}).want(t, 400, "M_INVALID_PARAM")
		if _, err := alice.cli.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 1}}}); err != nil {
			t.Fatalf("mautrix CreateFilter: %v", err)
		}

		send(t, alice, room, "one")
		send(t, alice, room, "two")
		send(t, alice, room, "three")
		send(t, alice, other, "elsewhere")

		// Applied by ID: only room, no member events, last two messages,
		// each event trimmed to type and content.body.
		r := acctDo(t, b, "GET", "/_matrix/client/v3/sync?filter="+fid, alice.tok, nil)
		join, _ := r.body["rooms"].(map[string]any)["join"].(map[string]any)
		if r.status != 200 || len(join) != 1 || join[string(room)] == nil {
			t.Fatalf("rooms filter: %d %v", r.status, join)
		}
		tl := join[string(room)].(map[string]any)["timeline"].(map[string]any)
		evs, _ := tl["events"].([]any)
		if len(evs) != 2 || tl["limited"] != true {
			t.Fatalf("filtered timeline: %v", tl)
		}
		for i, want := range []string{"two", "three"} {
			ev := evs[i].(map[string]any)
			content, _ := ev["content"].(map[string]any)
			if len(ev) != 2 || ev["type"] != "m.room.message" || len(content) != 1 || content["body"] != want {
				t.Fatalf("event_fields: %v", ev)
			}
		}
		// Parsed filters are kept: the same ID again gives the same
		// answer, and stays Alice's (Bob's /sync with it is refused even
		// though Alice's made it a cache entry).
		again := acctDo(t, b, "GET", "/_matrix/client/v3/sync?filter="+fid, alice.tok, nil)
		if tl2 := again.body["rooms"].(map[string]any)["join"].(map[string]any)[string(room)].(map[string]any)["timeline"]; fmt.Sprint(tl2) != fmt.Sprint(tl) {
			t.Fatalf("the filter again: %v, first %v", tl2, tl)
		}
		acctDo(t, b, "GET", "/_matrix/client/v3/sync?filter="+fid, bob.tok, nil).want(t, 404, "M_NOT_FOUND")
		// Inline: not_rooms and types.
		resp := doSync(t, alice, "", `{"room":{"not_rooms":["`+string(room)+`"],"timeline":{"types":["m.room.message"]}}}`, 0)
		if resp.Rooms.Join[room] != nil || resp.Rooms.Join[other] == nil {
			t.Fatalf("not_rooms: %v", resp.Rooms.Join)
		}
		for _, ev := range resp.Rooms.Join[other].Timeline.Events {
			if ev.Type != event.EventMessage {
				t.Fatalf("types filter let %s through", ev.Type.Type)
			}
		}
		acctDo(t, b, "GET", "/_matrix/client/v3/sync?filter=12345", alice.tok, nil).want(t, 404, "M_NOT_FOUND")
		acctDo(t, b, "GET", "/_matrix/client/v3/sync?filter="+url.QueryEscape(`{"room":{"timeline":{"limit":"x"}}}`), alice.tok, nil).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "GET", "/_matrix/client/v3/sync?since=bogus", alice.tok, nil).want(t, 400, "M_INVALID_PARAM")
	})
}

func TestSyncReceipts(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob, carol := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob"), newSyncUser(t, b, "carol")
		room := sharedRoom(t, alice, bob)
		msg := send(t, alice, room, "read me")
		since := doSync(t, alice, "", "", 0).NextBatch
		bobSince := doSync(t, bob, "", "", 0).NextBatch

		if err := bob.cli.SendReceipt(ctx, room, msg, event.ReceiptTypeRead, map[string]any{"thread_id": "main"}); err != nil {
			t.Fatal(err)
		}
		if err := bob.cli.SetReadMarkers(ctx, room, map[string]any{"m.fully_read": msg, "m.read.private": msg}); err != nil {
			t.Fatal(err)
		}
		rooms := "/_matrix/client/v3/rooms/" + esc(string(room))
		acctDo(t, b, "POST", rooms+"/receipt/m.unknown/"+esc(string(msg)), bob.tok, map[string]any{}).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "POST", rooms+"/receipt/m.read/"+esc(string(msg)), bob.tok, map[string]any{"thread_id": "nope"}).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "POST", rooms+"/receipt/m.read/"+esc(string(msg)), carol.tok, map[string]any{}).want(t, 403, "M_FORBIDDEN")
		acctDo(t, b, "POST", rooms+"/receipt/m.read/%24missing", bob.tok, map[string]any{}).want(t, 404, "M_NOT_FOUND")

		receiptsOf := func(resp *mautrix.RespSync) map[string]any {
			t.Helper()
			jr := resp.Rooms.Join[room]
			if jr == nil {
				t.Fatalf("no room in sync: %+v", resp.Rooms)
			}
			r := hasType(jr.Ephemeral.Events, "m.receipt")
			if r == nil {
				t.Fatalf("no m.receipt: %+v", jr.Ephemeral.Events)
			}
			byType, _ := r.Content.Raw[string(msg)].(map[string]any)
			return byType
		}
		// Alice sees Bob's public receipt, threaded, not his private one.
		ar := receiptsOf(doSync(t, alice, since, "", 0))
		read, _ := ar["m.read"].(map[string]any)
		info, _ := read[string(bob.id)].(map[string]any)
		if info == nil || info["thread_id"] != "main" || info["ts"] == nil || ar["m.read.private"] != nil {
			t.Fatalf("alice's receipts: %v", ar)
		}
		// Bob sees both, and his fully-read marker as room account data.
		bobResp := doSync(t, bob, bobSince, "", 0)
		if br := receiptsOf(bobResp); br["m.read"] == nil || br["m.read.private"] == nil {
			t.Fatalf("bob's receipts: %v", br)
		}
		fr := hasType(bobResp.Rooms.Join[room].AccountData.Events, "m.fully_read")
		if fr == nil || fr.Content.Raw["event_id"] != string(msg) {
			t.Fatalf("m.fully_read: %+v", bobResp.Rooms.Join[room].AccountData.Events)
		}
		// An initial sync carries the receipts too; an ephemeral filter
		// can drop them.
		if ir := receiptsOf(doSync(t, alice, "", "", 0)); ir["m.read"] == nil {
			t.Fatalf("initial sync receipts: %v", ir)
		}
		noEph := doSync(t, alice, "", `{"room":{"ephemeral":{"not_types":["m.receipt"]}}}`, 0)
		if jr := noEph.Rooms.Join[room]; jr == nil || len(jr.Ephemeral.Events) != 0 {
			t.Fatalf("ephemeral filter: %+v", jr)
		}
		// An unthreaded and a threaded receipt on the same event: the
		// unthreaded one is shown (MSC4102), though the threaded one came
		// last.
		if err := bob.cli.SendReceipt(ctx, room, msg, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		if err := bob.cli.SendReceipt(ctx, room, msg, event.ReceiptTypeRead, map[string]any{"thread_id": "main"}); err != nil {
			t.Fatal(err)
		}
		for _, from := range []string{"", since} {
			read, _ := receiptsOf(doSync(t, alice, from, "", 0))["m.read"].(map[string]any)
			info, _ := read[string(bob.id)].(map[string]any)
			if _, threaded := info["thread_id"]; info == nil || threaded {
				t.Fatalf("sync from %q: bob's receipt on a clash = %v, want the unthreaded one", from, info)
			}
		}
	})
}

// TestSyncWakesForEveryStream parks a long poll and checks each kind of
// change addressed to it wakes it promptly: an invite to a room the user is
// not in, account data, a tag, another member's receipt.
func TestSyncWakesForEveryStream(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		room := sharedRoom(t, alice)
		since := doSync(t, bob, "", "", 0).NextBatch

		// wakeOn parks a poll for u, runs cause, and returns what woke it.
		wakeOn := func(u roomUser, what string, cause func()) *mautrix.RespSync {
			t.Helper()
			done := make(chan *mautrix.RespSync, 1)
			go func() {
				r, err := u.cli.FullSyncRequest(ctx, mautrix.ReqSync{Timeout: 30000, Since: since})
				if err != nil {
					t.Error(err)
				}
				done <- r
			}()
			waitParked(t, b, 1)
			start := time.Now()
			cause()
			select {
			case r := <-done:
				if r == nil {
					t.FailNow()
				}
				if d := time.Since(start); d > 2*time.Second {
					t.Fatalf("%s: woke after %v", what, d)
				}
				since = r.NextBatch
				return r
			case <-time.After(10 * time.Second):
				t.Fatalf("%s did not wake the poll", what)
			}
			return nil
		}

		r := wakeOn(bob, "invite", func() {
			if _, err := alice.cli.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.id}); err != nil {
				t.Fatal(err)
			}
		})
		if r.Rooms.Invite[room] == nil {
			t.Fatalf("invite wake: %+v", r.Rooms)
		}
		if _, err := bob.cli.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		since = doSync(t, bob, since, "", 0).NextBatch

		r = wakeOn(bob, "account data", func() {
			if err := bob.cli.SetAccountData(ctx, "org.example.wake", map[string]any{"n": 1}); err != nil {
				t.Fatal(err)
			}
		})
		if hasType(r.AccountData.Events, "org.example.wake") == nil {
			t.Fatalf("account data wake: %+v", r.AccountData)
		}
		r = wakeOn(bob, "tag", func() {
			if err := bob.cli.AddTag(ctx, room, event.RoomTagLowPriority, 0.5); err != nil {
				t.Fatal(err)
			}
		})
		if jr := r.Rooms.Join[room]; jr == nil || hasType(jr.AccountData.Events, "m.tag") == nil {
			t.Fatalf("tag wake: %+v", r.Rooms)
		}
		msg := send(t, bob, room, "read this")
		since = doSync(t, bob, since, "", 0).NextBatch
		r = wakeOn(bob, "receipt", func() {
			if err := alice.cli.MarkRead(ctx, room, msg); err != nil {
				t.Fatal(err)
			}
		})
		if jr := r.Rooms.Join[room]; jr == nil || hasType(jr.Ephemeral.Events, "m.receipt") == nil {
			t.Fatalf("receipt wake: %+v", r.Rooms)
		}
	})
}

// TestSyncStateAfter checks use_state_after (spec v1.16): state_after, the
// state at the end of the timeline, replaces state.
func TestSyncStateAfter(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		room := sharedRoom(t, alice, bob)
		syncAfter := func(since string) *mautrix.SyncJoinedRoom {
			t.Helper()
			r, err := bob.cli.FullSyncRequest(ctx, mautrix.ReqSync{Since: since, UseStateAfter: true, FilterID: `{"room":{"timeline":{"limit":3}}}`})
			if err != nil {
				t.Fatal(err)
			}
			jr := r.Rooms.Join[room]
			if jr == nil || jr.StateAfter == nil || len(jr.State.Events) != 0 {
				t.Fatalf("state_after missing or state present: %+v", jr)
			}
			return jr
		}
		first, err := bob.cli.FullSyncRequest(ctx, mautrix.ReqSync{})
		if err != nil {
			t.Fatal(err)
		}
		// A topic change inside the timeline is in state_after.
		if _, err := alice.cli.SendStateEvent(ctx, room, event.StateTopic, "", map[string]string{"topic": "after"}); err != nil {
			t.Fatal(err)
		}
		send(t, alice, room, "x")
		inc := syncAfter(first.NextBatch)
		topic := hasType(inc.StateAfter.Events, "m.room.topic")
		if inc.Timeline.Limited || topic == nil || topic.Content.Raw["topic"] != "after" || len(inc.StateAfter.Events) != 1 {
			t.Fatalf("incremental state_after: limited=%v %+v", inc.Timeline.Limited, inc.StateAfter.Events)
		}
		// Initial: the whole state at the end, timeline's state included.
		full := syncAfter("")
		if hasType(full.StateAfter.Events, "m.room.topic") == nil || hasType(full.StateAfter.Events, "m.room.create") == nil {
			t.Fatalf("initial state_after: %d events", len(full.StateAfter.Events))
		}
	})
}

// TestSyncLeaveReported checks that a leave since the token is reported in
// an incremental sync whatever else the request says: after rejecting an
// invite with full_state set, and after leaving and forgetting the room.
func TestSyncLeaveReported(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		since := doSync(t, bob, "", "", 0).NextBatch
		if _, err := alice.cli.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: bob.id}); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.LeaveRoom(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		full, err := bob.cli.FullSyncRequest(ctx, mautrix.ReqSync{Since: since, FullState: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := full.Rooms.Leave[room.RoomID]; !ok {
			t.Fatalf("rejected invite missing from leave in a full_state sync: %+v", full.Rooms)
		}

		if _, err := bob.cli.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		since = doSync(t, bob, "", "", 0).NextBatch
		if _, err := bob.cli.LeaveRoom(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.ForgetRoom(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		inc := doSync(t, bob, since, "", 0)
		if _, ok := inc.Rooms.Leave[room.RoomID]; !ok {
			t.Fatalf("leave of a room forgotten since is missing from the incremental sync: %+v", inc.Rooms)
		}
		// Once reported, a forgotten room stays out of syncs.
		if again := doSync(t, bob, "", `{"room":{"include_leave":true}}`, 0); again.Rooms.Leave[room.RoomID] != nil {
			t.Fatal("forgotten room listed in an initial sync with include_leave")
		}
	})
}

// TestSyncIgnoredUsers checks m.ignored_user_list: an ignored user's invite
// and messages are not synced; their state events still are.
func TestSyncIgnoredUsers(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		if err := alice.cli.SetAccountData(ctx, "m.ignored_user_list", map[string]any{"ignored_users": map[string]any{string(bob.id): map[string]any{}}}); err != nil {
			t.Fatal(err)
		}
		since := doSync(t, alice, "", "", 0).NextBatch
		invite, err := bob.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{alice.id}})
		if err != nil {
			t.Fatal(err)
		}
		shared, err := bob.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.cli.JoinRoomByID(ctx, shared.RoomID); err != nil {
			t.Fatal(err)
		}
		send(t, bob, shared.RoomID, "from bob")
		send(t, alice, shared.RoomID, "from alice")
		resp := doSync(t, alice, since, "", 0)
		if _, ok := resp.Rooms.Invite[invite.RoomID]; ok {
			t.Fatal("an ignored user's invite was synced")
		}
		jr, ok := resp.Rooms.Join[shared.RoomID]
		if !ok {
			t.Fatal("shared room missing")
		}
		if got := bodies(jr.Timeline.Events); !slices.Equal(got, []string{"from alice"}) {
			t.Fatalf("timeline bodies %v, want only alice's", got)
		}
		if hasType(append(jr.Timeline.Events, jr.State.Events...), "m.room.create") == nil {
			t.Fatal("the ignored user's state events must still be synced")
		}
	})
}

// TestSyncPrevBatchMembersAt: /members?at= with the prev_batch of an initial
// sync whose timeline is the whole room answers the members as of that sync
// (Synapse's prev_batch is the sync's position then; Complement's
// TestGetRoomMembersAtPoint), and /messages from it reaches the room's
// start without skipping anything. A limited timeline's prev_batch still
// points before its first event.
func TestSyncPrevBatchMembersAt(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		room := sharedRoom(t, alice)
		send(t, alice, room, "hello")
		jr := doSync(t, alice, "", "", 0).Rooms.Join[room]
		if jr == nil || jr.Timeline.Limited || hasType(jr.Timeline.Events, "m.room.create") == nil {
			t.Fatalf("initial sync: %+v", jr)
		}
		at := jr.Timeline.PrevBatch
		if _, err := bob.cli.JoinRoomByID(t.Context(), room); err != nil {
			t.Fatal(err)
		}
		send(t, bob, room, "hello back")
		members, err := alice.cli.Members(t.Context(), room, mautrix.ReqMembers{At: at})
		if err != nil {
			t.Fatal(err)
		}
		if got := memberKeys(members.Chunk); !slices.Equal(got, []string{alice.id.String()}) {
			t.Fatalf("/members?at=%s: %v, want only alice", at, got)
		}
		msgs, err := alice.cli.Messages(t.Context(), room, at, "", mautrix.DirectionBackward, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs.Chunk) != len(jr.Timeline.Events) || msgs.Chunk[len(msgs.Chunk)-1].Type != event.StateCreate {
			t.Fatalf("/messages from prev_batch: %d events (timeline had %d)", len(msgs.Chunk), len(jr.Timeline.Events))
		}

		// A limited timeline: prev_batch is just before its first event.
		for i := range 3 {
			send(t, alice, room, fmt.Sprint("m", i))
		}
		jr = doSync(t, alice, "", `{"room":{"timeline":{"limit":2}}}`, 0).Rooms.Join[room]
		if jr == nil || !jr.Timeline.Limited || len(jr.Timeline.Events) != 2 {
			t.Fatalf("limited initial sync: %+v", jr)
		}
		msgs, err = alice.cli.Messages(t.Context(), room, jr.Timeline.PrevBatch, "", mautrix.DirectionBackward, nil, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs.Chunk) != 1 || bodies(msgs.Chunk)[0] != "m0" {
			t.Fatalf("/messages from a limited prev_batch: %+v", msgs.Chunk)
		}
	})
}
