package web_test

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// TestRoomPages walks the rooms and reports pages over HTTP: block asks
// first and is audited, a form without its token is refused, a report is
// listed and dismissed, and a deleted room's page shows what remains.
func TestRoomPages(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		d := start(t, e)
		ctx := context.Background()
		seed(t, d.Store, "root", "rootpassword", true)
		seed(t, d.Store, "dave", "davepassword", false)
		b := newBrowser(t, d.URL)
		if status, _ := b.signIn("root", "rootpassword"); status != http.StatusSeeOther {
			t.Fatalf("sign in: %d", status)
		}
		roomID := createRoomAs(t, d, "@dave:hearth.test", `{"name": "Quiet room", "preset": "public_chat"}`)
		path := "/rooms/" + url.PathEscape(roomID)

		if status, page, _ := b.do("GET", "/rooms?q=quiet", nil); status != 200 || !strings.Contains(page, "Quiet room") || !strings.Contains(page, "1–1 of 1 rooms") {
			t.Fatalf("rooms page: %d\n%s", status, page)
		}
		if status, page, _ := b.do("GET", "/rooms?q=loud", nil); status != 200 || !strings.Contains(page, "No rooms match") {
			t.Fatalf("rooms search without hits: %d", status)
		}
		status, page, _ := b.do("GET", path, nil)
		if status != 200 || !strings.Contains(page, "@dave:hearth.test") || !strings.Contains(page, "m.room.create") || !strings.Contains(page, `id="servers"`) {
			t.Fatalf("room page: %d\n%s", status, page)
		}

		// The member's page links back to the room and to their uploads.
		if _, page, _ = b.do("GET", "/users/@dave:hearth.test", nil); !strings.Contains(page, `href="/_hearth/admin`+path+`"`) ||
			!strings.Contains(page, `href="/_hearth/admin/media?user=%40dave%3Ahearth.test"`) {
			t.Fatalf("user page lacks the room or media links:\n%s", page)
		}

		// Blocking: without the token refused, then confirmed, then audited.
		if status, _, _ = b.do("POST", path+"/block", url.Values{"block": {"1"}, "confirmed": {"yes"}}); status != http.StatusForbidden {
			t.Fatalf("block without token: %d", status)
		}
		tok := b.csrfOf(path)
		status, page, _ = b.do("POST", path+"/block", url.Values{"csrf": {tok}, "block": {"1"}})
		if status != 200 || !strings.Contains(page, `name="confirmed" value="yes"`) {
			t.Fatalf("block without confirmation: %d", status)
		}
		if r, _ := d.Store.RoomByID(ctx, roomID); r.Blocked {
			t.Fatal("blocked before confirmation")
		}
		if status, _, _ = b.do("POST", path+"/block", url.Values{"csrf": {tok}, "block": {"1"}, "confirmed": {"yes"}}); status != http.StatusSeeOther {
			t.Fatalf("confirmed block: %d", status)
		}
		if r, _ := d.Store.RoomByID(ctx, roomID); !r.Blocked {
			t.Fatal("room not blocked")
		}
		if _, page, _ = b.do("GET", path, nil); !strings.Contains(page, "blocked") || !strings.Contains(page, `id="unblock"`) {
			t.Fatal("room page does not show the block")
		}
		if _, page, _ = b.do("GET", "/audit", nil); !strings.Contains(page, "room.block") {
			t.Fatal("block not audited")
		}
		if status, _, _ = b.do("POST", path+"/block", url.Values{"csrf": {tok}, "block": {"0"}}); status != http.StatusSeeOther {
			t.Fatalf("unblock: %d", status)
		}
		// A room ID that is not UTF-8 is refused before anything is stored
		// (PostgreSQL would refuse it with a 500, SQLite keep it).
		if status, _, _ = b.do("POST", "/rooms/%21bad%FF:hearth.test/block", url.Values{"csrf": {tok}, "block": {"1"}, "confirmed": {"yes"}}); status != http.StatusBadRequest {
			t.Fatalf("block of a room ID that is not UTF-8: %d, want 400", status)
		}
		// Nor one with a NUL character, which PostgreSQL cannot hold.
		if status, _, _ = b.do("POST", "/rooms/%21bad%00:hearth.test/block", url.Values{"csrf": {tok}, "block": {"1"}, "confirmed": {"yes"}}); status != http.StatusBadRequest {
			t.Fatalf("block of a room ID with a NUL character: %d, want 400", status)
		}

		// A report, listed and dismissed.
		rep := &storage.EventReport{ReceivedTS: time.Now().UnixMilli(), RoomID: roomID, EventID: "$gone", UserID: "@dave:hearth.test"}
		reason := "rude words"
		rep.Reason = &reason
		if err := d.Store.AddEventReport(ctx, rep); err != nil {
			t.Fatal(err)
		}
		if _, page, _ = b.do("GET", "/reports", nil); !strings.Contains(page, "rude words") || !strings.Contains(page, "Quiet room") {
			t.Fatalf("reports page:\n%s", page)
		}
		rpath := "/reports/" + strconv.FormatInt(rep.ID, 10) + "/delete"
		tok = b.csrfOf("/reports")
		if status, page, _ = b.do("POST", rpath, url.Values{"csrf": {tok}}); status != 200 || !strings.Contains(page, `name="confirmed"`) {
			t.Fatalf("dismiss without confirmation: %d", status)
		}
		if status, _, _ = b.do("POST", rpath, url.Values{"csrf": {tok}, "confirmed": {"yes"}}); status != http.StatusSeeOther {
			t.Fatalf("dismiss: %d", status)
		}
		if _, err := d.Store.EventReportByID(ctx, rep.ID); err == nil {
			t.Fatal("report survived dismissal")
		}

		// Delete with block: the progress page, then the room page shows
		// only the block and the deletion.
		tok = b.csrfOf(path)
		status, _, resp := b.do("POST", path+"/delete", url.Values{"csrf": {tok}, "purge": {"1"}, "block": {"1"}, "confirmed": {"yes"}})
		loc := resp.Header.Get("Location")
		if status != http.StatusSeeOther || !strings.Contains(loc, "/rooms/deletes/") {
			t.Fatalf("delete: %d %q", status, loc)
		}
		statusPath := strings.TrimPrefix(loc, "/_hearth/admin")
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			_, page, _ = b.do("GET", statusPath, nil)
			if strings.Contains(page, ">complete<") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("deletion did not complete:\n%s", page)
			}
		}
		if strings.Contains(page, `http-equiv="refresh"`) {
			t.Error("a finished deletion still reloads")
		}
		status, page, _ = b.do("GET", path, nil)
		if status != 200 || !strings.Contains(page, "not on this server") || !strings.Contains(page, "complete") || strings.Contains(page, `id="delete"`) {
			t.Fatalf("deleted room page: %d\n%s", status, page)
		}
		if status, _, _ = b.do("GET", "/rooms/"+url.PathEscape("!never:hearth.test"), nil); status != http.StatusNotFound {
			t.Fatalf("unknown room page: %d", status)
		}
	})
}
