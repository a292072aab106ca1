package storage_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

func TestProfileFields(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		u := &storage.User{UserID: "@alice:hs", Localpart: "alice", DisplayName: "Alice"}
		if err := st.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		if _, err := st.ProfileField(ctx, u.UserID, "m.tz"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unset field: %v", err)
		}
		for field, v := range map[string]string{"m.tz": `"Europe/London"`, "org.example.job": `{"title":"baker","since":2020}`, "org.example.nothing": `null`} {
			if err := st.SetProfileField(ctx, u.UserID, field, json.RawMessage(v)); err != nil {
				t.Fatalf("set %s: %v", field, err)
			}
		}
		if err := st.SetProfileField(ctx, u.UserID, "m.tz", json.RawMessage(`"Europe/Paris"`)); err != nil {
			t.Fatal(err)
		}
		got, err := st.ProfileFields(ctx, u.UserID)
		if err != nil || len(got) != 3 || string(got["m.tz"]) != `"Europe/Paris"` || string(got["org.example.nothing"]) != "null" {
			t.Fatalf("fields: %s %v", got, err)
		}

		// 64 KiB is the whole profile: a field that fits alone does not
		// fit beside another large one, but may replace it.
		big := json.RawMessage(`"` + strings.Repeat("x", 40_000) + `"`)
		if err := st.SetProfileField(ctx, u.UserID, "org.example.a", big); err != nil {
			t.Fatal(err)
		}
		if err := st.SetProfileField(ctx, u.UserID, "org.example.b", big); !errors.Is(err, storage.ErrProfileTooLarge) {
			t.Fatalf("second large field: %v, want ErrProfileTooLarge", err)
		}
		if err := st.SetProfileField(ctx, u.UserID, "org.example.a", big); err != nil {
			t.Fatalf("replacing the large field: %v", err)
		}
		if ok, err := st.ProfileFits(ctx, u.UserID, "displayname", strings.Repeat("y", 30_000)); err != nil || ok {
			t.Fatalf("display name past the limit fits: %v %v", ok, err)
		}
		if ok, err := st.ProfileFits(ctx, u.UserID, "displayname", "Alice B."); err != nil || !ok {
			t.Fatalf("short display name does not fit: %v %v", ok, err)
		}

		if err := st.DeleteProfileField(ctx, u.UserID, "org.example.a"); err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteProfileField(ctx, u.UserID, "org.example.never"); err != nil {
			t.Fatalf("deleting an unset field: %v", err)
		}
		if err := st.SetProfileField(ctx, u.UserID, "org.example.b", big); err != nil {
			t.Fatalf("large field after delete: %v", err)
		}

		// Erasing the account clears the custom fields too.
		if err := st.DeactivateUser(ctx, u.UserID, true); err != nil {
			t.Fatal(err)
		}
		if got, err := st.ProfileFields(ctx, u.UserID); err != nil || len(got) != 0 {
			t.Fatalf("fields after erase: %s %v", got, err)
		}
	})
}

func TestLoginTokens(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		if err := st.AddLoginToken(ctx, "tok-a", "@alice:hs", 2000, 1000); err != nil {
			t.Fatal(err)
		}
		if err := st.AddLoginToken(ctx, "tok-b", "@alice:hs", 1500, 1000); err != nil {
			t.Fatal(err)
		}
		if u, err := st.ConsumeLoginToken(ctx, "tok-a", 1100); err != nil || u != "@alice:hs" {
			t.Fatalf("consume: %q %v", u, err)
		}
		if _, err := st.ConsumeLoginToken(ctx, "tok-a", 1100); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("second use: %v, want ErrNotFound", err)
		}
		if _, err := st.ConsumeLoginToken(ctx, "tok-b", 1500); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("expired token: %v, want ErrNotFound", err)
		}
		if _, err := st.ConsumeLoginToken(ctx, "never-issued", 0); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown token: %v, want ErrNotFound", err)
		}
	})
}

func TestSuspendedFlag(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		if err := st.CreateUser(ctx, &storage.User{UserID: "@bob:hs", Localpart: "bob"}); err != nil {
			t.Fatal(err)
		}
		if u, err := st.UserByID(ctx, "@bob:hs"); err != nil || u.Suspended {
			t.Fatalf("new user: %+v %v", u, err)
		}
		if err := st.SetSuspended(ctx, "@bob:hs", true); err != nil {
			t.Fatal(err)
		}
		// The users cache must not hand back the old row.
		if u, err := st.UserByID(ctx, "@bob:hs"); err != nil || !u.Suspended {
			t.Fatalf("suspended user: %+v %v", u, err)
		}
		if err := st.SetSuspended(ctx, "@nobody:hs", true); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown user: %v", err)
		}
	})
}
