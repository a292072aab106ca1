package federation_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"hearth/server/federation"
	"hearth/server/rooms"
	"hearth/server/storage"
	"hearth/server/storage/storagetest"
	"hearth/server/timeline"
)

// The sender is tested on a real store with the real room pipeline; only
// the network is replaced: transactions go to an in-process recorder that
// can be told to fail.

// net records the transactions each destination received.
type net struct {
	mu   sync.Mutex
	got  map[string][]string // destination → event IDs, in arrival order
	edus map[string][]string // destination → EDU contents, in arrival order
	txns map[string]int      // destination → transactions
	pdus map[string]int      // destination → largest transaction's PDUs
	down map[string]bool
	sent chan string
}

func newNet() *net {
	return &net{got: map[string][]string{}, edus: map[string][]string{}, txns: map[string]int{}, pdus: map[string]int{}, down: map[string]bool{}, sent: make(chan string, 1000)}
}

func (n *net) send(_ context.Context, dest, _ string, txn *federation.Transaction) (*federation.SendResponse, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.down[dest] {
		return nil, errors.New("connection refused")
	}
	n.txns[dest]++
	n.pdus[dest] = max(n.pdus[dest], len(txn.PDUs))
	for _, p := range txn.PDUs {
		n.got[dest] = append(n.got[dest], idOf(p))
	}
	if len(txn.EDUs) > maxEDUs {
		return nil, fmt.Errorf("%d EDUs in one transaction", len(txn.EDUs))
	}
	for _, e := range txn.EDUs {
		n.edus[dest] = append(n.edus[dest], string(e.Content))
	}
	select {
	case n.sent <- dest:
	default:
	}
	return &federation.SendResponse{}, nil
}

// idOf recomputes an event's ID (v12 rooms: the reference hash).
func idOf(pdu []byte) string {
	e, err := rooms.ParseEvent(rooms.MustVersion("12"), pdu)
	if err != nil {
		return "?"
	}
	return e.ID()
}

func (n *net) setDown(dest string, down bool) {
	n.mu.Lock()
	n.down[dest] = down
	n.mu.Unlock()
}

func (n *net) received(dest string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.got[dest])
}

