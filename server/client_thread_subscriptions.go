package server

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"hearth/server/matrix"
	"hearth/server/storage"
)

// Thread subscriptions (MSC4306) and their pagination (MSC4308), under
// experimental_features.msc4306_enabled as in Synapse. A client subscribes
// the user to a thread by hand, or automatically (naming the event in the
// thread that made it decide, e.g. the user's own reply). With the
// feature on, the default push rules notify for a message in a thread only
// when the user is subscribed to it (push/defaults.go). The sliding sync
// extension is in slidingsync_ext.go.

const (
	errNotInThread               = "IO.ELEMENT.MSC4306.M_NOT_IN_THREAD"
	errConflictingUnsubscription = "IO.ELEMENT.MSC4306.M_CONFLICTING_UNSUBSCRIPTION"
	// maxThreadSubscriptionsPage caps a page of changes, as Synapse does.
	maxThreadSubscriptionsPage = 512
)

// threadRoot reads the {roomId} and {threadRootId} of a request and checks
// that the root is an event of that room the user may see (else 404, as
// for an event that does not exist).
func (s *Server) threadRoot(r *http.Request) (roomID string, root *storage.Event, err error) {
	if roomID, err = roomIDParam(r); err != nil {
		return "", nil, err
	}
	rootID, err := pathParam(r, "threadRootId")
	if err != nil {
		return "", nil, err
	}
	if !strings.HasPrefix(rootID, "$") {
		return "", nil, matrix.InvalidParam("%q is not an event ID", rootID)
	}
	root, err = s.eventInRoomFor(r.Context(), deviceFrom(r.Context()).UserID, roomID, rootID)
	if err != nil {
		return "", nil, err
	}
	if root == nil {
		return "", nil, matrix.NotFound("no such thread root")
	}
	return roomID, root, nil
}

// GET /_matrix/client/unstable/io.element.msc4306/rooms/{roomId}/thread/{threadRootId}/subscription
func (s *Server) getThreadSubscription(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	roomID, root, err := s.threadRoot(r)
	if err != nil {
		return err
	}
	automatic, err := s.store.ThreadSubscriptionOf(r.Context(), me.UserID, roomID, root.EventID)
	if errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("not subscribed to this thread")
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]bool{"automatic": automatic})
}

