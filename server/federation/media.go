package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"time"
)

// Media downloads from other servers' content repositories (Server-Server
// API, "Content Repository"). The authenticated endpoint,
//
//	GET /_matrix/federation/v1/media/download/{mediaId}
//
// answers multipart/mixed with exactly two parts: a JSON object of
// metadata (empty so far), then either the content, with its
// Content-Type and Content-Disposition, or a Location header naming a
// URL to fetch the content from. A server that predates it answers 404
// M_UNRECOGNIZED; only then is the legacy, unauthenticated
//
//	GET /_matrix/media/v3/download/{serverName}/{mediaId}
//
// asked instead (as Synapse does), through the same transport.

// MediaInfo describes downloaded content as its origin described it.
type MediaInfo struct {
	// ContentType is the Content-Type the content came with ("" when
	// none); the caller validates it.
	ContentType string
	// Filename is the file name of its Content-Disposition ("" when none).
	Filename string
	// Size is the number of bytes written.
	Size int64
	// Legacy is set when the content came from the legacy endpoint.
	Legacy bool
}

// ErrMediaTooLarge is the refusal of content larger than the caller's
// limit. Part of the content may have been written by then.
var ErrMediaTooLarge = errors.New("federation: media is larger than the limit")

// maxMediaMetadata bounds the JSON metadata part.
const maxMediaMetadata = 64 << 10

// DownloadMedia fetches origin's media mediaID and writes its content to
// w, at most limit bytes (more is ErrMediaTooLarge). wait is the
// timeout_ms the origin may wait for content that is not uploaded yet.
// Error answers are *RemoteError; a malformed answer is an error naming
// what was wrong.
func (c *Client) DownloadMedia(ctx context.Context, origin, mediaID string, wait time.Duration, limit int64, w io.Writer) (*MediaInfo, error) {
	q := url.Values{"timeout_ms": {strconv.FormatInt(wait.Milliseconds(), 10)}}
	resp, err := c.Stream(ctx, origin, "/_matrix/federation/v1/media/download/"+url.PathEscape(mediaID), q, false)
	var re *RemoteError
	if errors.As(err, &re) && re.Status == http.StatusNotFound && re.Code == "M_UNRECOGNIZED" {
		return c.downloadLegacy(ctx, origin, mediaID, wait, limit, w)
	}
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return c.readMediaParts(ctx, origin, resp, limit, w)
}

// readMediaParts reads a multipart/mixed media answer.
func (c *Client) readMediaParts(ctx context.Context, origin string, resp *http.Response, limit int64, w io.Writer) (*MediaInfo, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("federation: media answer of %s: %s", origin, fmt.Sprintf(format, args...))
	}
	ctype := resp.Header.Get("Content-Type")
	mt, params, err := mime.ParseMediaType(ctype)
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		return nil, bad("Content-Type is %q, not multipart/mixed with a boundary", ctype)
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	// Raw parts: HTTP has no Content-Transfer-Encoding, and the content
	// must arrive byte for byte.
	meta, err := mr.NextRawPart()
	if err != nil {
		return nil, bad("no metadata part: %v", err)
	}
	if t, _, err := mime.ParseMediaType(meta.Header.Get("Content-Type")); err != nil || t != "application/json" {
		return nil, bad("the first part is %q, not application/json", meta.Header.Get("Content-Type"))
	}
	raw, err := io.ReadAll(io.LimitReader(meta, maxMediaMetadata+1))
	if err != nil {
		return nil, bad("reading the metadata: %v", err)
	}
	var md map[string]json.RawMessage
	if len(raw) > maxMediaMetadata || json.Unmarshal(raw, &md) != nil || md == nil {
		return nil, bad("the metadata is not a JSON object")
	}
	part, err := mr.NextRawPart()
	if err != nil {
		return nil, bad("no content part: %v", err)
	}
	if loc := part.Header.Get("Location"); loc != "" {
		return c.downloadLocation(ctx, origin, loc, part.Header, limit, w)
	}
	info := &MediaInfo{ContentType: part.Header.Get("Content-Type"), Filename: dispositionFilename(part.Header.Get("Content-Disposition"))}
	// A part ends at the next boundary; an answer cut short before it is
	// io.ErrUnexpectedEOF here, never content taken for whole.
	if info.Size, err = copyMedia(w, part, limit); err != nil {
		return nil, wrapMediaErr(origin, err)
	}
	return info, nil
}

