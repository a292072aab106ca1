package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"hearth/server/matrix"
	"hearth/server/secret"
	"hearth/server/storage"
)

// The content repository (spec v1.19, Client-Server API "Content
// repository"). Files live under media_store_path named by media ID:
//
//	local_content/ab/cd/efgh...        the upload
//	local_thumbnails/ab/cd/efgh.../    its cached thumbnails (media_thumbnail.go)
//	tmp/                               uploads being received
//
// An upload is written to tmp/, fsynced, renamed into place and its
// directory fsynced before its row is committed and the client is answered,
// so an acknowledged upload survives a crash; a crash in between leaves at
// worst an orphaned file, never a row without its file.
//
// Other servers' media is fetched over federation into the remote media
// cache (media_remote.go) and served from there like local media; this
// server's media is served to other servers by federation_media.go.

// mediaRepo is the per-process state of the content repository.
type mediaRepo struct {
	root string
	// waiters are downloads of a /create'd media ID waiting for its upload.
	mu      sync.Mutex
	waiters map[string]chan struct{}
	touched map[string]time.Time
	// thumbSem bounds concurrent thumbnail generation (CPU and memory).
	thumbSem chan struct{}
	preview  *previewer // nil unless url_preview_enabled
	// remote is the state of fetches of other servers' media (media_remote.go).
	remote remoteFetches
}

func newMediaRepo(s *Server) *mediaRepo {
	m := &mediaRepo{root: s.cfg.MediaStorePath, waiters: map[string]chan struct{}{}, touched: map[string]time.Time{},
		thumbSem: make(chan struct{}, 2), remote: newRemoteFetches()}
	if s.cfg.URLPreviewEnabled {
		m.preview = newPreviewer(s.cfg)
		s.store.Caches().RegisterBuffer("url_previews", "URL → preview, kept an hour (at most 1,000)", m.preview.size)
	}
	// Uploads cut short by a crash left their temporary files behind; one
	// untouched for an hour is not being written by anyone.
	if old, err := filepath.Glob(filepath.Join(m.root, "tmp", "upload-*")); err == nil {
		for _, f := range old {
			if fi, err := os.Stat(f); err == nil && time.Since(fi.ModTime()) > time.Hour {
				os.Remove(f)
			}
		}
	}
	return m
}

// mediaIDRe is what a media ID may look like (spec: "Matrix Content (mxc://)
// URIs": A-Z, a-z, 0-9, _ and -). Anything else is refused before it gets
// near a file path.
var mediaIDRe = regexp.MustCompile(`^[A-Za-z0-9_-]{5,255}$`)

// contentPath is where a media ID's file lives.
func (m *mediaRepo) contentPath(id string) string {
	return filepath.Join(m.root, "local_content", id[0:2], id[2:4], id[4:])
}

// thumbDir holds a media ID's thumbnails.
func (m *mediaRepo) thumbDir(id string) string {
	return filepath.Join(m.root, "local_thumbnails", id[0:2], id[2:4], id[4:])
}

// mediaFile is a file that may be served: local media, or the cached copy
// of another server's.
type mediaFile struct {
	ContentType string
	UploadName  string
	CreatedTS   int64
	path        string // the content
	thumbDir    string // its cached thumbnails
	ref         string // "server/id", for logs
	remote      bool   // a copy of another server's media
}

// localFile is the servable file of local media.
func (s *Server) localFile(m *storage.Media) *mediaFile {
	return &mediaFile{ContentType: m.ContentType, UploadName: m.UploadName, CreatedTS: m.CreatedTS,
		path: s.media.contentPath(m.MediaID), thumbDir: s.media.thumbDir(m.MediaID), ref: s.cfg.ServerName + "/" + m.MediaID}
}

// errTooLarge is the 413 for uploads over max_upload_size.
func (s *Server) errTooLarge() error {
	return matrix.TooLarge("upload is larger than the server's limit of %d bytes", int64(s.cfg.MaxUploadSize))
}

