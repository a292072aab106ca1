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
	"time"

	"hearth/server/federation"
	"hearth/server/matrix"
	"hearth/server/storage"
)

// Other servers' media (Client-Server API "Content repository": downloads
// and thumbnails of mxc://<another server>/<id>). Each is fetched whole,
// once, over federation (federation.Client.DownloadMedia: the
// authenticated endpoint, or the legacy one of an older server) into the
// remote media cache:
//
//	remote_content/ab/cd/efgh...        the copy (file ID abcdefgh..., ours)
//	remote_thumbnails/ab/cd/efgh.../    its thumbnails
//
// and served from there exactly as local media is: the same safety
// headers, Range, thumbnails rendered here from the copy. Rendering them
// here (as Synapse and Dendrite do), rather than asking the origin for
// each size, means one fetch per media item, the same five sizes, and no
// "thumbnail" that is whatever the origin chose to send.
//
// Fetches are limited to max_upload_size (more is 502 M_TOO_LARGE, as
// the spec has it), share one transfer per media item however many clients
// ask at once, run at most maxRemoteFetches at a time, and a failure is
// remembered for remoteFailureTTL, so a missing or unreachable item does
// not cost the origin one request per client retry.

const (
	// remoteFetchTimeout bounds a transfer, on top of the timeout_ms the
	// origin may spend waiting for an async upload.
	remoteFetchTimeout = 3 * time.Minute
	// maxRemoteFetches bounds concurrent transfers (disk and bandwidth).
	maxRemoteFetches = 8
	// remoteFailureTTL is how long a failed fetch is answered from memory.
	remoteFailureTTL = 30 * time.Second
	// maxRemoteFailures bounds the remembered failures.
	maxRemoteFailures = 10_000
)

// remoteFetches is the state shared by the fetches of one process.
type remoteFetches struct {
	running  map[string]*remoteFetch // "origin/id" → the fetch under way
	failures map[string]remoteFailure
	sem      chan struct{}
}

func newRemoteFetches() remoteFetches {
	return remoteFetches{running: map[string]*remoteFetch{}, failures: map[string]remoteFailure{},
		sem: make(chan struct{}, maxRemoteFetches)}
}

// remoteFetch is one transfer; done is closed once m or err is set.
type remoteFetch struct {
	done chan struct{}
	m    *storage.RemoteMedia
	err  error
}

type remoteFailure struct {
	err   error
	until time.Time
}

// remoteContentPath is where the copy with this file ID lives.
func (m *mediaRepo) remoteContentPath(fileID string) string {
	return filepath.Join(m.root, "remote_content", fileID[0:2], fileID[2:4], fileID[4:])
}

// remoteThumbDir holds the thumbnails of the copy with this file ID.
func (m *mediaRepo) remoteThumbDir(fileID string) string {
	return filepath.Join(m.root, "remote_thumbnails", fileID[0:2], fileID[2:4], fileID[4:])
}

// removeRemote deletes a copy's file and thumbnails.
func (m *mediaRepo) removeRemote(fileID string) error {
	if !mediaIDRe.MatchString(fileID) {
		return nil
	}
	err := os.Remove(m.remoteContentPath(fileID))
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	return errors.Join(err, os.RemoveAll(m.remoteThumbDir(fileID)))
}

// remoteFile is the servable file of a cached copy.
func (s *Server) remoteFile(m *storage.RemoteMedia) *mediaFile {
	return &mediaFile{ContentType: m.ContentType, UploadName: m.UploadName, CreatedTS: m.CreatedTS,
		path: s.media.remoteContentPath(m.FileID), thumbDir: s.media.remoteThumbDir(m.FileID),
		ref: m.Origin + "/" + m.MediaID, remote: true}
}

