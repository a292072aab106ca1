package storage_test

import (
	"context"
	"errors"
	"testing"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

func TestDashboardSessionsAndAudit(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		ds := &storage.DashboardSession{IDHash: storage.HashToken("sid"), UserID: "@root:hs", CreatedTS: 1, ExpiresTS: 100, IP: "127.0.0.1"}
		if err := st.CreateDashboardSession(ctx, ds); err != nil {
			t.Fatal(err)
		}
		got, err := st.DashboardSessionByHash(ctx, ds.IDHash)
		if err != nil || got.UserID != "@root:hs" || got.ExpiresTS != 100 || got.IP != "127.0.0.1" {
			t.Fatalf("session: %+v %v", got, err)
		}
		if err := st.DeleteExpiredDashboardSessions(ctx, 101); err != nil {
			t.Fatal(err)
		}
		if _, err := st.DashboardSessionByHash(ctx, ds.IDHash); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("expired session still there: %v", err)
		}
		for _, a := range []string{"user.create", "user.deactivate"} {
			if err := st.AddAudit(ctx, storage.AuditEntry{Actor: "@root:hs", Action: a, Target: "@bob:hs"}); err != nil {
				t.Fatal(err)
			}
		}
		log, total, err := st.AuditLog(ctx, 0, 10)
		if err != nil || total != 2 || len(log) != 2 || log[0].Action != "user.deactivate" || log[0].TS == 0 {
			t.Fatalf("audit: %+v %d %v", log, total, err)
		}
		if n, err := st.DatabaseSize(ctx); err != nil || n <= 0 {
			t.Fatalf("database size %d %v", n, err)
		}
		if n, err := st.CountRooms(ctx); err != nil || n != 0 {
			t.Fatalf("rooms %d %v", n, err)
		}
		if n, err := st.CountEvents(ctx); err != nil || n != 0 {
			t.Fatalf("events %d %v", n, err)
		}
	})
}

// TestCachesFollowRevocation checks every path that revokes a token or
// changes a user drops what the caches hold, so a revoked token stops
// working at once.
func TestCachesFollowRevocation(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		for _, u := range []string{"alice", "bob"} {
			if err := st.CreateUser(ctx, &storage.User{UserID: "@" + u + ":hs", Localpart: u}); err != nil {
				t.Fatal(err)
			}
		}
		login := func(user, dev, tok string) {
			t.Helper()
			if err := st.CreateLogin(ctx, storage.NewLogin{UserID: user, DeviceID: dev, AccessToken: tok, RefreshToken: "r" + tok}); err != nil {
				t.Fatal(err)
			}
			if _, err := st.SessionByToken(ctx, tok); err != nil { // now cached
				t.Fatal(err)
			}
			if _, err := st.SessionByToken(ctx, tok); err != nil { // a hit
				t.Fatal(err)
			}
		}
		gone := func(tok, why string) {
			t.Helper()
			if _, err := st.SessionByToken(ctx, tok); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("%s: token %s still resolves (%v)", why, tok, err)
			}
		}
		alive := func(tok, why string) {
			t.Helper()
			if _, err := st.SessionByToken(ctx, tok); err != nil {
				t.Fatalf("%s: token %s lost: %v", why, tok, err)
			}
		}

		login("@alice:hs", "D1", "t1")
		se, _ := st.SessionByToken(ctx, "t1")
		if err := st.DeleteAccessToken(ctx, se.TokenID); err != nil {
			t.Fatal(err)
		}
		gone("t1", "logout")

		login("@alice:hs", "D2", "t2")
		login("@bob:hs", "B1", "b1")
		if err := st.DeleteDevices(ctx, "@alice:hs", []string{"D2"}); err != nil {
			t.Fatal(err)
		}
		gone("t2", "device deletion")
		alive("b1", "another user's device deletion")

		login("@alice:hs", "D3", "t3")
		if _, _, err := st.RefreshSession(ctx, "rt3", storage.NewLogin{AccessToken: "t3b"}); err != nil {
			t.Fatal(err)
		}
		gone("t3", "refresh")
		alive("t3b", "refresh")

		if err := st.CreateLogin(ctx, storage.NewLogin{UserID: "@alice:hs", DeviceID: "D3", AccessToken: "t3c", ReplaceDevice: true}); err != nil {
			t.Fatal(err)
		}
		gone("t3b", "login replacing the device")

		login("@alice:hs", "D4", "t4")
		login("@alice:hs", "D5", "t5")
		if err := st.DeleteUserTokens(ctx, "@alice:hs", "D5", false); err != nil {
			t.Fatal(err)
		}
		gone("t4", "logout/all keeping D5")
		alive("t5", "kept device")

		if _, err := st.UserByID(ctx, "@alice:hs"); err != nil { // cache the row
			t.Fatal(err)
		}
		if err := st.SetAdmin(ctx, "@alice:hs", true); err != nil {
			t.Fatal(err)
		}
		if u, _ := st.UserByID(ctx, "@alice:hs"); !u.IsAdmin {
			t.Fatal("cached user row not refreshed after SetAdmin")
		}
		u, _ := st.UserByID(ctx, "@alice:hs")
		u.IsAdmin = false // callers get copies
		if u2, _ := st.UserByID(ctx, "@alice:hs"); !u2.IsAdmin {
			t.Fatal("a caller's edit leaked into the cache")
		}
		if err := st.DeactivateUser(ctx, "@alice:hs", false); err != nil {
			t.Fatal(err)
		}
		gone("t5", "deactivation")
		if u, _ := st.UserByID(ctx, "@alice:hs"); !u.Deactivated {
			t.Fatal("cached user row not refreshed after deactivation")
		}
		alive("b1", "another user's deactivation")

		var hits uint64
		for _, c := range st.Caches().Stats() {
			hits += c.Hits
		}
		if hits == 0 {
			t.Fatal("caches never hit")
		}
	})
}
