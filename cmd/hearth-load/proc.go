package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Usage is what a phase cost the server process, read from /proc.
type Usage struct {
	RSSStartMiB float64 `json:"rss_start_mib"` // VmRSS when the phase began
	RSSPeakMiB  float64 `json:"rss_peak_mib"`  // highest VmRSS sampled during the phase (every 100 ms)
	HWMMiB      float64 `json:"hwm_mib"`       // VmHWM at the end: the process's peak since it started (the kernel updates it lazily, so it may trail VmRSS slightly)
	CPUSeconds  float64 `json:"cpu_seconds"`   // user + system time spent during the phase
	Cores       float64 `json:"cores"`         // CPUSeconds over the phase's wall time
	// ToolCPUSeconds is this load tool's own CPU time during the phase:
	// on a small machine the tool and the server share the cores, and
	// what one takes the other cannot have.
	ToolCPUSeconds float64 `json:"tool_cpu_seconds"`
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux architecture Hearth is built for.
const clockTicks = 100

// sampler watches one process for one phase.
type sampler struct {
	pid   int
	start time.Time
	cpu0  float64
	tool0 float64
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	u     Usage
}

// watch starts sampling pid; a pid of 0 samples nothing.
func watch(pid int) *sampler {
	s := &sampler{pid: pid, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	if pid == 0 {
		close(s.done)
		return s
	}
	s.cpu0, _ = cpuSeconds(pid)
	s.tool0 = toolCPU()
	rss, _, _ := memory(pid)
	s.u.RSSStartMiB, s.u.RSSPeakMiB = rss, rss
	go func() {
		defer close(s.done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				if rss, _, err := memory(pid); err == nil {
					s.mu.Lock()
					s.u.RSSPeakMiB = max(s.u.RSSPeakMiB, rss)
					s.mu.Unlock()
				}
			}
		}
	}()
	return s
}

// cpu is the CPU time spent since watch, without ending the sample.
func (s *sampler) cpu() float64 {
	if s.pid == 0 {
		return 0
	}
	c, _ := cpuSeconds(s.pid)
	return c - s.cpu0
}

// end stops sampling and returns the usage, or nil when nothing was watched.
func (s *sampler) end() *Usage {
	if s.pid == 0 {
		return nil
	}
	close(s.stop)
	<-s.done
	u := s.u
	if rss, hwm, err := memory(s.pid); err == nil {
		u.RSSPeakMiB = max(u.RSSPeakMiB, rss)
		u.HWMMiB = hwm
	}
	u.CPUSeconds = s.cpu()
	u.Cores = u.CPUSeconds / time.Since(s.start).Seconds()
	u.ToolCPUSeconds = toolCPU() - s.tool0
	return &u
}

// toolCPU is the user and system time this process has spent.
func toolCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// memory reads VmRSS and VmHWM in MiB from /proc/PID/status.
func memory(pid int) (rss, hwm float64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/status: %s: %w", pid, line, err)
		}
		if k == "VmRSS" {
			rss = kb / 1024
		} else {
			hwm = kb / 1024
		}
	}
	return rss, hwm, nil
}

// idleSettle is how long after start the idle RSS is read.
const idleSettle = time.Second

// rssParts splits VmRSS into RssAnon (heap, stacks, SQLite's memory) and
// RssFile (mapped file pages: the binary's code and tables, which the
// kernel can drop and read again at will), in MiB.
func rssParts(pid int) (anon, file float64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "RssAnon" && k != "RssFile") {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/status: %s: %w", pid, line, err)
		}
		if k == "RssAnon" {
			anon = kb / 1024
		} else {
			file = kb / 1024
		}
	}
	return anon, file, nil
}

// cpuSeconds reads utime + stime from /proc/PID/stat. The command name
// (field 2) may hold spaces, so fields are counted after its closing ')'.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After ')': state is field 3, so utime (14) is f[11] and stime (15) f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return (ut + st) / clockTicks, nil
}

// Settling: a run leaves work behind it (the push evaluator catching up
// on a burst of messages, the search index, a checkpoint), and so does
// the set-up of the next one (registrations, joins); whatever is measured
// next would otherwise pay for it. So every measured run starts with the
// server quiet: at most settleBusy of a core over settleWindow, waited
// for up to settleMax. What the server spent finishing a send run's
// work after its last answer is reported with that run. Only the
// server's own process is watched: on PostgreSQL the database's own
// work after a run (autovacuum, checkpoints) is not waited for.
const (
	settleWindow = 500 * time.Millisecond
	settleBusy   = 0.05
	settleMax    = 2 * time.Minute
)

// settle waits for pid to be quiet and returns the CPU seconds it spent
// meanwhile, how long it was busy (until the window it was found quiet
// in began: 0 when quiet at once, which costs one window to see), and
// whether it became quiet at all.
func settle(pid int) (cpu float64, took time.Duration, quiet bool) {
	if pid == 0 {
		return 0, 0, true
	}
	start := time.Now()
	c0, err := cpuSeconds(pid)
	if err != nil {
		return 0, 0, false
	}
	prev := c0
	for windows := 0; time.Since(start) < settleMax; windows++ {
		time.Sleep(settleWindow)
		c, err := cpuSeconds(pid)
		if err != nil {
			return prev - c0, time.Since(start), false
		}
		busy := (c - prev) / settleWindow.Seconds()
		prev = c
		if busy <= settleBusy {
			if windows == 0 {
				return c - c0, 0, true
			}
			return c - c0, time.Since(start) - settleWindow, true
		}
	}
	return prev - c0, time.Since(start), false
}

// quiet waits for the server to be quiet (settle) and says in the log
// when that took more than a window.
func (t *target) quiet() (cpu float64, took time.Duration, quiet bool) {
	cpu, took, quiet = settle(t.pid)
	switch {
	case !quiet:
		fmt.Fprintf(t.log, "  the server was still busy after %v (%.2f s of CPU); measuring anyway\n", took.Round(time.Millisecond), cpu)
	case took > settleWindow/2:
		fmt.Fprintf(t.log, "  quiet after %v (%.2f s of CPU)\n", took.Round(time.Millisecond), cpu)
	}
	return cpu, took, quiet
}

// watchQuiet waits for the server to be quiet, then starts sampling it.
func (t *target) watchQuiet() *sampler {
	t.quiet()
	return watch(t.pid)
}
