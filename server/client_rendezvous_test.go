package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"hearth/config"
	"hearth/server"
	"hearth/server/oauth"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

const rendezvousURL = "/_matrix/client/unstable/org.matrix.msc4108/rendezvous"

// rendezvousDo sends one request; headers alternate name, value.
func rendezvousDo(t *testing.T, method, url, body string, headers ...string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" || method == http.MethodPost || method == http.MethodPut {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// wantRendezvousErr checks a Matrix error answer.
func wantRendezvousErr(t *testing.T, what string, resp *http.Response, body string, status int, errcode string) map[string]any {
	t.Helper()
	var e map[string]any
	_ = json.Unmarshal([]byte(body), &e)
	if resp.StatusCode != status || e["errcode"] != errcode {
		t.Fatalf("%s: %d %s, want %d %s", what, resp.StatusCode, body, status, errcode)
	}
	return e
}

// sessionHeaders checks what every answer about a session carries.
func sessionHeaders(t *testing.T, what string, resp *http.Response) string {
	t.Helper()
	etag := resp.Header.Get("ETag")
	if !strings.HasPrefix(etag, `"`) || len(etag) < 10 {
		t.Fatalf("%s: ETag %q", what, etag)
	}
	for _, h := range []string{"Expires", "Last-Modified"} {
		if _, err := http.ParseTime(resp.Header.Get(h)); err != nil {
			t.Fatalf("%s: %s %q: %v", what, h, resp.Header.Get(h), err)
		}
	}
	if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
		t.Fatalf("%s: Cache-Control %q", what, cc)
	}
	return etag
}

