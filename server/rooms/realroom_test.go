package rooms

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// TestRealV12Room replays a room version 12 room recorded from a Synapse
// server (maunium.net), shipped as test data in the mautrix module this
// project already depends on. Each recorded event carries its real event
// ID in unsigned.event_id; the test checks that our reference hashes give
// the same IDs, that content hashes match, and that every event passes our
// auth rules against its own auth_events. The data is read from the module
// cache, not copied.
func TestRealV12Room(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "maunium.net/go/mautrix").Output()
	if err != nil {
		t.Skipf("cannot locate the mautrix module: %v", err)
	}
	path := filepath.Join(strings.TrimSpace(string(out)), "federation", "eventauth", "testroom-v12-success.jsonl")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("mautrix test room not available: %v", err)
	}
	rv := MustVersion("12")
	events := EventMap{}
	var create *Event
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	n := 0
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		n++
		e, err := ParseEvent(rv, line)
		if err != nil {
			t.Fatalf("event %d: %v", n, err)
		}
		if want := gjson.GetBytes(line, "unsigned.event_id").Str; e.ID() != want {
			t.Errorf("event %d: ID %s, want %s", n, e.ID(), want)
		}
		if !e.VerifyContentHash() {
			t.Errorf("event %d (%s): content hash mismatch", n, e.ID())
		}
		if e.IsCreate() {
			create = e
		}
		var auth []*Event
		for _, id := range e.AuthEventIDs() {
			auth = append(auth, events[id])
		}
		if err := AuthorizeByAuthEvents(e, auth, create, nil); err != nil {
			t.Errorf("event %d (%s %s): %v", n, e.Type(), e.ID(), err)
		}
		events.Add(e)
	}
	if n < 10 || create == nil {
		t.Fatalf("read only %d events", n)
	}
	if create.RoomID() != "!"+create.ID()[1:] {
		t.Errorf("room ID %s for create %s", create.RoomID(), create.ID())
	}
}
