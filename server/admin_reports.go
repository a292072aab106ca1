package server

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"hearth/server/matrix"
	"hearth/server/rooms"
	"hearth/server/storage"
)

// Reporting content (spec: Client-Server API, "Reporting content") and the
// admin API that reads the reports (Synapse's /v1/event_reports).

// POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}
//
// A report about an event the reporter can see; an event they cannot see
// is answered exactly like one that does not exist (404), so reports do
// not reveal events.
func (s *Server) postReportEvent(w http.ResponseWriter, r *http.Request) error {
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
	var req struct {
		Reason *string `json:"reason"`
		Score  *int64  `json:"score"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Score != nil && (*req.Score < -100 || *req.Score > 0) {
		return matrix.InvalidParam("score must be an integer in the range [-100, 0]")
	}
	notFound := matrix.NotFound("Unable to report event: it does not exist or you aren't able to see it.")
	e, err := s.store.EventByID(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && (e.RoomID != roomID || !e.Live())) {
		return notFound
	}
	if err != nil {
		return err
	}
	if m, err := s.store.Membership(ctx, roomID, me.UserID); err != nil {
		return err
	} else if m == "" && !s.worldReadable(ctx, roomID) {
		return notFound
	}
	if ok, err := s.canSeeEvent(ctx, me.UserID, e); err != nil {
		return err
	} else if !ok {
		return notFound
	}
	rep := &storage.EventReport{ReceivedTS: s.now().UnixMilli(), RoomID: roomID, EventID: eventID, UserID: me.UserID,
		Reason: req.Reason, Score: req.Score}
	if err := s.store.AddEventReport(ctx, rep); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// POST /_matrix/client/v3/rooms/{roomId}/report
func (s *Server) postReportRoom(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	var req struct {
		Reason *string `json:"reason"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Reason == nil {
		return matrix.MissingParam("missing reason")
	}
	if _, err := s.store.RoomByID(r.Context(), roomID); errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("Room does not exist")
	} else if err != nil {
		return err
	}
	if err := s.store.AddRoomReport(r.Context(), roomID, me.UserID, *req.Reason, s.now().UnixMilli()); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// POST /_matrix/client/v3/users/{userId}/report
//
// Reports about unknown local users are 404; reports about remote users
// are stored (this server cannot tell whether they exist).
func (s *Server) postReportUser(w http.ResponseWriter, r *http.Request) error {
	me := deviceFrom(r.Context())
	userID, err := anyUserParam(r)
	if err != nil {
		return err
	}
	var req struct {
		Reason *string `json:"reason"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Reason == nil {
		return matrix.MissingParam("missing reason")
	}
	if strings.HasSuffix(userID, ":"+s.cfg.ServerName) {
		if _, err := s.store.UserByID(r.Context(), userID); errors.Is(err, storage.ErrNotFound) {
			return matrix.NotFound("User does not exist")
		} else if err != nil {
			return err
		}
	}
	if err := s.store.AddUserReport(r.Context(), userID, me.UserID, *req.Reason, s.now().UnixMilli()); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// EventReportView is a report with what the admin needs to judge it.
type EventReportView struct {
	storage.EventReport
	RoomName       string
	CanonicalAlias string
	Sender         string
	Event          *storage.Event // nil once the event is gone
}

// EventReports returns one page of reports and how many match.
func (s *Server) EventReports(ctx context.Context, f storage.EventReportFilter) ([]*EventReportView, int, error) {
	reps, total, err := s.store.EventReports(ctx, f)
	if err != nil {
		return nil, 0, err
	}
	out := make([]*EventReportView, 0, len(reps))
	for _, rep := range reps {
		v, err := s.reportView(ctx, rep)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, v)
	}
	return out, total, nil
}

// EventReport returns one report; an unknown one is M_NOT_FOUND.
func (s *Server) EventReport(ctx context.Context, id int64) (*EventReportView, error) {
	rep, err := s.store.EventReportByID(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, matrix.NotFound("Event report not found")
	}
	if err != nil {
		return nil, err
	}
	return s.reportView(ctx, rep)
}

func (s *Server) reportView(ctx context.Context, rep *storage.EventReport) (*EventReportView, error) {
	v := &EventReportView{EventReport: *rep}
	infos, err := s.store.RoomInfos(ctx, []string{rep.RoomID}, s.cfg.ServerName)
	if err != nil {
		return nil, err
	}
	if ri := infos[rep.RoomID]; ri != nil {
		ar := newAdminRoom(ri)
		v.RoomName, v.CanonicalAlias = ar.Name, ar.CanonicalAlias
	}
	e, err := s.store.EventByID(ctx, rep.EventID)
	if err == nil {
		v.Event, v.Sender = e, e.Sender
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	return v, nil
}

// DeleteEventReport removes a report.
func (s *Server) DeleteEventReport(ctx context.Context, by Actor, id int64) error {
	if err := s.store.DeleteEventReport(ctx, id); errors.Is(err, storage.ErrNotFound) {
		return matrix.NotFound("Event report not found")
	} else if err != nil {
		return err
	}
	s.audit(ctx, by, "event_report.delete", strconv.FormatInt(id, 10), "")
	return nil
}

func eventReportJSON(v *EventReportView, withEvent bool) map[string]any {
	var reason, score any
	if v.Reason != nil {
		reason = *v.Reason
	}
	if v.Score != nil {
		score = *v.Score
	}
	m := map[string]any{"id": v.ID, "received_ts": v.ReceivedTS, "room_id": v.RoomID, "name": nullStr(v.RoomName),
		"event_id": v.EventID, "user_id": v.UserID, "reason": reason, "score": score, "sender": nullStr(v.Sender),
		"canonical_alias": nullStr(v.CanonicalAlias)}
	if withEvent {
		var ev any
		if v.Event != nil {
			ev = rawJSON(v.Event.JSON)
		}
		m["event_json"] = ev
	}
	return m
}

// rawJSON embeds already-encoded JSON.
type rawJSON []byte

func (r rawJSON) MarshalJSON() ([]byte, error) { return r, nil }

// GET /_synapse/admin/v1/event_reports
//
// Query: from, limit (default 100), dir (b: newest first, the default; f),
// user_id, room_id.
func (s *Server) getAdminEventReports(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := storage.EventReportFilter{UserID: q.Get("user_id"), RoomID: q.Get("room_id"), Desc: true}
	var err error
	if f.From, err = queryInt(r, "from", 0); err != nil {
		return err
	}
	if f.Limit, err = queryInt(r, "limit", 100); err != nil {
		return err
	}
	if f.From < 0 {
		return matrix.InvalidParam("The start parameter must be a positive integer.")
	}
	if f.Limit < 0 {
		return matrix.InvalidParam("The limit parameter must be a positive integer.")
	}
	switch q.Get("dir") {
	case "", "b":
	case "f":
		f.Desc = false
	default:
		return matrix.InvalidParam("Unknown direction: %s", q.Get("dir"))
	}
	reps, total, err := s.EventReports(r.Context(), f)
	if err != nil {
		return err
	}
	out := make([]map[string]any, 0, len(reps))
	for _, v := range reps {
		out = append(out, eventReportJSON(v, false))
	}
	body := map[string]any{"event_reports": out, "total": total}
	if f.From+len(reps) < total {
		body["next_token"] = f.From + len(reps)
	}
	return writeJSON(w, http.StatusOK, body)
}

// reportIDParam reads {reportId}: a non-negative integer.
func reportIDParam(r *http.Request) (int64, error) {
	v, err := pathParam(r, "reportId")
	if err != nil {
		return 0, err
	}
	id, err := strconv.ParseInt(v, 10, 64)
	if err != nil || id < 0 {
		return 0, matrix.InvalidParam("The report_id parameter must be a string representing a positive integer.")
	}
	return id, nil
}

// GET /_synapse/admin/v1/event_reports/{reportId}
func (s *Server) getAdminEventReport(w http.ResponseWriter, r *http.Request) error {
	id, err := reportIDParam(r)
	if err != nil {
		return err
	}
	v, err := s.EventReport(r.Context(), id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, eventReportJSON(v, true))
}

// DELETE /_synapse/admin/v1/event_reports/{reportId}
func (s *Server) deleteAdminEventReport(w http.ResponseWriter, r *http.Request) error {
	id, err := reportIDParam(r)
	if err != nil {
		return err
	}
	if err := s.DeleteEventReport(r.Context(), s.apiActor(r), id); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}

// leaveRefused is the error for rejecting a server-notices invite: as in
// Synapse, the user cannot refuse it, but may leave once joined.
func (s *Server) leaveRefused(ctx context.Context, roomID, userID string) error {
	m, err := s.store.Membership(ctx, roomID, userID)
	if err != nil || m != rooms.MembershipInvite {
		return err
	}
	if notice, err := s.store.IsServerNoticeRoom(ctx, roomID); err != nil {
		return err
	} else if notice {
		return &matrix.Error{Code: "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM", Msg: "You cannot reject this invite", Status: http.StatusForbidden}
	}
	return nil
}
