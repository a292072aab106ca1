package server_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// Room upgrades (POST /rooms/{roomId}/upgrade), driven with mautrix over
// HTTP on every storage engine; mautrix has no upgrade call, so the
// upgrade itself is a raw request.

// upgrade upgrades room as u and returns the new room's ID.
func upgrade(t *testing.T, b *servertest.Bundle, u roomUser, room id.RoomID, body map[string]any) id.RoomID {
	t.Helper()
	r := acctDo(t, b, "POST", "/_matrix/client/v3/rooms/"+esc(string(room))+"/upgrade", u.tok, body)
	r.want(t, http.StatusOK, "")
	newRoom, _ := r.body["replacement_room"].(string)
	if newRoom == "" || newRoom == string(room) {
		t.Fatalf("upgrade answered %v", r.body)
	}
	return id.RoomID(newRoom)
}

// stateContent reads one state event's content as a map.
func stateContent(t *testing.T, u roomUser, room id.RoomID, typ, key string) map[string]any {
	t.Helper()
	var c map[string]any
	if err := u.cli.StateEvent(t.Context(), room, event.NewEventType(typ), key, &c); err != nil {
		t.Fatalf("state %s/%q of %s: %v", typ, key, room, err)
	}
	return c
}

func TestRoomUpgrade(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob, carol, mallory := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob"), newSyncUser(t, b, "carol"), newSyncUser(t, b, "mallory")
		dave := newSyncUser(t, b, "dave")

		created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Old", Topic: "the topic",
			RoomAliasName: "lounge", Visibility: "public", RoomVersion: "10",
			InitialState: []*event.Event{
				{Type: event.StateEncryption, Content: event.Content{Raw: map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}},
				{Type: event.StateGuestAccess, Content: event.Content{Raw: map[string]any{"guest_access": "forbidden"}}},
				{Type: event.StateRoomAvatar, Content: event.Content{Raw: map[string]any{"url": "mxc://hearth.test/avatar"}}},
				{Type: event.StateGuestAccess, Content: event.Content{Raw: map[string]any{"guest_access": "can_join"}}},
				{Type: event.StateServerACL, Content: event.Content{Raw: map[string]any{"allow": []string{"*"}, "deny": []string{"evil.example"}}}},
				{Type: event.NewEventType("org.example.custom"), StateKey: new(""), Content: event.Content{Raw: map[string]any{"x": 1}}},
			}})
		if err != nil {
			t.Fatal(err)
		}
		old := created.RoomID
		// A second alias, a moderator, a ban with a reason, a tag and a
		// direct-chat entry for bob.
		if _, err := alice.cli.CreateAlias(ctx, "#lounge2:hearth.test", old); err != nil {
			t.Fatal(err)
		}
		for _, u := range []roomUser{bob, carol} {
			if _, err := u.cli.JoinRoomByID(ctx, old); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := alice.cli.SendStateEvent(ctx, old, event.StateCanonicalAlias, "", map[string]any{
			"alias": "#lounge:hearth.test", "alt_aliases": []string{"#lounge2:hearth.test"}}); err != nil {
			t.Fatal(err)
		}
		pl := stateContent(t, alice, old, "m.room.power_levels", "")
		// Bob, a moderator, may upgrade the room and change its levels;
		// encryption and history need 100, so he is raised to 100 while
		// the state is copied, and put back afterwards.
		pl["users"].(map[string]any)[string(bob.id)] = 50
		pl["events"].(map[string]any)["m.room.tombstone"] = 50
		pl["events"].(map[string]any)["m.room.power_levels"] = 50
		if _, err := alice.cli.SendStateEvent(ctx, old, event.StatePowerLevels, "", pl); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.cli.BanUser(ctx, old, &mautrix.ReqBanUser{UserID: mallory.id, Reason: "spam"}); err != nil {
			t.Fatal(err)
		}
		if err := bob.cli.AddTag(ctx, old, "u.work", 0.5); err != nil {
			t.Fatal(err)
		}
		if err := bob.cli.SetAccountData(ctx, "m.direct", map[string][]id.RoomID{string(alice.id): {old}}); err != nil {
			t.Fatal(err)
		}
		// Dave tagged the room and left it before the upgrade: his tag
		// follows when he joins the new room.
		if _, err := dave.cli.JoinRoomByID(ctx, old); err != nil {
			t.Fatal(err)
		}
		if err := dave.cli.AddTag(ctx, old, "m.favourite", 0.1); err != nil {
			t.Fatal(err)
		}
		if _, err := dave.cli.LeaveRoom(ctx, old); err != nil {
			t.Fatal(err)
		}
		last := send(t, carol, old, "last words")
		bobSince := doSync(t, bob, "", "", 0).NextBatch

		// Errors first: an unknown version, a missing one, a member
		// without the power to upgrade, a room nobody knows.
		path := "/_matrix/client/v3/rooms/" + esc(string(old)) + "/upgrade"
		acctDo(t, b, "POST", path, alice.tok, map[string]any{"new_version": "99"}).want(t, 400, "M_UNSUPPORTED_ROOM_VERSION")
		acctDo(t, b, "POST", path, alice.tok, map[string]any{}).want(t, 400, "M_MISSING_PARAM")
		acctDo(t, b, "POST", path, carol.tok, map[string]any{"new_version": "11"}).want(t, 403, "M_FORBIDDEN")
		acctDo(t, b, "POST", path, mallory.tok, map[string]any{"new_version": "11"}).want(t, 403, "M_FORBIDDEN")
		acctDo(t, b, "POST", "/_matrix/client/v3/rooms/"+esc("!nowhere:hearth.test")+"/upgrade", alice.tok,
			map[string]any{"new_version": "11"}).want(t, 404, "M_NOT_FOUND")

		newRoom := upgrade(t, b, bob, old, map[string]any{"new_version": "11"})

		// The new room: version, predecessor, the copied state.
		create := stateContent(t, bob, newRoom, "m.room.create", "")
		pred, _ := create["predecessor"].(map[string]any)
		if create["room_version"] != "11" || pred["room_id"] != string(old) || pred["event_id"] != string(last) {
			t.Fatalf("new create content %v (last event %s)", create, last)
		}
		for _, c := range []struct{ typ, key, want string }{
			{"m.room.name", "name", "Old"}, {"m.room.topic", "topic", "the topic"}, {"m.room.join_rules", "join_rule", "public"},
			{"m.room.history_visibility", "history_visibility", "shared"}, {"m.room.guest_access", "guest_access", "can_join"},
			{"m.room.encryption", "algorithm", "m.megolm.v1.aes-sha2"}, {"m.room.avatar", "url", "mxc://hearth.test/avatar"},
			{"m.room.canonical_alias", "alias", "#lounge:hearth.test"},
		} {
			if got := stateContent(t, bob, newRoom, c.typ, "")[c.key]; got != c.want {
				t.Errorf("new room %s %s = %v, want %s", c.typ, c.key, got, c.want)
			}
		}
		if acl := stateContent(t, bob, newRoom, "m.room.server_acl", ""); !slices.Equal(toStrings(acl["deny"]), []string{"evil.example"}) {
			t.Errorf("server ACL %v", acl)
		}
		var custom map[string]any
		if err := bob.cli.StateEvent(ctx, newRoom, event.NewEventType("org.example.custom"), "", &custom); err == nil {
			t.Error("a state event outside the spec's list was copied")
		}
		// The power levels are the old room's (bob is not left raised), the
		// ban came along with its reason.
		newPL := stateContent(t, bob, newRoom, "m.room.power_levels", "")
		users := newPL["users"].(map[string]any)
		if users[string(alice.id)] != 100.0 || users[string(bob.id)] != 50.0 || newPL["events_default"] != 0.0 ||
			newPL["events"].(map[string]any)["m.room.encryption"] != 100.0 {
			t.Errorf("new room power levels %v", newPL)
		}
		if ban := stateContent(t, bob, newRoom, "m.room.member", string(mallory.id)); ban["membership"] != "ban" || ban["reason"] != "spam" {
			t.Errorf("mallory in the new room: %v", ban)
		}
		_, err = mallory.cli.JoinRoomByID(ctx, newRoom)
		acctWantErr(t, err, 403, "M_FORBIDDEN")

		// The old room: tombstone, restricted levels, no canonical alias.
		tomb := stateContent(t, alice, old, "m.room.tombstone", "")
		if tomb["replacement_room"] != string(newRoom) || tomb["body"] == "" {
			t.Errorf("tombstone %v", tomb)
		}
		oldPL := stateContent(t, alice, old, "m.room.power_levels", "")
		if oldPL["events_default"] != 50.0 || oldPL["invite"] != 50.0 {
			t.Errorf("old room levels not restricted: %v", oldPL)
		}
		_, err = carol.cli.SendText(ctx, old, "still here?")
		acctWantErr(t, err, 403, "M_FORBIDDEN")
		if ca := stateContent(t, alice, old, "m.room.canonical_alias", ""); len(ca) != 0 {
			t.Errorf("old canonical alias %v", ca)
		}

		// Aliases and the directory listing moved.
		for _, a := range []id.RoomAlias{"#lounge:hearth.test", "#lounge2:hearth.test"} {
			res, err := alice.cli.ResolveAlias(ctx, a)
			if err != nil || res.RoomID != newRoom {
				t.Errorf("%s resolves to %v (%v), want %s", a, res, err, newRoom)
			}
		}
		pub, err := alice.cli.PublicRooms(ctx, &mautrix.ReqPublicRooms{})
		if err != nil {
			t.Fatal(err)
		}
		if len(pub.Chunk) != 1 || pub.Chunk[0].RoomID != newRoom {
			t.Errorf("public rooms after the upgrade: %+v", pub.Chunk)
		}

		// Bob sees the tombstone in /sync, and his tag and direct chat
		// entry hold for the new room as well.
		res := doSync(t, bob, bobSince, "", 0)
		if jr := res.Rooms.Join[old]; jr == nil || hasType(jr.Timeline.Events, "m.room.tombstone") == nil {
			t.Errorf("bob's sync has no tombstone in the old room: %+v", res.Rooms.Join[old])
		}
		tags, err := bob.cli.GetTags(ctx, newRoom)
		if err != nil || tags.Tags["u.work"].Order != "0.5" {
			t.Errorf("bob's tags for the new room: %+v %v", tags, err)
		}
		var direct map[string][]id.RoomID
		if err := bob.cli.GetAccountData(ctx, "m.direct", &direct); err != nil || !slices.Contains(direct[string(alice.id)], newRoom) ||
			!slices.Contains(direct[string(alice.id)], old) {
			t.Errorf("bob's m.direct %v %v", direct, err)
		}
		// Members join the new room through the tombstone's pointer.
		if _, err := alice.cli.JoinRoomByID(ctx, newRoom); err != nil {
			t.Fatal(err)
		}
		if tags, err := dave.cli.GetTags(ctx, newRoom); err != nil || len(tags.Tags) != 0 {
			t.Fatalf("dave has tags for the new room before joining it: %+v %v", tags, err)
		}
		if _, err := dave.cli.JoinRoomByID(ctx, newRoom); err != nil {
			t.Fatal(err)
		}
		if tags, err := dave.cli.GetTags(ctx, newRoom); err != nil || tags.Tags["m.favourite"].Order != "0.1" {
			t.Errorf("dave's tags after joining the new room: %+v %v", tags, err)
		}
	})
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

