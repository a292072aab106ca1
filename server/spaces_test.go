package server_test

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// spaceFixture is a small space tree, built by alice:
//
//	space (public space)
//	├── r3 (public, order "a", suggested)
//	├── r1 (public, order "b")
//	├── r6 (restricted to members of the space, order "c")
//	├── r2 (invite only)
//	├── sub (public space)
//	│   └── r4 (public)
//	└── gone (public; its m.space.child has no via: not a child)
type spaceFixture struct {
	space, r1, r2, r3, r4, r6, sub, gone id.RoomID
	names                                map[id.RoomID]string
}

func makeSpaces(t *testing.T, alice roomUser, version string) *spaceFixture {
	t.Helper()
	ctx := t.Context()
	f := &spaceFixture{names: map[id.RoomID]string{}}
	create := func(name, preset string, space bool, extra ...*event.Event) id.RoomID {
		t.Helper()
		req := &mautrix.ReqCreateRoom{Preset: preset, Name: name, RoomVersion: id.RoomVersion(version), InitialState: extra}
		if space {
			req.CreationContent = map[string]any{"type": "m.space"}
		}
		resp, err := alice.cli.CreateRoom(ctx, req)
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		f.names[resp.RoomID] = name
		return resp.RoomID
	}
	f.space = create("Space", "public_chat", true)
	f.r1 = create("One", "public_chat", false)
	f.r2 = create("Two", "private_chat", false)
	f.r3 = create("Three", "public_chat", false)
	f.sub = create("Sub", "public_chat", true)
	f.r4 = create("Four", "public_chat", false)
	f.gone = create("Gone", "public_chat", false)
	f.r6 = create("Six", "private_chat", false, &event.Event{Type: event.StateJoinRules, StateKey: new(string),
		Content: event.Content{Raw: map[string]any{"join_rule": "restricted",
			"allow": []any{map[string]any{"type": "m.room_membership", "room_id": f.space}}}}})
	server := alice.id.Homeserver()
	child := func(parent, c id.RoomID, content map[string]any) {
		t.Helper()
		if _, ok := content["via"]; !ok {
			content["via"] = []string{server}
		}
		if _, err := alice.cli.SendStateEvent(ctx, parent, event.StateSpaceChild, string(c), content); err != nil {
			t.Fatalf("m.space.child %s: %v", c, err)
		}
	}
	child(f.space, f.r1, map[string]any{"order": "b"})
	child(f.space, f.r3, map[string]any{"order": "a", "suggested": true})
	child(f.space, f.r2, map[string]any{})
	child(f.space, f.r6, map[string]any{"order": "c"})
	child(f.space, f.sub, map[string]any{"order": "\u0001 not valid: sorted as no order"})
	child(f.space, f.gone, map[string]any{"via": []string{}})
	child(f.sub, f.r4, map[string]any{})
	return f
}

func (f *spaceFixture) namesOf(rs []*mautrix.ChildRoomsChunk) []string {
	var out []string
	for _, r := range rs {
		out = append(out, f.names[r.RoomID])
	}
	return out
}

func hierarchy(t *testing.T, u roomUser, room id.RoomID, req *mautrix.ReqHierarchy) *mautrix.RespHierarchy {
	t.Helper()
	resp, err := u.cli.Hierarchy(t.Context(), room, req)
	if err != nil {
		t.Fatalf("hierarchy of %s as %s: %v", room, u.id, err)
	}
	return resp
}

