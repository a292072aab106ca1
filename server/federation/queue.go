package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"hearth/server/storage"
)

// The sender delivers this server's events to every other server in their
// rooms.
//
// It reads the event stream, not a queue of its own: events marked
// outbound (this server's, and memberships it relays) are read in stream
// order from a persisted position. For each it records, per destination
// and room, the newest event queued (federation_destination_rooms) in the
// same transaction that advances the position, then hands the event to the
// destination's worker. So an acknowledged event reaches every server even
// if the process stops at any point: what was not queued is read again,
// and what was queued but not delivered is caught up.
//
// A worker sends its queue as transactions of at most 50 PDUs and 100 EDUs.
// When a destination fails, the worker backs off (doubling, capped) and
// drops its in-memory queue; when the destination answers again it catches
// up by sending the newest queued event of each room it missed, and the
// destination fetches the rest itself (/get_missing_events), as the spec
// and Synapse do. A destination that contacts this server (Reset) is
// retried at once.
//
// EDUs come in two kinds. Those handed to SendEDUs (typing, receipts) live
// in memory and are dropped for a destination that fails: they are stale
// by the time it is back. Those that must not be lost (device list
// updates, to-device messages) are persisted by their owner, the Outbox:
// after storing one, the owner calls Wake, and each transaction to the
// destination is topped up with what the Outbox has waiting; only once the
// transaction is delivered does the Outbox forget them. A failure, a
// back-off or a restart leaves them where they are, and they go with the
// next transaction that succeeds.

const (
	maxTxnPDUs = 50
	maxTxnEDUs = 100
	// readBatch bounds the events read from the stream at once.
	readBatch = 100
)

// SenderOptions configure a Sender.
type SenderOptions struct {
	Store      *storage.Store
	ServerName string
	// Send delivers one transaction (the Client's SendTransaction).
	Send func(ctx context.Context, destination, txnID string, txn *Transaction) (*SendResponse, error)
	Log  *slog.Logger
	Now  func() time.Time
	// MinRetry and MaxRetry bound the back-off of a failing destination
	// (defaults 10 s and 1 h).
	MinRetry, MaxRetry time.Duration
	// Allowed, when set, says whether a destination may be sent to at all
	// (federation_domain_whitelist).
	Allowed func(destination string) bool
	// Outbox, when set, holds the persisted EDUs to add to transactions.
	Outbox Outbox
	// Observe, when set, is told how each transaction went (metrics).
	Observe func(destination string, took time.Duration, err error)
}

// Outbox is where a Sender finds the EDUs that must reach a destination
// even across failures and restarts. The caller persists them, then calls
// Sender.Wake; the Sender reads them when it builds a transaction and
// acknowledges them only once that transaction was delivered.
type Outbox interface {
	// Pending returns up to limit EDUs waiting for destination, oldest
	// first, and the function to call once a transaction carrying them was
	// delivered (it forgets them). Fewer than limit means none is left.
	Pending(ctx context.Context, destination string, limit int) ([]EDU, func(context.Context) error, error)
	// Destinations lists the destinations with EDUs waiting.
	Destinations(ctx context.Context) ([]string, error)
}

// Sender is the outbound side of federation: one loop over the event
// stream, one worker per destination with work.
type Sender struct {
	o   SenderOptions
	ctx context.Context

	wake chan struct{}

	mu    sync.Mutex
	dests map[string]*destQueue
	// servers: room → the servers joined to it now, for EventPersisted's
	// skip of local-only rooms; memberGen counts the membership changes
	// EventPersisted was told of, so a drain that read the servers before
	// one does not cache what that change made stale.
	servers   map[string][]string
	memberGen uint64
	groups    map[int64][]string // state group → joined servers (cache)
	txnSeq    int64
	wg        sync.WaitGroup
}

// destQueue is one server's worker state.
type destQueue struct {
	name    string
	pending []*storage.Event
	edus    []EDU
	// catchUp: the worker sends from federation_destination_rooms rather
	// than pending (after a failure, or at start).
	catchUp bool
	// outbox: the Outbox may have EDUs waiting for this destination.
	outbox  bool
	running bool
	reset   chan struct{}
}

