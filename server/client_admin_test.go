package server_test

import (
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// makeAdmin turns a registered user into a server admin.
func makeAdmin(t *testing.T, b *servertest.Bundle, u roomUser) {
	t.Helper()
	if err := b.Store.SetAdmin(t.Context(), string(u.id), true); err != nil {
		t.Fatal(err)
	}
}

func TestClientWhois(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		admin, bob := newRoomUser(t, b, "admin"), newRoomUser(t, b, "bob")
		makeAdmin(t, b, admin)

		// Anyone may look themselves up, with mautrix's typed call.
		who, err := bob.cli.AdminWhoIs(t.Context(), bob.id)
		if err != nil || who.UserID != bob.id || len(who.Devices) != 1 {
			t.Fatalf("own whois: %+v %v", who, err)
		}
		for _, d := range who.Devices {
			if len(d.Sessions) != 1 || len(d.Sessions[0].Connections) != 1 || d.Sessions[0].Connections[0].IP == "" {
				t.Fatalf("own whois sessions: %+v", d.Sessions)
			}
		}
		// Others only as an admin; a non-admin learns nothing about who exists.
		acctDo(t, b, "GET", "/_matrix/client/v3/admin/whois/"+esc(string(admin.id)), bob.tok, nil).want(t, 403, "M_FORBIDDEN")
		acctDo(t, b, "GET", "/_matrix/client/v3/admin/whois/"+esc("@nobody:hearth.test"), bob.tok, nil).want(t, 403, "M_FORBIDDEN")
		r := acctDo(t, b, "GET", "/_matrix/client/r0/admin/whois/"+esc(string(bob.id)), admin.tok, nil)
		r.want(t, 200, "")
		if r.body["user_id"] != string(bob.id) {
			t.Fatalf("admin whois: %v", r.body)
		}
		acctDo(t, b, "GET", "/_matrix/client/v3/admin/whois/"+esc("@nobody:hearth.test"), admin.tok, nil).want(t, 404, "M_NOT_FOUND")
		acctDo(t, b, "GET", "/_matrix/client/v3/admin/whois/"+esc("@x:elsewhere.test"), admin.tok, nil).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "GET", "/_matrix/client/v3/admin/whois/"+esc(string(bob.id)), "", nil).want(t, 401, "M_MISSING_TOKEN")
	})
}

