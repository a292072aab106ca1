package storage

import (
	"context"
	"fmt"
)

// Federation administration (Synapse admin API, dashboard): destinations
// with their delivery state, and the rooms each shares with this server.
// The sender's own reads and writes are in federation.go.

// DestinationStatus is a destination with how far its delivery lags.
type DestinationStatus struct {
	Destination
	// Rooms counts the rooms events were ever queued for it in
	// (federation_destination_rooms, Synapse's destination_rooms): the
	// rooms it shares, or shared, with this server.
	Rooms int
	// RoomsBehind counts those whose newest queued event is after
	// LastSuccessfulPos: rooms it has not caught up with.
	RoomsBehind int
	// NewestQueued is the newest stream position queued for it (0: none).
	NewestQueued int64
}

// Name is the destination's server name.
func (d *DestinationStatus) Name() string { return d.Destination.Destination }

// Behind reports whether events queued for the destination are not
// delivered yet.
func (d *DestinationStatus) Behind() bool { return d.RoomsBehind > 0 }

// DestinationOrders are the orders ListDestinations knows, by Synapse's
// order_by names; the first is the default.
var DestinationOrders = []string{"destination", "retry_last_ts", "retry_interval", "failure_ts", "last_successful_stream_ordering"}

var destinationOrderColumns = map[string]string{
	"destination": "d.destination", "retry_last_ts": "d.retry_last_ts", "retry_interval": "d.retry_interval_ms",
	"failure_ts": "d.failure_ts", "last_successful_stream_ordering": "d.last_successful_stream_ordering",
}

// DestinationFilter selects and orders one page of destinations.
type DestinationFilter struct {
	// Search keeps the destinations whose name contains it, in any case.
	Search string
	// OrderBy is one of DestinationOrders ("" or unknown: destination).
	// Destinations that are not failing (no failure_ts) sort after the
	// failing ones in ascending order, before them in descending order,
	// on both engines.
	OrderBy     string
	Desc        bool
	From, Limit int
}

const destinationStatusColumns = `d.destination, d.retry_last_ts, d.retry_interval_ms, COALESCE(d.failure_ts, 0),
	COALESCE(d.last_success_ts, 0), COALESCE(d.last_error, ''), d.last_successful_stream_ordering,
	(SELECT COUNT(*) FROM federation_destination_rooms r WHERE r.destination = d.destination),
	(SELECT COUNT(*) FROM federation_destination_rooms r WHERE r.destination = d.destination
		AND r.stream_ordering > d.last_successful_stream_ordering),
	(SELECT COALESCE(MAX(r.stream_ordering), 0) FROM federation_destination_rooms r WHERE r.destination = d.destination)`

func scanDestinationStatus(row interface{ Scan(...any) error }) (*DestinationStatus, error) {
	d := &DestinationStatus{}
	err := row.Scan(&d.Destination.Destination, &d.RetryLastTS, &d.RetryIntervalMS, &d.FailureTS, &d.LastSuccessTS, &d.LastError,
		&d.LastSuccessfulPos, &d.Rooms, &d.RoomsBehind, &d.NewestQueued)
	return d, err
}

