package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// Media tests drive the content repository over HTTP with mautrix-go's
// media calls, and with raw requests where headers and status matter.

const wantCSP = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"

// rawReply is an answer whose body is kept as bytes.
type rawReply struct {
	status int
	header http.Header
	body   []byte
}

func (r rawReply) json(t *testing.T) map[string]any {
	t.Helper()
	out := map[string]any{}
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatalf("not JSON (%d): %q", r.status, r.body)
	}
	return out
}

func (r rawReply) errcode(t *testing.T) string {
	s, _ := r.json(t)["errcode"].(string)
	return s
}

// mediaDo sends a request with a raw body (nil for none) and content type.
func mediaDo(t *testing.T, b *servertest.Bundle, method, path, token, ctype string, body io.Reader) rawReply {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, b.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return rawReply{status: res.StatusCode, header: res.Header, body: raw}
}

// testPNG is a w×h PNG with a gradient (so scaling has something to do).
func testPNG(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), 128, 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func testJPEG(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.RGBA{uint8(y), uint8(x), 64, 255})
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func mxcPath(uri id.ContentURI) string { return uri.Homeserver + "/" + uri.FileID }

func upload(t *testing.T, cli *mautrix.Client, data []byte, ctype, name string) id.ContentURI {
	t.Helper()
	resp, err := cli.UploadBytesWithName(t.Context(), data, ctype, name)
	if err != nil {
		t.Fatalf("upload %s: %v", name, err)
	}
	if resp.ContentURI.Homeserver != "hearth.test" || len(resp.ContentURI.FileID) != 24 {
		t.Fatalf("content_uri %v", resp.ContentURI)
	}
	return resp.ContentURI
}

