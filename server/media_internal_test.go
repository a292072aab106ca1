package server

import (
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"hearth/config"
	"hearth/server/netguard"
)

// These tests check the URL-preview fetcher's address policy with an
// injected resolver and dialer. No test here connects anywhere except to
// 127.0.0.1 servers it started itself: the fake dialer records the
// addresses it is asked for and refuses them, and "public" addresses are
// either refused by the recorder or redirected to a local test server.

// fakeNet is an injected resolver plus a dial recorder.
type fakeNet struct {
	mu      sync.Mutex
	answers map[string][]string // host → addresses
	dials   []string
	lookups atomic.Int64
	// forward, when set, maps a dialled address to a local one to really
	// connect to (standing in for a public server).
	forward map[string]string
}

func (f *fakeNet) lookup(_ context.Context, host string) ([]netip.Addr, error) {
	f.lookups.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	ans, ok := f.answers[host]
	if !ok {
		return nil, fmt.Errorf("no such host %s", host)
	}
	var out []netip.Addr
	for _, a := range ans {
		out = append(out, netip.MustParseAddr(a))
	}
	return out, nil
}

var errFakeRefused = errors.New("fake dialer: not connecting")

func (f *fakeNet) dial(ctx context.Context, network, address string) (net.Conn, error) {
	f.mu.Lock()
	f.dials = append(f.dials, address)
	to, ok := f.forward[address]
	f.mu.Unlock()
	if !ok {
		return nil, errFakeRefused
	}
	var d net.Dialer
	return d.DialContext(ctx, network, to)
}

func (f *fakeNet) dialled() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.dials)
}

// guardedDialer is the previewer's dialer with url_preview settings
// allowing allow, resolving and dialling through f.
func guardedDialer(t *testing.T, allow []string, f *fakeNet) *netguard.Dialer {
	t.Helper()
	c := &config.Config{URLPreviewIPRangeWhitelist: allow}
	deny, al := c.URLPreviewRanges()
	return &netguard.Dialer{Policy: netguard.Policy{Deny: deny, Allow: al, Name: "url_preview_ip_range_blacklist"},
		Lookup: f.lookup, Dial: f.dial}
}

// The address policy itself is tested in package netguard; these tests
// check that previews, their redirects and their re-resolutions go
// through it.

// TestPreviewRedirectAndRebinding: a page that redirects to an internal
// host, and a host whose DNS answer turns private on the second lookup,
// are both refused when the connection is made.
func TestPreviewRedirectAndRebinding(t *testing.T) {
	var secretHits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close") // every request dials (and resolves) again
		switch r.URL.Path {
		case "/go":
			http.Redirect(w, r, "http://internal.example/secret", http.StatusFound)
		case "/again":
			http.Redirect(w, r, "/secret", http.StatusFound)
		case "/page":
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, `<meta property="og:title" content="ok">`)
		case "/secret":
			secretHits.Add(1)
			fmt.Fprint(w, "secret")
		}
	}))
	defer srv.Close()
	local := srv.Listener.Addr().String()

	// "public.example" stands for a public server: its address is
	// forwarded to the local test server.
	f := &fakeNet{
		answers: map[string][]string{"public.example": {"93.184.216.34"}, "internal.example": {"10.0.0.1"}},
		forward: map[string]string{"93.184.216.34:80": local},
	}
	p := newPreviewerWith(guardedDialer(t, nil, f), 1<<20)
	body, _, _, _, err := p.fetch(t.Context(), "http://public.example/page")
	if err != nil || string(body) != `<meta property="og:title" content="ok">` {
		t.Fatalf("public page: %q %v", body, err)
	}
	if _, _, _, _, err := p.fetch(t.Context(), "http://public.example/go"); !errors.Is(err, netguard.ErrRefused) {
		t.Fatalf("redirect to an internal host: %v", err)
	}

	// DNS rebinding: the first answer is public, the next one private.
	var n atomic.Int64
	f.mu.Lock()
	f.answers["rebind.example"] = []string{"93.184.216.34"}
	f.mu.Unlock()
	lookup := f.lookup
	p.dialer.Lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
		if host == "rebind.example" && n.Add(1) > 1 {
			return []netip.Addr{netip.MustParseAddr("10.0.0.1")}, nil
		}
		return lookup(ctx, host)
	}
	if _, _, _, _, err := p.fetch(t.Context(), "http://rebind.example/again"); !errors.Is(err, netguard.ErrRefused) {
		t.Fatalf("rebinding: %v", err)
	}
	if n.Load() < 2 {
		t.Fatalf("rebinding test resolved %d times; it must resolve on every connection", n.Load())
	}
	for _, a := range f.dialled() {
		if a != "93.184.216.34:80" {
			t.Fatalf("dialled %s", a)
		}
	}
	if secretHits.Load() != 0 {
		t.Fatal("the secret was fetched")
	}

	// Size bound: a body over the limit is cut at the limit.
	small := newPreviewerWith(guardedDialer(t, nil, f), 10)
	body, _, _, truncated, err := small.fetch(t.Context(), "http://public.example/page")
	if err != nil || len(body) != 10 || !truncated {
		t.Fatalf("bounded fetch: %q %v %v", body, truncated, err)
	}
}

