package web

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"hearth/server"
	"hearth/server/htmlpage"
	"hearth/server/matrix"
	"hearth/server/storage"
	"hearth/templates"
)

// The federation pages: every server this one sends to, with its health
// and how far behind it is, and per server the rooms they share; "retry
// now" is the admin API's reset_connection (server/admin_federation.go).

const (
	destinationsPerPage     = 50
	destinationRoomsPerPage = 50
	// eventsBehindCap bounds the count of undelivered events per server:
	// past it the page says "1,000+".
	eventsBehindCap = 1000
)

// federationQuery is the federation page's query string.
type federationQuery struct {
	Q, Sort string
	Desc    bool
	Page    int
}

// federationSorts are the sortable columns, with the admin API's order_by
// names. "Health" puts the servers failing longest first.
var federationSorts = []struct{ Key, Label string }{{"destination", "Server"}, {"failure_ts", "Health"}}

func parseFederationQuery(v url.Values) federationQuery {
	q := federationQuery{Q: strings.TrimSpace(v.Get("q")), Sort: "destination", Desc: v.Get("dir") == "desc", Page: 1}
	for _, s := range federationSorts {
		if v.Get("sort") == s.Key {
			q.Sort = s.Key
		}
	}
	if p, err := strconv.Atoi(v.Get("page")); err == nil && p > 1 && p < 1_000_000 {
		q.Page = p
	}
	return q
}

func (q federationQuery) url(prefix string, edit func(*federationQuery)) string {
	if edit != nil {
		edit(&q)
	}
	v := url.Values{}
	if q.Q != "" {
		v.Set("q", q.Q)
	}
	if q.Sort != "destination" {
		v.Set("sort", q.Sort)
	}
	if q.Desc {
		v.Set("dir", "desc")
	}
	if q.Page > 1 {
		v.Set("page", strconv.Itoa(q.Page))
	}
	if len(v) == 0 {
		return prefix + "/federation"
	}
	return prefix + "/federation?" + v.Encode()
}

// destinationURL is a destination's page; the name is escaped as one
// segment (IPv6 literals carry brackets, most names a port's colon).
func destinationURL(prefix, name string) string {
	return prefix + "/federation/" + url.PathEscape(name)
}

// newHealth says how a destination is doing. federating is false when this
// server sends nothing, so no retry is coming.
func newHealth(d *storage.DestinationStatus, now time.Time, federating bool) templates.Health {
	if d.FailureTS == 0 {
		if d.LastSuccessTS == 0 {
			return templates.Health{Label: "no delivery yet"}
		}
		return templates.Health{Label: "healthy", OK: true}
	}
	h := templates.Health{Label: "failing", Failing: true, Error: d.LastError,
		Since: "for " + humanDuration(max(now.Sub(time.UnixMilli(d.FailureTS)), 0))}
	next := time.UnixMilli(d.RetryLastTS + d.RetryIntervalMS)
	switch {
	case !federating:
		h.Retry = "no retries: federation is off"
	case d.RetryIntervalMS > 0 && next.After(now):
		h.Retry = "next retry in " + humanDuration(next.Sub(now))
	default:
		// The back-off is over (or was reset): the sender is trying.
		h.Retry = "retrying now"
	}
	return h
}

// behindText says how much a destination has not received: events counts
// them up to eventsBehindCap (-1: not counted).
func behindText(d *storage.DestinationStatus, events int) string {
	if !d.Behind() {
		return "up to date"
	}
	rooms := plural(d.RoomsBehind, "room", "rooms")
	switch {
	case events >= eventsBehindCap:
		return thousands(eventsBehindCap) + "+ events in " + rooms
	case events > 0:
		return plural(events, "event", "events") + " in " + rooms
	}
	return rooms + " waiting"
}

// plural is "1 room", "2 rooms", with thousands separators.
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return thousands(int64(n)) + " " + many
}

