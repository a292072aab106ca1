package storage

import (
	"testing"
	"time"
)

// TestCheckpointDue: the checkpointer runs at its next tick after a busy
// spell of commits, waits up to checkpointIdle after a few, and never
// runs when nothing was committed since its last checkpoint.
func TestCheckpointDue(t *testing.T) {
	for _, c := range []struct {
		commits int64
		since   time.Duration
		want    bool
	}{
		{0, time.Hour, false},
		{1, checkpointEvery, false},
		{1, checkpointIdle, true},
		{checkpointBusyCommits - 1, checkpointIdle - time.Millisecond, false},
		{checkpointBusyCommits, checkpointEvery, true},
	} {
		if got := checkpointDue(c.commits, c.since); got != c.want {
			t.Errorf("%d commits, %v since the last: %v, want %v", c.commits, c.since, got, c.want)
		}
	}
}
