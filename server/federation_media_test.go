package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/server/federation"
	"hearth/server/rooms"
	"hearth/server/secret"
	"hearth/server/servertest"
	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// Media across two Hearth servers: the federation endpoints of the origin,
// read with a MIME parser as any server would; and a client of the other
// server downloading and thumbnailing the origin's media through its own
// server, which fetches it once into its remote media cache.

// seedAdmin makes a server admin on b and returns their access token.
func seedAdmin(t *testing.T, b *servertest.Bundle) string {
	t.Helper()
	ctx := context.Background()
	hash, err := secret.HashPassword("rootpw", 4)
	if err != nil {
		t.Fatal(err)
	}
	userID := "@root:" + b.Cfg.ServerName
	if err := b.Store.CreateUser(ctx, &storage.User{UserID: userID, Localpart: "root", PasswordHash: hash, IsAdmin: true}); err != nil {
		t.Fatal(err)
	}
	tok := secret.Token("syt_")
	if err := b.Store.CreateLogin(ctx, storage.NewLogin{UserID: userID, DeviceID: "ROOTDEV", AccessToken: tok}); err != nil {
		t.Fatal(err)
	}
	return tok
}

// fedMediaGet sends a GET signed by from to to's federation listener.
func fedMediaGet(t *testing.T, from, to *servertest.Bundle, path string, signed bool) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", to.FedHTTP.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if signed {
		key, err := from.Cfg.LoadSigningKey()
		if err != nil {
			t.Fatal(err)
		}
		rk := rooms.SigningKey{ServerName: from.Cfg.ServerName, KeyID: key.ID, Private: key.Priv}
		if err := federation.SignRequest(req, rk, from.Cfg.ServerName, to.Cfg.ServerName, nil); err != nil {
			t.Fatal(err)
		}
	}
	// The listener's certificate is from the test's CA; what is tested
	// here is the answer, not the TLS.
	cli := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := cli.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// mediaPart is one part of a multipart answer.
type mediaPart struct {
	header map[string][]string
	body   []byte
}

// readMediaParts parses a federation media answer with mime/multipart and
// checks its shape: multipart/mixed, exactly two parts, the first an
// empty JSON object.
func readMediaParts(t *testing.T, resp *http.Response) mediaPart {
	t.Helper()
	if resp.StatusCode != 200 {
		raw, _ := io.ReadAll(resp.Body)
		t.Fatalf("federation media: %d %s", resp.StatusCode, raw)
	}
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		t.Fatalf("Content-Type %q", resp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	var parts []mediaPart
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("part %d: %v", len(parts), err)
		}
		body, err := io.ReadAll(p)
		if err != nil {
			t.Fatalf("part %d: %v", len(parts), err)
		}
		parts = append(parts, mediaPart{header: p.Header, body: body})
	}
	if len(parts) != 2 {
		t.Fatalf("%d parts, want 2", len(parts))
	}
	var meta map[string]any
	if parts[0].header["Content-Type"][0] != "application/json" || json.Unmarshal(parts[0].body, &meta) != nil || meta == nil || len(meta) != 0 {
		t.Fatalf("metadata part: %v %q", parts[0].header, parts[0].body)
	}
	return parts[1]
}

// safeHeaders are the headers a served file must carry identically
// whichever server serves it.
var safeHeaders = []string{"Content-Type", "Content-Disposition", "Content-Security-Policy", "X-Content-Type-Options", "Cross-Origin-Resource-Policy"}

