package server_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"encoding/json/jsontext"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/server/rooms"
	"hearth/server/servertest"
	"hearth/server/storage"
	"hearth/server/storage/storagetest"
	"hearth/server/timeline"
)

// These tests feed the room pipeline (package timeline) events built
// elsewhere, as the federation code will: "remote servers" with keys of
// their own build events on the room's DAG with package rooms, and the
// test hands them to the server's timeline. What clients then see is read
// over HTTP with mautrix-go, on every storage engine.

// fed is one Hearth server and the remote servers around it.
type fed struct {
	t    *testing.T
	b    *servertest.Bundle
	tl   *timeline.Timeline
	keys map[string]rooms.SigningKey // by server name, Hearth's own included
	ts   int64
}

func newFed(t *testing.T, b *servertest.Bundle, remotes ...string) *fed {
	t.Helper()
	key, err := b.Cfg.LoadSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	f := &fed{t: t, b: b, tl: b.Server.Timeline(), keys: map[string]rooms.SigningKey{
		b.Cfg.ServerName: {ServerName: b.Cfg.ServerName, KeyID: key.ID, Private: key.Priv}}, ts: time.Now().UnixMilli()}
	for _, r := range remotes {
		seed := sha256.Sum256([]byte(r))
		k, err := rooms.SigningKeyFromSeed(r, "ed25519:test", seed[:])
		if err != nil {
			t.Fatal(err)
		}
		f.keys[r] = k
	}
	f.tl.SetKeys(f.lookup)
	return f
}

// lookup is the key lookup the timeline verifies signatures with.
func (f *fed) lookup(server, keyID string, _ int64) (ed25519.PublicKey, int64, error) {
	if k, ok := f.keys[server]; ok && k.KeyID == keyID {
		return k.Private.Public().(ed25519.PublicKey), 1 << 62, nil
	}
	return nil, 0, fmt.Errorf("no key %s of %s", keyID, server)
}

// now is an increasing origin_server_ts: state resolution orders by it.
func (f *fed) now() int64 { f.ts++; return f.ts }

// version is the room's version.
func (f *fed) version(roomID string) *rooms.RoomVersion {
	f.t.Helper()
	room, err := f.b.Store.RoomByID(context.Background(), roomID)
	if err != nil {
		f.t.Fatal(err)
	}
	rv, _ := rooms.LookupVersion(room.RoomVersion)
	return rv
}