// TestSpaceHierarchy walks a space of rooms on one server as its creator
// and as a user who is in none of them: order, visibility, depth,
// suggested rooms, pagination and errors; then /room_summary.
func TestSpaceHierarchy(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		f := makeSpaces(t, alice, "")

		all := hierarchy(t, alice, f.space, &mautrix.ReqHierarchy{})
		if got, want := f.namesOf(all.Rooms), []string{"Space", "Three", "One", "Six", "Two", "Sub", "Four"}; !slices.Equal(got, want) || all.NextBatch != "" {
			t.Fatalf("alice's hierarchy: %v (next %q), want %v", got, all.NextBatch, want)
		}
		top := all.Rooms[0]
		if top.RoomType != event.RoomTypeSpace || top.JoinRule != event.JoinRulePublic || top.NumJoinedMembers != 1 || top.RoomVersion == "" {
			t.Errorf("the space's summary: %+v", top.PublicRoomInfo)
		}
		var children []string
		for _, c := range top.ChildrenState {
			if c.Type != event.StateSpaceChild || c.Sender != alice.id || c.Timestamp == 0 {
				t.Errorf("stripped child event: %+v", c)
			}
			children = append(children, f.names[id.RoomID(*c.StateKey)])
		}
		slices.Sort(children)
		if want := []string{"One", "Six", "Sub", "Three", "Two"}; !slices.Equal(children, want) {
			t.Errorf("children_state names %v, want %v", children, want)
		}
		if len(all.Rooms[1].ChildrenState) != 0 {
			t.Errorf("a room that is not a space lists children: %v", all.Rooms[1].ChildrenState)
		}
		if six := all.Rooms[3]; six.JoinRule != "restricted" || !slices.Equal(six.AllowedRoomIDs, []id.RoomID{f.space}) {
			t.Errorf("restricted room: %+v", six.PublicRoomInfo)
		}

		// bob is in none of the rooms: he sees the public ones; the
		// restricted one once he joins the space.
		if got, want := f.namesOf(hierarchy(t, bob, f.space, &mautrix.ReqHierarchy{}).Rooms), []string{"Space", "Three", "One", "Sub", "Four"}; !slices.Equal(got, want) {
			t.Fatalf("bob's hierarchy: %v, want %v", got, want)
		}
		if _, err := bob.cli.JoinRoomByID(ctx, f.space); err != nil {
			t.Fatal(err)
		}
		if got, want := f.namesOf(hierarchy(t, bob, f.space, &mautrix.ReqHierarchy{}).Rooms), []string{"Space", "Three", "One", "Six", "Sub", "Four"}; !slices.Equal(got, want) {
			t.Fatalf("bob's hierarchy as a member of the space: %v, want %v", got, want)
		}

		// Depth and suggested rooms.
		zero, one := 0, 1
		if got := f.namesOf(hierarchy(t, alice, f.space, &mautrix.ReqHierarchy{MaxDepth: &zero}).Rooms); !slices.Equal(got, []string{"Space"}) {
			t.Errorf("max_depth 0: %v", got)
		}
		if got := f.namesOf(hierarchy(t, alice, f.space, &mautrix.ReqHierarchy{MaxDepth: &one}).Rooms); !slices.Equal(got, []string{"Space", "Three", "One", "Six", "Two", "Sub"}) {
			t.Errorf("max_depth 1: %v", got)
		}
		sugg := hierarchy(t, alice, f.space, &mautrix.ReqHierarchy{SuggestedOnly: true})
		if got := f.namesOf(sugg.Rooms); !slices.Equal(got, []string{"Space", "Three"}) || len(sugg.Rooms[0].ChildrenState) != 1 {
			t.Errorf("suggested only: %v, %d children", got, len(sugg.Rooms[0].ChildrenState))
		}

		// Pages of three, then a token used with other parameters.
		var paged []string
		from := ""
		for range 5 {
			page := hierarchy(t, alice, f.space, &mautrix.ReqHierarchy{Limit: 3, From: from})
			paged = append(paged, f.namesOf(page.Rooms)...)
			if from = page.NextBatch; from == "" {
				break
			}
		}
		if want := f.namesOf(all.Rooms); !slices.Equal(paged, want) {
			t.Errorf("paged: %v, want %v", paged, want)
		}
		page := hierarchy(t, alice, f.space, &mautrix.ReqHierarchy{Limit: 3})
		path := "/_matrix/client/v1/rooms/" + esc(string(f.space)) + "/hierarchy?"
		acctDo(t, b, "GET", path+"suggested_only=true&from="+url.QueryEscape(page.NextBatch), alice.tok, nil).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "GET", path+"from=nonsense", alice.tok, nil).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "GET", path+"limit=0", alice.tok, nil).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "GET", path+"max_depth=-1", alice.tok, nil).want(t, 400, "M_INVALID_PARAM")
		// A room bob may not see, and one nobody knows.
		acctDo(t, b, "GET", "/_matrix/client/v1/rooms/"+esc(string(f.r2))+"/hierarchy", bob.tok, nil).want(t, 403, "M_FORBIDDEN")
		acctDo(t, b, "GET", "/_matrix/client/v1/rooms/"+esc("!nowhere:hearth.test")+"/hierarchy", bob.tok, nil).want(t, 403, "M_FORBIDDEN")

		// /room_summary: anyone may read about a public room, by ID or
		// alias; only members about a private one; membership when known.
		if _, err := alice.cli.CreateAlias(ctx, id.RoomAlias("#one:"+alice.id.Homeserver()), f.r1); err != nil {
			t.Fatal(err)
		}
		sum := acctDo(t, b, "GET", "/_matrix/client/v1/room_summary/"+esc("#one:"+alice.id.Homeserver()), "", nil)
		sum.want(t, 200, "")
		if sum.body["room_id"] != string(f.r1) || sum.body["name"] != "One" || sum.body["join_rule"] != "public" ||
			sum.body["room_version"] == nil || sum.body["membership"] != nil {
			t.Errorf("anonymous summary: %v", sum.body)
		}
		// mautrix asks on MSC3266's unstable path while /versions lacks v1.15.
		if got, err := bob.cli.GetRoomSummary(ctx, string(f.r1)); err != nil || got.Name != "One" || got.Membership != "leave" {
			t.Errorf("summary through mautrix: %+v %v", got, err)
		}
		acctDo(t, b, "GET", "/_matrix/client/v1/room_summary/"+esc(string(f.r2)), "", nil).want(t, 404, "M_NOT_FOUND")
		acctDo(t, b, "GET", "/_matrix/client/v1/room_summary/"+esc(string(f.r2)), bob.tok, nil).want(t, 404, "M_NOT_FOUND")
		acctDo(t, b, "GET", "/_matrix/client/v1/room_summary/"+esc(string(f.r2)), "bad-token", nil).want(t, 401, "M_UNKNOWN_TOKEN")
		mine := acctDo(t, b, "GET", "/_matrix/client/v1/room_summary/"+esc(string(f.r2)), alice.tok, nil)
		mine.want(t, 200, "")
		if mine.body["membership"] != "join" || mine.body["join_rule"] != "invite" {
			t.Errorf("alice's summary of her private room: %v", mine.body)
		}
		if six := acctDo(t, b, "GET", "/_matrix/client/v1/room_summary/"+esc(string(f.r6)), bob.tok, nil); six.body["membership"] != "leave" ||
			fmt.Sprint(six.body["allowed_room_ids"]) != fmt.Sprint([]any{string(f.space)}) {
			t.Errorf("bob's summary of the restricted room: %v", six.body)
		}
	})
}