// waitFor waits until dest received every event in ids.
func (n *net) waitFor(t *testing.T, dest string, ids ...string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		got := n.received(dest)
		missing := 0
		for _, id := range ids {
			if !slices.Contains(got, id) {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		select {
		case <-n.sent:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%s received %d events, still missing %d of %d", dest, len(got), missing, len(ids))
		}
	}
}

type world struct {
	st   *storage.Store
	tl   *timeline.Timeline
	keys map[string]rooms.SigningKey
	ts   int64
}

func newWorld(t *testing.T, st *storage.Store) *world {
	w := &world{st: st, keys: map[string]rooms.SigningKey{}, ts: time.Now().UnixMilli()}
	for _, s := range []string{"hs.test", "r1.test", "r2.test", "r3.test"} {
		seed := sha256.Sum256([]byte(s))
		k, err := rooms.SigningKeyFromSeed(s, "ed25519:t", seed[:])
		if err != nil {
			t.Fatal(err)
		}
		w.keys[s] = k
	}
	w.tl = timeline.New(timeline.Deps{Store: st, Key: w.keys["hs.test"], Keys: func(server, keyID string, _ int64) (ed25519.PublicKey, int64, error) {
		if k, ok := w.keys[server]; ok && k.KeyID == keyID {
			return k.Private.Public().(ed25519.PublicKey), 1 << 62, nil
		}
		return nil, 0, fmt.Errorf("no key for %s", server)
	}})
	return w
}

func (w *world) now() int64 { w.ts++; return w.ts }

// room creates a public room of alice's (local) that remote users join.
func (w *world) room(t *testing.T, remotes ...string) string {
	t.Helper()
	ctx := context.Background()
	evs, b, err := rooms.CreateRoom(rooms.CreateRoomRequest{Version: rooms.MustVersion("12"), Creator: "@alice:hs.test", Preset: rooms.PresetPublicChat},
		w.keys["hs.test"], w.now)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.tl.CreateRoom(ctx, &storage.Room{RoomID: b.RoomID, RoomVersion: "12", Creator: "@alice:hs.test"}, evs, b); err != nil {
		t.Fatal(err)
	}
	for _, u := range remotes {
		_, server, _ := cut(u)
		rb := w.remoteBuilder(t, b.RoomID, server)
		join, err := rb.Append("m.room.member", &u, u, map[string]any{"membership": "join"})
		if err != nil {
			t.Fatal(err)
		}
		res, err := w.tl.Receive(ctx, server, timeline.Live, []*rooms.Event{join})
		if err != nil || res[0].Status != timeline.Accepted {
			t.Fatalf("join of %s: %v %v", u, res, err)
		}
	}
	return b.RoomID
}

func cut(u string) (string, string, bool) {
	for i := range u {
		if u[i] == ':' {
			return u[:i], u[i+1:], true
		}
	}
	return u, "", false
}

// remoteBuilder builds on the room's current head as server.
func (w *world) remoteBuilder(t *testing.T, roomID, server string) *rooms.RoomBuilder {
	t.Helper()
	ctx := context.Background()
	rv := rooms.MustVersion("12")
	state, err := w.st.CurrentState(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	evs := rooms.StateEvents{}
	for k, id := range state {
		evs[k] = w.pdu(t, id)
	}
	exts, err := w.st.ForwardExtremities(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	var extEvs []*rooms.Event
	for _, x := range exts {
		extEvs = append(extEvs, w.pdu(t, x.EventID))
	}
	b := rooms.ResumeRoomBuilder(rv, roomID, w.keys[server], evs, extEvs)
	b.Now = w.now
	return b
}

func (w *world) pdu(t *testing.T, id string) *rooms.Event {
	t.Helper()
	se, err := w.st.EventByID(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	e, err := rooms.ParseEvent(rooms.MustVersion("12"), se.JSON)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (w *world) say(t *testing.T, roomID, text string) string {
	t.Helper()
	evs, err := w.tl.Send(context.Background(), roomID, timeline.NewEvent{Type: "m.room.message", Sender: "@alice:hs.test",
		Content: map[string]any{"msgtype": "m.text", "body": text}})
	if err != nil {
		t.Fatal(err)
	}
	return evs[0].EventID
}

type wakeOnPersist struct{ s *federation.Sender }

func (o wakeOnPersist) EventPersisted(p *timeline.Persisted) {
	changed := false
	for _, c := range p.Changes {
		changed = changed || c.Key.Type == "m.room.member"
	}
	o.s.EventPersisted(p.Event.RoomID, changed)
}

// startSender runs a sender until the test (or stop) ends.
func startSender(t *testing.T, w *world, n *net) (*federation.Sender, func()) {
	return startSenderWith(t, w, n, nil)
}

// startSenderWith runs a sender with an Outbox.
func startSenderWith(t *testing.T, w *world, n *net, outbox federation.Outbox) (*federation.Sender, func()) {
	s := federation.NewSender(federation.SenderOptions{Store: w.st, ServerName: "hs.test", Send: n.send, MinRetry: 50 * time.Millisecond, MaxRetry: 200 * time.Millisecond,
		Outbox: outbox})
	w.tl.Observe(wakeOnPersist{s})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return s, stop
}

func TestSenderDeliversToEveryServerInTheRoom(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		w := newWorld(t, st)
		n := newNet()
		startSender(t, w, n)
		room := w.room(t, "@bob:r1.test", "@carol:r2.test")
		lonely := w.room(t) // no remote members: nothing to send
		var ids []string
		for i := 0; i < 120; i++ {
			ids = append(ids, w.say(t, room, fmt.Sprintf("m%d", i)))
		}
		w.say(t, lonely, "to nobody")
		n.waitFor(t, "r1.test", ids...)
		n.waitFor(t, "r2.test", ids...)
		if got := n.received("r1.test"); !slices.IsSortedFunc(indexes(ids, got), func(a, b int) int { return a - b }) {
			t.Error("r1.test received the events out of order")
		}
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.pdus["r1.test"] > 50 {
			t.Errorf("a transaction carried %d PDUs", n.pdus["r1.test"])
		}
		if len(n.got) != 2 {
			t.Errorf("transactions went to %v", n.txns)
		}
	})
}

func indexes(order, got []string) []int {
	var out []int
	for _, g := range got {
		if i := slices.Index(order, g); i >= 0 {
			out = append(out, i)
		}
	}
	return out
}

// A destination that was down is sent, once back, the newest event of each
// room it missed; the events it had before are not sent again.
func TestSenderCatchesUpAfterAnOutage(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		w := newWorld(t, st)
		n := newNet()
		s, _ := startSender(t, w, n)
		a, b := w.room(t, "@bob:r1.test"), w.room(t, "@bob:r1.test")
		first := w.say(t, a, "before")
		n.waitFor(t, "r1.test", first)
		n.setDown("r1.test", true)
		var lastA, lastB string
		for i := 0; i < 30; i++ {
			lastA = w.say(t, a, fmt.Sprintf("a%d", i))
			lastB = w.say(t, b, fmt.Sprintf("b%d", i))
		}
		time.Sleep(100 * time.Millisecond)
		n.setDown("r1.test", false)
		s.Reset(context.Background(), "r1.test")
		n.waitFor(t, "r1.test", lastA, lastB)
		if got := n.received("r1.test"); count(got, first) != 1 {
			t.Error("the event delivered before the outage was sent again")
		}
		waitDelivered(t, st, "r1.test", 0)
	})
}

// Events acknowledged while the sender was stopped (or had not queued them
// yet) reach their destinations when a new sender starts on the same store.
func TestSenderSurvivesARestart(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		st := storagetest.Open(t, e)
		w := newWorld(t, st)
		n := newNet()
		_, stop := startSender(t, w, n)
		room := w.room(t, "@bob:r1.test")
		running := w.say(t, room, "while running")
		n.waitFor(t, "r1.test", running)
		se, err := st.EventByID(context.Background(), running)
		if err != nil {
			t.Fatal(err)
		}
		waitDelivered(t, st, "r1.test", se.StreamPos)
		stop()
		var ids []string
		for i := 0; i < 5; i++ {
			ids = append(ids, w.say(t, room, fmt.Sprintf("while stopped %d", i)))
		}
		// A new process: a new store, pipeline and sender on the same
		// database.
		st.Close()
		st2 := storagetest.Open(t, e)
		w2 := &world{st: st2, keys: w.keys, ts: w.ts}
		w2.tl = timeline.New(timeline.Deps{Store: st2, Key: w.keys["hs.test"]})
		startSender(t, w2, n)
		n.waitFor(t, "r1.test", ids...)
	})
}

