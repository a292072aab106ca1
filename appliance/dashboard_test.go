package appliance

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"hearth/config"
	"hearth/server/servertest"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// runAppliance starts Run with cfg and returns the client address.
func runAppliance(t *testing.T, cfg *config.Config) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, Options{Listen: "127.0.0.1:0", Ready: func(a string) { ready <- a }}) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case addr := <-ready:
		return addr
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("server did not start")
	}
	return ""
}

func TestDashboardPlacement(t *testing.T) {
	t.Run("client listener", func(t *testing.T) {
		dir := t.TempDir()
		cfg := servertest.Config(t, dir)
		cfg.Database.Args.Database = filepath.Join(dir, "h.db")
		addr := runAppliance(t, cfg)
		if status, page := get(t, "http://"+addr+"/_hearth/admin/login"); status != 200 || !strings.Contains(page, "Sign in") {
			t.Fatalf("dashboard on the client listener: %d", status)
		}
	})
	t.Run("own listener", func(t *testing.T) {
		dir := t.TempDir()
		cfg := servertest.Config(t, dir)
		cfg.Database.Args.Database = filepath.Join(dir, "h.db")
		cfg.AdminDashboard = config.AdminDashboard{Port: freePort(t), BindAddresses: []string{"127.0.0.1"}}
		cfg.Caches.GlobalFactor = 0.5
		addr := runAppliance(t, cfg)
		if status, _ := get(t, "http://"+addr+"/_hearth/admin/login"); status != 404 {
			t.Fatalf("dashboard still on the client listener: %d", status)
		}
		own := "http://127.0.0.1:" + strconv.Itoa(cfg.AdminDashboard.Port)
		if status, page := get(t, own+"/"); status != 200 || !strings.Contains(page, "Sign in") {
			t.Fatalf("dashboard on its own listener: %d", status)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		dir := t.TempDir()
		cfg := servertest.Config(t, dir)
		cfg.Database.Args.Database = filepath.Join(dir, "h.db")
		off := false
		cfg.AdminDashboard.Enabled = &off
		addr := runAppliance(t, cfg)
		if status, _ := get(t, "http://"+addr+"/_hearth/admin/login"); status != 404 {
			t.Fatalf("disabled dashboard answered: %d", status)
		}
	})
}
