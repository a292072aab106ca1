package server_test

import (
	"testing"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"hearth/server/rooms"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
	"hearth/server/timeline"
)

// TestTimelineRedactions: received redactions apply to their targets when
// their sender may redact anyone's events or is of the target's server,
// also when the redaction arrives first; otherwise the target stays whole.
func TestTimelineRedactions(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		f := newFed(t, b, "r2.test", "r3.test")
		ctx := t.Context()
		alice := newSyncUser(t, b, "alice")
		bob, mod := "@bob:r2.test", "@mod:r3.test"
		created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11",
			PowerLevelOverride: plOverride(map[string]any{string(alice.id): 100, mod: 50})})
		if err != nil {
			t.Fatal(err)
		}
		roomID := string(created.RoomID)
		for _, u := range []string{bob, mod} {
			server := u[len(u)-len("r2.test"):]
			f.mustReceive(server, timeline.Live, timeline.Accepted, f.add(f.builderOnHead(server, roomID), "m.room.member", sp(u), u, map[string]any{"membership": "join"}))
		}
		text := func(body string) map[string]any { return map[string]any{"msgtype": "m.text", "body": body} }
		redaction := func(target string) map[string]any { return map[string]any{"redacts": target, "reason": "test"} }
		sent, err := alice.cli.SendText(ctx, id.RoomID(roomID), "alice's words")
		if err != nil {
			t.Fatal(err)
		}
		aliceMsg := string(sent.EventID)

		bb := f.builderOnHead("r2.test", roomID)
		own := f.add(bb, "m.room.message", nil, bob, text("bob takes this back"))
		ownRedaction := f.add(bb, rooms.TypeRedaction, nil, bob, redaction(own.ID()))
		othersRedaction := f.add(bb, rooms.TypeRedaction, nil, bob, redaction(aliceMsg))
		f.mustReceive("r2.test", timeline.Live, timeline.Accepted, own, ownRedaction, othersRedaction)

		spam := f.add(f.builderOnHead("r2.test", roomID), "m.room.message", nil, bob, text("spam"))
		f.mustReceive("r2.test", timeline.Live, timeline.Accepted, spam)
		// The moderator, of a third server, redacts the spam.
		mb := f.builderOnHead("r3.test", roomID)
		f.mustReceive("r3.test", timeline.Live, timeline.Accepted, f.add(mb, rooms.TypeRedaction, nil, mod, redaction(spam.ID())))

		// A redaction before its target: bob's server sends the redaction
		// of a message built on a fork this server has not seen yet.
		fork := f.builderOnHead("r2.test", roomID)
		early := f.builderOnHead("r2.test", roomID)
		late := f.add(fork, "m.room.message", nil, bob, text("redacted before it arrived"))
		f.mustReceive("r2.test", timeline.Live, timeline.Accepted, f.add(early, rooms.TypeRedaction, nil, bob, redaction(late.ID())))
		f.mustReceive("r2.test", timeline.Live, timeline.Accepted, late)

		for _, c := range []struct {
			name, id   string
			redactedBy bool
		}{
			{"bob's own message", own.ID(), true},
			{"alice's message, redacted by bob", aliceMsg, false},
			{"bob's spam, redacted by a moderator of another server", spam.ID(), true},
			{"a message whose redaction came first", late.ID(), true},
		} {
			se, err := b.Store.EventByID(ctx, c.id)
			if err != nil {
				t.Fatal(err)
			}
			body := gjson.GetBytes(se.JSON, "content.body").String()
			if c.redactedBy != (se.RedactedBy != "") || c.redactedBy != (body == "") {
				t.Errorf("%s: redacted_by %q, body %q", c.name, se.RedactedBy, body)
			}
			// What alice's client reads.
			ev, err := alice.cli.GetEvent(ctx, id.RoomID(roomID), id.EventID(c.id))
			if err != nil {
				t.Fatal(err)
			}
			if _, has := ev.Content.Raw["body"]; has == c.redactedBy {
				t.Errorf("%s: alice reads %v", c.name, ev.Content.Raw)
			}
		}
	})
}
