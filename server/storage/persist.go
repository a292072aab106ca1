package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// errStoredAlready fails a transaction sent whole (pipelineTx) that
// would have stored an event stored already; the committer then writes
// its batch again in transactions that can look at that event (deOutlier).
var errStoredAlready = errors.New("storage: an event of the batch is stored already")

// NewEvent is an event to persist.
type NewEvent struct {
	Event
	// PrevEvents are the event's prev_events: its DAG edges (none are
	// stored for outliers).
	PrevEvents []string
	// StateBefore is the group of the state before the event: 0 for the
	// create event and outliers, and for a rejected event whose state is
	// unknown.
	StateBefore int64
	// ChainState: the state before the event is the state after the
	// previous event of the batch (StateBefore is ignored).
	ChainState bool
	// Backfilled marks history older than what the room had: it takes a
	// position at or below zero, never seen as new by an incremental /sync.
	Backfilled bool
	// RejectReason says why a rejected or soft-failed event failed.
	RejectReason string
	// Outbound: the federation sender sends the event to the room's other
	// servers (this server's own events; memberships it relays).
	Outbound bool
	// Fresh: this server built the event for this write, so no stored
	// event can relate to it yet (see UnrelatedAt).
	Fresh bool
}

// live reports whether the event takes a live stream position.
func (ne *NewEvent) live() bool { return !ne.Outlier && !ne.Backfilled }

// HeadUpdate is what persisting events changes about the room's head: the
// forward extremities and the current state. Only accepted live events
// change them; rejected, soft-failed, backfilled and outlier events are
// persisted without one.
type HeadUpdate struct {
	// Extremities replaces the room's forward extremities (nil: unchanged).
	Extremities []string
	// StateGroup holds the new current state; 0 means the state after the
	// last event persisted with this update.
	StateGroup int64
	// Changes is the difference from the old current state to the new.
	Changes []StateChange
}

// StateChange is one key of current state changing.
type StateChange struct {
	Key StateKey
	// EventID is the key's new event; "" when the key left the state.
	EventID string
	// PrevEventID is the key's old event; "" when it was not in the state.
	PrevEventID string
	// StreamPos is the stream position of the change (set when read).
	StreamPos int64
}

// PersistEvents stores events of one room, in order, in one transaction:
// each with its state group, DAG edges and transaction ID, then the head
// update (forward extremities, current state and its deltas). It is the
// only way events enter the store besides PersistOutliers. Live events
// take increasing stream positions; PersistEvents returns once those are
// visible to readers (see eventStream), so whoever it tells may read them.
//
// An event already stored as an outlier is turned into a timeline event in
// place; any other event already stored is ErrConflict, as is a reused
// client transaction ID.
func (s *Store) PersistEvents(ctx context.Context, evs []*NewEvent, head *HeadUpdate) error {
	return s.QueueEvents(ctx, evs, head, nil).Wait()
}

// persistTx is PersistEvents' transaction, run by the committer
// (commit.go): it hands out p's stream positions (p.live), which the
// committer finishes whatever the outcome.
func (s *Store) persistTx(ctx context.Context, tx *sql.Tx, rows *batchRows, p *Pending) error {
	evs, head := p.evs, p.head
	nLive := 0
	for _, ne := range evs {
		if ne.live() {
			nLive++
		}
	}
	if head != nil && nLive == 0 {
		nLive = 1 // the deltas need a position of their own
	}
	p.live = s.events.nextLive(nLive)
	next := p.live
	var lastGroup int64
	for _, ne := range evs {
		if ne.live() {
			ne.StreamPos, next = next[0], next[1:]
		} else {
			ne.StreamPos = s.events.nextHistory()
		}
		if ne.ChainState {
			ne.StateBefore = lastGroup
		}
		if err := s.insertEvent(ctx, tx, rows, ne); err != nil {
			return err
		}
		lastGroup = ne.StateGroup
	}
	if head == nil {
		return nil
	}
	roomID := p.roomID
	if len(evs) == 0 {
		// A head change with no event of its own (extremities dropped).
		roomID = ""
	}
	return s.applyHead(ctx, tx, rows, roomID, p.live[len(p.live)-1], lastGroup, head)
}