func TestAccountLock(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		admin, other, bob, carol := newRoomUser(t, b, "admin"), newRoomUser(t, b, "other"), newRoomUser(t, b, "bob"), newRoomUser(t, b, "carol")
		makeAdmin(t, b, admin)
		makeAdmin(t, b, other)
		lock := func(u string) string { return "/_matrix/client/v1/admin/lock/" + esc(u) }

		// Only admins, checked before the lookup.
		acctDo(t, b, "GET", lock(string(carol.id)), bob.tok, nil).want(t, 403, "M_FORBIDDEN")
		acctDo(t, b, "PUT", lock("@nobody:hearth.test"), bob.tok, map[string]any{"locked": true}).want(t, 403, "M_FORBIDDEN")
		acctDo(t, b, "GET", lock("@nobody:hearth.test"), admin.tok, nil).want(t, 404, "M_NOT_FOUND")
		acctDo(t, b, "GET", lock("@x:elsewhere.test"), admin.tok, nil).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "GET", lock(string(other.id)), admin.tok, nil).want(t, 403, "M_FORBIDDEN")
		acctDo(t, b, "PUT", lock(string(admin.id)), admin.tok, map[string]any{"locked": true}).want(t, 403, "M_FORBIDDEN")
		acctDo(t, b, "PUT", lock(string(bob.id)), admin.tok, map[string]any{}).want(t, 400, "M_MISSING_PARAM")
		acctDo(t, b, "PUT", lock(string(bob.id)), admin.tok, map[string]any{"locked": "yes"}).want(t, 400, "M_BAD_JSON")
		acctDo(t, b, "PUT", lock(string(bob.id)), admin.tok, "{nope").want(t, 400, "M_NOT_JSON")
		if r := acctDo(t, b, "GET", lock(string(bob.id)), admin.tok, nil); r.status != 200 || r.body["locked"] != false {
			t.Fatalf("lock status before: %d %v", r.status, r.body)
		}

		second := acctLogin(t, b, "bob", acctPW, "SECOND")
		if r := acctDo(t, b, "PUT", lock(string(bob.id)), admin.tok, map[string]any{"locked": true}); r.status != 200 || r.body["locked"] != true {
			t.Fatalf("lock: %d %v", r.status, r.body)
		}
		if r := acctDo(t, b, "GET", lock(string(bob.id)), admin.tok, nil); r.body["locked"] != true {
			t.Fatalf("lock status after: %v", r.body)
		}
		// Every request of the locked account is refused with a soft
		// logout, /sync included; logging in again is refused too.
		for _, path := range []string{"/_matrix/client/v3/account/whoami", "/_matrix/client/v3/sync?timeout=0", "/_matrix/client/v3/capabilities"} {
			r := acctDo(t, b, "GET", path, bob.tok, nil)
			r.want(t, 401, "M_USER_LOCKED")
			if r.body["soft_logout"] != true {
				t.Fatalf("%s: no soft_logout: %v", path, r.body)
			}
		}
		_, err := acctClient(t, b, "").Login(t.Context(), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "bob"}, Password: acctPW})
		acctWantErr(t, err, 401, "M_USER_LOCKED")
		// Logging out is the one thing still allowed.
		acctDo(t, b, "POST", "/_matrix/client/v3/logout", second.AccessToken, map[string]any{}).want(t, 200, "")

		// The Synapse admin API sees the same flag.
		if r := acctDo(t, b, "GET", "/_synapse/admin/v2/users/"+esc(string(bob.id)), admin.tok, nil); r.body["locked"] != true {
			t.Fatalf("synapse admin locked: %v", r.body)
		}
		// Unlocked, the session that was kept works again.
		acctDo(t, b, "PUT", lock(string(bob.id)), admin.tok, map[string]any{"locked": false}).want(t, 200, "")
		if _, err := bob.cli.Whoami(t.Context()); err != nil {
			t.Fatalf("whoami after unlock: %v", err)
		}

		// Deactivated accounts are not found.
		if err := b.Store.DeactivateUser(t.Context(), string(carol.id), false); err != nil {
			t.Fatal(err)
		}
		acctDo(t, b, "GET", lock(string(carol.id)), admin.tok, nil).want(t, 404, "M_NOT_FOUND")

		// Admins are told they may moderate; others are not told at all.
		caps := acctDo(t, b, "GET", "/_matrix/client/v3/capabilities", admin.tok, nil).body["capabilities"].(map[string]any)
		if m, _ := caps["m.account_moderation"].(map[string]any); m["lock"] != true || m["suspend"] != true {
			t.Fatalf("admin capabilities: %v", caps)
		}
		caps = acctDo(t, b, "GET", "/_matrix/client/v3/capabilities", bob.tok, nil).body["capabilities"].(map[string]any)
		if _, ok := caps["m.account_moderation"]; ok {
			t.Fatalf("non-admin capabilities: %v", caps)
		}
	})
}

