package main

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// busyEnv makes the test binary spin on one core for the duration it
// names, then sleep (TestMain).
const busyEnv = "HEARTH_LOAD_TEST_BUSY"

// TestSettle waits for a process that is busy for a while, and returns
// at once for one that is idle.
func TestSettle(t *testing.T) {
	start := func(busy time.Duration) int {
		cmd := exec.Command(os.Args[0], "-test.run", "^$")
		cmd.Env = append(os.Environ(), busyEnv+"="+busy.String())
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd.Process.Pid
	}
	// Busy on one core for 1.5 s, then asleep.
	busy := start(1500 * time.Millisecond)
	cpu, took, quiet := settle(busy)
	// (On a loaded machine the spinning process gets less than a core.)
	if !quiet || took < time.Second || took > 3*time.Second || cpu < 0.2 {
		t.Errorf("busy process: cpu %.2f s, busy %v, quiet %v; want quiet after 1-3 s and ≥ 0.2 s of CPU", cpu, took, quiet)
	}
	idle := start(0)
	time.Sleep(200 * time.Millisecond) // past its start-up
	cpu, took, quiet = settle(idle)
	if !quiet || took > 2*settleWindow || cpu > 0.1 {
		t.Errorf("idle process: cpu %.2f s, busy %v, quiet %v; want quiet within two windows", cpu, took, quiet)
	}
}
