package storage

import (
	"context"
	"database/sql"
	"fmt"
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
			var b strings.Builder
			b.WriteString(head)
			for r := 0; r < rows; r++ {
				if r > 0 {
					b.WriteString(", ")
				}
				b.WriteByte('(')
				for c := 0; c < cols; c++ {
					if c > 0 {
						b.WriteString(", ")
					}
					if s.d.Name == "sqlite" {
						b.WriteByte('?')
					} else {
						fmt.Fprintf(&b, "$%d", r*cols+c+1)
					}
				}
				b.WriteByte(')')
			}
			b.WriteString(tail)
			var err error
			if st, err = tx.PrepareContext(ctx, b.String()); err != nil {
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
