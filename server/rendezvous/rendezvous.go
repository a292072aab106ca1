// Package rendezvous keeps MSC4108's rendezvous sessions: a small
// text/plain payload at an unguessable URL, which two devices that
// cannot yet talk to each other (a signed-in phone and a new device that
// scanned its QR code) overwrite in turn, each write guarded by the ETag
// of the one before. The payloads are the two ends' encrypted messages;
// the server only stores them.
//
// Sessions live in memory: they last minutes, a restart ending them is
// harmless (the devices start again), and a bounded map keeps a flood of
// them from growing the process. The oldest session is dropped when a new
// one would exceed the capacity.
package rendezvous

import (
	"errors"
	"sync"
	"time"

	"hearth/server/secret"
)

// Limits of the store (Synapse's defaults are 100 sessions, 4 KiB, one
// minute; Hearth keeps more sessions and gives a QR-code login, which
// waits on a person consenting in a browser, three minutes).
const (
	DefaultCapacity = 1000
	DefaultTTL      = 3 * time.Minute
	MaxBytes        = 4096
)

var (
	// ErrNotFound: no such session, or it expired.
	ErrNotFound = errors.New("rendezvous: no such session")
	// ErrETagMismatch: the session changed since the ETag the writer had.
	ErrETagMismatch = errors.New("rendezvous: ETag does not match")
)

// Session is one session's current state (a copy).
type Session struct {
	Data         []byte
	ContentType  string
	ETag         string // quoted, as the header carries it
	Expires      time.Time
	LastModified time.Time
	created      time.Time
}

// Store holds the sessions.
type Store struct {
	mu       sync.Mutex
	sessions map[string]*Session
	capacity int
	ttl      time.Duration
	now      func() time.Time
}

// New makes a store of at most capacity sessions, each living ttl from its
// creation.
func New(capacity int, ttl time.Duration, now func() time.Time) *Store {
	return &Store{sessions: map[string]*Session{}, capacity: capacity, ttl: ttl, now: now}
}

func newETag() string { return `"` + secret.Token("") + `"` }

// Create stores a new session holding data and returns its ID, the
// secret part of its URL.
func (s *Store) Create(data []byte, contentType string) (string, Session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if len(s.sessions) >= s.capacity {
		s.evict(now)
	}
	id := secret.Token("")
	sess := &Session{Data: data, ContentType: contentType, ETag: newETag(), Expires: now.Add(s.ttl), LastModified: now, created: now}
	s.sessions[id] = sess
	return id, *sess
}

// evict drops the expired sessions, then the oldest ones until there is
// room for one more.
func (s *Store) evict(now time.Time) {
	for id, sess := range s.sessions {
		if !now.Before(sess.Expires) {
			delete(s.sessions, id)
		}
	}
	for len(s.sessions) >= s.capacity {
		var oldest string
		for id, sess := range s.sessions {
			if oldest == "" || sess.created.Before(s.sessions[oldest].created) {
				oldest = id
			}
		}
		delete(s.sessions, oldest)
	}
}

// live returns the session if it exists and has not expired (an expired
// one is dropped on the way).
func (s *Store) live(id string) *Session {
	sess, ok := s.sessions[id]
	if !ok {
		return nil
	}
	if !s.now().Before(sess.Expires) {
		delete(s.sessions, id)
		return nil
	}
	return sess
}

// Get returns the session's current state.
func (s *Store) Get(id string) (Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.live(id)
	if sess == nil {
		return Session{}, ErrNotFound
	}
	return *sess, nil
}

// Update replaces the session's data if ifMatch is its current ETag. On
// ErrETagMismatch it returns the current state too (for its headers).
func (s *Store) Update(id, ifMatch string, data []byte, contentType string) (Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.live(id)
	if sess == nil {
		return Session{}, ErrNotFound
	}
	if ifMatch != sess.ETag {
		return *sess, ErrETagMismatch
	}
	sess.Data, sess.ContentType, sess.ETag, sess.LastModified = data, contentType, newETag(), s.now()
	return *sess, nil
}

// Delete ends the session.
func (s *Store) Delete(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.live(id) == nil {
		return ErrNotFound
	}
	delete(s.sessions, id)
	return nil
}

// Len is the number of sessions held (expired ones included until they
// are swept).
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}
