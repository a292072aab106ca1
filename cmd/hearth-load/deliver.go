package main

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/gjson"
)

// slowSync is the /sync duration counted as a stall: while messages keep
// arriving no long poll should wait this long.
const slowSync = 30 * time.Second

// delivery measures how messages sent into one room reach its members
// through long-polling /sync: the machinery shared by the fanout and
// crowd phases. Every message carries a loadMark, so each receiver knows
// which (sender, seq) it got and how long after the send began.
type delivery struct {
	c           *client
	room        string
	syncTimeout time.Duration
	filter      string // of the long polls: syncFilter or syncFilterPresence
	receipts    bool   // receivers mark what they receive as read (-receipts)
	senders     []*user
	acked       [][]bool // by sender, by seq: the server answered the send 200; each written by its sender only
	sendLat     [][]time.Duration
	sendFailed  atomic.Int64
	receivers   []*receiver
	sending     atomic.Bool // while set, a /sync that takes over slowSync counts as a stall
	marksFailed atomic.Int64
	// firstFail is the first failed /sync or /messages, for the report.
	firstFail atomic.Pointer[string]
}

// failed notes a failed /sync or /messages: the first is reported.
func (d *delivery) failed(what string, err error) {
	msg := what + ": " + err.Error()
	d.firstFail.CompareAndSwap(nil, &msg)
}

// receiver is one member long-polling /sync.
type receiver struct {
	u     *user
	self  int // this member's own sender index (its echoes are not deliveries), or -1
	since string

	// newest is the newest event from another member this receiver has
	// not marked read yet (-receipts): its loop puts it, its marker
	// takes it.
	newest chan string

	mu        sync.Mutex
	seen      [][]bool // by sender, by seq
	got       int
	lat       []time.Duration
	dups      int
	syncs     int
	slow      int
	failed    int
	limited   int
	backfills int
	marks     []time.Duration // how long each read receipt took
}

func newDelivery(c *client, room string, o options, senders []*user) *delivery {
	filter := syncFilter
	if o.Presence {
		filter = syncFilterPresence
	}
	return &delivery{c: c, room: room, syncTimeout: o.SyncTimeout, filter: filter, receipts: o.Receipts, senders: senders,
		acked: make([][]bool, len(senders)), sendLat: make([][]time.Duration, len(senders))}
}

// addReceivers gives each member a /sync position from a short initial sync.
func (d *delivery) addReceivers(ctx context.Context, us []*user, self func(i int) int) error {
	d.receivers = make([]*receiver, len(us))
	return parallel(ctx, len(us), 8, func(ctx context.Context, i int) error {
		b, err := d.c.sync(ctx, us[i], "", 0, `{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":1}},"presence":{"not_types":["*"]}}`)
		if err != nil {
			return err
		}
		d.receivers[i] = &receiver{u: us[i], self: self(i), since: gjson.GetBytes(b, "next_batch").String(),
			seen: make([][]bool, len(d.senders)), newest: make(chan string, 1)}
		return nil
	})
}

// send sends sender's next message; a failed send is not expected anywhere.
func (d *delivery) send(ctx context.Context, sender int) {
	seq := len(d.acked[sender])
	t0 := time.Now()
	err := d.c.send(ctx, d.senders[sender], d.room, loadMark{Sender: sender, Seq: seq, Sent: t0.UnixMicro()})
	d.acked[sender] = append(d.acked[sender], err == nil)
	if err != nil {
		if ctx.Err() == nil {
			d.sendFailed.Add(1)
		}
		return
	}
	d.sendLat[sender] = append(d.sendLat[sender], time.Since(t0))
}

// measure runs every receiver's /sync loop while send runs, then up to
// grace more until every receiver has every acknowledged message, and
// returns how long after the last send that took (or false if it did not).
func (d *delivery) measure(ctx context.Context, grace time.Duration, send func(ctx context.Context)) (time.Duration, bool) {
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	d.sending.Store(true)
	for _, r := range d.receivers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.loop(rctx, d)
		}()
		if d.receipts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.marker(rctx, d)
			}()
		}
	}
	send(ctx)
	d.sending.Store(false)
	end := time.Now()
	done := false
	for !done && time.Since(end) < grace && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
		done = d.caughtUp()
	}
	took := time.Since(end)
	cancel()
	wg.Wait()
	return took, done
}

