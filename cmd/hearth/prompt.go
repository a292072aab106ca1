package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
	"golang.org/x/term"
)

// prompter asks the operator for what the flags left out. Passwords are read
// without echo when stdin is a terminal; otherwise (a pipe, a test) lines
// are read as they come.
type prompter struct {
	in  *bufio.Reader
	out io.Writer
	fd  int
	tty bool
}

func newPrompter() *prompter {
	fd := int(os.Stdin.Fd())
	return &prompter{in: bufio.NewReader(os.Stdin), out: os.Stderr, fd: fd, tty: term.IsTerminal(fd)}
}

// line asks for one line of text.
func (p *prompter) line(question string) (string, error) {
	fmt.Fprint(p.out, question)
	s, err := p.in.ReadString('\n')
	if !p.tty {
		fmt.Fprintln(p.out) // the answer was not echoed: end the prompt's line
	}
	if err != nil && (err != io.EOF || s == "") {
		return "", fmt.Errorf("reading answer to %q: %w", strings.TrimSpace(question), err)
	}
	return strings.TrimRight(s, "\r\n"), nil
}

// secret asks for a line without echoing it.
func (p *prompter) secret(question string) (string, error) {
	if !p.tty {
		return p.line(question)
	}
	fmt.Fprint(p.out, question)
	b, err := term.ReadPassword(p.fd)
	fmt.Fprintln(p.out)
	if err != nil {
		return "", fmt.Errorf("reading password: %w", err)
	}
	return string(b), nil
}

// newPassword asks twice and insists the answers match and are not empty.
func (p *prompter) newPassword() (string, error) {
	pw, err := p.secret("Password: ")
	if err != nil {
		return "", err
	}
	if pw == "" {
		return "", errors.New("password must not be empty")
	}
	again, err := p.secret("Confirm password: ")
	if err != nil {
		return "", err
	}
	if pw != again {
		return "", errors.New("passwords do not match")
	}
	return pw, nil
}

// yesNo asks a y/N question; anything but y or yes is no.
func (p *prompter) yesNo(question string) (bool, error) {
	a, err := p.line(question + " [y/N]: ")
	if err != nil {
		return false, err
	}
	a = strings.ToLower(strings.TrimSpace(a))
	return a == "y" || a == "yes", nil
}

// cliConfig is the part of homeserver.yaml the offline commands read. It is
// decoded leniently, not through config.Load: these commands must also work
// on a Synapse file, or on one the server would reject for unrelated reasons.
type cliConfig struct {
	RegistrationSharedSecret     string `yaml:"registration_shared_secret"`
	RegistrationSharedSecretPath string `yaml:"registration_shared_secret_path"`
	BcryptRounds                 int    `yaml:"bcrypt_rounds"`
	Listeners                    []struct {
		Port      int    `yaml:"port"`
		Type      string `yaml:"type"`
		TLS       bool   `yaml:"tls"`
		Resources []struct {
			Names []string `yaml:"names"`
		} `yaml:"resources"`
	} `yaml:"listeners"`
}

func readCLIConfig(path string) (*cliConfig, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c cliConfig
	if err := yaml.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("%s is not valid YAML: %w", path, err)
	}
	return &c, nil
}

// sharedSecret returns registration_shared_secret, or the contents of the
// file registration_shared_secret_path names (Synapse allows either).
func (c *cliConfig) sharedSecret(path string) (string, error) {
	if c.RegistrationSharedSecret != "" {
		return c.RegistrationSharedSecret, nil
	}
	if c.RegistrationSharedSecretPath != "" {
		b, err := os.ReadFile(c.RegistrationSharedSecretPath)
		if err != nil {
			return "", fmt.Errorf("registration_shared_secret_path: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return "", fmt.Errorf("registration_shared_secret is not set in %s; shared-secret registration is disabled", path)
}

// clientURL is the address of the first listener serving the client API,
// as seen from this machine.
func (c *cliConfig) clientURL(path string) (string, error) {
	for _, l := range c.Listeners {
		if l.Type != "" && l.Type != "http" {
			continue
		}
		client := len(l.Resources) == 0
		for _, r := range l.Resources {
			for _, n := range r.Names {
				client = client || n == "client"
			}
		}
		if !client {
			continue
		}
		scheme := "http"
		if l.TLS {
			scheme = "https"
		}
		return fmt.Sprintf("%s://localhost:%d", scheme, l.Port), nil
	}
	if len(c.Listeners) == 0 {
		// config.Defaults' listener.
		return "http://localhost:8008", nil
	}
	return "", fmt.Errorf("listeners in %s has no http listener serving the client API; give the server URL as an argument", path)
}
