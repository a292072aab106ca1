//go:build !race

package appliance

// slowdown: see race_on_test.go.
const slowdown = 1