// SetRoomHead changes a room's head without a new event (an admin dropping
// forward extremities): the deltas take a position of their own.
func (s *Store) SetRoomHead(ctx context.Context, roomID string, head *HeadUpdate) error {
	var pos []int64
	err := s.batchTx(ctx, true, func(b *stmtBatch) error {
		pos = s.events.nextLive(1)
		rows := newBatchRows()
		if err := s.applyHead(ctx, b.tx, rows, roomID, pos[0], 0, head); err != nil {
			return err
		}
		return s.flushRows(b, rows)
	})
	if err == nil {
		s.currentStateChanged(roomID)
		s.membersChanged(head.Changes)
	}
	s.events.finish(pos)
	if err != nil {
		return err
	}
	return s.events.waitVisible(context.WithoutCancel(ctx), pos[0])
}

// insertEvent stores one event row with its state group, and adds its
// edges, transaction ID, search row and bump stamp to rows.
func (s *Store) insertEvent(ctx context.Context, tx *sql.Tx, rows *batchRows, ne *NewEvent) error {
	e := &ne.Event
	group := ne.StateBefore
	if e.Outlier {
		group = 0
	} else if e.IsState() && !e.Rejected {
		// Soft-failed events have a state after them like any other: later
		// events may build on them.
		var err error
		if group, err = s.newStateGroup(ctx, tx, e.RoomID, ne.StateBefore, map[StateKey]string{{Type: e.Type, StateKey: *e.StateKey}: e.EventID}); err != nil {
			return err
		}
	}
	e.StateGroup = group
	if s.d.Name == "postgres" && !e.IsState() {
		// One statement for the batch's messages (flushRows): the
		// transaction reads no message back. State events are written
		// at once: the memberships of a head update are read back.
		rows.events = append(rows.events, ne)
	} else if err := s.insertEventRow(ctx, tx, rows, ne); err != nil {
		return err
	}
	rows.bump(ne)
	if !e.Outlier {
		for _, p := range ne.PrevEvents {
			rows.edges = append(rows.edges, e.StreamPos, p)
		}
	}
	if e.TxnID != "" && e.SenderDevice != "" {
		rows.txnIDs = append(rows.txnIDs, e.Sender, e.SenderDevice, e.TxnScope, e.TxnID, e.StreamPos)
	}
	return nil
}

// insertEventRow writes the event's row and its search row.
func (s *Store) insertEventRow(ctx context.Context, tx *sql.Tx, rows *batchRows, ne *NewEvent) error {
	e, group := &ne.Event, ne.Event.StateGroup
	q, args, indexed := s.withSearchIndex(ne, insertEventSQL,
		e.StreamPos, e.EventID, e.RoomID, e.Type, e.StateKey, e.Sender, e.Depth, e.OriginServerTS, string(e.JSON),
		nullStr(e.Membership), nullStr(e.ReplacesState), nullInt(group), boolInt(e.Rejected), boolInt(e.SoftFailed),
		nullStr(ne.RejectReason), boolInt(e.Outlier), nullStr(e.RelatesTo), nullStr(e.RelType),
		nullStr(e.SenderDevice), nullStr(e.TxnID), boolInt(ne.Outbound))
	inserted, err := s.insertOnce(ctx, tx, q, args)
	if err != nil {
		return fmt.Errorf("storage: insert event %s: %w", e.EventID, err)
	}
	if !inserted {
		indexed = false
		if err := deOutlier(ctx, tx, ne, group); err != nil {
			return err
		}
	}
	if !indexed {
		return s.indexForSearch(ctx, tx, rows, ne)
	}
	return nil
}

