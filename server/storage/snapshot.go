package storage

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
)

// SnapshotSQLite writes a consistent copy of the SQLite database at src to
// dst (which must not exist) with VACUUM INTO, while a server may be
// using src: the copy is one read transaction's view, so it holds every
// committed write up to a moment and nothing after it. It opens its own
// read-only connection, so it works from another process (hearth backup)
// as well as from the server's own (the dashboard's backup button).
func SnapshotSQLite(ctx context.Context, src, dst string) error {
	if _, err := os.Stat(src); err != nil {
		return fmt.Errorf("storage: snapshot: %w", err)
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Set("mode", "ro")
	db, err := sql.Open("sqlite", "file:"+src+"?"+q.Encode())
	if err != nil {
		return fmt.Errorf("storage: snapshot: open %s: %w", src, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, `VACUUM INTO $1`, dst); err != nil {
		return fmt.Errorf("storage: snapshot %s into %s: %w", src, dst, err)
	}
	return nil
}
