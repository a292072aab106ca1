package server

import "testing"

// The flow arithmetic of user-interactive auth, on a two-stage example like
// the spec's (no endpoint offers multi-stage flows yet, so the HTTP tests
// cannot reach these cases).
func TestUIAFlowOrder(t *testing.T) {
	flows := [][]string{{"a", "b"}, {"a", "c"}, {"d"}}
	tests := []struct {
		name      string
		completed []string
		stage     string
		next      bool
		done      bool
	}{
		{"first stage of a flow", nil, "a", true, false},
		{"single-stage flow", nil, "d", true, false},
		{"second stage before the first", nil, "b", false, false},
		{"second stage after the first", []string{"a"}, "b", true, false},
		{"other branch", []string{"a"}, "c", true, false},
		{"stage of no flow", []string{"a"}, "d", false, false},
		{"flow done", []string{"a", "c"}, "b", false, true},
		{"single stage done", []string{"d"}, "a", false, true},
		{"half a flow", []string{"a"}, "x", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := uiaNextStage(flows, tc.completed, tc.stage); got != tc.next {
				t.Errorf("uiaNextStage(%v, %q) = %v, want %v", tc.completed, tc.stage, got, tc.next)
			}
			if got := uiaFlowDone(flows, tc.completed); got != tc.done {
				t.Errorf("uiaFlowDone(%v) = %v, want %v", tc.completed, got, tc.done)
			}
		})
	}
}
