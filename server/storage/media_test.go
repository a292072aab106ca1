package storage_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

func TestMediaStorage(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		add := func(id, user string, size, ts int64) {
			t.Helper()
			if err := st.CreateMedia(ctx, &storage.Media{MediaID: id, UserID: user, ContentType: "text/plain", Size: size, CreatedTS: ts}); err != nil {
				t.Fatal(err)
			}
		}
		add("mediaA", "@a:x", 10, 1000)
		add("mediaB", "@a:x", 20, 2000)
		add("mediaC", "@b:x", 30, 3000)
		if err := st.CreateMedia(ctx, &storage.Media{MediaID: "mediaA", UserID: "@c:x", CreatedTS: 1}); !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("duplicate media ID: %v", err)
		}
		m, err := st.MediaByID(ctx, "mediaB")
		if err != nil || m.UserID != "@a:x" || m.Size != 20 || m.LastAccessTS != 2000 || m.Pending || m.QuarantinedBy != "" {
			t.Fatalf("media: %+v %v", m, err)
		}
		if _, err := st.MediaByID(ctx, "nothing"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown media: %v", err)
		}

		// Pending uploads complete once; expired ones are not counted.
		if err := st.CreateMedia(ctx, &storage.Media{MediaID: "mediaP", UserID: "@a:x", CreatedTS: 500, Pending: true, ExpiresTS: 10_000}); err != nil {
			t.Fatal(err)
		}
		if n, _ := st.CountPendingMedia(ctx, "@a:x", 5000); n != 1 {
			t.Fatalf("pending = %d", n)
		}
		if n, _ := st.CountPendingMedia(ctx, "@a:x", 10_000); n != 0 {
			t.Fatalf("pending after expiry = %d", n)
		}
		if ids, _ := st.ExpiredPendingMedia(ctx, 10_000); !slices.Equal(ids, []string{"mediaP"}) {
			t.Fatalf("expired pending = %v", ids)
		}
		p := &storage.Media{MediaID: "mediaP", ContentType: "image/png", Size: 5, SHA256: "ab", CreatedTS: 600}
		if err := st.CompletePendingMedia(ctx, p); err != nil {
			t.Fatal(err)
		}
		if err := st.CompletePendingMedia(ctx, p); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("second completion: %v", err)
		}

		// Listing pages and orders; pending rows are never listed.
		list, total, err := st.ListMedia(ctx, storage.MediaFilter{UserID: "@a:x", OrderBy: "media_length", Desc: true, Limit: 2})
		if err != nil || total != 3 || len(list) != 2 || list[0].MediaID != "mediaB" || list[1].MediaID != "mediaA" {
			t.Fatalf("list: %d %v %v", total, list, err)
		}

		// Quarantine skips protected media; release only counts real changes.
		if err := st.SetMediaProtected(ctx, "mediaB", true); err != nil {
			t.Fatal(err)
		}
		if err := st.SetMediaProtected(ctx, "nothing", true); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("protect unknown: %v", err)
		}
		if n, err := st.SetMediaQuarantine(ctx, []string{"mediaA", "mediaB", "nothing"}, "@admin:x"); err != nil || n != 1 {
			t.Fatalf("quarantine: %d %v", n, err)
		}
		if m, _ := st.MediaByID(ctx, "mediaA"); m.QuarantinedBy != "@admin:x" {
			t.Fatalf("quarantined_by = %q", m.QuarantinedBy)
		}
		if n, _ := st.SetMediaQuarantine(ctx, []string{"mediaA", "mediaC"}, ""); n != 1 {
			t.Fatalf("unquarantine changed %d", n)
		}

		// Age and size selection: protected media is never chosen; a
		// recent download keeps media.
		if err := st.TouchMedia(ctx, "mediaC", 9000); err != nil {
			t.Fatal(err)
		}
		ids, err := st.MediaIDsBefore(ctx, 5000, 0)
		if err != nil || !slices.Equal(ids, []string{"mediaA", "mediaP"}) {
			t.Fatalf("before 5000: %v %v", ids, err)
		}
		if ids, _ = st.MediaIDsBefore(ctx, 5000, 5); !slices.Equal(ids, []string{"mediaA"}) {
			t.Fatalf("before 5000, larger than 5: %v", ids)
		}

		// Usage per user.
		usage, n, err := st.MediaUsageByUser(ctx, storage.MediaUsageFilter{OrderBy: "media_length", Desc: true})
		if err != nil || n != 2 || usage[0].UserID != "@a:x" || usage[0].Count != 3 || usage[0].Bytes != 35 || usage[1].Bytes != 30 {
			t.Fatalf("usage: %d %+v %v", n, usage, err)
		}
		if usage, n, _ = st.MediaUsageByUser(ctx, storage.MediaUsageFilter{FromTS: 1500, UntilTS: 2500}); n != 1 || usage[0].Count != 1 {
			t.Fatalf("usage between: %d %+v", n, usage)
		}
		if usage, n, _ = st.MediaUsageByUser(ctx, storage.MediaUsageFilter{SearchTerm: "%"}); n != 0 {
			t.Fatalf("a LIKE wildcard in search_term matched literally nothing, got %d %+v", n, usage)
		}

		deleted, err := st.DeleteMediaRows(ctx, []string{"mediaA", "nothing"})
		if err != nil || !slices.Equal(deleted, []string{"mediaA"}) {
			t.Fatalf("delete: %v %v", deleted, err)
		}
		if c, b, _ := st.MediaTotals(ctx); c != 3 || b != 55 {
			t.Fatalf("totals: %d items, %d bytes", c, b)
		}
	})
}
