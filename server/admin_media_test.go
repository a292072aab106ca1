package server_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// mediaIDs pulls media_id out of a user media list answer.
func mediaIDs(body map[string]any) []string {
	out := []string{}
	list, _ := body["media"].([]any)
	for _, m := range list {
		out = append(out, m.(map[string]any)["media_id"].(string))
	}
	return out
}

// served reports whether the authenticated download endpoint serves uri.
func served(t *testing.T, b *servertest.Bundle, tok string, uri id.ContentURI) bool {
	t.Helper()
	r := mediaDo(t, b, "GET", "/_matrix/client/v1/media/download/"+mxcPath(uri), tok, "", nil)
	switch r.status {
	case 200:
		return true
	case 404:
		return false
	}
	t.Fatalf("download %s: %d %s", uri, r.status, r.body)
	return false
}

func TestAdminMediaAPI(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		adminTok := seedUser(t, b.Store, "root", "rootpw", true)
		alice, bob := newRoomUser(t, b, "alice"), newRoomUser(t, b, "bob")
		base := b.URL + "/_synapse/admin"

		// Three uploads by alice of different sizes, one by bob.
		a1 := upload(t, alice.cli, bytes.Repeat([]byte("a"), 100), "text/plain", "a1.txt")
		a2 := upload(t, alice.cli, bytes.Repeat([]byte("b"), 300), "application/octet-stream", "a2.bin")
		a3 := upload(t, alice.cli, testPNG(t, 8, 8), "image/png", "a3.png")
		b1 := upload(t, bob.cli, bytes.Repeat([]byte("c"), 50), "text/plain", "")
		acctDo(t, b, "PUT", "/_matrix/client/v3/profile/@alice:hearth.test/displayname", alice.tok, map[string]string{"displayname": "Alice Liddell"}).want(t, 200, "")

		// Every endpoint refuses a non-admin with 403 M_FORBIDDEN.
		for _, ep := range []struct{ method, path string }{
			{"GET", "/v1/room/!x:hearth.test/media"},
			{"POST", "/v1/room/!x:hearth.test/media/quarantine"},
			{"POST", "/v1/quarantine_media/!x:hearth.test"},
			{"POST", "/v1/user/@alice:hearth.test/media/quarantine"},
			{"GET", "/v1/users/@alice:hearth.test/media"},
			{"DELETE", "/v1/users/@alice:hearth.test/media"},
			{"GET", "/v1/media/hearth.test/" + a1.FileID},
			{"DELETE", "/v1/media/hearth.test/" + a1.FileID},
			{"POST", "/v1/media/delete?before_ts=99999999999999"},
			{"POST", "/v1/media/hearth.test/delete?before_ts=99999999999999"},
			{"POST", "/v1/purge_media_cache?before_ts=99999999999999"},
			{"POST", "/v1/media/quarantine/hearth.test/" + a1.FileID},
			{"POST", "/v1/media/unquarantine/hearth.test/" + a1.FileID},
			{"POST", "/v1/media/protect/" + a1.FileID},
			{"POST", "/v1/media/unprotect/" + a1.FileID},
			{"GET", "/v1/statistics/users/media"},
		} {
			status, body := call(t, ep.method, base+ep.path, alice.tok, nil)
			if status != 403 || body["errcode"] != "M_FORBIDDEN" {
				t.Errorf("%s %s as non-admin: %d %v, want 403 M_FORBIDDEN", ep.method, ep.path, status, body)
			}
			if status, _ := call(t, ep.method, base+ep.path, "", nil); status != 401 {
				t.Errorf("%s %s without a token: %d, want 401", ep.method, ep.path, status)
			}
		}
		if !served(t, b, alice.tok, a1) {
			t.Fatal("a non-admin's refused request changed something")
		}

		// Metadata.
		status, body := call(t, "GET", base+"/v1/media/hearth.test/"+a3.FileID, adminTok, nil)
		info, _ := body["media_info"].(map[string]any)
		png8 := testPNG(t, 8, 8)
		if status != 200 || info["media_id"] != a3.FileID || info["user_id"] != "@alice:hearth.test" || info["media_type"] != "image/png" ||
			info["media_length"] != float64(len(png8)) || info["upload_name"] != "a3.png" || info["quarantined_by"] != nil ||
			info["safe_from_quarantine"] != false || info["media_origin"] != "hearth.test" || info["authenticated"] != true ||
			info["sha256"] != sha256Hex(png8) {
			t.Fatalf("media info: %d %v", status, body)
		}
		if status, body = call(t, "GET", base+"/v1/media/hearth.test/NoSuchMediaxxxxxxxxxxxxx", adminTok, nil); status != 404 || body["errcode"] != "M_NOT_FOUND" {
			t.Fatalf("unknown media info: %d %v", status, body)
		}
		if status, _ = call(t, "GET", base+"/v1/media/other.example/"+a3.FileID, adminTok, nil); status != 404 {
			t.Fatalf("remote media info: %d", status)
		}

		// A user's media: paging, ordering.
		status, body = call(t, "GET", base+"/v1/users/@alice:hearth.test/media", adminTok, nil)
		if status != 200 || body["total"] != float64(3) || body["next_token"] != nil ||
			fmt.Sprint(mediaIDs(body)) != fmt.Sprint([]string{a1.FileID, a2.FileID, a3.FileID}) {
			t.Fatalf("user media: %d %v", status, body)
		}
		first := body["media"].([]any)[0].(map[string]any)
		if first["media_length"] != float64(100) || first["media_type"] != "text/plain" || first["upload_name"] != "a1.txt" ||
			first["safe_from_quarantine"] != false || first["quarantined_by"] != nil || first["created_ts"] == nil {
			t.Fatalf("user media item: %v", first)
		}
		status, body = call(t, "GET", base+"/v1/users/@alice:hearth.test/media?order_by=media_length&dir=b&limit=2", adminTok, nil)
		if status != 200 || body["next_token"] != float64(2) || fmt.Sprint(mediaIDs(body)) != fmt.Sprint([]string{a2.FileID, a1.FileID}) {
			t.Fatalf("user media by size, descending: %d %v", status, body)
		}
		for _, q := range []string{"order_by=password", "dir=x", "limit=-1", "from=-2"} {
			if status, body = call(t, "GET", base+"/v1/users/@alice:hearth.test/media?"+q, adminTok, nil); status != 400 || body["errcode"] != "M_INVALID_PARAM" {
				t.Errorf("user media ?%s: %d %v", q, status, body)
			}
		}
		if status, _ = call(t, "GET", base+"/v1/users/@nobody:hearth.test/media", adminTok, nil); status != 404 {
			t.Fatalf("unknown user's media: %d", status)
		}
		if status, _ = call(t, "GET", base+"/v1/users/@alice:other.example/media", adminTok, nil); status != 400 {
			t.Fatalf("remote user's media: %d", status)
		}

		// Statistics.
		status, body = call(t, "GET", base+"/v1/statistics/users/media?order_by=media_count&dir=b", adminTok, nil)
		users, _ := body["users"].([]any)
		if status != 200 || body["total"] != float64(2) || len(users) != 2 {
			t.Fatalf("statistics: %d %v", status, body)
		}
		top := users[0].(map[string]any)
		if top["user_id"] != "@alice:hearth.test" || top["media_count"] != float64(3) || top["media_length"] != float64(400+len(png8)) || top["displayname"] != "Alice Liddell" {
			t.Fatalf("statistics top user: %v", top)
		}
		status, body = call(t, "GET", base+"/v1/statistics/users/media?search_term=BOB", adminTok, nil)
		if users, _ = body["users"].([]any); status != 200 || len(users) != 1 || users[0].(map[string]any)["media_length"] != float64(50) {
			t.Fatalf("statistics search by user ID: %d %v", status, body)
		}
		status, body = call(t, "GET", base+"/v1/statistics/users/media?search_term=liddell", adminTok, nil)
		if users, _ = body["users"].([]any); status != 200 || len(users) != 1 || users[0].(map[string]any)["user_id"] != "@alice:hearth.test" {
			t.Fatalf("statistics search by display name: %d %v", status, body)
		}
		status, body = call(t, "GET", base+"/v1/statistics/users/media?limit=1", adminTok, nil)
		if users, _ = body["users"].([]any); status != 200 || len(users) != 1 || body["next_token"] != float64(1) || users[0].(map[string]any)["user_id"] != "@alice:hearth.test" {
			t.Fatalf("statistics page: %d %v", status, body)
		}
		future := time.Now().Add(time.Hour).UnixMilli()
		status, body = call(t, "GET", base+fmt.Sprintf("/v1/statistics/users/media?from_ts=%d", future), adminTok, nil)
		if users, _ = body["users"].([]any); status != 200 || len(users) != 0 || body["total"] != float64(0) {
			t.Fatalf("statistics from the future: %d %v", status, body)
		}
		for _, q := range []string{"search_term=", "order_by=size", "from_ts=10&until_ts=5", "dir=up"} {
			if status, body = call(t, "GET", base+"/v1/statistics/users/media?"+q, adminTok, nil); status != 400 {
				t.Errorf("statistics ?%s: %d %v", q, status, body)
			}
		}

		// Quarantine hides media; unquarantine brings it back.
		if status, body = call(t, "POST", base+"/v1/media/quarantine/hearth.test/"+a1.FileID, adminTok, nil); status != 200 {
			t.Fatalf("quarantine: %d %v", status, body)
		}
		if served(t, b, alice.tok, a1) {
			t.Fatal("quarantined media is still served")
		}
		r := mediaDo(t, b, "GET", "/_matrix/client/v1/media/thumbnail/"+mxcPath(a1)+"?width=32&height=32", alice.tok, "", nil)
		if r.status != 404 {
			t.Fatalf("thumbnail of quarantined media: %d", r.status)
		}
		_, body = call(t, "GET", base+"/v1/media/hearth.test/"+a1.FileID, adminTok, nil)
		if body["media_info"].(map[string]any)["quarantined_by"] != "@root:hearth.test" {
			t.Fatalf("quarantined_by: %v", body)
		}
		if status, _ = call(t, "POST", base+"/v1/media/unquarantine/hearth.test/"+a1.FileID, adminTok, nil); status != 200 || !served(t, b, alice.tok, a1) {
			t.Fatalf("unquarantine: %d", status)
		}
		// Another server's media is quarantined in the remote media cache;
		// this copy is not there (federation_test.go quarantines one that is).
		if status, _ = call(t, "POST", base+"/v1/media/quarantine/other.example/"+a1.FileID, adminTok, nil); status != 404 {
			t.Fatalf("quarantine uncached remote media: %d", status)
		}

		// Protected media is never quarantined.
		if status, _ = call(t, "POST", base+"/v1/media/protect/"+a2.FileID, adminTok, nil); status != 200 {
			t.Fatalf("protect: %d", status)
		}
		call(t, "POST", base+"/v1/media/quarantine/hearth.test/"+a2.FileID, adminTok, nil)
		if !served(t, b, alice.tok, a2) {
			t.Fatal("protected media was quarantined")
		}
		status, body = call(t, "POST", base+"/v1/user/@alice:hearth.test/media/quarantine", adminTok, nil)
		if status != 200 || body["num_quarantined"] != float64(2) {
			t.Fatalf("user quarantine: %d %v", status, body)
		}
		if served(t, b, alice.tok, a1) || served(t, b, alice.tok, a3) || !served(t, b, alice.tok, a2) || !served(t, b, bob.tok, b1) {
			t.Fatal("user quarantine hit the wrong media")
		}
		for _, u := range []id.ContentURI{a1, a3} {
			call(t, "POST", base+"/v1/media/unquarantine/hearth.test/"+u.FileID, adminTok, nil)
		}
		if status, _ = call(t, "POST", base+"/v1/media/protect/NoSuchMediaxxxxxxxxxxxxx", adminTok, nil); status != 404 {
			t.Fatalf("protect unknown: %d", status)
		}

		// Delete by age and size: protected media survives.
		if status, body = call(t, "POST", base+"/v1/media/delete", adminTok, nil); status != 400 || body["errcode"] != "M_MISSING_PARAM" {
			t.Fatalf("delete without before_ts: %d %v", status, body)
		}
		if status, _ = call(t, "POST", base+"/v1/media/delete?before_ts=1700000000", adminTok, nil); status != 400 {
			t.Fatalf("delete with seconds: %d", status)
		}
		if status, _ = call(t, "POST", base+"/v1/media/other.example/delete?before_ts=99999999999999", adminTok, nil); status != 400 {
			t.Fatalf("delete for another server: %d", status)
		}
		// Nothing is older than an hour ago.
		status, body = call(t, "POST", base+fmt.Sprintf("/v1/media/delete?before_ts=%d", time.Now().Add(-time.Hour).UnixMilli()), adminTok, nil)
		if status != 200 || body["total"] != float64(0) {
			t.Fatalf("delete before an hour ago: %d %v", status, body)
		}
		status, body = call(t, "POST", base+fmt.Sprintf("/v1/media/hearth.test/delete?before_ts=%d&size_gt=99", future), adminTok, nil)
		if status != 200 || body["total"] != float64(1) || fmt.Sprint(body["deleted_media"]) != fmt.Sprint([]any{a1.FileID}) {
			t.Fatalf("delete larger than 99 bytes (a2 is protected, a3 and b1 smaller): %d %v", status, body)
		}
		if served(t, b, alice.tok, a1) || !served(t, b, alice.tok, a2) || !served(t, b, alice.tok, a3) || !served(t, b, bob.tok, b1) {
			t.Fatal("delete by size removed the wrong media")
		}
		if _, err := os.Stat(filepath.Join(b.Cfg.MediaStorePath, "local_content", a1.FileID[:2], a1.FileID[2:4], a1.FileID[4:])); !os.IsNotExist(err) {
			t.Fatalf("deleted media's file is still on disk: %v", err)
		}

		// keep_profiles (the default) spares avatars.
		acctDo(t, b, "PUT", "/_matrix/client/v3/profile/@alice:hearth.test/avatar_url", alice.tok, map[string]string{"avatar_url": a3.String()}).want(t, 200, "")
		status, body = call(t, "POST", base+fmt.Sprintf("/v1/media/delete?before_ts=%d", future), adminTok, nil)
		if status != 200 || fmt.Sprint(body["deleted_media"]) != fmt.Sprint([]any{b1.FileID}) {
			t.Fatalf("delete keeping profiles: %d %v", status, body)
		}
		status, body = call(t, "POST", base+fmt.Sprintf("/v1/media/delete?before_ts=%d&keep_profiles=false", future), adminTok, nil)
		if status != 200 || fmt.Sprint(body["deleted_media"]) != fmt.Sprint([]any{a3.FileID}) {
			t.Fatalf("delete without keeping profiles: %d %v", status, body)
		}
		if status, body = call(t, "POST", base+"/v1/media/unprotect/"+a2.FileID, adminTok, nil); status != 200 {
			t.Fatalf("unprotect: %d %v", status, body)
		}

		// Delete one item; delete a user's media.
		status, body = call(t, "DELETE", base+"/v1/media/hearth.test/"+a2.FileID, adminTok, nil)
		if status != 200 || body["total"] != float64(1) || fmt.Sprint(body["deleted_media"]) != fmt.Sprint([]any{a2.FileID}) || served(t, b, alice.tok, a2) {
			t.Fatalf("delete one: %d %v", status, body)
		}
		if status, _ = call(t, "DELETE", base+"/v1/media/hearth.test/"+a2.FileID, adminTok, nil); status != 404 {
			t.Fatalf("delete twice: %d", status)
		}
		if status, _ = call(t, "DELETE", base+"/v1/media/other.example/"+a2.FileID, adminTok, nil); status != 400 {
			t.Fatalf("delete remote: %d", status)
		}
		b2 := upload(t, bob.cli, []byte("one"), "text/plain", "")
		b3 := upload(t, bob.cli, []byte("two"), "text/plain", "")
		status, body = call(t, "DELETE", base+"/v1/users/@bob:hearth.test/media", adminTok, nil)
		if status != 200 || body["total"] != float64(2) || served(t, b, bob.tok, b2) || served(t, b, bob.tok, b3) {
			t.Fatalf("delete user media: %d %v", status, body)
		}
		if _, body = call(t, "GET", base+"/v1/users/@bob:hearth.test/media", adminTok, nil); body["total"] != float64(0) {
			t.Fatalf("bob's media after deletion: %v", body)
		}

		// The remote media cache is empty: nothing to purge (federation
		// tests purge a full one).
		if status, body = call(t, "POST", base+"/v1/purge_media_cache?before_ts="+fmt.Sprint(future), adminTok, nil); status != 200 || body["deleted"] != float64(0) {
			t.Fatalf("purge_media_cache: %d %v", status, body)
		}
		if status, _ = call(t, "POST", base+"/v1/purge_media_cache", adminTok, nil); status != 400 {
			t.Fatalf("purge_media_cache without before_ts: %d", status)
		}

		// Destructive actions are in the audit log.
		entries, _, err := b.Store.AuditLog(ctx, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		actions := map[string]bool{}
		for _, en := range entries {
			if en.Actor == "@root:hearth.test" {
				actions[en.Action] = true
			}
		}
		for _, want := range []string{"media.delete", "media.quarantine", "media.unquarantine", "media.protect"} {
			if !actions[want] {
				t.Errorf("audit log has no %s entry (has %v)", want, actions)
			}
		}
	})
}

