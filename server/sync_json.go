package server

import (
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"unicode/utf8"
)

// A /sync answer is a few fixed objects around the events of its rooms.
// An incremental one goes to every woken member: through encoding/json's
// reflection (struct fields, maps, the dynamic type of each event in
// []any, and each pre-serialised event validated and re-escaped again)
// writing it was ~7% of the server's CPU in a fan-out to 20 receivers,
// and writing an initial sync's rooms a fifth of its CPU. appendSyncJSON
// writes the same bytes by hand: the skeleton field by field, events
// serialised by the shared formatter (eventJSON, already as json.Marshal
// writes them) as they are, and anything else through json.Marshal.
// TestSyncJSONMatchesMarshal holds it to json.Marshal's output over
// answers filled at random, every field of every type in them.

// writeSync writes a /sync answer. An initial sync's rooms are built as
// they are written (roomStream), a chunk at a time: such an answer goes
// out in parts, and an error once it has started aborts it, as writeJSON
// does. Any other answer goes out whole, with its length.
func writeSync(w http.ResponseWriter, resp *syncResponse) error {
	out := &jsonResponse{w: w, status: http.StatusOK}
	buf := syncBuffers.Get().(*[]byte)
	a := &jsonAppender{b: (*buf)[:0], out: out}
	if err := a.syncResponse(resp); err != nil {
		switch {
		case out.failed: // the client went away: nothing to tell it
			return nil
		case out.started:
			abortAnswer(err)
		}
		return err
	}
	if !out.started {
		w.Header().Set("Content-Length", strconv.Itoa(len(a.b)))
	}
	_, _ = out.Write(a.b) // the response's writer copies it: nothing keeps a.b
	if cap(a.b) <= maxSyncBuffer {
		*buf = a.b[:0]
		syncBuffers.Put(buf)
	}
	return nil
}

// syncBuffers are writeSync's buffers, kept for the next answer: in the
// 200-client crowd a new 4 KiB buffer an answer was 12% of the bytes the
// server allocated. One that grew past maxSyncBuffer (an initial sync's
// chunk) is left to the collector.
var syncBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

const maxSyncBuffer = 64 << 10

// appendSyncJSON appends r as json.Marshal writes it.
func appendSyncJSON(b []byte, r *syncResponse) ([]byte, error) {
	a := &jsonAppender{b: b}
	err := a.syncResponse(r)
	return a.b, err
}

func (a *jsonAppender) syncResponse(r *syncResponse) error {
	a.open()
	a.field("next_batch")
	a.str(r.NextBatch)
	a.field("rooms")
	if r.Rooms.stream != nil {
		if err := r.Rooms.stream.appendTo(a); err != nil {
			return err
		}
	} else {
		a.syncRooms(&r.Rooms)
	}
	a.field("account_data")
	a.eventsBlock(&r.AccountData)
	a.field("presence")
	a.eventsBlock(&r.Presence)
	a.field("to_device")
	a.eventsBlock(&r.ToDevice)
	a.field("device_lists")
	a.open()
	a.field("changed")
	a.strs(r.DeviceLists.Changed)
	a.field("left")
	a.strs(r.DeviceLists.Left)
	a.close()
	a.field("device_one_time_keys_count")
	appendMap(a, r.DeviceOneTimeKeysCount, func(n int) { a.int(int64(n)) })
	a.field("device_unused_fallback_key_types")
	a.strs(r.DeviceUnusedFallbackKeyTypes)
	a.close()
	return a.err
}

// jsonAppender writes JSON into b. first tracks, per open object, whether
// a field was written yet; err keeps the first error of json.Marshal. out,
// when set, takes what b holds at each flush.
type jsonAppender struct {
	b     []byte
	first []bool
	err   error
	out   io.Writer
}

// flush hands what is written so far to out.
func (a *jsonAppender) flush() error {
	if a.out == nil || len(a.b) == 0 {
		return nil
	}
	_, err := a.out.Write(a.b)
	a.b = a.b[:0]
	return err
}

func (a *jsonAppender) open() {
	a.b = append(a.b, '{')
	a.first = append(a.first, true)
}

func (a *jsonAppender) close() {
	a.b = append(a.b, '}')
	a.first = a.first[:len(a.first)-1]
}

// field writes an object member's name and colon.
func (a *jsonAppender) field(name string) {
	top := len(a.first) - 1
	if !a.first[top] {
		a.b = append(a.b, ',')
	}
	a.first[top] = false
	a.str(name)
	a.b = append(a.b, ':')
}

func (a *jsonAppender) str(s string) { a.b = appendJSONString(a.b, s) }

func (a *jsonAppender) int(n int64) { a.b = strconv.AppendInt(a.b, n, 10) }

func (a *jsonAppender) bool(v bool) { a.b = strconv.AppendBool(a.b, v) }

func (a *jsonAppender) null() { a.b = append(a.b, "null"...) }

func (a *jsonAppender) strs(ss []string) { appendArray(a, ss, a.str) }

// appendArray writes s, nil as null, as json.Marshal does.
func appendArray[V any](a *jsonAppender, s []V, val func(V)) {
	if s == nil {
		a.null()
		return
	}
	a.b = append(a.b, '[')
	for i, v := range s {
		if i > 0 {
			a.b = append(a.b, ',')
		}
		val(v)
	}
	a.b = append(a.b, ']')
}

// eventJSON is an event as formatJSON writes it: built from json.Marshal's
// output and appendJSONString, so already as json.Marshal would write it.
// Encoders other than jsonAppender take it as a json.RawMessage.
type eventJSON json.RawMessage