// TestFederationSpaces: a user of another server walks a space whose
// rooms live on the first, joined to the space only (the rest is asked of
// the first server over federation, once), and then a room version 11
// space its server is not in at all.
func TestFederationSpaces(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		a := fed.Start(t, e)
		b := fed.Start(t, e)
		ctx := t.Context()
		alice, bob := newSyncUser(t, a, "alice"), newSyncUser(t, b, "bob")
		f := makeSpaces(t, alice, "")
		if _, err := bob.cli.JoinRoom(ctx, string(f.space), &mautrix.ReqJoinRoom{Via: []string{a.Cfg.ServerName}}); err != nil {
			t.Fatalf("bob joins the space: %v", err)
		}
		asked := b.FederationRequests("/_matrix/federation/v1/hierarchy")
		got := hierarchy(t, bob, f.space, &mautrix.ReqHierarchy{})
		if names, want := f.namesOf(got.Rooms), []string{"Space", "Three", "One", "Six", "Sub", "Four"}; !slices.Equal(names, want) {
			t.Fatalf("bob's hierarchy over federation: %v, want %v", names, want)
		}
		if one := got.Rooms[2]; one.Name != "One" || one.NumJoinedMembers != 1 || one.JoinRule != event.JoinRulePublic || one.RoomVersion == "" {
			t.Errorf("a remote room's summary: %+v", one.PublicRoomInfo)
		}
		if sub := got.Rooms[4]; len(sub.ChildrenState) != 1 || id.RoomID(*sub.ChildrenState[0].StateKey) != f.r4 {
			t.Errorf("a remote space's children: %+v", sub.ChildrenState)
		}
		// The FederationRequests counter is on the answering server.
		n := a.FederationRequests("/_matrix/federation/v1/hierarchy") - asked
		if n == 0 || n > 6 {
			t.Errorf("alice's server answered %d hierarchy requests for one walk", n)
		}
		before := a.FederationRequests("/_matrix/federation/v1/hierarchy")
		hierarchy(t, bob, f.space, &mautrix.ReqHierarchy{Limit: 2})
		if again := a.FederationRequests("/_matrix/federation/v1/hierarchy") - before; again != 0 {
			t.Errorf("a second walk asked %d times again instead of using the cache", again)
		}

		// A space of room version 11 that bob's server is not in: asked of
		// the server in its ID; the private room stays hidden.
		old := makeSpaces(t, alice, "11")
		names := old.namesOf(hierarchy(t, bob, old.space, &mautrix.ReqHierarchy{}).Rooms)
		if want := []string{"Space", "Three", "One", "Sub", "Four"}; !slices.Equal(names, want) {
			t.Errorf("hierarchy of a space bob's server is not in: %v, want %v", names, want)
		}
		sum := acctDo(t, b, "GET", "/_matrix/client/v1/room_summary/"+esc(string(old.r1)), bob.tok, nil)
		if sum.want(t, 200, ""); sum.body["name"] != "One" || sum.body["membership"] != "leave" {
			t.Errorf("summary of a remote room: %v", sum.body)
		}
		acctDo(t, b, "GET", "/_matrix/client/v1/room_summary/"+esc(string(old.r2)), bob.tok, nil).want(t, 404, "M_NOT_FOUND")

		// The federation endpoint itself: unknown rooms are 404.
		cli := fed.Client(t, b)
		err := cli.Do(ctx, a.Cfg.ServerName, "GET", "/_matrix/federation/v1/hierarchy/"+url.PathEscape("!unknown:"+a.Cfg.ServerName), nil, nil, nil)
		if err == nil || !strings.Contains(err.Error(), "M_NOT_FOUND") {
			t.Errorf("hierarchy of an unknown room: %v", err)
		}
		err = cli.Do(ctx, a.Cfg.ServerName, "GET", "/_matrix/federation/v1/hierarchy/"+url.PathEscape(string(old.r2)), nil, nil, nil)
		if err == nil || !strings.Contains(err.Error(), "M_NOT_FOUND") {
			t.Errorf("hierarchy of a room bob's server may not see: %v", err)
		}
	})
}

