package server

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"hearth/server/matrix"
	"hearth/server/rooms"
	"hearth/server/storage"
)

// Room history: /messages, /context and /timestamp_to_event (spec:
// Client-Server API, "Syncing" → "Getting events for a room").
//
// Pagination walks a room in topological order, (depth, stream). A
// position is a point between events, written as a t-token; the events at
// or before it are those with (depth, stream) <= the token's. Paging
// backwards returns the events at or before `from`, newest first, and
// hands back the position just before the oldest one returned; paging
// forwards returns the events after `from`. /sync's prev_batch is an
// s-token (a stream position); it is converted to the topological position
// of the last event that arrived by then, and paging backwards from it
// leaves out the events that arrived after it, whatever their depth: those
// came down /sync after that point (an event of another server that
// arrived late, on an old fork, would otherwise be paged back into the
// history the client already has, in place of older events). Synapse
// pages from a stream token the same way.

const (
	defaultPageLimit = 10
	maxPageLimit     = 1000
	// maxPageScan bounds the rows one request reads when filters and
	// history visibility hide most of them; the client gets a partial
	// chunk and an end token to continue from.
	maxPageScan = 2000
	// maxBackfillRounds bounds the /backfill requests one /messages
	// makes to fill its page.
	maxBackfillRounds = 10
)

// historyFilter is the RoomEventFilter /messages and /context take in the
// filter query parameter (client_filters.go), plus MSC3874's relation
// filters, which Synapse accepts under their unstable names.
type historyFilter struct {
	roomEventFilter
	RelTypes            []string `json:"rel_types"`
	NotRelTypes         []string `json:"not_rel_types"`
	UnstableRelTypes    []string `json:"org.matrix.msc3874.rel_types"`
	UnstableNotRelTypes []string `json:"org.matrix.msc3874.not_rel_types"`

	// arrivedBy, when set, leaves out events that reached this server
	// after that stream position (paging back from an s-token).
	arrivedBy int64
}

// parseHistoryFilter reads the filter query parameter (JSON); an absent one
// matches everything.
func parseHistoryFilter(r *http.Request) (*historyFilter, error) {
	f := &historyFilter{}
	raw := r.URL.Query().Get("filter")
	if raw == "" {
		return f, nil
	}
	if !strings.HasPrefix(strings.TrimSpace(raw), "{") {
		return nil, matrix.InvalidParam("filter must be a JSON RoomEventFilter")
	}
	if err := json.Unmarshal([]byte(raw), f); err != nil {
		return nil, matrix.InvalidParam("filter is not a valid RoomEventFilter: %v", err)
	}
	f.RelTypes = append(f.RelTypes, f.UnstableRelTypes...)
	f.NotRelTypes = append(f.NotRelTypes, f.UnstableNotRelTypes...)
	return f, nil
}

// matches applies the filter to one event.
func (f *historyFilter) matches(e *storage.Event) bool {
	if !f.allowsEvent(e) {
		return false
	}
	if f.arrivedBy > 0 && e.StreamPos > f.arrivedBy {
		return false
	}
	if len(f.RelTypes) > 0 && !slices.Contains(f.RelTypes, e.RelType) {
		return false
	}
	if e.RelType != "" && slices.Contains(f.NotRelTypes, e.RelType) {
		return false
	}
	return true
}

func topoString(p storage.TopoPos) string {
	return topoToken{Depth: p.Depth, Events: p.Stream}.String()
}

// byStreamPos orders events by stream position (arrival order), for
// slices.SortFunc. cmp.Compare, not a subtraction: int is 32 bits on the
// armv7 build, and an int64 difference would wrap there.
func byStreamPos(a, b *storage.Event) int { return cmp.Compare(a.StreamPos, b.StreamPos) }

// parsePosition reads a pagination token of either shape as a position in
// the room.
func (s *Server) parsePosition(ctx context.Context, roomID, tok string) (storage.TopoPos, error) {
	if strings.HasPrefix(tok, "t") {
		t, err := parseTopoToken(tok)
		return storage.TopoPos{Depth: t.Depth, Stream: t.Events}, err
	}
	st, err := parseSyncToken(tok)
	if err != nil {
		return storage.TopoPos{}, matrix.InvalidParam("invalid pagination token %q", tok)
	}
	return s.store.TopoPosAtStream(ctx, roomID, st.Events)
}

// queryLimit reads the limit query parameter.
func queryLimit(r *http.Request, def, maximum int) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, matrix.InvalidParam("limit must be a non-negative integer")
	}
	return min(n, maximum), nil
}

// historyReader is who reads a room's history through /messages and
// /context. A client sees what its membership and the room's history
// visibility allow; the Synapse admin API (Synapse's use_admin_priviledge)
// sees every live event of any room, in it or not, and its events are
// formatted for no one in particular.
type historyReader struct {
	admin  bool
	device *Device // the client; nil for the admin API
}

