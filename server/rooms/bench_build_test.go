package rooms

import (
	"encoding/json/jsontext"
	"testing"
)

// BenchmarkBuildEvent builds a message like the load tool's in a v11 room.
func BenchmarkBuildEvent(b *testing.B) {
	key := testKey(b, "example.org")
	rv := MustVersion("11")
	t := EventTemplate{RoomID: "!abcdefghijklmnop:example.org", Type: "m.room.message", Sender: "@loaduser-17:example.org",
		Content:    jsontext.Value(`{"msgtype":"m.text","body":"message 1234 from the load tool, with some words in it","hearth_load":{"seq":1234,"sent":1765143593123456}}`),
		PrevEvents: []string{"$Yp6m0ZlKc3Jz2bqYQhXx7o9k0fX3K1sZ8jJ4yTn0a9E"},
		AuthEvents: []string{"$a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6q7r8s9t0u1v", "$b1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6q7r8s9t0u1v", "$c1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6q7r8s9t0u1v"},
		Depth:      123456, OriginServerTS: 1765143593123}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := BuildEvent(rv, t, key); err != nil {
			b.Fatal(err)
		}
	}
}
