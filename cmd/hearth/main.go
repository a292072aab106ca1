// Command hearth is the whole homeserver: one binary with a few subcommands.
package main

import (
	"fmt"
	"os"
)

type command struct {
	name, usage string
	run         func(args []string) error
}

func commands() []command {
	return []command{
		{"serve", "serve --config-path FILE [--listen HOST:PORT]    run the homeserver", runServe},
		{"generate-config", "generate-config --server-name NAME --config-path FILE [--data-dir DIR] [--report-stats yes|no]", runGenerateConfig},
		{"register-user", "register-user -c FILE [--user U] [--password P] [--admin|--no-admin] [URL]", runRegisterUser},
		{"hash-password", "hash-password [--password P] [-c FILE]    print a bcrypt hash for users.password_hash", runHashPassword},
		{"doctor", "doctor [-c FILE] [--json]    check this server's DNS, certificates and federation from the outside", runDoctor},
		{"federation-test", "federation-test [-c FILE] [--json] SERVER_NAME    test federation with any server", runFederationTest},
		{"version", "version    print the version", runVersion},
		// Operations (backup.go, install.go).
		{"backup", "backup -c FILE --to FILE    snapshot database, media, signing key and config while serving", runBackup},
		{"restore", "restore -c FILE --from FILE [--force]    restore a backup into a stopped server's data", runRestore},
		{"install", "install --server-name NAME [--root DIR] [--user U] [--print-unit]    install as a hardened systemd service", runInstall},
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: hearth COMMAND [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintln(os.Stderr, "  "+c.usage)
	}
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	name := os.Args[1]
	if name == "-h" || name == "--help" || name == "help" {
		usage()
		return
	}
	for _, c := range commands() {
		if c.name == name {
			if err := c.run(os.Args[2:]); err != nil {
				fmt.Fprintln(os.Stderr, "hearth "+name+": "+err.Error())
				os.Exit(1)
			}
			return
		}
	}
	fmt.Fprintf(os.Stderr, "hearth: unknown command %q\n", name)
	usage()
	os.Exit(2)
}
