package server_test

import (
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// TestAliases creates, resolves, lists and deletes room aliases, and checks
// who may do so.
func TestAliases(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob, carol := newRoomUser(t, b, "alice"), newRoomUser(t, b, "bob"), newRoomUser(t, b, "carol")
		created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		if _, err := bob.cli.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		const hall, bobs = id.RoomAlias("#hall:hearth.test"), id.RoomAlias("#bobs:hearth.test")
		if _, err := alice.cli.CreateAlias(ctx, hall, room); err != nil {
			t.Fatalf("create alias: %v", err)
		}
		if _, err := bob.cli.CreateAlias(ctx, bobs, room); err != nil {
			t.Fatalf("bob creates an alias: %v", err)
		}
		res, err := carol.cli.ResolveAlias(ctx, hall)
		if err != nil || res.RoomID != room || !slices.Contains(res.Servers, "hearth.test") {
			t.Fatalf("resolve: %+v %v", res, err)
		}
		// Taken: 409. Not a member: 403. Remote: 400. Unknown room: 404.
		_, err = bob.cli.CreateAlias(ctx, hall, room)
		acctWantErr(t, err, 409, "M_UNKNOWN")
		_, err = carol.cli.CreateAlias(ctx, "#carols:hearth.test", room)
		acctWantErr(t, err, 403, "M_FORBIDDEN")
		_, err = alice.cli.CreateAlias(ctx, "#x:elsewhere.example", room)
		acctWantErr(t, err, 400, "M_INVALID_PARAM")
		_, err = alice.cli.CreateAlias(ctx, "#y:hearth.test", "!missing:hearth.test")
		acctWantErr(t, err, 404, "M_NOT_FOUND")
		acctDo(t, b, "PUT", "/_matrix/client/v3/directory/room/nohash", alice.tok, map[string]any{"room_id": room}).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "GET", "/_matrix/client/v3/directory/room/"+esc("#none:hearth.test"), "", nil).want(t, 404, "M_NOT_FOUND")

		list, err := bob.cli.GetAliases(ctx, room)
		if err != nil || !slices.Equal(list.Aliases, []id.RoomAlias{bobs, hall}) {
			t.Fatalf("room aliases: %+v %v", list, err)
		}
		_, err = carol.cli.GetAliases(ctx, room)
		acctWantErr(t, err, 403, "M_FORBIDDEN")

		// Bob (power 0) may delete his own alias but not alice's; alice,
		// a room admin, may delete any.
		if _, err := alice.cli.SendStateEvent(ctx, room, event.StateCanonicalAlias, "", map[string]any{"alias": hall, "alt_aliases": []id.RoomAlias{bobs}}); err != nil {
			t.Fatalf("canonical alias: %v", err)
		}
		_, err = bob.cli.DeleteAlias(ctx, hall)
		acctWantErr(t, err, 403, "M_FORBIDDEN")
		if _, err := bob.cli.DeleteAlias(ctx, bobs); err != nil {
			t.Fatalf("bob deletes his alias: %v", err)
		}
		if _, err := alice.cli.DeleteAlias(ctx, hall); err != nil {
			t.Fatalf("admin deletes an alias: %v", err)
		}
		_, err = alice.cli.ResolveAlias(ctx, hall)
		acctWantErr(t, err, 404, "M_NOT_FOUND")
		_, err = alice.cli.DeleteAlias(ctx, hall)
		acctWantErr(t, err, 404, "M_NOT_FOUND")
		// The canonical alias event no longer names the deleted alias.
		var ca map[string]any
		if err := alice.cli.StateEvent(ctx, room, event.StateCanonicalAlias, "", &ca); err != nil {
			t.Fatal(err)
		}
		if ca["alias"] != nil {
			t.Fatalf("canonical alias still names a deleted alias: %v", ca)
		}
		if list, err := alice.cli.GetAliases(ctx, room); err != nil || len(list.Aliases) != 0 {
			t.Fatalf("aliases after deletes: %+v %v", list, err)
		}
		// createRoom's alias is a directory alias like any other.
		r2, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: "second"})
		if err != nil {
			t.Fatal(err)
		}
		if res, err := bob.cli.ResolveAlias(ctx, "#second:hearth.test"); err != nil || res.RoomID != r2.RoomID {
			t.Fatalf("createRoom alias: %+v %v", res, err)
		}
	})
}

