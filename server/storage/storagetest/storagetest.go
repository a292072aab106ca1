// Package storagetest runs a test once per storage engine: always on SQLite,
// and on PostgreSQL when HEARTH_TEST_POSTGRES names a server. Each
// PostgreSQL run gets a schema of its own, dropped when the test ends.
package storagetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hearth/server/storage"
)

// EnvPostgres names the variable holding the PostgreSQL test URL.
const EnvPostgres = "HEARTH_TEST_POSTGRES"

// Engine describes how to open one backend for a test.
type Engine struct {
	Name string
	// Options opens this engine's fresh database for the test.
	Options storage.Options
}

// Each runs fn as a parallel subtest per engine, and makes t a parallel
// test: most of a test's time is spent waiting (on commits, timeouts,
// the other server of a federation test), so tests of both engines run
// side by side, as many at once as go test's -parallel (by default the
// number of cores). A test that changes what the whole process shares
// cannot use it.
func Each(t *testing.T, fn func(t *testing.T, e Engine)) {
	t.Helper()
	t.Parallel()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		fn(t, Engine{Name: "sqlite", Options: storage.Options{SQLitePath: filepath.Join(t.TempDir(), "hearth.db")}})
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := os.Getenv(EnvPostgres)
		if dsn == "" {
			t.Skip("PostgreSQL run skipped: " + EnvPostgres + " is not set (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)")
		}
		t.Parallel()
		fn(t, Engine{Name: "postgres", Options: storage.Options{Postgres: FreshSchema(t, dsn), MaxConns: 8}})
	})
}

// EachStore is Each with the store already opened and migrated.
func EachStore(t *testing.T, fn func(t *testing.T, st *storage.Store)) {
	t.Helper()
	Each(t, func(t *testing.T, e Engine) {
		fn(t, Open(t, e))
	})
}

// Open opens the engine's store, closing it when the test ends.
func Open(t *testing.T, e Engine) *storage.Store {
	t.Helper()
	st, err := storage.Open(context.Background(), e.Options)
	if err != nil {
		t.Fatalf("open %s store: %v", e.Name, err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// FreshSchema creates an empty schema and returns a DSN whose search_path
// points at it; the schema is dropped at cleanup. The connection that
// makes it is closed at once and another opened to drop it: tests run in
// parallel, and one held per schema counted against PostgreSQL's
// max_connections for every test's whole run.
func FreshSchema(t testing.TB, dsn string) string {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	schema := "t_" + strings.ToLower(hex.EncodeToString(b))
	if err := adminExec(dsn, `CREATE SCHEMA `+schema); err != nil {
		t.Fatalf("postgres: create schema (is %s=%q reachable?): %v", EnvPostgres, dsn, err)
	}
	t.Cleanup(func() { _ = adminExec(dsn, `DROP SCHEMA `+schema+` CASCADE`) })
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		return dsn + " search_path=" + schema
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// adminExec runs one statement on a connection of its own.
func adminExec(dsn, stmt string) error {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.Exec(stmt)
	return err
}

// Another returns an engine of e's kind on a database of its own: for tests
// that run several servers, each with its own store.
func Another(t testing.TB, e Engine) Engine {
	t.Helper()
	if e.Name == "postgres" {
		return Engine{Name: "postgres", Options: storage.Options{Postgres: FreshSchema(t, os.Getenv(EnvPostgres)), MaxConns: e.Options.MaxConns}}
	}
	return Engine{Name: e.Name, Options: storage.Options{SQLitePath: filepath.Join(t.TempDir(), "hearth.db")}}
}
