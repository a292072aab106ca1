package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is one run of a phase: what was asked, what was measured, and
// what it cost the server.
type Result struct {
	Phase   string   `json:"phase"`
	Params  string   `json:"params"`
	Metrics []Metric `json:"metrics"`
	Server  *Usage   `json:"server,omitempty"`
	// Notes say what a figure alone cannot, e.g. the first error of
	// requests counted as failed.
	Notes []string `json:"notes,omitempty"`
}

// Metric is one figure; Unit says how to read Value.
type Metric struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

func (r *Result) add(name string, value float64, unit string) {
	r.Metrics = append(r.Metrics, Metric{name, value, unit})
}

// addLatencies adds p50, p99 and max of ds in milliseconds.
func (r *Result) addLatencies(name string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	r.add(name+" p50", ms(quantile(ds, 0.50)), "ms")
	r.add(name+" p99", ms(quantile(ds, 0.99)), "ms")
	r.add(name+" max", ms(ds[len(ds)-1]), "ms")
}

// quantile of sorted ds, nearest rank.
func quantile(ds []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(ds))+0.5) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func printTable(w io.Writer, results []Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range results {
		fmt.Fprintf(tw, "%s: %s\n", r.Phase, r.Params)
		for _, m := range r.Metrics {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", m.Name, number(m.Value), m.Unit)
		}
		if u := r.Server; u != nil {
			fmt.Fprintf(tw, "  server RSS start / peak\t%s / %s\tMiB\n", number(u.RSSStartMiB), number(u.RSSPeakMiB))
			fmt.Fprintf(tw, "  server VmHWM\t%s\tMiB\n", number(u.HWMMiB))
			fmt.Fprintf(tw, "  server CPU\t%s\ts (%s cores)\n", number(u.CPUSeconds), number(u.Cores))
			fmt.Fprintf(tw, "  load tool CPU\t%s\ts\n", number(u.ToolCPUSeconds))
		}
		for _, n := range r.Notes {
			fmt.Fprintf(tw, "  note: %s\n", n)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

// number prints with three significant digits at most after the point.
func number(v float64) string {
	switch {
	case v == float64(int64(v)) && v < 1e15 && v > -1e15:
		return fmt.Sprintf("%d", int64(v))
	case v >= 100 || v <= -100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10 || v <= -10:
		return fmt.Sprintf("%.1f", v)
	default:
		return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
	}
}

// Report is a whole run: where it ran, then every result.
type Report struct {
	Time    time.Time `json:"time"`
	Machine Machine   `json:"machine"`
	Server  string    `json:"server"` // "started, SQLite", "started, PostgreSQL" or the -url
	Results []Result  `json:"results"`
}

// Machine is what a figure needs beside it to mean anything.
type Machine struct {
	CPU    string  `json:"cpu"` // model name from /proc/cpuinfo
	CPUs   int     `json:"cpus"`
	MemGiB float64 `json:"mem_gib"`
	Load   string  `json:"load"` // /proc/loadavg at the start: is the machine quiet?
}

func thisMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				m.MemGiB = math.Round(kb/1024/1024*10) / 10
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		m.Load = strings.Join(f[:min(3, len(f))], " ")
	}
	return m
}

func printReport(w io.Writer, r Report) {
	fmt.Fprintf(w, "%s, %s: %d × %s, %g GiB, load %s\n\n", r.Time.Format(time.RFC3339), r.Server, r.Machine.CPUs, r.Machine.CPU, r.Machine.MemGiB, r.Machine.Load)
	printTable(w, r.Results)
}