// PUT /_matrix/client/unstable/io.element.msc4306/rooms/{roomId}/thread/{threadRootId}/subscription
func (s *Server) putThreadSubscription(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	var body struct {
		Automatic *string `json:"automatic"`
	}
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	roomID, root, err := s.threadRoot(r)
	if err != nil {
		return err
	}
	var cause *storage.ThreadCause
	if body.Automatic != nil {
		ev, err := s.eventInRoomFor(r.Context(), me.UserID, roomID, *body.Automatic)
		if err != nil {
			return err
		}
		if ev == nil {
			return matrix.NotFound("the automatic subscription's event was not found")
		}
		if ev.RelType != "m.thread" || ev.RelatesTo != root.EventID {
			return &matrix.Error{Code: errNotInThread, Msg: "an automatic subscription must name an event in the thread", Status: http.StatusBadRequest}
		}
		cause = &storage.ThreadCause{StreamPos: ev.StreamPos, Depth: ev.Depth}
	}
	pos, err := s.store.SubscribeThread(r.Context(), me.UserID, roomID, root.EventID, cause)
	if errors.Is(err, storage.ErrUnsubscribedLater) {
		return &matrix.Error{Code: errConflictingUnsubscription, Status: http.StatusConflict,
			Msg: "the user unsubscribed from this thread after that event"}
	}
	if err != nil {
		return err
	}
	if pos > 0 {
		s.notifier.notifyUser(me.UserID)
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// DELETE /_matrix/client/unstable/io.element.msc4306/rooms/{roomId}/thread/{threadRootId}/subscription
func (s *Server) deleteThreadSubscription(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	roomID, root, err := s.threadRoot(r)
	if err != nil {
		return err
	}
	pos, err := s.store.UnsubscribeThread(r.Context(), me.UserID, roomID, root.EventID)
	if err != nil {
		return err
	}
	if pos > 0 {
		s.notifier.notifyUser(me.UserID)
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// threadSubscriptionsOut is the shape MSC4308 gives changes in, both in
// the sliding sync extension and on the pagination endpoint: room ID →
// thread root → change, bump_stamp being the change's position.
type threadSubscriptionsOut struct {
	Subscribed   map[string]map[string]any `json:"subscribed,omitempty"`
	Unsubscribed map[string]map[string]any `json:"unsubscribed,omitempty"`
	PrevBatch    string                    `json:"prev_batch,omitempty"`
	End          string                    `json:"end,omitempty"`
}

func (o *threadSubscriptionsOut) isEmpty() bool {
	return len(o.Subscribed) == 0 && len(o.Unsubscribed) == 0 && o.PrevBatch == ""
}

// threadSubscriptionChanges sorts changes into subscribed and
// unsubscribed; more is the position to page back from when the page was
// full ("" otherwise).
func threadSubscriptionChanges(changes []storage.ThreadSubscription, limit int) (out *threadSubscriptionsOut, more string) {
	out = &threadSubscriptionsOut{}
	for _, c := range changes {
		m, v := &out.Unsubscribed, map[string]any{"bump_stamp": c.StreamID}
		if c.Subscribed {
			m, v = &out.Subscribed, map[string]any{"automatic": c.Automatic, "bump_stamp": c.StreamID}
		}
		if *m == nil {
			*m = map[string]map[string]any{}
		}
		if (*m)[c.RoomID] == nil {
			(*m)[c.RoomID] = map[string]any{}
		}
		(*m)[c.RoomID][c.RootID] = v
	}
	if len(changes) == limit && limit > 0 {
		more = threadSubscriptionsToken(changes[0].StreamID - 1)
	}
	return out, more
}

// Thread subscription pagination tokens are "ts" and an aux position.
func threadSubscriptionsToken(pos int64) string { return "ts" + strconv.FormatInt(pos, 10) }

func parseThreadSubscriptionsToken(tok string) (int64, bool) {
	n, err := strconv.ParseInt(strings.TrimPrefix(tok, "ts"), 10, 64)
	return n, err == nil && strings.HasPrefix(tok, "ts") && n >= 0
}

// GET /_matrix/client/unstable/io.element.msc4308/thread_subscriptions:
// the user's latest changes, newest first in pages going back (dir=b),
// from the newest (or from) down to to (exclusive), which may also be a
// sliding sync pos.
func (s *Server) getThreadSubscriptions(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	q := r.URL.Query()
	if q.Get("dir") != "b" {
		return matrix.InvalidParam("dir must be b")
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return matrix.InvalidParam("limit must be a positive integer")
		}
		limit = min(n, maxThreadSubscriptionsPage)
	}
	upTo, err := s.store.MaxAuxPos(r.Context())
	if err != nil {
		return err
	}
	if v := q.Get("from"); v != "" {
		n, ok := parseThreadSubscriptionsToken(v)
		if !ok {
			return matrix.InvalidParam("from is not a valid token")
		}
		upTo = min(upTo, n)
	}
	var after int64
	if v := q.Get("to"); v != "" {
		n, ok := parseThreadSubscriptionsToken(v)
		if !ok {
			pos, err := s.slidingPosAux(me, v)
			if err != nil {
				return matrix.InvalidParam("to is not a valid token")
			}
			n = pos
		}
		after = n
	}
	changes, err := s.store.ThreadSubscriptionsBetween(r.Context(), me.UserID, after, upTo, limit)
	if err != nil {
		return err
	}
	out, more := threadSubscriptionChanges(changes, limit)
	out.End = more
	return writeJSON(w, http.StatusOK, out)
}
