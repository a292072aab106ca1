package storage_test

import (
	"context"
	"errors"
	"testing"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// TestThreePIDs: one account per address, replacing a user's set is all
// or nothing, and validation sessions renew only on a higher send attempt.
func TestThreePIDs(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		a := storage.ThreePID{Medium: "email", Address: "a@example.org", UserID: "@a:hs", ValidatedAt: 10, AddedAt: 11}
		if err := st.AddThreePID(ctx, a); err != nil {
			t.Fatal(err)
		}
		a.ValidatedAt = 20
		if err := st.AddThreePID(ctx, a); err != nil {
			t.Fatalf("adding again to the same account: %v", err)
		}
		if err := st.AddThreePID(ctx, storage.ThreePID{Medium: "email", Address: "a@example.org", UserID: "@b:hs"}); !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("another account: %v", err)
		}
		if u, err := st.ThreePIDUser(ctx, "email", "a@example.org"); err != nil || u != "@a:hs" {
			t.Fatalf("owner: %q %v", u, err)
		}
		if _, err := st.ThreePIDUser(ctx, "email", "nobody@example.org"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("no owner: %v", err)
		}
		// b cannot take a's address in a replacement; b's own set stays.
		if err := st.SetUserThreePIDs(ctx, "@b:hs", []storage.ThreePID{{Medium: "email", Address: "b@example.org"}}); err != nil {
			t.Fatal(err)
		}
		err := st.SetUserThreePIDs(ctx, "@b:hs", []storage.ThreePID{{Medium: "email", Address: "c@example.org"}, {Medium: "email", Address: "a@example.org"}})
		if !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("replacement taking a's address: %v", err)
		}
		if ts, err := st.UserThreePIDs(ctx, "@b:hs"); err != nil || len(ts) != 1 || ts[0].Address != "b@example.org" {
			t.Fatalf("b's set after the failed replacement: %+v %v", ts, err)
		}
		if ts, err := st.UserThreePIDs(ctx, "@a:hs"); err != nil || len(ts) != 1 || ts[0].ValidatedAt != 20 || ts[0].AddedAt != 11 {
			t.Fatalf("a's set: %+v %v", ts, err)
		}
		if ok, err := st.DeleteThreePID(ctx, "@b:hs", "email", "a@example.org"); err != nil || ok {
			t.Fatalf("b deleting a's address: %v %v", ok, err)
		}
		if ok, err := st.DeleteThreePID(ctx, "@a:hs", "email", "a@example.org"); err != nil || !ok {
			t.Fatalf("a deleting its address: %v %v", ok, err)
		}

		se := &storage.ThreePIDSession{ID: "sid1", Purpose: "add", Medium: "email", Address: "a@example.org", ClientSecret: "s",
			LastSendAttempt: 1, TokenHash: "h1", TokenExpires: 100, Created: 50}
		if err := st.CreateThreePIDSession(ctx, se); err != nil {
			t.Fatal(err)
		}
		dup := *se
		dup.ID = "sid2"
		if err := st.CreateThreePIDSession(ctx, &dup); !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("a second session for the same secret: %v", err)
		}
		if ok, err := st.RenewThreePIDSessionToken(ctx, "sid1", 1, "", "h2", 200); err != nil || ok {
			t.Fatalf("renewing with the same attempt: %v %v", ok, err)
		}
		if ok, err := st.RenewThreePIDSessionToken(ctx, "sid1", 2, "https://next", "h2", 200); err != nil || !ok {
			t.Fatalf("renewing with a higher attempt: %v %v", ok, err)
		}
		if err := st.MarkThreePIDSessionValidated(ctx, "sid1", 150); err != nil {
			t.Fatal(err)
		}
		got, err := st.ThreePIDSessionBySecret(ctx, "add", "email", "a@example.org", "s")
		if err != nil || got.ID != "sid1" || got.TokenHash != "h2" || got.TokenExpires != 200 || got.NextLink != "https://next" ||
			got.ValidatedAt != 150 || got.LastSendAttempt != 2 {
			t.Fatalf("session: %+v %v", got, err)
		}
		if err := st.ExpireThreePIDSessions(ctx, 51); err != nil {
			t.Fatal(err)
		}
		if _, err := st.ThreePIDSessionByID(ctx, "sid1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("expired session: %v", err)
		}
	})
}