func TestMediaUploadDownload(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e, func(c *config.Config) { c.MaxUploadSize = 4096 })
		ctx := t.Context()
		alice := newRoomUser(t, b, "alice")

		pic := testPNG(t, 20, 10)
		uri := upload(t, alice.cli, pic, "image/png", "pic.png")
		res, err := alice.cli.Download(ctx, uri)
		if err != nil {
			t.Fatalf("download: %v", err)
		}
		got, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if !bytes.Equal(got, pic) {
			t.Fatalf("downloaded %d bytes, uploaded %d", len(got), len(pic))
		}
		h := res.Header
		if h.Get("Content-Security-Policy") != wantCSP || h.Get("X-Content-Type-Options") != "nosniff" ||
			h.Get("Cross-Origin-Resource-Policy") != "cross-origin" || h.Get("Content-Type") != "image/png" {
			t.Fatalf("headers: %v", h)
		}
		if d := h.Get("Content-Disposition"); d != `inline; filename=pic.png` {
			t.Fatalf("Content-Disposition %q", d)
		}
		// The file name in the path wins, and is encoded.
		r := mediaDo(t, b, "GET", "/_matrix/client/v1/media/download/"+mxcPath(uri)+"/"+esc("my picture.png"), alice.tok, "", nil)
		if r.status != 200 || r.header.Get("Content-Disposition") != `inline; filename="my picture.png"` {
			t.Fatalf("named download: %d %q", r.status, r.header.Get("Content-Disposition"))
		}

		// HTML is never inline, and a non-ASCII name uses filename*.
		page := []byte("<html><script>alert(1)</script></html>")
		huri := upload(t, alice.cli, page, "text/html", "résumé.html")
		r = mediaDo(t, b, "GET", "/_matrix/client/v1/media/download/"+mxcPath(huri), alice.tok, "", nil)
		if r.status != 200 || !bytes.Equal(r.body, page) {
			t.Fatalf("html download: %d %q", r.status, r.body)
		}
		if d := r.header.Get("Content-Disposition"); d != `attachment; filename*=utf-8''r%C3%A9sum%C3%A9.html` {
			t.Fatalf("html disposition %q", d)
		}
		if r.header.Get("Content-Security-Policy") != wantCSP || r.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("html headers: %v", r.header)
		}
		// SVG can carry script: an attachment too; a quote in the name is escaped.
		suri := upload(t, alice.cli, []byte(`<svg xmlns="http://www.w3.org/2000/svg"/>`), "image/svg+xml", `a"b.svg`)
		r = mediaDo(t, b, "GET", "/_matrix/client/v1/media/download/"+mxcPath(suri), alice.tok, "", nil)
		if d := r.header.Get("Content-Disposition"); d != `attachment; filename="a\"b.svg"` {
			t.Fatalf("svg disposition %q", d)
		}
		// Plain text is inline, with a charset.
		turi := upload(t, alice.cli, []byte("hello"), "text/plain", "")
		r = mediaDo(t, b, "GET", "/_matrix/client/v1/media/download/"+mxcPath(turi), alice.tok, "", nil)
		if r.header.Get("Content-Disposition") != "inline" || r.header.Get("Content-Type") != "text/plain; charset=utf-8" {
			t.Fatalf("text headers: %v", r.header)
		}

		// Config, size limit: exactly the limit is accepted, one more byte is 413,
		// with and without a Content-Length.
		mc, err := alice.cli.GetMediaConfig(ctx)
		if err != nil || mc.UploadSize != 4096 {
			t.Fatalf("media config: %+v %v", mc, err)
		}
		upload(t, alice.cli, bytes.Repeat([]byte("x"), 4096), "application/octet-stream", "max.bin")
		_, err = alice.cli.UploadBytes(ctx, bytes.Repeat([]byte("x"), 4097), "application/octet-stream")
		acctWantErr(t, err, 413, "M_TOO_LARGE")
		r = mediaDo(t, b, "POST", "/_matrix/media/v3/upload", alice.tok, "application/octet-stream",
			io.MultiReader(bytes.NewReader(bytes.Repeat([]byte("y"), 4000)), strings.NewReader(strings.Repeat("z", 200))))
		if r.status != 413 || r.errcode(t) != "M_TOO_LARGE" {
			t.Fatalf("chunked oversize upload: %d %s", r.status, r.body)
		}
		// The r0 alias uploads too.
		r = mediaDo(t, b, "POST", "/_matrix/media/r0/upload?filename=r0.txt", alice.tok, "text/plain", strings.NewReader("r0"))
		if r.status != 200 || !strings.HasPrefix(r.json(t)["content_uri"].(string), "mxc://hearth.test/") {
			t.Fatalf("r0 upload: %d %s", r.status, r.body)
		}

		// Errors: no token, unknown media, a malformed ID, another server's media.
		r = mediaDo(t, b, "GET", "/_matrix/client/v1/media/download/"+mxcPath(uri), "", "", nil)
		if r.status != 401 || r.errcode(t) != "M_MISSING_TOKEN" {
			t.Fatalf("unauthenticated v1 download: %d %s", r.status, r.body)
		}
		r = mediaDo(t, b, "POST", "/_matrix/media/v3/upload", "", "text/plain", strings.NewReader("x"))
		if r.status != 401 {
			t.Fatalf("unauthenticated upload: %d", r.status)
		}
		for _, p := range []string{"hearth.test/AAAAAAAAAAAAAAAAAAAAAAAA", "hearth.test/..%2F..%2Fetc", "bad%2Fserver/" + uri.FileID} {
			r = mediaDo(t, b, "GET", "/_matrix/client/v1/media/download/"+p, alice.tok, "", nil)
			if r.status != 404 || r.errcode(t) != "M_NOT_FOUND" {
				t.Fatalf("download %s: %d %s", p, r.status, r.body)
			}
		}
		// This test server federates with no one (federation_domain_whitelist: []).
		r = mediaDo(t, b, "GET", "/_matrix/client/v1/media/download/other.example/"+uri.FileID, alice.tok, "", nil)
		if r.status != 403 || r.errcode(t) != "M_FORBIDDEN" {
			t.Fatalf("download from a server not federated with: %d %s", r.status, r.body)
		}

		// Range requests work (video seeking).
		req, _ := http.NewRequest("GET", b.URL+"/_matrix/client/v1/media/download/"+mxcPath(uri), nil)
		req.Header.Set("Authorization", "Bearer "+alice.tok)
		req.Header.Set("Range", "bytes=0-3")
		rres, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		part, _ := io.ReadAll(rres.Body)
		rres.Body.Close()
		if rres.StatusCode != 206 || !bytes.Equal(part, pic[:4]) {
			t.Fatalf("range: %d %q", rres.StatusCode, part)
		}

		// The file is on disk under media_store_path, named by media ID.
		if _, err := os.Stat(filepath.Join(b.Cfg.MediaStorePath, "local_content", uri.FileID[:2], uri.FileID[2:4], uri.FileID[4:])); err != nil {
			t.Fatalf("media file: %v", err)
		}

		// A restart keeps media.
		b.Restart(t)
		got, err = alice.cli.DownloadBytes(ctx, uri)
		if err != nil || !bytes.Equal(got, pic) {
			t.Fatalf("download after restart: %d bytes, %v", len(got), err)
		}
	})
}