func TestFederationMedia(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		ctx := t.Context()
		fed := servertest.NewFederation(t)
		// a is the origin; b serves its media to b's users, with a 1 MiB
		// limit and the legacy endpoints open (enable_authenticated_media:
		// false), as older clients need.
		a := fed.Start(t, e)
		b := fed.Start(t, e, func(c *config.Config) {
			c.MaxUploadSize = 1 << 20
			off := false
			c.EnableAuthenticatedMedia = &off
		})
		alice := newRoomUser(t, a, "alice")
		bob := newRoomUser(t, b, "bob")
		upload := func(u roomUser, data []byte, ctype, name string) id.ContentURI {
			t.Helper()
			resp, err := u.cli.UploadBytesWithName(ctx, data, ctype, name)
			if err != nil {
				t.Fatalf("upload %s: %v", name, err)
			}
			return resp.ContentURI
		}
		pic := testPNG(t, 300, 200)
		uri := upload(alice, pic, "image/png", "pic.png")
		if uri.Homeserver != a.Cfg.ServerName {
			t.Fatalf("content URI %v", uri)
		}

		// The origin's federation endpoints, signed by b.
		part := readMediaParts(t, fedMediaGet(t, b, a, "/_matrix/federation/v1/media/download/"+uri.FileID, true))
		if !bytes.Equal(part.body, pic) || part.header["Content-Type"][0] != "image/png" ||
			part.header["Content-Disposition"][0] != `inline; filename=pic.png` {
			t.Fatalf("download part: %v, %d bytes", part.header, len(part.body))
		}
		part = readMediaParts(t, fedMediaGet(t, b, a, "/_matrix/federation/v1/media/thumbnail/"+uri.FileID+"?width=96&height=96&method=crop", true))
		img, err := png.Decode(bytes.NewReader(part.body))
		if err != nil || part.header["Content-Type"][0] != "image/png" || img.Bounds().Dx() != 96 || img.Bounds().Dy() != 96 {
			t.Fatalf("thumbnail part: %v, %v", part.header, err)
		}
		for _, tc := range []struct {
			path    string
			signed  bool
			status  int
			errcode string
		}{
			{"/_matrix/federation/v1/media/download/" + uri.FileID, false, 401, "M_UNAUTHORIZED"},
			{"/_matrix/federation/v1/media/download/NoSuchMediaxxxxxxxxxxxxx", true, 404, "M_NOT_FOUND"},
			{"/_matrix/federation/v1/media/thumbnail/NoSuchMediaxxxxxxxxxxxxx?width=32&height=32", true, 404, "M_NOT_FOUND"},
			{"/_matrix/federation/v1/media/thumbnail/" + uri.FileID + "?width=32", true, 400, "M_MISSING_PARAM"},
		} {
			resp := fedMediaGet(t, b, a, tc.path, tc.signed)
			var body map[string]any
			json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != tc.status || body["errcode"] != tc.errcode {
				t.Errorf("%s: %d %v, want %d %s", tc.path, resp.StatusCode, body, tc.status, tc.errcode)
			}
		}
		// Quarantined media is refused to servers as to clients.
		aAdmin := seedAdmin(t, a)
		secretURI := upload(alice, []byte("quarantine me"), "text/plain", "q.txt")
		if status, body := call(t, "POST", a.URL+"/_synapse/admin/v1/media/quarantine/"+mxcPath(secretURI), aAdmin, nil); status != 200 {
			t.Fatalf("quarantine on a: %d %v", status, body)
		}
		if resp := fedMediaGet(t, b, a, "/_matrix/federation/v1/media/download/"+secretURI.FileID, true); resp.StatusCode != 404 {
			t.Fatalf("quarantined media over federation: %d", resp.StatusCode)
		}
		fetches := func(u id.ContentURI) int {
			return a.FederationRequests("/_matrix/federation/v1/media/download/" + u.FileID)
		}
		if r := mediaDo(t, b, "GET", "/_matrix/client/v1/media/download/"+mxcPath(secretURI), bob.tok, "", nil); r.status != 404 || r.errcode(t) != "M_NOT_FOUND" {
			t.Fatalf("quarantined remote media: %d %s", r.status, r.body)
		}
		before := fetches(uri)
		thumbsBefore := a.FederationRequests("/_matrix/federation/v1/media/thumbnail/")

		// bob downloads alice's picture through b: the same bytes and the
		// same safe headers as alice gets from a, fetched once.
		local := mediaDo(t, a, "GET", "/_matrix/client/v1/media/download/"+mxcPath(uri), alice.tok, "", nil)
		for i, path := range []string{"/_matrix/client/v1/media/download/", "/_matrix/client/v1/media/download/", "/_matrix/media/v3/download/"} {
			tok := bob.tok
			if i == 2 {
				tok = "" // legacy: unauthenticated
			}
			r := mediaDo(t, b, "GET", path+mxcPath(uri), tok, "", nil)
			if r.status != 200 || !bytes.Equal(r.body, pic) {
				t.Fatalf("%s on b: %d, %d bytes", path, r.status, len(r.body))
			}
			for _, h := range safeHeaders {
				if got, want := r.header.Get(h), local.header.Get(h); got != want || want == "" {
					t.Errorf("%s on b: %s = %q, a serves %q", path, h, got, want)
				}
			}
			if r.header.Get("Content-Security-Policy") != wantCSP {
				t.Errorf("CSP %q", r.header.Get("Content-Security-Policy"))
			}
		}
		if n := fetches(uri) - before; n != 1 {
			t.Fatalf("a saw %d fetches of the picture, want 1", n)
		}
		// Thumbnails are made by b from its copy: the same as a's.
		for _, q := range []string{"width=96&height=96&method=crop", "width=320&height=240"} {
			want := mediaDo(t, a, "GET", "/_matrix/client/v1/media/thumbnail/"+mxcPath(uri)+"?"+q, alice.tok, "", nil)
			for _, path := range []string{"/_matrix/client/v1/media/thumbnail/", "/_matrix/media/v3/thumbnail/"} {
				tok := bob.tok
				if path == "/_matrix/media/v3/thumbnail/" {
					tok = ""
				}
				r := mediaDo(t, b, "GET", path+mxcPath(uri)+"?"+q, tok, "", nil)
				if r.status != 200 || want.status != 200 || !bytes.Equal(r.body, want.body) {
					t.Fatalf("thumbnail %s?%s on b: %d (a: %d), same bytes: %t", path, q, r.status, want.status, bytes.Equal(r.body, want.body))
				}
				for _, h := range safeHeaders {
					if r.header.Get(h) != want.header.Get(h) {
						t.Errorf("thumbnail %s: %s = %q, a serves %q", path, h, r.header.Get(h), want.header.Get(h))
					}
				}
			}
		}
		if n := fetches(uri) - before; n != 1 {
			t.Fatalf("after thumbnails a saw %d fetches, want 1", n)
		}
		if n := a.FederationRequests("/_matrix/federation/v1/media/thumbnail/") - thumbsBefore; n != 0 {
			t.Fatalf("b asked a for %d thumbnails", n)
		}

		// Concurrent first downloads share one fetch.
		pic2 := testPNG(t, 64, 64)
		uri2 := upload(alice, pic2, "image/png", "")
		var wg sync.WaitGroup
		errs := make(chan string, 8)
		for range 8 {
			wg.Go(func() {
				r := mediaDo(t, b, "GET", "/_matrix/client/v1/media/download/"+mxcPath(uri2), bob.tok, "", nil)
				if r.status != 200 || !bytes.Equal(r.body, pic2) {
					errs <- fmt.Sprintf("%d, %d bytes", r.status, len(r.body))
				}
			})
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Errorf("concurrent download: %s", e)
		}
		if n := fetches(uri2); n != 1 {
			t.Fatalf("8 concurrent downloads made %d fetches", n)
		}

		// Unknown media: 404, and the origin is not asked again at once.
		ghost := id.ContentURI{Homeserver: a.Cfg.ServerName, FileID: "GhostMediaxxxxxxxxxxxxxx"}
		for range 2 {
			if r := mediaDo(t, b, "GET", "/_matrix/client/v1/media/download/"+mxcPath(ghost), bob.tok, "", nil); r.status != 404 || r.errcode(t) != "M_NOT_FOUND" {
				t.Fatalf("unknown remote media: %d %s", r.status, r.body)
			}
		}
		if n := fetches(ghost); n != 1 {
			t.Fatalf("unknown media asked for %d times, want 1 (the failure is remembered)", n)
		}

		// Larger than b's max_upload_size: 502 M_TOO_LARGE, nothing kept.
		big := make([]byte, 1<<20+1)
		rand.Read(big)
		bigURI := upload(alice, big, "application/octet-stream", "big.bin")
		if r := mediaDo(t, b, "GET", "/_matrix/client/v1/media/download/"+mxcPath(bigURI), bob.tok, "", nil); r.status != 502 || r.errcode(t) != "M_TOO_LARGE" {
			t.Fatalf("oversize remote media: %d %s", r.status, r.body)
		}
		if r := mediaDo(t, b, "GET", "/_matrix/client/v1/media/thumbnail/"+mxcPath(bigURI)+"?width=32&height=32", bob.tok, "", nil); r.status != 502 || r.errcode(t) != "M_TOO_LARGE" {
			t.Fatalf("thumbnail of oversize remote media: %d %s", r.status, r.body)
		}
		if _, err := b.Store.RemoteMediaByID(ctx, a.Cfg.ServerName, bigURI.FileID); err == nil {
			t.Fatal("oversize media was cached")
		}
		if left, _ := os.ReadDir(filepath.Join(b.Cfg.MediaStorePath, "tmp")); len(left) != 0 {
			t.Fatalf("temporary files left behind: %v", left)
		}

		// a (enable_authenticated_media: true, the default) does not fetch
		// for its legacy endpoints: the copy would be authenticated-only.
		bobURI := upload(bob, []byte("from b"), "text/plain", "b.txt")
		if r := mediaDo(t, a, "GET", "/_matrix/media/v3/download/"+mxcPath(bobURI), "", "", nil); r.status != 404 {
			t.Fatalf("legacy download of remote media on a: %d %s", r.status, r.body)
		}
		if n := b.FederationRequests("/_matrix/federation/v1/media/"); n != 0 {
			t.Fatalf("a fetched for a legacy request: %d", n)
		}
		if r := mediaDo(t, a, "GET", "/_matrix/client/v1/media/download/"+mxcPath(bobURI), alice.tok, "", nil); r.status != 200 || string(r.body) != "from b" {
			t.Fatalf("authenticated download of b's media on a: %d %s", r.status, r.body)
		}

		// b's admin API sees the cache: media info, quarantine, room
		// media, and the purge, after which the picture is fetched again.
		bAdmin := seedAdmin(t, b)
		adm := b.URL + "/_synapse/admin/v1"
		status, body := call(t, "GET", adm+"/media/"+mxcPath(uri), bAdmin, nil)
		info, _ := body["media_info"].(map[string]any)
		if status != 200 || info["media_origin"] != a.Cfg.ServerName || info["media_id"] != uri.FileID || info["media_type"] != "image/png" ||
			info["media_length"] != float64(len(pic)) || info["upload_name"] != "pic.png" || info["sha256"] != sha256Hex(pic) ||
			info["quarantined_by"] != nil || info["authenticated"] != false {
			t.Fatalf("remote media info: %d %v", status, body)
		}
		if status, _ = call(t, "POST", adm+"/media/quarantine/"+mxcPath(uri), bAdmin, nil); status != 200 {
			t.Fatalf("quarantine remote: %d", status)
		}
		if r := mediaDo(t, b, "GET", "/_matrix/client/v1/media/download/"+mxcPath(uri), bob.tok, "", nil); r.status != 404 {
			t.Fatalf("quarantined copy served: %d", r.status)
		}
		if status, _ = call(t, "POST", adm+"/media/unquarantine/"+mxcPath(uri), bAdmin, nil); status != 200 {
			t.Fatalf("unquarantine remote: %d", status)
		}
		room, err := bob.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.cli.SendMessageEvent(ctx, room.RoomID, event.EventMessage, map[string]any{
			"msgtype": "m.image", "body": "pic2", "url": uri2.String()}); err != nil {
			t.Fatal(err)
		}
		status, body = call(t, "POST", adm+"/room/"+esc(string(room.RoomID))+"/media/quarantine", bAdmin, nil)
		if status != 200 || body["num_quarantined"] != float64(1) {
			t.Fatalf("room media quarantine: %d %v", status, body)
		}
		if r := mediaDo(t, b, "GET", "/_matrix/client/v1/media/download/"+mxcPath(uri2), bob.tok, "", nil); r.status != 404 {
			t.Fatalf("copy quarantined with its room served: %d", r.status)
		}
		future := time.Now().Add(time.Hour).UnixMilli()
		status, body = call(t, "POST", fmt.Sprintf("%s/purge_media_cache?before_ts=%d", adm, future), bAdmin, nil)
		if status != 200 || body["deleted"] != float64(1) { // the picture; the quarantined copy is kept
			t.Fatalf("purge_media_cache: %d %v", status, body)
		}
		if status, _ = call(t, "GET", adm+"/media/"+mxcPath(uri), bAdmin, nil); status != 404 {
			t.Fatalf("media info after purge: %d", status)
		}
		if _, err := b.Store.RemoteMediaByID(ctx, a.Cfg.ServerName, uri2.FileID); err != nil {
			t.Fatalf("quarantined copy purged: %v", err)
		}
		if r := mediaDo(t, b, "GET", "/_matrix/client/v1/media/download/"+mxcPath(uri), bob.tok, "", nil); r.status != 200 || !bytes.Equal(r.body, pic) {
			t.Fatalf("download after purge: %d", r.status)
		}
		if n := fetches(uri) - before; n != 2 {
			t.Fatalf("after the purge a saw %d fetches in all, want 2", n)
		}

		// remote_media_download_*: c lets a client address have it fetch
		// 1 KiB at once, then 1 byte a second; its cache is not limited.
		c := fed.Start(t, e, func(c *config.Config) {
			c.RemoteMediaDownloadBurstCount = 1 << 10
			c.RemoteMediaDownloadPerSecond = 1
		})
		carol := newRoomUser(t, c, "carol")
		noise := make([]byte, 4<<10)
		rand.Read(noise)
		noiseURI := upload(alice, noise, "application/octet-stream", "")
		for i, tc := range []struct {
			uri    id.ContentURI
			status int
		}{{noiseURI, 200}, {uri2, 429}, {noiseURI, 200}} {
			if r := mediaDo(t, c, "GET", "/_matrix/client/v1/media/download/"+mxcPath(tc.uri), carol.tok, "", nil); r.status != tc.status {
				t.Fatalf("download %d on c: %d %s, want %d", i, r.status, r.body, tc.status)
			}
		}
	})
}
