package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/tidwall/gjson"

	"hearth/server"
	"hearth/server/htmlpage"
	"hearth/server/matrix"
	"hearth/server/storage"
	"hearth/templates"
)

// The rooms and reports pages: list, details, block, delete (the Synapse
// admin API's asynchronous deletion, shown with its progress) and event
// reports. Every action goes through the same *server.Server operations as
// the admin API.

const (
	roomsPerPage   = 50
	reportsPerPage = 50
)

// roomsQuery is the room list's query string.
type roomsQuery struct {
	Q, Sort string
	Desc    bool
	Page    int
}

// roomSorts are the columns the list sorts on, with Synapse's order_by
// names; counts sort largest first in their natural order.
var roomSorts = []struct{ Key, Label string }{
	{"name", "Room"}, {"joined_members", "Members"}, {"state_events", "State events"}, {"version", "Version"},
}

func parseRoomsQuery(v url.Values) roomsQuery {
	q := roomsQuery{Q: strings.TrimSpace(v.Get("q")), Sort: "name", Desc: v.Get("dir") == "desc", Page: 1}
	for _, s := range roomSorts {
		if v.Get("sort") == s.Key {
			q.Sort = s.Key
		}
	}
	if p, err := strconv.Atoi(v.Get("page")); err == nil && p > 1 {
		q.Page = p
	}
	return q
}

func (q roomsQuery) url(prefix string, edit func(*roomsQuery)) string {
	if edit != nil {
		edit(&q)
	}
	v := url.Values{}
	if q.Q != "" {
		v.Set("q", q.Q)
	}
	if q.Sort != "name" {
		v.Set("sort", q.Sort)
	}
	if q.Desc {
		v.Set("dir", "desc")
	}
	if q.Page > 1 {
		v.Set("page", strconv.Itoa(q.Page))
	}
	if len(v) == 0 {
		return prefix + "/rooms"
	}
	return prefix + "/rooms?" + v.Encode()
}

// roomURL is a room's dashboard page; the ID is escaped as one segment.
func roomURL(prefix, roomID string) string { return prefix + "/rooms/" + url.PathEscape(roomID) }

func newRoomsVM(c templates.Chrome, q roomsQuery, rows []*server.AdminRoom, total int) templates.RoomsVM {
	vm := templates.RoomsVM{Chrome: c, Query: q.Q}
	for _, s := range roomSorts {
		active := q.Sort == s.Key
		vm.Sort = append(vm.Sort, templates.SortLink{Label: s.Label, Active: active, Desc: active && q.Desc,
			URL: q.url(c.Prefix, func(n *roomsQuery) { n.Sort, n.Desc, n.Page = s.Key, active && !q.Desc, 1 })})
	}
	for _, r := range rows {
		vm.Rows = append(vm.Rows, templates.RoomRowVM{RoomID: r.RoomID, Name: r.Name, Alias: r.CanonicalAlias,
			DetailURL: roomURL(c.Prefix, r.RoomID), Members: thousands(int64(r.JoinedMembers)),
			LocalMembers: thousands(int64(r.JoinedLocalMembers)), Version: r.Version, StateEvents: thousands(int64(r.StateEvents)),
			Public: r.Public, Encrypted: r.Encryption != "", Blocked: r.Blocked})
	}
	from := (q.Page - 1) * roomsPerPage
	switch {
	case total == 0:
		vm.Showing = "No rooms"
	case len(rows) == 0:
		vm.Showing = fmt.Sprintf("Nothing on page %d of %s rooms", q.Page, thousands(int64(total)))
	default:
		vm.Showing = fmt.Sprintf("%s–%s of %s rooms", thousands(int64(from+1)), thousands(int64(from+len(rows))), thousands(int64(total)))
	}
	if q.Page > 1 {
		vm.PrevURL = q.url(c.Prefix, func(n *roomsQuery) { n.Page-- })
	}
	if from+len(rows) < total {
		vm.NextURL = q.url(c.Prefix, func(n *roomsQuery) { n.Page++ })
	}
	return vm
}

// GET /_hearth/admin/rooms?q=&sort=&dir=&page=
func (d *Dashboard) getRooms(w http.ResponseWriter, r *http.Request) error {
	q := parseRoomsQuery(r.URL.Query())
	rows, total, err := d.srv.ListRooms(r.Context(), server.RoomListFilter{From: (q.Page - 1) * roomsPerPage, Limit: roomsPerPage,
		OrderBy: q.Sort, Reverse: q.Desc, Search: q.Q})
	if err != nil {
		return err
	}
	vm := newRoomsVM(d.chrome(w, r, "Rooms", "rooms"), q, rows, total)
	d.pages.Render(w, r, http.StatusOK, templates.Rooms(vm))
	return nil
}