// NewSender builds a Sender; Run starts it.
func NewSender(o SenderOptions) *Sender {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MinRetry <= 0 {
		o.MinRetry = 10 * time.Second
	}
	if o.MaxRetry <= 0 {
		o.MaxRetry = time.Hour
	}
	return &Sender{o: o, wake: make(chan struct{}, 1), dests: map[string]*destQueue{}, servers: map[string][]string{},
		groups: map[int64][]string{}}
}

// QueueStat is one destination's in-memory queue, for metrics.
type QueueStat struct {
	Destination string
	PDUs, EDUs  int
	Running     bool
	CatchUp     bool
}

// Queues lists the destinations the sender has work or state for.
func (s *Sender) Queues() []QueueStat {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]QueueStat, 0, len(s.dests))
	for _, d := range s.dests {
		out = append(out, QueueStat{Destination: d.name, PDUs: len(d.pending), EDUs: len(d.edus), Running: d.running, CatchUp: d.catchUp})
	}
	return out
}

// EventPersisted tells the sender an event of roomID entered the room's
// timeline (any event, local or received; membershipChanged when it
// changed who is in the room). Cheap; it never blocks.
func (s *Sender) EventPersisted(roomID string, membershipChanged bool) {
	s.mu.Lock()
	servers, known := s.servers[roomID]
	if membershipChanged {
		delete(s.servers, roomID)
		s.memberGen++
		known = false
	}
	s.mu.Unlock()
	// A room with no other server has nothing to send: its events are
	// read, and go nowhere, with the next batch that has somewhere to go.
	if known && !slices.ContainsFunc(servers, func(d string) bool { return d != s.o.ServerName }) {
		return
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Reset retries destination at once: it just contacted this server, so it
// is up again, or an admin asked. It reports whether the destination was
// backing off (when not, there is nothing to retry and nothing changes).
func (s *Sender) Reset(ctx context.Context, destination string) (bool, error) {
	was, err := s.o.Store.ResetDestinationRetry(ctx, destination)
	if err != nil || !was {
		return false, err
	}
	s.mu.Lock()
	d := s.dests[destination]
	s.mu.Unlock()
	if d != nil {
		select {
		case d.reset <- struct{}{}:
		default:
		}
	}
	s.start(destination, nil, nil, true, false)
	return true, nil
}

// SendEDUs queues ephemeral data units for destinations (typing, receipts):
// they go with the next transaction, and are dropped for a destination
// that is failing.
func (s *Sender) SendEDUs(destinations []string, edus ...EDU) {
	for _, d := range destinations {
		if d != s.o.ServerName {
			s.start(d, nil, edus, false, false)
		}
	}
}

// Wake tells the sender the Outbox has new EDUs for destinations: they go
// with the next transaction to each. Cheap; it never blocks.
func (s *Sender) Wake(destinations ...string) {
	if s.o.Outbox == nil {
		return
	}
	for _, d := range destinations {
		if d != s.o.ServerName && (s.o.Allowed == nil || s.o.Allowed(d)) {
			s.start(d, nil, nil, false, true)
		}
	}
}

// sweepOutbox starts a worker for every destination the Outbox has EDUs
// for: at start, and now and then, in case a Wake was missed (a write that
// did not call it, a worker that stopped on a database error).
func (s *Sender) sweepOutbox(ctx context.Context) {
	if s.o.Outbox == nil {
		return
	}
	dests, err := s.o.Outbox.Destinations(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.o.Log.Error("federation sender: listing the destinations with persisted EDUs", "err", err)
		}
		return
	}
	s.Wake(dests...)
}

// Run reads the event stream until ctx ends, then waits for the workers.
func (s *Sender) Run(ctx context.Context) error {
	s.ctx = ctx
	pos, err := s.o.Store.FederationSenderPosition(ctx)
	if err != nil {
		return err
	}
	behind, err := s.o.Store.DestinationsBehind(ctx)
	if err != nil {
		return err
	}
	for _, d := range behind {
		s.start(d, nil, nil, true, false)
	}
	s.sweepOutbox(ctx)
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for ticks := 0; ; {
		if pos, err = s.drain(ctx, pos); err != nil && ctx.Err() == nil {
			s.o.Log.Error("federation sender: reading the event stream failed", "err", err)
		}
		select {
		case <-ctx.Done():
			s.wg.Wait()
			return nil
		case <-s.wake:
		case <-tick.C:
			if ticks++; ticks%12 == 0 {
				s.sweepOutbox(ctx)
			}
		}
	}
}

// drain queues every outbound event after pos and returns the new position.
func (s *Sender) drain(ctx context.Context, pos int64) (int64, error) {
	for {
		upTo, err := s.o.Store.MaxStreamPos(ctx)
		if err != nil || upTo <= pos {
			return pos, err
		}
		evs, err := s.o.Store.OutboundEventsAfter(ctx, pos, upTo, readBatch)
		if err != nil {
			return pos, err
		}
		next := upTo
		if len(evs) == readBatch {
			next = evs[len(evs)-1].StreamPos
		}
		if err := s.cacheServers(ctx, evs); err != nil {
			return pos, err
		}
		// The events were read without their JSON: only those that go
		// somewhere need it.
		dests := make([][]string, len(evs))
		var going []*storage.Event
		for i, e := range evs {
			if dests[i], err = s.destinations(ctx, e); err != nil {
				return pos, err
			}
			if len(dests[i]) > 0 {
				going = append(going, e)
			}
		}
		if len(going) > 0 {
			if err := s.o.Store.EventJSONs(ctx, going); err != nil {
				return pos, err
			}
		}
		var queued []storage.DestinationRoom
		byDest := map[string][]*storage.Event{}
		for i, e := range evs {
			if e.JSON == nil {
				continue // nowhere to go, or purged since it was read
			}
			for _, d := range dests[i] {
				queued = append(queued, storage.DestinationRoom{Destination: d, RoomID: e.RoomID, StreamPos: e.StreamPos})
				byDest[d] = append(byDest[d], e)
			}
		}
		for d := range byDest {
			if err := s.o.Store.EnsureDestination(ctx, d, 0); err != nil {
				return pos, err
			}
		}
		// With nothing queued the position moves in memory only: after a
		// restart those events are read again and go nowhere again, and
		// a server with no federation writes nothing per event.
		if len(queued) > 0 {
			if err := s.o.Store.QueueForDestinations(ctx, next, queued); err != nil {
				return pos, err
			}
		}
		pos = next
		for d, evs := range byDest {
			s.start(d, evs, nil, false, false)
		}
	}
}

// destinations are the servers an event goes to: those with a joined
// member in its room at the event, and for a leave or a ban its target's
// server (a kicked or banned user's server learns of it), never this one
// nor the sender's. An invite's target server is not added: it had the
// invite through /invite, and a transaction would push it again to a
// server not in the room (Synapse ignores it) or, racing the invitee's
// join, after the join as a new event (Synapse soft-fails it).
func (s *Sender) destinations(ctx context.Context, e *storage.Event) ([]string, error) {
	servers, err := s.joinedAt(ctx, e.StateGroup)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{s.o.ServerName: true}
	// A relayed membership (send_join, send_leave) came from its sender's
	// server, which has it.
	if _, server, ok := strings.Cut(e.Sender, ":"); ok {
		seen[server] = true
	}
	var out []string
	add := func(d string) {
		if !seen[d] && (s.o.Allowed == nil || s.o.Allowed(d)) {
			seen[d] = true
			out = append(out, d)
		}
	}
	for _, d := range servers {
		add(d)
	}
	if e.Type == "m.room.member" && e.StateKey != nil && (e.Membership == "leave" || e.Membership == "ban") {
		if _, server, ok := strings.Cut(*e.StateKey, ":"); ok {
			add(server)
		}
	}
	return out, nil
}

// cacheServers records the servers joined now to the rooms of evs, for
// EventPersisted to skip waking the sender for rooms with no other server.
// Not the servers at the events read: when a server joined after the last
// of them, the room would be taken for a local-only one and its next events
// would wait for the sender's tick.
func (s *Sender) cacheServers(ctx context.Context, evs []*storage.Event) error {
	seen := map[string]bool{}
	for _, e := range evs {
		if seen[e.RoomID] {
			continue
		}
		seen[e.RoomID] = true
		// A cached entry is current: every membership change drops it.
		s.mu.Lock()
		_, cached := s.servers[e.RoomID]
		gen := s.memberGen
		s.mu.Unlock()
		if cached {
			continue
		}
		servers, err := s.o.Store.JoinedServers(ctx, e.RoomID)
		if err != nil {
			return err
		}
		s.mu.Lock()
		if s.memberGen == gen {
			s.servers[e.RoomID] = servers
		}
		s.mu.Unlock()
	}
	return nil
}

// joinedAt lists the servers with a joined member in a state group: the
// room as it was at an event (state after it), however late the sender
// reads the event. Groups are cached: a room's messages share one.
func (s *Sender) joinedAt(ctx context.Context, group int64) ([]string, error) {
	s.mu.Lock()
	servers, ok := s.groups[group]
	s.mu.Unlock()
	if ok {
		return servers, nil
	}
	servers, err := s.o.Store.JoinedServersInGroup(ctx, group)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if len(s.groups) >= 1024 {
		clear(s.groups)
	}
	s.groups[group] = servers
	s.mu.Unlock()
	return servers, nil
}

// start hands work to destination's worker, starting it if idle; outbox
// says the Outbox has EDUs for it.
func (s *Sender) start(name string, evs []*storage.Event, edus []EDU, catchUp, outbox bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.dests[name]
	if d == nil {
		d = &destQueue{name: name, reset: make(chan struct{}, 1)}
		s.dests[name] = d
	}
	d.pending = append(d.pending, evs...)
	d.edus = append(d.edus, edus...)
	d.catchUp = d.catchUp || catchUp
	d.outbox = d.outbox || outbox
	if d.running || s.ctx == nil || s.ctx.Err() != nil {
		return
	}
	d.running = true
	s.wg.Add(1)
	go s.work(d)
}

// work sends destination's queue until it is empty.
func (s *Sender) work(d *destQueue) {
	defer s.wg.Done()
	ctx := s.ctx
	for ctx.Err() == nil {
		row, err := s.o.Store.DestinationByName(ctx, d.name)
		if errors.Is(err, storage.ErrNotFound) {
			if err = s.o.Store.EnsureDestination(ctx, d.name, 0); err == nil {
				row, err = s.o.Store.DestinationByName(ctx, d.name)
			}
		}
		if err != nil {
			s.o.Log.Error("federation sender: destination state", "destination", d.name, "err", err)
			s.stop(d)
			return
		}
		if wait := s.backoff(row); wait > 0 {
			s.mu.Lock()
			d.pending, d.edus, d.catchUp = nil, nil, true // caught up when it is back
			d.outbox = s.o.Outbox != nil                  // persisted EDUs wait for it
			s.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-d.reset:
			case <-time.After(wait):
			}
			continue
		}
		pdus, edus, last, err := s.next(ctx, d, row)
		if err != nil {
			s.o.Log.Error("federation sender: reading the catch-up queue", "destination", d.name, "err", err)
			s.stop(d)
			return
		}
		persisted, ack, err := s.persistedEDUs(ctx, d, maxTxnEDUs-len(edus))
		if err != nil {
			if ctx.Err() == nil {
				s.o.Log.Error("federation sender: reading the persisted EDUs", "destination", d.name, "err", err)
			}
			s.stop(d)
			return
		}
		edus = append(edus, persisted...)
		if len(pdus) == 0 && len(edus) == 0 {
			if s.idle(d) {
				return
			}
			continue
		}
		if err := s.deliver(ctx, d.name, pdus, edus, last, row); err != nil {
			if ctx.Err() == nil {
				s.mu.Lock()
				d.catchUp = true
				d.outbox = d.outbox || ack != nil
				s.mu.Unlock()
			}
		} else if ack != nil {
			if err := ack(ctx); err != nil {
				// Sent again with the next transaction: the receiver
				// drops what it already has (message_id, stream_id).
				s.o.Log.Error("federation sender: forgetting delivered EDUs", "destination", d.name, "err", err)
				s.mu.Lock()
				d.outbox = true
				s.mu.Unlock()
			}
		}
	}
	s.stop(d)
}

