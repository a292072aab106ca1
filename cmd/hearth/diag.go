package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"strings"
	"time"

	"hearth/appliance/diag"
	"hearth/config"
)

// errProblems is the exit status of a check that found problems (the
// findings are already printed).
var errProblems = errors.New("problems found (see above)")

// diagFlags are the flags doctor and federation-test share.
type diagFlags struct {
	path, dnsServer string
	json            bool
}

func (d *diagFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.path, "config-path", "", "homeserver.yaml: its CA list, IP range rules, trusted key servers and signing key apply")
	fs.StringVar(&d.path, "c", "", "shorthand for --config-path")
	fs.BoolVar(&d.json, "json", false, "print the report as JSON")
	fs.StringVar(&d.dnsServer, "dns-server", "", "ask this DNS server (IP[:port]) instead of /etc/resolv.conf's")
}

func (d *diagFlags) tester(needConfig bool) (*diag.Tester, *config.Config, error) {
	var cfg *config.Config
	if d.path != "" {
		c, _, err := config.Load(d.path)
		if err != nil {
			return nil, nil, err
		}
		cfg = c
	} else if needConfig {
		// make run's config, when run from the work tree.
		c, _, err := config.Load("homeserver.yaml")
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, errors.New("-c FILE is required: the doctor checks the server that config describes (no homeserver.yaml here)")
		}
		if err != nil {
			return nil, nil, err
		}
		cfg = c
	}
	o := diag.Options{Config: cfg}
	if d.dnsServer != "" {
		o.DNSServers = []string{d.dnsServer}
	}
	t, err := diag.New(o)
	return t, cfg, err
}

func diagContext() (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	return ctx, func() { cancel(); stop() }
}

// hearth doctor [-c FILE] [--json]; without -c, ./homeserver.yaml
func runDoctor(args []string) error {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	var f diagFlags
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	t, _, err := f.tester(true)
	if err != nil {
		return err
	}
	defer t.Close()
	ctx, cancel := diagContext()
	defer cancel()
	d, err := t.Doctor(ctx)
	if err != nil {
		return err
	}
	if f.json {
		if err := writeJSON(os.Stdout, d); err != nil {
			return err
		}
	} else {
		fmt.Printf("hearth doctor: %s\n\n", d.ServerName)
		printFindings(os.Stdout, d.All())
		if d.Federation != nil {
			fmt.Println("\n" + d.Federation.Verdict)
		}
	}
	if !d.OK {
		return errProblems
	}
	return nil
}

// hearth federation-test [-c FILE] [--json] SERVER_NAME
func runFederationTest(args []string) error {
	fs := flag.NewFlagSet("federation-test", flag.ContinueOnError)
	var f diagFlags
	f.register(fs)
	// Flags may come after the server name too.
	var name string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		if name != "" {
			return errors.New("give one server name")
		}
		name, args = fs.Arg(0), fs.Args()[1:]
	}
	if name == "" {
		return errors.New("usage: hearth federation-test [-c FILE] [--json] SERVER_NAME")
	}
	t, _, err := f.tester(false)
	if err != nil {
		return err
	}
	defer t.Close()
	ctx, cancel := diagContext()
	defer cancel()
	r := t.FederationTest(ctx, name)
	if f.json {
		if err := writeJSON(os.Stdout, r); err != nil {
			return err
		}
	} else {
		fmt.Printf("hearth federation-test: %s\n\n", name)
		if r.Resolution != nil {
			for _, s := range r.Resolution.Trace {
				fmt.Println("  " + s)
			}
			fmt.Println()
		}
		printFindings(os.Stdout, r.Findings)
		fmt.Println("\n" + r.Verdict)
	}
	if !r.FederationOK {
		return errProblems
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

var statusMark = map[diag.Status]string{diag.OK: "ok  ", diag.Info: "info", diag.Warn: "WARN", diag.Fail: "FAIL"}

// printFindings writes one finding a line, with what to do indented below.
func printFindings(w io.Writer, fs []diag.Finding) {
	for _, f := range fs {
		subject := ""
		if f.Subject != "" {
			subject = " [" + f.Subject + "]"
		}
		fmt.Fprintf(w, "%s %s%s: %s\n", statusMark[f.Status], f.Check, subject, f.Message)
		if f.Fix != "" && f.Status != diag.OK {
			fmt.Fprintf(w, "     → %s\n", strings.TrimSpace(f.Fix))
		}
	}
}
