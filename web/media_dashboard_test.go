package web_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"hearth/server/secret"
	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// TestMediaPages uploads a file through the client API, posts it in a room,
// and manages it from the dashboard: listed (and on the room's page),
// quarantined and released, protected, deleted, each confirmed where it
// destroys something.
func TestMediaPages(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		d := start(t, e)
		ctx := context.Background()
		seed(t, d.Store, "root", "rootpassword", true)
		seed(t, d.Store, "dave", "davepassword", false)
		tok := secret.Token("syt_")
		if err := d.Store.CreateLogin(ctx, storage.NewLogin{UserID: "@dave:hearth.test", DeviceID: "DAVEDEV", AccessToken: tok}); err != nil {
			t.Fatal(err)
		}
		api := func(method, path, body, ctype string) map[string]any {
			req, _ := http.NewRequest(method, d.Bundle.URL+path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", ctype)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			out := map[string]any{}
			_ = json.NewDecoder(resp.Body).Decode(&out)
			if resp.StatusCode != 200 {
				t.Fatalf("%s %s: %d %v", method, path, resp.StatusCode, out)
			}
			return out
		}
		mxc, _ := api("POST", "/_matrix/media/v3/upload?filename=notes.txt", "some notes", "text/plain")["content_uri"].(string)
		mediaID := strings.TrimPrefix(mxc, "mxc://hearth.test/")
		if mediaID == mxc || mediaID == "" {
			t.Fatalf("upload: %q", mxc)
		}
		roomID, _ := api("POST", "/_matrix/client/v3/createRoom", `{"name": "Files"}`, "application/json")["room_id"].(string)
		api("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/t1",
			`{"msgtype": "m.file", "body": "notes.txt", "url": "`+mxc+`"}`, "application/json")

		b := newBrowser(t, d.URL)
		if status, _ := b.signIn("root", "rootpassword"); status != http.StatusSeeOther {
			t.Fatalf("sign in: %d", status)
		}
		status, page, _ := b.do("GET", "/media", nil)
		if status != 200 || !strings.Contains(page, mediaID) || !strings.Contains(page, "notes.txt") || !strings.Contains(page, "1–1 of 1 files") ||
			!strings.Contains(page, `id="media-usage"`) {
			t.Fatalf("media page: %d\n%s", status, page)
		}
		if _, page, _ = b.do("GET", "/", nil); !strings.Contains(page, "<dt>Media</dt><dd>1</dd>") {
			t.Fatalf("overview does not count the file:\n%s", page)
		}
		if _, page, _ = b.do("GET", "/media?user=root", nil); !strings.Contains(page, "No media") {
			t.Fatal("root's uploads are not empty")
		}
		if _, page, _ = b.do("GET", "/rooms/"+url.PathEscape(roomID), nil); !strings.Contains(page, mxc) || !strings.Contains(page, `id="quarantine-room-media"`) {
			t.Fatalf("room page lacks its media:\n%s", page)
		}

		csrf := b.csrfOf("/media")
		form := func(kv ...string) url.Values {
			v := url.Values{"csrf": {csrf}, "back": {"/media?user=dave"}}
			for i := 0; i+1 < len(kv); i += 2 {
				v.Set(kv[i], kv[i+1])
			}
			return v
		}
		media := func() *storage.Media {
			m, err := d.Store.MediaByID(ctx, mediaID)
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
		base := "/media/" + mediaID

		// Quarantine everything the room refers to, from the room's page.
		roomPath := "/rooms/" + url.PathEscape(roomID) + "/media/quarantine"
		rtok := b.csrfOf("/rooms/" + url.PathEscape(roomID))
		if status, page, _ = b.do("POST", roomPath, url.Values{"csrf": {rtok}}); status != 200 || !strings.Contains(page, `name="confirmed"`) || media().QuarantinedBy != "" {
			t.Fatalf("room media quarantine without confirmation: %d", status)
		}
		if status, _, _ = b.do("POST", roomPath, url.Values{"csrf": {rtok}, "confirmed": {"yes"}}); status != http.StatusSeeOther || media().QuarantinedBy != "@root:hearth.test" {
			t.Fatalf("room media quarantine: %d %+v", status, media())
		}
		if status, _, _ = b.do("POST", base+"/quarantine", form("quarantine", "0")); status != http.StatusSeeOther || media().QuarantinedBy != "" {
			t.Fatalf("release after room quarantine: %d", status)
		}
		if status, page, _ = b.do("POST", base+"/quarantine", form("quarantine", "1")); status != 200 || !strings.Contains(page, `name="confirmed"`) || media().QuarantinedBy != "" {
			t.Fatalf("quarantine without confirmation: %d", status)
		}
		status, _, resp := b.do("POST", base+"/quarantine", form("quarantine", "1", "confirmed", "yes"))
		if status != http.StatusSeeOther || resp.Header.Get("Location") != "/_hearth/admin/media?user=dave" || media().QuarantinedBy != "@root:hearth.test" {
			t.Fatalf("quarantine: %d %q %+v", status, resp.Header.Get("Location"), media())
		}
		if status, _, _ = b.do("POST", base+"/quarantine", form("quarantine", "0")); status != http.StatusSeeOther || media().QuarantinedBy != "" {
			t.Fatalf("release: %d", status)
		}
		if status, _, _ = b.do("POST", base+"/protect", form("protect", "1")); status != http.StatusSeeOther || !media().Protected {
			t.Fatalf("protect: %d", status)
		}
		if status, _, _ = b.do("POST", base+"/protect", form("protect", "0")); status != http.StatusSeeOther || media().Protected {
			t.Fatalf("unprotect: %d", status)
		}
		// A foreign "back" is not followed.
		if _, _, resp = b.do("POST", base+"/protect", url.Values{"csrf": {csrf}, "protect": {"0"}, "back": {"//evil.example/"}}); resp.Header.Get("Location") != "/_hearth/admin/media" {
			t.Fatalf("back to %q", resp.Header.Get("Location"))
		}
		// Clean-up by age asks first, then keeps a file used today.
		clean := func(kv ...string) (int, string, *http.Response) {
			v := url.Values{"csrf": {csrf}}
			for i := 0; i+1 < len(kv); i += 2 {
				v.Set(kv[i], kv[i+1])
			}
			return b.do("POST", "/media/cleanup", v)
		}
		if status, _, _ = clean("days", "0", "scope", "local"); status != http.StatusBadRequest {
			t.Fatalf("clean-up of 0 days: %d", status)
		}
		if status, page, _ = clean("days", "1", "scope", "local", "keep_profiles", "1"); status != 200 || !strings.Contains(page, `name="confirmed"`) {
			t.Fatalf("clean-up without confirmation: %d", status)
		}
		if status, _, _ = clean("days", "1", "scope", "local", "keep_profiles", "1", "confirmed", "yes"); status != http.StatusSeeOther {
			t.Fatalf("clean-up: %d", status)
		}
		media() // a file used today survives a clean-up of files older than a day
		// The cache of other servers' media: two copies, one last
		// downloaded 40 days ago (server/federation_test.go fills it for
		// real; only rows are needed here).
		now := d.Bundle.Server.Now().UnixMilli()
		for i, ts := range []int64{now - 40*24*3600*1000, now} {
			m := &storage.RemoteMedia{Origin: "other.example", MediaID: "remoteMedia" + string(rune('A'+i)), ContentType: "image/png",
				Size: 2048, CreatedTS: ts, SHA256: "ab", FileID: "fileIdxxxxxxxxxxxxxxxxx" + string(rune('A'+i))}
			if err := d.Store.CreateRemoteMedia(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
		if _, page, _ = b.do("GET", "/media", nil); !strings.Contains(page, "Cached from other servers") || !strings.Contains(page, "4.0 KiB") {
			t.Fatal("the media page does not count the remote media cache")
		}
		if status, _, _ = clean("days", "30", "scope", "remote"); status != http.StatusSeeOther {
			t.Fatalf("remote cache clean-up: %d", status)
		}
		if _, page, _ = b.do("GET", "/media", nil); !strings.Contains(page, "Removed 1 file(s) from the cache") {
			t.Fatal("remote clean-up does not say what it removed")
		}
		if _, err := d.Store.RemoteMediaByID(ctx, "other.example", "remoteMediaA"); err == nil {
			t.Fatal("the old copy survived the clean-up")
		}
		if _, err := d.Store.RemoteMediaByID(ctx, "other.example", "remoteMediaB"); err != nil {
			t.Fatalf("the recent copy was cleaned up: %v", err)
		}
		if status, page, _ = b.do("POST", base+"/delete", form()); status != 200 || !strings.Contains(page, `name="confirmed"`) {
			t.Fatalf("delete without confirmation: %d", status)
		}
		if status, _, _ = b.do("POST", base+"/delete", form("confirmed", "yes")); status != http.StatusSeeOther {
			t.Fatalf("delete: %d", status)
		}
		if _, err := d.Store.MediaByID(ctx, mediaID); err == nil {
			t.Fatal("media survived deletion")
		}
		if status, _, _ = b.do("POST", base+"/delete", form("confirmed", "yes")); status != http.StatusNotFound {
			t.Fatalf("delete twice: %d", status)
		}
		if _, page, _ = b.do("GET", "/audit", nil); !strings.Contains(page, "media.quarantine") || !strings.Contains(page, "media.delete") {
			t.Fatal("media actions not audited")
		}
	})
}