// next picks what to send: the newest missed event of each room when
// catching up, else the queue in order.
func (s *Sender) next(ctx context.Context, d *destQueue, row *storage.Destination) ([]*storage.Event, []EDU, int64, error) {
	s.mu.Lock()
	catchUp := d.catchUp
	if catchUp {
		// Whatever is queued from now on is sent after the catch-up.
		d.pending = nil
	}
	s.mu.Unlock()
	if catchUp {
		evs, err := s.o.Store.CatchUpEvents(ctx, d.name, row.LastSuccessfulPos, maxTxnPDUs)
		if err != nil {
			return nil, nil, 0, err
		}
		if len(evs) > 0 {
			return evs, nil, evs[len(evs)-1].StreamPos, nil
		}
		s.mu.Lock()
		d.catchUp = false
		s.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(len(d.pending), maxTxnPDUs)
	pdus := d.pending[:n:n]
	d.pending = d.pending[n:]
	m := min(len(d.edus), maxTxnEDUs)
	edus := d.edus[:m:m]
	d.edus = d.edus[m:]
	var last int64
	if n > 0 {
		last = pdus[n-1].StreamPos
	}
	return pdus, edus, last, nil
}

// persistedEDUs reads up to limit of the Outbox's EDUs for d when it may
// have some, with the function that acknowledges them (nil: none read).
func (s *Sender) persistedEDUs(ctx context.Context, d *destQueue, limit int) ([]EDU, func(context.Context) error, error) {
	s.mu.Lock()
	want := d.outbox && s.o.Outbox != nil && limit > 0
	if want {
		// Cleared before reading: a Wake from now on sets it again.
		d.outbox = false
	}
	s.mu.Unlock()
	if !want {
		return nil, nil, nil
	}
	edus, ack, err := s.o.Outbox.Pending(ctx, d.name, limit)
	if err != nil || len(edus) >= limit {
		s.mu.Lock()
		d.outbox = true // more may be waiting
		s.mu.Unlock()
	}
	if err != nil || len(edus) == 0 {
		return nil, nil, err
	}
	return edus, ack, nil
}

// idle stops the worker when nothing is left; it reports whether it did.
func (s *Sender) idle(d *destQueue) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(d.pending) > 0 || len(d.edus) > 0 || d.catchUp || d.outbox {
		return false
	}
	d.running = false
	return true
}

