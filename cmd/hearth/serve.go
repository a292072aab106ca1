package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"hearth/appliance"
	"hearth/config"
	"hearth/server"
)

func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var path, listen string
	fs.StringVar(&path, "config-path", "", "homeserver.yaml to read")
	fs.StringVar(&path, "c", "", "shorthand for --config-path")
	fs.StringVar(&listen, "listen", "", "override the client listener's address (HOST:PORT)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if path == "" {
		return fmt.Errorf("--config-path is required (create one with: hearth generate-config)")
	}
	// First, before anything is opened: this may execute the binary again
	// (timerslack_linux.go).
	slack, err := timerSlackWanted()
	if err != nil {
		return err
	}
	slackErr := widenTimerSlack(slack)
	cfg, warnings, err := config.Load(path)
	log := newLogger(cfg)
	for _, w := range warnings {
		log.Warn(w)
	}
	if slackErr != nil {
		log.Warn("running with the kernel's timer slack", "err", slackErr)
	}
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if addr := os.Getenv(pprofEnv); addr != "" {
		if err := servePprof(addr, log); err != nil {
			return err
		}
	}
	return appliance.Run(ctx, cfg, appliance.Options{Listen: listen, Log: log})
}

func newLogger(cfg *config.Config) *slog.Logger {
	level := slog.LevelInfo
	if cfg != nil {
		switch cfg.LogLevel {
		case "debug":
			level = slog.LevelDebug
		case "warn", "warning":
			level = slog.LevelWarn
		case "error":
			level = slog.LevelError
		}
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

func runVersion(args []string) error {
	fmt.Println("hearth " + server.Version)
	return nil
}