func TestAccountSuspension(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		admin, bob, carol := newRoomUser(t, b, "admin"), newRoomUser(t, b, "bob"), newRoomUser(t, b, "carol")
		makeAdmin(t, b, admin)
		suspend := "/_matrix/client/v1/admin/suspend/" + esc(string(bob.id))

		room, err := admin.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatal(err)
		}
		mine, err := bob.cli.SendText(ctx, room.RoomID, "mine")
		if err != nil {
			t.Fatal(err)
		}
		theirs, err := admin.cli.SendText(ctx, room.RoomID, "theirs")
		if err != nil {
			t.Fatal(err)
		}
		other, err := carol.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{bob.id}})
		if err != nil {
			t.Fatal(err)
		}

		acctDo(t, b, "PUT", suspend, bob.tok, map[string]any{"suspended": true}).want(t, 403, "M_FORBIDDEN")
		if r := acctDo(t, b, "PUT", suspend, admin.tok, map[string]any{"suspended": true}); r.status != 200 || r.body["suspended"] != true {
			t.Fatalf("suspend: %d %v", r.status, r.body)
		}
		if r := acctDo(t, b, "GET", suspend, admin.tok, nil); r.body["suspended"] != true {
			t.Fatalf("suspend status: %v", r.body)
		}

		// What a suspended account may not do.
		_, err = bob.cli.SendText(ctx, room.RoomID, "hello")
		acctWantErr(t, err, 403, "M_USER_SUSPENDED")
		_, err = bob.cli.SendStateEvent(ctx, room.RoomID, event.StateTopic, "", map[string]any{"topic": "t"})
		acctWantErr(t, err, 403, "M_USER_SUSPENDED")
		_, err = bob.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
		acctWantErr(t, err, 403, "M_USER_SUSPENDED")
		_, err = bob.cli.JoinRoomByID(ctx, other.RoomID)
		acctWantErr(t, err, 403, "M_USER_SUSPENDED")
		_, err = bob.cli.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: carol.id})
		acctWantErr(t, err, 403, "M_USER_SUSPENDED")
		err = bob.cli.SetDisplayName(ctx, "Bobby")
		acctWantErr(t, err, 403, "M_USER_SUSPENDED")
		acctDo(t, b, "PUT", "/_matrix/client/v3/profile/"+esc(string(bob.id))+"/m.tz", bob.tok, map[string]any{"m.tz": "UTC"}).want(t, 403, "M_USER_SUSPENDED")
		acctDo(t, b, "DELETE", "/_matrix/client/v3/profile/"+esc(string(bob.id))+"/m.tz", bob.tok, nil).want(t, 403, "M_USER_SUSPENDED")
		_, err = bob.cli.UploadBytes(ctx, []byte("data"), "text/plain")
		acctWantErr(t, err, 403, "M_USER_SUSPENDED")
		_, err = bob.cli.RedactEvent(ctx, room.RoomID, theirs.EventID)
		acctWantErr(t, err, 403, "M_USER_SUSPENDED")
		acctDo(t, b, "PUT", "/_matrix/client/v3/rooms/"+esc(string(room.RoomID))+"/send/m.room.redaction/r1", bob.tok,
			map[string]any{"redacts": theirs.EventID}).want(t, 403, "M_USER_SUSPENDED")
		upload := acctDo(t, b, "POST", "/_matrix/media/v3/upload", bob.tok, "data")
		upload.want(t, 403, "M_USER_SUSPENDED")

		// What it may: read, redact its own events, reject invites, leave.
		if _, err := bob.cli.SyncRequest(ctx, 0, "", "", true, event.PresenceOnline); err != nil {
			t.Fatalf("sync while suspended: %v", err)
		}
		if _, err := bob.cli.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 10); err != nil {
			t.Fatalf("messages while suspended: %v", err)
		}
		if _, err := bob.cli.RedactEvent(ctx, room.RoomID, mine.EventID); err != nil {
			t.Fatalf("redact own event: %v", err)
		}
		caps := acctDo(t, b, "GET", "/_matrix/client/v3/capabilities", bob.tok, nil).body["capabilities"].(map[string]any)
		if c, _ := caps["m.set_displayname"].(map[string]any); c["enabled"] != false {
			t.Fatalf("capabilities while suspended: %v", caps)
		}
		if _, err := bob.cli.LeaveRoom(ctx, other.RoomID); err != nil {
			t.Fatalf("reject invite: %v", err)
		}
		if _, err := bob.cli.LeaveRoom(ctx, room.RoomID); err != nil {
			t.Fatalf("leave: %v", err)
		}

		// The Synapse admin API shows and lifts the suspension.
		if r := acctDo(t, b, "GET", "/_synapse/admin/v2/users/"+esc(string(bob.id)), admin.tok, nil); r.body["suspended"] != true {
			t.Fatalf("synapse admin suspended: %v", r.body)
		}
		r := acctDo(t, b, "PUT", "/_synapse/admin/v1/suspend/"+esc(string(bob.id)), admin.tok, map[string]any{"suspend": false})
		if r.status != 200 || r.body["user_"+string(bob.id)+"_suspended"] != false {
			t.Fatalf("synapse unsuspend: %d %v", r.status, r.body)
		}
		acctDo(t, b, "PUT", "/_synapse/admin/v1/suspend/"+esc("@nobody:hearth.test"), admin.tok, map[string]any{"suspend": true}).want(t, 404, "M_NOT_FOUND")
		acctDo(t, b, "PUT", "/_synapse/admin/v1/suspend/"+esc(string(bob.id)), bob.tok, map[string]any{"suspend": true}).want(t, 403, "M_FORBIDDEN")
		if _, err := bob.cli.JoinRoomByID(ctx, room.RoomID); err != nil {
			t.Fatalf("join after suspension lifted: %v", err)
		}
		if _, err := bob.cli.UploadBytes(ctx, []byte("data"), "text/plain"); err != nil {
			t.Fatalf("upload after suspension lifted: %v", err)
		}
	})
}