// pdus returns stored events as PDUs.
func (f *fed) pdus(rv *rooms.RoomVersion, ids ...string) []*rooms.Event {
	f.t.Helper()
	out := make([]*rooms.Event, 0, len(ids))
	for _, id := range ids {
		se, err := f.b.Store.EventByID(context.Background(), id)
		if err != nil {
			f.t.Fatalf("event %s: %v", id, err)
		}
		e, err := rooms.ParseEvent(rv, se.JSON)
		if err != nil {
			f.t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// builderOnHead is a remote server's builder on the room as this server has
// it now: its current state and forward extremities.
func (f *fed) builderOnHead(server, roomID string) *rooms.RoomBuilder {
	f.t.Helper()
	ctx := context.Background()
	rv := f.version(roomID)
	state, err := f.b.Store.CurrentState(ctx, roomID)
	if err != nil {
		f.t.Fatal(err)
	}
	exts, err := f.b.Store.ForwardExtremities(ctx, roomID)
	if err != nil {
		f.t.Fatal(err)
	}
	var extIDs []string
	for _, x := range exts {
		extIDs = append(extIDs, x.EventID)
	}
	return f.builder(server, rv, roomID, state, extIDs)
}

// builder resumes building on exts with the given state (event IDs of
// stored events).
func (f *fed) builder(server string, rv *rooms.RoomVersion, roomID string, state map[storage.StateKey]string, exts []string) *rooms.RoomBuilder {
	f.t.Helper()
	evs := rooms.StateEvents{}
	for k, id := range state {
		evs[k] = f.pdus(rv, id)[0]
	}
	b := rooms.ResumeRoomBuilder(rv, roomID, f.keys[server], evs, f.pdus(rv, exts...))
	b.Now = f.now
	return b
}

// add appends an event to a remote builder; the builder must accept it.
func (f *fed) add(b *rooms.RoomBuilder, typ string, stateKey *string, sender string, content any) *rooms.Event {
	f.t.Helper()
	e, err := b.Append(typ, stateKey, sender, content)
	if err != nil {
		f.t.Fatalf("build %s from %s: %v", typ, sender, err)
	}
	return e
}

// receive hands events to the timeline and returns their statuses.
func (f *fed) receive(origin string, kind timeline.Kind, evs ...*rooms.Event) []timeline.Status {
	f.t.Helper()
	res, err := f.tl.Receive(context.Background(), origin, kind, evs)
	if err != nil {
		f.t.Fatalf("receive: %v", err)
	}
	out := make([]timeline.Status, len(res))
	for i, r := range res {
		out[i] = r.Status
		if r.Err != nil {
			f.t.Logf("%s %s: %v", r.EventID, r.Status, r.Err)
		}
	}
	return out
}

// mustReceive hands events to the timeline, each expected to end as want.
func (f *fed) mustReceive(origin string, kind timeline.Kind, want timeline.Status, evs ...*rooms.Event) {
	f.t.Helper()
	for i, st := range f.receive(origin, kind, evs...) {
		if st != want {
			f.t.Fatalf("event %d (%s, %s): %s, want %s", i, evs[i].ID(), evs[i].Type(), st, want)
		}
	}
}

func sp(s string) *string { return &s }

// currentEvent is the event ID of one key of the room's current state.
func (f *fed) currentEvent(roomID, typ, stateKey string) string {
	f.t.Helper()
	state, err := f.b.Store.CurrentState(context.Background(), roomID)
	if err != nil {
		f.t.Fatal(err)
	}
	return state[storage.StateKey{Type: typ, StateKey: stateKey}]
}

// extremities lists the room's forward extremities.
func (f *fed) extremities(roomID string) []string {
	f.t.Helper()
	exts, err := f.b.Store.ForwardExtremities(context.Background(), roomID)
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for _, x := range exts {
		out = append(out, x.EventID)
	}
	slices.Sort(out)
	return out
}

// finalState applies a sync's state block, then its timeline, to the state
// a client had (nil: none), as a client does, and returns the result as
// event IDs by "type|state_key".
func finalState(had map[string]id.EventID, jr *mautrix.SyncJoinedRoom) map[string]id.EventID {
	out := maps.Clone(had)
	if out == nil {
		out = map[string]id.EventID{}
	}
	for _, e := range append(slices.Clone(jr.State.Events), jr.Timeline.Events...) {
		if e.StateKey != nil {
			out[e.Type.Type+"|"+*e.StateKey] = e.ID
		}
	}
	return out
}

// messagesIDs pages /messages backwards from the end of the room and
// returns every event ID, newest first.
func messagesIDs(t *testing.T, u roomUser, roomID id.RoomID) []id.EventID {
	t.Helper()
	var out []id.EventID
	from := ""
	for {
		page, err := u.cli.Messages(t.Context(), roomID, from, "", mautrix.DirectionBackward, nil, 1000)
		if err != nil {
			t.Fatalf("messages: %v", err)
		}
		for _, e := range page.Chunk {
			out = append(out, e.ID)
		}
		if page.End == "" || len(page.Chunk) == 0 {
			return out
		}
		from = page.End
	}
}

func timelineIDs(evs []*event.Event) []id.EventID {
	var out []id.EventID
	for _, e := range evs {
		out = append(out, e.ID)
	}
	return out
}

// TestTimelineForkResolution: two remote servers fork a room; the server
// merges the branches by state resolution (v2 for room version 11, v2.1 for
// 12) into the state the spec's algorithm gives, stores the merged state
// as a delta on a parent's group, and tells a local member's incremental
// /sync about the state it reset.
//
// The room: alice (local, creator), carol (r1.test, power 100) and bob
// (r2.test, power 50, enough to set the topic). From the same point F,
// bob sets the topic and carol demotes bob to 0. Bob's topic arrives first
// and extends the room; carol's demotion arrives built on F, a fork. In the
// resolution the demotion, a power event, is applied first; bob's topic
// then fails the auth rules against the partly resolved state (bob has
// power 0), so the topic goes back to the room's original one: a state
// reset that no timeline event carries.
func TestTimelineForkResolution(t *testing.T) {
	for _, version := range []string{"11", "12"} {
		t.Run("v"+version, func(t *testing.T) {
			storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
				b := servertest.Start(t, e)
				f := newFed(t, b, "r1.test", "r2.test")
				ctx := t.Context()
				alice := newSyncUser(t, b, "alice")
				carol, bob := "@carol:r1.test", "@bob:r2.test"
				users := map[string]any{carol: 100, bob: 50}
				if version != "12" {
					users[string(alice.id)] = 100 // in v12 the creator is above every level
				}
				created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: id.RoomVersion(version),
					Topic: "original", PowerLevelOverride: plOverride(users)})
				if err != nil {
					t.Fatal(err)
				}
				roomID := string(created.RoomID)
				original := f.currentEvent(roomID, "m.room.topic", "")

				bc := f.builderOnHead("r1.test", roomID)
				f.mustReceive("r1.test", timeline.Live, timeline.Accepted, f.add(bc, "m.room.member", sp(carol), carol, map[string]any{"membership": "join"}))
				bb := f.builderOnHead("r2.test", roomID)
				f.mustReceive("r2.test", timeline.Live, timeline.Accepted, f.add(bb, "m.room.member", sp(bob), bob, map[string]any{"membership": "join"}))
				initial := doSync(t, alice, "", "", 0)
				since, known := initial.NextBatch, finalState(nil, initial.Rooms.Join[created.RoomID])

				// F: both remotes build on the room as it is now.
				onF := f.builderOnHead("r1.test", roomID)
				bobs := f.builderOnHead("r2.test", roomID)
				topic := f.add(bobs, "m.room.topic", sp(""), bob, map[string]any{"topic": "bob's topic"})
				f.mustReceive("r2.test", timeline.Live, timeline.Accepted, topic)
				if got := f.currentEvent(roomID, "m.room.topic", ""); got != topic.ID() {
					t.Fatalf("topic after bob's event: %s", got)
				}
				var plContent map[string]any
				if err := json.Unmarshal(onF.State.Get("m.room.power_levels", "").Content(), &plContent); err != nil {
					t.Fatal(err)
				}
				plContent["users"].(map[string]any)[bob] = 0
				pl := f.add(onF, "m.room.power_levels", sp(""), carol, plContent)
				f.mustReceive("r1.test", timeline.Live, timeline.Accepted, pl)

				// The resolved state: carol's power levels, the original topic.
				if got := f.currentEvent(roomID, "m.room.power_levels", ""); got != pl.ID() {
					t.Errorf("power levels: %s, want carol's %s", got, pl.ID())
				}
				if got := f.currentEvent(roomID, "m.room.topic", ""); got != original {
					t.Errorf("topic: %s, want the original %s (bob's %s lost to his demotion)", got, original, topic.ID())
				}
				if got, want := f.extremities(roomID), sortedIDs(topic.ID(), pl.ID()); !slices.Equal(got, want) {
					t.Errorf("extremities %v, want both branches %v", got, want)
				}
				// The same as package rooms resolves the two branches' states.
				checkResolvedByRooms(t, f, roomID, topic.ID(), pl.ID())
				// The merged state is stored as a delta on a parent's group.
				group, err := b.Store.RoomStateGroup(ctx, roomID)
				if err != nil {
					t.Fatal(err)
				}
				full, _ := b.Store.StateGroup(ctx, group)
				if n := groupEntries(t, e, group); n == 0 || n >= len(full) {
					t.Errorf("merged state group %d holds %d rows for a state of %d: want a delta", group, n, len(full))
				}

				// alice's incremental sync: applied to what she had, the
				// topic she ends with is the original one, though bob's
				// topic event came after her last sync.
				resp := doSync(t, alice, since, "", 0)
				jr, ok := resp.Rooms.Join[id.RoomID(roomID)]
				if !ok {
					t.Fatal("room missing from the incremental sync")
				}
				now := finalState(known, jr)
				if got := now["m.room.topic|"]; got != id.EventID(original) {
					t.Errorf("topic after applying the sync: %s, want %s (state %v, timeline %v)", got, original,
						timelineIDs(jr.State.Events), timelineIDs(jr.Timeline.Events))
				}
				if got := now["m.room.power_levels|"]; got != id.EventID(pl.ID()) {
					t.Errorf("power levels after applying the sync: %s, want %s", got, pl.ID())
				}
				// use_state_after gives the same end state directly.
				var after struct {
					Rooms struct {
						Join map[string]struct {
							StateAfter struct {
								Events []struct {
									Type     string `json:"type"`
									StateKey string `json:"state_key"`
									EventID  string `json:"event_id"`
								} `json:"events"`
							} `json:"state_after"`
						} `json:"join"`
					} `json:"rooms"`
				}
				// state_after lists every state change since `since`, and
				// clients take no state from the timeline: the topic is the
				// one alice had, so it is not listed; the power levels are.
				syncRaw(t, b, alice.tok, "since="+since+"&use_state_after=true", &after)
				changed := map[string]string{}
				for _, se := range after.Rooms.Join[roomID].StateAfter.Events {
					changed[se.Type+"|"+se.StateKey] = se.EventID
				}
				if got, ok := changed["m.room.topic|"]; ok && got != original {
					t.Errorf("state_after sets the topic to %s, want it unchanged (%s)", got, original)
				}
				if got := changed["m.room.power_levels|"]; got != pl.ID() {
					t.Errorf("state_after power levels %q, want %s", got, pl.ID())
				}

				// A merge event from carol's server ends the fork.
				merge := f.builderOnHead("r1.test", roomID)
				msg := f.add(merge, "m.room.message", nil, carol, map[string]any{"msgtype": "m.text", "body": "merged"})
				if len(msg.PrevEventIDs()) != 2 {
					t.Fatalf("merge event has prev_events %v", msg.PrevEventIDs())
				}
				f.mustReceive("r1.test", timeline.Live, timeline.Accepted, msg)
				if got := f.extremities(roomID); !slices.Equal(got, []string{msg.ID()}) {
					t.Errorf("extremities after the merge: %v", got)
				}
				if got := f.currentEvent(roomID, "m.room.topic", ""); got != original {
					t.Errorf("topic after the merge: %s", got)
				}
				// alice builds on the merged room: her event references the merge.
				sent, err := alice.cli.SendText(ctx, id.RoomID(roomID), "after the merge")
				if err != nil {
					t.Fatal(err)
				}
				if got := f.pdus(f.version(roomID), string(sent.EventID))[0].PrevEventIDs(); !slices.Equal(got, []string{msg.ID()}) {
					t.Errorf("alice's next event has prev_events %v, want the merge", got)
				}
			})
		})
	}
}

