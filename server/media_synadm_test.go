package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// TestSynadmMedia runs the real synadm CLI's media commands against a
// running Hearth. Skipped when synadm is not installed.
func TestSynadmMedia(t *testing.T) {
	if _, err := os.Stat(synadmPath); err != nil {
		t.Skip("synadm test skipped: " + synadmPath + " is not installed (apt-get install synadm)")
	}
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		tok := seedUser(t, b.Store, "root", "rootpw", true)
		alice := newRoomUser(t, b, "alice")
		keep := upload(t, alice.cli, []byte("keep me"), "text/plain", "keep.txt")
		gone := upload(t, alice.cli, []byte("delete me"), "text/plain", "gone.txt")
		old := upload(t, alice.cli, []byte("old"), "text/plain", "old.txt")

		dir := t.TempDir()
		cfg := filepath.Join(dir, "synadm.yaml")
		yml := "user: root\ntoken: " + tok + "\nbase_url: " + b.URL + "\nadmin_path: /_synapse/admin\nmatrix_path: /_matrix\n" +
			"timeout: 10\nserver_discovery: well-known\nhomeserver: hearth.test\nformat: json\nssl_verify: true\n"
		if err := os.WriteFile(cfg, []byte(yml), 0o600); err != nil {
			t.Fatal(err)
		}
		synadm := func(args ...string) map[string]any {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, synadmPath, append([]string{"-c", cfg, "--batch", "-o", "json"}, args...)...)
			cmd.Env = append(os.Environ(), "HOME="+dir)
			out, err := cmd.Output()
			if err != nil {
				var stderr string
				if ee, ok := err.(*exec.ExitError); ok {
					stderr = string(ee.Stderr)
				}
				t.Fatalf("synadm %s: %v\n%s\n%s", strings.Join(args, " "), err, out, stderr)
			}
			v := map[string]any{}
			if err := json.Unmarshal(out, &v); err != nil {
				t.Fatalf("synadm %s: output is not a JSON object: %s", strings.Join(args, " "), out)
			}
			return v
		}

		if out := synadm("media", "list", "-u", "alice"); out["total"] != float64(3) {
			t.Fatalf("media list: %v", out)
		}
		synadm("media", "quarantine", "-i", gone.FileID)
		if served(t, b, alice.tok, gone) {
			t.Fatal("quarantined through synadm, still served")
		}
		synadm("media", "protect", keep.FileID)
		if out := synadm("media", "delete", "-i", gone.FileID); fmt.Sprint(out["deleted_media"]) != "["+gone.FileID+"]" {
			t.Fatalf("media delete -i: %v", out)
		}
		future := fmt.Sprint(time.Now().Add(time.Hour).UnixMilli())
		if out := synadm("media", "delete", "-t", future); fmt.Sprint(out["deleted_media"]) != "["+old.FileID+"]" {
			t.Fatalf("media delete -t (keep is protected): %v", out)
		}
		if out := synadm("media", "purge", "-t", future); out["deleted"] != float64(0) {
			t.Fatalf("media purge: %v", out)
		}
		if !served(t, b, alice.tok, keep) {
			t.Fatal("protected media is gone")
		}
	})
}
