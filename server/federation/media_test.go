package federation_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"hearth/server/federation"
)

// The media download client against origins written by hand: answers in
// the spec's multipart/mixed shape (as in its examples, not produced by
// Go's multipart writer), a Location part, the legacy endpoint of a server
// that predates the new one, and answers that must be refused.

const boundary = "gc0p4Jq0M2Yt08jU534c0p"

// multipartAnswer writes a media answer whose second part has the given
// header lines and body.
func multipartAnswer(w http.ResponseWriter, partHeader, body string) {
	w.Header().Set("Content-Type", "multipart/mixed; boundary="+boundary)
	fmt.Fprintf(w, "--%s\r\nContent-Type: application/json\r\n\r\n{}\r\n--%s\r\n%s\r\n\r\n%s\r\n--%s--\r\n",
		boundary, boundary, partHeader, body, boundary)
}

// mediaOrigin records what it was asked.
type mediaOrigin struct {
	mu       sync.Mutex
	requests []*http.Request
}

func (o *mediaOrigin) seen() []*http.Request {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]*http.Request(nil), o.requests...)
}

func TestDownloadMedia(t *testing.T) {
	n := newNetwork()
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ab/cd.txt" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("from the CDN"))
	}))
	t.Cleanup(cdn.Close)

	newOrigin := func(name string, h http.HandlerFunc) *mediaOrigin {
		o := &mediaOrigin{}
		n.add(t, name, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			o.mu.Lock()
			o.requests = append(o.requests, r)
			o.mu.Unlock()
			h(w, r)
		}))
		return o
	}
	matrixError := func(w http.ResponseWriter, status int, code string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"errcode": %q, "error": "x"}`, code)
	}
	current := newOrigin("media.test", func(w http.ResponseWriter, r *http.Request) {
		id, ok := strings.CutPrefix(r.URL.Path, "/_matrix/federation/v1/media/download/")
		if !ok {
			matrixError(w, 404, "M_UNRECOGNIZED")
			return
		}
		switch id {
		case "plain":
			multipartAnswer(w, "Content-Type: text/plain\r\nContent-Disposition: inline; filename*=UTF-8''h%C3%A9llo.txt", "hello\r\nworld")
		case "big":
			multipartAnswer(w, "Content-Type: application/octet-stream", strings.Repeat("x", 101))
		case "exact":
			multipartAnswer(w, "Content-Type: application/octet-stream", strings.Repeat("x", 100))
		case "cut":
			w.Header().Set("Content-Type", "multipart/mixed; boundary="+boundary)
			fmt.Fprintf(w, "--%s\r\nContent-Type: application/json\r\n\r\n{}\r\n--%s\r\nContent-Type: text/plain\r\n\r\nhalf of it", boundary, boundary)
		case "located":
			multipartAnswer(w, "Location: "+cdn.URL+"/ab/cd.txt\r\nContent-Disposition: attachment; filename=cd.txt", "")
		case "notjson":
			w.Header().Set("Content-Type", "multipart/mixed; boundary="+boundary)
			fmt.Fprintf(w, "--%s\r\nContent-Type: text/plain\r\n\r\n{}\r\n--%s\r\nContent-Type: text/plain\r\n\r\nx\r\n--%s--\r\n", boundary, boundary, boundary)
		case "notobject":
			w.Header().Set("Content-Type", "multipart/mixed; boundary="+boundary)
			fmt.Fprintf(w, "--%s\r\nContent-Type: application/json\r\n\r\n[]\r\n--%s\r\nContent-Type: text/plain\r\n\r\nx\r\n--%s--\r\n", boundary, boundary, boundary)
		case "single":
			w.Header().Set("Content-Type", "image/png")
			w.Write([]byte("not multipart"))
		default:
			matrixError(w, 404, "M_NOT_FOUND")
		}
	})
	legacy := newOrigin("old.test", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_matrix/media/v3/download/old.test/legacyMedia" {
			matrixError(w, 404, "M_UNRECOGNIZED")
			return
		}
		w.Header().Set("Content-Type", "image/gif")
		w.Header().Set("Content-Disposition", `inline; filename="old.gif"`)
		w.Write([]byte("GIF89a..."))
	})

	c := &federation.Client{HTTP: n.client(), Web: &http.Client{}, Sign: func(req *http.Request, dest string, content []byte) error {
		req.Header.Set("Authorization", `X-Matrix origin="hearth.test",key="ed25519:1",sig="test"`)
		return nil
	}}
	get := func(origin, id string, limit int64) (*federation.MediaInfo, string, error) {
		var buf bytes.Buffer
		info, err := c.DownloadMedia(t.Context(), origin, id, 5*time.Second, limit, &buf)
		return info, buf.String(), err
	}

	info, body, err := get("media.test", "plain", 100)
	if err != nil || body != "hello\r\nworld" || info.ContentType != "text/plain" || info.Filename != "héllo.txt" || info.Size != 12 || info.Legacy {
		t.Fatalf("plain: %+v %q %v", info, body, err)
	}
	r := current.seen()[0]
	if r.Header.Get("Authorization") == "" || r.URL.Query().Get("timeout_ms") != "5000" {
		t.Fatalf("the download request: %v %v", r.Header, r.URL)
	}
	if _, body, err = get("media.test", "exact", 100); err != nil || len(body) != 100 {
		t.Fatalf("content of exactly the limit: %d bytes, %v", len(body), err)
	}
	if _, _, err = get("media.test", "big", 100); !errors.Is(err, federation.ErrMediaTooLarge) {
		t.Fatalf("content over the limit: %v", err)
	}
	if info, body, err = get("media.test", "located", 100); err != nil || body != "from the CDN" || info.ContentType != "text/plain" || info.Filename != "cd.txt" {
		t.Fatalf("Location part: %+v %q %v", info, body, err)
	}
	if _, _, err = get("media.test", "located", 5); !errors.Is(err, federation.ErrMediaTooLarge) {
		t.Fatalf("Location over the limit: %v", err)
	}
	for _, id := range []string{"cut", "notjson", "notobject", "single"} {
		if _, _, err = get("media.test", id, 100); err == nil {
			t.Errorf("%s: accepted", id)
		}
	}
	// Unknown media is the origin's 404, and no reason to ask the legacy
	// endpoint.
	before := len(current.seen())
	_, _, err = get("media.test", "unknownMedia", 100)
	var re *federation.RemoteError
	if !errors.As(err, &re) || re.Status != 404 || re.Code != "M_NOT_FOUND" || len(current.seen()) != before+1 {
		t.Fatalf("unknown media: %v, %d requests", err, len(current.seen())-before)
	}

	// A server without the new endpoint: the legacy one, unauthenticated,
	// told not to fetch from elsewhere.
	info, body, err = get("old.test", "legacyMedia", 100)
	if err != nil || body != "GIF89a..." || info.ContentType != "image/gif" || info.Filename != "old.gif" || !info.Legacy {
		t.Fatalf("legacy: %+v %q %v", info, body, err)
	}
	reqs := legacy.seen()
	if len(reqs) != 2 || reqs[1].Header.Get("Authorization") != "" || reqs[1].URL.Query().Get("allow_remote") != "false" {
		t.Fatalf("legacy requests: %d, second %v", len(reqs), reqs[len(reqs)-1].URL)
	}
	if _, _, err = get("old.test", "legacyMedia", 5); !errors.Is(err, federation.ErrMediaTooLarge) {
		t.Fatalf("legacy over the limit: %v", err)
	}
	if _, _, err = get("old.test", "otherMedia", 100); !errors.As(err, &re) || re.Status != 404 {
		t.Fatalf("legacy unknown: %v", err)
	}
}
