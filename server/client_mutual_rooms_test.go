package server_test

import (
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"hearth/server"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

func TestMutualRooms(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob := newRoomUser(t, b, "alice"), newRoomUser(t, b, "bob")
		var shared []id.RoomID
		for i := range 4 {
			room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if err != nil {
				t.Fatal(err)
			}
			switch i {
			case 0, 1: // both joined
				if _, err := bob.cli.JoinRoomByID(ctx, room.RoomID); err != nil {
					t.Fatal(err)
				}
				shared = append(shared, room.RoomID)
			case 2: // bob left again
				if _, err := bob.cli.JoinRoomByID(ctx, room.RoomID); err != nil {
					t.Fatal(err)
				}
				if _, err := bob.cli.LeaveRoom(ctx, room.RoomID); err != nil {
					t.Fatal(err)
				}
			case 3: // bob only invited
				if _, err := alice.cli.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: bob.id}); err != nil {
					t.Fatal(err)
				}
			}
		}
		slices.Sort(shared)

		got, err := alice.cli.GetMutualRooms(ctx, bob.id)
		if err != nil || !slices.Equal(got.Joined, shared) || got.Count != 2 || got.NextBatch != "" {
			t.Fatalf("mutual rooms: %+v %v, want %v", got, err, shared)
		}
		// Bob sees the same from his side, on the unstable path too.
		r := acctDo(t, b, "GET", "/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms?user_id="+esc(string(alice.id)), bob.tok, nil)
		if r.status != 200 || len(r.body["joined"].([]any)) != 2 {
			t.Fatalf("unstable path: %d %v", r.status, r.body)
		}

		// One room a batch: the token leads to the next, the last has none.
		server.SetMutualRoomsBatch(b.Server, 1)
		first, err := alice.cli.GetMutualRooms(ctx, bob.id)
		if err != nil || len(first.Joined) != 1 || first.Joined[0] != shared[0] || first.NextBatch == "" || first.Count != 2 {
			t.Fatalf("first batch: %+v %v", first, err)
		}
		second, err := alice.cli.GetMutualRooms(ctx, bob.id, mautrix.ReqMutualRooms{From: first.NextBatch})
		if err != nil || len(second.Joined) != 1 || second.Joined[0] != shared[1] || second.NextBatch != "" || second.Count != 2 {
			t.Fatalf("second batch: %+v %v", second, err)
		}

		// An unknown user shares nothing; bad requests are 400.
		if r := acctDo(t, b, "GET", "/_matrix/client/v1/mutual_rooms?user_id="+esc("@nobody:hearth.test"), alice.tok, nil); r.status != 200 || len(r.body["joined"].([]any)) != 0 || r.body["count"] != 0.0 {
			t.Fatalf("unknown user: %d %v", r.status, r.body)
		}
		for q, code := range map[string]string{
			"":                                  "M_MISSING_PARAM",
			"?user_id=" + esc(string(alice.id)): "M_INVALID_PARAM",
			"?user_id=bob":                      "M_INVALID_PARAM",
			"?user_id=" + esc("@:hearth.test"):  "M_INVALID_PARAM",
			"?user_id=" + esc("@bob:bad host"):  "M_INVALID_PARAM",
			"?user_id=" + esc(string(bob.id)) + "&from=" + esc("not base64!"):     "M_INVALID_PARAM",
			"?user_id=" + esc(string(bob.id)) + "&user_id=" + esc(string(bob.id)): "M_INVALID_PARAM",
		} {
			acctDo(t, b, "GET", "/_matrix/client/v1/mutual_rooms"+q, alice.tok, nil).want(t, 400, code)
		}
		acctDo(t, b, "GET", "/_matrix/client/v1/mutual_rooms?user_id="+esc(string(bob.id)), "", nil).want(t, 401, "M_MISSING_TOKEN")
	})
}
