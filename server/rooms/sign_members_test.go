package rooms

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"errors"
	"testing"
)

// TestCanonicalMembersMatchWholeObject: event objects beyond what the
// fuzzed templates make (another server's template as decoded JSON, with
// float numbers and nested objects; integers at canonical JSON's bounds;
// names that need escaping) give the members of the object encoded whole
// and made canonical, or fail as it does.
func TestCanonicalMembersMatchWholeObject(t *testing.T) {
	var proto map[string]any
	if err := json.Unmarshal([]byte(`{"type":"m.room.member","state_key":"@a:x","depth":12,"origin_server_ts":1700000000000,
		"content":{"membership":"join","z":{"b":[1,"\u00e9"],"a":null}},"prev_events":["$a","$b"],"auth_events":[],
		"room_id":"!r:x","sender":"@a:x","origin":"x","unsigned":{"age":5},"é\"\n":true,"\u2028":1.0}`), &proto); err != nil {
		t.Fatal(err)
	}
	objs := []map[string]any{
		proto,
		{"depth": int64(1<<53 - 1), "origin_server_ts": int64(-(1<<53 - 1)), "type": "x"},
		{"depth": int64(1 << 53)},
		{"depth": int64(-(1 << 53))},
		{"origin_server_ts": 1.5},
		{"state_key": "bad \xff"},
		{"prev_events": []string{"ok", "bad \xff"}},
		{"prev_events": []string{}, "auth_events": []string{"$a", "<&>\u2028\u0001\"\\"}},
		{"content": []byte(`{"b":1,"a":2}`)},
		{"redacts": "$x", "content": map[string]any{}},
	}
	for _, obj := range objs {
		checkCanonicalMembers(t, obj)
	}
}

// TestWithSignatureFirst: the first signature of an event, written
// directly, is what encoding the signatures map and making it canonical
// gives, for ordinary and unusual server names and key IDs.
func TestWithSignatureFirst(t *testing.T) {
	sig := make([]byte, 64)
	for i := range sig {
		sig[i] = byte(i * 7)
	}
	for _, k := range []SigningKey{
		{ServerName: "example.org", KeyID: "ed25519:a_test"},
		{ServerName: "[::1]:8448", KeyID: "ed25519:\u00e9\"\\\u2028\u007f\t"},
	} {
		got, err := withSignature(nil, k, sig)
		if err != nil {
			t.Fatal(err)
		}
		enc, err := jsonv2.Marshal(map[string]map[string]string{k.ServerName: {k.KeyID: base64.RawStdEncoding.EncodeToString(sig)}})
		if err != nil {
			t.Fatal(err)
		}
		want, err := canonicalOwned(nil, enc)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s %s:\n got %s\nwant %s", k.ServerName, k.KeyID, got, want)
		}
	}
	if _, err := withSignature(nil, SigningKey{ServerName: "bad \xff", KeyID: "ed25519:a"}, sig); !errors.Is(err, ErrBadEvent) {
		t.Fatalf("server name of invalid UTF-8: %v", err)
	}
}
