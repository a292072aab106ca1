package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"hearth/appliance/datadir"
	"hearth/config"
)

// RestoreOptions say where to restore to.
type RestoreOptions struct {
	// ConfigPath is the config to restore into. When the file exists its
	// paths are used (a new machine's layout); when it does not, the
	// archived config is written there and its paths are used.
	ConfigPath string
	// Force moves existing data out of the way (renamed to
	// NAME.before-restore-TIMESTAMP, never deleted) instead of refusing.
	Force bool
	Now   func() time.Time
}

// Restored says what Restore did.
type Restored struct {
	Manifest *Manifest
	Config   *config.Config
	// WroteConfig: the archived config was written to ConfigPath.
	WroteConfig bool
	// MovedAside are the existing files and directories Force renamed.
	MovedAside []string
	// PostgresNote is set when the archive came from PostgreSQL: the
	// database must be restored with pg_restore as it says.
	PostgresNote string
}

// Restore reads an archive written by Write and puts its files where the
// config says. Every checksum is verified before anything is changed;
// while the data directory's lock is held by a running server it refuses,
// and it holds that lock itself until done, so no server starts on
// half-restored data.
func Restore(ctx context.Context, r io.Reader, o RestoreOptions) (*Restored, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ConfigPath == "" {
		return nil, errors.New("restore: a config path is required")
	}
	cfgDir := filepath.Dir(o.ConfigPath)
	if err := os.MkdirAll(cfgDir, 0o700); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	staging, err := os.MkdirTemp(cfgDir, ".hearth-restore-*")
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	defer os.RemoveAll(staging)
	m, err := extract(r, func(name string, mode fs.FileMode) (io.WriteCloser, error) {
		p := filepath.Join(staging, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return nil, err
		}
		return os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode|0o600)
	})
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	staged := func(name string) string { return filepath.Join(staging, filepath.FromSlash(name)) }
	out := &Restored{Manifest: m}

	// The config: the one at ConfigPath, or the archived one written there.
	if _, err := os.Stat(o.ConfigPath); errors.Is(err, fs.ErrNotExist) {
		if _, ok := m.Files[configName]; !ok {
			return nil, fmt.Errorf("restore: %s does not exist and the archive has no config", o.ConfigPath)
		}
		if err := moveFile(staged(configName), o.ConfigPath); err != nil {
			return nil, fmt.Errorf("restore: config: %w", err)
		}
		out.WroteConfig = true
	}
	cfg, _, err := config.Load(o.ConfigPath)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	out.Config = cfg
	if cfg.ServerName != m.ServerName {
		return nil, fmt.Errorf("restore: the backup is of %s but %s is for %s", m.ServerName, o.ConfigPath, cfg.ServerName)
	}
	switch {
	case m.HasDatabase() && cfg.IsPostgres():
		return nil, errors.New("restore: the backup holds a SQLite database but the config uses PostgreSQL")
	case !m.HasDatabase() && !cfg.IsPostgres():
		return nil, errors.New("restore: the backup has no database (it was taken from PostgreSQL) but the config uses SQLite")
	}

	lock, err := datadir.Acquire(cfg)
	if errors.Is(err, datadir.ErrInUse) {
		return nil, fmt.Errorf("restore: refusing to overwrite a running server's data: %w; stop it first", err)
	}
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	defer lock.Release()

	// What is already there: refused, or moved aside with Force.
	var existing []string
	if m.HasDatabase() {
		db := cfg.Database.Args.Database
		for _, p := range []string{db, db + "-wal", db + "-shm"} {
			if _, err := os.Stat(p); err == nil {
				existing = append(existing, p)
			}
		}
	}
	if entries, err := os.ReadDir(cfg.MediaStorePath); err == nil && len(entries) > 0 {
		existing = append(existing, cfg.MediaStorePath)
	} else if err == nil {
		os.Remove(cfg.MediaStorePath) // empty: nothing to keep
	}
	if cur, err := os.ReadFile(cfg.SigningKeyPath); err == nil {
		want, _ := os.ReadFile(staged(keyName))
		if !bytes.Equal(cur, want) {
			existing = append(existing, cfg.SigningKeyPath)
		}
	}
	if len(existing) > 0 && !o.Force {
		return nil, fmt.Errorf("restore: refusing to overwrite existing data: %s (restore into a fresh data directory, or pass --force to move these aside)",
			strings.Join(existing, ", "))
	}
	suffix := ".before-restore-" + o.Now().UTC().Format("20060102T150405Z")
	for _, p := range existing {
		if err := os.Rename(p, p+suffix); err != nil {
			return nil, fmt.Errorf("restore: moving %s aside: %w", p, err)
		}
		out.MovedAside = append(out.MovedAside, p+suffix)
	}

	// Put everything in place.
	if m.HasDatabase() {
		if err := moveFile(staged(databaseName), cfg.Database.Args.Database); err != nil {
			return nil, fmt.Errorf("restore: database: %w", err)
		}
	} else {
		out.PostgresNote = PostgresNote(cfg)
	}
	if _, err := os.Stat(cfg.SigningKeyPath); errors.Is(err, fs.ErrNotExist) {
		if err := moveFile(staged(keyName), cfg.SigningKeyPath); err != nil {
			return nil, fmt.Errorf("restore: signing key: %w", err)
		}
	}
	if err := moveTree(staged(strings.TrimSuffix(mediaPrefix, "/")), cfg.MediaStorePath); err != nil {
		return nil, fmt.Errorf("restore: media: %w", err)
	}
	return out, nil
}

// moveFile renames src to dst, copying when they are on different file
// systems; dst's directory is created.
func moveFile(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	if err := os.Rename(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, st.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// moveTree moves every file under src to the same place under dst.
func moveTree(src, dst string) error {
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	if _, err := os.Stat(src); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		return moveFile(p, filepath.Join(dst, rel))
	})
}
