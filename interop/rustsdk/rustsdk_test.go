// Package rustsdk_test runs interop/rust-sdk, a client built on
// matrix-rust-sdk (the SDK inside Element X), against a real Hearth on
// loopback: it logs in with a password, syncs its room list through
// matrix-sdk-ui's RoomListService over simplified sliding sync (MSC4186),
// and reads a room's timeline back through /messages (this file); two
// such clients exchange an end-to-end encrypted message (e2ee_test.go);
// it logs in through the OAuth 2.0 API with headless Chromium on Hearth's
// pages, and a second device logs in by QR code over MSC4108's rendezvous
// and the device authorisation grant (oauth_test.go).
//
// The client is built by `make rust-sdk` (cargo; slow the first time).
// HEARTH_TEST_RUST_SDK names the built binary, or is 1 for the place make
// puts it; without it the tests skip.
package rustsdk_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// EnvBinary names the variable holding the client's path (or 1).
const EnvBinary = "HEARTH_TEST_RUST_SDK"

// binary returns the client's path, or skips the test saying how to build
// it.
func binary(t *testing.T) string {
	t.Helper()
	v := os.Getenv(EnvBinary)
	if v == "" {
		t.Skip("matrix-rust-sdk interop skipped: " + EnvBinary + " is not set (make rust-sdk, then HEARTH_TEST_RUST_SDK=1)")
	}
	if v == "1" {
		home, _ := os.UserHomeDir()
		v = filepath.Join(home, ".cache", "hearth-ci", "rust-sdk-target", "release", "hearth-rust-sdk-client")
	}
	if _, err := os.Stat(v); err != nil {
		t.Fatalf("%s: %v (build it with make rust-sdk)", EnvBinary, err)
	}
	return v
}

const password = "rust sdk password"

func register(t *testing.T, b *servertest.Bundle, name string) *mautrix.Client {
	t.Helper()
	anon, err := mautrix.NewClient(b.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := anon.RegisterDummy(t.Context(), &mautrix.ReqRegister[any]{Username: name, Password: password})
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	cli, err := mautrix.NewClient(b.URL, resp.UserID, resp.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	cli.DeviceID = resp.DeviceID
	return cli
}

// clientOutput is what the client prints.
type clientOutput struct {
	UserID   string       `json:"user_id"`
	Rooms    []listedRoom `json:"rooms"`
	Timeline []string     `json:"timeline"`
	Pages    int          `json:"pages"`
}

// runClient runs the client's rooms mode as user with the password and
// args after it, and parses what it prints.
func runClient(t *testing.T, bin, url, user string, args ...string) *clientOutput {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"rooms", url, user, password}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("rust-sdk client: %v\nstderr:\n%s", err, stderr.String())
	}
	t.Logf("rust-sdk client printed: %s", bytes.TrimSpace(stdout.Bytes()))
	var out clientOutput
	if err := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &out); err != nil {
		t.Fatalf("client output %q: %v\nstderr:\n%s", stdout.String(), err, stderr.String())
	}
	return &out
}

type listedRoom struct {
	RoomID            string  `json:"room_id"`
	Name              *string `json:"name"`
	NotificationCount int     `json:"notification_count"`
	HighlightCount    int     `json:"highlight_count"`
	RecencyStamp      *int64  `json:"recency_stamp"`
	JoinedMembers     int     `json:"joined_members"`
}

// TestRustSDKRoomList: Bob makes three rooms Alice joins and writes in
// them in the order beta, alpha, gamma; Alice reads beta. The SDK logs in
// as Alice with her password and must list gamma, alpha, beta (recency)
// with unread counts 2, 1, 0.
func TestRustSDKRoomList(t *testing.T) {
	bin := binary(t)
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob := register(t, b, "alice"), register(t, b, "bob")
		ctx := t.Context()
		mk := func(name string) id.RoomID {
			r, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: name})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := alice.JoinRoomByID(ctx, r.RoomID); err != nil {
				t.Fatal(err)
			}
			return r.RoomID
		}
		alpha, beta, gamma := mk("Alpha"), mk("Beta"), mk("Gamma")
		say := func(room id.RoomID, body string) id.EventID {
			r, err := bob.SendText(ctx, room, body)
			if err != nil {
				t.Fatal(err)
			}
			return r.EventID
		}
		read := say(beta, "beta news")
		say(alpha, "alpha news")
		say(gamma, "gamma news")
		say(gamma, "more gamma news")
		if err := alice.SendReceipt(ctx, beta, read, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}

		out := runClient(t, bin, b.URL, "alice", "3")
		if out.UserID != string(alice.UserID) {
			t.Fatalf("logged in as %s, want %s", out.UserID, alice.UserID)
		}
		var ids, names []string
		var counts []int
		for _, r := range out.Rooms {
			ids = append(ids, r.RoomID)
			if r.Name != nil {
				names = append(names, *r.Name)
			}
			counts = append(counts, r.NotificationCount)
		}
		if want := []string{string(gamma), string(alpha), string(beta)}; !slices.Equal(ids, want) {
			t.Fatalf("room list %v (%v), want gamma, alpha, beta %v", ids, names, want)
		}
		if want := []string{"Gamma", "Alpha", "Beta"}; !slices.Equal(names, want) {
			t.Fatalf("names %v, want %v", names, want)
		}
		if want := []int{2, 1, 0}; !slices.Equal(counts, want) {
			t.Fatalf("unread counts %v, want %v", counts, want)
		}
		for _, r := range out.Rooms {
			if r.RecencyStamp == nil || r.JoinedMembers != 2 {
				t.Fatalf("room %s: recency %v, joined %d", r.RoomID, r.RecencyStamp, r.JoinedMembers)
			}
		}
	})
}

// TestRustSDKTimeline: Bob writes 45 messages in a room; the SDK, which
// the room list gave one event of it, opens the room's Timeline and pages
// back (sliding sync's prev_batch, then /messages) to the first.
func TestRustSDKTimeline(t *testing.T) {
	bin := binary(t)
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice, bob := register(t, b, "alice"), register(t, b, "bob")
		ctx := t.Context()
		r, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "History"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.JoinRoomByID(ctx, r.RoomID); err != nil {
			t.Fatal(err)
		}
		var want []string
		for i := range 45 {
			body := fmt.Sprintf("message %d", i)
			if _, err := bob.SendText(ctx, r.RoomID, body); err != nil {
				t.Fatal(err)
			}
			want = append(want, body)
		}
		out := runClient(t, bin, b.URL, "alice", "1", string(r.RoomID), "45")
		if !slices.Equal(out.Timeline, want) {
			t.Fatalf("timeline after %d pages: %v, want %v", out.Pages, out.Timeline, want)
		}
		if out.Pages == 0 {
			t.Fatal("the timeline needed no back-pagination: the test proves nothing")
		}
	})
}