func TestParseOpenGraph(t *testing.T) {
	for _, tc := range []struct {
		name, html, cs string
		want           map[string]string
	}{
		{"og tags", `<html><head><meta property="og:title" content="T"><meta property="og:description" content="D">
			<meta property="og:image" content="https://x/i.png"><title>ignored</title></head></html>`, "",
			map[string]string{"og:title": "T", "og:description": "D", "og:image": "https://x/i.png"}},
		{"fallbacks", `<title> Plain &amp; simple </title><meta name="description" content="about">`, "",
			map[string]string{"og:title": "Plain & simple", "og:description": "about"}},
		{"first wins", `<meta property="og:title" content="one"><meta property="og:title" content="two">`, "",
			map[string]string{"og:title": "one"}},
		{"latin-1", "<title>caf\xe9</title>", "iso-8859-1", map[string]string{"og:title": "café"}},
		{"nothing", `<p>hello</p>`, "", map[string]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := parseOpenGraph([]byte(tc.html), tc.cs)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	long := make([]byte, 2000)
	for i := range long {
		long[i] = 'a'
	}
	if got := parseOpenGraph([]byte(`<meta property="og:description" content="`+string(long)+`">`), ""); len(got["og:description"]) > 510 {
		t.Fatalf("description not clipped: %d bytes", len(got["og:description"]))
	}
}

func TestPickThumbSize(t *testing.T) {
	for _, tc := range []struct {
		w, h   int
		method string
		want   thumbSize
	}{
		{1, 1, "crop", thumbSize{32, 32, "crop"}},
		{32, 32, "crop", thumbSize{32, 32, "crop"}},
		{33, 20, "crop", thumbSize{96, 96, "crop"}},
		{500, 500, "crop", thumbSize{96, 96, "crop"}},
		{100, 100, "scale", thumbSize{320, 240, "scale"}},
		{321, 100, "scale", thumbSize{640, 480, "scale"}},
		{2000, 2000, "scale", thumbSize{800, 600, "scale"}},
	} {
		if got := pickThumbSize(tc.w, tc.h, tc.method); got != tc.want {
			t.Errorf("pickThumbSize(%d, %d, %s) = %v, want %v", tc.w, tc.h, tc.method, got, tc.want)
		}
	}
}

func TestContentDisposition(t *testing.T) {
	for _, tc := range []struct {
		inline bool
		name   string
		want   string
	}{
		{true, "", "inline"},
		{false, "", "attachment"},
		{true, "cat.png", "inline; filename=cat.png"},
		{false, "two words.pdf", `attachment; filename="two words.pdf"`},
		{false, "naïve.txt", `attachment; filename*=utf-8''na%C3%AFve.txt`},
		{false, "a\r\nSet-Cookie: x=1", `attachment; filename*=utf-8''a%0D%0ASet-Cookie%3A%20x%3D1`},
	} {
		if got := contentDisposition(tc.inline, tc.name); got != tc.want {
			t.Errorf("contentDisposition(%v, %q) = %q, want %q", tc.inline, tc.name, got, tc.want)
		}
	}
}

func TestOrient(t *testing.T) {
	// A 3×2 image whose top-left pixel is marked: where it lands shows the
	// transform (EXIF 2.3, Orientation).
	src := image.NewRGBA(image.Rect(0, 0, 3, 2))
	mark := color.RGBA{255, 0, 0, 255}
	src.Set(0, 0, mark)
	for o, want := range map[int]struct{ w, h, x, y int }{
		1: {3, 2, 0, 0}, 2: {3, 2, 2, 0}, 3: {3, 2, 2, 1}, 4: {3, 2, 0, 1},
		5: {2, 3, 0, 0}, 6: {2, 3, 1, 0}, 7: {2, 3, 1, 2}, 8: {2, 3, 0, 2},
	} {
		got := orient(src, o)
		b := got.Bounds()
		if b.Dx() != want.w || b.Dy() != want.h || color.RGBAModel.Convert(got.At(want.x, want.y)) != mark {
			t.Errorf("orientation %d: %dx%d, mark not at (%d,%d)", o, b.Dx(), b.Dy(), want.x, want.y)
		}
	}
	// Little-endian EXIF, and junk that must not panic.
	le := []byte{0xFF, 0xD8, 0xFF, 0xE1, 0, 34, 'E', 'x', 'i', 'f', 0, 0,
		'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0}
	if o := jpegOrientation(le); o != 8 {
		t.Fatalf("little-endian orientation = %d", o)
	}
	for _, junk := range [][]byte{nil, {0xFF, 0xD8}, {0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF}, le[:20], append(le[:12:12], 'X', 'X', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)} {
		if o := jpegOrientation(junk); o != 1 {
			t.Errorf("jpegOrientation(%x) = %d", junk, o)
		}
	}
}
