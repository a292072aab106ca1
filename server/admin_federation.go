package server

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"

	"hearth/server/matrix"
	"hearth/server/storage"
)

// Federation destinations (Synapse's /v1/federation/destinations): the
// other servers this one sends to, with their retry state and the rooms
// it shares with each (the sender's records, server/federation/queue.go).
// The dashboard's Federation page calls the same operations.

// Federating reports whether this server sends to other servers: false
// when the federation transport could not be built, and then nothing
// changes a destination's stored state but an admin's reset.
func (s *Server) Federating() bool { return s.fedSender != nil }

// Destinations returns one page of destinations and how many match.
func (s *Server) Destinations(ctx context.Context, f storage.DestinationFilter) ([]*storage.DestinationStatus, int, error) {
	return s.store.ListDestinations(ctx, f)
}

// DestinationTotals counts the destinations, the failing ones and those
// behind.
func (s *Server) DestinationTotals(ctx context.Context) (total, failing, behind int, err error) {
	return s.store.DestinationTotals(ctx)
}

// errUnknownDestination is Synapse's answer for a destination it has no
// row for.
func errUnknownDestination() error { return matrix.NotFound("Unknown destination") }

// Destination returns one destination; an unknown one is M_NOT_FOUND.
func (s *Server) Destination(ctx context.Context, name string) (*storage.DestinationStatus, error) {
	d, err := s.store.DestinationStatusByName(ctx, name)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, errUnknownDestination()
	}
	return d, err
}

// DestinationEventsBehind counts, up to limit, the events queued for a
// destination that it has not received.
func (s *Server) DestinationEventsBehind(ctx context.Context, name string, limit int) (int, error) {
	return s.store.DestinationEventsBehind(ctx, name, limit)
}

// DestinationRooms returns one page of the rooms shared with a destination,
// by room ID, and how many there are; an unknown destination is
// M_NOT_FOUND.
func (s *Server) DestinationRooms(ctx context.Context, name string, from, limit int, desc bool) ([]storage.DestinationRoom, int, error) {
	if _, err := s.Destination(ctx, name); err != nil {
		return nil, 0, err
	}
	return s.store.DestinationRooms(ctx, name, from, limit, desc)
}

// DestinationRoomView is a room shared with a destination, with what the
// dashboard shows of it.
type DestinationRoomView struct {
	storage.DestinationRoom
	// Known: this server still has the room (it may have been purged).
	Known bool
	Name  string
	// Members counts the members joined from the destination now; 0 when
	// they all left (events were queued for it while they were in).
	Members int
}

// DestinationRoomViews adds the rooms' names and the destination's members
// in them to a page of DestinationRooms.
func (s *Server) DestinationRoomViews(ctx context.Context, name string, rooms []storage.DestinationRoom) ([]DestinationRoomView, error) {
	ids := make([]string, len(rooms))
	for i, r := range rooms {
		ids[i] = r.RoomID
	}
	infos, err := s.store.RoomInfos(ctx, ids, s.cfg.ServerName)
	if err != nil {
		return nil, err
	}
	members, err := s.store.DestinationMembers(ctx, name, ids)
	if err != nil {
		return nil, err
	}
	out := make([]DestinationRoomView, len(rooms))
	for i, r := range rooms {
		out[i] = DestinationRoomView{DestinationRoom: r, Members: members[r.RoomID]}
		if ri := infos[r.RoomID]; ri != nil {
			out[i].Known, out[i].Name = true, newAdminRoom(ri).Name
		}
	}
	return out, nil
}

// ResetDestination ends a destination's back-off and, when federating,
// retries it now (Synapse's reset_connection). A destination that is not
// backing off is refused as Synapse refuses it: 400, there is nothing to
// reset. Unlike Synapse, the time of the first failure is kept until a
// transaction gets through, so a destination still down stays "failing
// since" then rather than looking healthy for a moment.
func (s *Server) ResetDestination(ctx context.Context, by Actor, name string) error {
	if _, err := s.Destination(ctx, name); err != nil {
		return err
	}
	var was bool
	var err error
	if s.fedSender != nil {
		was, err = s.fedSender.Reset(ctx, name)
	} else {
		was, err = s.store.ResetDestinationRetry(ctx, name)
	}
	if err != nil {
		return err
	}
	if !was {
		return &matrix.Error{Code: "M_UNKNOWN", Msg: "The retry timing does not need to be reset for this destination.", Status: http.StatusBadRequest}
	}
	s.audit(ctx, by, "federation.reset_connection", name, "")
	return nil
}