// TestRoomUpgradeV12 upgrades to room version 12: the upgrading user and
// additional_creators become creators, left out of the power levels, and
// additional_creators is validated.
func TestRoomUpgradeV12(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob, carol := newSyncUser(t, b, "alice"), newSyncUser(t, b, "bob"), newSyncUser(t, b, "carol")
		created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11"})
		if err != nil {
			t.Fatal(err)
		}
		old := created.RoomID
		for _, u := range []roomUser{bob, carol} {
			if _, err := u.cli.JoinRoomByID(ctx, old); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := alice.cli.SendStateEvent(ctx, old, event.StatePowerLevels, "", map[string]any{
			"users": map[string]int{string(alice.id): 100, string(bob.id): 100, string(carol.id): 50}}); err != nil {
			t.Fatal(err)
		}
		path := "/_matrix/client/v3/rooms/" + esc(string(old)) + "/upgrade"
		for _, bad := range []struct {
			creators any
			code     string
		}{
			{"not-an-array", "M_BAD_JSON"},
			{[]any{"@ok:example.org", 42}, "M_BAD_JSON"},
			{[]any{"not-a-user-id"}, "M_INVALID_PARAM"},
			{[]any{"@invalid:dom$ain$.com"}, "M_INVALID_PARAM"},
		} {
			acctDo(t, b, "POST", path, alice.tok, map[string]any{"new_version": "12", "additional_creators": bad.creators}).want(t, 400, bad.code)
		}
		// Validation happened before anything changed.
		var tomb map[string]any
		if err := alice.cli.StateEvent(ctx, old, event.StateTombstone, "", &tomb); err == nil {
			t.Fatalf("a refused upgrade left a tombstone: %v", tomb)
		}
		// Versions without additional creators ignore the field.
		acctDo(t, b, "POST", "/_matrix/client/v3/rooms/"+esc("!nowhere:hearth.test")+"/upgrade", alice.tok,
			map[string]any{"new_version": "11", "additional_creators": "ignored"}).want(t, 404, "M_NOT_FOUND")

		newRoom := upgrade(t, b, alice, old, map[string]any{"new_version": "12", "additional_creators": []string{string(bob.id), string(bob.id)}})
		create := stateContent(t, alice, newRoom, "m.room.create", "")
		if create["room_version"] != "12" || !slices.Equal(toStrings(create["additional_creators"]), []string{string(bob.id)}) {
			t.Errorf("v12 create content %v", create)
		}
		pl := stateContent(t, alice, newRoom, "m.room.power_levels", "")
		if users := pl["users"].(map[string]any); len(users) != 1 || users[string(carol.id)] != 50.0 {
			t.Errorf("v12 power level users %v: creators must be left out, carol kept", users)
		}
		// Bob, a creator, may do what creators do; carol may not upgrade.
		if _, err := bob.cli.JoinRoomByID(ctx, newRoom); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.SendStateEvent(ctx, newRoom, event.StateRoomName, "", map[string]any{"name": "Bob's"}); err != nil {
			t.Errorf("additional creator cannot set the name: %v", err)
		}
		acctDo(t, b, "POST", "/_matrix/client/v3/rooms/"+esc(string(newRoom))+"/upgrade", carol.tok,
			map[string]any{"new_version": "12"}).want(t, 403, "M_FORBIDDEN")

		// A v12 room upgraded again without additional_creators has the
		// upgrading user as its only creator.
		third := upgrade(t, b, bob, newRoom, map[string]any{"new_version": "12"})
		create = stateContent(t, bob, third, "m.room.create", "")
		if _, has := create["additional_creators"]; has {
			t.Errorf("additional creators carried over: %v", create)
		}
		raw, _ := json.Marshal(stateContent(t, bob, third, "m.room.power_levels", ""))
		var thirdPL struct {
			Users map[string]int `json:"users"`
		}
		_ = json.Unmarshal(raw, &thirdPL)
		if _, listed := thirdPL.Users[string(bob.id)]; listed {
			t.Errorf("the creator is listed in the power levels: %s", raw)
		}

		// A space keeps its type and its children.
		space, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11",
			CreationContent: map[string]any{"type": "m.space"},
			InitialState: []*event.Event{
				{Type: event.StateSpaceChild, StateKey: new(string(old)), Content: event.Content{Raw: map[string]any{"via": []string{"hearth.test"}}}},
				{Type: event.StateSpaceChild, StateKey: new("!gone:hearth.test"), Content: event.Content{Raw: map[string]any{}}},
			}})
		if err != nil {
			t.Fatal(err)
		}
		newSpace := upgrade(t, b, alice, space.RoomID, map[string]any{"new_version": "11"})
		if c := stateContent(t, alice, newSpace, "m.room.create", ""); c["type"] != "m.space" {
			t.Errorf("space create content %v", c)
		}
		if c := stateContent(t, alice, newSpace, "m.space.child", string(old)); c["via"] == nil {
			t.Errorf("space child %v", c)
		}
		var gone map[string]any
		if err := alice.cli.StateEvent(ctx, newSpace, event.StateSpaceChild, "!gone:hearth.test", &gone); err == nil {
			t.Errorf("a removed child was copied: %v", gone)
		}

		// createRoom validates additional_creators the same way.
		acctDo(t, b, "POST", "/_matrix/client/v3/createRoom", alice.tok, map[string]any{"room_version": "12",
			"creation_content": map[string]any{"additional_creators": []any{"not-a-user-id"}}}).want(t, 400, "M_INVALID_PARAM")
	})
}

