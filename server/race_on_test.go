//go:build race

package server_test

// raceDetector is whether the tests run under the race detector. The
// hostile-input sweeps (thousands of requests through one client, one at
// a time) run in make test only: under the detector they take minutes and
// find no race the other tests do not.
const raceDetector = true