// plOverride is a power_level_content_override setting the users' levels.
func plOverride(users map[string]any) *event.PowerLevelsEventContent {
	pl := &event.PowerLevelsEventContent{Users: map[id.UserID]int{}}
	for u, l := range users {
		pl.Users[id.UserID(u)] = l.(int)
	}
	return pl
}

func sortedIDs(ids ...string) []string {
	slices.Sort(ids)
	return ids
}

// checkResolvedByRooms resolves the states after two events with package
// rooms directly and compares with the room's current state.
func checkResolvedByRooms(t *testing.T, f *fed, roomID string, a, b string) {
	t.Helper()
	ctx := context.Background()
	rv := f.version(roomID)
	var states []rooms.StateMap
	events := rooms.EventMap{}
	for _, x := range []string{a, b} {
		se, err := f.b.Store.EventByID(ctx, x)
		if err != nil {
			t.Fatal(err)
		}
		st, err := f.b.Store.StateGroup(ctx, se.StateGroup)
		if err != nil {
			t.Fatal(err)
		}
		states = append(states, st)
	}
	// Every event of both states and their auth chains.
	var queue []string
	for _, st := range states {
		for _, id := range st {
			queue = append(queue, id)
		}
	}
	for len(queue) > 0 {
		x := queue[0]
		queue = queue[1:]
		if _, ok := events[x]; ok {
			continue
		}
		e := f.pdus(rv, x)[0]
		events.Add(e)
		queue = append(queue, e.AuthEventIDs()...)
	}
	want, err := rooms.ResolveState(ctx, rv, states, events)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := f.b.Store.CurrentState(ctx, roomID)
	if len(got) != len(want) {
		t.Errorf("current state has %d keys, resolution %d", len(got), len(want))
	}
	for k, id := range want {
		if got[k] != id {
			t.Errorf("current state %s = %s, resolution gives %s", k, got[k], id)
		}
	}
}