// remoteMedia finds another server's media that may be served: the cached
// copy, or a new one fetched now. Quarantined copies are not found. On the
// legacy unauthenticated endpoints, copies made while
// enable_authenticated_media was true are not found either, and nothing
// is fetched while it is true (the copy would be authenticated-only), nor
// when the client says allow_remote=false (spec: to prevent loops).
func (s *Server) remoteMedia(r *http.Request, origin, id string, authenticated bool) (*mediaFile, error) {
	ctx := r.Context()
	if _, err := federation.ParseServerName(origin); err != nil {
		return nil, matrix.NotFound("media not found")
	}
	m, err := s.store.RemoteMediaByID(ctx, origin, id)
	if errors.Is(err, storage.ErrNotFound) {
		if !authenticated && (s.cfg.AuthenticatedMediaOnly() || r.URL.Query().Get("allow_remote") == "false") {
			return nil, matrix.NotFound("media not found")
		}
		wait, werr := mediaWait(r)
		if werr != nil {
			return nil, werr
		}
		// remote_media_download_*: the bytes this client address had
		// fetched lately; charged once known, refused when spent.
		ip := clientIP(r, s.xForwarded(r))
		if lerr := s.limits.remoteMedia.check(ip); lerr != nil {
			return nil, lerr
		}
		var started bool
		m, started, err = s.fetchRemoteMedia(ctx, origin, id, wait)
		if err == nil && started {
			s.limits.remoteMedia.chargeN(ip, float64(m.Size))
		}
	}
	if err != nil {
		return nil, err
	}
	if m.QuarantinedBy != "" || (!authenticated && m.Authenticated) {
		return nil, matrix.NotFound("media not found")
	}
	if s.media.touchDue(m.Origin+"/"+m.MediaID, s.now()) {
		// Best effort, as for local media.
		_ = s.store.TouchRemoteMedia(context.WithoutCancel(ctx), m.Origin, m.MediaID, s.now().UnixMilli())
	}
	return s.remoteFile(m), nil
}