// receive writes body to a temporary file, at most limit bytes, fsynced.
// The caller renames it into place with commit or removes it.
func (m *mediaRepo) receive(body io.Reader, limit int64) (tmp string, size int64, sum string, err error) {
	dir := filepath.Join(m.root, "tmp")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", 0, "", fmt.Errorf("media: create %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, "upload-*")
	if err != nil {
		return "", 0, "", fmt.Errorf("media: temp file: %w", err)
	}
	fail := func(e error) (string, int64, string, error) {
		f.Close()
		os.Remove(f.Name())
		return "", 0, "", e
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(body, limit+1))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fail(matrix.TooLarge("upload is too large"))
		}
		return fail(&matrix.Error{Code: "M_UNKNOWN", Msg: "could not read the upload", Status: http.StatusBadRequest, Err: err})
	}
	if n > limit {
		return fail(matrix.TooLarge("upload is larger than the server's limit of %d bytes", limit))
	}
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("media: fsync upload: %w", err))
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return "", 0, "", fmt.Errorf("media: close upload: %w", err)
	}
	return f.Name(), n, hex.EncodeToString(h.Sum(nil)), nil
}

// commit moves a received file to its media ID's path durably.
func (m *mediaRepo) commit(tmp, id string) error {
	return m.commitTo(tmp, m.contentPath(id))
}

// commitTo moves a received file to dst, a path three directories below
// the media store's root (<kind>/ab/cd/efgh...), durably.
func (m *mediaRepo) commitTo(tmp, dst string) error {
	dir := filepath.Dir(dst)
	_, statErr := os.Stat(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("media: create directory: %w", err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("media: rename upload: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	if statErr != nil {
		// The directories were new: their own entries must be durable too.
		for _, d := range []string{filepath.Dir(dir), filepath.Dir(filepath.Dir(dir)), m.root} {
			if err := syncDir(d); err != nil {
				return err
			}
		}
	}
	return nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("media: open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("media: fsync %s: %w", dir, err)
	}
	return nil
}

// remove deletes a media ID's file and thumbnails.
func (m *mediaRepo) remove(id string) error {
	if !mediaIDRe.MatchString(id) {
		return nil
	}
	err := os.Remove(m.contentPath(id))
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	return errors.Join(err, os.RemoveAll(m.thumbDir(id)))
}

// uploaded wakes downloads waiting for id.
func (m *mediaRepo) uploaded(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ch, ok := m.waiters[id]; ok {
		close(ch)
		delete(m.waiters, id)
	}
}

// wait returns a channel closed when id is uploaded.
func (m *mediaRepo) wait(id string) <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	ch, ok := m.waiters[id]
	if !ok {
		ch = make(chan struct{})
		m.waiters[id] = ch
	}
	return ch
}

// touchDue limits last-access writes to one a minute per media ID.
func (m *mediaRepo) touchDue(id string, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t, ok := m.touched[id]; ok && now.Sub(t) < time.Minute {
		return false
	}
	if len(m.touched) > 100_000 {
		m.touched = map[string]time.Time{}
	}
	m.touched[id] = now
	return true
}

// newMediaID is 24 random letters, like Synapse's.
func newMediaID() string {
	return secret.FromAlphabet("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", 24)
}

// mxc is the content URI of a local media ID.
func (s *Server) mxc(id string) string { return "mxc://" + s.cfg.ServerName + "/" + id }

// uploadMeta reads the upload's content type and file name. A content
// type that is not UTF-8 (a header may carry any byte) is the client's
// error: it is stored, and served back, as text.
func uploadMeta(r *http.Request) (contentType, name string, err error) {
	contentType = strings.TrimSpace(r.Header.Get("Content-Type"))
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	if !utf8.ValidString(contentType) {
		return "", "", matrix.InvalidParam("the Content-Type header is not valid UTF-8")
	}
	return contentType, cleanFilename(r.URL.Query().Get("filename")), nil
}

// cleanFilename bounds a file name to 255 bytes, cut between characters,
// and drops its control characters.
func cleanFilename(name string) string {
	if len(name) > 255 {
		cut := 255
		for cut > 0 && !utf8.RuneStart(name[cut]) {
			cut--
		}
		name = name[:cut]
	}
	return strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f {
			return -1
		}
		return c
	}, name)
}