// clientReader is the reader behind the client endpoints.
func clientReader(d *Device) historyReader { return historyReader{device: d} }

// adminReader is the reader behind the Synapse admin endpoints.
func adminReader() historyReader { return historyReader{admin: true} }

// mayRead is the gate in front of /messages: a client must be able to read
// the room's history (canReadHistory); the admin reads any room.
func (s *Server) mayRead(ctx context.Context, rd historyReader, roomID string) error {
	if rd.admin {
		return nil
	}
	return s.canReadHistory(ctx, roomID, rd.device.UserID)
}

// seen is the gate in front of /context: e as the reader may see it, nil
// when they may not.
func (s *Server) seen(ctx context.Context, rd historyReader, e *storage.Event) (*storage.Event, error) {
	if rd.admin {
		return e, nil
	}
	return s.visibleEvent(ctx, rd.device.UserID, e)
}

// visible keeps the events of evs the reader may see.
func (s *Server) visible(ctx context.Context, rd historyReader, evs []*storage.Event) ([]*storage.Event, error) {
	if rd.admin {
		return evs, nil
	}
	return s.filterVisible(ctx, rd.device.UserID, evs)
}

// formatter renders events for the reader.
func (s *Server) formatter(rd historyReader) *eventFormatter {
	if rd.admin {
		return &eventFormatter{store: s.store, viewer: rd.device, now: s.now()}
	}
	return s.formatterFor(rd.device)
}

// page is one walk through a room's timeline.
type page struct {
	events []*storage.Event
	// next is the position after the last event consumed (returned or
	// skipped); more is false once the walk reached the end (or `to`).
	next storage.TopoPos
	more bool
}

// paginate walks the room from `from` collecting up to limit events the
// filter matches and the reader may see.
func (s *Server) paginate(ctx context.Context, rd historyReader, roomID string, from storage.TopoPos, to *storage.TopoPos,
	limit int, backwards bool, f *historyFilter) (*page, error) {
	p := &page{next: from, more: true}
	if limit <= 0 {
		return p, nil
	}
	scanned := 0
	for len(p.events) < limit && scanned < maxPageScan {
		need := limit - len(p.events)
		batch := need + 1 // one extra tells whether more exist
		if scanned > 0 {
			batch = min(max(need*4, 50), 500)
		}
		rows, err := s.store.RoomEventsTopo(ctx, roomID, p.next, to, batch, backwards)
		if err != nil {
			return nil, err
		}
		visible, err := s.visible(ctx, rd, rows)
		if err != nil {
			return nil, err
		}
		seen := visibleByID(visible)
		consumed := 0
		for _, e := range rows {
			consumed++
			scanned++
			if backwards {
				p.next = storage.TopoPos{Depth: e.Depth, Stream: e.StreamPos - 1}
			} else {
				p.next = storage.TopoPos{Depth: e.Depth, Stream: e.StreamPos}
			}
			if v := seen[e.EventID]; v != nil && f.matches(e) {
				p.events = append(p.events, v)
				if len(p.events) == limit {
					break
				}
			}
		}
		if len(rows) < batch && consumed == len(rows) {
			p.more = false
			break
		}
	}
	return p, nil
}

// canReadHistory is the gate in front of history endpoints: members past
// (who have not forgotten the room) and present, and anyone when the room
// is world-readable. Which events
// they see is then up to filterVisible.
func (s *Server) canReadHistory(ctx context.Context, roomID, userID string) error {
	m, err := s.store.Membership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if m == rooms.MembershipJoin || m == rooms.MembershipInvite || m == rooms.MembershipKnock {
		return nil
	}
	if m != "" {
		// Former members keep their history until they forget the room.
		forgot, err := s.store.IsForgotten(ctx, userID, roomID)
		if err != nil {
			return err
		}
		if !forgot {
			return nil
		}
	}
	hv, err := s.store.CurrentStateEvent(ctx, roomID, rooms.TypeHistoryVis, "")
	if err == nil && gjson.GetBytes(contentOf(hv.JSON), "history_visibility").String() == "world_readable" {
		return nil
	}
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	return matrix.Forbidden("you are not allowed to view events in room %s", roomID)
}

// lazyMembers returns the m.room.member events of the senders of evs (spec:
// "Lazy-loading room members"), each read from the state after one of that
// sender's events, so the profile shown is the one they had then.
func (s *Server) lazyMembers(ctx context.Context, evs []*storage.Event) ([]*storage.Event, error) {
	groups := map[int64]storage.StateKeyMap{}
	want := map[string]string{} // sender → member event ID
	for _, e := range evs {
		if _, done := want[e.Sender]; done {
			continue
		}
		st, ok := groups[e.StateGroup]
		if !ok {
			var err error
			if st, err = s.store.StateGroup(ctx, e.StateGroup); err != nil {
				return nil, err
			}
			groups[e.StateGroup] = st
		}
		want[e.Sender] = st[storage.StateKey{Type: rooms.TypeMember, StateKey: e.Sender}]
	}
	ids := make([]string, 0, len(want))
	for _, id := range want {
		if id != "" {
			ids = append(ids, id)
		}
	}
	return s.store.EventsByID(ctx, ids)
}

