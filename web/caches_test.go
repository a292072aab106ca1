package web_test

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"hearth/server/storage/storagetest"

	"maunium.net/go/mautrix"
)

// TestCachesPageReportsMemory: every cache shows its entries and
// approximate bytes, the buffers (queues, pools) are listed with their
// size, and the Go runtime's and SQLite's figures are there, on both
// engines. Traffic first, so the caches hold something to measure.
func TestCachesPageReportsMemory(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		d := start(t, e)
		seed(t, d.Store, "root", "rootpassword", true)
		ctx := context.Background()
		cli, err := mautrix.NewClient(d.Bundle.URL, "", "")
		if err != nil {
			t.Fatal(err)
		}
		reg, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "alice", Password: "a long password for alice"})
		if err != nil {
			t.Fatal(err)
		}
		cli.UserID, cli.AccessToken = reg.UserID, reg.AccessToken
		room, err := cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "cached"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.SendText(ctx, room.RoomID, "hello"); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.GetOwnDisplayName(ctx); err != nil {
			t.Fatal(err)
		}
		b := newBrowser(t, d.URL)
		if status, _ := b.signIn("root", "rootpassword"); status != http.StatusSeeOther {
			t.Fatalf("sign in: %d", status)
		}
		// The push evaluator may still fill a cache in the background:
		// the page is checked against the caches that held entries both
		// before and after it was rendered.
		before := map[string]int{}
		for _, s := range d.Store.Caches().Stats() {
			before[s.Name] = s.Size
		}
		status, page, _ := b.do("GET", "/caches", nil)
		if status != http.StatusOK {
			t.Fatalf("caches page: %d", status)
		}
		stats := d.Store.Caches().Stats()
		if len(stats) < 6 {
			t.Fatalf("%d caches registered", len(stats))
		}
		for _, s := range stats {
			row := rowOf(t, page, "cache-"+s.Name)
			bytes := cellOf(t, row, "bytes")
			if s.Size > 0 && before[s.Name] > 0 && bytes == "0 B" {
				t.Errorf("cache %s holds %d entries but the page shows %q", s.Name, s.Size, bytes)
			}
			if s.Size > 0 && s.Bytes <= 0 {
				t.Errorf("cache %s holds %d entries but reports %d bytes (%q)", s.Name, s.Size, s.Bytes, bytes)
			}
			if s.Size == 0 && s.Bytes != 0 {
				t.Errorf("empty cache %s reports %d bytes", s.Name, s.Bytes)
			}
		}
		// The traffic above went through these caches.
		for _, name := range []string{"access_tokens", "users"} {
			for _, s := range stats {
				if s.Name == name && s.Size == 0 {
					t.Errorf("cache %s is empty after traffic", name)
				}
			}
		}
		wantBuffers := []string{"commit_queue", "sync_waiters"}
		if e.Name == "sqlite" {
			wantBuffers = append(wantBuffers, "read_statements", "sqlite_page_caches")
		}
		for _, name := range wantBuffers {
			rowOf(t, page, "buffer-"+name)
		}
		if e.Name == "sqlite" {
			if b := cellOf(t, rowOf(t, page, "buffer-sqlite_page_caches"), "bytes"); b == "—" || b == "0 B" {
				t.Errorf("SQLite page caches: %q", b)
			}
		} else if strings.Contains(page, "buffer-sqlite_page_caches") {
			t.Error("SQLite figures on PostgreSQL")
		}
		for _, want := range []string{"Resident memory (RSS)", "Go heap in use", "Memory limit", "Memory limit source", "Goroutine stacks", `id="cache-bytes"`} {
			if !strings.Contains(page, want) {
				t.Errorf("caches page lacks %q", want)
			}
		}
	})
}

// rowOf returns the table row with the given id.
func rowOf(t *testing.T, page, id string) string {
	t.Helper()
	i := strings.Index(page, `<tr id="`+id+`"`)
	if i < 0 {
		t.Fatalf("no row %s", id)
	}
	j := strings.Index(page[i:], "</tr>")
	return page[i : i+j]
}

// cellOf returns the text of the row's cell of the given class.
func cellOf(t *testing.T, row, class string) string {
	t.Helper()
	m := regexp.MustCompile(`class="` + class + `"[^>]*>([^<]*)<`).FindStringSubmatch(row)
	if m == nil {
		t.Fatalf("no %s cell in %s", class, row)
	}
	return m[1]
}
