package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/tidwall/gjson"

	"hearth/server/matrix"
	"hearth/server/rooms"
	"hearth/server/storage"
)

// Server-side search (spec: Client-Server API, "Server Side Search"),
// Synapse's behaviour where the spec says nothing: the rooms searched are
// those the user is joined to (with their predecessors when the filter
// names rooms), every result passes the filter and history visibility,
// count is the number of matches before visibility, and next_batch is
// given whenever a page is full.
//
// The index and the query syntax are storage's (storage/search.go).

const (
	defaultSearchLimit  = 10
	maxSearchLimit      = 1000
	defaultContextLimit = 5 // event_context's before_limit and after_limit (Synapse)
	// maxSearchScan bounds the matches one request examines when history
	// visibility or a filter the index cannot apply hides most of them;
	// the client gets a partial page and a next_batch to go on from.
	maxSearchScan = 2000
)

// searchRequest is the body of POST /search.
type searchRequest struct {
	SearchCategories *struct {
		RoomEvents *searchCriteria `json:"room_events"`
	} `json:"search_categories"`
}

// searchCriteria is the room_events category.
type searchCriteria struct {
	SearchTerm   *string          `json:"search_term"`
	Keys         []string         `json:"keys"`
	Filter       *roomEventFilter `json:"filter"`
	OrderBy      string           `json:"order_by"`
	EventContext *struct {
		BeforeLimit    *int `json:"before_limit"`
		AfterLimit     *int `json:"after_limit"`
		IncludeProfile bool `json:"include_profile"`
	} `json:"event_context"`
	IncludeState bool `json:"include_state"`
	Groupings    struct {
		GroupBy []searchGroupBy `json:"group_by"`
	} `json:"groupings"`
}

type searchGroupBy struct {
	Key string `json:"key"`
}

// Validate checks what the JSON types do not.
func (c *searchCriteria) Validate() error {
	if c.SearchTerm == nil {
		return matrix.MissingParam("search_categories.room_events.search_term is required")
	}
	for _, k := range c.Keys {
		if _, ok := storage.SearchKeyType(k); !ok {
			return matrix.InvalidParam("unknown search key %q: keys are content.body, content.name and content.topic", k)
		}
	}
	if c.OrderBy != "" && c.OrderBy != "rank" && c.OrderBy != "recent" {
		return matrix.InvalidParam("order_by must be rank or recent")
	}
	for _, g := range c.Groupings.GroupBy {
		if g.Key != "room_id" && g.Key != "sender" {
			return matrix.InvalidParam("groupings can group by room_id and sender, not %q", g.Key)
		}
	}
	if ec := c.EventContext; ec != nil {
		if (ec.BeforeLimit != nil && *ec.BeforeLimit < 0) || (ec.AfterLimit != nil && *ec.AfterLimit < 0) {
			return matrix.InvalidParam("event_context limits must not be negative")
		}
	}
	if f := c.Filter; f != nil {
		sf := syncFilter{Room: &roomFilter{Timeline: f}}
		return sf.Validate()
	}
	return nil
}

func (c *searchCriteria) byRank() bool { return c.OrderBy != "recent" }

func (c *searchCriteria) groupedBy(key string) bool {
	return slices.Contains(c.Groupings.GroupBy, searchGroupBy{Key: key})
}

// searchBatch is what a next_batch token carries: where the previous page
// ended, in which order, and the group it was for (a group's next_batch
// pages through that group alone; Synapse's "batch_group").
type searchBatch struct {
	Order string            `json:"o"`
	Group string            `json:"g,omitempty"` // room_id or sender
	Key   string            `json:"k,omitempty"` // the room or the sender
	Pos   storage.SearchPos `json:"p"`
}

func (b searchBatch) String() string {
	raw, _ := json.Marshal(b)
	return base64.RawURLEncoding.EncodeToString(raw)
}

