package server

import (
	"bytes"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"

	"hearth/server/matrix"
)

// The content repository for other servers (Server-Server API, "Content
// Repository"): this server's media, to any server that signs its request.
// The answer is multipart/mixed with exactly two parts: a JSON object of
// metadata (empty: the spec defines no field yet), then the content with
// the Content-Type and Content-Disposition clients get (setMediaHeaders).
// Only local media is served, never a cached copy of a third server's.
// Unknown, quarantined and not-yet-uploaded media are answered as they are
// to clients; authenticated-only media is served, since every request here
// is authenticated.

// GET /_matrix/federation/v1/media/download/{mediaId}
func (s *Server) getFederationMediaDownload(w http.ResponseWriter, r *http.Request) error {
	m, err := s.federationMedia(r)
	if err != nil {
		return err
	}
	f, err := s.openMedia(r, m)
	if err != nil {
		return err
	}
	defer f.Close()
	ctype, disposition := mediaTypeAndDisposition(m.ContentType, m.UploadName)
	s.writeMediaParts(w, r, ctype, disposition, f)
	return nil
}

// GET /_matrix/federation/v1/media/thumbnail/{mediaId}
//
// width, height and method as for clients; animated is accepted and, as
// no thumbnail here is animated, needs nothing done.
func (s *Server) getFederationMediaThumbnail(w http.ResponseWriter, r *http.Request) error {
	size, err := thumbParams(r)
	if err != nil {
		return err
	}
	m, err := s.federationMedia(r)
	if err != nil {
		return err
	}
	data, outType, err := s.thumbnailOf(r, m, size)
	if err != nil {
		return err
	}
	ctype, disposition := mediaTypeAndDisposition(outType, "thumbnail."+outType[len("image/"):])
	s.writeMediaParts(w, r, ctype, disposition, bytes.NewReader(data))
	return nil
}

// federationMedia finds the local media {mediaId} names.
func (s *Server) federationMedia(r *http.Request) (*mediaFile, error) {
	id, err := pathParam(r, "mediaId")
	if err != nil {
		return nil, err
	}
	if !mediaIDRe.MatchString(id) {
		return nil, matrix.NotFound("media not found")
	}
	m, err := s.localMedia(r, id, true)
	if err != nil {
		return nil, err
	}
	return s.localFile(m), nil
}

// writeMediaParts writes the two-part answer. Once the status is sent an
// error can only cut the answer short; the closing boundary is then
// missing, so the receiver cannot take part of the content for all of it.
func (s *Server) writeMediaParts(w http.ResponseWriter, r *http.Request, ctype, disposition string, content io.Reader) {
	mw := multipart.NewWriter(w)
	w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	w.Header().Set("Cache-Control", "no-store")
	err := func() error {
		meta, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
		if err != nil {
			return err
		}
		if _, err := io.WriteString(meta, "{}"); err != nil {
			return err
		}
		part, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {ctype}, "Content-Disposition": {disposition}})
		if err != nil {
			return err
		}
		if _, err := io.Copy(part, content); err != nil {
			return err
		}
		return mw.Close()
	}()
	if err != nil {
		logFrom(r.Context(), s.log).Debug("media answer cut short", "path", r.URL.Path, "err", err)
	}
}
