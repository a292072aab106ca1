package rendezvous

import (
	"errors"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestStoreWritesNeedTheCurrentETag(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	s := New(10, time.Minute, c.now)
	id, first := s.Create([]byte("one"), "text/plain")
	if first.ETag == "" || first.ETag[0] != '"' || !first.Expires.Equal(c.t.Add(time.Minute)) {
		t.Fatalf("new session %+v", first)
	}
	c.t = c.t.Add(10 * time.Second)
	second, err := s.Update(id, first.ETag, []byte("two"), "text/plain")
	if err != nil || second.ETag == first.ETag || string(second.Data) != "two" || !second.LastModified.Equal(c.t) {
		t.Fatalf("update: %+v %v", second, err)
	}
	// The expiry runs from creation: writes do not extend it.
	if !second.Expires.Equal(first.Expires) {
		t.Fatalf("expiry moved from %v to %v", first.Expires, second.Expires)
	}
	// The same data again still gets a new ETag (a reader waiting on the
	// old one must see the write).
	third, err := s.Update(id, second.ETag, []byte("two"), "text/plain")
	if err != nil || third.ETag == second.ETag {
		t.Fatalf("rewrite: %+v %v", third, err)
	}
	if cur, err := s.Update(id, first.ETag, []byte("stale"), "text/plain"); !errors.Is(err, ErrETagMismatch) || cur.ETag != third.ETag {
		t.Fatalf("stale write: %v, current %q", err, cur.ETag)
	}
	if got, _ := s.Get(id); string(got.Data) != "two" {
		t.Fatalf("the stale write landed: %q", got.Data)
	}
	if err := s.Delete(id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if err := s.Delete(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestStoreExpiry(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	s := New(10, time.Minute, c.now)
	id, sess := s.Create([]byte("x"), "text/plain")
	c.t = c.t.Add(time.Minute - time.Millisecond)
	if _, err := s.Get(id); err != nil {
		t.Fatalf("just before expiry: %v", err)
	}
	c.t = c.t.Add(time.Millisecond)
	if _, err := s.Get(id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("at expiry: %v", err)
	}
	if _, err := s.Update(id, sess.ETag, []byte("y"), "text/plain"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("write after expiry: %v", err)
	}
	if s.Len() != 0 {
		t.Fatalf("%d sessions kept after expiry", s.Len())
	}
}

// TestStoreBounded: the store never holds more than its capacity; expired
// sessions go first, then the oldest.
func TestStoreBounded(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	s := New(3, time.Minute, c.now)
	var ids []string
	for range 3 {
		id, _ := s.Create([]byte("x"), "text/plain")
		ids = append(ids, id)
		c.t = c.t.Add(time.Second)
	}
	fourth, _ := s.Create([]byte("x"), "text/plain")
	if s.Len() != 3 {
		t.Fatalf("%d sessions, capacity 3", s.Len())
	}
	if _, err := s.Get(ids[0]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the oldest session survived: %v", err)
	}
	for _, id := range append(ids[1:], fourth) {
		if _, err := s.Get(id); err != nil {
			t.Fatalf("a newer session was dropped: %v", err)
		}
	}
	// Once all have expired, a new one sweeps them all away.
	c.t = c.t.Add(2 * time.Minute)
	s.Create([]byte("x"), "text/plain")
	if s.Len() != 1 {
		t.Fatalf("%d sessions after the sweep, want 1", s.Len())
	}
	for range 1000 {
		s.Create([]byte("x"), "text/plain")
	}
	if s.Len() != 3 {
		t.Fatalf("%d sessions after a flood, capacity 3", s.Len())
	}
}