func TestMediaLegacyEndpoints(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		no := false
		b := servertest.Start(t, e, func(c *config.Config) { c.EnableAuthenticatedMedia = &no })
		alice := newRoomUser(t, b, "alice")
		pic := testPNG(t, 64, 64)
		open := upload(t, alice.cli, pic, "image/png", "open.png")

		// enable_authenticated_media: false — the legacy endpoints serve it
		// without a token, with the same safety headers.
		r := mediaDo(t, b, "GET", "/_matrix/media/v3/download/"+mxcPath(open), "", "", nil)
		if r.status != 200 || !bytes.Equal(r.body, pic) || r.header.Get("Content-Security-Policy") != wantCSP ||
			r.header.Get("X-Content-Type-Options") != "nosniff" || r.header.Get("Content-Disposition") != "inline; filename=open.png" {
			t.Fatalf("legacy download: %d %v", r.status, r.header)
		}
		r = mediaDo(t, b, "GET", "/_matrix/media/r0/download/"+mxcPath(open)+"/x.png", "", "", nil)
		if r.status != 200 || r.header.Get("Content-Disposition") != "inline; filename=x.png" {
			t.Fatalf("legacy r0 download: %d %v", r.status, r.header)
		}
		r = mediaDo(t, b, "GET", "/_matrix/media/v3/thumbnail/"+mxcPath(open)+"?width=32&height=32&method=crop", "", "", nil)
		if r.status != 200 || r.header.Get("Content-Type") != "image/png" {
			t.Fatalf("legacy thumbnail: %d %s", r.status, r.body)
		}
		r = mediaDo(t, b, "GET", "/_matrix/media/v3/config", alice.tok, "", nil)
		if r.status != 200 || r.json(t)["m.upload.size"] != float64(50<<20) {
			t.Fatalf("legacy config: %d %s", r.status, r.body)
		}

		// Turning authenticated media on (Synapse's default) freezes the
		// legacy endpoints: what was uploaded before stays reachable, new
		// uploads are only served to signed-in users.
		yes := true
		b.Cfg.EnableAuthenticatedMedia = &yes
		b.Restart(t)
		closed := upload(t, alice.cli, pic, "image/png", "closed.png")
		if r = mediaDo(t, b, "GET", "/_matrix/media/v3/download/"+mxcPath(open), "", "", nil); r.status != 200 {
			t.Fatalf("old media on legacy endpoint after the switch: %d", r.status)
		}
		for _, p := range []string{"/_matrix/media/v3/download/" + mxcPath(closed), "/_matrix/media/v3/thumbnail/" + mxcPath(closed) + "?width=32&height=32"} {
			r = mediaDo(t, b, "GET", p, "", "", nil)
			if r.status != 404 || r.errcode(t) != "M_NOT_FOUND" {
				t.Fatalf("new media on %s: %d %s", p, r.status, r.body)
			}
			// A token does not change what the legacy endpoint serves.
			if r = mediaDo(t, b, "GET", p, alice.tok, "", nil); r.status != 404 {
				t.Fatalf("new media on %s with a token: %d", p, r.status)
			}
		}
		got, err := alice.cli.DownloadBytes(t.Context(), closed)
		if err != nil || !bytes.Equal(got, pic) {
			t.Fatalf("authenticated download: %v", err)
		}
	})
}

// decodeThumb checks a thumbnail answer and returns its dimensions.
func decodeThumb(t *testing.T, r rawReply, wantType string) (int, int) {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("thumbnail: %d %s", r.status, r.body)
	}
	if r.header.Get("Content-Type") != wantType || r.header.Get("Content-Security-Policy") != wantCSP ||
		r.header.Get("X-Content-Type-Options") != "nosniff" || !strings.HasPrefix(r.header.Get("Content-Disposition"), "inline") {
		t.Fatalf("thumbnail headers: %v", r.header)
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(r.body))
	if err != nil || "image/"+format != wantType {
		t.Fatalf("thumbnail does not decode as %s: %s %v", wantType, format, err)
	}
	return cfg.Width, cfg.Height
}