// groupEntries counts the rows stored for one state group.
func groupEntries(t *testing.T, e storagetest.Engine, group int64) int {
	t.Helper()
	db := openRaw(t, e)
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM state_group_entries WHERE group_id = $1`, group).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// openRaw opens the test's database directly, for what no API shows.
func openRaw(t *testing.T, e storagetest.Engine) *sql.DB {
	t.Helper()
	var db *sql.DB
	var err error
	if e.Options.Postgres != "" {
		db, err = sql.Open("pgx", e.Options.Postgres)
	} else {
		db, err = sql.Open("sqlite", "file:"+e.Options.SQLitePath)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// syncRaw runs /sync with a raw query string and decodes the answer.
func syncRaw(t *testing.T, b *servertest.Bundle, token, query string, out any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.URL+"/_matrix/client/v3/sync?"+query, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("sync: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatal(err)
	}
}

// TestTimelineRejectedAndSoftFailed: an event that fails the auth rules
// against its own auth events is rejected; one that passes them and the
// state before it but fails against the current state is soft-failed.
// Both are stored with their status, and neither becomes a forward
// extremity, changes the current state, or reaches /sync or /messages.
func TestTimelineRejectedAndSoftFailed(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		f := newFed(t, b, "r2.test")
		ctx := t.Context()
		alice := newSyncUser(t, b, "alice")
		bob, dave := "@bob:r2.test", "@dave:r2.test"
		created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Topic: "original", RoomVersion: "11",
			PowerLevelOverride: plOverride(map[string]any{string(alice.id): 100, bob: 50})})
		if err != nil {
			t.Fatal(err)
		}
		roomID := string(created.RoomID)
		rv := f.version(roomID)
		original := f.currentEvent(roomID, "m.room.topic", "")
		bb := f.builderOnHead("r2.test", roomID)
		f.mustReceive("r2.test", timeline.Live, timeline.Accepted, f.add(bb, "m.room.member", sp(bob), bob, map[string]any{"membership": "join"}))
		since := doSync(t, alice, "", "", 0).NextBatch

		// Rejected: dave never joined, yet sets the topic, citing the
		// room's auth events as if he were allowed (built without the
		// builder's auth check).
		head := f.builderOnHead("r2.test", roomID)
		forged, err := rooms.BuildEvent(rv, rooms.EventTemplate{RoomID: roomID, Type: "m.room.topic", StateKey: sp(""), Sender: dave,
			Content: map[string]any{"topic": "dave's"}, PrevEvents: head.Extremities, Depth: head.Depth + 1, OriginServerTS: f.now(),
			AuthEvents: rooms.SelectAuthEvents(rooms.AuthEventKeys(rv, "m.room.topic", sp(""), dave, nil), head.State)}, f.keys["r2.test"])
		if err != nil {
			t.Fatal(err)
		}
		f.mustReceive("r2.test", timeline.Live, timeline.Rejected, forged)

		// Soft-failed: alice bans bob; bob's server, not knowing yet,
		// sets the topic on the room as it was before the ban.
		beforeBan := f.builderOnHead("r2.test", roomID)
		if _, err := alice.cli.BanUser(ctx, id.RoomID(roomID), &mautrix.ReqBanUser{UserID: id.UserID(bob)}); err != nil {
			t.Fatal(err)
		}
		late := f.add(beforeBan, "m.room.topic", sp(""), bob, map[string]any{"topic": "bob's, after his ban"})
		f.mustReceive("r2.test", timeline.Live, timeline.SoftFailed, late)

		for _, c := range []struct {
			ev                   *rooms.Event
			rejected, softFailed bool
		}{{forged, true, false}, {late, false, true}} {
			se, err := b.Store.EventByID(ctx, c.ev.ID())
			if err != nil {
				t.Fatalf("%s not stored: %v", c.ev.ID(), err)
			}
			if se.Rejected != c.rejected || se.SoftFailed != c.softFailed {
				t.Errorf("%s stored with rejected=%t soft_failed=%t", c.ev.ID(), se.Rejected, se.SoftFailed)
			}
		}
		if got := f.currentEvent(roomID, "m.room.topic", ""); got != original {
			t.Errorf("topic %s, want the original %s", got, original)
		}
		for _, x := range f.extremities(roomID) {
			if x == forged.ID() || x == late.ID() {
				t.Errorf("%s became a forward extremity", x)
			}
		}
		resp := doSync(t, alice, since, "", 0)
		hidden := map[id.EventID]bool{id.EventID(forged.ID()): true, id.EventID(late.ID()): true}
		if jr, ok := resp.Rooms.Join[id.RoomID(roomID)]; ok {
			for _, ev := range append(jr.State.Events, jr.Timeline.Events...) {
				if hidden[ev.ID] {
					t.Errorf("/sync shows %s", ev.ID)
				}
			}
		}
		full := doSync(t, alice, "", "", 0)
		for _, ev := range append(full.Rooms.Join[id.RoomID(roomID)].State.Events, full.Rooms.Join[id.RoomID(roomID)].Timeline.Events...) {
			if hidden[ev.ID] {
				t.Errorf("initial /sync shows %s", ev.ID)
			}
		}
		for _, x := range messagesIDs(t, alice, id.RoomID(roomID)) {
			if hidden[x] {
				t.Errorf("/messages shows %s", x)
			}
		}
		if _, err := alice.cli.GetEvent(ctx, id.RoomID(roomID), id.EventID(late.ID())); err == nil {
			t.Error("GET /event returns the soft-failed event")
		}
		// The room goes on: alice's next event builds on the last accepted one.
		if _, err := alice.cli.SendText(ctx, id.RoomID(roomID), "still here"); err != nil {
			t.Fatal(err)
		}
		if got := f.extremities(roomID); len(got) != 1 {
			t.Errorf("extremities %v", got)
		}
	})
}

// remoteRoom builds a room on a remote server: create, the creator's join,
// power levels (with extra users), public join rules, then n messages.
func remoteRoom(t *testing.T, f *fed, server, creator, version string, users map[string]any, n int) (*rooms.RoomBuilder, []*rooms.Event) {
	t.Helper()
	rv, ok := rooms.LookupVersion(version)
	if !ok {
		t.Fatal("unknown version", version)
	}
	roomID := ""
	if !rv.RoomIDFromCreateEvent {
		roomID = "!remote" + fmt.Sprint(f.now()) + ":" + server
	}
	pl := map[string]any{}
	if users != nil {
		pl["users"] = users
	}
	evs, b, err := rooms.CreateRoom(rooms.CreateRoomRequest{Version: rv, RoomID: roomID, Creator: creator, Preset: rooms.PresetPublicChat,
		PowerLevelOverride: jsonMap(t, pl)}, f.keys[server], f.now)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		evs = append(evs, f.add(b, "m.room.message", nil, creator, map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("history %d", i)}))
	}
	return b, evs
}

func jsonMap(t *testing.T, m map[string]any) map[string]jsontext.Value {
	t.Helper()
	out := map[string]jsontext.Value{}
	for k, v := range m {
		raw, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		out[k] = raw
	}
	return out
}

// joinThrough joins a local user to a remote room: the join event is built
// on the remote builder's head, signed by this server (as make_join and
// send_join do), and persisted with the room's state before it.
func joinThrough(t *testing.T, f *fed, b *rooms.RoomBuilder, server string, user id.UserID) *rooms.Event {
	t.Helper()
	join, state := localJoin(t, f, b, user)
	if _, err := f.tl.Join(context.Background(), server, b.Version, join, state, nil); err != nil {
		t.Fatalf("join: %v", err)
	}
	b.Accept(join)
	return join
}

// localJoin builds a local user's join on a remote builder's head, signed
// by this server, and lists the state before it.
func localJoin(t *testing.T, f *fed, b *rooms.RoomBuilder, user id.UserID) (*rooms.Event, []*rooms.Event) {
	t.Helper()
	// v1/v2 rooms would need the reference hashes of the remote
	// builder's events: only rooms with hash-based event IDs are joined
	// this way.
	if b.Version.EventIDs == rooms.EventIDRandom {
		t.Fatal("localJoin needs a room version with hash event IDs")
	}
	local := rooms.ResumeRoomBuilder(b.Version, b.RoomID, f.keys[f.b.Cfg.ServerName], b.State, nil)
	local.Extremities, local.Depth, local.Now = b.Extremities, b.Depth, f.now
	state := make([]*rooms.Event, 0, len(b.State))
	for _, e := range b.State {
		state = append(state, e)
	}
	return f.add(local, "m.room.member", sp(string(user)), string(user), map[string]any{"membership": "join"}), state
}

// TestTimelineBackfill: history fetched after a join is stored with
// positions an incremental /sync never reaches, while /messages returns it
// in topological order after the join. The room's state events, which the
// join brought as outliers, become timeline events in place.
func TestTimelineBackfill(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		f := newFed(t, b, "r1.test")
		alice := newSyncUser(t, b, "alice")
		carol := "@carol:r1.test"
		rb, history := remoteRoom(t, f, "r1.test", carol, "12", nil, 500)
		roomID := id.RoomID(rb.RoomID)
		join := joinThrough(t, f, rb, "r1.test", alice.id)
		first := doSync(t, alice, "", "", 0)
		if _, ok := first.Rooms.Join[roomID]; !ok {
			t.Fatal("alice's initial sync lacks the room she joined")
		}
		since := first.NextBatch

		// The server asks r1 for history; the answer comes newest first.
		backfill := slices.Clone(history)
		slices.Reverse(backfill)
		f.mustReceive("r1.test", timeline.Backfill, timeline.Accepted, backfill...)

		resp := doSync(t, alice, since, "", 0)
		if jr, ok := resp.Rooms.Join[roomID]; ok && len(jr.Timeline.Events)+len(jr.State.Events) > 0 {
			t.Errorf("incremental sync after backfill shows %d timeline and %d state events", len(jr.Timeline.Events), len(jr.State.Events))
		}
		got := messagesIDs(t, alice, roomID)
		want := []id.EventID{id.EventID(join.ID())}
		for i := len(history) - 1; i >= 0; i-- {
			want = append(want, id.EventID(history[i].ID()))
		}
		if !slices.Equal(got, want) {
			t.Fatalf("/messages returned %d events, want the join and %d of history newest first (first differences: %v)",
				len(got), len(history), firstDiff(got, want))
		}
		se, err := b.Store.EventByID(t.Context(), history[0].ID())
		if err != nil || se.Outlier || se.StreamPos > 0 {
			t.Errorf("create event after backfill: %+v %v", se, err)
		}

		// Live events go on as before, and reach the incremental sync.
		live := f.add(rb, "m.room.message", nil, carol, map[string]any{"msgtype": "m.text", "body": "now"})
		f.mustReceive("r1.test", timeline.Live, timeline.Accepted, live)
		resp = doSync(t, alice, resp.NextBatch, "", 0)
		if got := timelineIDs(resp.Rooms.Join[roomID].Timeline.Events); !slices.Equal(got, []id.EventID{id.EventID(live.ID())}) {
			t.Errorf("incremental sync timeline %v, want the live event", got)
		}
	})
}

func firstDiff(a, b []id.EventID) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("at %d: %s vs %s", i, a[i], b[i])
		}
	}
	return fmt.Sprintf("lengths %d vs %d", len(a), len(b))
}

// TestTimelineStateReset: a state reset that takes a local user out of a
// room is reported to that user's incremental /sync as a membership change.
//
// alice joins carol's room (r1.test) through carol's server (J1), then
// dave joins here, and alice leaves (L) and joins again (J2). Carol's
// server, which has seen none of these, makes the room invite-only on top
// of J1. Resolving the two branches applies the join rules first (a power
// event); J2 then fails (alice is not invited) while L still passes, so
// alice's membership returns to L.
func TestTimelineStateReset(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		f := newFed(t, b, "r1.test")
		ctx := t.Context()
		alice := newSyncUser(t, b, "alice")
		carol := "@carol:r1.test"
		rb, _ := remoteRoom(t, f, "r1.test", carol, "12", nil, 3)
		roomID := id.RoomID(rb.RoomID)
		joinThrough(t, f, rb, "r1.test", alice.id)
		onJ1 := rb.Fork()
		// dave joins here too, so this server stays in the room while
		// alice leaves and joins again (else her join would go through
		// carol's server).
		dave := newSyncUser(t, b, "dave")
		if _, err := dave.cli.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.cli.LeaveRoom(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		leave := f.currentEvent(string(roomID), "m.room.member", string(alice.id))
		if _, err := alice.cli.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		since := doSync(t, alice, "", "", 0).NextBatch

		jr := f.add(onJ1, "m.room.join_rules", sp(""), carol, map[string]any{"join_rule": "invite"})
		f.mustReceive("r1.test", timeline.Live, timeline.Accepted, jr)
		if got := f.currentEvent(string(roomID), "m.room.member", string(alice.id)); got != leave {
			t.Fatalf("alice's membership after the fork: %s, want her earlier leave %s", got, leave)
		}
		resp := doSync(t, alice, since, "", 0)
		if _, ok := resp.Rooms.Join[roomID]; ok {
			t.Error("the room is still under join")
		}
		left, ok := resp.Rooms.Leave[roomID]
		if !ok {
			t.Fatalf("the state reset is not reported as a leave: %+v", resp.Rooms)
		}
		var mine *event.Event
		for _, ev := range append(left.State.Events, left.Timeline.Events...) {
			if ev.Type == event.StateMember && ev.StateKey != nil && *ev.StateKey == string(alice.id) {
				mine = ev
			}
		}
		if mine == nil || mine.ID != id.EventID(leave) {
			t.Errorf("the leave section's membership event for alice: %+v, want %s", mine, leave)
		}
		if _, err := alice.cli.SendText(ctx, roomID, "am I in?"); err == nil {
			t.Error("alice can still send to a room she is no longer in")
		}
	})
}

// TestLatencyLargeJoin: persisting a join that brings a 5,000-event state
// keeps another room's sends moving: their p99 latency while the join is
// written stays within 3× of the p99 before it, or within joinLatencyFloor
// when that is more. The floor is for the noise of small machines: on the
// 2-core AMD EPYC VM of 6 December the p99 before was 1.5–13 ms from one
// run to the next and the p99 during 5.5–45 ms, with the builds from the
// start and the end of that day alike (four alternated runs each, the
// machine otherwise quiet). What the test is for, the join holding the
// writer and the other room's sends behind it, puts that p99 at the
// join's own 1–3 s. It measures time, so it
// runs alone (make test runs it after the other tests, with
// HEARTH_LATENCY_TESTS set) and on one engine at a time; a run disturbed by
// something else on the machine gets a second try.
const joinLatencyFloor = 50 * time.Millisecond

func TestLatencyLargeJoin(t *testing.T) {
	if os.Getenv("HEARTH_LATENCY_TESTS") == "" {
		t.Skip("latency test: make test runs it alone (HEARTH_LATENCY_TESTS=1)")
	}
	engines := []storagetest.Engine{{Name: "sqlite", Options: storage.Options{SQLitePath: filepath.Join(t.TempDir(), "hearth.db")}}}
	if dsn := os.Getenv(storagetest.EnvPostgres); dsn != "" {
		engines = append(engines, storagetest.Engine{Name: "postgres", Options: storage.Options{Postgres: storagetest.FreshSchema(t, dsn), MaxConns: 8}})
	}
	for _, e := range engines {
		t.Run(e.Name, func(t *testing.T) {
			b := servertest.Start(t, e)
			f := newFed(t, b, "r1.test")
			alice := newSyncUser(t, b, "alice")
			var p99b, p99d time.Duration
			for attempt := 1; attempt <= 2; attempt++ {
				p99b, p99d = largeJoinLatency(t, f, alice)
				if p99d <= max(3*p99b, joinLatencyFloor) {
					return
				}
			}
			t.Errorf("sends during the join: p99 %v, more than 3× the %v before and more than %v", p99d, p99b, joinLatencyFloor)
		})
	}
}

// largeJoinLatency joins alice to a new 5,000-member remote room while she
// sends to a room of her own, and returns the p99 of her sends before and
// during the join.
func largeJoinLatency(t *testing.T, f *fed, alice roomUser) (before, during time.Duration) {
	t.Helper()
	ctx := t.Context()
	carol := "@carol:r1.test"
	rb, _ := remoteRoom(t, f, "r1.test", carol, "12", nil, 0)
	for i := 0; i < 5000; i++ {
		u := fmt.Sprintf("@u%d:r1.test", i)
		f.add(rb, "m.room.member", sp(u), u, map[string]any{"membership": "join"})
	}
	busy, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	send := func() time.Duration {
		start := time.Now()
		if _, err := alice.cli.SendText(ctx, busy.RoomID, "busy"); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	var sendsBefore, sendsDuring []time.Duration
	for i := 0; i < 300; i++ {
		sendsBefore = append(sendsBefore, send())
	}
	join, state := localJoin(t, f, rb, alice.id)
	type result struct {
		took time.Duration
		err  error
	}
	done := make(chan result)
	go func() {
		start := time.Now()
		_, err := f.tl.Join(context.Background(), "r1.test", rb.Version, join, state, nil)
		done <- result{time.Since(start), err}
	}()
	var took time.Duration
loop:
	for {
		select {
		case r := <-done:
			if r.err != nil {
				t.Fatalf("join: %v", r.err)
			}
			took = r.took
			break loop
		default:
			sendsDuring = append(sendsDuring, send())
		}
	}
	members, err := f.b.Store.Members(ctx, rb.RoomID)
	if err != nil || len(members) != 5002 {
		t.Fatalf("the joined room has %d members (%v)", len(members), err)
	}
	if len(sendsDuring) < 100 {
		t.Fatalf("only %d sends completed while the join was written: too few for a p99", len(sendsDuring))
	}
	before, during = p99(sendsBefore), p99(sendsDuring)
	t.Logf("join with 5,000 state events took %v; the other room's sends: p50 %v, p99 %v before (%d sends); p50 %v, p99 %v, max %v during (%d sends)",
		took.Round(time.Millisecond), pct(sendsBefore, 50), before, len(sendsBefore), pct(sendsDuring, 50), during,
		pct(sendsDuring, 100), len(sendsDuring))
	return before, during
}

func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Sorted(slices.Values(ds))
	return s[min(len(s)*p/100, len(s)-1)].Round(10 * time.Microsecond)
}

func p99(ds []time.Duration) time.Duration { return pct(ds, 99) }

// fetcher serves a remote server's events and states to the timeline, as
// the federation client will (GET /event, GET /state, POST
// /get_missing_events).
type fetcher struct {
	events map[string]*rooms.Event
	// before maps an event ID to the room state before it.
	before map[string]rooms.StateEvents
	calls  []string
	// noMissing: the server does not answer /get_missing_events.
	noMissing bool
	// maxMissing, when set, caps the events /get_missing_events gives (a
	// gap longer than the server hands out).
	maxMissing int
}

func (fe *fetcher) MissingEvents(_ context.Context, server string, _ *rooms.RoomVersion, _ string, earliest, latest []string, limit int) ([]*rooms.Event, error) {
	fe.calls = append(fe.calls, "missing "+strings.Join(latest, ","))
	if fe.noMissing {
		return nil, fmt.Errorf("%s does not answer get_missing_events", server)
	}
	stop := map[string]bool{}
	for _, id := range append(earliest, latest...) {
		stop[id] = true
	}
	var out []*rooms.Event
	queue := []string{}
	for _, id := range latest {
		if e := fe.events[id]; e != nil {
			queue = append(queue, e.PrevEventIDs()...)
		}
	}
	if fe.maxMissing > 0 {
		limit = min(limit, fe.maxMissing)
	}
	seen := map[string]bool{}
	for len(queue) > 0 && len(out) < limit {
		id := queue[0]
		queue = queue[1:]
		if seen[id] || stop[id] {
			continue
		}
		seen[id] = true
		e := fe.events[id]
		if e == nil {
			continue
		}
		out = append(out, e)
		queue = append(queue, e.PrevEventIDs()...)
	}
	return out, nil
}

func (fe *fetcher) Event(_ context.Context, server string, _ *rooms.RoomVersion, eventID string) (*rooms.Event, error) {
	fe.calls = append(fe.calls, "event "+eventID)
	if e, ok := fe.events[eventID]; ok {
		return e, nil
	}
	return nil, fmt.Errorf("%s has no event %s", server, eventID)
}

func (fe *fetcher) StateBefore(_ context.Context, server string, _ *rooms.RoomVersion, _, eventID string) ([]*rooms.Event, []*rooms.Event, error) {
	fe.calls = append(fe.calls, "state "+eventID)
	st, ok := fe.before[eventID]
	if !ok {
		return nil, nil, fmt.Errorf("%s has no state before %s", server, eventID)
	}
	var state, chain []*rooms.Event
	seen := map[string]bool{}
	var walk func(ids []string)
	walk = func(ids []string) {
		for _, id := range ids {
			if e := fe.events[id]; e != nil && !seen[id] {
				seen[id] = true
				chain = append(chain, e)
				walk(e.AuthEventIDs())
			}
		}
	}
	for _, e := range st {
		state = append(state, e)
		walk(e.AuthEventIDs())
	}
	return state, chain, nil
}

// TestTimelineGap: an event whose auth event and prev events this server
// never received is dropped when nothing can fetch them, and when the
// origin will not give the missing prev events (a pushed event is never
// placed on the state its origin claims for it alone, as in Synapse). When
// the gap is longer than what /get_missing_events gives, the oldest event
// it gives starts from the state the origin gives for it, and the event
// joins the room as a new branch, merged into the current state.
//
// bob (r2.test) is in alice's room. His server sends a message, his new
// display name (a member event) and then another message; this server
// misses the first two. The last message cites the missing member event as
// auth event and prev event.
func TestTimelineGap(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		f := newFed(t, b, "r2.test")
		ctx := t.Context()
		alice := newSyncUser(t, b, "alice")
		bob := "@bob:r2.test"
		created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		roomID := string(created.RoomID)
		remote := f.builderOnHead("r2.test", roomID)
		f.mustReceive("r2.test", timeline.Live, timeline.Accepted, f.add(remote, "m.room.member", sp(bob), bob, map[string]any{"membership": "join"}))

		fe := &fetcher{events: map[string]*rooms.Event{}, before: map[string]rooms.StateEvents{}}
		// A display name this server never gets, but in the state the
		// origin gives before the renaming (whose auth event it is).
		f.add(remote, "m.room.member", sp(bob), bob, map[string]any{"membership": "join", "displayname": "Robert"})
		unseen := f.add(remote, "m.room.message", nil, bob, map[string]any{"msgtype": "m.text", "body": "never seen here"})
		fe.before[unseen.ID()] = maps.Clone(remote.State)
		beforeRename := maps.Clone(remote.State)
		rename := f.add(remote, "m.room.member", sp(bob), bob, map[string]any{"membership": "join", "displayname": "Bob"})
		fe.before[rename.ID()] = beforeRename
		msg := f.add(remote, "m.room.message", nil, bob, map[string]any{"msgtype": "m.text", "body": "hello across a gap"})
		for _, ev := range remote.State {
			fe.events[ev.ID()] = ev
		}
		fe.events[unseen.ID()], fe.events[msg.ID()] = unseen, msg
		since := doSync(t, alice, "", "", 0).NextBatch
		// alice moves on meanwhile: the room forks.
		if _, err := alice.cli.SendText(ctx, created.RoomID, "meanwhile"); err != nil {
			t.Fatal(err)
		}

		// Nothing to fetch with: dropped, and not stored.
		f.mustReceive("r2.test", timeline.Live, timeline.Dropped, msg)
		if _, err := b.Store.EventByID(ctx, msg.ID()); err == nil {
			t.Fatal("a dropped event was stored")
		}

		// The origin does not give the missing prev events: dropped, and
		// the state it would give for the message is not asked for.
		fe.noMissing = true
		f.tl.SetFetcher(fe)
		t.Cleanup(func() { f.tl.SetFetcher(nil) })
		f.mustReceive("r2.test", timeline.Live, timeline.Dropped, msg)
		if slices.Contains(fe.calls, "state "+msg.ID()) {
			t.Errorf("fetcher calls %v: the state before a pushed event was asked for", fe.calls)
		}
		if _, err := b.Store.EventByID(ctx, msg.ID()); err == nil {
			t.Fatal("a dropped event was stored")
		}

		// It gives one event of the gap (the renaming), whose own prev
		// event it keeps: the renaming starts from the state the origin
		// gives for it, which brings the auth event only it has, and the
		// message follows.
		fe.noMissing, fe.maxMissing, fe.calls = false, 1, nil
		f.mustReceive("r2.test", timeline.Live, timeline.Accepted, msg)
		if !slices.Contains(fe.calls, "state "+rename.ID()) || slices.Contains(fe.calls, "state "+msg.ID()) {
			t.Errorf("fetcher calls %v: want the state before the renaming, not before the message", fe.calls)
		}
		se, err := b.Store.EventByID(ctx, rename.ID())
		if err != nil || se.Outlier {
			t.Errorf("bob's renaming: stored %+v (%v), want a timeline event", se, err)
		}
		if got := f.currentEvent(roomID, "m.room.member", bob); got != rename.ID() {
			t.Errorf("bob's membership in the current state: %q, want the renaming %s", got, rename.ID())
		}
		if got := f.extremities(roomID); len(got) != 2 || !slices.Contains(got, msg.ID()) {
			t.Errorf("extremities %v: want alice's message and bob's", got)
		}
		found := false
		for _, x := range messagesIDs(t, alice, created.RoomID) {
			found = found || x == id.EventID(msg.ID())
		}
		if !found {
			t.Error("/messages lacks the event received across the gap")
		}
		// alice's next sync starts at the gap and is limited: what came
		// before it (her own message included) is for pagination.
		jr := doSync(t, alice, since, "", 0).Rooms.Join[created.RoomID]
		var got []string
		for _, ev := range jr.Timeline.Events {
			got = append(got, ev.ID.String())
		}
		if !jr.Timeline.Limited || !slices.Equal(got, []string{rename.ID(), msg.ID()}) {
			t.Errorf("sync across the gap: limited %v, timeline %v, want [%s %s]", jr.Timeline.Limited, got, rename.ID(), msg.ID())
		}
	})
}

// TestTimelineGapFilled: a live event after events this server missed
// brings them with it (POST /get_missing_events): they become timeline
// events, in order, not outliers.
func TestTimelineGapFilled(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		f := newFed(t, b, "r2.test")
		ctx := t.Context()
		alice := newSyncUser(t, b, "alice")
		bob := "@bob:r2.test"
		created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		roomID := string(created.RoomID)
		remote := f.builderOnHead("r2.test", roomID)
		f.mustReceive("r2.test", timeline.Live, timeline.Accepted, f.add(remote, "m.room.member", sp(bob), bob, map[string]any{"membership": "join"}))
		since := doSync(t, alice, "", "", 0).NextBatch
		fe := &fetcher{events: map[string]*rooms.Event{}, before: map[string]rooms.StateEvents{}}
		var missed []*rooms.Event
		for i := 0; i < 5; i++ {
			m := f.add(remote, "m.room.message", nil, bob, map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("missed %d", i)})
			fe.events[m.ID()] = m
			missed = append(missed, m)
		}
		last := f.add(remote, "m.room.message", nil, bob, map[string]any{"msgtype": "m.text", "body": "the one that arrived"})
		fe.events[last.ID()] = last
		f.tl.SetFetcher(fe)
		t.Cleanup(func() { f.tl.SetFetcher(nil) })
		f.mustReceive("r2.test", timeline.Live, timeline.Accepted, last)

		for _, m := range missed {
			se, err := b.Store.EventByID(ctx, m.ID())
			if err != nil || se.Outlier || !se.Live() {
				t.Fatalf("missed event %s after the gap was filled: %+v %v", m.ID(), se, err)
			}
		}
		if slices.ContainsFunc(fe.calls, func(c string) bool { return strings.HasPrefix(c, "state ") }) {
			t.Errorf("the state was asked for though the gap was filled: %v", fe.calls)
		}
		resp := doSync(t, alice, since, "", 0)
		want := []string{"missed 0", "missed 1", "missed 2", "missed 3", "missed 4", "the one that arrived"}
		if got := bodies(resp.Rooms.Join[created.RoomID].Timeline.Events); !slices.Equal(got, want) {
			t.Errorf("alice's timeline %v, want %v", got, want)
		}
		if got := f.extremities(roomID); !slices.Equal(got, []string{last.ID()}) {
			t.Errorf("extremities %v", got)
		}
	})
}
