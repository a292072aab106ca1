package storage_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

func TestUIASessionsStorage(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		if err := st.SaveUIASession(ctx, "s1", `{"v":1}`, 1000); err != nil {
			t.Fatal(err)
		}
		// Saving again replaces the data and keeps the creation time.
		if err := st.SaveUIASession(ctx, "s1", `{"v":2}`, 5000); err != nil {
			t.Fatal(err)
		}
		data, created, err := st.UIASession(ctx, "s1")
		if err != nil || data != `{"v":2}` || created != 1000 {
			t.Fatalf("session: %q %d %v", data, created, err)
		}
		if err := st.SaveUIASession(ctx, "s2", `{"v":3}`, 3000); err != nil {
			t.Fatal(err)
		}
		old, err := st.ExpireUIASessions(ctx, 2000)
		if err != nil || !slices.Equal(old, []string{`{"v":2}`}) {
			t.Fatalf("expired: %q %v", old, err)
		}
		if _, _, err := st.UIASession(ctx, "s1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("expired session still there: %v", err)
		}
		if err := st.DeleteUIASession(ctx, "s2"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := st.UIASession(ctx, "s2"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("deleted session still there: %v", err)
		}

		// A released reservation can be taken again; pending never goes
		// below zero.
		one := 1
		if err := st.CreateRegistrationToken(ctx, &storage.RegistrationToken{Token: "t", UsesAllowed: &one}); err != nil {
			t.Fatal(err)
		}
		for i, want := range []bool{true, false} {
			if ok, err := st.ReserveRegistrationToken(ctx, "t", 0); err != nil || ok != want {
				t.Fatalf("reserve %d: %v %v", i, ok, err)
			}
		}
		for range 2 {
			if err := st.ReleaseRegistrationToken(ctx, "t"); err != nil {
				t.Fatal(err)
			}
		}
		if tok, err := st.RegistrationTokenByID(ctx, "t"); err != nil || tok.Pending != 0 {
			t.Fatalf("after release: %+v %v", tok, err)
		}
		if ok, err := st.ReserveRegistrationToken(ctx, "t", 0); err != nil || !ok {
			t.Fatalf("reserve after release: %v %v", ok, err)
		}
	})
}

func TestMaxNumericLocalpart(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		if n, err := st.MaxNumericLocalpart(ctx); err != nil || n != 0 {
			t.Fatalf("empty: %d %v", n, err)
		}
		for _, lp := range []string{"9", "10", "2", "1a", "abc", "99x", "0x20", "1234567890123456789012"} {
			if err := st.CreateUser(ctx, &storage.User{UserID: "@" + lp + ":hs", Localpart: lp}); err != nil {
				t.Fatal(err)
			}
		}
		// 10, not 9 (no string order), and not the 22-digit one.
		if n, err := st.MaxNumericLocalpart(ctx); err != nil || n != 10 {
			t.Fatalf("max: %d %v", n, err)
		}
	})
}