// A kicked user's server receives the kick, though it has no member left.
func TestSenderTellsTheKickedServer(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		w := newWorld(t, st)
		n := newNet()
		startSender(t, w, n)
		room := w.room(t, "@bob:r1.test", "@carol:r2.test")
		carol := "@carol:r2.test"
		kick, err := w.tl.Send(context.Background(), room, timeline.NewEvent{Type: "m.room.member", StateKey: &carol, Sender: "@alice:hs.test",
			Content: map[string]any{"membership": "leave"}})
		if err != nil {
			t.Fatal(err)
		}
		n.waitFor(t, "r2.test", kick[0].EventID)
		n.waitFor(t, "r1.test", kick[0].EventID)
		after := w.say(t, room, "after the kick")
		n.waitFor(t, "r1.test", after)
		time.Sleep(100 * time.Millisecond)
		if slices.Contains(n.received("r2.test"), after) {
			t.Error("the kicked user's server still receives the room's events")
		}
	})
}

// An invite goes to the servers in the room, not in a transaction to the
// invitee's server: that server had it through /invite (it signed it).
// Pushed again, it reaches a server not in the room, which ignores it, or,
// when the invitee is joining at that moment, arrives after the join as a
// new event, which Synapse then soft-fails.
func TestSenderKeepsInvitesFromTheInviteesServer(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		w := newWorld(t, st)
		n := newNet()
		startSender(t, w, n)
		room := w.room(t, "@bob:r1.test")
		dave := "@dave:r3.test"
		invite, err := w.tl.Send(context.Background(), room, timeline.NewEvent{Type: "m.room.member", StateKey: &dave, Sender: "@alice:hs.test",
			Content: map[string]any{"membership": "invite"}})
		if err != nil {
			t.Fatal(err)
		}
		after := w.say(t, room, "after the invite")
		n.waitFor(t, "r1.test", invite[0].EventID, after)
		if got := n.received("r3.test"); len(got) != 0 {
			t.Errorf("the invitee's server, not in the room, was sent %v", got)
		}
	})
}