// TestOpenID: a user's OpenID token names them to whoever asks this
// server's federation API, without X-Matrix, for an hour.
func TestOpenID(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob")
		path := "/_matrix/client/v3/user/" + esc(string(alice.id)) + "/openid/request_token"
		acctDo(t, b, "POST", path, bob.tok, map[string]any{}).want(t, 403, "M_FORBIDDEN")
		acctDo(t, b, "POST", path, "", map[string]any{}).want(t, 401, "M_MISSING_TOKEN")
		got := acctDo(t, b, "POST", path, alice.tok, map[string]any{})
		got.want(t, 200, "")
		tok, _ := got.body["access_token"].(string)
		if tok == "" || got.body["token_type"] != "Bearer" || got.body["matrix_server_name"] != alice.id.Homeserver() || got.body["expires_in"] != 3600.0 {
			t.Fatalf("openid token: %v", got.body)
		}
		info := acctDo(t, b, "GET", "/_matrix/federation/v1/openid/userinfo?access_token="+url.QueryEscape(tok), "", nil)
		if info.want(t, 200, ""); info.body["sub"] != string(alice.id) {
			t.Errorf("userinfo: %v", info.body)
		}
		acctDo(t, b, "GET", "/_matrix/federation/v1/openid/userinfo?access_token=nope", "", nil).want(t, 401, "M_UNKNOWN_TOKEN")
		acctDo(t, b, "GET", "/_matrix/federation/v1/openid/userinfo", "", nil).want(t, 401, "M_MISSING_TOKEN")
		// An access token is not an OpenID token.
		acctDo(t, b, "GET", "/_matrix/federation/v1/openid/userinfo?access_token="+url.QueryEscape(alice.tok), "", nil).want(t, 401, "M_UNKNOWN_TOKEN")
		// After an hour the token is refused.
		later := time.Now().Add(time.Hour).UnixMilli()
		if _, err := b.Store.OpenIDTokenUser(t.Context(), tok, later); err == nil {
			t.Errorf("the token is still valid an hour later")
		}
	})
}