func (e eventJSON) MarshalJSON() ([]byte, error) { return e, nil }

// value writes v: an eventJSON, or a json.RawMessage as json.Marshal
// already wrote it, as is; anything else through json.Marshal.
func (a *jsonAppender) value(v any) {
	switch v := v.(type) {
	case eventJSON:
		a.b = append(a.b, v...)
		return
	case json.RawMessage:
		if marshalledJSON(v) {
			a.b = append(a.b, v...)
			return
		}
	}
	enc, err := json.Marshal(v)
	if err != nil {
		if a.err == nil {
			a.err = err
		}
		return
	}
	a.b = append(a.b, enc...)
}

// appendMap writes m with its keys sorted, as json.Marshal does.
func appendMap[V any](a *jsonAppender, m map[string]V, val func(V)) {
	if m == nil {
		a.null()
		return
	}
	a.open()
	for _, k := range slices.Sorted(maps.Keys(m)) {
		a.field(k)
		val(m[k])
	}
	a.close()
}

func (a *jsonAppender) eventsBlock(e *eventsBlock) {
	a.open()
	a.field("events")
	appendArray(a, e.Events, a.value)
	a.close()
}

// optEventsBlock writes an omitempty *eventsBlock member.
func (a *jsonAppender) optEventsBlock(name string, e *eventsBlock) {
	if e != nil {
		a.field(name)
		a.eventsBlock(e)
	}
}

func (a *jsonAppender) timeline(t *timelineBlock) {
	if t == nil {
		a.null()
		return
	}
	a.open()
	a.field("events")
	appendArray(a, t.Events, a.value)
	a.field("limited")
	a.bool(t.Limited)
	if t.PrevBatch != "" {
		a.field("prev_batch")
		a.str(t.PrevBatch)
	}
	a.close()
}

func (a *jsonAppender) joinedRoom(jr *joinedRoom) {
	if jr == nil {
		a.null()
		return
	}
	a.open()
	if s := jr.Summary; s != nil {
		a.field("summary")
		a.open()
		if len(s.Heroes) > 0 {
			a.field("m.heroes")
			a.strs(s.Heroes)
		}
		a.field("m.joined_member_count")
		a.int(int64(s.JoinedCount))
		a.field("m.invited_member_count")
		a.int(int64(s.InvitedCount))
		a.close()
	}
	a.optEventsBlock("state", jr.State)
	a.optEventsBlock("state_after", jr.StateAfter)
	a.field("timeline")
	a.timeline(&jr.Timeline)
	a.field("ephemeral")
	a.eventsBlock(&jr.Ephemeral)
	a.field("account_data")
	a.eventsBlock(&jr.AccountData)
	a.field("unread_notifications")
	appendMap(a, jr.UnreadNotifications, func(n int) { a.int(int64(n)) })
	if len(jr.UnreadThreadNotifications) > 0 {
		a.field("unread_thread_notifications")
		appendMap(a, jr.UnreadThreadNotifications, func(m map[string]int64) {
			appendMap(a, m, a.int)
		})
	}
	a.close()
}

func (a *jsonAppender) leftRoom(lr *leftRoom) {
	if lr == nil {
		a.null()
		return
	}
	a.open()
	a.optEventsBlock("state", lr.State)
	a.optEventsBlock("state_after", lr.StateAfter)
	a.field("timeline")
	a.timeline(lr.Timeline)
	a.field("account_data")
	a.eventsBlock(&lr.AccountData)
	a.close()
}

func (a *jsonAppender) syncRooms(r *syncRooms) {
	a.open()
	if len(r.Join) > 0 {
		a.field("join")
		appendMap(a, r.Join, a.joinedRoom)
	}
	if len(r.Invite) > 0 {
		a.field("invite")
		appendMap(a, r.Invite, a.value)
	}
	if len(r.Leave) > 0 {
		a.field("leave")
		appendMap(a, r.Leave, a.leftRoom)
	}
	if len(r.Knock) > 0 {
		a.field("knock")
		appendMap(a, r.Knock, a.value)
	}
	a.close()
}

// marshalledJSON reports whether raw is already as json.Marshal writes a
// json.RawMessage (which it compacts and HTML-escapes): nothing but
// valid UTF-8, no whitespace outside strings, no control characters
// inside them, and none of the characters json.Marshal escapes (<, >, &,
// U+2028, U+2029), with its strings closed and its brackets balanced. The
// events /sync writes come from json.Marshal or builders that escape as it
// does (appendJSONString); this keeps a raw value from anywhere else from
// changing the bytes written, and sends the truncated or unbalanced to
// json.Marshal, which refuses them.
func marshalledJSON(raw []byte) bool {
	if len(raw) == 0 {
		return false
	}
	inString, escaped, ascii := false, false, true
	depth := 0
	for _, c := range raw {
		switch {
		case c >= utf8.RuneSelf:
			ascii = false
		case c == '<' || c == '>' || c == '&':
			return false
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			case c < 0x20:
				return false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			if depth--; depth < 0 {
				return false
			}
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			return false
		}
	}
	if inString || depth != 0 {
		return false
	}
	if ascii {
		return true
	}
	return utf8.Valid(raw) && !containsLineSeparator(raw)
}

// containsLineSeparator reports whether raw holds U+2028 or U+2029
// (E2 80 A8 / E2 80 A9 in UTF-8).
func containsLineSeparator(raw []byte) bool {
	for i := 0; i+2 < len(raw); i++ {
		if raw[i] == 0xE2 && raw[i+1] == 0x80 && (raw[i+2] == 0xA8 || raw[i+2] == 0xA9) {
			return true
		}
	}
	return false
}
