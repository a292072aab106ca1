package storage

import (
	"testing"
	"time"
)

// TestCheckpointDue: the checkpointer runs at its next tick after a busy
// spell of commits or once the WAL file grew, waits up to checkpointIdle
// after a few commits, and never runs when nothing was committed since
// its last checkpoint.
func TestCheckpointDue(t *testing.T) {
	for _, c := range []struct {
		commits int64
		since   time.Duration
		grew    bool
		want    bool
	}{
		{0, time.Hour, true, false},
		{1, checkpointEvery, false, false},
		{1, checkpointEvery, true, true},
		{1, checkpointIdle, false, true},
		{checkpointBusyCommits - 1, checkpointIdle - time.Millisecond, false, false},
		{checkpointBusyCommits, checkpointEvery, false, true},
	} {
		if got := checkpointDue(c.commits, c.since, c.grew); got != c.want {
			t.Errorf("%d commits, %v since the last, WAL grew %v: %v, want %v", c.commits, c.since, c.grew, got, c.want)
		}
	}
}
