package server_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

const synadmPath = "/usr/bin/synadm"

// TestSynadm runs the real synadm CLI (Debian package synadm) against a
// running Hearth: it lists users and queries one, through the Synapse admin
// API. Skipped when synadm is not installed.
func TestSynadm(t *testing.T) {
	if _, err := os.Stat(synadmPath); err != nil {
		t.Skip("synadm test skipped: " + synadmPath + " is not installed (apt-get install synadm)")
	}
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		tok := seedUser(t, b.Store, "root", "rootpw", true)
		aliceTok := seedUser(t, b.Store, "alice", "alicepw", false)
		alice, err := mautrix.NewClient(b.URL, "@alice:hearth.test", aliceTok)
		if err != nil {
			t.Fatal(err)
		}
		room := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Name: "Garden club", RoomAliasName: "garden", Preset: "public_chat"})
		mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Name: "Allotment"})

		dir := t.TempDir()
		cfg := filepath.Join(dir, "synadm.yaml")
		// synadm wants every key set; homeserver skips its well-known lookup.
		yml := "user: root\ntoken: " + tok + "\nbase_url: " + b.URL + "\nadmin_path: /_synapse/admin\nmatrix_path: /_matrix\n" +
			"timeout: 10\nserver_discovery: well-known\nhomeserver: hearth.test\nformat: json\nssl_verify: true\n"
		if err := os.WriteFile(cfg, []byte(yml), 0o600); err != nil {
			t.Fatal(err)
		}
		synadm := func(args ...string) []byte {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, synadmPath, append([]string{"-c", cfg, "--batch", "-o", "json"}, args...)...)
			cmd.Env = append(os.Environ(), "HOME="+dir) // synadm keeps a log under ~/.local/share
			cmd.Stdin = nil
			out, err := cmd.Output()
			if err != nil {
				var stderr string
				if ee, ok := err.(*exec.ExitError); ok {
					stderr = string(ee.Stderr)
				}
				t.Fatalf("synadm %s: %v\n%s\n%s", strings.Join(args, " "), err, out, stderr)
			}
			return out
		}

		var list struct {
			Users []struct {
				Name  string `json:"name"`
				Admin bool   `json:"admin"`
			} `json:"users"`
			Total int `json:"total"`
		}
		out := synadm("user", "list")
		if err := json.Unmarshal(out, &list); err != nil {
			t.Fatalf("user list output: %v\n%s", err, out)
		}
		if list.Total != 2 || len(list.Users) != 2 || list.Users[0].Name != "@alice:hearth.test" || !list.Users[1].Admin {
			t.Fatalf("user list: %s", out)
		}

		var details struct {
			Name        string `json:"name"`
			Admin       bool   `json:"admin"`
			Deactivated bool   `json:"deactivated"`
			Displayname string `json:"displayname"`
		}
		out = synadm("user", "details", "alice")
		if err := json.Unmarshal(out, &details); err != nil {
			t.Fatalf("user details output: %v\n%s", err, out)
		}
		if details.Name != "@alice:hearth.test" || details.Admin || details.Deactivated {
			t.Fatalf("user details: %s", out)
		}

		// Rooms: the list (sorted by name, as Synapse) and one room's details.
		var rooms struct {
			Rooms []struct {
				RoomID         string `json:"room_id"`
				Name           string `json:"name"`
				CanonicalAlias string `json:"canonical_alias"`
				JoinedMembers  int    `json:"joined_members"`
			} `json:"rooms"`
			TotalRooms int `json:"total_rooms"`
		}
		out = synadm("room", "list")
		if err := json.Unmarshal(out, &rooms); err != nil {
			t.Fatalf("room list output: %v\n%s", err, out)
		}
		if rooms.TotalRooms != 2 || len(rooms.Rooms) != 2 || rooms.Rooms[0].Name != "Allotment" || rooms.Rooms[1].RoomID != string(room) ||
			rooms.Rooms[1].CanonicalAlias != "#garden:hearth.test" || rooms.Rooms[1].JoinedMembers != 1 {
			t.Fatalf("room list: %s", out)
		}
		out = synadm("room", "list", "--name", "garden")
		if err := json.Unmarshal(out, &rooms); err != nil || rooms.TotalRooms != 1 || len(rooms.Rooms) != 1 || rooms.Rooms[0].Name != "Garden club" {
			t.Fatalf("room list --name garden: %v\n%s", err, out)
		}
		var roomDetails struct {
			RoomID string `json:"room_id"`
			Name   string `json:"name"`
			Public bool   `json:"public"`
		}
		out = synadm("room", "details", string(room))
		if err := json.Unmarshal(out, &roomDetails); err != nil || roomDetails.RoomID != string(room) || roomDetails.Name != "Garden club" {
			t.Fatalf("room details: %v\n%s", err, out)
		}
	})
}
