package synapse_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/interop/synapse"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// pair is a Hearth server and a Synapse in one federation.
type pair struct {
	hearth  *servertest.Bundle
	synapse *synapse.Server
	// expected lists the complaints the test provokes on purpose.
	expected *[][]string
}

// expect declares a complaint of Synapse's that the test provokes on
// purpose: a log line containing every one of parts does not fail it.
func (p pair) expect(parts ...string) {
	*p.expected = append(*p.expected, parts)
}

// isExpected reports whether line is a complaint the test expects.
func (p pair) isExpected(line string) bool {
	return slices.ContainsFunc(*p.expected, func(parts []string) bool {
		return !slices.ContainsFunc(parts, func(part string) bool { return !strings.Contains(line, part) })
	})
}

// each runs fn once per Hearth storage engine, with a Hearth server and a
// Synapse of its own (Synapse always on SQLite). It skips, saying how to
// run it, when HEARTH_TEST_SYNAPSE is not set. Whatever Synapse logged at
// WARNING or above fails the test: a test passes only if Synapse found
// nothing wrong with what Hearth sent it.
func each(t *testing.T, fn func(t *testing.T, p pair)) {
	t.Helper()
	synapse.Venv(t)
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		// Hearth shares its room directory with other servers, as
		// Synapse here does.
		h := fed.Start(t, e, func(cfg *config.Config) { cfg.AllowPublicRoomsOverFederation = true })
		s := synapse.Start(t, fed)
		p := pair{hearth: h, synapse: s, expected: &[][]string{}}
		t.Cleanup(func() {
			for _, line := range s.Complaints() {
				if !p.isExpected(line) {
					t.Errorf("Synapse complained: %s", line)
				}
			}
		})
		fn(t, p)
	})
}

// user is a signed-in client that remembers where its /sync got to.
type user struct {
	*mautrix.Client
	since string
}

// hearthUser registers localpart on p's Hearth server.
func (p pair) hearthUser(t *testing.T, localpart string) *user {
	t.Helper()
	return newUser(t, synapse.Register(t, p.hearth.URL, localpart))
}

// synapseUser registers localpart on p's Synapse.
func (p pair) synapseUser(t *testing.T, localpart string) *user {
	t.Helper()
	return newUser(t, p.synapse.Register(t, localpart))
}

// newUser syncs once, so that later waits see only what comes after.
func newUser(t *testing.T, cli *mautrix.Client) *user {
	t.Helper()
	u := &user{Client: cli}
	resp, err := cli.FullSyncRequest(t.Context(), mautrix.ReqSync{})
	if err != nil {
		t.Fatalf("first sync of %s: %v", cli.UserID, err)
	}
	u.since = resp.NextBatch
	return u
}

// waitTimeout bounds every wait: federation between the two is quick on
// loopback, Synapse's retries are not.
const waitTimeout = 30 * time.Second

// wait long-polls u's /sync until check accepts an answer, and moves u's
// since past it.
func (u *user) wait(t *testing.T, what string, check func(*mautrix.RespSync) bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		resp, err := u.FullSyncRequest(t.Context(), mautrix.ReqSync{Since: u.since, Timeout: 1000})
		if err != nil {
			t.Fatalf("sync as %s: %v", u.UserID, err)
		}
		u.since = resp.NextBatch
		if check(resp) {
			return
		}
	}
	t.Fatalf("%s never saw %s within %v", u.UserID, what, waitTimeout)
}

// waitMessage waits for a message with body in roomID from sender.
func (u *user) waitMessage(t *testing.T, roomID id.RoomID, sender id.UserID, body string) {
	t.Helper()
	u.wait(t, "message "+body, func(r *mautrix.RespSync) bool {
		jr, ok := r.Rooms.Join[roomID]
		if !ok {
			return false
		}
		return slices.ContainsFunc(jr.Timeline.Events, func(e *event.Event) bool {
			b, _ := e.Content.Raw["body"].(string)
			return e.Type == event.EventMessage && e.Sender == sender && b == body
		})
	})
}

// waitMember waits for a member event of who in roomID, among the
// timeline or state of a joined room, for which ok holds.
func (u *user) waitMember(t *testing.T, what string, roomID id.RoomID, who id.UserID, ok func(content map[string]any) bool) {
	t.Helper()
	u.wait(t, what, func(r *mautrix.RespSync) bool {
		jr, joined := r.Rooms.Join[roomID]
		if !joined {
			return false
		}
		for _, e := range slices.Concat(jr.State.Events, jr.Timeline.Events) {
			if e.Type == event.StateMember && e.StateKey != nil && *e.StateKey == string(who) && ok(e.Content.Raw) {
				return true
			}
		}
		return false
	})
}

// waitMembership waits for who's membership in roomID to become m.
func (u *user) waitMembership(t *testing.T, roomID id.RoomID, who id.UserID, m string) {
	t.Helper()
	u.waitMember(t, string(who)+"'s "+m, roomID, who, func(c map[string]any) bool { return c["membership"] == m })
}

// waitLeft waits for roomID in the leave section of u's /sync.
func (u *user) waitLeft(t *testing.T, roomID id.RoomID) {
	t.Helper()
	u.wait(t, string(roomID)+" among the rooms left", func(r *mautrix.RespSync) bool {
		_, ok := r.Rooms.Leave[roomID]
		return ok
	})
}

// waitEphemeral waits for an ephemeral event of type typ in roomID for
// which ok holds.
func (u *user) waitEphemeral(t *testing.T, what string, roomID id.RoomID, typ event.Type, ok func(content map[string]any) bool) {
	t.Helper()
	u.wait(t, what, func(r *mautrix.RespSync) bool {
		jr, joined := r.Rooms.Join[roomID]
		if !joined {
			return false
		}
		return slices.ContainsFunc(jr.Ephemeral.Events, func(e *event.Event) bool {
			return e.Type.Type == typ.Type && ok(e.Content.Raw)
		})
	})
}

// send sends a text message and fails the test if it cannot.
func (u *user) send(t *testing.T, roomID id.RoomID, body string) id.EventID {
	t.Helper()
	resp, err := u.SendText(t.Context(), roomID, body)
	if err != nil {
		t.Fatalf("%s sends %q: %v", u.UserID, body, err)
	}
	return resp.EventID
}

// createRoom creates a room and fails the test if it cannot.
func (u *user) createRoom(t *testing.T, req *mautrix.ReqCreateRoom) id.RoomID {
	t.Helper()
	resp, err := u.CreateRoom(t.Context(), req)
	if err != nil {
		t.Fatalf("%s creates a room: %v", u.UserID, err)
	}
	return resp.RoomID
}
