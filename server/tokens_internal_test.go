package server

import "testing"

// Sync tokens gained a third part (typing); tokens handed out before it
// existed must keep working.
func TestSyncTokenParts(t *testing.T) {
	tests := []struct {
		in      string
		want    streamToken
		wantErr bool
	}{
		{in: "s5", want: streamToken{Events: 5}},
		{in: "s5_7", want: streamToken{Events: 5, Aux: 7}},
		{in: "s5_7_9", want: streamToken{Events: 5, Aux: 7, Typing: 9}},
		{in: "s5_7_x", wantErr: true},
		{in: "s5_7_9_1", wantErr: true},
		{in: "s5_7_-1", wantErr: true},
		{in: "t5_7", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseSyncToken(tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("parseSyncToken(%q) = %+v, %v", tc.in, got, err)
			}
			if err == nil {
				back, err := parseSyncToken(got.String())
				if err != nil || back != got {
					t.Fatalf("round trip of %+v via %q: %+v %v", got, got.String(), back, err)
				}
			}
		})
	}
	// Without typing activity the token keeps its old two-part shape.
	if s := (streamToken{Events: 1, Aux: 2}).String(); s != "s1_2" {
		t.Fatalf("two-part token = %q", s)
	}
}
