package push

import (
	"testing"
	"time"
)

// TestPaceStep: a step that recorded something holds the next back until
// stepEvery after it began, so that a busy room's messages are recorded
// several at a time; nothing waits after a quiet spell, before the first
// step, or behind a full batch (a backlog).
func TestPaceStep(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name string
		last time.Time
		full bool
		now  time.Time
		want time.Duration
	}{
		{"first step", time.Time{}, false, t0, 0},
		{"right after a step", t0, false, t0.Add(2 * time.Millisecond), stepEvery - 2*time.Millisecond},
		{"at once", t0, false, t0, stepEvery},
		{"after the interval", t0, false, t0.Add(stepEvery), 0},
		{"after a quiet spell", t0, false, t0.Add(time.Second), 0},
		{"behind a full batch", t0, true, t0.Add(time.Millisecond), 0},
	} {
		if got := paceStep(c.last, c.full, c.now); got != c.want {
			t.Errorf("%s: wait %v, want %v", c.name, got, c.want)
		}
	}
}
