package server_test

import (
	"strings"
	"testing"

	"hearth/server"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// TestMediaThumbnailBombs: a decompression bomb of each format uploads
// fine (it is a small file) but its thumbnail is 413 M_TOO_LARGE, decided
// from the header; the server then still thumbnails ordinary images.
func TestMediaThumbnailBombs(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice := newRoomUser(t, b, "alice")
		for name, data := range server.ThumbnailBombs(t) {
			typ, _, _ := strings.Cut(name, " ")
			uri := upload(t, alice.cli, data, typ, "bomb")
			r := mediaDo(t, b, "GET", "/_matrix/client/v1/media/thumbnail/"+mxcPath(uri)+"?width=96&height=96&method=crop", alice.tok, "", nil)
			if r.status != 413 || r.errcode(t) != "M_TOO_LARGE" {
				t.Fatalf("%s bomb: got %d %s", name, r.status, r.body)
			}
			// The original is still served as uploaded.
			if got := mediaDo(t, b, "GET", "/_matrix/client/v1/media/download/"+mxcPath(uri), alice.tok, "", nil); got.status != 200 || len(got.body) != len(data) {
				t.Fatalf("%s bomb download: %d, %d bytes", name, got.status, len(got.body))
			}
		}
		for typ, data := range server.SmallImages(t) {
			uri := upload(t, alice.cli, data, typ, "small")
			r := mediaDo(t, b, "GET", "/_matrix/client/v1/media/thumbnail/"+mxcPath(uri)+"?width=32&height=32&method=crop", alice.tok, "", nil)
			if r.status != 200 {
				t.Fatalf("%s: thumbnail %d %s", typ, r.status, r.body)
			}
		}
	})
}
