package server_test

import (
	"net/url"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

func relEdit(target id.EventID, body string) map[string]any {
	return map[string]any{"msgtype": "m.text", "body": "* " + body,
		"m.new_content": map[string]any{"msgtype": "m.text", "body": body},
		"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": target}}
}

func relThread(root id.EventID, body string) map[string]any {
	return map[string]any{"msgtype": "m.text", "body": body,
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root, "is_falling_back": true}}
}

// relGet asks /relations through mautrix.
func relGet(t *testing.T, u roomUser, room id.RoomID, parent id.EventID, req *mautrix.ReqGetRelations) *mautrix.RespGetRelations {
	t.Helper()
	resp, err := u.cli.GetRelations(t.Context(), room, parent, req)
	if err != nil {
		t.Fatalf("relations of %s: %v", parent, err)
	}
	return resp
}

// TestRelationsEditsAndThreads checks the bundled aggregations Element
// reads (m.replace, m.thread, m.reference) on /event, /messages and
// /context, then /relations and /threads.
func TestRelationsEditsAndThreads(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob, carol, dave := newRoomUser(t, b, "alice"), newRoomUser(t, b, "bob"), newRoomUser(t, b, "carol"), newRoomUser(t, b, "dave")
		created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		for _, u := range []roomUser{bob, carol} {
			if _, err := u.cli.JoinRoomByID(ctx, room); err != nil {
				t.Fatal(err)
			}
		}

		// Edits: two valid ones by the sender, then ones the rules reject.
		root := histText(t, alice, room, "original")
		e1 := histSend(t, alice, room, relEdit(root, "v1"))
		time.Sleep(3 * time.Millisecond)
		e2 := histSend(t, alice, room, relEdit(root, "v2"))
		time.Sleep(3 * time.Millisecond)
		bobEdit := histSend(t, bob, room, relEdit(root, "bob was here"))
		noNew := histSend(t, alice, room, map[string]any{"msgtype": "m.text", "body": "* x", "m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": root}})
		ref := histSend(t, carol, room, map[string]any{"msgtype": "m.text", "body": "see above", "m.relates_to": map[string]any{"rel_type": "m.reference", "event_id": root}})

		latestEdit := func(u roomUser) (id.EventID, string) {
			ev, err := u.cli.GetEvent(ctx, room, root)
			if err != nil {
				t.Fatal(err)
			}
			edit := ev.Unsigned.Relations.GetLatestEdit()
			if edit == nil {
				return "", ""
			}
			nc, _ := edit.Content.Raw["m.new_content"].(map[string]any)
			body, _ := nc["body"].(string)
			return edit.ID, body
		}
		if got, body := latestEdit(carol); got != e2 || body != "v2" {
			t.Fatalf("m.replace bundle: %s %q, want %s v2", got, body, e2)
		}
		ev, _ := carol.cli.GetEvent(ctx, room, root)
		if refs := ev.Unsigned.Relations.GetReferences().GetEventIDs(); !slices.Equal(refs, []id.EventID{ref}) {
			t.Fatalf("m.reference bundle: %v", refs)
		}
		if ev.Content.Raw["body"] != "original" {
			t.Fatalf("the server must not replace the original content: %v", ev.Content.Raw)
		}
		// A redacted edit no longer counts.
		if _, err := alice.cli.RedactEvent(ctx, room, e2); err != nil {
			t.Fatal(err)
		}
		if got, body := latestEdit(carol); got != e1 || body != "v1" {
			t.Fatalf("after redacting the latest edit: %s %q, want %s v1", got, body, e1)
		}
		// Edits themselves get no bundle.
		if ev, _ := carol.cli.GetEvent(ctx, room, e1); ev.Unsigned.Relations != nil {
			t.Fatalf("edit carries a bundle: %+v", ev.Unsigned.Relations)
		}

		// A thread with three replies; its latest reply is edited.
		root2 := histText(t, alice, room, "thread root")
		t1 := histSend(t, bob, room, relThread(root2, "t1"))
		t2 := histSend(t, alice, room, relThread(root2, "t2"))
		t3 := histSend(t, bob, room, relThread(root2, "t3"))
		t3edit := histSend(t, bob, room, relEdit(t3, "t3 edited"))
		thread := func(u roomUser) *event.ThreadAggregation {
			ev, err := u.cli.GetEvent(ctx, room, root2)
			if err != nil {
				t.Fatal(err)
			}
			return ev.Unsigned.Relations.GetThread()
		}
		th := thread(alice)
		if th.GetCount() != 3 || th.GetLatestEvent() == nil || th.LatestEvent.ID != t3 || !th.CurrentUserParticipated {
			t.Fatalf("m.thread for alice: %+v", th)
		}
		if edit := th.LatestEvent.Unsigned.Relations.GetLatestEdit(); edit == nil || edit.ID != t3edit {
			t.Fatalf("thread latest_event lacks its edit: %+v", th.LatestEvent.Unsigned)
		}
		if th := thread(carol); th.GetCount() != 3 || th.CurrentUserParticipated {
			t.Fatalf("m.thread for carol: %+v", th)
		}
		if th := thread(bob); !th.GetCurrentUserParticipated() {
			t.Fatalf("m.thread for bob: %+v", th)
		}

		// /messages and /context bundle too.
		msgs, err := carol.cli.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatal(err)
		}
		var bundled int
		for _, ev := range msgs.Chunk {
			switch ev.ID {
			case root:
				if ev.Unsigned.Relations.GetLatestEdit().ID != e1 {
					t.Fatalf("/messages m.replace: %+v", ev.Unsigned.Relations)
				}
				bundled++
			case root2:
				if ev.Unsigned.Relations.GetThread().GetCount() != 3 {
					t.Fatalf("/messages m.thread: %+v", ev.Unsigned.Relations)
				}
				bundled++
			}
		}
		if bundled != 2 {
			t.Fatalf("/messages returned %d of the 2 bundled roots", bundled)
		}
		c, err := carol.cli.Context(ctx, room, root2, nil, 2)
		if err != nil || c.Event.Unsigned.Relations.GetThread().GetCount() != 3 {
			t.Fatalf("/context m.thread: %+v %v", c, err)
		}

		// /relations: everything, by type, by event type, with paging.
		all := relGet(t, carol, room, root, &mautrix.ReqGetRelations{Limit: 50})
		if got := histIDs(all.Chunk); !slices.Equal(got, []id.EventID{ref, noNew, bobEdit, e1}) {
			t.Fatalf("all relations of root (newest first, redacted left out): %v", got)
		}
		refs := relGet(t, carol, room, root, &mautrix.ReqGetRelations{RelationType: event.RelReference})
		if got := histIDs(refs.Chunk); !slices.Equal(got, []id.EventID{ref}) {
			t.Fatalf("m.reference relations: %v", got)
		}
		if r := relGet(t, carol, room, root, &mautrix.ReqGetRelations{RelationType: event.RelReplace, EventType: event.EventReaction}); len(r.Chunk) != 0 {
			t.Fatalf("event type filter: %v", histIDs(r.Chunk))
		}
		p1 := relGet(t, carol, room, root2, &mautrix.ReqGetRelations{RelationType: event.RelThread, Limit: 2})
		if got := histIDs(p1.Chunk); !slices.Equal(got, []id.EventID{t3, t2}) || p1.NextBatch == "" {
			t.Fatalf("thread page 1: %v next %q", got, p1.NextBatch)
		}
		p2 := relGet(t, carol, room, root2, &mautrix.ReqGetRelations{RelationType: event.RelThread, Limit: 2, From: p1.NextBatch})
		if got := histIDs(p2.Chunk); !slices.Equal(got, []id.EventID{t1}) || p2.NextBatch != "" {
			t.Fatalf("thread page 2: %v next %q", got, p2.NextBatch)
		}
		fwd := relGet(t, carol, room, root2, &mautrix.ReqGetRelations{RelationType: event.RelThread, Dir: mautrix.DirectionForward})
		if got := histIDs(fwd.Chunk); !slices.Equal(got, []id.EventID{t1, t2, t3}) {
			t.Fatalf("thread forwards: %v", got)
		}
		flat := relGet(t, carol, room, root2, &mautrix.ReqGetRelations{Limit: 50})
		deep := relGet(t, carol, room, root2, &mautrix.ReqGetRelations{Limit: 50, Recurse: true})
		if len(flat.Chunk) != 3 || flat.RecursionDepth != 0 || len(deep.Chunk) != 4 || deep.Chunk[0].ID != t3edit || deep.RecursionDepth != 3 {
			t.Fatalf("recurse: flat %v (depth %d), deep %v (depth %d)", histIDs(flat.Chunk), flat.RecursionDepth, histIDs(deep.Chunk), deep.RecursionDepth)
		}
		relPath := "/_matrix/client/v1/rooms/" + esc(string(room)) + "/relations/"
		acctDo(t, b, "GET", relPath+esc("$nope"), carol.tok, nil).want(t, 404, "M_NOT_FOUND")
		acctDo(t, b, "GET", relPath+esc(string(root)), dave.tok, nil).want(t, 404, "M_NOT_FOUND")
		acctDo(t, b, "GET", relPath+esc(string(root))+"?dir=x", carol.tok, nil).want(t, 400, "M_INVALID_PARAM")

		// /threads: carol's newer thread first; alice took part in root2 only.
		root3 := histText(t, carol, room, "another root")
		histSend(t, carol, room, relThread(root3, "c1"))
		threads := func(u roomUser, q url.Values) ([]string, any) {
			r := histGet(t, b, u.tok, "/_matrix/client/v1/rooms/"+esc(string(room))+"/threads", q)
			if r.status != 200 {
				t.Fatalf("threads: %d %v", r.status, r.body)
			}
			return histRawIDs(r.body["chunk"]), r.body["next_batch"]
		}
		if got, next := threads(carol, nil); !slices.Equal(got, []string{string(root3), string(root2)}) || next != nil {
			t.Fatalf("threads: %v %v", got, next)
		}
		if got, _ := threads(alice, url.Values{"include": {"participated"}}); !slices.Equal(got, []string{string(root2)}) {
			t.Fatalf("participated threads for alice: %v", got)
		}
		first, next := threads(alice, url.Values{"limit": {"1"}})
		if !slices.Equal(first, []string{string(root3)}) || next == nil {
			t.Fatalf("threads page 1: %v %v", first, next)
		}
		if second, next := threads(alice, url.Values{"limit": {"1"}, "from": {next.(string)}}); !slices.Equal(second, []string{string(root2)}) || next != nil {
			t.Fatalf("threads page 2: %v %v", second, next)
		}
		r := histGet(t, b, alice.tok, "/_matrix/client/v1/rooms/"+esc(string(room))+"/threads", nil)
		if chunk, _ := r.body["chunk"].([]any); len(chunk) == 0 || chunk[0].(map[string]any)["unsigned"].(map[string]any)["m.relations"] == nil {
			t.Fatalf("thread roots lack their bundle: %v", r.body)
		}
		histGet(t, b, dave.tok, "/_matrix/client/v1/rooms/"+esc(string(room))+"/threads", nil).want(t, 403, "M_FORBIDDEN")

		// Redacting an original drops its edit but keeps its references
		// and thread.
		for _, target := range []id.EventID{root, root2} {
			if _, err := alice.cli.RedactEvent(ctx, room, target); err != nil {
				t.Fatal(err)
			}
		}
		if got, _ := latestEdit(carol); got != "" {
			t.Fatalf("redacted original still bundles edit %s", got)
		}
		if ev, _ := carol.cli.GetEvent(ctx, room, root); len(ev.Unsigned.Relations.GetReferences().GetEventIDs()) != 1 {
			t.Fatalf("redacted original lost its references: %+v", ev.Unsigned.Relations)
		}
		if th := thread(carol); th.GetCount() != 3 {
			t.Fatalf("redacted root lost its thread: %+v", th)
		}
	})
}
