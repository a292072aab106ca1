package main

import (
	"flag"
	"os"

	"hearth/appliance/install"
)

// hearth install [--root DIR] --server-name NAME [paths]
func runInstall(args []string) error {
	fs := flag.NewFlagSet("install", flag.ContinueOnError)
	var o install.Options
	fs.StringVar(&o.Root, "root", "", "write everything under DIR and change nothing else on this machine (images, tests)")
	fs.StringVar(&o.ServerName, "server-name", "", "the server name for a new config (the domain in users' IDs)")
	fs.StringVar(&o.User, "user", "hearth", "the system user the service runs as")
	fs.StringVar(&o.BinDir, "bin-dir", "/usr/local/bin", "where the binary goes")
	fs.StringVar(&o.ConfigDir, "config-dir", "/etc/hearth", "where homeserver.yaml goes")
	fs.StringVar(&o.DataDir, "data-dir", "/var/lib/hearth", "the database, media store and signing key")
	printUnit := fs.Bool("print-unit", false, "print the systemd unit for these paths and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *printUnit {
		unit, err := install.Unit(o)
		if err != nil {
			return err
		}
		_, err = os.Stdout.Write(unit)
		return err
	}
	o.Log = os.Stdout
	_, err := install.Install(o)
	return err
}
