package storage_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// TestOAuthState: the OAuth 2.0 API's tables behave the same on both
// engines: a request is approved once, gets one code, and the code is
// claimed once; grants go with their device; the signing key's first
// writer wins; device codes are decided once and handed out once; expired
// state is swept.
func TestOAuthState(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		now := time.Now().UnixMilli()
		if err := st.CreateUser(ctx, &storage.User{UserID: "@alice:hs", Localpart: "alice"}); err != nil {
			t.Fatal(err)
		}
		if err := st.CreateOAuthClient(ctx, "C1", `{"client_id":"C1"}`); err != nil {
			t.Fatal(err)
		}
		if err := st.CreateOAuthClient(ctx, "C1", `{}`); err == nil {
			t.Fatal("a client ID registered twice")
		}
		if md, err := st.OAuthClient(ctx, "C1"); err != nil || md != `{"client_id":"C1"}` {
			t.Fatalf("client: %q %v", md, err)
		}
		if _, err := st.OAuthClient(ctx, "nope"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown client: %v", err)
		}

		// An authorisation request: no code before approval; approved once;
		// one code; the code claimed once.
		if err := st.CreateOAuthAuthRequest(ctx, "R1", "C1", `{"x":1}`, now); err != nil {
			t.Fatal(err)
		}
		if err := st.SetOAuthAuthCode(ctx, "R1", "code1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("code before approval: %v", err)
		}
		if err := st.ApproveOAuthAuthRequest(ctx, "R1", "@alice:hs", now); err != nil {
			t.Fatal(err)
		}
		if err := st.ApproveOAuthAuthRequest(ctx, "R1", "@mallory:hs", now); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("second approval: %v", err)
		}
		if err := st.SetOAuthAuthCode(ctx, "R1", "code1"); err != nil {
			t.Fatal(err)
		}
		if err := st.SetOAuthAuthCode(ctx, "R1", "code2"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("second code: %v", err)
		}
		a, err := st.ClaimOAuthAuthCode(ctx, "code1")
		if err != nil || a.ID != "R1" || a.UserID != "@alice:hs" || a.Data != `{"x":1}` {
			t.Fatalf("claim: %+v %v", a, err)
		}
		if _, err := st.ClaimOAuthAuthCode(ctx, "code1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("second claim: %v", err)
		}

		// A session with a grant; the grant goes with the device.
		if err := st.CreateLogin(ctx, storage.NewLogin{UserID: "@alice:hs", DeviceID: "D1", AccessToken: "a1", RefreshToken: "r1",
			Grant: &storage.OAuthGrant{ClientID: "C1", Scope: "urn:matrix:client:api:*", AuthTS: now}}); err != nil {
			t.Fatal(err)
		}
		g, err := st.OAuthGrantByRefreshToken(ctx, "r1")
		if err != nil || g.ClientID != "C1" || g.DeviceID != "D1" {
			t.Fatalf("grant: %+v %v", g, err)
		}
		if u, d, err := st.RefreshTokenOwner(ctx, "r1"); err != nil || u != "@alice:hs" || d != "D1" {
			t.Fatalf("owner: %s %s %v", u, d, err)
		}
		if err := st.DeleteDevices(ctx, "@alice:hs", []string{"D1"}); err != nil {
			t.Fatal(err)
		}
		if grants, err := st.OAuthGrants(ctx, "@alice:hs"); err != nil || len(grants) != 0 {
			t.Fatalf("grants after the device was deleted: %v %v", grants, err)
		}

		// The signing key: the first candidate is kept.
		id1, pem1, err := st.OAuthSigningKey(ctx, "k1", "PEM1")
		if err != nil || id1 != "k1" || pem1 != "PEM1" {
			t.Fatalf("first key: %s %s %v", id1, pem1, err)
		}
		if id2, pem2, err := st.OAuthSigningKey(ctx, "k2", "PEM2"); err != nil || id2 != "k1" || pem2 != "PEM1" {
			t.Fatalf("second start: %s %s %v, want the first key", id2, pem2, err)
		}

		// Device codes.
		d := &storage.OAuthDeviceCode{UserCode: "BCDF-GHJK", ClientID: "C1", Scope: "s", ExpiresTS: now + 60_000}
		if err := st.CreateOAuthDeviceCode(ctx, "dev1", d); err != nil {
			t.Fatal(err)
		}
		if err := st.CreateOAuthDeviceCode(ctx, "dev2", d); !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("duplicate user code: %v, want ErrConflict", err)
		}
		if got, err := st.TakeOAuthDeviceCode(ctx, "C1", "dev1"); err != nil || got.Decided() {
			t.Fatalf("pending: %+v %v", got, err)
		}
		if _, err := st.TakeOAuthDeviceCode(ctx, "C2", "dev1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("another client's device code: %v", err)
		}
		if err := st.DecideOAuthDeviceCode(ctx, "BCDF-GHJK", "@alice:hs", false, now); err != nil {
			t.Fatal(err)
		}
		if err := st.DecideOAuthDeviceCode(ctx, "BCDF-GHJK", "", true, now); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("second decision: %v", err)
		}
		if got, err := st.TakeOAuthDeviceCode(ctx, "C1", "dev1"); err != nil || got.UserID != "@alice:hs" {
			t.Fatalf("approved: %+v %v", got, err)
		}
		if _, err := st.TakeOAuthDeviceCode(ctx, "C1", "dev1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("a decision handed out twice: %v", err)
		}
		expired := &storage.OAuthDeviceCode{UserCode: "LMNP-QRST", ClientID: "C1", Scope: "s", ExpiresTS: now - 1}
		if err := st.CreateOAuthDeviceCode(ctx, "dev3", expired); err != nil {
			t.Fatal(err)
		}
		if err := st.DecideOAuthDeviceCode(ctx, "LMNP-QRST", "@alice:hs", false, now); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("deciding an expired code: %v", err)
		}

		// The sweep.
		if err := st.CreateOAuthAuthRequest(ctx, "OLD", "C1", `{}`, now-3_600_000); err != nil {
			t.Fatal(err)
		}
		if err := st.CreateOAuthBrowserSession(ctx, &storage.OAuthBrowserSession{IDHash: "h", UserID: "@alice:hs", CreatedTS: now, ExpiresTS: now - 1}); err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteOAuthStateBefore(ctx, now-60_000, now); err != nil {
			t.Fatal(err)
		}
		if _, err := st.OAuthAuthRequestByID(ctx, "OLD"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("old request after the sweep: %v", err)
		}
		if _, err := st.OAuthAuthRequestByID(ctx, "R1"); err != nil {
			t.Fatalf("current request swept: %v", err)
		}
		if _, err := st.OAuthBrowserSessionByHash(ctx, "h"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("expired browser session after the sweep: %v", err)
		}
		if _, err := st.OAuthDeviceCodeByUserCode(ctx, "LMNP-QRST"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("expired device code after the sweep: %v", err)
		}
	})
}
