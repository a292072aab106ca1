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
	if !quiet || took < time.Second || took > 3*time.Second || cpu < 0.5 {
		t.Errorf("busy process: cpu %.2f s, busy %v, quiet %v; want quiet after 1-3 s and ≥ 0.5 s of CPU", cpu, took, quiet)
	}
	idle := start(0)
	cpu, took, quiet = settle(idle)
	if !quiet || took > settleWindow || cpu > 0.05 {
		t.Errorf("idle process: cpu %.2f s, busy %v, quiet %v; want quiet in the first or second window", cpu, took, quiet)
	}
}
