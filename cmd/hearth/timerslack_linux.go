//go:build linux

package main

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

// timerSlackEnv names the environment variable that sets the server's
// timer slack (a Go duration; 0 leaves the one it was started with, the
// kernel's 50 µs unless its parent changed it). It is for
// measuring the setting (docs/sync-fanout.md), not a config key.
const timerSlackEnv = "HEARTH_TIMER_SLACK"

// defaultTimerSlack is how late the kernel may wake the server's threads
// from a timed sleep, so that it can wake them together with other work.
//
// Why: the Go runtime's monitor thread (sysmon) sleeps 20 µs at a time for
// the first millisecond after the idle server gets work, then longer, and
// starts over after every system call that found the server idle; the
// scheduler sleeps 3 µs before it steals a goroutine another processor
// was about to run. On a VM each of those sleeps is a context switch that
// costs microseconds, so at a few messages a second a message paid about
// 60 of them. With the slack at 1 ms those sleeps end at most every
// millisecond: the fan-out to 20 receivers at 5 msg/s made half the
// context switches and took 0.23–0.27 ms of CPU a delivery instead of
// 0.27–0.33 in alternated runs (docs/sync-fanout.md). Nothing in Hearth
// needs a timer closer than a millisecond.
const defaultTimerSlack = time.Millisecond

const (
	prSetTimerSlack = 29 // PR_SET_TIMERSLACK
	prGetTimerSlack = 30 // PR_GET_TIMERSLACK
)

// timerSlackWanted is the slack HEARTH_TIMER_SLACK asks for, or the
// default.
func timerSlackWanted() (time.Duration, error) {
	v := os.Getenv(timerSlackEnv)
	if v == "" {
		return defaultTimerSlack, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s=%q: not a duration such as 1ms, or 0", timerSlackEnv, v)
	}
	return d, nil
}

// widenTimerSlack makes sure every thread of the server has a timer slack
// of at least want. A thread's slack can only be set by the thread itself
// (or with CAP_SYS_NICE), a new thread inherits its creator's, and the
// runtime starts its monitor thread before any of Hearth's code runs: so
// the main thread sets its own and executes the binary again, in the same
// process (execve keeps the slack), where every thread inherits it. It
// does nothing when the slack is already as wide (as it is after the
// exec), and returns only then or when it could not re-execute.
func widenTimerSlack(want time.Duration) error {
	cur, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prGetTimerSlack, 0, 0)
	if want == 0 || errno != 0 || int64(cur) >= want.Nanoseconds() {
		return nil
	}
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, uintptr(want.Nanoseconds()), 0); errno != 0 {
		return nil // a kernel without it: run as is
	}
	// /proc/self/exe is the binary this process runs, even if an upgrade
	// has replaced the file since.
	err := syscall.Exec("/proc/self/exe", os.Args, os.Environ())
	// Still here: the exec failed. Put the slack back and run as is.
	syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, cur, 0)
	return fmt.Errorf("re-executing the server with a %v timer slack (%s): %w", want, timerSlackEnv, err)
}
