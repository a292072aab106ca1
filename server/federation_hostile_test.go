package server_test

import (
	"errors"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"

	"hearth/server/federation"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// TestFederationHostileInput sends well-signed but malformed or forbidden
// requests to every Server-Server endpoint: each gets the spec's status
// and errcode, and none changes the room.
func TestFederationHostileInput(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		a := fed.Start(t, e)
		evil := fed.Start(t, e) // a real server with keys, whose requests the test forges
		ctx := t.Context()
		alice := newSyncUser(t, a, "alice")
		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Private"})
		if err != nil {
			t.Fatal(err)
		}
		pub, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Public"})
		if err != nil {
			t.Fatal(err)
		}
		rid, pid := url.PathEscape(string(room.RoomID)), url.PathEscape(string(pub.RoomID))
		ev := url.PathEscape(currentID(t, a, string(room.RoomID), "m.room.name"))
		// mallory joins the public room, so evil may read it.
		mallory := newSyncUser(t, evil, "mallory")
		if _, err := mallory.cli.JoinRoom(ctx, string(pub.RoomID), &mautrix.ReqJoinRoom{Via: []string{a.Cfg.ServerName}}); err != nil {
			t.Fatal(err)
		}
		evilUser := string(mallory.id)
		cli := fed.Client(t, evil)
		before := eventCount(t, a)

		cases := []struct {
			name, method, path string
			query              url.Values
			body               any
			status             int
			errcode            string
		}{
			// Transactions.
			{"pdus not a list", "PUT", "/_matrix/federation/v1/send/t1", nil, map[string]any{"origin": evil.Cfg.ServerName, "origin_server_ts": 1, "pdus": "x"}, 400, "M_BAD_JSON"},
			{"too many pdus", "PUT", "/_matrix/federation/v1/send/t2", nil, map[string]any{"origin": evil.Cfg.ServerName, "origin_server_ts": 1, "pdus": make([]map[string]any, 51)}, 400, "M_BAD_JSON"},
			{"too many edus", "PUT", "/_matrix/federation/v1/send/t3", nil, map[string]any{"origin": evil.Cfg.ServerName, "origin_server_ts": 1, "pdus": []any{}, "edus": make([]map[string]any, 101)}, 400, "M_BAD_JSON"},
			{"a body that is not an object", "PUT", "/_matrix/federation/v1/send/t4", nil, []int{1}, 400, "M_BAD_JSON"},
			// Memberships: of a room evil has no business in, for users
			// that are not evil's.
			{"make_join for another server's user", "GET", "/_matrix/federation/v1/make_join/" + pid + "/" + url.PathEscape(string(alice.id)), url.Values{"ver": {"12", "11"}}, nil, 403, "M_FORBIDDEN"},
			{"make_join of an invite-only room", "GET", "/_matrix/federation/v1/make_join/" + rid + "/" + url.PathEscape(evilUser), url.Values{"ver": {"12", "11"}}, nil, 403, "M_FORBIDDEN"},
			{"make_join without a version we share", "GET", "/_matrix/federation/v1/make_join/" + pid + "/" + url.PathEscape(evilUser), url.Values{"ver": {"1"}}, nil, 400, "M_INCOMPATIBLE_ROOM_VERSION"},
			{"make_join of an unknown room", "GET", "/_matrix/federation/v1/make_join/" + url.PathEscape("!nope:"+a.Cfg.ServerName) + "/" + url.PathEscape(evilUser), url.Values{"ver": {"12"}}, nil, 404, "M_NOT_FOUND"},
			{"make_leave for another server's user", "GET", "/_matrix/federation/v1/make_leave/" + pid + "/" + url.PathEscape(string(alice.id)), nil, nil, 403, "M_FORBIDDEN"},
			{"send_join with no event", "PUT", "/_matrix/federation/v2/send_join/" + pid + "/" + url.PathEscape("$x"), nil, map[string]any{}, 400, "M_BAD_JSON"},
			{"invite with no event", "PUT", "/_matrix/federation/v2/invite/" + rid + "/" + url.PathEscape("$x"), nil, map[string]any{"room_version": "12"}, 400, "M_BAD_JSON"},
			// Reading a room evil has no user in.
			{"event of a private room", "GET", "/_matrix/federation/v1/event/" + ev, nil, nil, 403, "M_FORBIDDEN"},
			{"state of a private room", "GET", "/_matrix/federation/v1/state/" + rid, url.Values{"event_id": {currentID(t, a, string(room.RoomID), "m.room.name")}}, nil, 403, "M_FORBIDDEN"},
			{"state without event_id", "GET", "/_matrix/federation/v1/state_ids/" + pid, nil, nil, 400, "M_MISSING_PARAM"},
			{"backfill of a private room", "GET", "/_matrix/federation/v1/backfill/" + rid, url.Values{"v": {"$x"}, "limit": {"10"}}, nil, 403, "M_FORBIDDEN"},
			{"backfill with a bad limit", "GET", "/_matrix/federation/v1/backfill/" + pid, url.Values{"v": {"$x"}, "limit": {"ten"}}, nil, 400, "M_INVALID_PARAM"},
			{"get_missing_events of a private room", "POST", "/_matrix/federation/v1/get_missing_events/" + rid, nil, map[string]any{"earliest_events": []string{}, "latest_events": []string{"$x"}}, 403, "M_FORBIDDEN"},
			{"get_missing_events, not a list", "POST", "/_matrix/federation/v1/get_missing_events/" + pid, nil, map[string]any{"earliest_events": "x", "latest_events": []string{"$x"}}, 400, "M_BAD_JSON"},
			{"event_auth of a private room", "GET", "/_matrix/federation/v1/event_auth/" + rid + "/" + ev, nil, nil, 403, "M_FORBIDDEN"},
			{"timestamp_to_event with a bad dir", "GET", "/_matrix/federation/v1/timestamp_to_event/" + pid, url.Values{"ts": {"1"}, "dir": {"up"}}, nil, 400, "M_INVALID_PARAM"},
			{"hierarchy of a private room", "GET", "/_matrix/federation/v1/hierarchy/" + rid, nil, nil, 404, "M_NOT_FOUND"},
			// Queries.
			{"profile without user_id", "GET", "/_matrix/federation/v1/query/profile", nil, nil, 400, "M_MISSING_PARAM"},
			{"profile of a user of another server", "GET", "/_matrix/federation/v1/query/profile", url.Values{"user_id": {evilUser}}, nil, 400, "M_INVALID_PARAM"},
			{"profile of nobody", "GET", "/_matrix/federation/v1/query/profile", url.Values{"user_id": {"@nobody:" + a.Cfg.ServerName}}, nil, 404, "M_NOT_FOUND"},
			{"directory without room_alias", "GET", "/_matrix/federation/v1/query/directory", nil, nil, 400, "M_MISSING_PARAM"},
			{"devices of a user of another server", "GET", "/_matrix/federation/v1/user/devices/" + url.PathEscape(evilUser), nil, nil, 400, "M_INVALID_PARAM"},
			{"keys query, not an object", "POST", "/_matrix/federation/v1/user/keys/query", nil, map[string]any{"device_keys": []string{"x"}}, 400, "M_BAD_JSON"},
			{"keys claim, not an object", "POST", "/_matrix/federation/v1/user/keys/claim", nil, map[string]any{"one_time_keys": 1}, 400, "M_BAD_JSON"},
		}
		for _, c := range cases {
			err := cli.Do(ctx, a.Cfg.ServerName, c.method, c.path, c.query, c.body, nil)
			var re *federation.RemoteError
			if !errors.As(err, &re) || re.Status != c.status || re.Code != c.errcode {
				t.Errorf("%s: got %v, want %d %s", c.name, err, c.status, c.errcode)
			}
		}
		if after := eventCount(t, a); after != before {
			t.Errorf("the hostile requests changed the events stored: %d → %d", before, after)
		}
	})
}

// eventCount is how many events srv stores.
func eventCount(t *testing.T, srv *servertest.Bundle) int64 {
	t.Helper()
	n, err := srv.Store.CountEvents(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return n
}