func TestMediaThumbnails(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice := newRoomUser(t, b, "alice")
		wide := upload(t, alice.cli, testPNG(t, 1000, 500), "image/png", "wide.png")
		tall := upload(t, alice.cli, testJPEG(t, 300, 600), "image/jpeg", "tall.jpg")
		tiny := upload(t, alice.cli, testPNG(t, 20, 10), "image/png", "tiny.png")
		var g bytes.Buffer
		pal := []color.Color{color.Black, color.White}
		anim := &gif.GIF{Image: []*image.Paletted{image.NewPaletted(image.Rect(0, 0, 200, 100), pal), image.NewPaletted(image.Rect(0, 0, 200, 100), pal)}, Delay: []int{10, 10}}
		if err := gif.EncodeAll(&g, anim); err != nil {
			t.Fatal(err)
		}
		animated := upload(t, alice.cli, g.Bytes(), "image/gif", "anim.gif")
		// A 1×1 lossless WebP: decoded by golang.org/x/image/webp.
		webp := upload(t, alice.cli, []byte("RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00\x2f\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00"), "image/webp", "dot.webp")
		text := upload(t, alice.cli, []byte("not an image"), "text/plain", "a.txt")
		liar := upload(t, alice.cli, []byte("not a png at all"), "image/png", "liar.png")

		thumb := func(uri id.ContentURI, q string) rawReply {
			return mediaDo(t, b, "GET", "/_matrix/client/v1/media/thumbnail/"+mxcPath(uri)+"?"+q, alice.tok, "", nil)
		}
		for _, tc := range []struct {
			uri          id.ContentURI
			q, ctype     string
			wantW, wantH int
		}{
			{wide, "width=96&height=96&method=crop", "image/png", 96, 96},
			{wide, "width=32&height=32&method=crop", "image/png", 32, 32},
			{wide, "width=320&height=240&method=scale", "image/png", 320, 160},
			{wide, "width=300&height=200", "image/png", 320, 160}, // scale is the default; the next size up is served
			{wide, "width=5000&height=5000&method=scale", "image/png", 800, 400},
			{tall, "width=320&height=240&method=scale", "image/jpeg", 120, 240},
			{tall, "width=96&height=96&method=crop", "image/jpeg", 96, 96},
			{tiny, "width=800&height=600&method=scale", "image/png", 20, 10}, // never upscaled
			{animated, "width=96&height=96&method=crop", "image/png", 96, 96},
			{webp, "width=32&height=32&method=crop", "image/png", 1, 1},
		} {
			w, h := decodeThumb(t, thumb(tc.uri, tc.q), tc.ctype)
			if w != tc.wantW || h != tc.wantH {
				t.Errorf("thumbnail %s?%s: %dx%d, want %dx%d", tc.uri.FileID, tc.q, w, h, tc.wantW, tc.wantH)
			}
		}
		// mautrix's thumbnail call, and the cache: a second answer is the same bytes, from disk.
		res, err := alice.cli.DownloadThumbnail(t.Context(), wide, 96, 96, mautrix.DownloadThumbnailExtra{Method: "crop"})
		if err != nil {
			t.Fatal(err)
		}
		first, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if again := thumb(wide, "width=96&height=96&method=crop"); !bytes.Equal(first, again.body) {
			t.Fatal("cached thumbnail differs")
		}
		if _, err := os.Stat(filepath.Join(b.Cfg.MediaStorePath, "local_thumbnails", wide.FileID[:2], wide.FileID[2:4], wide.FileID[4:], "96x96-crop")); err != nil {
			t.Fatalf("thumbnail not cached on disk: %v", err)
		}

		// A phone photo: stored 300×600 with its top-left corner red, and
		// EXIF orientation 6 (turn 90° clockwise to display). The thumbnail
		// is upright: 600×300 scaled into 320×240, red at the top right.
		photo := upload(t, alice.cli, exifJPEG(t, 6), "image/jpeg", "photo.jpg")
		r := thumb(photo, "width=320&height=240&method=scale")
		if w, h := decodeThumb(t, r, "image/jpeg"); w != 320 || h != 160 {
			t.Fatalf("EXIF-rotated thumbnail is %dx%d, want 320x160", w, h)
		}
		upright, err := jpeg.Decode(bytes.NewReader(r.body))
		if err != nil {
			t.Fatal(err)
		}
		isRed := func(c color.Color) bool { r, g, b, _ := c.RGBA(); return r > 0xc000 && g < 0x4000 && b < 0x4000 }
		if !isRed(upright.At(310, 10)) || isRed(upright.At(10, 10)) || isRed(upright.At(310, 150)) {
			t.Fatalf("EXIF orientation not applied: top-right %v, top-left %v", upright.At(310, 10), upright.At(10, 10))
		}

		for _, tc := range []struct {
			uri     id.ContentURI
			q       string
			status  int
			errcode string
		}{
			{wide, "height=96", 400, "M_MISSING_PARAM"},
			{wide, "width=-1&height=96", 400, "M_INVALID_PARAM"},
			{wide, "width=96&height=96&method=stretch", 400, "M_INVALID_PARAM"},
			{text, "width=96&height=96", 400, "M_UNKNOWN"},
			{liar, "width=96&height=96", 400, "M_UNKNOWN"},
			// This test server federates with no one (federation_domain_whitelist: []).
			{id.ContentURI{Homeserver: "other.example", FileID: wide.FileID}, "width=96&height=96", 403, "M_FORBIDDEN"},
		} {
			r := thumb(tc.uri, tc.q)
			if r.status != tc.status || r.errcode(t) != tc.errcode {
				t.Errorf("thumbnail %s?%s: %d %s, want %d %s", tc.uri, tc.q, r.status, r.body, tc.status, tc.errcode)
			}
		}
	})
}

