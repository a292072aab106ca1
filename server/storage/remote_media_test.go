package storage_test

import (
	"context"
	"errors"
	"testing"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

func TestRemoteMediaStorage(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		add := func(origin, id, file string, size, ts int64) *storage.RemoteMedia {
			t.Helper()
			m := &storage.RemoteMedia{Origin: origin, MediaID: id, ContentType: "image/png", Size: size, CreatedTS: ts,
				SHA256: "ab", FileID: file, UploadName: "p.png", Authenticated: true}
			if err := st.CreateRemoteMedia(ctx, m); err != nil {
				t.Fatal(err)
			}
			return m
		}
		a := add("a.example", "mediaA", "fileA", 10, 1000)
		add("b.example", "mediaA", "fileB", 20, 2000) // same ID, another server
		c := add("a.example", "mediaC", "fileC", 30, 3000)
		if err := st.CreateRemoteMedia(ctx, &storage.RemoteMedia{Origin: "a.example", MediaID: "mediaA", FileID: "x", CreatedTS: 1}); !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("second copy: %v", err)
		}
		m, err := st.RemoteMediaByID(ctx, "b.example", "mediaA")
		if err != nil || m.FileID != "fileB" || m.Size != 20 || m.LastAccessTS != 2000 || !m.Authenticated || m.UploadName != "p.png" || m.QuarantinedBy != "" {
			t.Fatalf("copy: %+v %v", m, err)
		}
		if _, err := st.RemoteMediaByID(ctx, "c.example", "mediaA"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown copy: %v", err)
		}
		if n, b, err := st.RemoteMediaTotals(ctx); err != nil || n != 3 || b != 60 {
			t.Fatalf("totals: %d %d %v", n, b, err)
		}

		// A download keeps a copy out of a purge of older ones; a
		// quarantined copy is never purged.
		if err := st.TouchRemoteMedia(ctx, "a.example", "mediaA", 5000); err != nil {
			t.Fatal(err)
		}
		if err := st.TouchRemoteMedia(ctx, "a.example", "mediaA", 4000); err != nil { // never backwards
			t.Fatal(err)
		}
		if m, _ := st.RemoteMediaByID(ctx, "a.example", "mediaA"); m.LastAccessTS != 5000 {
			t.Fatalf("last access %d", m.LastAccessTS)
		}
		refs := []storage.RemoteMediaRef{{Origin: "b.example", MediaID: "mediaA"}, {Origin: "z.example", MediaID: "nothing"}}
		if n, err := st.SetRemoteMediaQuarantine(ctx, refs, "@admin:x"); err != nil || n != 1 {
			t.Fatalf("quarantine: %d %v", n, err)
		}
		if n, _ := st.SetRemoteMediaQuarantine(ctx, refs, "@admin:x"); n != 0 {
			t.Fatalf("quarantine twice: %d", n)
		}
		if m, _ := st.RemoteMediaByID(ctx, "b.example", "mediaA"); m.QuarantinedBy != "@admin:x" {
			t.Fatalf("quarantined_by %q", m.QuarantinedBy)
		}
		old, err := st.RemoteMediaBefore(ctx, 4500)
		if err != nil || len(old) != 1 || old[0].MediaID != "mediaC" {
			t.Fatalf("before 4500: %v %v", old, err)
		}
		// A copy fetched again after it was listed is not deleted.
		stale := *a
		stale.FileID = "fileOld"
		deleted, err := st.DeleteRemoteMedia(ctx, []*storage.RemoteMedia{c, &stale})
		if err != nil || len(deleted) != 1 || deleted[0].FileID != "fileC" {
			t.Fatalf("delete: %v %v", deleted, err)
		}
		if _, err := st.RemoteMediaByID(ctx, "a.example", "mediaA"); err != nil {
			t.Fatalf("refetched copy deleted: %v", err)
		}
		if n, _ := st.SetRemoteMediaQuarantine(ctx, refs, ""); n != 1 {
			t.Fatalf("release: %d", n)
		}
		if old, _ := st.RemoteMediaBefore(ctx, 1<<50); len(old) != 2 {
			t.Fatalf("everything: %v", old)
		}
	})
}
