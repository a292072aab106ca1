package storage

import (
	"bytes"
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"text/template"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// migrations lists the forward-only steps for this dialect: NNNN_name.sql,
// rendered as a template with the dialect, or NNNN_name.<engine>.sql when a
// whole file differs.
func (s *Store) migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, err
	}
	byVersion := map[int]migration{}
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".sql")
		engine := ""
		if base, eng, ok := strings.Cut(name, "."); ok {
			name, engine = base, eng
		}
		if engine != "" && engine != s.d.Name {
			continue
		}
		num, _, _ := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if err != nil {
			return nil, fmt.Errorf("storage: migration %s has no number", e.Name())
		}
		if _, dup := byVersion[v]; dup && engine == "" {
			continue // an engine-specific override already won
		}
		raw, err := migrationFS.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		t, err := template.New(e.Name()).Parse(string(raw))
		if err != nil {
			return nil, fmt.Errorf("storage: migration %s: %w", e.Name(), err)
		}
		var b bytes.Buffer
		if err := t.Execute(&b, s.d); err != nil {
			return nil, fmt.Errorf("storage: migration %s: %w", e.Name(), err)
		}
		byVersion[v] = migration{version: v, name: name, sql: b.String()}
	}
	out := make([]migration, 0, len(byVersion))
	for _, m := range byVersion {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// migrate applies every migration not yet recorded in schema_migrations,
// each in its own transaction.
func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.write.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_ts BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("storage: create schema_migrations: %w", err)
	}
	ms, err := s.migrations()
	if err != nil {
		return err
	}
	applied := map[int]bool{}
	rows, err := s.write.QueryContext(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return fmt.Errorf("storage: read schema_migrations: %w", err)
	}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return err
		}
		applied[v] = true
	}
	rows.Close()
	for _, m := range ms {
		if applied[m.version] {
			continue
		}
		err := s.tx(ctx, func(tx *sql.Tx) error {
			for _, stmt := range splitStatements(m.sql) {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("storage: migration %04d_%s: %w\n%s", m.version, m.name, err, stmt)
				}
			}
			if step := s.migrationStep(m.version); step != nil {
				if err := step(ctx, tx); err != nil {
					return fmt.Errorf("storage: migration %04d_%s: %w", m.version, m.name, err)
				}
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_ts) VALUES ($1, $2, $3)`,
				m.version, m.name, nowMS())
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// migrationStep is the Go a migration runs after its SQL, in the same
// transaction: work that SQL cannot do alike on both engines.
func (s *Store) migrationStep(version int) func(context.Context, *sql.Tx) error {
	switch version {
	case 17:
		return s.indexExistingEvents
	}
	return nil
}

// splitStatements splits a migration on semicolons at line ends. Migrations
// keep to one statement per ";\n" so no SQL parser is needed.
func splitStatements(src string) []string {
	var out []string
	for _, part := range strings.Split(src, ";\n") {
		lines := []string{}
		for _, l := range strings.Split(part, "\n") {
			if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "--") {
				lines = append(lines, l)
			}
		}
		if stmt := strings.TrimSpace(strings.TrimSuffix(strings.Join(lines, "\n"), ";")); stmt != "" {
			out = append(out, stmt)
		}
	}
	return out
}

// SchemaVersion is the highest applied migration.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v sql.NullInt64
	err := s.read.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v)
	return int(v.Int64), err
}