func TestMediaAsyncUpload(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		ctx := t.Context()
		alice, bob := newRoomUser(t, b, "alice"), newRoomUser(t, b, "bob")

		created, err := alice.cli.CreateMXC(ctx)
		if err != nil || created.ContentURI.Homeserver != "hearth.test" || created.UnusedExpiresAt.IsZero() {
			t.Fatalf("create: %+v %v", created, err)
		}
		uri := created.ContentURI
		// Not uploaded yet: a download waits up to timeout_ms, then 504.
		r := mediaDo(t, b, "GET", "/_matrix/client/v1/media/download/"+mxcPath(uri)+"?timeout_ms=50", alice.tok, "", nil)
		if r.status != 504 || r.errcode(t) != "M_NOT_YET_UPLOADED" {
			t.Fatalf("pending download: %d %s", r.status, r.body)
		}
		// A waiting download is answered as soon as the upload lands.
		done := make(chan rawReply, 1)
		go func() {
			done <- mediaDo(t, b, "GET", "/_matrix/client/v1/media/download/"+mxcPath(uri)+"?timeout_ms=10000", alice.tok, "", nil)
		}()
		time.Sleep(100 * time.Millisecond)
		// Only its creator may upload to it.
		_, err = bob.cli.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: []byte("bob's"), ContentType: "text/plain", MXC: uri})
		acctWantErr(t, err, 403, "M_FORBIDDEN")
		if _, err := alice.cli.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: []byte("later"), ContentType: "text/plain", FileName: "l.txt", MXC: uri}); err != nil {
			t.Fatalf("async upload: %v", err)
		}
		select {
		case r := <-done:
			if r.status != 200 || string(r.body) != "later" {
				t.Fatalf("waiting download: %d %q", r.status, r.body)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("waiting download was not woken by the upload")
		}
		_, err = alice.cli.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: []byte("again"), ContentType: "text/plain", MXC: uri})
		acctWantErr(t, err, 409, "M_CANNOT_OVERWRITE_MEDIA")
		_, err = alice.cli.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: []byte("x"), ContentType: "text/plain",
			MXC: id.ContentURI{Homeserver: "hearth.test", FileID: "NoSuchMediaIDxxxxxxxxxxx"}})
		acctWantErr(t, err, 404, "M_NOT_FOUND")

		// At most five pending uploads per user.
		for i := 0; i < 5; i++ {
			if _, err := alice.cli.CreateMXC(ctx); err != nil {
				t.Fatalf("create %d: %v", i, err)
			}
		}
		_, err = alice.cli.CreateMXC(ctx)
		acctWantErr(t, err, 429, "M_LIMIT_EXCEEDED")
	})
}