// shorten cuts s to n characters with an ellipsis.
func shorten(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// exactTime is a millisecond timestamp to the second, in UTC.
func exactTime(ms int64) string { return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05 UTC") }

// federationInput is what the federation page's handler gathers.
type federationInput struct {
	Rows                   []*storage.DestinationStatus
	EventsBehind           map[string]int // by destination; only those behind
	Matching               int            // destinations matching the search
	Total, Failing, Behind int            // over every destination
	Federating             bool
}

func newFederationVM(c templates.Chrome, q federationQuery, in federationInput, now time.Time) templates.FederationVM {
	vm := templates.FederationVM{Chrome: c, Query: q.Q, Federating: in.Federating, Back: q.url("", nil)}
	vm.Totals = []templates.Stat{
		{Label: "Servers", Value: thousands(int64(in.Total)), Available: true, Note: "this server has sent to"},
		{Label: "Failing", Value: thousands(int64(in.Failing)), Available: true, Note: "backing off after a failed delivery"},
		{Label: "Behind", Value: thousands(int64(in.Behind)), Available: true, Note: "with events not delivered yet"},
	}
	for _, s := range federationSorts {
		active := q.Sort == s.Key
		vm.Headers = append(vm.Headers, templates.HeaderVM{Label: s.Label, Active: active, Desc: active && q.Desc,
			URL: q.url(c.Prefix, func(n *federationQuery) { n.Sort, n.Desc, n.Page = s.Key, active && !q.Desc, 1 })})
	}
	for _, l := range []string{"Last delivery", "Behind", "Rooms"} {
		vm.Headers = append(vm.Headers, templates.HeaderVM{Label: l})
	}
	for _, d := range in.Rows {
		h := newHealth(d, now, in.Federating)
		h.Error = shorten(h.Error, 120)
		events, counted := in.EventsBehind[d.Name()]
		if !counted {
			events = -1
		}
		vm.Rows = append(vm.Rows, templates.DestinationRowVM{Name: d.Name(), DetailURL: destinationURL(c.Prefix, d.Name()), Health: h,
			LastDelivery: humanTimeOr(d.LastSuccessTS, now, "never"), Behind: behindText(d, events), IsBehind: d.Behind(),
			Rooms: thousands(int64(d.Rooms)), CanRetry: d.RetryIntervalMS > 0})
	}
	from := (q.Page - 1) * destinationsPerPage
	switch {
	case in.Matching == 0 && q.Q != "":
		vm.Showing = "No servers match"
	case in.Matching == 0:
		vm.Showing = "No servers yet: this server has not sent anything to another one"
	case len(in.Rows) == 0:
		vm.Showing = fmt.Sprintf("Nothing on page %d of %s servers", q.Page, thousands(int64(in.Matching)))
	default:
		vm.Showing = fmt.Sprintf("%s–%s of %s servers", thousands(int64(from+1)), thousands(int64(from+len(in.Rows))), thousands(int64(in.Matching)))
	}
	if q.Page > 1 {
		vm.PrevURL = q.url(c.Prefix, func(n *federationQuery) { n.Page-- })
	}
	if from+len(in.Rows) < in.Matching {
		vm.NextURL = q.url(c.Prefix, func(n *federationQuery) { n.Page++ })
	}
	return vm
}

// GET /_hearth/admin/federation?q=&sort=&dir=&page=
func (d *Dashboard) getFederation(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	q := parseFederationQuery(r.URL.Query())
	in := federationInput{Federating: d.srv.Federating(), EventsBehind: map[string]int{}}
	var err error
	if in.Rows, in.Matching, err = d.srv.Destinations(ctx, storage.DestinationFilter{Search: q.Q, OrderBy: q.Sort, Desc: q.Desc,
		From: (q.Page - 1) * destinationsPerPage, Limit: destinationsPerPage}); err != nil {
		return err
	}
	if in.Total, in.Failing, in.Behind, err = d.srv.DestinationTotals(ctx); err != nil {
		return err
	}
	for _, dst := range in.Rows {
		if dst.Behind() {
			if in.EventsBehind[dst.Name()], err = d.srv.DestinationEventsBehind(ctx, dst.Name(), eventsBehindCap); err != nil {
				return err
			}
		}
	}
	vm := newFederationVM(d.chrome(w, r, "Federation", "federation"), q, in, d.srv.Now())
	d.pages.Render(w, r, http.StatusOK, templates.Federation(vm))
	return nil
}

// destinationInput is what a destination's page gathers.
type destinationInput struct {
	Dest         *storage.DestinationStatus
	EventsBehind int // -1: not counted
	Rooms        []server.DestinationRoomView
	From, Total  int // the page of rooms
	Federating   bool
}

func newDestinationVM(c templates.Chrome, in destinationInput, now time.Time) templates.DestinationVM {
	dst := in.Dest
	base := destinationURL(c.Prefix, dst.Name())
	vm := templates.DestinationVM{Chrome: c, Name: dst.Name(), BaseURL: base, Back: destinationURL("", dst.Name()), Federating: in.Federating,
		Health: newHealth(dst, now, in.Federating), CanRetry: dst.RetryIntervalMS > 0}
	fact := func(label, value string) { vm.Facts = append(vm.Facts, templates.Fact{Label: label, Value: value}) }
	if dst.LastSuccessTS > 0 {
		fact("Last delivery", humanTime(dst.LastSuccessTS, now)+" ("+exactTime(dst.LastSuccessTS)+")")
	} else {
		fact("Last delivery", "never")
	}
	if dst.FailureTS > 0 {
		fact("Failing since", exactTime(dst.FailureTS))
	}
	if dst.RetryLastTS > 0 {
		fact("Last failed attempt", exactTime(dst.RetryLastTS))
	}
	if dst.RetryIntervalMS > 0 {
		fact("Back-off", humanDuration(time.Duration(dst.RetryIntervalMS)*time.Millisecond))
	}
	fact("Behind", behindText(dst, in.EventsBehind))
	if dst.LastSuccessfulPos > 0 {
		fact("Delivered up to", "stream position "+thousands(dst.LastSuccessfulPos))
	} else {
		fact("Delivered up to", "nothing yet")
	}
	if dst.NewestQueued > 0 {
		fact("Newest queued", "stream position "+thousands(dst.NewestQueued))
	} else {
		fact("Newest queued", "nothing")
	}
	fact("Rooms shared", thousands(int64(dst.Rooms)))
	for _, rm := range in.Rooms {
		row := templates.DestinationRoomVM{RoomID: rm.RoomID, Name: rm.Name, Known: rm.Known, Queued: "#" + thousands(rm.StreamPos),
			Waiting: rm.StreamPos > dst.LastSuccessfulPos, Members: "none joined now"}
		if rm.Known {
			row.URL = roomURL(c.Prefix, rm.RoomID)
		}
		if rm.Members > 0 {
			row.Members = strconv.Itoa(rm.Members) + " joined"
		}
		vm.Rooms = append(vm.Rooms, row)
	}
	switch {
	case in.Total == 0:
		vm.Showing = "No rooms: nothing was sent to this server about a room"
	case len(in.Rooms) == 0:
		vm.Showing = fmt.Sprintf("Nothing here: %s rooms in all", thousands(int64(in.Total)))
	default:
		vm.Showing = fmt.Sprintf("%s–%s of %s rooms", thousands(int64(in.From+1)), thousands(int64(in.From+len(in.Rooms))), thousands(int64(in.Total)))
	}
	page := in.From/destinationRoomsPerPage + 1
	if page > 1 {
		vm.PrevURL = base + "?page=" + strconv.Itoa(page-1)
		if page == 2 {
			vm.PrevURL = base
		}
	}
	if in.From+len(in.Rooms) < in.Total {
		vm.NextURL = base + "?page=" + strconv.Itoa(page+1)
	}
	return vm
}

// destinationParam reads {destination}: a server name escaped as one path
// segment.
func destinationParam(r *http.Request) (string, error) {
	name, err := pathParam(r, "destination")
	if err != nil || name == "" || len(name) > 255 || strings.ContainsAny(name, "/ ") {
		return "", &htmlpage.Error{Status: http.StatusBadRequest, Msg: "That is not a server name."}
	}
	return name, nil
}

// GET /_hearth/admin/federation/{destination}?page=
func (d *Dashboard) getDestination(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	name, err := destinationParam(r)
	if err != nil {
		return err
	}
	in := destinationInput{Federating: d.srv.Federating(), EventsBehind: -1}
	if in.Dest, err = d.srv.Destination(ctx, name); err != nil {
		var me *matrix.Error
		if errors.As(err, &me) && me.Code == "M_NOT_FOUND" {
			return &htmlpage.Error{Status: http.StatusNotFound, Msg: "This server has never sent anything to " + name + "."}
		}
		return err
	}
	if in.Dest.Behind() {
		if in.EventsBehind, err = d.srv.DestinationEventsBehind(ctx, name, eventsBehindCap); err != nil {
			return err
		}
	}
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	in.From = (min(max(page, 1), 1_000_000) - 1) * destinationRoomsPerPage
	rooms, total, err := d.srv.DestinationRooms(ctx, name, in.From, destinationRoomsPerPage, false)
	if err != nil {
		return err
	}
	in.Total = total
	if in.Rooms, err = d.srv.DestinationRoomViews(ctx, name, rooms); err != nil {
		return err
	}
	vm := newDestinationVM(d.chrome(w, r, name, "federation"), in, d.srv.Now())
	d.pages.Render(w, r, http.StatusOK, templates.Destination(vm))
	return nil
}

// POST /_hearth/admin/federation/{destination}/retry
//
// Ends the back-off and retries now; not destructive, so no confirmation,
// but audited like every admin action.
func (d *Dashboard) postDestinationRetry(w http.ResponseWriter, r *http.Request) error {
	name, err := destinationParam(r)
	if err != nil {
		return err
	}
	back := r.PostFormValue("back")
	if !strings.HasPrefix(back, "/federation") {
		back = "/federation"
	}
	err = d.srv.ResetDestination(r.Context(), d.actor(r), name)
	var me *matrix.Error
	if errors.As(err, &me) && me.HTTPStatus() == http.StatusBadRequest {
		return d.redirect(w, r, back, name+" is not backing off: there is nothing to retry.", true)
	}
	if err != nil {
		return err
	}
	msg := "Retrying " + name + " now."
	if !d.srv.Federating() {
		msg = "Cleared the back-off of " + name + "; federation is off, so nothing is sent."
	}
	return d.redirect(w, r, back, msg, false)
}
