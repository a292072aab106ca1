package storage_test

import (
	"path/filepath"
	"runtime"
	"testing"

	"modernc.org/sqlite"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// TestSQLiteCommitsWithFdatasync: opening a SQLite store switches the
// process's SQLite to syncing commits with fdatasync, as SQLite's own
// Linux builds do, instead of modernc's default fsync, which also flushes
// the WAL file's timestamps through the file system's journal.
func TestSQLiteCommitsWithFdatasync(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("fdatasync is only switched on where SQLite can use it; checked on Linux")
	}
	if _, err := sqlite.Fdatasync(false); err != nil {
		t.Fatal(err)
	}
	storagetest.Open(t, storagetest.Engine{Name: "sqlite", Options: storage.Options{SQLitePath: filepath.Join(t.TempDir(), "hearth.db")}})
	if !sqlite.FdatasyncEnabled() {
		t.Fatal("after opening a SQLite store, commits still sync with fsync")
	}
}