// roomParam reads {roomID}: a room ID escaped as one path segment.
func (d *Dashboard) roomParam(r *http.Request) (string, error) {
	raw, err := pathParam(r, "roomID")
	if err != nil || !strings.HasPrefix(raw, "!") || len(raw) > 255 {
		return "", &htmlpage.Error{Status: http.StatusBadRequest, Msg: "That is not a room ID."}
	}
	return raw, nil
}

// stateSummary is a state event's content, shortened for the table.
func stateSummary(pdu []byte) string {
	c := gjson.GetBytes(pdu, "content").Raw
	if len(c) > 160 {
		c = c[:157] + "…"
	}
	return c
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// GET /_hearth/admin/rooms/{roomID}
func (d *Dashboard) getRoom(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	roomID, err := d.roomParam(r)
	if err != nil {
		return err
	}
	blocked, by, err := d.srv.RoomBlocked(ctx, roomID)
	if err != nil {
		return err
	}
	deletes, err := d.srv.RoomDeleteStatuses(ctx, roomID)
	if err != nil {
		return err
	}
	now := d.srv.Now()
	vm := templates.RoomDetailVM{Chrome: d.chrome(w, r, roomID, "rooms"), RoomID: roomID, BaseURL: roomURL(d.prefix, roomID),
		Blocked: blocked, BlockedBy: by}
	for _, del := range deletes {
		vm.Deletes = append(vm.Deletes, templates.DeleteRowVM{DeleteID: del.DeleteID, Status: del.Status,
			Started: humanTime(del.CreatedTS, now), URL: d.prefix + "/rooms/deletes/" + url.PathEscape(del.DeleteID)})
	}
	ar, err := d.srv.Room(ctx, roomID)
	var me *matrix.Error
	if errors.As(err, &me) && me.Code == "M_NOT_FOUND" {
		if !blocked && len(deletes) == 0 {
			return &htmlpage.Error{Status: http.StatusNotFound, Msg: "This server does not know room " + roomID + "."}
		}
		d.pages.Render(w, r, http.StatusOK, templates.Room(vm))
		return nil
	}
	if err != nil {
		return err
	}
	vm.Known, vm.Name, vm.Topic = true, ar.Name, ar.Topic
	vm.Chrome.Title = orDash(ar.Name)
	vm.Facts = []templates.Fact{
		{Label: "Alias", Value: orDash(ar.CanonicalAlias)}, {Label: "Room version", Value: ar.Version},
		{Label: "Creator", Value: ar.Creator}, {Label: "Created", Value: humanTime(ar.CreatedTS, now)},
		{Label: "Members", Value: fmt.Sprintf("%d joined, %d of them local", ar.JoinedMembers, ar.JoinedLocalMembers)},
		{Label: "Join rule", Value: orDash(ar.JoinRules)}, {Label: "History visibility", Value: orDash(ar.HistoryVisibility)},
		{Label: "Guest access", Value: orDash(ar.GuestAccess)}, {Label: "Encryption", Value: orDash(ar.Encryption)},
		{Label: "In the room directory", Value: yesNo(ar.Public)}, {Label: "Federates", Value: yesNo(ar.Federatable)},
		{Label: "State events", Value: thousands(int64(ar.StateEvents))},
	}
	if ar.RoomType != "" {
		vm.Facts = append(vm.Facts, templates.Fact{Label: "Room type", Value: ar.RoomType})
	}
	members, err := d.srv.RoomMembers(ctx, roomID)
	if err != nil {
		return err
	}
	for u, m := range members {
		mv := templates.MemberVM{UserID: u, Membership: m}
		if strings.HasSuffix(u, ":"+d.srv.ServerName()) {
			mv.UserURL = userURL(d.prefix, u)
		}
		vm.Members = append(vm.Members, mv)
	}
	sortMembers(vm.Members)
	if vm.Servers, err = d.srv.RoomServers(ctx, roomID); err != nil {
		return err
	}
	state, err := d.srv.RoomState(ctx, roomID)
	if err != nil {
		return err
	}
	for _, e := range state {
		vm.State = append(vm.State, templates.StateRowVM{Type: e.Type, StateKey: *e.StateKey, Sender: e.Sender, Content: stateSummary(e.JSON)})
	}
	if vm.Media, err = d.roomMediaVM(r, roomID); err != nil {
		return err
	}
	d.pages.Render(w, r, http.StatusOK, templates.Room(vm))
	return nil
}

// sortMembers orders joined members first, then by user ID.
func sortMembers(ms []templates.MemberVM) {
	rank := map[string]int{"join": 0, "invite": 1, "knock": 2, "leave": 3, "ban": 4}
	for i := 1; i < len(ms); i++ {
		for j := i; j > 0; j-- {
			a, b := ms[j-1], ms[j]
			if rank[a.Membership] < rank[b.Membership] || (rank[a.Membership] == rank[b.Membership] && a.UserID <= b.UserID) {
				break
			}
			ms[j-1], ms[j] = b, a
		}
	}
}

// POST /_hearth/admin/rooms/{roomID}/block
func (d *Dashboard) postRoomBlock(w http.ResponseWriter, r *http.Request) error {
	roomID, err := d.roomParam(r)
	if err != nil {
		return err
	}
	block := r.PostFormValue("block") == "1"
	if block && !d.confirmed(w, r, templates.ConfirmVM{Heading: "Block " + roomID + "?",
		Message: "Nobody on this server will be able to join this room or send anything to it until it is unblocked. Its members stay in it.",
		Button:  "Block room", Cancel: roomURL(d.prefix, roomID)}) {
		return nil
	}
	if err := d.srv.SetRoomBlocked(r.Context(), d.actor(r), roomID, block); err != nil {
		return err
	}
	msg := "Unblocked " + roomID + "."
	if block {
		msg = "Blocked " + roomID + "."
	}
	d.setFlash(w, r, msg, false)
	http.Redirect(w, r, roomURL(d.prefix, roomID), http.StatusSeeOther)
	return nil
}

// POST /_hearth/admin/rooms/{roomID}/delete
func (d *Dashboard) postRoomDelete(w http.ResponseWriter, r *http.Request) error {
	roomID, err := d.roomParam(r)
	if err != nil {
		return err
	}
	purge, block := r.PostFormValue("purge") == "1", r.PostFormValue("block") == "1"
	msg := "Every local member of " + roomID + " leaves it and its local aliases are removed."
	if purge {
		msg += " Its messages and state are then deleted from the database; this cannot be undone."
	}
	if block {
		msg += " The room stays blocked, so nobody on this server can join it again."
	}
	if !d.confirmed(w, r, templates.ConfirmVM{Heading: "Delete " + roomID + "?", Message: msg, Button: "Delete room",
		Cancel: roomURL(d.prefix, roomID)}) {
		return nil
	}
	id, err := d.srv.StartRoomDelete(r.Context(), d.actor(r), roomID, server.DeleteRoomRequest{Block: block, Purge: &purge})
	if err != nil {
		return err
	}
	http.Redirect(w, r, d.prefix+"/rooms/deletes/"+url.PathEscape(id), http.StatusSeeOther)
	return nil
}

// deleteSteps are a deletion's steps in order, with the status that means
// each is under way.
var deleteSteps = []struct{ Label, Status string }{
	{"Remove local members and aliases", storage.DeleteShuttingDown},
	{"Purge history and state", storage.DeletePurging},
}

func newDeleteStatusVM(c templates.Chrome, del *storage.RoomDelete) templates.DeleteStatusVM {
	vm := templates.DeleteStatusVM{Chrome: c, DeleteID: del.DeleteID, RoomID: del.RoomID, RoomURL: roomURL(c.Prefix, del.RoomID),
		Status: del.Status, Error: del.Error}
	var res server.ShutdownResult
	_ = json.Unmarshal(del.Result, &res)
	vm.Kicked, vm.Aliases = res.KickedUsers, res.LocalAliases
	var req server.DeleteRoomRequest
	_ = json.Unmarshal(del.Params, &req)
	steps := deleteSteps
	if req.Purge != nil && !*req.Purge {
		steps = steps[:1]
	}
	active := -1
	for i, s := range steps {
		if s.Status == del.Status {
			active = i
		}
	}
	for i, s := range steps {
		st := "pending"
		switch {
		case del.Status == storage.DeleteComplete || i < active:
			st = "done"
		case i == active:
			st = "active"
		case del.Status == storage.DeleteFailed:
			st = "failed"
		}
		vm.Steps = append(vm.Steps, templates.DeleteStepVM{Label: s.Label, State: st})
	}
	switch del.Status {
	case storage.DeleteComplete:
		vm.Done, vm.Explanation = true, "The room has been deleted."
	case storage.DeleteFailed:
		vm.Done, vm.Explanation = true, "The deletion stopped with an error."
	case storage.DeletePurging:
		vm.Explanation = "Removing the room's events and state from the database."
	default:
		vm.Explanation = "Removing the room's local members and aliases."
	}
	if !vm.Done {
		vm.Chrome.Refresh = 2
	}
	return vm
}

// GET /_hearth/admin/rooms/deletes/{deleteID}
func (d *Dashboard) getRoomDeleteStatus(w http.ResponseWriter, r *http.Request) error {
	id, err := pathParam(r, "deleteID")
	if err != nil {
		return &htmlpage.Error{Status: http.StatusBadRequest, Msg: "That is not a deletion ID."}
	}
	del, err := d.srv.RoomDeleteStatus(r.Context(), id)
	if err != nil {
		return err
	}
	vm := newDeleteStatusVM(d.chrome(w, r, "Deleting "+del.RoomID, "rooms"), del)
	d.pages.Render(w, r, http.StatusOK, templates.DeleteStatus(vm))
	return nil
}

func newReportsVM(c templates.Chrome, reps []*server.EventReportView, from, total int, now time.Time) templates.ReportsVM {
	vm := templates.ReportsVM{Chrome: c}
	for _, rp := range reps {
		row := templates.ReportRowVM{ID: strconv.FormatInt(rp.ID, 10), When: humanTime(rp.ReceivedTS, now), RoomID: rp.RoomID,
			RoomName: rp.RoomName, RoomURL: roomURL(c.Prefix, rp.RoomID), EventID: rp.EventID, Reporter: rp.UserID, Sender: rp.Sender}
		if rp.Reason != nil {
			row.Reason = *rp.Reason
		}
		if rp.Score != nil {
			row.Score = strconv.FormatInt(*rp.Score, 10)
		}
		if rp.Event != nil {
			row.Body = gjson.GetBytes(rp.Event.JSON, "content.body").String()
			if len(row.Body) > 200 {
				row.Body = row.Body[:197] + "…"
			}
			if row.Body == "" {
				row.Body = rp.Event.Type
			}
		} else {
			row.Body = "(the event is no longer stored)"
		}
		vm.Rows = append(vm.Rows, row)
	}
	switch {
	case total == 0:
		vm.Showing = "No reports"
	default:
		vm.Showing = fmt.Sprintf("%s–%s of %s reports, newest first", thousands(int64(min(from+1, total))), thousands(int64(from+len(reps))), thousands(int64(total)))
	}
	if from > 0 {
		vm.PrevURL = c.Prefix + "/reports?from=" + strconv.Itoa(max(from-reportsPerPage, 0))
	}
	if from+len(reps) < total {
		vm.NextURL = c.Prefix + "/reports?from=" + strconv.Itoa(from+len(reps))
	}
	return vm
}

// GET /_hearth/admin/reports?from=
func (d *Dashboard) getReports(w http.ResponseWriter, r *http.Request) error {
	from, _ := strconv.Atoi(r.URL.Query().Get("from"))
	from = max(from, 0)
	reps, total, err := d.srv.EventReports(r.Context(), storage.EventReportFilter{From: from, Limit: reportsPerPage, Desc: true})
	if err != nil {
		return err
	}
	vm := newReportsVM(d.chrome(w, r, "Reports", "reports"), reps, from, total, d.srv.Now())
	d.pages.Render(w, r, http.StatusOK, templates.Reports(vm))
	return nil
}

// POST /_hearth/admin/reports/{reportID}/delete
func (d *Dashboard) postReportDelete(w http.ResponseWriter, r *http.Request) error {
	id, err := strconv.ParseInt(chi.URLParam(r, "reportID"), 10, 64)
	if err != nil {
		return &htmlpage.Error{Status: http.StatusBadRequest, Msg: "That is not a report number."}
	}
	if !d.confirmed(w, r, templates.ConfirmVM{Heading: "Dismiss report " + strconv.FormatInt(id, 10) + "?",
		Message: "The report is deleted; the reported event is left alone.", Button: "Dismiss report",
		Cancel: d.prefix + "/reports"}) {
		return nil
	}
	if err := d.srv.DeleteEventReport(r.Context(), d.actor(r), id); err != nil {
		return err
	}
	return d.redirect(w, r, "/reports", "Report "+strconv.FormatInt(id, 10)+" dismissed.", false)
}