func (s *Sender) stop(d *destQueue) {
	s.mu.Lock()
	d.running = false
	s.mu.Unlock()
}

// backoff is how long to wait before trying row's destination again.
func (s *Sender) backoff(row *storage.Destination) time.Duration {
	if row.RetryIntervalMS == 0 {
		return 0
	}
	next := time.UnixMilli(row.RetryLastTS + row.RetryIntervalMS)
	return max(next.Sub(s.o.Now()), 0)
}

// deliver sends one transaction and records the outcome.
func (s *Sender) deliver(ctx context.Context, dest string, pdus []*storage.Event, edus []EDU, last int64, row *storage.Destination) error {
	txn := &Transaction{Origin: s.o.ServerName, OriginServerTS: nowMS(s.o.Now), PDUs: make([]json.RawMessage, len(pdus)), EDUs: edus}
	for i, e := range pdus {
		txn.PDUs[i] = e.JSON
	}
	s.mu.Lock()
	s.txnSeq++
	txnID := fmt.Sprintf("%d_%d", s.o.Now().UnixMilli(), s.txnSeq)
	s.mu.Unlock()
	began := time.Now() // real time, whatever clock Now is
	resp, err := s.o.Send(ctx, dest, txnID, txn)
	if s.o.Observe != nil && ctx.Err() == nil {
		s.o.Observe(dest, time.Since(began), err)
	}
	if err != nil {
		interval := time.Duration(row.RetryIntervalMS) * time.Millisecond * 2
		interval = min(max(interval, s.o.MinRetry), s.o.MaxRetry)
		s.o.Log.Warn("federation: could not deliver a transaction; retrying later", "destination", dest,
			"pdus", len(pdus), "edus", len(edus), "retry_in", interval, "err", err)
		if ferr := s.o.Store.DestinationFailed(ctx, dest, err.Error(), interval.Milliseconds()); ferr != nil {
			s.o.Log.Error("federation sender: record failure", "destination", dest, "err", ferr)
		}
		return err
	}
	if s.o.Log.Enabled(ctx, slog.LevelDebug) {
		ids := make([]string, len(pdus))
		for i, e := range pdus {
			ids[i] = e.Type + " " + e.EventID
		}
		s.o.Log.Debug("federation: transaction delivered", "destination", dest, "txn_id", txnID, "pdus", ids, "edus", len(edus))
	}
	for id, r := range resp.PDUs {
		if r.Error != "" {
			s.o.Log.Info("federation: destination refused an event", "destination", dest, "event_id", id, "error", r.Error)
		}
	}
	if last == 0 {
		last = row.LastSuccessfulPos
	}
	if err := s.o.Store.DestinationDelivered(ctx, dest, last); err != nil {
		s.o.Log.Error("federation sender: record delivery", "destination", dest, "err", err)
	}
	return nil
}