// fetchRemoteMedia returns a new copy of origin's media id: from the fetch
// already under way, or from one it starts (started). The fetch belongs
// to the server (Run's background work), not to the request: a client
// that gives up does not cut it short for the others waiting.
func (s *Server) fetchRemoteMedia(ctx context.Context, origin, id string, wait time.Duration) (m *storage.RemoteMedia, started bool, err error) {
	if s.fedClient == nil {
		return nil, false, errRemoteMedia()
	}
	if !s.fedTransport.Allowed(origin) {
		return nil, false, matrix.Forbidden("this server does not federate with %s", origin)
	}
	key := origin + "/" + id
	rf := &s.media.remote
	s.media.mu.Lock()
	if f, ok := rf.failures[key]; ok {
		if s.now().Before(f.until) {
			s.media.mu.Unlock()
			return nil, false, f.err
		}
		delete(rf.failures, key)
	}
	f, running := rf.running[key]
	if !running {
		f = &remoteFetch{done: make(chan struct{})}
		rf.running[key] = f
	}
	s.media.mu.Unlock()
	if !running {
		run := func(ctx context.Context) { s.runRemoteFetch(ctx, key, origin, id, wait, f) }
		if !s.goBackground(run) {
			// Run is not running (a server used without it): the
			// request carries the fetch.
			go run(ctx)
		}
	}
	select {
	case <-f.done:
		return f.m, !running, f.err
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}

// runRemoteFetch carries out f and tells its waiters.
func (s *Server) runRemoteFetch(ctx context.Context, key, origin, id string, wait time.Duration, f *remoteFetch) {
	defer func() {
		rf := &s.media.remote
		s.media.mu.Lock()
		delete(rf.running, key)
		var me *matrix.Error
		// Remember what the origin answered, or its silence; not a
		// fetch cut short by shutdown, nor "not uploaded yet", which a
		// retry may well change.
		if f.err != nil && ctx.Err() == nil && !(errors.As(f.err, &me) && me.Code == "M_NOT_YET_UPLOADED") {
			if len(rf.failures) >= maxRemoteFailures {
				now := s.now()
				for k, v := range rf.failures {
					if !now.Before(v.until) {
						delete(rf.failures, k)
					}
				}
				if len(rf.failures) >= maxRemoteFailures {
					rf.failures = map[string]remoteFailure{}
				}
			}
			rf.failures[key] = remoteFailure{err: f.err, until: s.now().Add(remoteFailureTTL)}
		}
		s.media.mu.Unlock()
		close(f.done)
	}()
	select {
	case s.media.remote.sem <- struct{}{}:
		defer func() { <-s.media.remote.sem }()
	case <-ctx.Done():
		f.err = ctx.Err()
		return
	}
	// A fetch that ended just before this one started has stored its
	// copy by now (its row commits before it leaves rf.running).
	if m, err := s.store.RemoteMediaByID(ctx, origin, id); err == nil {
		f.m = m
		return
	}
	fetchCtx, cancel := context.WithTimeout(ctx, wait+remoteFetchTimeout)
	defer cancel()
	f.m, f.err = s.downloadRemoteMedia(fetchCtx, origin, id, wait)
	if f.err != nil {
		s.log.Warn("remote media not fetched", "media", key, "err", f.err)
	}
}

// downloadRemoteMedia fetches a copy into the cache: the file is durable
// before its row commits, as for uploads.
func (s *Server) downloadRemoteMedia(ctx context.Context, origin, id string, wait time.Duration) (*storage.RemoteMedia, error) {
	tmp, err := s.media.tempFile()
	if err != nil {
		return nil, err
	}
	fail := func(e error) (*storage.RemoteMedia, error) {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, e
	}
	h, head := sha256.New(), &headWriter{}
	limit := int64(s.cfg.MaxUploadSize)
	info, err := s.fedClient.DownloadMedia(ctx, origin, id, wait, limit, io.MultiWriter(tmp, h, head))
	if err != nil {
		return fail(remoteFetchError(origin, limit, err))
	}
	if err := tmp.Sync(); err != nil {
		return fail(fmt.Errorf("media: fsync remote media: %w", err))
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("media: close remote media: %w", err)
	}
	fileID := newMediaID()
	if err := s.media.commitTo(tmp.Name(), s.media.remoteContentPath(fileID)); err != nil {
		return nil, err
	}
	m := &storage.RemoteMedia{Origin: origin, MediaID: id, ContentType: remoteContentType(info.ContentType, head.b),
		Size: info.Size, UploadName: cleanFilename(info.Filename), CreatedTS: s.now().UnixMilli(),
		SHA256: hex.EncodeToString(h.Sum(nil)), FileID: fileID, Authenticated: s.cfg.AuthenticatedMediaOnly()}
	err = s.store.CreateRemoteMedia(ctx, m)
	if errors.Is(err, storage.ErrConflict) {
		// Another process fetched it first: keep its copy.
		s.media.removeRemote(fileID)
		return s.store.RemoteMediaByID(ctx, origin, id)
	}
	if err != nil {
		s.media.removeRemote(fileID)
		return nil, err
	}
	return m, nil
}

// remoteFetchError is what a client is told about a failed fetch.
func remoteFetchError(origin string, limit int64, err error) error {
	if errors.Is(err, federation.ErrMediaTooLarge) {
		// Spec: 502 M_TOO_LARGE, "the content is too large for the server
		// to serve".
		return &matrix.Error{Code: "M_TOO_LARGE", Status: http.StatusBadGateway,
			Msg: fmt.Sprintf("the media is larger than this server's limit of %d bytes", limit)}
	}
	var re *federation.RemoteError
	if errors.As(err, &re) {
		switch {
		case re.Status == http.StatusNotFound:
			return matrix.NotFound("media not found")
		case re.Status == http.StatusGatewayTimeout && re.Code == "M_NOT_YET_UPLOADED":
			return &matrix.Error{Code: "M_NOT_YET_UPLOADED", Msg: "media has not been uploaded yet", Status: http.StatusGatewayTimeout}
		}
	}
	if errors.Is(err, federation.ErrNotWhitelisted) {
		return matrix.Forbidden("this server does not federate with %s", origin)
	}
	return &matrix.Error{Code: "M_UNKNOWN", Msg: "could not fetch the media from " + origin, Status: http.StatusBadGateway, Err: err}
}

// remoteContentType is the type a copy is stored and served with: the
// origin's, when it is a valid media type; otherwise what the content
// looks like. Either way it is served as local media is (setMediaHeaders:
// only an allow-list inline, never with script).
func remoteContentType(declared string, head []byte) string {
	if declared != "" && len(declared) <= 255 {
		if _, _, err := mime.ParseMediaType(declared); err == nil {
			return declared
		}
	}
	return http.DetectContentType(head)
}

// tempFile is a new file in the media store's tmp/.
func (m *mediaRepo) tempFile() (*os.File, error) {
	dir := filepath.Join(m.root, "tmp")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("media: create %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, "upload-*")
	if err != nil {
		return nil, fmt.Errorf("media: temp file: %w", err)
	}
	return f, nil
}

// headWriter keeps the first 512 bytes written (what content sniffing reads).
type headWriter struct{ b []byte }

func (h *headWriter) Write(p []byte) (int, error) {
	if n := 512 - len(h.b); n > 0 {
		h.b = append(h.b, p[:min(n, len(p))]...)
	}
	return len(p), nil
}
