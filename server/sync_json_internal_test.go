package server

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/http/httptest"
	"reflect"
	"strconv"
	"testing"
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
