package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// TestFederationTestCommand: hearth federation-test with -c applies that
// config's CA list and IP range rules (a loopback server passes, its JSON
// in matrix-federation-tester's shape); without -c the default rules
// refuse the private address, and the exit status says so.
func TestFederationTestCommand(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		b := fed.Start(t, e)
		name := b.Cfg.ServerName
		cfgPath := filepath.Join(t.TempDir(), "homeserver.yaml")
		yaml := fmt.Sprintf("server_name: %q\nsigning_key_path: %q\ndatabase: {args: {database: %q}}\n"+
			"federation_custom_ca_list: [%q]\nip_range_whitelist: ['127.0.0.0/8']\ntrusted_key_servers: []\n",
			name, b.Cfg.SigningKeyPath, filepath.Join(t.TempDir(), "x.db"), fed.CAFile())
		if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		out, errs, code := run(t, "", "federation-test", "-c", cfgPath, "--json", name)
		if code != 0 {
			t.Fatalf("exit %d: %s\n%s", code, errs, out)
		}
		var r struct {
			FederationOK      bool
			ConnectionReports map[string]struct{ Checks struct{ AllChecksOK bool } }
			Version           struct{ Name string }
		}
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		if !r.FederationOK || !r.ConnectionReports[name].Checks.AllChecksOK || r.Version.Name != "Hearth" {
			t.Fatalf("report: %s", out)
		}

		out, _, code = run(t, "", "federation-test", name)
		if code != 1 || !strings.Contains(out, "FAIL connect") || !strings.Contains(out, "ip_range_blacklist") {
			t.Fatalf("without -c: exit %d\n%s", code, out)
		}
		if _, errs, code := run(t, "", "federation-test"); code == 0 || !strings.Contains(errs, "usage") {
			t.Fatalf("no server name: %d %s", code, errs)
		}
		if _, errs, code := run(t, "", "doctor"); code == 0 || !strings.Contains(errs, "-c FILE is required") {
			t.Fatalf("doctor without config: %d %s", code, errs)
		}
	})
}