// receiveUpload checks the declared size and stores the body in a temp file.
func (s *Server) receiveUpload(r *http.Request) (tmp string, size int64, sum string, err error) {
	limit := int64(s.cfg.MaxUploadSize)
	if r.ContentLength > limit {
		return "", 0, "", s.errTooLarge()
	}
	tmp, size, sum, err = s.media.receive(r.Body, limit)
	var me *matrix.Error
	if errors.As(err, &me) && me.Code == "M_TOO_LARGE" {
		return "", 0, "", s.errTooLarge()
	}
	return tmp, size, sum, err
}

// POST /_matrix/media/v3/upload
func (s *Server) postUpload(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	ctype, name, err := uploadMeta(r)
	if err != nil {
		return err
	}
	tmp, size, sum, err := s.receiveUpload(r)
	if err != nil {
		return err
	}
	id, err := s.saveMedia(r.Context(), me.UserID, ctype, name, tmp, size, sum)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]string{"content_uri": s.mxc(id)})
}

// saveMedia moves a received file into place under a new media ID and
// records it: the file is durable before the row commits.
func (s *Server) saveMedia(ctx context.Context, userID, ctype, name, tmp string, size int64, sum string) (string, error) {
	id := newMediaID()
	if err := s.media.commit(tmp, id); err != nil {
		return "", err
	}
	m := &storage.Media{MediaID: id, UserID: userID, ContentType: ctype, Size: size, UploadName: name,
		CreatedTS: s.now().UnixMilli(), SHA256: sum, Authenticated: s.cfg.AuthenticatedMediaOnly()}
	if err := s.store.CreateMedia(ctx, m); err != nil {
		s.media.remove(id)
		return "", err
	}
	return id, nil
}

// Async uploads (spec: POST /_matrix/media/v1/create): a user may hold at
// most maxPendingUploads unfinished ones, each for pendingUploadLifetime
// (Synapse's max_pending_media_uploads and unused_expiration_time).
const (
	maxPendingUploads     = 5
	pendingUploadLifetime = 24 * time.Hour
)

// POST /_matrix/media/v1/create
func (s *Server) postCreateMedia(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	now := s.now()
	s.expirePendingMedia(r.Context(), now)
	n, err := s.store.CountPendingMedia(r.Context(), me.UserID, now.UnixMilli())
	if err != nil {
		return err
	}
	if n >= maxPendingUploads {
		return matrix.LimitExceeded(time.Minute).With("error", "too many pending uploads")
	}
	id := newMediaID()
	exp := now.Add(pendingUploadLifetime).UnixMilli()
	m := &storage.Media{MediaID: id, UserID: me.UserID, CreatedTS: now.UnixMilli(), Pending: true, ExpiresTS: exp,
		Authenticated: s.cfg.AuthenticatedMediaOnly()}
	if err := s.store.CreateMedia(r.Context(), m); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"content_uri": s.mxc(id), "unused_expires_at": exp})
}

// expirePendingMedia drops /create'd media IDs whose upload deadline
// passed (best effort: they hold no file, only a row and maybe waiters).
func (s *Server) expirePendingMedia(ctx context.Context, now time.Time) {
	ids, err := s.store.ExpiredPendingMedia(ctx, now.UnixMilli())
	if err != nil || len(ids) == 0 {
		return
	}
	if _, err := s.store.DeleteMediaRows(ctx, ids); err != nil {
		logFrom(ctx, s.log).Warn("expired pending media not removed", "err", err)
		return
	}
	for _, id := range ids {
		s.media.uploaded(id) // wakes waiters, who then find nothing
	}
}

// PUT /_matrix/media/v3/upload/{serverName}/{mediaId}
func (s *Server) putUpload(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	server, id, err := s.mediaParams(r)
	if err != nil {
		return err
	}
	if server != s.cfg.ServerName {
		return matrix.Forbidden("cannot upload media for another server")
	}
	m, err := s.store.MediaByID(r.Context(), id)
	if errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("unknown media ID")
	} else if err != nil {
		return err
	}
	if m.UserID != me.UserID {
		return matrix.Forbidden("only the user who created this media ID may upload to it")
	}
	if !m.Pending {
		return &matrix.Error{Code: "M_CANNOT_OVERWRITE_MEDIA", Msg: "media ID already has content", Status: http.StatusConflict}
	}
	if m.ExpiresTS <= s.now().UnixMilli() {
		return matrix.NotFound("this media ID has expired")
	}
	ctype, name, err := uploadMeta(r)
	if err != nil {
		return err
	}
	tmp, size, sum, err := s.receiveUpload(r)
	if err != nil {
		return err
	}
	if err := s.media.commit(tmp, id); err != nil {
		return err
	}
	m.ContentType, m.Size, m.UploadName, m.SHA256, m.CreatedTS = ctype, size, name, sum, s.now().UnixMilli()
	if err := s.store.CompletePendingMedia(r.Context(), m); errors.Is(err, storage.ErrNotFound) {
		// Another upload won the race and its file is the one in place now.
		return &matrix.Error{Code: "M_CANNOT_OVERWRITE_MEDIA", Msg: "media ID already has content", Status: http.StatusConflict}
	} else if err != nil {
		return err
	}
	s.media.uploaded(id)
	return writeJSON(w, http.StatusOK, struct{}{})
}