// destinationJSON is a destination in Synapse's shape: failure_ts is null
// when it is not failing, last_successful_stream_ordering null when
// nothing was delivered to it yet.
func destinationJSON(d *storage.DestinationStatus) map[string]any {
	var failure, pos any
	if d.FailureTS != 0 {
		failure = d.FailureTS
	}
	if d.LastSuccessfulPos != 0 {
		pos = d.LastSuccessfulPos
	}
	return map[string]any{"destination": d.Name(), "retry_last_ts": d.RetryLastTS, "retry_interval": d.RetryIntervalMS,
		"failure_ts": failure, "last_successful_stream_ordering": pos}
}

// pageParams reads Synapse's from, limit (default 100) and dir (f, the
// default, or b).
func pageParams(r *http.Request) (from, limit int, desc bool, err error) {
	if from, err = queryInt(r, "from", 0); err != nil {
		return
	}
	if limit, err = queryInt(r, "limit", 100); err != nil {
		return
	}
	if from < 0 {
		err = matrix.InvalidParam("Query parameter from must be a string representing a positive integer.")
		return
	}
	if limit < 0 {
		err = matrix.InvalidParam("Query parameter limit must be a string representing a positive integer.")
		return
	}
	switch dir := r.URL.Query().Get("dir"); dir {
	case "", "f":
	case "b":
		desc = true
	default:
		err = matrix.InvalidParam("Unknown direction: %s", dir)
	}
	return
}

// nextToken is Synapse's next_token: the offset of the next page, as a
// string, present only when there is one.
func nextToken(body map[string]any, from, limit, n, total int) {
	if from+limit < total {
		body["next_token"] = strconv.Itoa(from + n)
	}
}

// GET /_synapse/admin/v1/federation/destinations
//
// Query: from, limit (default 100), order_by (destination, retry_last_ts,
// retry_interval, failure_ts, last_successful_stream_ordering), dir,
// destination (a substring of the name, any case).
func (s *Server) getAdminDestinations(w http.ResponseWriter, r *http.Request) error {
	from, limit, desc, err := pageParams(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	f := storage.DestinationFilter{Search: q.Get("destination"), OrderBy: q.Get("order_by"), Desc: desc, From: from, Limit: limit}
	if f.OrderBy == "" {
		f.OrderBy = storage.DestinationOrders[0]
	} else if !slices.Contains(storage.DestinationOrders, f.OrderBy) {
		return matrix.InvalidParam("Unknown value for order_by: %s", f.OrderBy)
	}
	ds, total, err := s.Destinations(r.Context(), f)
	if err != nil {
		return err
	}
	out := make([]map[string]any, 0, len(ds))
	for _, d := range ds {
		out = append(out, destinationJSON(d))
	}
	body := map[string]any{"destinations": out, "total": total}
	nextToken(body, from, limit, len(ds), total)
	return writeJSON(w, http.StatusOK, body)
}

// GET /_synapse/admin/v1/federation/destinations/{destination}
func (s *Server) getAdminDestination(w http.ResponseWriter, r *http.Request) error {
	name, err := pathParam(r, "destination")
	if err != nil {
		return err
	}
	d, err := s.Destination(r.Context(), name)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, destinationJSON(d))
}

// GET /_synapse/admin/v1/federation/destinations/{destination}/rooms
//
// Query: from, limit (default 100), dir; the rooms are ordered by room ID.
func (s *Server) getAdminDestinationRooms(w http.ResponseWriter, r *http.Request) error {
	name, err := pathParam(r, "destination")
	if err != nil {
		return err
	}
	if _, err := s.Destination(r.Context(), name); err != nil {
		return err
	}
	from, limit, desc, err := pageParams(r)
	if err != nil {
		return err
	}
	rooms, total, err := s.store.DestinationRooms(r.Context(), name, from, limit, desc)
	if err != nil {
		return err
	}
	out := make([]map[string]any, 0, len(rooms))
	for _, rm := range rooms {
		out = append(out, map[string]any{"room_id": rm.RoomID, "stream_ordering": rm.StreamPos})
	}
	body := map[string]any{"rooms": out, "total": total}
	nextToken(body, from, limit, len(rooms), total)
	return writeJSON(w, http.StatusOK, body)
}

// POST /_synapse/admin/v1/federation/destinations/{destination}/reset_connection
func (s *Server) postAdminResetConnection(w http.ResponseWriter, r *http.Request) error {
	name, err := pathParam(r, "destination")
	if err != nil {
		return err
	}
	if err := s.ResetDestination(r.Context(), s.apiActor(r), name); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct{}{})
}
