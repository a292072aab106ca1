package storage_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"golang.org/x/crypto/acme/autocert"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// TestCertCache: the ACME cache misses, stores binary data byte for byte,
// replaces it and deletes it, the same on both engines.
func TestCertCache(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		c := st.CertCache()
		if _, err := c.Get(ctx, "example.org"); !errors.Is(err, autocert.ErrCacheMiss) {
			t.Fatalf("get of a missing key: %v, want ErrCacheMiss", err)
		}
		data := []byte("-----BEGIN EC PRIVATE KEY-----\n\x00\xff\x01binary\n")
		if err := c.Put(ctx, "example.org", data); err != nil {
			t.Fatal(err)
		}
		if got, err := c.Get(ctx, "example.org"); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("get: %q, %v", got, err)
		}
		if err := c.Put(ctx, "example.org", []byte("second")); err != nil {
			t.Fatal(err)
		}
		if got, _ := c.Get(ctx, "example.org"); string(got) != "second" {
			t.Fatalf("after replace: %q", got)
		}
		if err := c.Put(ctx, "acme_account+key", []byte("k")); err != nil {
			t.Fatal(err)
		}
		if keys, err := c.Keys(ctx); err != nil || len(keys) != 2 || keys[0] != "acme_account+key" {
			t.Fatalf("keys: %v, %v", keys, err)
		}
		if err := c.Delete(ctx, "example.org"); err != nil {
			t.Fatal(err)
		}
		if err := c.Delete(ctx, "example.org"); err != nil {
			t.Fatalf("delete of a missing key: %v", err)
		}
		if _, err := c.Get(ctx, "example.org"); !errors.Is(err, autocert.ErrCacheMiss) {
			t.Fatalf("get after delete: %v", err)
		}
	})
}
