package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"hearth/config"
)

// TestInstallRoot runs `hearth install --root DIR` and checks what it wrote:
// the binary, a config whose paths are the installed system's (not DIR's),
// a private data directory with the signing key, the sysusers.d entry and
// a hardened unit that systemd-analyze accepts (where it is installed).
func TestInstallRoot(t *testing.T) {
	root := t.TempDir()
	out, errs, code := run(t, "", "install", "--root", root, "--server-name", "example.org")
	if code != 0 {
		t.Fatalf("install: exit %d\n%s%s", code, out, errs)
	}
	if !strings.Contains(out, "no user was created") {
		t.Errorf("install --root does not say it left the machine alone:\n%s", out)
	}

	bin := filepath.Join(root, "usr/local/bin/hearth")
	got, err := os.ReadFile(bin)
	want, _ := os.ReadFile(hearthBin)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("binary not copied: %v", err)
	}
	if st, _ := os.Stat(bin); st.Mode().Perm() != 0o755 {
		t.Errorf("binary mode %v", st.Mode())
	}

	cfgPath := filepath.Join(root, "etc/hearth/homeserver.yaml")
	cfg, _, err := config.Load(cfgPath)
	if err != nil {
		t.Fatalf("installed config does not load: %v", err)
	}
	for key, p := range map[string]string{"database": cfg.Database.Args.Database, "signing_key_path": cfg.SigningKeyPath, "media_store_path": cfg.MediaStorePath} {
		if !strings.HasPrefix(p, "/var/lib/hearth/") {
			t.Errorf("%s = %s, want it under /var/lib/hearth (the installed system's path)", key, p)
		}
	}
	for p, mode := range map[string]os.FileMode{
		"etc/hearth": 0o700, "etc/hearth/homeserver.yaml": 0o600,
		"var/lib/hearth": 0o700, "var/lib/hearth/example.org.signing.key": 0o600, "var/lib": 0o755,
	} {
		st, err := os.Stat(filepath.Join(root, p))
		if err != nil {
			t.Errorf("%s: %v", p, err)
		} else if st.Mode().Perm() != mode {
			t.Errorf("%s mode %v, want %v", p, st.Mode().Perm(), mode)
		}
	}
	if s := mustRead(t, filepath.Join(root, "etc/sysusers.d/hearth.conf")); !strings.Contains(s, "u hearth - ") || !strings.Contains(s, "/var/lib/hearth") {
		t.Errorf("sysusers.d entry:\n%s", s)
	}

	unitPath := filepath.Join(root, "etc/systemd/system/hearth.service")
	unit := mustRead(t, unitPath)
	for _, line := range []string{
		"User=hearth", "ExecStart=/usr/local/bin/hearth serve --config-path /etc/hearth/homeserver.yaml",
		"Restart=on-failure", "ProtectSystem=strict", "ReadWritePaths=/etc/hearth /var/lib/hearth",
		"AmbientCapabilities=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "NoNewPrivileges=true",
		"ProtectHome=true", "PrivateTmp=true", "PrivateDevices=true", "WantedBy=multi-user.target",
	} {
		if !strings.Contains(unit, "\n"+line+"\n") {
			t.Errorf("unit lacks %q", line)
		}
	}
	// --print-unit prints the same unit.
	if printed, _, code := run(t, "", "install", "--print-unit"); code != 0 || printed != unit {
		t.Errorf("--print-unit differs from the installed unit (exit %d)", code)
	}

	// A second install keeps the config and key.
	before := mustRead(t, cfgPath)
	if out, errs, code := run(t, "", "install", "--root", root); code != 0 || !strings.Contains(out, "kept") {
		t.Errorf("second install: exit %d\n%s%s", code, out, errs)
	}
	if mustRead(t, cfgPath) != before {
		t.Error("second install changed the config")
	}

	// systemd's own checks. verify needs ExecStart's binary to exist, so it
	// checks a copy whose ExecStart points into the root; nothing else
	// differs.
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed; unit not verified")
	}
	check := filepath.Join(t.TempDir(), "hearth.service")
	os.WriteFile(check, []byte(strings.Replace(unit, "ExecStart=/usr/local/bin/hearth", "ExecStart="+bin, 1)), 0o644)
	vout, err := exec.Command(sa, "verify", "--man=no", check).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(vout)) != 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, vout)
	}
	// The exposure score systemd computes for the sandbox (0 best, 10
	// worst); the unit must stay "OK" (below 2).
	sout, err := exec.Command(sa, "security", "--offline=true", "--threshold=20", "--no-pager", check).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security: %v\n%s", err, sout)
	}
	if !strings.Contains(string(sout), "Overall exposure level for hearth.service: 1.") {
		t.Errorf("exposure level not below 2:\n%s", sout[max(0, len(sout)-300):])
	}
}

// TestInstallNeedsRootOrDir: without --root, install needs root and says
// so; without a server name, a new config cannot be written.
func TestInstallNeedsRootOrDir(t *testing.T) {
	if os.Geteuid() != 0 {
		if _, errs, code := run(t, "", "install", "--server-name", "example.org"); code == 0 || !strings.Contains(errs, "--root") {
			t.Errorf("install as a user: exit %d %s", code, errs)
		}
	}
	if _, errs, code := run(t, "", "install", "--root", t.TempDir()); code == 0 || !strings.Contains(errs, "--server-name") {
		t.Errorf("install without a server name: exit %d %s", code, errs)
	}
	if _, errs, code := run(t, "", "install", "--root", t.TempDir(), "--server-name", "example.org", "--user", "root"); code == 0 || !strings.Contains(errs, "system user") {
		t.Errorf("install as root user: exit %d %s", code, errs)
	}
}