// An event goes to the servers in the room when it was sent, not to those
// that joined before the sender read it. Here the sender reads "before"
// late (a room with no other server wakes nothing) and only after bob's
// server joined: pushed to it, a pre-join event arrives as a new one, which
// the joining server may reject or soft-fail against state it does not
// have yet; it gets the history it may see through backfill instead.
func TestSenderSendsToTheServersInTheRoomAtTheEvent(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		w := newWorld(t, st)
		n := newNet()
		startSender(t, w, n)
		room := w.room(t)
		w.say(t, room, "first") // read at once: the room's servers are cached
		time.Sleep(50 * time.Millisecond)
		before := w.say(t, room, "before")
		w.join(t, room, "@bob:r1.test")
		sent := time.Now()
		after := w.say(t, room, "after")
		n.waitFor(t, "r1.test", after)
		// At once, not at the sender's next 5 s tick: reading "before"
		// must not leave the room taken for one with no other server.
		if d := time.Since(sent); d > 3*time.Second {
			t.Errorf("the event after bob's join took %v to reach his server", d.Round(time.Millisecond))
		}
		if slices.Contains(n.received("r1.test"), before) {
			t.Error("an event sent before bob's server joined was pushed to it")
		}
	})
}

// The same when the sender reads events long after they were sent (it was
// stopped): what was sent while carol's server was in the room reaches it
// though she left since, and what was sent before dave's server joined
// does not reach it.
func TestSenderAfterAStopSendsToTheServersInTheRoomAtTheEvent(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		w := newWorld(t, st)
		n := newNet()
		_, stop := startSender(t, w, n)
		room := w.room(t, "@bob:r1.test", "@carol:r2.test")
		first := w.say(t, room, "first")
		n.waitFor(t, "r1.test", first)
		n.waitFor(t, "r2.test", first)
		// Recorded delivered, so the next sender does not start by
		// catching up (which sends only the newest event of a room).
		se, err := st.EventByID(context.Background(), first)
		if err != nil {
			t.Fatal(err)
		}
		waitDelivered(t, st, "r1.test", se.StreamPos)
		waitDelivered(t, st, "r2.test", se.StreamPos)
		stop()
		while := w.say(t, room, "while carol is here")
		w.member(t, room, "@carol:r2.test", "leave")
		w.member(t, room, "@dave:r3.test", "join")
		startSender(t, w, n)
		last := w.say(t, room, "last")
		n.waitFor(t, "r1.test", while, last)
		n.waitFor(t, "r2.test", while)
		n.waitFor(t, "r3.test", last)
		if slices.Contains(n.received("r3.test"), while) {
			t.Error("an event sent before dave's server joined was pushed to it")
		}
		if slices.Contains(n.received("r2.test"), last) {
			t.Error("an event sent after carol's server left was sent to it")
		}
	})
}

// join has remote user u join roomID through a live event from u's server.
func (w *world) join(t *testing.T, roomID, u string) {
	t.Helper()
	w.member(t, roomID, u, "join")
}

// member has remote user u change their membership in roomID through a
// live event from u's server.
func (w *world) member(t *testing.T, roomID, u, membership string) {
	t.Helper()
	_, server, _ := cut(u)
	e, err := w.remoteBuilder(t, roomID, server).Append("m.room.member", &u, u, map[string]any{"membership": membership})
	if err != nil {
		t.Fatal(err)
	}
	res, err := w.tl.Receive(context.Background(), server, timeline.Live, []*rooms.Event{e})
	if err != nil || res[0].Status != timeline.Accepted {
		t.Fatalf("%s of %s: %v %v", membership, u, res, err)
	}
}

