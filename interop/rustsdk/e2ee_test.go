package rustsdk_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// runInteractive runs the client with args. Each JSON line it prints
// before the last is handed to step (which opens a browser on the URL it
// names); the last line, its result, is decoded into out.
func runInteractive(t *testing.T, bin string, out any, step func(line map[string]string), args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var last []byte
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		t.Logf("rust-sdk client printed: %s", line)
		last = append(last[:0], line...)
		var l map[string]any
		if json.Unmarshal(line, &l) != nil {
			continue
		}
		if u, ok := l["authorize"].(string); ok {
			step(map[string]string{"authorize": u})
		} else if u, ok := l["verification_uri"].(string); ok {
			step(map[string]string{"verification_uri": u})
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("rust-sdk client: %v\nstderr:\n%s", err, stderr.String())
	}
	if err := json.Unmarshal(last, out); err != nil {
		t.Fatalf("client result %q: %v\nstderr:\n%s", last, err, stderr.String())
	}
}

// syncBuffer is a bytes.Buffer the process's stderr copier and the test
// may touch at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var _ io.Writer = (*syncBuffer)(nil)

// TestRustSDKEncrypted: Alice and Bob share a room with encryption on;
// two SDK clients, new devices of each with their own crypto store,
// sync over sliding sync (SyncService: the to_device and e2ee
// extensions). Alice's client sends a message, which the SDK encrypts
// after querying Bob's device keys, claiming a one-time key and sending
// the room key to his device; Bob's client must show it decrypted in its
// timeline. On the wire (read back from the server) the event is
// m.room.encrypted and does not contain the text.
func TestRustSDKEncrypted(t *testing.T) {
	bin := binary(t)
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob := register(t, b, "alice"), register(t, b, "bob")
		ctx := t.Context()
		r, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Secrets", Invite: []id.UserID{bob.UserID},
			InitialState: []*event.Event{{Type: event.StateEncryption, Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, r.RoomID); err != nil {
			t.Fatal(err)
		}
		const body = "the eagle lands at midnight"
		var out struct {
			EventID          id.EventID `json:"event_id"`
			Decrypted        string     `json:"decrypted"`
			EncryptionInfo   bool       `json:"encryption_info"`
			SenderDevice     string     `json:"sender_device"`
			SenderDeviceID   string     `json:"sender_device_id"`
			ReceiverDeviceID string     `json:"receiver_device_id"`
		}
		runInteractive(t, bin, &out, nil, "e2ee", b.URL, "alice", "bob", password, string(r.RoomID), body)
		if out.Decrypted != body || !out.EncryptionInfo {
			t.Fatalf("Bob's SDK shows %q (encrypted: %v), want %q decrypted", out.Decrypted, out.EncryptionInfo, body)
		}
		if out.SenderDevice == "" || out.SenderDevice != out.SenderDeviceID {
			t.Fatalf("decrypted as from device %q, Alice's SDK device is %q", out.SenderDevice, out.SenderDeviceID)
		}

		// What the server stored and serves: ciphertext only.
		evt, err := bob.GetEvent(ctx, r.RoomID, out.EventID)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(evt.Content.Raw)
		if evt.Type != event.EventEncrypted || evt.Sender != alice.UserID {
			t.Fatalf("event on the wire: %s from %s, want m.room.encrypted from %s", evt.Type.Type, evt.Sender, alice.UserID)
		}
		if evt.Content.Raw["algorithm"] != string(id.AlgorithmMegolmV1) || evt.Content.Raw["ciphertext"] == "" ||
			evt.Content.Raw["session_id"] == nil || strings.Contains(string(raw), "eagle") {
			t.Fatalf("encrypted content %s", raw)
		}
	})
}
