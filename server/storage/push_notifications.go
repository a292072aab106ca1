package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"math"
	"unsafe"
)

// Notifications (push_notifications, push_thread_heads, push_position):
// what the push evaluator recorded, and the unread counts read from it.
//
// A notification is unread when it comes after the user's read receipts
// (spec: "Marking notifications as read"): after the newer of their
// unthreaded receipt and their receipt in the notification's thread (m.read
// and m.read.private alike, whichever is further), in stream order.

// Notification is one row of push_notifications.
type Notification struct {
	UserID       string
	StreamPos    int64
	RoomID       string
	EventID      string
	ThreadID     string // "main" or a thread root
	Highlight    bool
	Actions      string // JSON array
	TS           int64
	CumNotif     int64
	CumHighlight int64
}

// ThreadHead is the newest notification of a (user, room, thread).
type ThreadHead struct {
	UserID       string
	RoomID       string
	ThreadID     string
	StreamPos    int64
	CumNotif     int64
	CumHighlight int64
}

// NotifCount is the unread notifications of one thread.
type NotifCount struct {
	Notifications, Highlights int64
}

// PushPosition is the event stream position up to which push rules have
// been evaluated.
func (s *Store) PushPosition(ctx context.Context) (int64, error) {
	var pos int64
	err := s.read.QueryRowContext(ctx, `SELECT stream_ordering FROM push_position WHERE id = 1`).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("storage: push position: %w", err)
	}
	return pos, nil
}

// PushEventsAfter returns the live events in (after, upTo], in stream
// order, at most limit: what the push evaluator reads.
func (s *Store) PushEventsAfter(ctx context.Context, after, upTo int64, limit int) ([]*Event, error) {
	return scanEvents(s.read.QueryContext(ctx, `SELECT `+eventColumns+` FROM events
		WHERE stream_ordering > $1 AND stream_ordering <= $2 AND `+liveEvent+` ORDER BY stream_ordering LIMIT $3`, after, upTo, limit))
}

// MemberRow is one membership event of a room's state; ReplacesState is
// the member event it replaced ("" for the user's first).
type MemberRow struct {
	EventID, UserID, Membership, ReplacesState string
}

