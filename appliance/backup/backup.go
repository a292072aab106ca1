// Package backup writes and restores a whole server as one archive: a
// consistent snapshot of the SQLite database (VACUUM INTO, taken while the
// server runs), the media store, the signing key and the config, with a
// SHA-256 of every file in a manifest. On PostgreSQL the archive holds
// everything but the database, and a note with the exact pg_dump and
// pg_restore commands for it.
//
// The archive is a gzipped tar:
//
//	config/homeserver.yaml   the config file as it was
//	signing.key              signing_key_path
//	database/homeserver.db   the SQLite snapshot (SQLite only)
//	database/POSTGRESQL.txt  the pg_dump note (PostgreSQL only)
//	media/...                media_store_path, without its tmp/ files
//	MANIFEST.json            last: what is in it, each file's size and SHA-256
//
// Restore verifies every checksum before it changes anything, and refuses
// to run while a server holds the data directory's lock.
package backup

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"hearth/config"
	"hearth/server/storage"
)

// Format is the archive layout's version.
const Format = 1

// Names inside the archive.
const (
	configName   = "config/homeserver.yaml"
	keyName      = "signing.key"
	databaseName = "database/homeserver.db"
	pgNoteName   = "database/POSTGRESQL.txt"
	mediaPrefix  = "media/"
	manifestName = "MANIFEST.json"
)

// Manifest describes an archive; it is its last entry.
type Manifest struct {
	Format     int    `json:"format"`
	Version    string `json:"hearth_version"`
	ServerName string `json:"server_name"`
	// Engine is "sqlite" or "postgres"; a postgres archive has no database.
	Engine    string          `json:"engine"`
	CreatedTS int64           `json:"created_ts"`
	Files     map[string]File `json:"files"`
}

// File is one archived file's size and SHA-256 (hex).
type File struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// MediaFiles counts the media files in the archive.
func (m *Manifest) MediaFiles() int {
	n := 0
	for name := range m.Files {
		if strings.HasPrefix(name, mediaPrefix) {
			n++
		}
	}
	return n
}

// HasDatabase reports whether the archive holds a database snapshot.
func (m *Manifest) HasDatabase() bool { _, ok := m.Files[databaseName]; return ok }

// Options are what Write needs beyond the config.
type Options struct {
	Version string
	Now     func() time.Time
	// Engine ("sqlite" or "postgres") and SQLitePath name the database to
	// back up when it is not the config's (a running server passes its
	// store's); empty: the config's.
	Engine, SQLitePath string
}