// downloadLegacy asks the legacy endpoint, unauthenticated, and tells the
// origin not to fetch from elsewhere (allow_remote=false): a server asked
// for media it does not hold must not pass the request on.
func (c *Client) downloadLegacy(ctx context.Context, origin, mediaID string, wait time.Duration, limit int64, w io.Writer) (*MediaInfo, error) {
	q := url.Values{"timeout_ms": {strconv.FormatInt(wait.Milliseconds(), 10)}, "allow_remote": {"false"}}
	path := "/_matrix/media/v3/download/" + url.PathEscape(origin) + "/" + url.PathEscape(mediaID)
	resp, err := c.Stream(ctx, origin, path, q, true)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.ContentLength > limit {
		return nil, ErrMediaTooLarge
	}
	info := &MediaInfo{ContentType: resp.Header.Get("Content-Type"),
		Filename: dispositionFilename(resp.Header.Get("Content-Disposition")), Legacy: true}
	if info.Size, err = copyMedia(w, resp.Body, limit); err != nil {
		return nil, wrapMediaErr(origin, err)
	}
	return info, nil
}

// downloadLocation fetches the URL a content part named instead of the
// content, with the Web client (the same address policy as federation).
// Its answer's Content-Type and Content-Disposition describe the media;
// the part's are used when it has none.
func (c *Client) downloadLocation(ctx context.Context, origin, loc string, h textproto.MIMEHeader, limit int64, w io.Writer) (*MediaInfo, error) {
	u, err := url.Parse(loc)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("federation: media answer of %s redirects to %q, not an http(s) URL", origin, loc)
	}
	if c.Web == nil {
		return nil, fmt.Errorf("federation: media answer of %s redirects to %s, and no client may follow it", origin, u.Redacted())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("federation: media redirect of %s: %w", origin, err)
	}
	resp, err := c.Web.Do(req)
	if err != nil {
		return nil, fmt.Errorf("federation: media redirect of %s: %w", origin, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return nil, remoteError(origin, resp.StatusCode, raw)
	}
	if resp.ContentLength > limit {
		return nil, ErrMediaTooLarge
	}
	info := &MediaInfo{ContentType: resp.Header.Get("Content-Type"), Filename: dispositionFilename(resp.Header.Get("Content-Disposition"))}
	if info.ContentType == "" {
		info.ContentType = h.Get("Content-Type")
	}
	if info.Filename == "" {
		info.Filename = dispositionFilename(h.Get("Content-Disposition"))
	}
	if info.Size, err = copyMedia(w, resp.Body, limit); err != nil {
		return nil, wrapMediaErr(origin, err)
	}
	return info, nil
}

// copyMedia copies at most limit bytes; ErrMediaTooLarge when there are more.
func copyMedia(w io.Writer, r io.Reader, limit int64) (int64, error) {
	n, err := io.Copy(w, io.LimitReader(r, limit+1))
	if err != nil {
		return n, err
	}
	if n > limit {
		return n, ErrMediaTooLarge
	}
	return n, nil
}

func wrapMediaErr(origin string, err error) error {
	if errors.Is(err, ErrMediaTooLarge) {
		return err
	}
	return fmt.Errorf("federation: reading media from %s: %w", origin, err)
}

// dispositionFilename is the file name of a Content-Disposition header
// (filename*, RFC 5987, decoded), or "".
func dispositionFilename(v string) string {
	if v == "" {
		return ""
	}
	_, params, err := mime.ParseMediaType(v)
	if err != nil {
		return ""
	}
	return params["filename"]
}
