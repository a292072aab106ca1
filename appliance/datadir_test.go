package appliance

import (
	"context"
	"errors"
	"testing"

	"hearth/appliance/datadir"
	"hearth/server/servertest"
)

// TestOneServerPerDataDir: a second server on the same data is refused at
// start, naming the lock, and the first one keeps serving.
func TestOneServerPerDataDir(t *testing.T) {
	cfg := servertest.Config(t, t.TempDir())
	addr := runAppliance(t, cfg)
	err := Run(context.Background(), cfg, Options{Listen: "127.0.0.1:0"})
	if !errors.Is(err, datadir.ErrInUse) {
		t.Fatalf("second server: %v", err)
	}
	if code, _ := get(t, "http://"+addr+"/_matrix/client/versions"); code != 200 {
		t.Errorf("first server after the refusal: %d", code)
	}
}
