package storage_test

import (
	"context"
	"errors"
	"testing"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

func TestServerKeysStorage(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		if keys, err := st.ServerKeys(ctx, "remote.test"); err != nil || len(keys) != 0 {
			t.Fatalf("keys before any: %v %v", keys, err)
		}
		if _, err := st.ServerKeyResponseOf(ctx, "remote.test"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("response before any: %v", err)
		}
		cur := storage.ServerKey{ServerName: "remote.test", KeyID: "ed25519:b", PublicKey: "Bbbb",
			ValidUntilTS: 5000, FromServer: "remote.test", FetchedTS: 1000}
		old := storage.ServerKey{ServerName: "remote.test", KeyID: "ed25519:a", PublicKey: "Aaaa",
			ValidUntilTS: 900, ExpiredTS: 900, FromServer: "remote.test", FetchedTS: 1000}
		other := storage.ServerKey{ServerName: "other.test", KeyID: "ed25519:b", PublicKey: "Cccc",
			ValidUntilTS: 7000, FromServer: "notary.test", FetchedTS: 1000}
		resp := &storage.ServerKeyResponse{ServerName: "remote.test", FromServer: "remote.test",
			ValidUntilTS: 5000, FetchedTS: 1000, JSON: []byte(`{"server_name":"remote.test"}`)}
		if err := st.StoreServerKeys(ctx, []storage.ServerKey{cur, old, other}, resp); err != nil {
			t.Fatal(err)
		}
		keys, err := st.ServerKeys(ctx, "remote.test")
		if err != nil || len(keys) != 2 || keys[0] != old || keys[1] != cur {
			t.Fatalf("keys = %+v, %v; want %+v, %+v", keys, err, old, cur)
		}

		// A key row is replaced as a whole: the key ring has merged it.
		cur.ValidUntilTS, cur.FetchedTS, cur.ExpiredTS = 9000, 2000, 8000
		if err := st.StoreServerKeys(ctx, []storage.ServerKey{cur}, nil); err != nil {
			t.Fatal(err)
		}
		if keys, err := st.ServerKeys(ctx, "remote.test"); err != nil || keys[1] != cur {
			t.Fatalf("replaced key = %+v, %v; want %+v", keys, err, cur)
		}

		// A response valid for less time (a notary's stale copy) does not
		// displace the stored one; one valid as long or longer does.
		stale := &storage.ServerKeyResponse{ServerName: "remote.test", FromServer: "notary.test",
			ValidUntilTS: 4000, FetchedTS: 3000, JSON: []byte(`{"stale":true}`)}
		if err := st.StoreServerKeys(ctx, nil, stale); err != nil {
			t.Fatal(err)
		}
		got, err := st.ServerKeyResponseOf(ctx, "remote.test")
		if err != nil || string(got.JSON) != string(resp.JSON) || got.FromServer != "remote.test" || got.ValidUntilTS != 5000 || got.FetchedTS != 1000 {
			t.Fatalf("after a stale response: %+v %v", got, err)
		}
		fresh := &storage.ServerKeyResponse{ServerName: "remote.test", FromServer: "notary.test",
			ValidUntilTS: 6000, FetchedTS: 3000, JSON: []byte(`{"fresh":true}`)}
		if err := st.StoreServerKeys(ctx, nil, fresh); err != nil {
			t.Fatal(err)
		}
		if got, err := st.ServerKeyResponseOf(ctx, "remote.test"); err != nil || string(got.JSON) != `{"fresh":true}` || got.FromServer != "notary.test" {
			t.Fatalf("after a fresher response: %+v %v", got, err)
		}
	})
}
