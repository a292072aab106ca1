package storage

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
)

// bulkExec runs a multi-row statement, head + rows + tail, over args (cols
// per row), in batches sized for the engine, each statement prepared once.
// PostgreSQL pays a round trip per statement, so its batches are large.
// On SQLite the rows use anonymous "?" parameters: modernc's driver looks
// up the name of every numbered parameter it binds by a linear search,
// which makes long statements of "$n" parameters cost quadratic time.
func (s *Store) bulkExec(ctx context.Context, tx *sql.Tx, head string, cols int, tail string, args []any) error {
	if len(args) == 0 {
		return nil
	}
	if s.wstmts != nil {
		return s.bulkExecPrepared(ctx, tx, head, cols, tail, args)
	}
	batch := s.d.BulkRows * cols
	stmts := map[int]*sql.Stmt{}
	defer func() {
		for _, st := range stmts {
			st.Close()
		}
	}()
	for start := 0; start < len(args); start += batch {
		chunk := args[start:min(start+batch, len(args))]
		rows := len(chunk) / cols
		st := stmts[rows]
		if st == nil {
			var err error
			if st, err = tx.PrepareContext(ctx, bulkSQL(head, cols, tail, rows, s.d.Name != "sqlite")); err != nil {
				return fmt.Errorf("storage: prepare bulk statement: %w", err)
			}
			stmts[rows] = st
		}
		if _, err := st.ExecContext(ctx, chunk...); err != nil {
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

// bulkExecPrepared is bulkExec on SQLite's write connection.
func (s *Store) bulkExecPrepared(ctx context.Context, tx *sql.Tx, head string, cols int, tail string, args []any) error {
	rows := len(args) / cols
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
