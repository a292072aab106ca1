package server

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/http/httptest"
	"reflect"
	"strconv"
	"testing"

	"hearth/server/storage"
)

// syncJSONValues are the values a filled `any` (an event, an invite) takes:
// raw JSON as the shared formatter writes it, raw JSON json.Marshal would
// change (whitespace, HTML characters, U+2028, invalid UTF-8), and values
// that are not raw at all.
var syncJSONValues = []any{
	json.RawMessage(`{"type":"m.room.message","content":{"body":"caf\u00e9 \"quoted\" \\ tab\t","msgtype":"m.text"},"unsigned":{"age":12}}`),
	json.RawMessage(`{"type":"m.room.message","content":{"body":"naïve 日本"}}`),
	json.RawMessage(`{"body": "spaced"}`),
	json.RawMessage("{\"body\":\"a < b & c\"}"),
	json.RawMessage("{\"body\":\"line\u2028sep\"}"),
	json.RawMessage("{\"body\":\"bad \xff utf8\"}"),
	json.RawMessage(`[1,2,{"a":null}]`),
	map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": []string{"@a:x", "@b<c:x"}}},
	map[string]any{"type": "m.fully_read", "content": json.RawMessage(`{"event_id":"$e"}`)},
	"a string",
	nil,
	eventJSON(`{"content":{"body":"café \u003c"},"event_id":"$e","type":"m.room.message","unsigned":{"age":3}}`),
}

// fillSync sets every exported field reachable from v, recursively, to a
// value r picks: zero (nil pointers, slices and maps, empty strings, false)
// or not, so every omitempty and null branch is taken across runs. Nothing
// here names a field: a field added to the answer's types is filled too,
// and appendSyncJSON fails the comparison until it writes it.
func fillSync(r *rand.Rand, v reflect.Value, depth int) {
	zero := depth > 4 || r.IntN(4) == 0
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fillSync(r, v.Field(i), depth+1)
			}
		}
	case reflect.Pointer:
		if zero {
			return
		}
		v.Set(reflect.New(v.Type().Elem()))
		fillSync(r, v.Elem(), depth+1)
	case reflect.Slice:
		if zero {
			return
		}
		n := r.IntN(4) // 0: an empty, non-nil slice
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := range n {
			fillSync(r, s.Index(i), depth+1)
		}
		v.Set(s)
	case reflect.Map:
		if zero {
			return
		}
		m := reflect.MakeMap(v.Type())
		for i := range r.IntN(4) {
			k := reflect.New(v.Type().Key()).Elem()
			k.SetString([]string{"!b:x", "!a:x", "<&>", "m.room", "é"}[(i+r.IntN(5))%5])
			e := reflect.New(v.Type().Elem()).Elem()
			fillSync(r, e, depth+1)
			m.SetMapIndex(k, e)
		}
		v.Set(m)
	case reflect.Interface:
		if x := syncJSONValues[r.IntN(len(syncJSONValues))]; x != nil && !zero {
			v.Set(reflect.ValueOf(x))
		}
	case reflect.String:
		if !zero {
			v.SetString([]string{"s72_0_1", "tok<&>", "naïve", "q\"uote\\"}[r.IntN(4)])
		}
	case reflect.Bool:
		v.SetBool(!zero)
	case reflect.Int, reflect.Int64:
		if !zero {
			v.SetInt(r.Int64N(1 << 40))
		}
	default:
		panic("fillSync: no filler for " + v.Type().String())
	}
}

// TestSyncJSONMatchesMarshal: appendSyncJSON writes what json.Marshal
// writes for the same answer, byte for byte, over answers filled at
// random (every field of every type in it, whatever is added later), and
// fails where json.Marshal fails.
func TestSyncJSONMatchesMarshal(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		var resp syncResponse
		fillSync(r, reflect.ValueOf(&resp).Elem(), 0)
		want, wantErr := json.Marshal(&resp)
		got, err := appendSyncJSON(nil, &resp)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("answer %d: error %v, json.Marshal's %v", i, err, wantErr)
		}
		if err == nil && !bytes.Equal(got, want) {
			t.Fatalf("answer %d differs from json.Marshal:\n got %s\nwant %s", i, got, want)
		}
	}
}

