package main

import (
	"flag"
	"fmt"

	"hearth/config"
)

// runGenerateConfig writes a new homeserver.yaml and signing key.
func runGenerateConfig(args []string) error {
	fs := flag.NewFlagSet("generate-config", flag.ContinueOnError)
	var o config.GenerateOptions
	var reportStats string
	fs.StringVar(&o.ServerName, "server-name", "", "the domain in your users' IDs (server_name), e.g. example.org")
	fs.StringVar(&o.ConfigPath, "config-path", "", "the homeserver.yaml to create")
	fs.StringVar(&o.ConfigPath, "c", "", "shorthand for --config-path")
	fs.StringVar(&o.DataDir, "data-dir", "", "where the database, media and signing key go (default: the config file's directory)")
	fs.StringVar(&reportStats, "report-stats", "no", "report_stats: yes or no")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch reportStats {
	case "yes":
		o.ReportStats = true
	case "no":
	default:
		return fmt.Errorf("--report-stats must be yes or no, not %q", reportStats)
	}
	if o.ConfigPath == "" {
		return fmt.Errorf("--config-path is required")
	}
	g, err := config.Generate(o)
	if err != nil {
		return err
	}
	fmt.Printf("Wrote %s\nWrote signing key %s\nData directory: %s\n\nStart the server with:\n  hearth serve --config-path %s\n",
		g.ConfigPath, g.SigningKeyPath, g.DataDir, o.ConfigPath)
	return nil
}
