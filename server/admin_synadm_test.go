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
		seedUser(t, b.Store, "alice", "alicepw", false)

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
	})
}
