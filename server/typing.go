package server

import (
	"net/http"
	"slices"
	"sync"
	"time"

	"hearth/server/matrix"
	"hearth/server/rooms"
)

// Typing notifications (spec: "Typing Notifications") live in memory only:
// they expire within seconds, and a restart forgetting them is what a
// timeout would have done anyway. Each change takes the next position of a
// process-local counter, the third part of a sync token (tokens.go).

// maxTypingTimeout bounds how long one request keeps a user typing.
const maxTypingTimeout = 2 * time.Minute

// typingState is the typing users of every room. The zero value is ready.
type typingState struct {
	mu     sync.Mutex
	serial int64
	rooms  map[string]*roomTyping
}

// roomTyping is one room's typing users and the serial of its last change.
type roomTyping struct {
	serial int64
	users  map[string]*time.Timer
}

// current is the newest typing position.
func (t *typingState) current() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.serial
}

// set starts (for timeout) or stops userID typing in roomID and reports
// whether that changed the room's typing list; onExpire runs when a start
// times out.
func (t *typingState) set(roomID, userID string, typing bool, timeout time.Duration, onExpire func()) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.rooms == nil {
		t.rooms = map[string]*roomTyping{}
	}
	rt := t.rooms[roomID]
	if rt == nil {
		rt = &roomTyping{users: map[string]*time.Timer{}}
		t.rooms[roomID] = rt
	}
	old, was := rt.users[userID]
	if was {
		old.Stop()
		delete(rt.users, userID)
	}
	if typing {
		var timer *time.Timer
		timer = time.AfterFunc(timeout, func() {
			t.mu.Lock()
			expired := rt.users[userID] == timer
			if expired {
				delete(rt.users, userID)
				t.serial++
				rt.serial = t.serial
			}
			t.mu.Unlock()
			if expired {
				onExpire()
			}
		})
		rt.users[userID] = timer
	}
	if was == typing {
		return false // only the timeout moved
	}
	t.serial++
	rt.serial = t.serial
	return true
}

// changedSince returns, for the rooms among roomIDs whose typing list
// changed after since, the users typing there now (sorted, possibly empty:
// the client must learn that everyone stopped). An initial sync (initial
// set) gets only rooms where someone is typing: it has nothing to clear.
// A token from before any typing has since 0 but is not initial.
func (t *typingState) changedSince(roomIDs []string, since int64, initial bool) map[string][]string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string][]string{}
	for _, r := range roomIDs {
		rt := t.rooms[r]
		if rt == nil || rt.serial <= since {
			continue
		}
		users := make([]string, 0, len(rt.users))
		for u := range rt.users {
			users = append(users, u)
		}
		slices.Sort(users)
		if initial && len(users) == 0 {
			continue // an initial sync has nothing to clear
		}
		out[r] = users
	}
	return out
}

// PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}
func (s *Server) putTyping(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	roomID, err := pathParam(r, "roomId")
	if err != nil {
		return err
	}
	userID, err := pathParam(r, "userId")
	if err != nil {
		return err
	}
	if userID != me.UserID {
		return matrix.Forbidden("cannot set another user's typing state")
	}
	var req struct {
		Typing  *bool  `json:"typing"`
		Timeout *int64 `json:"timeout"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Typing == nil {
		return matrix.MissingParam("typing is required")
	}
	m, err := s.store.Membership(r.Context(), roomID, me.UserID)
	if err != nil {
		return err
	}
	if m != rooms.MembershipJoin {
		return matrix.Forbidden("you are not in this room")
	}
	timeout := 30 * time.Second
	if req.Timeout != nil && *req.Timeout > 0 {
		timeout = min(time.Duration(*req.Timeout)*time.Millisecond, maxTypingTimeout)
	}
	s.setTyping(roomID, me.UserID, *req.Typing, timeout)
	return writeJSON(w, http.StatusOK, struct{}{})
}

// setTyping starts or stops a user typing in a room and wakes the room's
// syncs when that changed something.
func (s *Server) setTyping(roomID, userID string, typing bool, timeout time.Duration) {
	if s.notifier.typing.set(roomID, userID, typing, timeout, func() { s.notifier.notifyRoom(roomID) }) {
		s.notifier.notifyRoom(roomID)
	}
	if s.isLocalUser(userID) {
		s.sendEDU(roomID, "m.typing", map[string]any{"room_id": roomID, "user_id": userID, "typing": typing})
	}
}
