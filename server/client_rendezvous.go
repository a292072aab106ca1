package server

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"hearth/server/matrix"
	"hearth/server/rendezvous"
)

// MSC4108's rendezvous: the channel over which a signed-in device and a
// new one (which scanned its QR code) set up end-to-end encryption and
// hand over the OAuth 2.0 device authorisation grant. The sessions live in
// package rendezvous; these handlers speak the MSC's HTTP: text/plain
// bodies of at most 4 KiB, a new ETag per write, If-Match on writes
// (412 on a stale one), If-None-Match on reads (304 when unchanged), and
// Expires/Last-Modified on every answer. Served when the OAuth 2.0 API is
// on (the login it carries needs it); no access token, as the new device
// has none: the session's URL is the secret.

// rendezvousPath is where sessions are created; a session's URL is this
// plus its ID.
const rendezvousPath = "/_matrix/client/unstable/org.matrix.msc4108/rendezvous"

// POST /_matrix/client/unstable/org.matrix.msc4108/rendezvous
func (s *Server) postRendezvous(w http.ResponseWriter, r *http.Request) error {
	if s.oauth == nil {
		return unrecognized(w, r)
	}
	if err := s.limits.rendezvous.take(clientIP(r, s.xForwarded(r))); err != nil {
		return err
	}
	data, ct, err := rendezvousBody(r)
	if err != nil {
		return err
	}
	id, sess := s.rendezvous.Create(data, ct)
	rendezvousHeaders(w, sess)
	return writeJSON(w, http.StatusCreated, map[string]string{"url": s.clientBaseURL(r) + rendezvousPath + "/" + id})
}

// GET /_matrix/client/unstable/org.matrix.msc4108/rendezvous/{sessionId}
func (s *Server) getRendezvous(w http.ResponseWriter, r *http.Request) error {
	sess, err := s.rendezvousSession(r)
	if err != nil {
		return err
	}
	rendezvousHeaders(w, sess)
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagListed(inm, sess.ETag) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	w.Header().Set("Content-Type", sess.ContentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(sess.Data)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(sess.Data)
	return nil
}

// PUT /_matrix/client/unstable/org.matrix.msc4108/rendezvous/{sessionId}
func (s *Server) putRendezvous(w http.ResponseWriter, r *http.Request) error {
	if _, err := s.rendezvousSession(r); err != nil {
		return err
	}
	ifMatch := strings.TrimSpace(r.Header.Get("If-Match"))
	if ifMatch == "" {
		return matrix.MissingParam("If-Match is required")
	}
	data, ct, err := rendezvousBody(r)
	if err != nil {
		return err
	}
	id, _ := pathParam(r, "sessionId")
	sess, err := s.rendezvous.Update(id, ifMatch, data, ct)
	switch {
	case errors.Is(err, rendezvous.ErrNotFound):
		return matrix.NotFound("no such rendezvous session")
	case errors.Is(err, rendezvous.ErrETagMismatch):
		// Synapse's answer: M_UNKNOWN with the MSC's errcode beside it.
		rendezvousHeaders(w, sess)
		return (&matrix.Error{Code: "M_UNKNOWN", Msg: "ETag does not match", Status: http.StatusPreconditionFailed}).
			With("org.matrix.msc4108.errcode", "M_CONCURRENT_WRITE")
	}
	rendezvousHeaders(w, sess)
	// A Content-Type on the empty answer keeps proxies that drop the ETag
	// of typeless responses from doing so (as Synapse notes).
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// DELETE /_matrix/client/unstable/org.matrix.msc4108/rendezvous/{sessionId}
func (s *Server) deleteRendezvous(w http.ResponseWriter, r *http.Request) error {
	if s.oauth == nil {
		return unrecognized(w, r)
	}
	id, err := pathParam(r, "sessionId")
	if err != nil {
		return err
	}
	if err := s.rendezvous.Delete(id); err != nil {
		return matrix.NotFound("no such rendezvous session")
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// rendezvousSession finds the session the path names.
func (s *Server) rendezvousSession(r *http.Request) (rendezvous.Session, error) {
	if s.oauth == nil {
		return rendezvous.Session{}, matrix.Unrecognized("unrecognized request")
	}
	id, err := pathParam(r, "sessionId")
	if err != nil {
		return rendezvous.Session{}, err
	}
	sess, err := s.rendezvous.Get(id)
	if err != nil {
		return rendezvous.Session{}, matrix.NotFound("no such rendezvous session")
	}
	return sess, nil
}

// rendezvousBody reads a write's body: text/plain, at most
// rendezvous.MaxBytes.
func rendezvousBody(r *http.Request) ([]byte, string, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "text/plain" {
		return nil, "", matrix.InvalidParam("Content-Type must be text/plain")
	}
	if r.ContentLength > rendezvous.MaxBytes {
		return nil, "", matrix.TooLarge("the payload is larger than %d bytes", rendezvous.MaxBytes)
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, rendezvous.MaxBytes+1))
	if err != nil {
		return nil, "", matrix.BadJSON("could not read the body")
	}
	if len(data) > rendezvous.MaxBytes {
		return nil, "", matrix.TooLarge("the payload is larger than %d bytes", rendezvous.MaxBytes)
	}
	return data, "text/plain", nil
}

// rendezvousHeaders sets what every answer about a session carries.
func rendezvousHeaders(w http.ResponseWriter, sess rendezvous.Session) {
	h := w.Header()
	h.Set("ETag", sess.ETag)
	h.Set("Expires", sess.Expires.UTC().Format(http.TimeFormat))
	h.Set("Last-Modified", sess.LastModified.UTC().Format(http.TimeFormat))
	h.Set("Cache-Control", "no-store, no-transform")
	h.Set("Pragma", "no-cache")
	// Browsers (Element Web) read these across origins.
	h.Set("Access-Control-Expose-Headers", "ETag, Expires, Last-Modified")
}

// etagListed reports whether an If-None-Match value lists etag (or is *).
func etagListed(header, etag string) bool {
	for _, v := range strings.Split(header, ",") {
		v = strings.TrimPrefix(strings.TrimSpace(v), "W/")
		if v == "*" || v == etag {
			return true
		}
	}
	return false
}

// clientBaseURL is the URL clients reach this server at: public_baseurl,
// or else the scheme and host this request came to.
func (s *Server) clientBaseURL(r *http.Request) string {
	if s.cfg.PublicBaseURL != "" {
		return strings.TrimSuffix(s.cfg.PublicBaseURL, "/")
	}
	scheme := "http"
	if s.IsHTTPS(r) {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}