// insertOnce runs an event's INSERT … ON CONFLICT DO NOTHING (q, from
// insertEventSQL) and reports whether it inserted the row.
//
// On SQLite it runs without its RETURNING clause, and the row count
// answers: database/sql watches a query's rows inside a transaction
// with a goroutine of their own, so a RETURNING made one goroutine for
// every event the committer writes. With ten senders into one room that
// was ~1,800 goroutines a second, each started on the committer's
// processor and waiting in its run queue, ahead of the requests its
// batch had just answered (an execution trace: a millisecond each).
func (s *Store) insertOnce(ctx context.Context, tx *sql.Tx, q string, args []any) (bool, error) {
	if s.d.Name == "sqlite" && q == insertEventSQL {
		res, err := s.txExec(ctx, tx, insertEventFail, args...)
		if err != nil {
			return false, err
		}
		n, err := res.RowsAffected()
		return n > 0, err
	}
	var pos int64
	err := s.txQueryRow(ctx, tx, q, args...).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// queueEventRows queues the rows of events (PostgreSQL: one statement
// writing them and their search rows, each as insertEventRow would), and
// notes in inserted the events it inserted: the others are stored
// already (flushRows). strict: an event stored already fails the
// statement, with errStoredAlready, instead (a transaction sent whole,
// pipelineTx, cannot turn an outlier into a timeline event after it).
func (s *Store) queueEventRows(b *stmtBatch, evs []*NewEvent, inserted *map[string]bool, strict bool) {
	const cols = 21
	args := make([]any, 0, cols*len(evs)+2)
	var searchIDs, searchText []string
	for _, ne := range evs {
		e := &ne.Event
		args = append(args, e.StreamPos, e.EventID, e.RoomID, e.Type, e.StateKey, e.Sender, e.Depth, e.OriginServerTS, string(e.JSON),
			nullStr(e.Membership), nullStr(e.ReplacesState), nullInt(e.StateGroup), boolInt(e.Rejected), boolInt(e.SoftFailed),
			nullStr(ne.RejectReason), boolInt(e.Outlier), nullStr(e.RelatesTo), nullStr(e.RelType),
			nullStr(e.SenderDevice), nullStr(e.TxnID), boolInt(ne.Outbound))
		if text, ok := searchTextOf(ne); ok {
			searchIDs, searchText = append(searchIDs, e.EventID), append(searchText, text)
		}
	}
	// The search rows of the events inserted, in the same statement: the
	// event rows are what they are made from.
	n := len(evs) * cols
	args = append(args, searchIDs, searchText)
	// strict: no ON CONFLICT, so that an event stored already fails the
	// statement with a unique violation.
	onConflict := ` ON CONFLICT (event_id) DO NOTHING`
	if strict {
		onConflict = ``
	}
	q := bulkSQL(`WITH e AS (INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender, depth, origin_server_ts,
		json, membership, replaces_state, state_group, rejected, soft_failed, rejection_reason, outlier, relates_to, rel_type,
		sender_device, txn_id, outbound) VALUES `, cols, fmt.Sprintf(onConflict+`
		RETURNING event_id, stream_ordering, room_id, type, sender, origin_server_ts),
		s AS (INSERT INTO event_search (stream_ordering, room_id, type, sender, origin_server_ts, vector)
		SELECT e.stream_ordering, e.room_id, e.type, e.sender, e.origin_server_ts, to_tsvector('english', v.text)
		FROM e JOIN unnest($%d::text[], $%d::text[]) AS v (event_id, text) ON v.event_id = e.event_id)
		SELECT event_id FROM e`, n+1, n+2), len(evs), true)
	if strict {
		b.query(q, args, func(rows pgx.Rows) error {
			for rows.Next() {
			}
			if err := rows.Err(); err != nil {
				var pe *pgconn.PgError
				if errors.As(err, &pe) && pe.Code == "23505" { // unique_violation
					return errStoredAlready
				}
				return fmt.Errorf("storage: insert events: %w", err)
			}
			return nil
		})
		return
	}
	b.query(q, args, func(rows pgx.Rows) error {
		if *inserted == nil {
			*inserted = make(map[string]bool, len(evs))
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			(*inserted)[id] = true
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("storage: insert events: %w", err)
		}
		return nil
	})
}

// insertEventSQL inserts an event row; nothing when the event is stored
// already (an outlier to turn into a timeline event, or a conflict).
const insertEventSQL = insertEventNoReturning + ` RETURNING stream_ordering`

// insertEventNoReturning is insertEventSQL without its RETURNING, which
// SQLite runs (insertOnce) as INSERT OR FAIL (insertEventFail).
const insertEventNoReturning = `INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender, depth, origin_server_ts,
			json, membership, replaces_state, state_group, rejected, soft_failed, rejection_reason, outlier, relates_to, rel_type,
			sender_device, txn_id, outbound)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
		ON CONFLICT (event_id) DO NOTHING`

// insertEventFail is the event row's INSERT on SQLite's writer
// (failNotAbort).
var insertEventFail = failNotAbort(insertEventNoReturning)

// deOutlier turns an event stored as an outlier (from an auth chain or a
// join's state) into a timeline event once it arrives as one. Any other
// duplicate is ErrConflict.
func deOutlier(ctx context.Context, tx *sql.Tx, ne *NewEvent, group int64) error {
	e := &ne.Event
	var outlier int
	if err := tx.QueryRowContext(ctx, `SELECT outlier FROM events WHERE event_id = $1`, e.EventID).Scan(&outlier); err != nil {
		return fmt.Errorf("storage: read event %s: %w", e.EventID, err)
	}
	if outlier == 0 || e.Outlier {
		return ErrConflict
	}
	_, err := tx.ExecContext(ctx, `UPDATE events SET stream_ordering = $1, outlier = 0, state_group = $2, rejected = $3,
		soft_failed = $4, rejection_reason = $5, json = $6, outbound = $7 WHERE event_id = $8`,
		e.StreamPos, nullInt(group), boolInt(e.Rejected), boolInt(e.SoftFailed), nullStr(ne.RejectReason), string(e.JSON),
		boolInt(ne.Outbound), e.EventID)
	if err != nil {
		return fmt.Errorf("storage: de-outlier %s: %w", e.EventID, err)
	}
	return nil
}

// applyHead writes a head update at stream position pos. lastGroup is the
// state group after the last event persisted with it.
func (s *Store) applyHead(ctx context.Context, tx *sql.Tx, rows *batchRows, roomID string, pos, lastGroup int64, head *HeadUpdate) error {
	if roomID == "" {
		return errors.New("storage: head update without a room")
	}
	if head.Extremities != nil {
		rows.extremities(roomID, head.Extremities)
	}
	group := head.StateGroup
	if group == 0 {
		group = lastGroup
	}
	if len(head.Changes) > 0 || head.StateGroup != 0 {
		if _, err := s.txExec(ctx, tx, `UPDATE rooms SET state_group = $1 WHERE room_id = $2`, nullInt(group), roomID); err != nil {
			return fmt.Errorf("storage: set room state group: %w", err)
		}
	}
	return s.applyChanges(ctx, tx, roomID, pos, head.Changes)
}

// applyChanges writes current-state changes and their deltas with bulk
// statements: a join's thousands of keys are a few statements each.
func (s *Store) applyChanges(ctx context.Context, tx *sql.Tx, roomID string, pos int64, changes []StateChange) error {
	var memberEvents []string
	for _, c := range changes {
		if c.Key.Type == "m.room.member" && c.EventID != "" {
			memberEvents = append(memberEvents, c.EventID)
		}
	}
	membership, err := s.memberships(ctx, tx, memberEvents)
	if err != nil {
		return err
	}
	var upserts, deltas []any
	var joined []string
	for _, c := range changes {
		deltas = append(deltas, pos, roomID, c.Key.Type, c.Key.StateKey, nullStr(c.EventID), nullStr(c.PrevEventID))
		if c.EventID == "" {
			if _, err := tx.ExecContext(ctx, `DELETE FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3`,
				roomID, c.Key.Type, c.Key.StateKey); err != nil {
				return fmt.Errorf("storage: update current state: %w", err)
			}
			continue
		}
		m := membership[c.EventID]
		upserts = append(upserts, roomID, c.Key.Type, c.Key.StateKey, c.EventID, nullStr(m), pos)
		if m == "join" {
			joined = append(joined, c.Key.StateKey)
		}
	}
	// current_state.stream_ordering is when the key last changed, not the
	// event's own position: a state reset back to an old event is a change
	// now.
	err = s.bulkExec(ctx, tx, `INSERT INTO current_state (room_id, type, state_key, event_id, membership, stream_ordering) VALUES `,
		6, ` ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id,
			membership = excluded.membership, stream_ordering = excluded.stream_ordering`, upserts)
	if err != nil {
		return fmt.Errorf("storage: update current state: %w", err)
	}
	if len(joined) > 0 {
		if err := clearForgotten(ctx, tx, roomID, joined); err != nil {
			return err
		}
	}
	if len(deltas) > 0 {
		s.deltasWritten(pos)
	}
	if err := s.bulkExec(ctx, tx, `INSERT INTO current_state_deltas (stream_ordering, room_id, type, state_key, event_id, prev_event_id) VALUES `,
		6, ``, deltas); err != nil {
		return fmt.Errorf("storage: record state delta: %w", err)
	}
	return nil
}

// memberships reads the membership of member events, by event ID.
func (s *Store) memberships(ctx context.Context, tx *sql.Tx, ids []string) (map[string]string, error) {
	out := make(map[string]string, len(ids))
	for start := 0; start < len(ids); start += s.d.InChunk {
		chunk := ids[start:min(start+s.d.InChunk, len(ids))]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		rows, err := tx.QueryContext(ctx, `SELECT event_id, COALESCE(membership, '') FROM events WHERE event_id IN (`+inList(1, len(chunk))+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("storage: memberships: %w", err)
		}
		for rows.Next() {
			var id, m string
			if err := rows.Scan(&id, &m); err != nil {
				rows.Close()
				return nil, err
			}
			out[id] = m
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// clearForgotten removes the forgetting of the room by users who joined it
// again. Few users forget a room: read who did, then match.
func clearForgotten(ctx context.Context, tx *sql.Tx, roomID string, users []string) error {
	rows, err := tx.QueryContext(ctx, `SELECT user_id FROM forgotten_rooms WHERE room_id = $1`, roomID)
	if err != nil {
		return fmt.Errorf("storage: forgotten rooms: %w", err)
	}
	var rejoined []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			rows.Close()
			return err
		}
		if slices.Contains(users, u) {
			rejoined = append(rejoined, u)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, u := range rejoined {
		if _, err := tx.ExecContext(ctx, `DELETE FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2`, u, roomID); err != nil {
			return fmt.Errorf("storage: unforget room: %w", err)
		}
	}
	return nil
}

// outlierChunk bounds the rows one PersistOutliers transaction writes, so
// a join's thousands of state events never hold the (SQLite) writer for
// long: other rooms' sends interleave between chunks.
const outlierChunk = 10

// PersistOutliers stores events outside the timeline (auth chains, the
// state a join brings): no stream position readers see, no state group,
// no edges. Events already stored are left as they are. The batch is
// written in chunks, each its own transaction; the room lock is not needed.
func (s *Store) PersistOutliers(ctx context.Context, evs []*NewEvent) error {
	for start := 0; start < len(evs); start += outlierChunk {
		chunk := evs[start:min(start+outlierChunk, len(evs))]
		args := make([]any, 0, 15*len(chunk))
		for _, ne := range chunk {
			e := &ne.Event
			e.Outlier, e.StreamPos, e.StateGroup = true, s.events.nextHistory(), 0
			args = append(args, e.StreamPos, e.EventID, e.RoomID, e.Type, e.StateKey, e.Sender, e.Depth, e.OriginServerTS, string(e.JSON),
				nullStr(e.Membership), boolInt(e.Rejected), nullStr(ne.RejectReason), nullStr(e.RelatesTo), nullStr(e.RelType), 1)
		}
		// Outliers matter only once an event that refers to them is
		// persisted, whose commit makes them durable too.
		err := s.txNoSync(ctx, func(tx *sql.Tx) error {
			err := s.bulkExec(ctx, tx, `INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender, depth,
					origin_server_ts, json, membership, rejected, rejection_reason, relates_to, rel_type, outlier) VALUES `,
				15, ` ON CONFLICT (event_id) DO NOTHING`, args)
			if err != nil {
				return fmt.Errorf("storage: insert outliers: %w", err)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// EventsExist returns which of ids are stored, with whether each is an
// outlier.
func (s *Store) EventsExist(ctx context.Context, ids []string) (map[string]bool, error) {
	out := map[string]bool{}
	if len(ids) == 0 {
		return out, nil
	}
	cond, arg := s.inSet("event_id", 1, ids)
	rows, err := s.read.QueryContext(ctx, `SELECT event_id, outlier FROM events WHERE `+cond, arg)
	if err != nil {
		return nil, fmt.Errorf("storage: events exist: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var outlier int
		if err := rows.Scan(&id, &outlier); err != nil {
			return nil, err
		}
		out[id] = outlier != 0
	}
	return out, rows.Err()
}