// caughtUp reports whether every receiver holds as many messages as were
// acknowledged by the other senders.
func (d *delivery) caughtUp() bool {
	total := 0
	own := make([]int, len(d.senders))
	for s, acks := range d.acked {
		for _, ok := range acks {
			if ok {
				total++
				own[s]++
			}
		}
	}
	for _, r := range d.receivers {
		want := total
		if r.self >= 0 {
			want -= own[r.self]
		}
		r.mu.Lock()
		got := r.got
		r.mu.Unlock()
		if got < want {
			return false
		}
	}
	return true
}

// loop long-polls /sync until ctx ends, and fills gaps in a limited
// timeline from /messages, as a client does.
func (r *receiver) loop(ctx context.Context, d *delivery) {
	for ctx.Err() == nil {
		counts := d.sending.Load()
		t0 := time.Now()
		since := r.since
		b, err := d.c.sync(ctx, r.u, since, d.syncTimeout, d.filter)
		took := time.Since(t0)
		if err != nil {
			if ctx.Err() != nil {
				// Cut off at the end of the phase: a poll that had
				// already stalled still counts as one.
				if counts && took > slowSync {
					r.mu.Lock()
					r.syncs++
					r.slow++
					r.mu.Unlock()
				}
				return
			}
			d.failed("/sync", err)
			r.mu.Lock()
			r.failed++
			r.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		now := time.Now()
		r.since = gjson.GetBytes(b, "next_batch").String()
		var timeline gjson.Result
		gjson.GetBytes(b, "rooms.join").ForEach(func(k, v gjson.Result) bool {
			if k.String() == d.room {
				timeline = v.Get("timeline")
				return false
			}
			return true
		})
		r.mu.Lock()
		r.syncs++
		if counts && took > slowSync {
			r.slow++
		}
		newest := ""
		for _, ev := range timeline.Get("events").Array() {
			r.record(ev, now, false)
			if ev.Get("sender").String() != r.u.ID {
				newest = ev.Get("event_id").String()
			}
		}
		limited := timeline.Get("limited").Bool()
		if limited {
			r.limited++
		}
		r.mu.Unlock()
		if d.receipts && newest != "" {
			// Only this goroutine puts: once drained, the put cannot block.
			select {
			case <-r.newest:
			default:
			}
			r.newest <- newest
		}
		if limited {
			r.backfill(ctx, d, timeline.Get("prev_batch").String(), since)
		}
	}
}

// markInterval is the least time between one member's read receipts:
// Element sends one for the room in view at most every 500 ms.
const markInterval = 500 * time.Millisecond

// marker marks the newest event this member received as read, at most
// every markInterval, until ctx ends: what Element does for the room in
// view while new messages arrive.
func (r *receiver) marker(ctx context.Context, d *delivery) {
	var last time.Time
	for {
		var id string
		select {
		case <-ctx.Done():
			return
		case id = <-r.newest:
		}
		if wait := markInterval - time.Since(last); wait > 0 {
			if !sleepUntil(ctx, time.Now().Add(wait)) {
				return
			}
			select {
			case id = <-r.newest:
			default:
			}
		}
		last = time.Now()
		err := d.c.markRead(ctx, r.u, d.room, id)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d.failed("read_markers", err)
			d.marksFailed.Add(1)
			continue
		}
		r.mu.Lock()
		r.marks = append(r.marks, time.Since(last))
		r.mu.Unlock()
	}
}

// backfill fills the gap a limited timeline left: it pages /messages back
// from from (the timeline's prev_batch) down to to (the position the
// /sync started from, where the events this member already had end),
// and stops early when it meets a message it already had. That is the
// gap and no more, as a client that keeps its timeline whole asks for it.
func (r *receiver) backfill(ctx context.Context, d *delivery, from, to string) {
	const limit = 100
	for page := 0; page < 100 && from != ""; page++ {
		b, err := d.c.messages(ctx, r.u, d.room, from, to, limit)
		now := time.Now()
		r.mu.Lock()
		r.backfills++
		if err != nil {
			if ctx.Err() != nil {
				// Cut off at the end of the phase, as a /sync is.
				r.mu.Unlock()
				return
			}
			d.failed("/messages", err)
			r.failed++
			r.mu.Unlock()
			return
		}
		chunk := gjson.GetBytes(b, "chunk").Array()
		met := false
		for _, ev := range chunk {
			if !r.record(ev, now, true) && r.had(ev) {
				met = true
			}
		}
		r.mu.Unlock()
		if met || len(chunk) < limit {
			return
		}
		from = gjson.GetBytes(b, "end").String()
	}
}

