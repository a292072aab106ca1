package storage

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
)

// bulkExec runs a multi-row statement, head + rows + tail, over args (cols
// per row), in batches sized for the engine. PostgreSQL pays a round trip
// per statement, so its batches are large; pgx prepares each statement
// text once per connection and keeps it (its statement cache), so the
// statements are run as they are: preparing one here and closing it after
// cost two more round trips per call, one to prepare and one to
// deallocate. On SQLite the rows use anonymous "?" parameters: modernc's
// driver looks up the name of every numbered parameter it binds by a
// linear search, which makes long statements of "$n" parameters cost
// quadratic time.
func (s *Store) bulkExec(ctx context.Context, tx *sql.Tx, head string, cols int, tail string, args []any) error {
	if len(args) == 0 {
		return nil
	}
	if s.wstmts != nil {
		return s.bulkExecPrepared(ctx, tx, head, cols, tail, args)
	}
	batch := s.d.BulkRows * cols
	for start := 0; start < len(args); start += batch {
		chunk := args[start:min(start+batch, len(args))]
		if _, err := tx.ExecContext(ctx, bulkSQL(head, cols, tail, len(chunk)/cols, s.d.Name != "sqlite"), chunk...); err != nil {
			return err
		}
	}
	return nil
}

// sqliteBulkSizes are the row counts of SQLite's multi-row statements:
// every batch is cut into statements of these sizes, largest first, so a
// query has at most four statements to keep prepared on the write
// connection (writeStmt) whatever its row counts. Preparing a statement
// per call cost the push evaluator a tenth of its CPU.
var sqliteBulkSizes = [...]int{64, 16, 4, 1}

// bulkExecPrepared is bulkExec on SQLite's write connection. Its
// statements are INSERT OR FAIL (failNotAbort).
func (s *Store) bulkExecPrepared(ctx context.Context, tx *sql.Tx, head string, cols int, tail string, args []any) error {
	rows := len(args) / cols
	head = failNotAbort(head)
	for _, size := range sqliteBulkSizes {
		if rows < size {
			continue
		}
		q := bulkSQL(head, cols, tail, size, false)
		for ; rows >= size; rows -= size {
			if _, err := s.txExec(ctx, tx, q, args[:size*cols]...); err != nil {
				return err
			}
			args = args[size*cols:]
		}
	}
	return nil
}

// failNotAbort turns an INSERT run on SQLite's write connection into
// INSERT OR FAIL, which leaves the rows a failing statement wrote before
// it failed in the transaction instead of taking them back. Every
// transaction there is rolled back whole when a statement of it fails
// (runTx; the committer then runs its writes again one by one), so
// nothing needs a single statement taken back. For that, SQLite copies
// every page a statement that writes several rows (or, with
// AUTOINCREMENT, several tables) changes to a statement journal first:
// 14% of the CPU of writing a step's notifications
// (BenchmarkRecordNotifications, eight messages into a room of 200), and
// the committer's every event row. A conflict an ON CONFLICT clause names
// is resolved by that clause as before.
func failNotAbort(insert string) string {
	if rest, ok := strings.CutPrefix(insert, "INSERT INTO "); ok {
		return "INSERT OR FAIL INTO " + rest
	}
	return insert
}

// bulkSQL is head, rows rows of cols parameters, and tail: numbered ($1,
// $2, ...) for PostgreSQL, anonymous (?) for SQLite (see bulkExec).
func bulkSQL(head string, cols int, tail string, rows int, numbered bool) string {
	var b strings.Builder
	b.Grow(len(head) + len(tail) + rows*(cols*5+4))
	b.WriteString(head)
	for r := range rows {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for c := range cols {
			if c > 0 {
				b.WriteString(", ")
			}
			if numbered {
				b.WriteByte('$')
				b.WriteString(strconv.Itoa(r*cols + c + 1))
			} else {
				b.WriteByte('?')
			}
		}
		b.WriteByte(')')
	}
	b.WriteString(tail)
	return b.String()
}