// MemberRows reads the target, membership and replaced event of member
// events by ID.
func (s *Store) MemberRows(ctx context.Context, ids []string) ([]MemberRow, error) {
	out := make([]MemberRow, 0, len(ids))
	for start := 0; start < len(ids); start += s.d.InChunk {
		chunk := ids[start:min(start+s.d.InChunk, len(ids))]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		rows, err := s.read.QueryContext(ctx, `SELECT event_id, COALESCE(state_key, ''), COALESCE(membership, ''),
			COALESCE(replaces_state, '') FROM events WHERE event_id IN (`+inList(1, len(chunk))+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("storage: member rows: %w", err)
		}
		for rows.Next() {
			var m MemberRow
			if err := rows.Scan(&m.EventID, &m.UserID, &m.Membership, &m.ReplacesState); err != nil {
				rows.Close()
				return nil, fmt.Errorf("storage: scan member row: %w", err)
			}
			out = append(out, m)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ThreadHeads returns the heads of a room's thread for every user with
// notifications in it, by user, in a map the caller may change. What is
// stored is cached (caches.threadHeads): the push evaluator asks at every
// step that notifies in the thread, every 10 ms in a busy room, and each
// read was a row per member notified there.
func (s *Store) ThreadHeads(ctx context.Context, roomID, threadID string) (map[string]ThreadHead, error) {
	k := [2]string{roomID, threadID}
	stored, ok := s.c.threadHeads.Get(k)
	if !ok {
		gen := s.c.threadHeads.Generation()
		var err error
		if stored, err = s.storedThreadHeads(ctx, roomID, threadID); err != nil {
			return nil, err
		}
		s.c.threadHeads.AddIfGeneration(k, stored, gen)
	}
	out := maps.Clone(stored) // never nil: neither is what is cached
	// Read by the evaluator, the one goroutine that flushes: nothing
	// leaves the staged heads between the read above and this.
	s.stagedThreadHeads(roomID, threadID, out)
	return out, nil
}

// storedThreadHeads reads a thread's heads from push_thread_heads.
func (s *Store) storedThreadHeads(ctx context.Context, roomID, threadID string) (map[string]ThreadHead, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT user_id, stream_ordering, cum_notif, cum_highlight FROM push_thread_heads
		WHERE room_id = $1 AND thread_id = $2`, roomID, threadID)
	if err != nil {
		return nil, fmt.Errorf("storage: thread heads: %w", err)
	}
	defer rows.Close()
	out := map[string]ThreadHead{}
	for rows.Next() {
		h := ThreadHead{RoomID: roomID, ThreadID: threadID}
		if err := rows.Scan(&h.UserID, &h.StreamPos, &h.CumNotif, &h.CumHighlight); err != nil {
			return nil, fmt.Errorf("storage: scan thread head: %w", err)
		}
		out[h.UserID] = h
	}
	return out, rows.Err()
}

// RecordNotifications stores what the evaluator found for the events up to
// pos, the new heads of the threads they went to, and pos, in one
// transaction. It does not wait for the disk (txNoSync): everything it
// writes is derived from events already stored, and is evaluated again
// after a crash that loses it, since the position is lost with it.
func (s *Store) RecordNotifications(ctx context.Context, pos int64, ns []Notification, heads []ThreadHead) error {
	// Statements alone, sent whole on PostgreSQL: one round trip.
	err := s.pipelineTx(ctx, false, func(b *stmtBatch) error {
		if b.conn != nil {
			recordNotificationsPostgres(b, ns, heads)
		} else {
			args := make([]any, 0, len(ns)*10)
			for _, n := range ns {
				args = append(args, n.UserID, n.StreamPos, n.RoomID, n.EventID, n.ThreadID, boolInt(n.Highlight), n.Actions, n.TS,
					n.CumNotif, n.CumHighlight)
			}
			b.bulk(wrapErr("storage: record notifications: %w"), `INSERT INTO push_notifications (user_id, stream_ordering, room_id,
			event_id, thread_id, highlight, actions, ts, cum_notif, cum_highlight) VALUES `, 10, ``, args)
			hargs := make([]any, 0, len(heads)*6)
			for _, h := range heads {
				hargs = append(hargs, h.UserID, h.RoomID, h.ThreadID, h.StreamPos, h.CumNotif, h.CumHighlight)
			}
			b.bulk(wrapErr("storage: record thread heads: %w"), `INSERT INTO push_thread_heads (user_id, room_id, thread_id,
			stream_ordering, cum_notif, cum_highlight) VALUES `, 6, headsUpsert, hargs)
		}
		b.exec(wrapErr("storage: set push position: %w"), setPushPositionSQL, pos)
		return b.send()
	})
	if err == nil {
		s.notificationsRecorded(pos, heads)
	}
	return err
}

// notificationsRecorded tells the caches that the heads and position of a
// RecordNotifications are stored.
func (s *Store) notificationsRecorded(pos int64, heads []ThreadHead) {
	s.headsRecorded(heads)
	s.evaluatedUpTo(pos)
}

// headsUpsert ends the thread heads' INSERT: a head replaces the one before.
const headsUpsert = ` ON CONFLICT (user_id, room_id, thread_id) DO UPDATE SET
			stream_ordering = excluded.stream_ordering, cum_notif = excluded.cum_notif, cum_highlight = excluded.cum_highlight`

// recordNotificationsPostgres queues RecordNotifications' rows on
// PostgreSQL as one statement per table whose parameters are one array per
// column (unnest). Multi-row VALUES statements differ in text with their
// row count, so nearly every step's last chunk was a statement PostgreSQL
// had to parse and plan anew, with ten parameters a row for Hearth to
// encode one by one: a step of eight messages into a 200-member room
// (1,592 rows) took 13.4 ms, 1.0 ms of Hearth's CPU a message.
func recordNotificationsPostgres(b *stmtBatch, ns []Notification, heads []ThreadHead) {
	if len(ns) > 0 {
		users, rooms, events, threads, actions := make([]string, len(ns)), make([]string, len(ns)), make([]string, len(ns)), make([]string, len(ns)), make([]string, len(ns))
		pos, ts, cumN, cumH := make([]int64, len(ns)), make([]int64, len(ns)), make([]int64, len(ns)), make([]int64, len(ns))
		hl := make([]int32, len(ns))
		for i, n := range ns {
			users[i], pos[i], rooms[i], events[i], threads[i] = n.UserID, n.StreamPos, n.RoomID, n.EventID, n.ThreadID
			hl[i], actions[i], ts[i], cumN[i], cumH[i] = int32(boolInt(n.Highlight)), n.Actions, n.TS, n.CumNotif, n.CumHighlight
		}
		b.exec(wrapErr("storage: record notifications: %w"), `INSERT INTO push_notifications (user_id, stream_ordering, room_id,
			event_id, thread_id, highlight, actions, ts, cum_notif, cum_highlight)
			SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::integer[], $7::text[],
			$8::bigint[], $9::bigint[], $10::bigint[])`, users, pos, rooms, events, threads, hl, actions, ts, cumN, cumH)
	}
	if len(heads) > 0 {
		users, rooms, threads := make([]string, len(heads)), make([]string, len(heads)), make([]string, len(heads))
		pos, cumN, cumH := make([]int64, len(heads)), make([]int64, len(heads)), make([]int64, len(heads))
		for i, h := range heads {
			users[i], rooms[i], threads[i], pos[i], cumN[i], cumH[i] = h.UserID, h.RoomID, h.ThreadID, h.StreamPos, h.CumNotif, h.CumHighlight
		}
		b.exec(wrapErr("storage: record thread heads: %w"), `INSERT INTO push_thread_heads (user_id, room_id, thread_id,
			stream_ordering, cum_notif, cum_highlight)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[])`+headsUpsert,
			users, rooms, threads, pos, cumN, cumH)
	}
}

// SetPushPosition records the evaluated position alone (events that
// notified nobody); like RecordNotifications it does not wait for the disk.
//
// The position only moves forward: a write of an older one (an evaluator
// stopping while its last batch committed, unknown to it, with position
// and rows together) changes nothing, so the rows recorded after it are
// never evaluated again.
func (s *Store) SetPushPosition(ctx context.Context, pos int64) error {
	err := s.txNoSync(ctx, func(tx *sql.Tx) error { return s.setPushPosition(ctx, tx, pos) })
	if err == nil {
		s.evaluatedUpTo(pos)
	}
	return err
}

// setPushPositionSQL moves the push position forward to $1. It runs
// prepared on SQLite (txExec, stmtBatch.exec): it is in every batch the
// evaluator records, and parsing it each time was 2% of the server's CPU
// in a profile of ten senders into one room.
const setPushPositionSQL = `INSERT INTO push_position (id, stream_ordering) VALUES (1, $1)
		ON CONFLICT (id) DO UPDATE SET stream_ordering = excluded.stream_ordering
		WHERE push_position.stream_ordering < excluded.stream_ordering`

func (s *Store) setPushPosition(ctx context.Context, tx *sql.Tx, pos int64) error {
	_, err := s.txExec(ctx, tx, setPushPositionSQL, pos)
	if err != nil {
		return fmt.Errorf("storage: set push position: %w", err)
	}
	return nil
}

// noReceipt is the read position of a thread without receipts: before
// every event, backfilled ones (at or below zero) included.
const noReceipt = math.MinInt64

// ReadPositions are a user's read positions per room: thread ("" for the
// unthreaded receipt, "main", or a thread root) → stream position of the
// receipt's event.
type ReadPositions map[string]map[string]int64

// Of is the position up to which the thread's notifications are read: the
// newer of the unthreaded receipt and the thread's own.
func (rp ReadPositions) Of(roomID, threadID string) int64 {
	pos := int64(noReceipt)
	if m, ok := rp[roomID]; ok {
		if p, ok := m[""]; ok {
			pos = p
		}
		if p, ok := m[threadID]; ok && p > pos {
			pos = p
		}
	}
	return pos
}

// Room is the room's read position for every thread: the unthreaded
// receipt's (noReceipt when none).
func (rp ReadPositions) Room(roomID string) int64 {
	if p, ok := rp[roomID][""]; ok {
		return p
	}
	return noReceipt
}

// ReadPositionsOf reads the user's read receipts in every room.
func (s *Store) ReadPositionsOf(ctx context.Context, userID string) (ReadPositions, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT r.room_id, r.thread_id, MAX(e.stream_ordering)`+readPositionsFrom, userID)
	if err != nil {
		return nil, fmt.Errorf("storage: read positions: %w", err)
	}
	defer rows.Close()
	out := ReadPositions{}
	for rows.Next() {
		var room, thread string
		var pos int64
		if err := rows.Scan(&room, &thread, &pos); err != nil {
			return nil, fmt.Errorf("storage: scan read position: %w", err)
		}
		out.set(room, thread, pos)
	}
	return out, rows.Err()
}

