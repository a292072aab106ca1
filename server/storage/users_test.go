package storage_test

import (
	"context"
	"errors"
	"testing"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

func TestUsersAndTokens(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		u := &storage.User{UserID: "@alice:hs", Localpart: "alice", PasswordHash: "$2b$x"}
		if err := st.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		if err := st.CreateUser(ctx, u); !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("duplicate user: got %v, want ErrConflict", err)
		}
		if _, err := st.UserByID(ctx, "@nobody:hs"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("missing user: got %v, want ErrNotFound", err)
		}
		if err := st.CreateLogin(ctx, storage.NewLogin{UserID: u.UserID, DeviceID: "DEV1", DeviceDisplayName: "phone",
			AccessToken: "tok1", RefreshToken: "ref1"}); err != nil {
			t.Fatal(err)
		}
		se, err := st.SessionByToken(ctx, "tok1")
		if err != nil || se.UserID != u.UserID || se.DeviceID != "DEV1" {
			t.Fatalf("session: %+v %v", se, err)
		}
		if _, _, err := st.RefreshSession(ctx, "ref1", storage.NewLogin{AccessToken: "tok2", RefreshToken: "ref2"}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.SessionByToken(ctx, "tok1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("old token after refresh: %v", err)
		}
		// Until the new pair is used the old refresh token may be retried
		// (a lost response); the unused pair is replaced.
		if _, _, err := st.RefreshSession(ctx, "ref1", storage.NewLogin{AccessToken: "tok2b", RefreshToken: "ref2b"}); err != nil {
			t.Fatalf("retried refresh: %v", err)
		}
		if _, err := st.SessionByToken(ctx, "tok2"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("the unused pair after a retry: %v", err)
		}
		se, err = st.SessionByToken(ctx, "tok2b")
		if err != nil || !se.FirstUse || se.RefreshTokenID == 0 {
			t.Fatalf("new pair before its first use: %+v %v", se, err)
		}
		if err := st.RetireReplacedRefreshToken(ctx, "tok2b", se.RefreshTokenID); err != nil {
			t.Fatal(err)
		}
		if se, err := st.SessionByToken(ctx, "tok2b"); err != nil || se.FirstUse {
			t.Fatalf("new pair after its first use: %+v %v", se, err)
		}
		if _, _, err := st.RefreshSession(ctx, "ref1", storage.NewLogin{AccessToken: "tok3"}); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("reused refresh token after the new pair was used: %v", err)
		}
		if err := st.DeleteDevices(ctx, u.UserID, []string{"DEV1", "nope"}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.SessionByToken(ctx, "tok2b"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("token after device delete: %v", err)
		}
		users, total, err := st.ListUsers(ctx, storage.UserFilter{Name: "ALI"})
		if err != nil || total != 1 || len(users) != 1 {
			t.Fatalf("list: %v %d %v", users, total, err)
		}
	})
}
