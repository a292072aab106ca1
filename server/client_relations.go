package server

import (
	"context"
	"errors"
	"net/http"
	"slices"

	"github.com/tidwall/gjson"

	"hearth/server/matrix"
	"hearth/server/storage"
)

// Relations, threads and bundled aggregations (spec: Client-Server API,
// "Forming relationships between events", "Threading", "Event
// replacements", "Reference relations").

const (
	relReplace    = "m.replace"
	relThread     = "m.thread"
	relReference  = "m.reference"
	relAnnotation = "m.annotation"
	// relationsRecurseDepth is how far ?recurse=true follows relations of
	// relations (Synapse uses 3 as well).
	relationsRecurseDepth = 3
	defaultRelationsLimit = 5
)

// bundledAggregations computes unsigned.m.relations for a batch of events:
// the latest valid edit (m.replace), thread summaries (m.thread) and
// references (m.reference). State events, edits and annotations get none
// (spec: "Server-side aggregation of child events"), and a redacted
// event no edit.
func (f *eventFormatter) bundledAggregations(ctx context.Context, evs []*storage.Event) (map[string]map[string]any, error) {
	byID := map[string]*storage.Event{}
	var ids []string
	roots := map[string][]string{} // room → candidate thread roots
	isRoot := map[string]bool{}
	for _, e := range evs {
		relType := e.RelType
		if e.RedactedBy != "" {
			relType = "" // redaction stripped its m.relates_to
		}
		if e.IsState() || !e.Live() || relType == relReplace || relType == relAnnotation {
			continue
		}
		if _, dup := byID[e.EventID]; dup {
			continue
		}
		byID[e.EventID] = e
		ids = append(ids, e.EventID)
		if relType != relThread { // a thread event cannot root a thread
			roots[e.RoomID] = append(roots[e.RoomID], e.EventID)
			isRoot[e.EventID] = true
		}
	}
	// Events known to have nothing to bundle are not asked about again
	// (syncShared.noRelations).
	var versions map[string]uint64
	if f.shared != nil {
		ids, roots, versions = f.withoutKnownUnrelated(byID, ids, isRoot)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	out := map[string]map[string]any{}
	related := map[string]bool{} // asked events with something to bundle
	put := func(id, key string, v any) {
		if out[id] == nil {
			out[id] = map[string]any{}
		}
		out[id][key] = v
	}

	rels, err := f.store.RelationsTo(ctx, ids, relReplace, relReference)
	if err != nil {
		return nil, err
	}
	edits := map[string]*storage.Event{}
	refs := map[string][]map[string]string{}
	for _, rel := range rels {
		orig := byID[rel.RelatesTo]
		if orig == nil || rel.RoomID != orig.RoomID {
			continue
		}
		related[orig.EventID] = true
		switch rel.RelType {
		case relReplace:
			// A redacted original shows no edit (spec: "Redactions of the
			// original event"); its thread and references remain.
			if orig.RedactedBy == "" && validEdit(orig, rel) && (edits[orig.EventID] == nil || laterEdit(rel, edits[orig.EventID])) {
				edits[orig.EventID] = rel
			}
		case relReference:
			refs[orig.EventID] = append(refs[orig.EventID], map[string]string{"event_id": rel.EventID})
		}
	}
	for id, chunk := range refs {
		put(id, relReference, map[string]any{"chunk": chunk})
	}
	if len(edits) > 0 {
		list := make([]*storage.Event, 0, len(edits))
		origs := make([]string, 0, len(edits))
		for orig, e := range edits {
			list = append(list, e)
			origs = append(origs, orig)
		}
		if f.visible != nil {
			// An edit the viewer may not see, or sees redacted (its sender
			// was erased), is no edit for them.
			shown, err := f.visible(ctx, list)
			if err != nil {
				return nil, err
			}
			as := map[*storage.Event]bool{}
			for _, e := range shown {
				as[e] = true
			}
			keepList, keepOrigs := list[:0], origs[:0]
			for i, e := range list {
				if as[e] {
					keepList, keepOrigs = append(keepList, e), append(keepOrigs, origs[i])
				}
			}
			list, origs = keepList, keepOrigs
		}
		sub := &eventFormatter{store: f.store, viewer: f.viewer, now: f.now, omitRoomID: f.omitRoomID, noBundles: true, visible: f.visible, shared: f.shared, membershipAt: f.membershipAt}
		formatted, err := sub.format(ctx, list)
		if err != nil {
			return nil, err
		}
		for i, ce := range formatted {
			put(origs[i], relReplace, ce)
		}
	}

	viewer := ""
	if f.viewer != nil {
		viewer = f.viewer.UserID
	}
	if len(roots) > 1 {
		// Events of several rooms (an initial /sync formats all its rooms
		// at once): one query finds the few rooms with threads.
		var all []string
		for _, list := range roots {
			all = append(all, list...)
		}
		threaded, err := f.store.ThreadRootsAmong(ctx, all)
		if err != nil {
			return nil, err
		}
		for id := range threaded {
			related[id] = true
		}
		for roomID, list := range roots {
			if !slices.ContainsFunc(list, func(id string) bool { return threaded[id] }) {
				delete(roots, roomID)
			}
		}
	}
	for roomID, list := range roots {
		sums, err := f.store.ThreadSummaries(ctx, roomID, list, viewer)
		if err != nil {
			return nil, err
		}
		if len(sums) == 0 {
			continue
		}
		for root := range sums {
			related[root] = true
		}
		latest := make([]*storage.Event, 0, len(sums))
		rootIDs := make([]string, 0, len(sums))
		for root, sum := range sums {
			latest = append(latest, sum.Latest)
			rootIDs = append(rootIDs, root)
		}
		if f.visible != nil {
			// The latest event as the viewer may see it; a thread whose
			// latest event they may not see gets no summary.
			shown, err := f.visible(ctx, latest)
			if err != nil {
				return nil, err
			}
			byID := make(map[string]*storage.Event, len(shown))
			for _, e := range shown {
				byID[e.EventID] = e
			}
			keepLatest, keepRoots := latest[:0], rootIDs[:0]
			for i, e := range latest {
				if v := byID[e.EventID]; v != nil {
					keepLatest, keepRoots = append(keepLatest, v), append(keepRoots, rootIDs[i])
				}
			}
			latest, rootIDs = keepLatest, keepRoots
		}
		// The latest event carries its own edit, which Element shows in
		// the thread summary.
		sub := &eventFormatter{store: f.store, viewer: f.viewer, now: f.now, omitRoomID: f.omitRoomID, visible: f.visible, shared: f.shared, membershipAt: f.membershipAt}
		formatted, err := sub.format(ctx, latest)
		if err != nil {
			return nil, err
		}
		for i, root := range rootIDs {
			sum := sums[root]
			put(root, relThread, map[string]any{
				"latest_event":              formatted[i],
				"count":                     sum.Count,
				"current_user_participated": sum.Participated || byID[root].Sender == viewer,
			})
		}
	}
	if versions != nil {
		for _, id := range ids {
			if !related[id] {
				f.shared.noRelations.Add(id, relationMark{version: versions[byID[id].RoomID], asRoot: isRoot[id]})
			}
		}
	}
	return out, nil
}

// validEdit applies the spec's validity rules for m.replace (v1.7+): same
// room (checked by the caller), same sender and type, no state key, and,
// unless encrypted, an m.new_content object.
func validEdit(orig, edit *storage.Event) bool {
	if edit.Sender != orig.Sender || edit.Type != orig.Type || edit.IsState() || orig.IsState() {
		return false
	}
	if edit.Type != "m.room.encrypted" && !gjson.GetBytes(edit.JSON, `content.m\.new_content`).IsObject() {
		return false
	}
	return true
}

// laterEdit orders edits: the latest origin_server_ts wins, ties going to
// the lexicographically greatest event ID (spec: "Applying m.new_content").
func laterEdit(a, b *storage.Event) bool {
	if a.OriginServerTS != b.OriginServerTS {
		return a.OriginServerTS > b.OriginServerTS
	}
	return a.EventID > b.EventID
}

// visibleParent loads an event of the room the caller may see; anything
// else is 404 M_NOT_FOUND, so existence does not leak.
func (s *Server) visibleParent(ctx context.Context, userID, roomID, eventID string) (*storage.Event, error) {
	e, err := s.store.EventByID(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && (e.RoomID != roomID || !e.Live())) {
		return nil, matrix.NotFound("event not found")
	}
	if err != nil {
		return nil, err
	}
	if e, err = s.visibleEvent(ctx, userID, e); err != nil {
		return nil, err
	} else if e == nil {
		return nil, matrix.NotFound("event not found")
	}
	return e, nil
}

// GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}
//
// Also serves the shorter /relations/{eventId} and /relations/{eventId}/{relType}.
func (s *Server) getRelations(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	eventID, err := pathParam(r, "eventId")
	if err != nil {
		return err
	}
	relType, err := pathParam(r, "relType")
	if err != nil {
		return err
	}
	eventType, err := pathParam(r, "eventType")
	if err != nil {
		return err
	}
	q := r.URL.Query()
	backwards := true
	switch q.Get("dir") {
	case "", "b":
	case "f":
		backwards = false
	default:
		return matrix.InvalidParam("dir must be b or f")
	}
	limit, err := queryLimit(r, defaultRelationsLimit, maxPageLimit)
	if err != nil {
		return err
	}
	recurse, err := queryBool(r, "recurse", false)
	if err != nil {
		return err
	}
	if !recurse {
		if recurse, err = queryBool(r, "org.matrix.msc3981.recurse", false); err != nil {
			return err
		}
	}
	if _, err := s.visibleParent(ctx, me.UserID, roomID, eventID); err != nil {
		return err
	}
	rq := storage.RelationQuery{RoomID: roomID, EventID: eventID, RelType: relType, EventType: eventType, MaxDepth: 1, Backwards: backwards}
	if recurse {
		rq.MaxDepth = relationsRecurseDepth
	}
	if backwards {
		rq.From = storage.TopoEnd
	}
	if from := q.Get("from"); from != "" {
		if rq.From, err = s.parsePosition(ctx, roomID, from); err != nil {
			return err
		}
	}
	if to := q.Get("to"); to != "" {
		p, err := s.parsePosition(ctx, roomID, to)
		if err != nil {
			return err
		}
		rq.To = &p
	}
	var chunk []*storage.Event
	more := true
	for scanned := 0; len(chunk) < limit && scanned < maxPageScan; {
		rq.Limit = limit - len(chunk) + 1
		rows, err := s.store.RelatedEvents(ctx, rq)
		if err != nil {
			return err
		}
		visible, err := s.filterVisible(ctx, me.UserID, rows)
		if err != nil {
			return err
		}
		seen := visibleByID(visible)
		consumed := 0
		for _, e := range rows {
			consumed++
			scanned++
			rq.From = storage.TopoPos{Depth: e.Depth, Stream: e.StreamPos}
			if backwards {
				rq.From.Stream--
			}
			if v := seen[e.EventID]; v != nil {
				chunk = append(chunk, v)
				if len(chunk) == limit {
					break
				}
			}
		}
		if len(rows) < rq.Limit && consumed == len(rows) {
			more = false
			break
		}
	}
	fm := s.formatterFor(me)
	out, err := fm.format(ctx, chunk)
	if err != nil {
		return err
	}
	resp := map[string]any{"chunk": out}
	if more && limit > 0 {
		resp["next_batch"] = topoString(rq.From)
	}
	if from := q.Get("from"); from != "" {
		resp["prev_batch"] = from
	}
	if recurse {
		resp["recursion_depth"] = relationsRecurseDepth
	}
	return writeJSON(w, http.StatusOK, resp)
}

// GET /_matrix/client/v1/rooms/{roomId}/threads
//
// Thread roots, most recently active first; include=participated keeps the
// threads the caller started or replied in. Tokens are stream positions of
// a thread's latest reply.
func (s *Server) getThreads(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	participant := ""
	switch q.Get("include") {
	case "", "all":
	case "participated":
		participant = me.UserID
	default:
		return matrix.InvalidParam("include must be all or participated")
	}
	limit, err := queryLimit(r, defaultRelationsLimit, maxPageLimit)
	if err != nil {
		return err
	}
	if err := s.canReadHistory(ctx, roomID, me.UserID); err != nil {
		return err
	}
	upTo := storage.TopoEnd.Stream
	if from := q.Get("from"); from != "" {
		if upTo, err = parseStreamToken(from); err != nil {
			return err
		}
	}
	var chunk []*storage.Event
	more := true
	for scanned := 0; len(chunk) < limit && scanned < maxPageScan; {
		batch := limit - len(chunk) + 1
		trs, err := s.store.ThreadRoots(ctx, roomID, participant, upTo, batch)
		if err != nil {
			return err
		}
		ids := make([]string, len(trs))
		for i, tr := range trs {
			ids[i] = tr.EventID
		}
		found, err := s.store.EventsByID(ctx, ids)
		if err != nil {
			return err
		}
		byID := map[string]*storage.Event{}
		for _, e := range found {
			byID[e.EventID] = e
		}
		ordered := make([]*storage.Event, 0, len(trs))
		for _, id := range ids {
			if e := byID[id]; e != nil {
				ordered = append(ordered, e)
			}
		}
		visible, err := s.filterVisible(ctx, me.UserID, ordered)
		if err != nil {
			return err
		}
		seen := visibleByID(visible)
		consumed := 0
		for _, tr := range trs {
			consumed++
			scanned++
			upTo = tr.LatestReply - 1
			if v := seen[tr.EventID]; v != nil {
				chunk = append(chunk, v)
				if len(chunk) == limit {
					break
				}
			}
		}
		if len(trs) < batch && consumed == len(trs) {
			more = false
			break
		}
	}
	fm := s.formatterFor(me)
	out, err := fm.format(ctx, chunk)
	if err != nil {
		return err
	}
	resp := map[string]any{"chunk": out}
	if more && limit > 0 {
		resp["next_batch"] = streamToken{Events: upTo}.String()
	}
	return writeJSON(w, http.StatusOK, resp)
}

// relationMark records that an event had nothing to bundle when its room's
// relations version was version (storage.RelationsVersion). asRoot: it was
// also asked about as a thread root (an event in a thread is not, until a
// redaction strips its relation).
type relationMark struct {
	version uint64
	asRoot  bool
}

// withoutKnownUnrelated drops from ids the events marked as having nothing
// to bundle at their room's current relations version, and returns the
// thread roots among the rest by room, and the versions, read before the
// relation reads that follow: a relation stored after this read moves
// them, so the marks made from those reads are stale as soon as it is
// visible.
func (f *eventFormatter) withoutKnownUnrelated(byID map[string]*storage.Event, ids []string, isRoot map[string]bool) ([]string, map[string][]string, map[string]uint64) {
	versions := map[string]uint64{}
	roots := map[string][]string{}
	var ask []string
	for _, id := range ids {
		roomID := byID[id].RoomID
		v, ok := versions[roomID]
		if !ok {
			v = f.store.RelationsVersion(roomID)
			versions[roomID] = v
		}
		if m, ok := f.shared.noRelations.Get(id); ok && m.version == v && (m.asRoot || !isRoot[id]) {
			continue
		}
		if fv, ok := f.store.UnrelatedAt(id); ok && fv == v {
			continue // a new event of this server, nothing related since
		}
		ask = append(ask, id)
		if isRoot[id] {
			roots[roomID] = append(roots[roomID], id)
		}
	}
	return ask, roots, versions
}