// TestManualRoomUpgradeCarriesSettings: a room made by hand to replace
// another (createRoom with creation_content.predecessor) gives its creator,
// and every local user who joins it, their push rules for the old room, as
// an upgrade through the API does (Complement's TestPushRuleRoomUpgrade,
// "manually upgrading").
func TestManualRoomUpgradeCarriesSettings(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob := newRoomUser(t, b, "alice"), newRoomUser(t, b, "bob")
		old, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.JoinRoomByID(ctx, old.RoomID); err != nil {
			t.Fatal(err)
		}
		rule := func(_ roomUser, room id.RoomID) string {
			return "/_matrix/client/v3/pushrules/global/room/" + esc(string(room))
		}
		for _, u := range []roomUser{alice, bob} {
			acctDo(t, b, "PUT", rule(u, old.RoomID), u.tok, map[string]any{"actions": []string{"dont_notify"}}).want(t, http.StatusOK, "")
		}
		created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11",
			CreationContent: map[string]any{"predecessor": map[string]any{"room_id": string(old.RoomID)}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.cli.SendStateEvent(ctx, old.RoomID, event.StateTombstone, "", map[string]any{
			"body": "replaced", "replacement_room": created.RoomID}); err != nil {
			t.Fatal(err)
		}
		acctDo(t, b, "GET", rule(alice, created.RoomID), alice.tok, nil).want(t, http.StatusOK, "")
		acctDo(t, b, "GET", rule(bob, created.RoomID), bob.tok, nil).want(t, http.StatusNotFound, "M_NOT_FOUND")
		if _, err := bob.cli.JoinRoomByID(ctx, created.RoomID); err != nil {
			t.Fatal(err)
		}
		r := acctDo(t, b, "GET", rule(bob, created.RoomID), bob.tok, nil)
		r.want(t, http.StatusOK, "")
		if acts, _ := r.body["actions"].([]any); len(acts) != 1 || acts[0] != "dont_notify" {
			t.Fatalf("bob's copied rule: %v", r.body)
		}
	})
}
