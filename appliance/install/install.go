// Package install puts Hearth on a machine as a systemd service: the
// binary, a config and data directory, a system user of its own, and a
// hardened unit. With a root directory it writes the same files under that
// directory and changes nothing else, which is how it is tested and how a
// distribution image is prepared.
package install

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"

	"hearth/config"
)

// Options say where things go. Paths are as the installed system sees
// them; Root prefixes them all when writing.
type Options struct {
	// Root is where the target file system is ("" or "/": this machine,
	// which also creates the user and reloads systemd).
	Root       string
	ServerName string
	User       string // system user and group (default hearth)
	BinDir     string // default /usr/local/bin
	ConfigDir  string // default /etc/hearth
	DataDir    string // default /var/lib/hearth
	// Binary is the executable to copy (default: the running one).
	Binary string
	// Log receives what is done, one line each.
	Log io.Writer
}

// Result lists the files written, as the installed system sees them.
type Result struct {
	Binary, Config, Unit, SysUsers, DataDir string
	// ConfigExisted: an existing config was kept.
	ConfigExisted bool
}

// UnitName is the service's unit file name.
const UnitName = "hearth.service"

func (o *Options) defaults() error {
	if o.User == "" {
		o.User = "hearth"
	}
	if o.BinDir == "" {
		o.BinDir = "/usr/local/bin"
	}
	if o.ConfigDir == "" {
		o.ConfigDir = "/etc/hearth"
	}
	if o.DataDir == "" {
		o.DataDir = "/var/lib/hearth"
	}
	if o.Root == "" {
		o.Root = "/"
	}
	root, err := filepath.Abs(o.Root)
	if err != nil {
		return err
	}
	o.Root = root
	if o.Log == nil {
		o.Log = io.Discard
	}
	for _, p := range []string{o.BinDir, o.ConfigDir, o.DataDir} {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("install: %q must be an absolute path", p)
		}
	}
	if strings.ContainsAny(o.User, " :/\n") || o.User == "root" {
		return fmt.Errorf("install: %q is not a usable system user name", o.User)
	}
	return nil
}

// onMachine reports whether the install targets this machine.
func (o *Options) onMachine() bool { return o.Root == "/" }

// under is p inside the root.
func (o *Options) under(p string) string { return filepath.Join(o.Root, p) }

// Install writes the binary, the config (unless one exists), the data
// directory, the sysusers.d entry and the unit. On this machine it also
// creates the user, hands it the config and data directories, and reloads
// systemd; it does not start the service.
func Install(o Options) (*Result, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if o.onMachine() && os.Geteuid() != 0 {
		return nil, errors.New("install: run as root (or pass --root DIR to write the files under DIR)")
	}
	res := &Result{Binary: filepath.Join(o.BinDir, "hearth"), Config: filepath.Join(o.ConfigDir, "homeserver.yaml"),
		Unit: "/etc/systemd/system/" + UnitName, SysUsers: "/etc/sysusers.d/hearth.conf", DataDir: o.DataDir}

	// The binary.
	src := o.Binary
	if src == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("install: finding this binary: %w", err)
		}
		src = exe
	}
	if err := copyBinary(src, o.under(res.Binary)); err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Log, "binary   %s\n", res.Binary)

	// The config and the data directory with the signing key.
	if _, err := os.Stat(o.under(res.Config)); err == nil {
		res.ConfigExisted = true
		fmt.Fprintf(o.Log, "config   %s (kept: it exists)\n", res.Config)
	} else {
		// Parents as a system has them (Generate makes only the data
		// directory itself private).
		if err := os.MkdirAll(filepath.Dir(o.under(o.DataDir)), 0o755); err != nil {
			return nil, fmt.Errorf("install: %w", err)
		}
		if o.ServerName == "" {
			return nil, errors.New("install: --server-name is required for a new config (the domain in your users' IDs, e.g. example.org)")
		}
		if _, err := config.Generate(config.GenerateOptions{ServerName: o.ServerName, ConfigPath: o.under(res.Config),
			DataDir: o.under(o.DataDir), Root: o.Root}); err != nil {
			return nil, fmt.Errorf("install: %w", err)
		}
		fmt.Fprintf(o.Log, "config   %s\n", res.Config)
	}
	if err := os.MkdirAll(o.under(o.DataDir), 0o700); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	if err := os.Chmod(o.under(o.ConfigDir), 0o700); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	fmt.Fprintf(o.Log, "data     %s\n", o.DataDir)

	// The user, declared for systemd-sysusers.
	sysusers := fmt.Sprintf("# Hearth's system user (hearth install).\nu %s - \"Hearth Matrix homeserver\" %s -\n", o.User, o.DataDir)
	if err := writeFile(o.under(res.SysUsers), []byte(sysusers), 0o644); err != nil {
		return nil, err
	}
	// The unit.
	unit, err := Unit(o)
	if err != nil {
		return nil, err
	}
	if err := writeFile(o.under(res.Unit), unit, 0o644); err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Log, "unit     %s\n", res.Unit)

	if !o.onMachine() {
		fmt.Fprintf(o.Log, "\nWritten under %s only: no user was created and systemd was not told.\n", o.Root)
		return res, nil
	}
	if err := createUser(o); err != nil {
		return nil, err
	}
	for _, p := range []string{o.ConfigDir, o.DataDir} {
		if err := chownTree(p, o.User); err != nil {
			return nil, fmt.Errorf("install: giving %s to %s: %w", p, o.User, err)
		}
	}
	if out, err := exec.Command("systemctl", "daemon-reload").CombinedOutput(); err != nil {
		fmt.Fprintf(o.Log, "systemctl daemon-reload failed (%v): %s\n", err, out)
	}
	fmt.Fprintf(o.Log, "\nStart it with: systemctl enable --now hearth\n")
	return res, nil
}