// had reports whether ev is a load message from another member that this
// receiver already holds. r.mu is held.
func (r *receiver) had(ev gjson.Result) bool {
	mark := ev.Get("content.hl")
	s, n := int(mark.Get("s").Int()), int(mark.Get("n").Int())
	return mark.Exists() && s >= 0 && s < len(r.seen) && s != r.self && n >= 0 && n < len(r.seen[s]) && r.seen[s][n]
}

// record notes one timeline event; it reports whether it was a load
// message not seen before. r.mu is held.
func (r *receiver) record(ev gjson.Result, now time.Time, backfill bool) bool {
	mark := ev.Get("content.hl")
	if !mark.Exists() {
		return false
	}
	s, n := int(mark.Get("s").Int()), int(mark.Get("n").Int())
	if s < 0 || s >= len(r.seen) || n < 0 || s == r.self {
		return false
	}
	if n >= len(r.seen[s]) {
		r.seen[s] = append(r.seen[s], make([]bool, n+1-len(r.seen[s]))...)
	}
	if r.seen[s][n] {
		if !backfill {
			r.dups++
		}
		return false
	}
	r.seen[s][n] = true
	r.got++
	r.lat = append(r.lat, now.Sub(time.UnixMicro(mark.Get("t").Int())))
	return true
}

// report adds the delivery figures to res.
func (d *delivery) report(res *Result, sendTime, caughtUp time.Duration, done bool) {
	sent, delivered, expected, lost := 0, 0, 0, 0
	for _, acks := range d.acked {
		for _, ok := range acks {
			if ok {
				sent++
			}
		}
	}
	var lat, marks []time.Duration
	var syncs, slow, failed, dups, limited, backfills int
	for _, r := range d.receivers {
		for s, acks := range d.acked {
			if s == r.self {
				continue
			}
			for n, ok := range acks {
				if !ok {
					continue
				}
				expected++
				if n < len(r.seen[s]) && r.seen[s][n] {
					delivered++
				} else {
					lost++
				}
			}
		}
		lat = append(lat, r.lat...)
		marks = append(marks, r.marks...)
		syncs += r.syncs
		slow += r.slow
		failed += r.failed
		dups += r.dups
		limited += r.limited
		backfills += r.backfills
	}
	res.add("messages sent", float64(sent), "")
	res.add("send rate", float64(sent)/sendTime.Seconds(), "msg/s")
	res.addLatencies("send", slices.Concat(d.sendLat...))
	res.add("failed sends", float64(d.sendFailed.Load()), "")
	res.add("deliveries expected", float64(expected), "")
	res.addLatencies("delivery", lat)
	res.add("lost", float64(lost), "")
	res.add("duplicates", float64(dups), "")
	res.add("/sync requests", float64(syncs), "")
	res.add("/sync requests over 30 s", float64(slow), "")
	res.add("failed /sync and /messages", float64(failed), "")
	if f := d.firstFail.Load(); f != nil {
		res.Notes = append(res.Notes, "first failed request: "+*f)
	}
	res.add("limited timelines", float64(limited), "")
	res.add("backfill /messages", float64(backfills), "")
	if d.receipts {
		res.add("read receipts sent", float64(len(marks)), "")
		res.addLatencies("read receipt", marks)
		res.add("failed read receipts", float64(d.marksFailed.Load()), "")
	}
	if done {
		res.add("all delivered after last send", ms(caughtUp), "ms")
	} else {
		res.add("all delivered after last send", -1, "(not within -grace)")
	}
	if res.Server != nil && delivered > 0 {
		res.add("server CPU per delivery", res.Server.CPUSeconds*1000/float64(delivered), "ms")
	}
}

// sleepUntil waits for t and reports whether ctx is still live.
func sleepUntil(ctx context.Context, t time.Time) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(time.Until(t)):
		return true
	}
}

// clientNote marks the parameters of a run whose clients do more than
// the default: long polls that ask for presence, read receipts.
func (o options) clientNote() string {
	note := ""
	if o.Presence {
		note += ", with presence"
	}
	if o.Receipts {
		note += ", with read receipts"
	}
	return note
}