// parseSearchBatch reads next_batch; "" is the first page.
func parseSearchBatch(tok, order string) (*searchBatch, error) {
	if tok == "" {
		return nil, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	b := &searchBatch{}
	if err != nil || json.Unmarshal(raw, b) != nil || (b.Group != "" && b.Group != "room_id" && b.Group != "sender") {
		return nil, matrix.InvalidParam("invalid next_batch")
	}
	if b.Order != order {
		return nil, matrix.InvalidParam("next_batch belongs to a search ordered by %s", b.Order)
	}
	return b, nil
}

// searchResults is the room_events category of the answer.
type searchResults struct {
	Count      int                                    `json:"count"`
	Results    []searchResult                         `json:"results"`
	Highlights []string                               `json:"highlights"`
	NextBatch  string                                 `json:"next_batch,omitempty"`
	Groups     map[string]map[string]*searchGroupInfo `json:"groups,omitempty"`
	State      map[string][]clientEvent               `json:"state,omitempty"`
}

type searchResult struct {
	Rank    float64        `json:"rank"`
	Result  clientEvent    `json:"result"`
	Context *searchContext `json:"context,omitempty"`
}

type searchContext struct {
	Start        string                   `json:"start"`
	End          string                   `json:"end"`
	EventsBefore []clientEvent            `json:"events_before"`
	EventsAfter  []clientEvent            `json:"events_after"`
	ProfileInfo  map[string]searchProfile `json:"profile_info,omitempty"`
}

type searchProfile struct {
	DisplayName string `json:"displayname,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// searchGroupInfo is one group's entry. Order is the index in results of
// the group's first result: sorting groups by it keeps the results' order
// (the spec's order is an integer, so not Synapse's rank).
type searchGroupInfo struct {
	NextBatch string   `json:"next_batch,omitempty"`
	Order     int      `json:"order"`
	Results   []string `json:"results"`
}

// POST /_matrix/client/v3/search
func (s *Server) postSearch(w http.ResponseWriter, r *http.Request) error {
	var req searchRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.SearchCategories == nil {
		return matrix.MissingParam("search_categories is required")
	}
	crit := req.SearchCategories.RoomEvents
	if crit == nil {
		// room_events is the only category and it is optional.
		return writeJSON(w, http.StatusOK, map[string]any{"search_categories": map[string]any{}})
	}
	if err := crit.Validate(); err != nil {
		return err
	}
	order := "recent"
	if crit.byRank() {
		order = "rank"
	}
	batch, err := parseSearchBatch(r.URL.Query().Get("next_batch"), order)
	if err != nil {
		return err
	}
	res, err := s.searchRoomEvents(r.Context(), deviceFrom(r.Context()), crit, batch)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"search_categories": map[string]any{"room_events": res}})
}

// searchRoomEvents runs the room_events search for me.
func (s *Server) searchRoomEvents(ctx context.Context, me *Device, crit *searchCriteria, batch *searchBatch) (*searchResults, error) {
	q, f, err := s.searchQuery(ctx, me, crit, batch)
	if err != nil {
		return nil, err
	}
	out := &searchResults{Results: []searchResult{}, Highlights: []string{}}
	limit := q.Limit
	var found []storage.SearchResult
	var last *storage.SearchPos // the last match consumed
	scanned, more := 0, false
	for round := 0; len(found) < limit && scanned < maxSearchScan; round++ {
		need := limit - len(found)
		q.Limit = need
		if round > 0 {
			q.Limit = min(max(need*4, 50), 500, maxSearchScan-scanned)
		}
		page, count, err := s.store.SearchEvents(ctx, q)
		if err != nil {
			return nil, err
		}
		if round == 0 {
			out.Count = count
		}
		visible, err := s.searchVisible(ctx, me.UserID, f, page)
		if err != nil {
			return nil, err
		}
		consumed := 0
		for _, m := range page {
			consumed++
			p := m.Pos()
			last = &p
			if visible[m.Event.EventID] {
				if found = append(found, m); len(found) == limit {
					break
				}
			}
		}
		scanned += consumed
		more = len(page) == q.Limit || consumed < len(page)
		if !more {
			break
		}
		q.After = last
	}
	evs := make([]*storage.Event, len(found))
	for i, m := range found {
		evs[i] = m.Event
	}
	rd := clientReader(me)
	fm := s.formatter(rd)
	formatted, err := fm.format(ctx, evs)
	if err != nil {
		return nil, err
	}
	for i, m := range found {
		out.Results = append(out.Results, searchResult{Rank: m.Rank, Result: formatted[i]})
	}
	if h, err := s.store.SearchHighlights(ctx, q.Term, evs); err != nil {
		return nil, err
	} else if h != nil {
		out.Highlights = h
	}
	// Synapse gives next_batch whenever a page is full, even if it was
	// the last; and a page cut short by maxSearchScan goes on too.
	if last != nil && (len(found) == limit || more) {
		nb := searchBatch{Order: "recent", Pos: *last}
		if q.ByRank {
			nb.Order = "rank"
		}
		if batch != nil {
			nb.Group, nb.Key = batch.Group, batch.Key
		}
		out.NextBatch = nb.String()
		s.searchGroups(out, crit, found, nb)
	} else {
		s.searchGroups(out, crit, found, searchBatch{})
	}
	if ec := crit.EventContext; ec != nil {
		before, after := defaultContextLimit, defaultContextLimit
		if ec.BeforeLimit != nil {
			before = min(*ec.BeforeLimit, maxPageLimit)
		}
		if ec.AfterLimit != nil {
			after = min(*ec.AfterLimit, maxPageLimit)
		}
		contexts, err := s.searchContexts(ctx, me.UserID, f.ignored, fm, evs, before, after, ec.IncludeProfile)
		if err != nil {
			return nil, err
		}
		for i, c := range contexts {
			out.Results[i].Context = c
		}
	}
	if crit.IncludeState {
		if out.State, err = s.searchState(ctx, fm, found); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// searchQuery turns the criteria into the index's query and the filter
// every result must pass besides (what the index cannot apply: wildcards,
// contains_url, ignored users).
func (s *Server) searchQuery(ctx context.Context, me *Device, crit *searchCriteria, batch *searchBatch) (*storage.SearchQuery, *roomEventFilter, error) {
	f := &roomEventFilter{}
	if crit.Filter != nil {
		c := *crit.Filter
		f = &c
	}
	ignored, err := s.ignoredUsers(ctx, me.UserID)
	if err != nil {
		return nil, nil, err
	}
	f.ignored = ignored
	q := &storage.SearchQuery{Term: *crit.SearchTerm, UserID: me.UserID, ByRank: crit.byRank(), Limit: defaultSearchLimit}
	if f.Limit != nil && *f.Limit > 0 {
		q.Limit = min(*f.Limit, maxSearchLimit)
	}
	keys := crit.Keys
	if len(keys) == 0 {
		keys = []string{"content.body", "content.name", "content.topic"}
	}
	for _, k := range keys {
		typ, _ := storage.SearchKeyType(k)
		if f.eventFilter.allows(typ, "") && !slices.Contains(q.Types, typ) {
			q.Types = append(q.Types, typ)
		}
	}
	// A room upgrade leaves its history in the old room: searching a room
	// searches its predecessors (Synapse), if the user is still in them.
	if f.Rooms != nil {
		rooms := slices.Clone(f.Rooms)
		for _, id := range f.Rooms {
			if !strings.Contains(id, "*") {
				prev, err := s.predecessors(ctx, id)
				if err != nil {
					return nil, nil, err
				}
				rooms = append(rooms, prev...)
			}
		}
		f.Rooms = rooms
	}
	if batch != nil {
		// A group's next_batch keeps to its group.
		switch batch.Group {
		case "room_id":
			f.Rooms = narrow(f.Rooms, f.NotRooms, batch.Key)
		case "sender":
			f.Senders = narrow(f.Senders, f.NotSenders, batch.Key)
		}
		q.After = &batch.Pos
	}
	q.Rooms, q.NotRooms = exact(f.Rooms), exactOrNone(f.NotRooms)
	q.Senders, q.NotSenders = exact(f.Senders), exactOrNone(f.NotSenders)
	return q, f, nil
}

// narrow restricts an allow list to one value: none if the filter keeps
// it out.
func narrow(allow, deny []string, v string) []string {
	if !allowsRoom(allow, deny, v) {
		return []string{}
	}
	return []string{v}
}

// exact is an allow list for the index: nil (everything; the filter
// decides later) when it has wildcards.
func exact(l []string) []string {
	if l == nil || slices.ContainsFunc(l, func(v string) bool { return strings.Contains(v, "*") }) {
		return nil
	}
	return l
}

// exactOrNone is a deny list for the index: its entries without
// wildcards.
func exactOrNone(l []string) []string {
	return slices.DeleteFunc(slices.Clone(l), func(v string) bool { return strings.Contains(v, "*") })
}

// predecessors follows a room's m.room.create predecessor chain (ten
// upgrades at most, against loops).
func (s *Server) predecessors(ctx context.Context, roomID string) ([]string, error) {
	var out []string
	for range 10 {
		create, err := s.store.CurrentStateEvent(ctx, roomID, rooms.TypeCreate, "")
		if errors.Is(err, storage.ErrNotFound) {
			break
		}
		if err != nil {
			return nil, err
		}
		prev := gjson.GetBytes(contentOf(create.JSON), "predecessor.room_id").String()
		if prev == "" || prev == roomID || slices.Contains(out, prev) {
			break
		}
		out = append(out, prev)
		roomID = prev
	}
	return out, nil
}

// searchVisible reports which matches pass the filter and the user's
// history visibility, reading each room's visibility once per state group.
func (s *Server) searchVisible(ctx context.Context, userID string, f *roomEventFilter, page []storage.SearchResult) (map[string]bool, error) {
	byRoom := map[string][]*storage.Event{}
	for _, m := range page {
		if f.allowsEvent(m.Event) {
			byRoom[m.Event.RoomID] = append(byRoom[m.Event.RoomID], m.Event)
		}
	}
	out := map[string]bool{}
	for _, evs := range byRoom {
		visible, err := s.filterVisible(ctx, userID, evs)
		if err != nil {
			return nil, err
		}
		for _, e := range visible {
			out[e.EventID] = true
		}
	}
	return out, nil
}

// searchGroups fills the groups asked for. next (when not zero) is the
// page's next_batch, from which each group's own is made.
func (s *Server) searchGroups(out *searchResults, crit *searchCriteria, found []storage.SearchResult, next searchBatch) {
	for _, key := range []string{"room_id", "sender"} {
		if !crit.groupedBy(key) {
			continue
		}
		groups := map[string]*searchGroupInfo{}
		for i, m := range found {
			v := m.Event.RoomID
			if key == "sender" {
				v = m.Event.Sender
			}
			g := groups[v]
			if g == nil {
				g = &searchGroupInfo{Order: i, Results: []string{}}
				if next.Order != "" {
					nb := next
					nb.Group, nb.Key = key, v
					g.NextBatch = nb.String()
				}
				groups[v] = g
			}
			g.Results = append(g.Results, m.Event.EventID)
		}
		if out.Groups == nil {
			out.Groups = map[string]map[string]*searchGroupInfo{}
		}
		out.Groups[key] = groups
	}
}

// searchContexts builds the results' event_context together, so that a
// page of results costs two reads of the timeline each and a few reads in
// all for history visibility, formatting and profiles. Each context holds
// the events around its result that the user may see, less the messages
// of users they ignore (hidden ones are not made up for, as in Synapse),
// with /messages tokens around them, and with profiles the senders' in
// the state after the last event (Synapse).
func (s *Server) searchContexts(ctx context.Context, userID string, ignored map[string]bool, fm *eventFormatter,
	results []*storage.Event, nBefore, nAfter int, profiles bool) ([]*searchContext, error) {
	type around struct {
		before, after []*storage.Event
		start, end    storage.TopoPos
	}
	arounds := make([]around, len(results))
	byRoom := map[string][]*storage.Event{}
	for i, e := range results {
		a := &arounds[i]
		a.start, a.end = storage.TopoPos{Depth: e.Depth, Stream: e.StreamPos - 1}, storage.TopoPos{Depth: e.Depth, Stream: e.StreamPos}
		var err error
		if nBefore > 0 {
			if a.before, err = s.store.RoomEventsTopo(ctx, e.RoomID, a.start, nil, nBefore, true); err != nil {
				return nil, err
			}
		}
		if nAfter > 0 {
			if a.after, err = s.store.RoomEventsTopo(ctx, e.RoomID, a.end, nil, nAfter, false); err != nil {
				return nil, err
			}
		}
		if n := len(a.before); n > 0 {
			a.start = storage.TopoPos{Depth: a.before[n-1].Depth, Stream: a.before[n-1].StreamPos - 1}
		}
		if n := len(a.after); n > 0 {
			a.end = storage.TopoPos{Depth: a.after[n-1].Depth, Stream: a.after[n-1].StreamPos}
		}
		byRoom[e.RoomID] = append(byRoom[e.RoomID], a.before...)
		byRoom[e.RoomID] = append(byRoom[e.RoomID], a.after...)
	}
	visible := map[string]*storage.Event{}
	for _, evs := range byRoom {
		vis, err := s.filterVisible(ctx, userID, evs)
		if err != nil {
			return nil, err
		}
		for _, e := range vis {
			if !ignored[e.Sender] || e.IsState() {
				visible[e.EventID] = e
			}
		}
	}
	// Neighbouring results share context events: format each once.
	var unique []*storage.Event
	for _, e := range visible {
		unique = append(unique, e)
	}
	formatted, err := fm.format(ctx, unique)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]clientEvent, len(unique))
	for i, e := range unique {
		byID[e.EventID] = formatted[i]
	}
	pick := func(evs []*storage.Event) ([]*storage.Event, []clientEvent) {
		var kept []*storage.Event
		out := []clientEvent{}
		for _, e := range evs {
			if ce, ok := byID[e.EventID]; ok {
				kept, out = append(kept, e), append(out, ce)
			}
		}
		return kept, out
	}
	out := make([]*searchContext, len(results))
	members := make([]map[string]string, len(results)) // sender → member event, per result
	var memberIDs []string
	for i, e := range results {
		a := &arounds[i]
		c := &searchContext{Start: topoString(a.start), End: topoString(a.end)}
		a.before, c.EventsBefore = pick(a.before)
		a.after, c.EventsAfter = pick(a.after)
		out[i] = c
		if !profiles {
			continue
		}
		last := e
		if n := len(a.after); n > 0 {
			last = a.after[n-1]
		}
		state, err := s.store.StateGroup(ctx, last.StateGroup)
		if err != nil {
			return nil, err
		}
		members[i] = map[string]string{}
		for _, ev := range slices.Concat(a.before, []*storage.Event{e}, a.after) {
			if id := state[storage.StateKey{Type: rooms.TypeMember, StateKey: ev.Sender}]; id != "" {
				members[i][ev.Sender] = id
				memberIDs = append(memberIDs, id)
			}
		}
	}
	if !profiles {
		return out, nil
	}
	slices.Sort(memberIDs)
	evs, err := s.store.EventsByID(ctx, slices.Compact(memberIDs))
	if err != nil {
		return nil, err
	}
	profileOf := map[string]searchProfile{}
	for _, m := range evs {
		content := contentOf(m.JSON)
		profileOf[m.EventID] = searchProfile{
			DisplayName: gjson.GetBytes(content, "displayname").String(),
			AvatarURL:   gjson.GetBytes(content, "avatar_url").String(),
		}
	}
	for i, c := range out {
		c.ProfileInfo = map[string]searchProfile{}
		for sender, id := range members[i] {
			if p, ok := profileOf[id]; ok {
				c.ProfileInfo[sender] = p
			}
		}
	}
	return out, nil
}

// searchState is include_state's answer: the current state of each room
// with a result.
func (s *Server) searchState(ctx context.Context, fm *eventFormatter, found []storage.SearchResult) (map[string][]clientEvent, error) {
	out := map[string][]clientEvent{}
	for _, m := range found {
		if _, done := out[m.Event.RoomID]; done {
			continue
		}
		state, err := s.store.CurrentState(ctx, m.Event.RoomID)
		if err != nil {
			return nil, err
		}
		evs, err := s.stateEvents(ctx, state)
		if err != nil {
			return nil, err
		}
		if out[m.Event.RoomID], err = fm.format(ctx, evs); err != nil {
			return nil, err
		}
	}
	return out, nil
}
