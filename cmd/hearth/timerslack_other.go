//go:build !linux

package main

import "time"

// timerSlackWanted and widenTimerSlack: only Linux has a per-thread timer
// slack to widen (timerslack_linux.go).
func timerSlackWanted() (time.Duration, error) { return 0, nil }

func widenTimerSlack(time.Duration) error { return nil }