// ListDestinations returns one page of destinations and how many match.
func (s *Store) ListDestinations(ctx context.Context, f DestinationFilter) ([]*DestinationStatus, int, error) {
	where, args := "", []any{}
	if f.Search != "" {
		args = append(args, "%"+lowerLike(f.Search)+"%")
		where = `WHERE LOWER(d.destination) LIKE $1 ESCAPE '\'`
	}
	var total int
	if err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM federation_destinations d `+where, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("storage: count destinations: %w", err)
	}
	col, ok := destinationOrderColumns[f.OrderBy]
	if !ok {
		col = "d.destination"
	}
	dir := "ASC"
	if f.Desc {
		dir = "DESC"
	}
	order := col + " " + dir
	if f.OrderBy == "failure_ts" {
		// NULL sorts last on PostgreSQL and first on SQLite; say where.
		order = "(d.failure_ts IS NULL) " + dir + ", " + order
	}
	args = append(args, max(f.Limit, 0), max(f.From, 0))
	rows, err := s.read.QueryContext(ctx, fmt.Sprintf(`SELECT %s FROM federation_destinations d %s ORDER BY %s, d.destination ASC LIMIT $%d OFFSET $%d`,
		destinationStatusColumns, where, order, len(args)-1, len(args)), args...)
	if err != nil {
		return nil, 0, fmt.Errorf("storage: list destinations: %w", err)
	}
	defer rows.Close()
	var out []*DestinationStatus
	for rows.Next() {
		d, err := scanDestinationStatus(rows)
		if err != nil {
			return nil, 0, fmt.Errorf("storage: list destinations: %w", err)
		}
		out = append(out, d)
	}
	return out, total, rows.Err()
}

// DestinationStatusByName returns one destination with its lag, or
// ErrNotFound.
func (s *Store) DestinationStatusByName(ctx context.Context, destination string) (*DestinationStatus, error) {
	d, err := scanDestinationStatus(s.read.QueryRowContext(ctx, `SELECT `+destinationStatusColumns+`
		FROM federation_destinations d WHERE d.destination = $1`, destination))
	if err != nil {
		return nil, notFound(err, "destination "+destination)
	}
	return d, nil
}

// DestinationTotals counts the destinations, those failing (a failure not
// followed by a delivery) and those behind (events queued, not delivered).
func (s *Store) DestinationTotals(ctx context.Context) (total, failing, behind int, err error) {
	err = s.read.QueryRowContext(ctx, `SELECT COUNT(*),
			COALESCE(SUM(CASE WHEN d.failure_ts IS NOT NULL THEN 1 ELSE 0 END), 0),
			COALESCE(SUM(CASE WHEN EXISTS (SELECT 1 FROM federation_destination_rooms r
				WHERE r.destination = d.destination AND r.stream_ordering > d.last_successful_stream_ordering) THEN 1 ELSE 0 END), 0)
		FROM federation_destinations d`).Scan(&total, &failing, &behind)
	if err != nil {
		err = fmt.Errorf("storage: destination totals: %w", err)
	}
	return total, failing, behind, err
}

// DestinationRooms returns one page of the rooms events were queued for
// destination in, by room ID, with the newest position queued in each,
// and how many there are.
func (s *Store) DestinationRooms(ctx context.Context, destination string, from, limit int, desc bool) ([]DestinationRoom, int, error) {
	var total int
	if err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM federation_destination_rooms WHERE destination = $1`, destination).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("storage: count destination rooms: %w", err)
	}
	dir := "ASC"
	if desc {
		dir = "DESC"
	}
	rows, err := s.read.QueryContext(ctx, `SELECT room_id, stream_ordering FROM federation_destination_rooms WHERE destination = $1
		ORDER BY room_id `+dir+` LIMIT $2 OFFSET $3`, destination, max(limit, 0), max(from, 0))
	if err != nil {
		return nil, 0, fmt.Errorf("storage: destination rooms: %w", err)
	}
	defer rows.Close()
	out := []DestinationRoom{}
	for rows.Next() {
		r := DestinationRoom{Destination: destination}
		if err := rows.Scan(&r.RoomID, &r.StreamPos); err != nil {
			return nil, 0, fmt.Errorf("storage: destination rooms: %w", err)
		}
		out = append(out, r)
	}
	return out, total, rows.Err()
}

// DestinationMembers counts, in each of roomIDs, the members joined from
// destination in the room's current state; rooms with none are left out.
func (s *Store) DestinationMembers(ctx context.Context, destination string, roomIDs []string) (map[string]int, error) {
	out := make(map[string]int, len(roomIDs))
	for start := 0; start < len(roomIDs); start += 400 {
		chunk := roomIDs[start:min(start+400, len(roomIDs))]
		args := make([]any, 0, len(chunk)+1)
		for _, id := range chunk {
			args = append(args, id)
		}
		args = append(args, "%:"+escapeLike(destination))
		rows, err := s.read.QueryContext(ctx, `SELECT room_id, COUNT(*) FROM current_state
			WHERE room_id IN (`+inList(1, len(chunk))+`) AND type = 'm.room.member' AND membership = 'join'
				AND state_key LIKE $`+fmt.Sprint(len(chunk)+1)+` ESCAPE '\' GROUP BY room_id`, args...)
		if err != nil {
			return nil, fmt.Errorf("storage: destination members: %w", err)
		}
		for rows.Next() {
			var id string
			var n int
			if err := rows.Scan(&id, &n); err != nil {
				rows.Close()
				return nil, fmt.Errorf("storage: destination members: %w", err)
			}
			out[id] = n
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("storage: destination members: %w", err)
		}
	}
	return out, nil
}

// DestinationEventsBehind counts, up to limit, the events of this server
// queued for destination and not delivered: in each room it is behind in,
// the outbound events after its last delivered position up to the newest
// queued there. The sender does not send them all when it catches up
// (only each room's newest; the destination fetches the rest), so this is
// how much it is missing, not how much will be sent. A count of limit
// means "at least limit": counting stops there, so a long outage in a
// busy room costs one bounded scan.
func (s *Store) DestinationEventsBehind(ctx context.Context, destination string, limit int) (int, error) {
	var n int
	err := s.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT 1 FROM federation_destinations d
		JOIN federation_destination_rooms r ON r.destination = d.destination AND r.stream_ordering > d.last_successful_stream_ordering
		JOIN events e ON e.room_id = r.room_id AND e.stream_ordering > d.last_successful_stream_ordering AND e.stream_ordering <= r.stream_ordering
		WHERE d.destination = $1 AND e.outbound = 1 AND `+liveEvent+` LIMIT $2) behind`, destination, limit).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("storage: destination events behind: %w", err)
	}
	return n, nil
}
