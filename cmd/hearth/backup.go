package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"hearth/appliance/backup"
	"hearth/config"
	"hearth/server"
)

// hearth backup -c FILE --to FILE
func runBackup(args []string) error {
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	var path, to string
	fs.StringVar(&path, "config-path", "", "homeserver.yaml of the server to back up")
	fs.StringVar(&path, "c", "", "shorthand for --config-path")
	fs.StringVar(&to, "to", "", "the archive to write (.tar.gz); must not exist")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if path == "" || to == "" {
		return errors.New("usage: hearth backup -c FILE --to FILE")
	}
	cfg, _, err := config.Load(path)
	if err != nil {
		return err
	}
	if _, err := os.Stat(to); err == nil {
		return fmt.Errorf("%s already exists; choose another name", to)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Written beside the target and renamed at the end, so a cut-short
	// backup never has the final name.
	tmp, err := os.CreateTemp(filepath.Dir(to), ".hearth-backup-*.partial")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	m, err := backup.Write(ctx, cfg, io.MultiWriter(tmp, h), backup.Options{Version: server.Version})
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), to); err != nil {
		return err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	// sha256sum's format, so `sha256sum -c FILE.sha256` checks the archive.
	if err := os.WriteFile(to+".sha256", []byte(sum+"  "+filepath.Base(to)+"\n"), 0o600); err != nil {
		return err
	}
	fmt.Printf("wrote %s (sha256 %s)\n", to, sum)
	fmt.Printf("  %s, %s database, %d media files, signing key, config\n", m.ServerName, m.Engine, m.MediaFiles())
	if !m.HasDatabase() {
		fmt.Println()
		fmt.Print(backup.PostgresNote(cfg))
	}
	return nil
}

// hearth restore -c FILE --from FILE [--force]
func runRestore(args []string) error {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	var path, from string
	var force bool
	fs.StringVar(&path, "config-path", "", "homeserver.yaml to restore into (written from the backup if it does not exist)")
	fs.StringVar(&path, "c", "", "shorthand for --config-path")
	fs.StringVar(&from, "from", "", "the archive hearth backup wrote")
	fs.BoolVar(&force, "force", false, "move existing data aside (renamed, not deleted) instead of refusing")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if path == "" || from == "" {
		return errors.New("usage: hearth restore -c FILE --from FILE [--force]")
	}
	f, err := os.Open(from)
	if err != nil {
		return err
	}
	defer f.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := backup.Restore(ctx, f, backup.RestoreOptions{ConfigPath: path, Force: force})
	if err != nil {
		return err
	}
	m := res.Manifest
	fmt.Printf("restored %s from %s (taken by hearth %s)\n", m.ServerName, from, m.Version)
	if res.WroteConfig {
		fmt.Printf("  config written to %s\n", path)
	}
	for _, p := range res.MovedAside {
		fmt.Printf("  moved the existing %s aside\n", p)
	}
	fmt.Printf("  %d media files, signing key", m.MediaFiles())
	if m.HasDatabase() {
		fmt.Printf(", database %s", res.Config.Database.Args.Database)
	}
	fmt.Println()
	if res.PostgresNote != "" {
		fmt.Println()
		fmt.Print(res.PostgresNote)
	}
	return nil
}