// mediaParams reads {serverName} and {mediaId}; a malformed media ID is
// simply not found.
func (s *Server) mediaParams(r *http.Request) (server, id string, err error) {
	if server, err = pathParam(r, "serverName"); err != nil {
		return "", "", err
	}
	if id, err = pathParam(r, "mediaId"); err != nil {
		return "", "", err
	}
	if !mediaIDRe.MatchString(id) {
		return "", "", matrix.NotFound("media not found")
	}
	return server, id, nil
}

// errRemoteMedia answers requests for other servers' media when this
// server cannot make federation requests.
func errRemoteMedia() error {
	return matrix.NotFound("remote media is not available: this server cannot reach other servers")
}

// servableMedia finds media that may be served to a client: this server's
// (localMedia), or a copy of another server's (remoteMedia).
func (s *Server) servableMedia(r *http.Request, authenticated bool) (*mediaFile, error) {
	server, id, err := s.mediaParams(r)
	if err != nil {
		return nil, err
	}
	if server != s.cfg.ServerName {
		return s.remoteMedia(r, server, id, authenticated)
	}
	m, err := s.localMedia(r, id, authenticated)
	if err != nil {
		return nil, err
	}
	return s.localFile(m), nil
}

// mediaWait reads timeout_ms: how long a download may wait for content
// not uploaded yet (default 20 s, at most 120 s).
func mediaWait(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("timeout_ms")
	if v == "" {
		return 20 * time.Second, nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms < 0 {
		return 0, matrix.InvalidParam("timeout_ms must be a non-negative integer")
	}
	return min(time.Duration(ms)*time.Millisecond, 120*time.Second), nil
}

// localMedia finds local media that may be served: uploaded (waiting up
// to timeout_ms for an async upload), not quarantined, and, on the legacy
// unauthenticated endpoints, not uploaded as authenticated-only.
func (s *Server) localMedia(r *http.Request, id string, authenticated bool) (*storage.Media, error) {
	m, err := s.store.MediaByID(r.Context(), id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, matrix.NotFound("media not found")
	} else if err != nil {
		return nil, err
	}
	if m.Pending {
		timeout, err := mediaWait(r)
		if err != nil {
			return nil, err
		}
		ch := s.media.wait(id)
		// The upload may have finished between the read and the wait.
		if m, err = s.store.MediaByID(r.Context(), id); err != nil {
			return nil, err
		}
		if m.Pending {
			t := time.NewTimer(timeout)
			defer t.Stop()
			select {
			case <-ch:
			case <-t.C:
				return nil, &matrix.Error{Code: "M_NOT_YET_UPLOADED", Msg: "media has not been uploaded yet", Status: http.StatusGatewayTimeout}
			case <-r.Context().Done():
				return nil, r.Context().Err()
			}
			if m, err = s.store.MediaByID(r.Context(), id); err != nil {
				return nil, err
			}
		}
	}
	if m.QuarantinedBy != "" || m.Pending {
		return nil, matrix.NotFound("media not found")
	}
	if !authenticated && m.Authenticated {
		// Synapse's enable_authenticated_media: uploaded for signed-in users only.
		return nil, matrix.NotFound("media not found")
	}
	if s.media.touchDue(id, s.now()) {
		// Best effort: a failed last-access update must not fail a download.
		_ = s.store.TouchMedia(context.WithoutCancel(r.Context()), id, s.now().UnixMilli())
	}
	return m, nil
}

// mediaCSP is the Content-Security-Policy on every served file: nothing in
// it may run script, load plugins (other than PDF) or reach anything else.
const mediaCSP = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; " +
	"style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"

// inlineTypes may be shown inline; everything else is an attachment.
// image/svg+xml and text/html are deliberately absent: both can run script.
var inlineTypes = map[string]bool{
	"text/plain": true,
	"image/jpeg": true, "image/gif": true, "image/png": true, "image/apng": true, "image/webp": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true,
	"audio/mp4": true, "audio/webm": true, "audio/aac": true, "audio/mpeg": true, "audio/ogg": true, "audio/wave": true,
	"audio/wav": true, "audio/x-wav": true, "audio/x-pn-wav": true, "audio/flac": true, "audio/x-flac": true,
}

// setMediaHeaders sets the safety headers and the content type and
// disposition for a served file.
func setMediaHeaders(w http.ResponseWriter, contentType, filename string) {
	h := w.Header()
	contentType, disposition := mediaTypeAndDisposition(contentType, filename)
	h.Set("Content-Type", contentType)
	h.Set("Content-Security-Policy", mediaCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("Content-Disposition", disposition)
}

// mediaTypeAndDisposition returns the Content-Type and Content-Disposition
// a file is served with: an unparsable type becomes
// application/octet-stream, text gets a charset, and only inlineTypes are
// inline.
func mediaTypeAndDisposition(contentType, filename string) (string, string) {
	base, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		base, params, contentType = "application/octet-stream", nil, "application/octet-stream"
	}
	if strings.HasPrefix(base, "text/") && params["charset"] == "" {
		contentType = base + "; charset=utf-8"
	}
	return contentType, contentDisposition(inlineTypes[base], filename)
}

// contentDisposition renders the header with the file name encoded (RFC
// 6266; non-ASCII names use RFC 5987's filename*).
func contentDisposition(inline bool, filename string) string {
	disp := "attachment"
	if inline {
		disp = "inline"
	}
	if filename == "" {
		return disp
	}
	if v := mime.FormatMediaType(disp, map[string]string{"filename": filename}); v != "" {
		return v
	}
	return disp
}

// GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}]
func (s *Server) getDownload(w http.ResponseWriter, r *http.Request) error {
	return s.download(w, r, true)
}

// GET /_matrix/media/v3/download/{serverName}/{mediaId}[/{fileName}]
func (s *Server) getLegacyDownload(w http.ResponseWriter, r *http.Request) error {
	return s.download(w, r, false)
}

func (s *Server) download(w http.ResponseWriter, r *http.Request, authenticated bool) error {
	m, err := s.servableMedia(r, authenticated)
	if err != nil {
		return err
	}
	name := m.UploadName
	if fn := chi.URLParam(r, "fileName"); fn != "" {
		if name, err = pathParam(r, "fileName"); err != nil {
			return err
		}
	}
	f, err := s.openMedia(r, m)
	if err != nil {
		return err
	}
	defer f.Close()
	setMediaHeaders(w, m.ContentType, name)
	setMediaCache(w, authenticated)
	http.ServeContent(w, r, "", time.UnixMilli(m.CreatedTS), f)
	return nil
}

// openMedia opens a servable file; a missing one is not found (and logged:
// its row says it should be there).
func (s *Server) openMedia(r *http.Request, m *mediaFile) (*os.File, error) {
	f, err := os.Open(m.path)
	if errors.Is(err, os.ErrNotExist) {
		logFrom(r.Context(), s.log).Error("media file missing", "media", m.ref)
		return nil, matrix.NotFound("media not found")
	} else if err != nil {
		return nil, fmt.Errorf("media: open %s: %w", m.ref, err)
	}
	return f, nil
}

// setMediaCache: content never changes, but it can be quarantined or
// deleted, and authenticated media must not sit in shared caches.
func setMediaCache(w http.ResponseWriter, authenticated bool) {
	if authenticated {
		w.Header().Set("Cache-Control", "private, max-age=86400")
	} else {
		w.Header().Set("Cache-Control", "public, max-age=86400, s-maxage=86400")
	}
}

// GET /_matrix/client/v1/media/config
// GET /_matrix/media/v3/config
func (s *Server) getMediaConfig(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]int64{"m.upload.size": int64(s.cfg.MaxUploadSize)})
}