// readPositionsFrom is the rest of ReadPositionsOf's query after its
// columns (room, thread, position); $1 is the user.
const readPositionsFrom = ` FROM receipts r
		JOIN events e ON e.event_id = r.event_id
		WHERE r.user_id = $1 AND r.type IN ('m.read', 'm.read.private') GROUP BY r.room_id, r.thread_id`

func (rp ReadPositions) set(room, thread string, pos int64) {
	if rp[room] == nil {
		rp[room] = map[string]int64{}
	}
	rp[room][thread] = pos
}

// UnreadCounts returns the user's unread notifications among those at or
// before stream position upTo, per room and thread, for the rooms in
// rooms (every room when nil). Threads and rooms without any are left out.
func (s *Store) UnreadCounts(ctx context.Context, userID string, rooms map[string]bool, upTo int64) (map[string]map[string]NotifCount, error) {
	// The staged heads are taken before the stored ones are read: a head
	// written in between is then in one or the other.
	staged := s.stagedHeadsOf(userID)
	base, err := s.unreadBaseOf(ctx, userID)
	if err != nil {
		return nil, err
	}
	read := base.read
	out := map[string]map[string]NotifCount{}
	for _, h := range withHeadsFrom(base.heads, staged) {
		if (rooms != nil && !rooms[h.RoomID]) || h.StreamPos <= read.Of(h.RoomID, h.ThreadID) {
			continue
		}
		endN, endH := h.CumNotif, h.CumHighlight
		if h.StreamPos > upTo {
			if endN, endH, err = s.cumAt(ctx, h, upTo); err != nil {
				return nil, err
			}
		}
		var startN, startH int64
		if r := read.Of(h.RoomID, h.ThreadID); r != noReceipt {
			if startN, startH, err = s.cumAt(ctx, h, r); err != nil {
				return nil, err
			}
		}
		if endN > startN {
			if out[h.RoomID] == nil {
				out[h.RoomID] = map[string]NotifCount{}
			}
			out[h.RoomID][h.ThreadID] = NotifCount{Notifications: endN - startN, Highlights: endH - startH}
		}
	}
	return out, nil
}