// TestPublicRooms publishes rooms and lists, searches and pages them.
func TestPublicRooms(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob := newRoomUser(t, b, "alice"), newRoomUser(t, b, "bob")
		pub, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Visibility: "public", Preset: "public_chat", Name: "Garden",
			Topic: "plants and such", RoomAliasName: "garden"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.JoinRoomByID(ctx, pub.RoomID); err != nil {
			t.Fatal(err)
		}
		priv, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Kitchen",
			InitialState: []*event.Event{{Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": "world_readable"}}}}})
		if err != nil {
			t.Fatal(err)
		}
		list, err := bob.cli.PublicRooms(ctx, &mautrix.ReqPublicRooms{})
		if err != nil || len(list.Chunk) != 1 {
			t.Fatalf("public rooms: %+v %v", list, err)
		}
		got := list.Chunk[0]
		if got.RoomID != pub.RoomID || got.Name != "Garden" || got.Topic != "plants and such" || got.CanonicalAlias != "#garden:hearth.test" ||
			got.NumJoinedMembers != 2 || got.JoinRule != "public" || got.WorldReadable || list.TotalRoomCountEstimate != 1 {
			t.Fatalf("public room entry: %+v", got)
		}
		// Publishing needs power in the room: bob (a member) may not.
		visPath := "/_matrix/client/v3/directory/list/room/" + esc(string(priv.RoomID))
		if vis := acctDo(t, b, "GET", visPath, "", nil); vis.status != 200 || vis.body["visibility"] != "private" {
			t.Fatalf("visibility: %d %v", vis.status, vis.body)
		}
		if _, err := bob.cli.JoinRoomByID(ctx, priv.RoomID); err != nil {
			t.Fatal(err)
		}
		acctDo(t, b, "PUT", "/_matrix/client/v3/directory/list/room/"+esc(string(priv.RoomID)), bob.tok, map[string]any{"visibility": "public"}).want(t, 403, "M_FORBIDDEN")
		acctDo(t, b, "PUT", "/_matrix/client/v3/directory/list/room/"+esc(string(priv.RoomID)), alice.tok, map[string]any{"visibility": "open"}).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "PUT", visPath, alice.tok, map[string]any{"visibility": "public"}).want(t, 200, "")
		if vis := acctDo(t, b, "GET", visPath, "", nil); vis.body["visibility"] != "public" {
			t.Fatalf("visibility after publishing: %v", vis.body)
		}
		// Search (POST) and paging (GET, no access token needed).
		r := acctDo(t, b, "POST", "/_matrix/client/v3/publicRooms", bob.tok, map[string]any{"filter": map[string]any{"generic_search_term": "KITCH"}})
		chunk, _ := r.body["chunk"].([]any)
		if r.status != 200 || len(chunk) != 1 || chunk[0].(map[string]any)["room_id"] != string(priv.RoomID) || chunk[0].(map[string]any)["world_readable"] != true {
			t.Fatalf("search: %d %v", r.status, r.body)
		}
		p1 := acctDo(t, b, "GET", "/_matrix/client/v3/publicRooms?limit=1", "", nil)
		next, _ := p1.body["next_batch"].(string)
		if p1.status != 200 || next == "" || len(histRawRoomIDs(p1.body["chunk"])) != 1 {
			t.Fatalf("page 1: %v", p1.body)
		}
		p2 := acctDo(t, b, "GET", "/_matrix/client/v3/publicRooms?limit=1&since="+next, "", nil)
		paged := append(histRawRoomIDs(p1.body["chunk"]), histRawRoomIDs(p2.body["chunk"])...)
		slices.Sort(paged)
		want := []string{string(pub.RoomID), string(priv.RoomID)}
		slices.Sort(want)
		if !slices.Equal(paged, want) || p2.body["next_batch"] != nil || p2.body["prev_batch"] == nil {
			t.Fatalf("page 2: %v (pages hold %v)", p2.body, paged)
		}
		acctDo(t, b, "GET", "/_matrix/client/v3/publicRooms?since=bogus", "", nil).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "PUT", "/_matrix/client/v3/directory/list/room/"+esc(string(pub.RoomID)), alice.tok, map[string]any{"visibility": "private"}).want(t, 200, "")
		acctDo(t, b, "GET", "/_matrix/client/v3/directory/list/room/%21missing%3Ahearth.test", "", nil).want(t, 404, "M_NOT_FOUND")
		if list, err := bob.cli.PublicRooms(ctx, &mautrix.ReqPublicRooms{}); err != nil || len(list.Chunk) != 1 || list.Chunk[0].RoomID != priv.RoomID {
			t.Fatalf("after unpublishing: %+v %v", list, err)
		}
	})
}

