package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/net/html"
	"golang.org/x/net/html/charset"

	"hearth/config"
	"hearth/server/matrix"
	"hearth/server/netguard"
)

// URL previews (spec: GET /_matrix/client/v1/media/preview_url). Off unless
// url_preview_enabled: the server fetches whatever URL a user names, so the
// fetcher dials through a netguard.Dialer, which refuses every private,
// loopback, link-local, multicast and reserved address (plus
// url_preview_ip_range_blacklist) unless url_preview_ip_range_whitelist
// names it, checking the address actually dialled (see package netguard).
// Redirects go through the same dialer; proxies from the environment are
// not used (they would dial for us).

// previewer fetches pages and builds previews, caching them for an hour.
type previewer struct {
	dialer  *netguard.Dialer
	client  *http.Client
	maxSize int64

	mu    sync.Mutex
	cache map[string]previewEntry
}

type previewEntry struct {
	body    map[string]any
	expires time.Time
}

// size is the cache's entries and approximate bytes (the dashboard).
func (p *previewer) size() (int, int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var n int64
	for k, e := range p.cache {
		n += 112 + int64(len(k))
		for f, v := range e.body {
			n += 64 + int64(len(f))
			if s, ok := v.(string); ok {
				n += int64(len(s))
			}
		}
	}
	return len(p.cache), n
}

func newPreviewer(cfg *config.Config) *previewer {
	deny, allow := cfg.URLPreviewRanges()
	d := &netguard.Dialer{Policy: netguard.Policy{Deny: deny, Allow: allow, Name: "url_preview_ip_range_blacklist"}}
	return newPreviewerWith(d, int64(cfg.MaxSpiderSize))
}

func newPreviewerWith(d *netguard.Dialer, maxSize int64) *previewer {
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second,
		MaxIdleConns:          16,
		IdleConnTimeout:       30 * time.Second,
	}
	client := &http.Client{
		Transport: tr,
		Timeout:   20 * time.Second,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("url preview: too many redirects")
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return errors.New("url preview: redirect to a non-HTTP URL")
			}
			return nil
		},
	}
	return &previewer{dialer: d, client: client, maxSize: maxSize, cache: map[string]previewEntry{}}
}

// fetch GETs u, reading at most maxSize bytes; truncated reports whether
// the body was longer.
func (p *previewer) fetch(ctx context.Context, u string) (body []byte, contentType string, final *url.URL, truncated bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, "", nil, false, err
	}
	req.Header.Set("User-Agent", "Hearth URL preview (Matrix homeserver)")
	req.Header.Set("Accept", "text/html, image/*;q=0.9, */*;q=0.5")
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, "", nil, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", nil, false, fmt.Errorf("url preview: %s answered %d", resp.Request.URL.Host, resp.StatusCode)
	}
	body, err = io.ReadAll(io.LimitReader(resp.Body, p.maxSize+1))
	if err != nil {
		return nil, "", nil, false, err
	}
	if int64(len(body)) > p.maxSize {
		body, truncated = body[:p.maxSize], true
	}
	return body, resp.Header.Get("Content-Type"), resp.Request.URL, truncated, nil
}

// GET /_matrix/client/v1/media/preview_url
// GET /_matrix/media/v3/preview_url
func (s *Server) getPreviewURL(w http.ResponseWriter, r *http.Request) error {
	p := s.media.preview
	if p == nil {
		// Synapse does not serve the endpoint at all when previews are off.
		return matrix.Unrecognized("URL previews are disabled on this server")
	}
	raw := r.URL.Query().Get("url")
	if raw == "" {
		return matrix.MissingParam("missing url")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return matrix.InvalidParam("url must be an http or https URL")
	}
	u.Fragment = ""
	key := u.String()
	now := s.now()
	p.mu.Lock()
	if e, ok := p.cache[key]; ok && now.Before(e.expires) {
		p.mu.Unlock()
		return writeJSON(w, http.StatusOK, e.body)
	}
	p.mu.Unlock()

	body, err := s.buildPreview(r.Context(), deviceFrom(r.Context()).UserID, key)
	if err != nil {
		if r.Context().Err() != nil {
			return r.Context().Err()
		}
		logFrom(r.Context(), s.log).Info("url preview failed", "host", u.Hostname(), "err", err)
		return &matrix.Error{Code: "M_UNKNOWN", Msg: "could not fetch a preview of this URL", Status: http.StatusBadGateway, Err: err}
	}
	p.mu.Lock()
	if len(p.cache) > 1000 {
		p.cache = map[string]previewEntry{}
	}
	p.cache[key] = previewEntry{body: body, expires: now.Add(time.Hour)}
	p.mu.Unlock()
	return writeJSON(w, http.StatusOK, body)
}

