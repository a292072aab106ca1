package server

import (
	"encoding/json"
	"reflect"
	"testing"

	"hearth/server/storage"
)

// receiptEvent writes its JSON by hand: it must be valid JSON of the
// spec's shape, leave out other users' private receipts, prefer a user's
// unthreaded receipt on an event to a threaded one (MSC4102), and quote
// whatever IDs arrive over federation.
func TestReceiptEventJSON(t *testing.T) {
	rs := []storage.Receipt{
		{UserID: "@a:hs", Type: "m.read", EventID: "$2", TS: 20},
		{UserID: "@b:hs", Type: "m.read", EventID: "$1", TS: 10, ThreadID: "$root"},
		{UserID: "@b:hs", Type: "m.read", EventID: "$1", TS: 11},                     // unthreaded wins
		{UserID: "@c:hs", Type: "m.read", EventID: "$1", TS: 12},                     //
		{UserID: "@c:hs", Type: "m.read", EventID: "$1", TS: 13, ThreadID: "$other"}, // the unthreaded stays
		{UserID: "@me:hs", Type: "m.read.private", EventID: "$2", TS: 30},
		{UserID: "@d:hs", Type: "m.read.private", EventID: "$2", TS: 40}, // not the viewer's: left out
		{UserID: "@e\"\\\n:hs", Type: "m.read", EventID: "$q\"\u2028", TS: 50, ThreadID: "main"},
	}
	raw := receiptEvent("@me:hs", rs)
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, raw)
	}
	want := map[string]any{"type": "m.receipt", "content": map[string]any{
		"$1": map[string]any{"m.read": map[string]any{
			"@b:hs": map[string]any{"ts": 11.0},
			"@c:hs": map[string]any{"ts": 12.0},
		}},
		"$2": map[string]any{
			"m.read":         map[string]any{"@a:hs": map[string]any{"ts": 20.0}},
			"m.read.private": map[string]any{"@me:hs": map[string]any{"ts": 30.0}},
		},
		"$q\"\u2028": map[string]any{"m.read": map[string]any{"@e\"\\\n:hs": map[string]any{"ts": 50.0, "thread_id": "main"}}},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %s\nwant %v", raw, want)
	}
	if ev := receiptEvent("@me:hs", rs[6:7]); ev != nil {
		t.Fatalf("only another user's private receipt: %s", ev)
	}
}