func histRawRoomIDs(v any) []string {
	list, _ := v.([]any)
	out := []string{}
	for _, e := range list {
		s, _ := e.(map[string]any)["room_id"].(string)
		out = append(out, s)
	}
	return out
}

// TestProfiles sets and reads profiles, checks the limits, and follows a
// change into the member events of the user's rooms.
func TestProfiles(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob := newRoomUser(t, b, "alice"), newRoomUser(t, b, "bob")
		bob.cli.UserID = bob.id // the profile calls put it in the path
		var joined []id.RoomID
		for range 2 {
			r, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := bob.cli.JoinRoomByID(ctx, r.RoomID); err != nil {
				t.Fatal(err)
			}
			joined = append(joined, r.RoomID)
		}
		left, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.JoinRoomByID(ctx, left.RoomID); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.LeaveRoom(ctx, left.RoomID); err != nil {
			t.Fatal(err)
		}

		if err := bob.cli.SetDisplayName(ctx, "Bobby"); err != nil {
			t.Fatalf("set displayname: %v", err)
		}
		avatar := id.MustParseContentURI("mxc://hearth.test/face")
		if err := bob.cli.SetAvatarURL(ctx, avatar); err != nil {
			t.Fatalf("set avatar: %v", err)
		}
		p, err := alice.cli.GetProfile(ctx, bob.id)
		if err != nil || p.DisplayName != "Bobby" || p.AvatarURL != avatar {
			t.Fatalf("profile: %+v %v", p, err)
		}
		if dn, err := alice.cli.GetDisplayName(ctx, bob.id); err != nil || dn.DisplayName != "Bobby" {
			t.Fatalf("displayname: %+v %v", dn, err)
		}
		if au, err := alice.cli.GetAvatarURL(ctx, bob.id); err != nil || au != avatar {
			t.Fatalf("avatar_url: %v %v", au, err)
		}
		// Every joined room shows the new profile; the left one does not
		// get a new join.
		for _, room := range joined {
			var m event.MemberEventContent
			if err := alice.cli.StateEvent(ctx, room, event.StateMember, string(bob.id), &m); err != nil {
				t.Fatal(err)
			}
			if m.Membership != event.MembershipJoin || m.Displayname != "Bobby" || m.AvatarURL != avatar.CUString() {
				t.Fatalf("member event in %s: %+v", room, m)
			}
		}
		var lm event.MemberEventContent
		if err := alice.cli.StateEvent(ctx, left.RoomID, event.StateMember, string(bob.id), &lm); err != nil || lm.Membership != event.MembershipLeave {
			t.Fatalf("left room member event: %+v %v", lm, err)
		}
		// Removing the name removes it from the member events too.
		acctDo(t, b, "PUT", "/_matrix/client/v3/profile/"+esc(string(bob.id))+"/displayname", bob.tok, map[string]any{"displayname": nil}).want(t, 200, "")
		var m event.MemberEventContent
		if err := alice.cli.StateEvent(ctx, joined[0], event.StateMember, string(bob.id), &m); err != nil || m.Displayname != "" || m.AvatarURL != avatar.CUString() {
			t.Fatalf("member event after clearing the name: %+v %v", m, err)
		}
		if r := acctDo(t, b, "GET", "/_matrix/client/v3/profile/"+esc(string(bob.id))+"/displayname", "", nil); r.status != 200 || r.body["displayname"] != nil {
			t.Fatalf("cleared displayname: %d %v", r.status, r.body)
		}

		prof := "/_matrix/client/v3/profile/"
		acctDo(t, b, "PUT", prof+esc(string(alice.id))+"/displayname", bob.tok, map[string]any{"displayname": "x"}).want(t, 403, "M_FORBIDDEN")
		acctDo(t, b, "PUT", prof+esc(string(bob.id))+"/displayname", bob.tok, map[string]any{"displayname": strings.Repeat("é", 257)}).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "PUT", prof+esc(string(bob.id))+"/displayname", bob.tok, map[string]any{"displayname": strings.Repeat("é", 256)}).want(t, 200, "")
		acctDo(t, b, "PUT", prof+esc(string(bob.id))+"/displayname", bob.tok, map[string]any{}).want(t, 400, "M_MISSING_PARAM")
		acctDo(t, b, "PUT", prof+esc(string(bob.id))+"/avatar_url", bob.tok, map[string]any{"avatar_url": 5}).want(t, 400, "M_BAD_JSON")
		acctDo(t, b, "PUT", prof+esc(string(bob.id))+"/avatar_url", bob.tok, map[string]any{"avatar_url": "mxc://hearth.test/" + strings.Repeat("a", 1000)}).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "GET", prof+esc("@nobody:hearth.test"), "", nil).want(t, 404, "M_NOT_FOUND")
		acctDo(t, b, "GET", prof+esc("@nobody:hearth.test")+"/displayname", "", nil).want(t, 404, "M_NOT_FOUND")
		acctDo(t, b, "GET", prof+"not-a-user", "", nil).want(t, 400, "M_INVALID_PARAM")
	})
}