// buildPreview fetches u and returns its OpenGraph description; an image
// URL (or a page's og:image) is stored as local media owned by userID.
func (s *Server) buildPreview(ctx context.Context, userID, u string) (map[string]any, error) {
	p := s.media.preview
	body, ctype, final, truncated, err := p.fetch(ctx, u)
	if err != nil {
		return nil, err
	}
	base, params, _ := mime.ParseMediaType(ctype)
	out := map[string]any{}
	switch {
	case strings.HasPrefix(base, "image/"):
		if truncated {
			return nil, errors.New("url preview: image larger than max_spider_size")
		}
		if err := s.previewImage(ctx, userID, body, base, final, out); err != nil {
			return nil, err
		}
	case base == "text/html" || base == "application/xhtml+xml":
		og := parseOpenGraph(body, params["charset"])
		for k, v := range og {
			if k != "og:image" {
				out[k] = v
			}
		}
		if img := og["og:image"]; img != "" {
			if iu, err := final.Parse(img); err == nil && (iu.Scheme == "http" || iu.Scheme == "https") {
				// A page's image is optional: a failure just leaves it out.
				ib, ict, _, trunc, err := p.fetch(ctx, iu.String())
				ibase, _, _ := mime.ParseMediaType(ict)
				if err == nil && !trunc && strings.HasPrefix(ibase, "image/") {
					_ = s.previewImage(ctx, userID, ib, ibase, iu, out)
				}
			}
		}
	}
	return out, nil
}

// previewImage stores an image fetched for a preview and describes it.
func (s *Server) previewImage(ctx context.Context, userID string, data []byte, ctype string, from *url.URL, out map[string]any) error {
	name := from.Path[strings.LastIndex(from.Path, "/")+1:]
	tmp, size, sum, err := s.media.receive(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return err
	}
	id, err := s.saveMedia(ctx, userID, ctype, name, tmp, size, sum)
	if err != nil {
		return err
	}
	out["og:image"] = s.mxc(id)
	out["og:image:type"] = ctype
	out["matrix:image:size"] = size
	if cfg, _, err := image.DecodeConfig(bytes.NewReader(data)); err == nil {
		out["og:image:width"], out["og:image:height"] = cfg.Width, cfg.Height
	}
	return nil
}

// parseOpenGraph reads og:* meta tags, falling back to <title> and the
// description meta tag.
func parseOpenGraph(body []byte, cs string) map[string]string {
	var rd io.Reader = bytes.NewReader(body)
	if cs != "" {
		if r, err := charset.NewReader(rd, "text/html; charset="+cs); err == nil {
			rd = r
		}
	}
	z := html.NewTokenizer(rd)
	og := map[string]string{}
	var title, desc string
	inTitle := false
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			if og["og:title"] == "" && title != "" {
				og["og:title"] = title
			}
			if og["og:description"] == "" && desc != "" {
				og["og:description"] = desc
			}
			for k, v := range og {
				og[k] = clip(strings.TrimSpace(v), 500)
			}
			return og
		case html.StartTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			switch string(name) {
			case "title":
				inTitle = tt == html.StartTagToken
			case "meta":
				var prop, content string
				for hasAttr {
					var k, v []byte
					k, v, hasAttr = z.TagAttr()
					switch string(k) {
					case "property", "name":
						if prop == "" || strings.HasPrefix(string(v), "og:") {
							prop = strings.ToLower(string(v))
						}
					case "content":
						content = string(v)
					}
				}
				switch {
				case strings.HasPrefix(prop, "og:") && len(og) < 50:
					if _, dup := og[prop]; !dup {
						og[prop] = content
					}
				case prop == "description":
					desc = content
				}
			}
		case html.TextToken:
			if inTitle && title == "" {
				title = string(z.Text())
			}
		case html.EndTagToken:
			if name, _ := z.TagName(); string(name) == "title" {
				inTitle = false
			}
		}
	}
}

// clip shortens s to at most n bytes on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