// unreadBase is what a user's unread counts start from: their read
// positions and the heads of their threads with notifications. Values in
// the cache are never changed, only replaced.
type unreadBase struct {
	read  ReadPositions
	heads []ThreadHead
}

func (b *unreadBase) size() int64 {
	n := int64(64)
	for room, threads := range b.read {
		n += 48 + str(room)
		for thread := range threads {
			n += 24 + str(thread)
		}
	}
	for _, h := range b.heads {
		n += int64(unsafe.Sizeof(h)) + int64(len(h.RoomID)+len(h.ThreadID))
	}
	return n
}

// withHeads is b with the heads in hs (all of b's user) put in, newer
// replacing older (withHeadsFrom): a new value, b unchanged.
func (b *unreadBase) withHeads(hs []ThreadHead) *unreadBase {
	return &unreadBase{read: b.read, heads: withHeadsFrom(b.heads, hs)}
}

// unreadBaseOf reads the user's read positions and thread heads in one
// statement, through the unread cache: every /sync answer reads both.
func (s *Store) unreadBaseOf(ctx context.Context, userID string) (*unreadBase, error) {
	if b, ok := s.c.unread.Get(userID); ok {
		return b, nil
	}
	gen := s.c.unread.Generation()
	// The third part counts the receipts whose position may still
	// change: on an event not stored yet, or on an outlier.
	rows, err := s.read.QueryContext(ctx, `SELECT 0, r.room_id, r.thread_id, MAX(e.stream_ordering), 0, 0`+readPositionsFrom+`
		UNION ALL SELECT 1, room_id, thread_id, stream_ordering, cum_notif, cum_highlight FROM push_thread_heads
		WHERE user_id = $1
		UNION ALL SELECT 2, '', '', COUNT(*), 0, 0 FROM receipts r LEFT JOIN events e ON e.event_id = r.event_id
		WHERE r.user_id = $1 AND r.type IN ('m.read', 'm.read.private') AND (e.event_id IS NULL OR e.outlier <> 0)`, userID)
	if err != nil {
		return nil, fmt.Errorf("storage: read positions and thread heads of %s: %w", userID, err)
	}
	defer rows.Close()
	b := &unreadBase{read: ReadPositions{}}
	var unsettled int64
	for rows.Next() {
		var part int
		h := ThreadHead{UserID: userID}
		if err := rows.Scan(&part, &h.RoomID, &h.ThreadID, &h.StreamPos, &h.CumNotif, &h.CumHighlight); err != nil {
			return nil, fmt.Errorf("storage: scan thread head: %w", err)
		}
		switch part {
		case 0:
			b.read.set(h.RoomID, h.ThreadID, h.StreamPos)
		case 1:
			b.heads = append(b.heads, h)
		default:
			unsettled = h.StreamPos
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if unsettled == 0 {
		s.c.unread.AddIfGeneration(userID, b, gen)
	}
	return b, nil
}

// headsRecorded puts the thread heads RecordNotifications committed into
// the cached unread bases of their users and the cached heads of their
// threads.
func (s *Store) headsRecorded(heads []ThreadHead) {
	byUser := map[string][]ThreadHead{}
	byThread := map[[2]string][]ThreadHead{}
	for _, h := range heads {
		byUser[h.UserID] = append(byUser[h.UserID], h)
		k := [2]string{h.RoomID, h.ThreadID}
		byThread[k] = append(byThread[k], h)
	}
	for user, hs := range byUser {
		s.c.unread.Update(user, func(b *unreadBase) *unreadBase { return b.withHeads(hs) })
	}
	// A thread's cached heads are what is stored: they take the new ones
	// (a new map: ThreadHeads may be copying the old).
	for k, hs := range byThread {
		s.c.threadHeads.Update(k, func(old map[string]ThreadHead) map[string]ThreadHead {
			m := make(map[string]ThreadHead, len(old)+len(hs))
			maps.Copy(m, old)
			for _, h := range hs {
				m[h.UserID] = h
			}
			return m
		})
	}
}

// cumAt is the running totals of h's thread at its last notification at or
// before pos (zero when there is none). The user's notifications are
// indexed by position alone (migration 0034), so the read walks them back
// from pos to the thread's last one; at or before the evaluated position
// the answer is final and cached, so a receipt is walked back from once.
func (s *Store) cumAt(ctx context.Context, h ThreadHead, pos int64) (int64, int64, error) {
	k := totalsKey{user: h.UserID, room: h.RoomID, thread: h.ThreadID, pos: pos}
	if v, ok := s.c.notifTotals.Get(k); ok {
		return v[0], v[1], nil
	}
	final := pos <= s.pushEvaluated.Load()
	gen := s.c.notifTotals.Generation()
	// Staged rows first: one flushed after this look is stored by then.
	n, hl, ok := s.stagedCumAt(h.UserID, h.RoomID, h.ThreadID, pos)
	if ok {
		if final {
			s.c.notifTotals.AddIfGeneration(k, [2]int64{n, hl}, gen)
		}
		return n, hl, nil
	}
	err := s.read.QueryRowContext(ctx, `SELECT cum_notif, cum_highlight FROM push_notifications
		WHERE user_id = $1 AND stream_ordering <= $2 AND room_id = $3 AND thread_id = $4
		ORDER BY stream_ordering DESC LIMIT 1`, h.UserID, pos, h.RoomID, h.ThreadID).Scan(&n, &hl)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, 0, fmt.Errorf("storage: notification totals: %w", err)
	}
	if final {
		s.c.notifTotals.AddIfGeneration(k, [2]int64{n, hl}, gen)
	}
	return n, hl, nil
}

// evaluatedUpTo records that push rules were evaluated up to pos, once
// that is committed: the totals at or before it are final (cumAt).
func (s *Store) evaluatedUpTo(pos int64) {
	for {
		cur := s.pushEvaluated.Load()
		if pos <= cur || s.pushEvaluated.CompareAndSwap(cur, pos) {
			return
		}
	}
}

const notificationColumns = `user_id, stream_ordering, room_id, event_id, thread_id, highlight, actions, ts, cum_notif, cum_highlight`

func scanNotifications(rows *sql.Rows, err error) ([]Notification, error) {
	if err != nil {
		return nil, fmt.Errorf("storage: notifications: %w", err)
	}
	defer rows.Close()
	var out []Notification
	for rows.Next() {
		var n Notification
		var hl int
		if err := rows.Scan(&n.UserID, &n.StreamPos, &n.RoomID, &n.EventID, &n.ThreadID, &hl, &n.Actions, &n.TS,
			&n.CumNotif, &n.CumHighlight); err != nil {
			return nil, fmt.Errorf("storage: scan notification: %w", err)
		}
		n.Highlight = hl != 0
		out = append(out, n)
	}
	return out, rows.Err()
}

// NotificationsOf lists a user's notifications before stream position
// before (all when 0), newest first, at most limit; only highlights with
// onlyHighlight (GET /notifications).
func (s *Store) NotificationsOf(ctx context.Context, userID string, before int64, limit int, onlyHighlight bool) ([]Notification, error) {
	if err := s.waitWritten(ctx); err != nil {
		return nil, err
	}
	q := `SELECT ` + notificationColumns + ` FROM push_notifications WHERE user_id = $1`
	args := []any{userID}
	if before != 0 {
		args = append(args, before)
		q += fmt.Sprintf(` AND stream_ordering < $%d`, len(args))
	}
	if onlyHighlight {
		q += ` AND highlight = 1`
	}
	args = append(args, limit)
	q += fmt.Sprintf(` ORDER BY stream_ordering DESC LIMIT $%d`, len(args))
	return scanNotifications(s.read.QueryContext(ctx, q, args...))
}

// NotificationsAfter lists a user's notifications in (after, upTo], oldest
// first, at most limit (what a pusher has not delivered yet).
func (s *Store) NotificationsAfter(ctx context.Context, userID string, after, upTo int64, limit int) ([]Notification, error) {
	if err := s.waitWritten(ctx); err != nil {
		return nil, err
	}
	return scanNotifications(s.read.QueryContext(ctx, `SELECT `+notificationColumns+` FROM push_notifications
		WHERE user_id = $1 AND stream_ordering > $2 AND stream_ordering <= $3 ORDER BY stream_ordering LIMIT $4`,
		userID, after, upTo, limit))
}

// ThreadOf walks an event's relations to the thread it belongs to: the
// root of the m.thread relation met within three hops (spec: "Receiving
// notifications"), or "main".
func (s *Store) ThreadOf(ctx context.Context, relatesTo, relType string) (string, error) {
	for hop := 0; hop < 3 && relatesTo != ""; hop++ {
		if relType == "m.thread" {
			return relatesTo, nil
		}
		var next, nextType sql.NullString
		err := s.read.QueryRowContext(ctx, `SELECT relates_to, rel_type FROM events WHERE event_id = $1`, relatesTo).Scan(&next, &nextType)
		if errors.Is(err, sql.ErrNoRows) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("storage: thread of event: %w", err)
		}
		relatesTo, relType = next.String, nextType.String
	}
	return "main", nil
}

// StateGroupDelta returns what a state group stores: its parent (0 for a
// snapshot) and its entries, a delta on the parent when there is one (an
// empty event ID removes the key).
func (s *Store) StateGroupDelta(ctx context.Context, group int64) (int64, StateKeyMap, error) {
	var prev sql.NullInt64
	if err := s.read.QueryRowContext(ctx, `SELECT prev_group FROM state_groups WHERE id = $1`, group).Scan(&prev); err != nil {
		return 0, nil, notFound(err, "state group")
	}
	rows, err := s.read.QueryContext(ctx, `SELECT type, state_key, event_id FROM state_group_entries WHERE group_id = $1`, group)
	if err != nil {
		return 0, nil, fmt.Errorf("storage: read state group %d: %w", group, err)
	}
	defer rows.Close()
	out := StateKeyMap{}
	for rows.Next() {
		var k StateKey
		var ev string
		if err := rows.Scan(&k.Type, &k.StateKey, &ev); err != nil {
			return 0, nil, err
		}
		out[k] = ev
	}
	return prev.Int64, out, rows.Err()
}
