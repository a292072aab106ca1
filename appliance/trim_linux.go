package appliance

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// dropStartupPages unmaps the pages of the executable's code and read-only
// data from this process (madvise MADV_DONTNEED on its read-only mappings
// of the binary). Such pages are clean copies of the file: they stay in the
// kernel's page cache, and the code that runs again maps them back with a
// minor fault, as after the kernel reclaimed them, which it may do at any
// time anyway. What start-up alone used (init of every package, migrations,
// config, the first SQLite statements) then no longer counts in the RSS.
// Writable mappings are left alone: their pages hold the program's data.
func dropStartupPages() {
	exe, err := os.Executable()
	if err != nil {
		return
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return
	}
	defer f.Close()
	type mapping struct {
		start, end uintptr
		ok         bool
	}
	var ranges []mapping
	var cur *mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if addrs, ok := strings.CutSuffix(fields[0], ":"); ok {
			// A field of the current mapping: only mappings without
			// private (anonymous, copied-on-write) pages are dropped.
			if addrs == "Anonymous" && cur != nil && len(fields) > 1 && fields[1] != "0" {
				cur.ok = false
			}
			continue
		}
		cur = nil
		lo, hi, found := strings.Cut(fields[0], "-")
		if !found || len(fields) < 6 || fields[5] != exe || strings.Contains(fields[1], "w") {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		ranges = append(ranges, mapping{start: uintptr(start), end: uintptr(end), ok: true})
		cur = &ranges[len(ranges)-1]
	}
	for _, m := range ranges {
		if m.ok {
			syscall.Syscall(syscall.SYS_MADVISE, m.start, m.end-m.start, syscall.MADV_DONTNEED)
		}
	}
}
