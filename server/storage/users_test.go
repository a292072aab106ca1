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
		if _, _, err := st.RefreshSession(ctx, "ref1", storage.NewLogin{AccessToken: "tok3"}); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("reused refresh token: %v", err)
		}
		if err := st.DeleteDevices(ctx, u.UserID, []string{"DEV1", "nope"}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.SessionByToken(ctx, "tok2"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("token after device delete: %v", err)
		}
		users, total, err := st.ListUsers(ctx, storage.UserFilter{Name: "ALI"})
		if err != nil || total != 1 || len(users) != 1 {
			t.Fatalf("list: %v %d %v", users, total, err)
		}
	})
}