func TestAdminRoomMedia(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		adminTok := seedUser(t, b.Store, "root", "rootpw", true)
		alice := newRoomUser(t, b, "alice")
		base := b.URL + "/_synapse/admin"

		img := upload(t, alice.cli, testPNG(t, 64, 48), "image/png", "cat.png")
		thumb := upload(t, alice.cli, testPNG(t, 32, 24), "image/png", "thumb.png")
		avatar := upload(t, alice.cli, testPNG(t, 16, 16), "image/png", "avatar.png")
		other := upload(t, alice.cli, []byte("elsewhere"), "text/plain", "")
		created, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		if _, err := alice.cli.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{
			"msgtype": "m.image", "body": "cat.png", "url": img.String(),
			"info": map[string]any{"mimetype": "image/png", "w": 64, "h": 48, "thumbnail_url": thumb.String()},
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.cli.SendStateEvent(ctx, room, event.StateRoomAvatar, "", map[string]any{"url": avatar.String()}); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.cli.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{
			"msgtype": "m.file", "body": "remote", "url": "mxc://remote.example/AbCdEfGhIjKlMnOp",
		}); err != nil {
			t.Fatal(err)
		}
		// Text that merely mentions an mxc URI is not a reference.
		if _, err := alice.cli.SendText(ctx, room, "see "+other.String()); err != nil {
			t.Fatal(err)
		}

		status, body := call(t, "GET", base+"/v1/room/"+esc(string(room))+"/media", adminTok, nil)
		local := fmt.Sprint(body["local"])
		if status != 200 || len(body["local"].([]any)) != 3 || !strings.Contains(local, img.String()) || !strings.Contains(local, thumb.String()) ||
			!strings.Contains(local, avatar.String()) || fmt.Sprint(body["remote"]) != "[mxc://remote.example/AbCdEfGhIjKlMnOp]" {
			t.Fatalf("room media: %d %v", status, body)
		}
		if status, _ = call(t, "GET", base+"/v1/room/"+esc("!nope:hearth.test")+"/media", adminTok, nil); status != 404 {
			t.Fatalf("unknown room's media: %d", status)
		}

		// Quarantining the room's media hides exactly those three.
		status, body = call(t, "POST", base+"/v1/room/"+esc(string(room))+"/media/quarantine", adminTok, nil)
		if status != 200 || body["num_quarantined"] != float64(3) {
			t.Fatalf("room quarantine: %d %v", status, body)
		}
		for _, u := range []id.ContentURI{img, thumb, avatar} {
			if served(t, b, alice.tok, u) {
				t.Errorf("%s is served after the room quarantine", u)
			}
		}
		if !served(t, b, alice.tok, other) {
			t.Fatal("unreferenced media was quarantined")
		}
		// The deprecated path does the same (nothing new to quarantine).
		if status, body = call(t, "POST", base+"/v1/quarantine_media/"+esc(string(room)), adminTok, nil); status != 200 || body["num_quarantined"] == nil {
			t.Fatalf("deprecated room quarantine: %d %v", status, body)
		}
	})
}

// TestMediaAdminSynadm-style clients send these through plain HTTP; the
// endpoints answer JSON even for a method they do not support.
func TestAdminMediaMethodNotAllowed(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		adminTok := seedUser(t, b.Store, "root", "rootpw", true)
		status, body := call(t, http.MethodPut, b.URL+"/_synapse/admin/v1/statistics/users/media", adminTok, nil)
		if status != 405 || body["errcode"] != "M_UNRECOGNIZED" {
			t.Fatalf("PUT statistics: %d %v", status, body)
		}
	})
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