// unitTemplate is the service, hardened: its own user, the file system
// read-only except its config and data directories, no privilege beyond
// binding ports below 1024 (80 and 443 for ACME and HTTPS, 8448 for
// federation), no devices, kernel settings, other users' processes or
// foreign address families.
var unitTemplate = template.Must(template.New("unit").Parse(`# Hearth Matrix homeserver (written by hearth install).
[Unit]
Description=Hearth Matrix homeserver
Documentation=https://spec.matrix.org/
After=network-online.target postgresql.service
Wants=network-online.target

[Service]
Type=simple
User={{.User}}
Group={{.User}}
ExecStart={{.Binary}} serve --config-path {{.Config}}
WorkingDirectory={{.DataDir}}
Restart=on-failure
RestartSec=5s
# Hearth answers parked /sync requests and finishes writes on SIGTERM.
TimeoutStopSec=30s
LimitNOFILE=65536
UMask=0077

# Ports 80, 443 and 8448 without running as root.
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
NoNewPrivileges=true

# The whole file system is read-only but the data directory and the
# config directory (the dashboard saves settings to the config).
ProtectSystem=strict
ReadWritePaths={{.ConfigDir}} {{.DataDir}}
ProtectHome=true
PrivateTmp=true
PrivateMounts=true
PrivateDevices=true
DevicePolicy=closed
ProtectKernelTunables=true
ProtectKernelModules=true
ProtectKernelLogs=true
ProtectControlGroups=true
ProtectClock=true
ProtectHostname=true
ProtectProc=invisible
# Not ProcSubset=pid: the process metrics read the boot time in /proc/stat.
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=true
RestrictRealtime=true
RestrictSUIDSGID=true
LockPersonality=true
MemoryDenyWriteExecute=true
RemoveIPC=true
KeyringMode=private
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
`))

// Unit renders the systemd unit for o.
func Unit(o Options) ([]byte, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	err := unitTemplate.Execute(&b, map[string]string{"User": o.User, "Binary": filepath.Join(o.BinDir, "hearth"),
		"Config": filepath.Join(o.ConfigDir, "homeserver.yaml"), "ConfigDir": o.ConfigDir, "DataDir": o.DataDir})
	return b.Bytes(), err
}

func writeFile(p string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	return nil
}

// copyBinary copies src to dst through a temporary file, so a running
// copy of dst is replaced, not overwritten in place.
func copyBinary(src, dst string) error {
	if same, _ := sameFile(src, dst); same {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("install: %w", err)
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".hearth-*")
	if err != nil {
		return fmt.Errorf("install: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return fmt.Errorf("install: copying the binary: %w", err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return fmt.Errorf("install: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	return nil
}

func sameFile(a, b string) (bool, error) {
	sa, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	sb, err := os.Stat(b)
	if err != nil {
		return false, err
	}
	return os.SameFile(sa, sb), nil
}

// createUser creates the system user with systemd-sysusers (from the entry
// written above), or useradd where systemd-sysusers is missing.
func createUser(o Options) error {
	if _, err := user.Lookup(o.User); err == nil {
		return nil
	}
	var cmd *exec.Cmd
	if p, err := exec.LookPath("systemd-sysusers"); err == nil {
		cmd = exec.Command(p, "/etc/sysusers.d/hearth.conf")
	} else {
		cmd = exec.Command("useradd", "--system", "--user-group", "--home-dir", o.DataDir, "--shell", "/usr/sbin/nologin", o.User)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("install: creating user %s: %v: %s", o.User, err, out)
	}
	fmt.Fprintf(o.Log, "user     %s\n", o.User)
	return nil
}

func chownTree(root, name string) error {
	u, err := user.Lookup(name)
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}