// TestRendezvous drives MSC4108's rendezvous over HTTP as the two devices
// of a QR-code login do: create, read, conditional reads and writes, a
// write that lost the race, bad input, delete; then the rate limit.
func TestRendezvous(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.StartWith(t, e, func(d *server.Deps) { d.OAuth = oauth.Hook(nil) },
			func(c *config.Config) { c.OAuth.Enabled = true })
		if !unstableFeatures(t, b)["org.matrix.msc4108"] {
			t.Fatal("/versions does not list org.matrix.msc4108")
		}

		resp, body := rendezvousDo(t, http.MethodPost, b.URL+rendezvousURL, "", "Content-Type", "text/plain")
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("create: %d %s", resp.StatusCode, body)
		}
		created := sessionHeaders(t, "create", resp)
		var c struct{ URL string }
		if err := json.Unmarshal([]byte(body), &c); err != nil || !strings.HasPrefix(c.URL, b.URL+rendezvousURL+"/") {
			t.Fatalf("create: url %q (%v), want one under %s", c.URL, err, b.URL+rendezvousURL)
		}
		exp, _ := http.ParseTime(resp.Header.Get("Expires"))
		if d := time.Until(exp); d < time.Minute || d > 5*time.Minute {
			t.Fatalf("session expires in %v", d)
		}

		// The other device reads the (empty) session, then waits for a change.
		resp, body = rendezvousDo(t, http.MethodGet, c.URL, "")
		if resp.StatusCode != http.StatusOK || body != "" || sessionHeaders(t, "read", resp) != created {
			t.Fatalf("read: %d %q ETag %q, want 200, empty, %q", resp.StatusCode, body, resp.Header.Get("ETag"), created)
		}
		resp, _ = rendezvousDo(t, http.MethodGet, c.URL, "", "If-None-Match", created)
		if resp.StatusCode != http.StatusNotModified || sessionHeaders(t, "unchanged read", resp) != created {
			t.Fatalf("unchanged read: %d, want 304", resp.StatusCode)
		}

		resp, body = rendezvousDo(t, http.MethodPut, c.URL, "hello from the new device", "Content-Type", "text/plain", "If-Match", created)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("write: %d %s", resp.StatusCode, body)
		}
		written := sessionHeaders(t, "write", resp)
		if written == created {
			t.Fatal("a write kept the ETag")
		}
		resp, body = rendezvousDo(t, http.MethodGet, c.URL, "", "If-None-Match", created)
		if resp.StatusCode != http.StatusOK || body != "hello from the new device" || resp.Header.Get("ETag") != written ||
			!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Fatalf("read after write: %d %q %q %q", resp.StatusCode, body, resp.Header.Get("ETag"), resp.Header.Get("Content-Type"))
		}

		// A write with the old ETag lost the race: 412, and nothing changes.
		resp, body = rendezvousDo(t, http.MethodPut, c.URL, "late", "Content-Type", "text/plain", "If-Match", created)
		if e := wantRendezvousErr(t, "stale write", resp, body, http.StatusPreconditionFailed, "M_UNKNOWN"); e["org.matrix.msc4108.errcode"] != "M_CONCURRENT_WRITE" {
			t.Fatalf("stale write: %s, want org.matrix.msc4108.errcode M_CONCURRENT_WRITE", body)
		}
		if resp.Header.Get("ETag") != written {
			t.Fatalf("stale write answered ETag %q, want the current %q", resp.Header.Get("ETag"), written)
		}
		resp, body = rendezvousDo(t, http.MethodPut, c.URL, "no etag", "Content-Type", "text/plain")
		wantRendezvousErr(t, "write without If-Match", resp, body, http.StatusBadRequest, "M_MISSING_PARAM")
		resp, body = rendezvousDo(t, http.MethodPut, c.URL, `{"a":1}`, "Content-Type", "application/json", "If-Match", written)
		wantRendezvousErr(t, "JSON write", resp, body, http.StatusBadRequest, "M_INVALID_PARAM")
		resp, body = rendezvousDo(t, http.MethodPut, c.URL, strings.Repeat("x", 4097), "Content-Type", "text/plain", "If-Match", written)
		wantRendezvousErr(t, "oversized write", resp, body, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
		resp, body = rendezvousDo(t, http.MethodPost, b.URL+rendezvousURL, strings.Repeat("x", 4097), "Content-Type", "text/plain")
		wantRendezvousErr(t, "oversized create", resp, body, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
		resp, body = rendezvousDo(t, http.MethodGet, c.URL, "")
		if body != "hello from the new device" || resp.Header.Get("ETag") != written {
			t.Fatalf("a refused write changed the session: %q %q", body, resp.Header.Get("ETag"))
		}

		resp, body = rendezvousDo(t, http.MethodDelete, c.URL, "")
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("delete: %d %s", resp.StatusCode, body)
		}
		resp, body = rendezvousDo(t, http.MethodGet, c.URL, "")
		wantRendezvousErr(t, "read after delete", resp, body, http.StatusNotFound, "M_NOT_FOUND")
		resp, body = rendezvousDo(t, http.MethodPut, c.URL, "x", "Content-Type", "text/plain", "If-Match", written)
		wantRendezvousErr(t, "write after delete", resp, body, http.StatusNotFound, "M_NOT_FOUND")
		resp, body = rendezvousDo(t, http.MethodDelete, c.URL, "")
		wantRendezvousErr(t, "second delete", resp, body, http.StatusNotFound, "M_NOT_FOUND")
		resp, body = rendezvousDo(t, http.MethodGet, b.URL+rendezvousURL+"/nosuchsession", "")
		wantRendezvousErr(t, "unknown session", resp, body, http.StatusNotFound, "M_NOT_FOUND")

		// Creation is rate-limited per address (a burst of 10; one create
		// and one oversized attempt above count).
		limited := false
		for range 10 {
			resp, body = rendezvousDo(t, http.MethodPost, b.URL+rendezvousURL, "", "Content-Type", "text/plain")
			if resp.StatusCode == http.StatusTooManyRequests {
				wantRendezvousErr(t, "flood", resp, body, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
				limited = true
				break
			}
		}
		if !limited {
			t.Fatal("12 sessions created at once from one address, want a 429")
		}
	})
}

// TestRendezvousOAuthOff: without the OAuth 2.0 API (whose device grant
// a QR-code login carries) the rendezvous is neither served nor
// advertised.
func TestRendezvousOAuthOff(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		if unstableFeatures(t, b)["org.matrix.msc4108"] {
			t.Fatal("/versions lists org.matrix.msc4108 with OAuth off")
		}
		resp, body := rendezvousDo(t, http.MethodPost, b.URL+rendezvousURL, "", "Content-Type", "text/plain")
		wantRendezvousErr(t, "create", resp, body, http.StatusNotFound, "M_UNRECOGNIZED")
	})
}

func unstableFeatures(t *testing.T, b *servertest.Bundle) map[string]bool {
	t.Helper()
	resp, body := rendezvousDo(t, http.MethodGet, b.URL+"/_matrix/client/versions", "")
	var v struct {
		UnstableFeatures map[string]bool `json:"unstable_features"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &v) != nil {
		t.Fatalf("/versions: %d %s", resp.StatusCode, body)
	}
	return v.UnstableFeatures
}
