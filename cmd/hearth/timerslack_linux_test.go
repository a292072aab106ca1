//go:build linux

package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestTimerSlack starts `hearth serve` and reads every thread's timer
// slack: all of them, the Go runtime's monitor thread included, have
// HEARTH_TIMER_SLACK's (1 ms by default), in the process the test
// started; with 0 they keep the one they inherited.
func TestTimerSlack(t *testing.T) {
	inherited, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prGetTimerSlack, 0, 0)
	if errno != 0 {
		t.Skipf("PR_GET_TIMERSLACK: %v", errno)
	}
	for _, c := range []struct {
		env  string
		want int64
	}{
		{"", defaultTimerSlack.Nanoseconds()},
		{"HEARTH_TIMER_SLACK=5ms", 5_000_000},
		{"HEARTH_TIMER_SLACK=0", int64(inherited)},
	} {
		t.Run(c.env, func(t *testing.T) {
			var env []string
			if c.env != "" {
				env = []string{c.env}
			}
			s := serveEnv(t, generated(t), env...)
			pid := s.cmd.Process.Pid
			tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
			if err != nil {
				t.Fatal(err)
			}
			// The runtime runs at least its monitor, the main thread and
			// one per processor busy at start.
			if len(tasks) < 3 {
				t.Fatalf("%d threads", len(tasks))
			}
			for _, task := range tasks {
				// Another process's thread's slack takes CAP_SYS_NICE to
				// read, as to write.
				b, err := os.ReadFile("/proc/" + task.Name() + "/timerslack_ns")
				if os.IsPermission(err) {
					t.Skip("reading another process's timer slack needs CAP_SYS_NICE")
				}
				if err != nil {
					t.Fatal(err)
				}
				got, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
				if err != nil || got != c.want {
					t.Errorf("thread %s of %d: timer slack %q, want %d", task.Name(), pid, b, c.want)
				}
			}
		})
	}
}

// TestTimerSlackBadValue: a value that is not a duration stops serve with
// a message naming the variable.
func TestTimerSlackBadValue(t *testing.T) {
	t.Setenv(timerSlackEnv, "fast")
	_, stderr, code := run(t, "", "serve", "-c", generated(t))
	if code == 0 || !strings.Contains(stderr, `HEARTH_TIMER_SLACK="fast"`) {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}