// TestWriteSyncHeaders: the answer goes out whole, with its length and
// type, and an answer json.Marshal cannot write fails before anything is
// sent.
func TestWriteSyncHeaders(t *testing.T) {
	resp := &syncResponse{NextBatch: "s1", Rooms: syncRooms{Join: map[string]*joinedRoom{
		"!r:x": {Timeline: timelineBlock{Events: []any{json.RawMessage(`{"type":"m.room.message"}`)}}},
	}}}
	rec := httptest.NewRecorder()
	if err := writeSync(rec, resp); err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(resp)
	if rec.Code != 200 || rec.Body.String() != string(want) ||
		rec.Header().Get("Content-Type") != "application/json" ||
		rec.Header().Get("Content-Length") != strconv.Itoa(len(want)) {
		t.Fatalf("writeSync: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}

	resp.AccountData.Events = []any{json.RawMessage(`{"unterminated`)}
	rec = httptest.NewRecorder()
	if err := writeSync(rec, resp); err == nil || rec.Body.Len() != 0 {
		t.Fatalf("invalid raw event: err %v, %d bytes written", err, rec.Body.Len())
	}
}

// TestCoreMatchesDecodedPDU: an event's client format, with its keys
// looked up in the stored JSON and written by hand, is what decoding the
// whole PDU and json.Marshal gave, for content json.Marshal writes as it
// is and content it changes, state keys, redactions of both kinds, and
// with the room ID or without.
func TestCoreMatchesDecodedPDU(t *testing.T) {
	decoded := func(e *storage.Event, omitRoomID bool) []byte {
		var p pduFields
		if err := json.Unmarshal(e.JSON, &p); err != nil {
			t.Fatal(err)
		}
		if len(p.Content) == 0 {
			p.Content = json.RawMessage("{}")
		}
		ce := clientEvent{Content: p.Content, EventID: e.EventID, OriginServerTS: e.OriginServerTS, Sender: e.Sender,
			StateKey: e.StateKey, Type: e.Type, Redacts: p.Redacts}
		if !omitRoomID {
			ce.RoomID = e.RoomID
		}
		if ce.Redacts == "" && e.Type == "m.room.redaction" {
			var c struct {
				Redacts string `json:"redacts"`
			}
			_ = json.Unmarshal(p.Content, &c)
			ce.Redacts = c.Redacts
		}
		b, err := json.Marshal(ce)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	empty, name := "", "@bob:x"
	cases := []struct {
		typ      string
		stateKey *string
		pdu      string
	}{
		{"m.room.message", nil, `{"auth_events":["$a"],"content":{"body":"hello","msgtype":"m.text"},"depth":3,"room_id":"!r:x","type":"m.room.message"}`},
		{"m.room.message", nil, `{"content":{"body":"<b>bold</b> & more","formatted_body":"a>b"},"type":"m.room.message"}`},
		{"m.room.message", nil, "{\"content\":{\"body\":\"caf\u00e9 \u2028 \u2029 日本 \\u0041 \\n \\\" \\\\\"},\"type\":\"m.room.message\"}"},
		{"m.room.message", nil, `{"content": { "body" : "spaced" } ,"type":"m.room.message"}`},
		{"m.room.message", nil, `{"type":"m.room.message"}`},
		{"m.room.message", nil, `{"content":null,"type":"m.room.message"}`},
		{"m.room.topic", &empty, `{"content":{"topic":"t"},"state_key":"","type":"m.room.topic"}`},
		{"m.room.member", &name, `{"content":{"membership":"join","displayname":"Bob <b>"},"state_key":"@bob:x","type":"m.room.member"}`},
		{"m.room.redaction", nil, `{"content":{},"redacts":"$old","type":"m.room.redaction"}`},
		{"m.room.redaction", nil, `{"content":{"redacts":"$v11","reason":"spam"},"type":"m.room.redaction"}`},
		{"m.room.redaction", nil, `{"content":{"reason":"none"},"type":"m.room.redaction"}`},
	}
	for i, c := range cases {
		e := &storage.Event{EventID: "$ev" + strconv.Itoa(i) + "<&>", RoomID: "!r:x", Type: c.typ, StateKey: c.stateKey,
			Sender: "@alice:x", OriginServerTS: 1765000000000 + int64(i), JSON: []byte(c.pdu)}
		for _, omit := range []bool{false, true} {
			f := &eventFormatter{omitRoomID: omit}
			got, err := f.coreJSON(e)
			if err != nil {
				t.Fatalf("case %d: %v", i, err)
			}
			if want := decoded(e, omit); !bytes.Equal(got, want) {
				t.Errorf("case %d (omit room ID %v):\n got %s\nwant %s", i, omit, got, want)
			}
		}
	}
	// Content is a window on the stored JSON that an append cannot write
	// past.
	e := &storage.Event{Type: "m.room.message", JSON: []byte(`{"content":{"body":"x"},"type":"m.room.message"}`)}
	content, _ := pduContent(e)
	_ = append(content, "overwrite"...)
	if string(e.JSON) != `{"content":{"body":"x"},"type":"m.room.message"}` {
		t.Fatalf("appending to the content changed the stored JSON: %s", e.JSON)
	}
}

// TestWriteSyncReusesBuffers: answers written one after another through
// writeSync's kept buffers are each what json.Marshal makes, however
// large the one before (nothing of it is left over).
func TestWriteSyncReusesBuffers(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var recs []*httptest.ResponseRecorder
	var wants [][]byte
	for range 300 {
		var resp syncResponse
		fillSync(r, reflect.ValueOf(&resp).Elem(), 0)
		want, err := json.Marshal(&resp)
		if err != nil {
			continue
		}
		rec := httptest.NewRecorder()
		if err := writeSync(rec, &resp); err != nil {
			t.Fatal(err)
		}
		recs, wants = append(recs, rec), append(wants, want)
	}
	for i, rec := range recs {
		if !bytes.Equal(rec.Body.Bytes(), wants[i]) {
			t.Fatalf("answer %d:\n got %s\nwant %s", i, rec.Body, wants[i])
		}
	}
}