// TestUserDirectory finds users who share a room with the searcher or sit
// in a published room, and nobody else.
func TestUserDirectory(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob, carol, dan := newRoomUser(t, b, "alice"), newRoomUser(t, b, "bob"), newRoomUser(t, b, "carol"), newRoomUser(t, b, "dan")
		bob.cli.UserID = bob.id
		shared, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.JoinRoomByID(ctx, shared.RoomID); err != nil {
			t.Fatal(err)
		}
		published, err := carol.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public"})
		if err != nil {
			t.Fatal(err)
		}
		_ = published
		if _, err := dan.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"}); err != nil {
			t.Fatal(err)
		}
		if err := bob.cli.SetDisplayName(ctx, "Robert Builder"); err != nil {
			t.Fatal(err)
		}
		search := func(term string, limit int) ([]id.UserID, bool) {
			r, err := alice.cli.SearchUserDirectory(ctx, term, limit)
			if err != nil {
				t.Fatalf("search %q: %v", term, err)
			}
			var ids []id.UserID
			for _, u := range r.Results {
				ids = append(ids, u.UserID)
			}
			return ids, r.Limited
		}
		if got, _ := search("robert", 10); !slices.Equal(got, []id.UserID{bob.id}) {
			t.Fatalf("by display name: %v", got)
		}
		if got, _ := search("carol", 10); !slices.Equal(got, []id.UserID{carol.id}) {
			t.Fatalf("member of a published room: %v", got)
		}
		if got, _ := search("dan", 10); len(got) != 0 {
			t.Fatalf("dan shares no room and sits in no public one: %v", got)
		}
		if got, limited := search("hearth.test", 1); len(got) != 1 || !limited {
			t.Fatalf("limit: %v limited=%v", got, limited)
		}
		// The searcher is not among the results (Synapse leaves them out).
		if got, _ := search("hearth.test", 10); !slices.Equal(got, []id.UserID{bob.id, carol.id}) {
			t.Fatalf("everyone visible to alice but alice: %v", got)
		}
	})
}