// waitDelivered waits until dest is recorded healthy with everything up to
// pos delivered.
func waitDelivered(t *testing.T, st *storage.Store, dest string, pos int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, err := st.DestinationByName(context.Background(), dest)
		if err == nil && d.FailureTS == 0 && d.RetryIntervalMS == 0 && d.LastSuccessfulPos >= pos {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("destination %s: %+v (%v), want healthy and delivered up to %d", dest, d, err, pos)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func count(ids []string, id string) int {
	n := 0
	for _, x := range ids {
		if x == id {
			n++
		}
	}
	return n
}

// maxEDUs is the spec's limit of EDUs per transaction.
const maxEDUs = 100

// memOutbox is an Outbox that, like a persisted one, forgets its EDUs only
// when their delivery is acknowledged.
type memOutbox struct {
	mu   sync.Mutex
	edus map[string][]string
}

func (o *memOutbox) add(dest string, contents ...string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.edus == nil {
		o.edus = map[string][]string{}
	}
	o.edus[dest] = append(o.edus[dest], contents...)
}

func (o *memOutbox) left(dest string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.edus[dest])
}

func (o *memOutbox) waitEmpty(t *testing.T, dest string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); o.left(dest) > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d EDUs for %s never acknowledged", o.left(dest), dest)
		}
	}
}

func (o *memOutbox) Pending(_ context.Context, dest string, limit int) ([]federation.EDU, func(context.Context) error, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := min(limit, len(o.edus[dest]))
	out := make([]federation.EDU, n)
	for i, c := range o.edus[dest][:n] {
		out[i] = federation.EDU{Type: "m.test", Content: []byte(c)}
	}
	return out, func(context.Context) error {
		o.mu.Lock()
		defer o.mu.Unlock()
		o.edus[dest] = o.edus[dest][n:] // only ever appended to: the first n were sent
		return nil
	}, nil
}

func (o *memOutbox) Destinations(context.Context) ([]string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for d, e := range o.edus {
		if len(e) > 0 {
			out = append(out, d)
		}
	}
	return out, nil
}

// waitEDUs waits until dest received the EDU contents want, in order.
func (n *net) waitEDUs(t *testing.T, dest string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n.mu.Lock()
		got := slices.Clone(n.edus[dest])
		n.mu.Unlock()
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s received EDUs %q, want %q", dest, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Persisted EDUs go with a destination's transactions, at most a hundred
// at a time, in order; unlike in-memory EDUs they survive a failing
// destination and a restart of the sender.
func TestSenderDeliversPersistedEDUs(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		w := newWorld(t, st)
		n := newNet()
		ob := &memOutbox{}
		var many []string
		for i := range 150 {
			many = append(many, fmt.Sprintf(`{"n":%d}`, i))
		}
		ob.add("r1.test", many...) // before the sender starts: found at start
		s, stop := startSenderWith(t, w, n, ob)
		n.waitEDUs(t, "r1.test", many...)
		n.mu.Lock()
		txns := n.txns["r1.test"]
		n.mu.Unlock()
		if txns < 2 {
			t.Fatalf("150 EDUs went in %d transactions", txns)
		}
		ob.waitEmpty(t, "r1.test") // acknowledged once delivered

		// r2 is down: the typing notice is dropped, the persisted EDU kept.
		n.setDown("r2.test", true)
		s.SendEDUs([]string{"r2.test"}, federation.EDU{Type: "m.typing", Content: []byte(`"typing"`)})
		ob.add("r2.test", `"kept"`)
		s.Wake("r2.test")
		time.Sleep(150 * time.Millisecond)
		if ob.left("r2.test") != 1 {
			t.Fatal("an EDU not delivered was forgotten")
		}
		n.setDown("r2.test", false)
		s.Reset(context.Background(), "r2.test")
		n.waitEDUs(t, "r2.test", `"kept"`)
		ob.waitEmpty(t, "r2.test")

		// Queued while no sender runs: the next one sends it.
		stop()
		ob.add("r1.test", `"after restart"`)
		startSenderWith(t, w, n, ob)
		n.waitEDUs(t, "r1.test", append(many, `"after restart"`)...)
	})
}
