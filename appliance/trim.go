package appliance

import "runtime/debug"

// trimAfterStart gives back memory that only starting used, once the server
// serves: the heap that migrations, config parsing and package init left as
// garbage (returned to the OS now instead of by the scavenger minutes
// later), and, on Linux, the binary's pages that start-up touched
// (dropStartupPages). Measured on a fresh SQLite database (docs/load.md,
// "Memory"), start-up leaves ~37 MB resident, ~27 MB of which are pages of
// the executable: code and tables that ran once.
func trimAfterStart() {
	debug.FreeOSMemory()
	dropStartupPages()
}