// Write writes a backup of the server cfg describes to w. It is safe while
// the server runs: the database is snapshotted first, then the media
// store is copied, so every media row in the snapshot has its file (an
// upload after the snapshot only adds a file no row names).
func Write(ctx context.Context, cfg *config.Config, w io.Writer, o Options) (*Manifest, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Engine == "" {
		o.Engine, o.SQLitePath = "sqlite", cfg.Database.Args.Database
		if cfg.IsPostgres() {
			o.Engine, o.SQLitePath = "postgres", ""
		}
	}
	m := &Manifest{Format: Format, Version: o.Version, ServerName: cfg.ServerName, Engine: o.Engine,
		CreatedTS: o.Now().UnixMilli(), Files: map[string]File{}}
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	add := func(name string, r io.Reader, size int64, mode fs.FileMode, mtime time.Time) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Size: size, Mode: int64(mode.Perm()), ModTime: mtime, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		h := sha256.New()
		n, err := io.Copy(io.MultiWriter(tw, h), r)
		if err != nil {
			return fmt.Errorf("backup: %s: %w", name, err)
		}
		if n != size {
			return fmt.Errorf("backup: %s changed size while being read", name)
		}
		m.Files[name] = File{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}
		return nil
	}
	addFile := func(name, p string) error {
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		return add(name, f, st.Size(), st.Mode(), st.ModTime())
	}
	addBytes := func(name string, b []byte) error {
		return add(name, strings.NewReader(string(b)), int64(len(b)), 0o600, o.Now())
	}

	// The database first (see above).
	if o.Engine == "postgres" {
		if err := addBytes(pgNoteName, []byte(PostgresNote(cfg))); err != nil {
			return nil, err
		}
	} else {
		if _, err := os.Stat(o.SQLitePath); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("backup: there is no database at %s yet: start the server once first", o.SQLitePath)
		}
		tmp, err := os.MkdirTemp(filepath.Dir(o.SQLitePath), ".hearth-backup-*")
		if err != nil {
			return nil, fmt.Errorf("backup: %w", err)
		}
		defer os.RemoveAll(tmp)
		snap := filepath.Join(tmp, "homeserver.db")
		if err := storage.SnapshotSQLite(ctx, o.SQLitePath, snap); err != nil {
			return nil, fmt.Errorf("backup: %w", err)
		}
		if err := addFile(databaseName, snap); err != nil {
			return nil, err
		}
	}
	if p := cfg.Path(); p != "" {
		if err := addFile(configName, p); err != nil {
			return nil, err
		}
	}
	if err := addFile(keyName, cfg.SigningKeyPath); err != nil {
		return nil, err
	}
	if err := addMedia(ctx, cfg.MediaStorePath, addFile); err != nil {
		return nil, err
	}
	raw, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := tw.WriteHeader(&tar.Header{Name: manifestName, Size: int64(len(raw)), Mode: 0o600, ModTime: o.Now(), Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(raw); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return m, nil
}

// addMedia archives the media store's files, in a stable order. Upload
// temporaries (tmp/, .tmp-*) are left out; a file deleted while the walk
// runs is skipped.
func addMedia(ctx context.Context, root string, addFile func(name, p string) error) error {
	if _, err := os.Stat(root); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return fmt.Errorf("backup: media: %w", err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			if rel == "tmp" {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || strings.HasPrefix(d.Name(), ".tmp-") {
			return nil
		}
		err = addFile(mediaPrefix+filepath.ToSlash(rel), p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	})
}

// PostgresNote is the text an operator needs to back up and restore a
// PostgreSQL database: the exact commands for this config's database. The
// password is not written out: pg_dump reads it from PGPASSWORD or
// ~/.pgpass.
func PostgresNote(cfg *config.Config) string {
	dsn := redactedDSN(cfg)
	return fmt.Sprintf(`This backup holds Hearth's config, signing key and media store, but not its
PostgreSQL database. Back the database up with pg_dump, which takes a
consistent snapshot while Hearth runs:

    pg_dump --format=custom --no-owner --dbname='%[1]s' --file=hearth.pgdump

and restore it, into an empty database, before starting Hearth:

    pg_restore --no-owner --exit-on-error --dbname='%[1]s' hearth.pgdump

Set PGPASSWORD (or use ~/.pgpass) if the database needs a password.
`, dsn)
}

// redactedDSN is the config's PostgreSQL connection as a URL without its
// password.
func redactedDSN(cfg *config.Config) string {
	a := cfg.Database.Args
	if a.DSN != "" {
		if u, err := url.Parse(a.DSN); err == nil && u.Scheme != "" {
			if u.User != nil {
				u.User = url.User(u.User.Username())
			}
			return u.String()
		}
		return "(the dsn in database.args, without its password)"
	}
	u := url.URL{Scheme: "postgres", Host: a.Host, Path: "/" + a.Database}
	if u.Host == "" {
		u.Host = "localhost"
	}
	if a.Port != 0 {
		u.Host = fmt.Sprintf("%s:%d", u.Host, a.Port)
	}
	if a.User != "" {
		u.User = url.User(a.User)
	}
	return u.String()
}

// ReadManifest reads an archive through and returns its manifest, having
// checked every file against it (hearth restore --check, and the tests).
func ReadManifest(r io.Reader) (*Manifest, error) {
	return extract(r, func(string, fs.FileMode) (io.WriteCloser, error) { return nopWriter{}, nil })
}

type nopWriter struct{}

func (nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (nopWriter) Close() error                { return nil }

// extract reads the archive, hands each file's bytes to open(name), checks
// them against the manifest at the end, and returns it. Names are checked
// before open sees them: no absolute paths, no "..", only the known tops.
func extract(r io.Reader, open func(name string, mode fs.FileMode) (io.WriteCloser, error)) (*Manifest, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("restore: not a Hearth backup (gzip: %w)", err)
	}
	tr := tar.NewReader(gz)
	got := map[string]File{}
	var m *Manifest
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("restore: reading the archive: %w", err)
		}
		if m != nil {
			return nil, fmt.Errorf("restore: %s after the manifest", h.Name)
		}
		if h.Typeflag != tar.TypeReg {
			return nil, fmt.Errorf("restore: %s is not a regular file", h.Name)
		}
		if h.Name == manifestName {
			m = &Manifest{}
			if err := json.NewDecoder(io.LimitReader(tr, 64<<20)).Decode(m); err != nil {
				return nil, fmt.Errorf("restore: manifest: %w", err)
			}
			continue
		}
		if err := checkName(h.Name); err != nil {
			return nil, err
		}
		if _, dup := got[h.Name]; dup {
			return nil, fmt.Errorf("restore: %s appears twice", h.Name)
		}
		w, err := open(h.Name, fs.FileMode(h.Mode).Perm())
		if err != nil {
			return nil, err
		}
		hs := sha256.New()
		n, err := io.Copy(io.MultiWriter(w, hs), tr)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("restore: %s: %w", h.Name, err)
		}
		got[h.Name] = File{Size: n, SHA256: hex.EncodeToString(hs.Sum(nil))}
	}
	if m == nil {
		return nil, errors.New("restore: the archive has no manifest (cut short?)")
	}
	if m.Format != Format {
		return nil, fmt.Errorf("restore: archive format %d; this Hearth reads format %d", m.Format, Format)
	}
	var bad []string
	for name, f := range m.Files {
		if g, ok := got[name]; !ok {
			bad = append(bad, name+": missing")
		} else if g != f {
			bad = append(bad, name+": checksum mismatch")
		}
	}
	for name := range got {
		if _, ok := m.Files[name]; !ok {
			bad = append(bad, name+": not in the manifest")
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		if len(bad) > 5 {
			bad = append(bad[:5], fmt.Sprintf("and %d more", len(bad)-5))
		}
		return nil, fmt.Errorf("restore: the archive is damaged: %s", strings.Join(bad, "; "))
	}
	return m, nil
}

func checkName(name string) error {
	clean := path.Clean(name)
	if clean != name || path.IsAbs(name) || strings.HasPrefix(name, "../") || name == ".." || strings.Contains(name, "\\") {
		return fmt.Errorf("restore: unsafe name %q in the archive", name)
	}
	switch {
	case name == configName, name == keyName, name == databaseName, name == pgNoteName:
	case strings.HasPrefix(name, mediaPrefix) && len(name) > len(mediaPrefix):
	default:
		return fmt.Errorf("restore: unexpected file %q in the archive", name)
	}
	return nil
}
