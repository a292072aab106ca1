//go:build race

package appliance

// slowdown scales the time limits of tests that bound how long the server
// takes: the race detector makes the pure-Go SQLite several times slower
// (a shutdown's final write of 1,300 staged notification rows takes about
// 0.2 s under it alone, against about 0.02 s without it), and more again
// while the other packages' race tests share the machine.
const slowdown = 5
