package server

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"hearth/server/rooms"
)

// TestDecodeContentCanonical checks that the content decodeContent passes
// on as it came makes the same canonical JSON, which is what an event
// holds (rooms.signObject), as the content decoded into a map and encoded
// again, as it was made before: escapes, HTML characters, member order,
// white space, numbers and nesting; and that a member named twice keeps
// the last.
func TestDecodeContentCanonical(t *testing.T) {
	bodies := []string{
		``,
		`{}`,
		`{"msgtype":"m.text","body":"hello"}`,
		`{"b":1,"a":"x","c":{"z":[1,{"y":2,"x":1}],"a":null}}`,
		`{"body":"<b>&amp;</b> \u2028 \u2029","format":"org.matrix.custom.html"}`,
		`{"s":"\u00e9\/\u0041\t\"\\","e":"\ud83d\ude00","raw":"é😀"}`,
		"  {\n \"n\" : 1 , \"m\": -0, \"big\": 9007199254740991, \"neg\": -9007199254740991, \"t\": true, \"f\": false }\n",
		`{"float":1.5}`,
		`{"exp":1e3}`,
		`{"a":1,"a":2}`,
		`{"a":{"x":1},"b":2,"a":{"y":[3]}}`,
	}
	for _, body := range bodies {
		got, err := decodeContent(httptest.NewRequest("PUT", "/", strings.NewReader(body)))
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		// As decodeContent made it before.
		var m map[string]json.RawMessage
		if err := decodeJSON(httptest.NewRequest("PUT", "/", strings.NewReader(body)), &m); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		want, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		gotC, gotErr := rooms.CanonicalJSON(got)
		wantC, wantErr := rooms.CanonicalJSON(want)
		if (gotErr != nil) != (wantErr != nil) || string(gotC) != string(wantC) {
			t.Errorf("%s: canonical %s (%v), before %s (%v)", body, gotC, gotErr, wantC, wantErr)
		}
	}
	got, err := decodeContent(httptest.NewRequest("PUT", "/", strings.NewReader(`{"a":1,"a":2}`)))
	if err != nil || string(got) != `{"a":2}` {
		t.Errorf("a member named twice: %s, %v; want the last", got, err)
	}
	for body, code := range map[string]string{`[1]`: "M_BAD_JSON", `{"a":`: "M_NOT_JSON", "{\"a\":\"\xff\"}": "M_NOT_JSON", `{"lone":"\ud800"}`: "M_NOT_JSON"} {
		if _, err := decodeContent(httptest.NewRequest("PUT", "/", strings.NewReader(body))); err == nil || !strings.Contains(err.Error(), code) {
			t.Errorf("%q: %v, want %s", body, err, code)
		}
	}
}