// previewSite is a test web server on 127.0.0.1 that counts its requests.
func previewSite(t *testing.T) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	img := testPNG(t, 40, 30)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch r.URL.Path {
		case "/page":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprint(w, `<!doctype html><html><head><title>Fallback</title>
<meta property="og:title" content="Hearth &amp; Home">
<meta property="og:description" content="A homeserver">
<meta property="og:image" content="/img.png"></head><body>hi</body></html>`)
		case "/plain":
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, `<html><head><title>Only a title</title><meta name="description" content="desc"></head></html>`)
		case "/img.png":
			w.Header().Set("Content-Type", "image/png")
			w.Write(img)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func TestMediaURLPreview(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		site, hits := previewSite(t)

		// Off by default: not served at all, like Synapse. (The three servers
		// here share the engine's database, so each signs up its own user.)
		off := servertest.Start(t, e)
		u := newRoomUser(t, off, "alice")
		_, err := u.cli.GetURLPreview(t.Context(), site.URL+"/page")
		acctWantErr(t, err, 404, "M_UNRECOGNIZED")

		// On, with the default blacklist: 127.0.0.1 is refused before any
		// connection is made, so the site sees no request.
		t.Run("refused", func(t *testing.T) {
			b := servertest.Start(t, e, func(c *config.Config) { c.URLPreviewEnabled = true })
			alice := newRoomUser(t, b, "bob")
			for _, target := range []string{site.URL + "/page", strings.Replace(site.URL, "127.0.0.1", "[::ffff:127.0.0.1]", 1) + "/page"} {
				_, err := alice.cli.GetURLPreview(t.Context(), target)
				acctWantErr(t, err, 502, "M_UNKNOWN")
			}
			if n := hits.Load(); n != 0 {
				t.Fatalf("the blacklisted site was contacted %d times", n)
			}
			r := mediaDo(t, b, "GET", "/_matrix/client/v1/media/preview_url?url="+esc("file:///etc/passwd"), alice.tok, "", nil)
			if r.status != 400 || r.errcode(t) != "M_INVALID_PARAM" {
				t.Fatalf("file URL: %d %s", r.status, r.body)
			}
			r = mediaDo(t, b, "GET", "/_matrix/client/v1/media/preview_url?url="+esc(site.URL), "", "", nil)
			if r.status != 401 {
				t.Fatalf("preview without a token: %d", r.status)
			}
		})

		// Loopback explicitly allowed for this test only: the happy path.
		t.Run("allowed", func(t *testing.T) {
			b := servertest.Start(t, e, func(c *config.Config) {
				c.URLPreviewEnabled = true
				c.URLPreviewIPRangeWhitelist = []string{"127.0.0.1/32"}
			})
			alice := newRoomUser(t, b, "carol")
			p, err := alice.cli.GetURLPreview(t.Context(), site.URL+"/page")
			if err != nil {
				t.Fatalf("preview: %v", err)
			}
			if p.Title != "Hearth & Home" || p.Description != "A homeserver" || p.ImageType != "image/png" ||
				p.ImageWidth != 40 || p.ImageHeight != 30 || !strings.HasPrefix(string(p.ImageURL), "mxc://hearth.test/") {
				t.Fatalf("preview: %+v", p)
			}
			img, err := id.ParseContentURI(string(p.ImageURL))
			if err != nil {
				t.Fatal(err)
			}
			if data, err := alice.cli.DownloadBytes(t.Context(), img); err != nil || !bytes.Equal(data, testPNG(t, 40, 30)) {
				t.Fatalf("preview image: %v", err)
			}
			p, err = alice.cli.GetURLPreview(t.Context(), site.URL+"/plain")
			if err != nil || p.Title != "Only a title" || p.Description != "desc" || p.ImageURL != "" {
				t.Fatalf("fallback preview: %+v %v", p, err)
			}
			_, err = alice.cli.GetURLPreview(t.Context(), site.URL+"/missing")
			acctWantErr(t, err, 502, "M_UNKNOWN")
		})
	})
}

// exifJPEG is a 300×600 JPEG, red in its top-left 100×100 corner and blue
// elsewhere, carrying an EXIF Orientation tag.
func exifJPEG(t *testing.T, orientation byte) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 300, 600))
	for y := 0; y < 600; y++ {
		for x := 0; x < 300; x++ {
			c := color.RGBA{0, 0, 255, 255}
			if x < 100 && y < 100 {
				c = color.RGBA{255, 0, 0, 255}
			}
			img.Set(x, y, c)
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	// APP1 "Exif": big-endian TIFF header, IFD0 with one SHORT entry 0x0112.
	tiff := []byte{'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, orientation, 0, 0, 0, 0, 0, 0}
	seg := append([]byte("Exif\x00\x00"), tiff...)
	app1 := append([]byte{0xFF, 0xE1, byte((len(seg) + 2) >> 8), byte(len(seg) + 2)}, seg...)
	out := append([]byte{}, buf.Bytes()[:2]...)
	out = append(out, app1...)
	return append(out, buf.Bytes()[2:]...)
}