// parseDir reads /messages' dir: b, or f (Synapse's default when absent;
// the spec requires it).
func parseDir(dir string) (backwards bool, err error) {
	switch dir {
	case "b":
		return true, nil
	case "f", "":
		return false, nil
	}
	return false, matrix.InvalidParam("dir must be b or f")
}

// historyRange resolves /messages' from and to tokens. Without from
// (allowed since v1.3) it starts at the end of the room going backwards and
// at its beginning going forwards; start is the token the answer reports.
func (s *Server) historyRange(ctx context.Context, roomID, fromTok, toTok string, backwards bool) (from storage.TopoPos, start string, to *storage.TopoPos, err error) {
	start = fromTok
	switch {
	case start != "":
		if from, err = s.parsePosition(ctx, roomID, start); err != nil {
			return from, "", nil, err
		}
	case backwards:
		if from, err = s.store.TopoPosAtStream(ctx, roomID, storage.TopoEnd.Stream); err != nil {
			return from, "", nil, err
		}
		start = topoString(from)
	default:
		start = topoString(from)
	}
	if toTok != "" {
		p, err := s.parsePosition(ctx, roomID, toTok)
		if err != nil {
			return from, "", nil, err
		}
		to = &p
	}
	return from, start, to, nil
}

// GET /_matrix/client/v3/rooms/{roomId}/messages
func (s *Server) getMessages(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	return s.serveMessages(w, r, clientReader(deviceFrom(r.Context())), roomID)
}

// serveMessages answers /messages for the client and admin endpoints alike:
// dir, from, to, limit and filter mean the same to both, and only the
// reader's gates differ (historyReader).
func (s *Server) serveMessages(w http.ResponseWriter, r *http.Request, rd historyReader, roomID string) error {
	ctx := r.Context()
	q := r.URL.Query()
	backwards, err := parseDir(q.Get("dir"))
	if err != nil {
		return err
	}
	f, err := parseHistoryFilter(r)
	if err != nil {
		return err
	}
	def := defaultPageLimit
	if f.Limit != nil && *f.Limit > 0 {
		def = min(*f.Limit, maxPageLimit)
	}
	limit, err := queryLimit(r, def, maxPageLimit)
	if err != nil {
		return err
	}
	if err := s.mayRead(ctx, rd, roomID); err != nil {
		return err
	}
	from, start, to, err := s.historyRange(ctx, roomID, q.Get("from"), q.Get("to"), backwards)
	if err != nil {
		return err
	}
	if backwards && start != "" && !strings.HasPrefix(start, "t") {
		if st, err := parseSyncToken(start); err == nil {
			f.arrivedBy = st.Events
		}
	}
	pg, err := s.paginate(ctx, rd, roomID, from, to, limit, backwards, f)
	if err != nil {
		return err
	}
	// The start of what this server has: older history may be on other
	// servers of the room. Fetch it (at most 100 events a time, as
	// servers answer /backfill), page again, and so on until the page is
	// full or nothing more comes. While backfill brought events, more may
	// be there: the answer keeps an end token, so the client asks again
	// (and this server backfills again) rather than stop short of the
	// room's start.
	backfilled := false
	for round := 0; backwards && !pg.more && to == nil && len(pg.events) < limit && round < maxBackfillRounds; round++ {
		n, err := s.backfill(ctx, roomID, limit-len(pg.events))
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		backfilled = true
		if pg, err = s.paginate(ctx, rd, roomID, from, to, limit, backwards, f); err != nil {
			return err
		}
	}
	// Each event's JSON is shared with /sync and every other reader's
	// page (formatJSON): clients filling the gaps of limited timelines
	// page through the same recent events.
	fm := s.formatter(rd)
	chunk, err := fm.formatJSON(ctx, pg.events)
	if err != nil {
		return err
	}
	resp := map[string]any{"start": start, "chunk": chunk}
	// Going back, end disappears at the start of the room (spec). Going
	// forwards the live end is not final, so a client that got events
	// keeps a token to catch up from later (as Synapse does).
	if pg.more || (!backwards && len(chunk) > 0) || backfilled {
		resp["end"] = topoString(pg.next)
	}
	if f.LazyLoadMembers && len(pg.events) > 0 {
		members, err := s.lazyMembers(ctx, pg.events)
		if err != nil {
			return err
		}
		state, err := fm.formatJSON(ctx, members)
		if err != nil {
			return err
		}
		if len(state) > 0 {
			resp["state"] = state
		}
	}
	return writeJSON(w, http.StatusOK, resp)
}

// GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}
func (s *Server) getContext(w http.ResponseWriter, r *http.Request) error {
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	return s.serveContext(w, r, clientReader(deviceFrom(r.Context())), roomID)
}

// serveContext answers /context for the client and admin endpoints alike.
// An event the reader may not see is not found.
func (s *Server) serveContext(w http.ResponseWriter, r *http.Request, rd historyReader, roomID string) error {
	ctx := r.Context()
	eventID, err := pathParam(r, "eventId")
	if err != nil {
		return err
	}
	f, err := parseHistoryFilter(r)
	if err != nil {
		return err
	}
	limit, err := queryLimit(r, defaultPageLimit, maxPageLimit)
	if err != nil {
		return err
	}
	e, err := s.store.EventByID(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && (e.RoomID != roomID || !e.Live())) {
		return matrix.NotFound("Event not found.")
	}
	if err != nil {
		return err
	}
	if e, err = s.seen(ctx, rd, e); err != nil {
		return err
	} else if e == nil {
		return matrix.NotFound("Event not found.")
	}
	// The limit is shared: half before, the rest after (as Synapse).
	nBefore := limit / 2
	before, err := s.paginate(ctx, rd, roomID, storage.TopoPos{Depth: e.Depth, Stream: e.StreamPos - 1}, nil, nBefore, true, f)
	if err != nil {
		return err
	}
	after, err := s.paginate(ctx, rd, roomID, storage.TopoPos{Depth: e.Depth, Stream: e.StreamPos}, nil, limit-nBefore, false, f)
	if err != nil {
		return err
	}
	fm := s.formatter(rd)
	all := append(append([]*storage.Event{e}, before.events...), after.events...)
	formatted, err := fm.format(ctx, all)
	if err != nil {
		return err
	}
	// The state is the state after the last event returned.
	last := e
	if len(after.events) > 0 {
		last = after.events[len(after.events)-1]
	}
	stateMap, err := s.store.StateGroup(ctx, last.StateGroup)
	if err != nil {
		return err
	}
	var stateEvs []*storage.Event
	if f.LazyLoadMembers {
		if stateEvs, err = s.lazyMembers(ctx, all); err != nil {
			return err
		}
	} else {
		if stateEvs, err = s.stateEvents(ctx, stateMap); err != nil {
			return err
		}
	}
	state, err := fm.format(ctx, stateEvs)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{
		"event":         formatted[0],
		"events_before": formatted[1 : 1+len(before.events)],
		"events_after":  formatted[1+len(before.events):],
		"state":         state,
		"start":         topoString(before.next),
		"end":           topoString(after.next),
	})
}

// GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event
//
// Finds the event closest to ts in direction dir: the first at or after it
// (f) or the last at or before it (b), among those the caller may see.
func (s *Server) getTimestampToEvent(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	if q.Get("ts") == "" {
		return matrix.MissingParam("ts is required")
	}
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil {
		return matrix.InvalidParam("ts must be an integer")
	}
	var forwards bool
	switch q.Get("dir") {
	case "f":
		forwards = true
	case "b":
	case "":
		return matrix.MissingParam("dir is required")
	default:
		return matrix.InvalidParam("dir must be f or b")
	}
	if err := s.canReadHistory(ctx, roomID, me.UserID); err != nil {
		return err
	}
	evs, err := s.store.EventsNearTimestamp(ctx, roomID, ts, forwards, 100)
	if err != nil {
		return err
	}
	visible, err := s.filterVisible(ctx, me.UserID, evs)
	if err != nil {
		return err
	}
	var found *storage.Event
	if len(visible) > 0 {
		found = visible[0]
	}
	// History this server lacks may hold a closer event: when nothing was
	// found, or (looking forwards) when the event found follows a gap,
	// ask the room's other servers, and take their answer if it is
	// closer, as Synapse does.
	gap := false
	if found != nil && forwards {
		if gap, err = s.nextToGap(ctx, found); err != nil {
			return err
		}
	}
	if found == nil || gap {
		remote, ok := s.remoteTimestampToEvent(ctx, roomID, q.Get("ts"), q.Get("dir"))
		if ok && (found == nil || absDiff(remote.OriginServerTS, ts) < absDiff(found.OriginServerTS, ts)) {
			if seen, err := s.visibleEvent(ctx, me.UserID, remote); err != nil {
				return err
			} else if seen != nil {
				found = seen
			}
		}
	}
	if found == nil {
		return matrix.NotFound("no event found from %d in direction %s", ts, q.Get("dir"))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"event_id": found.EventID, "origin_server_ts": found.OriginServerTS})
}

func absDiff(a, b int64) int64 {
	if a > b {
		return a - b
	}
	return b - a
}
