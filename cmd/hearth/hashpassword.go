package main

import (
	"flag"
	"fmt"

	"hearth/server/secret"
)

// runHashPassword prints a bcrypt hash, for setting users.password_hash by
// hand (Synapse's hash_password does the same).
func runHashPassword(args []string) error {
	fs := flag.NewFlagSet("hash-password", flag.ContinueOnError)
	var password, cfgPath string
	fs.StringVar(&password, "password", "", "the password to hash (prompted twice when missing)")
	fs.StringVar(&password, "p", "", "same as --password")
	fs.StringVar(&cfgPath, "c", "", "homeserver.yaml whose bcrypt_rounds sets the cost (default 12)")
	fs.StringVar(&cfgPath, "config-path", "", "same as -c")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	cost := 12
	if cfgPath != "" {
		cfg, err := readCLIConfig(cfgPath)
		if err != nil {
			return err
		}
		if cfg.BcryptRounds != 0 {
			cost = cfg.BcryptRounds
		}
	}
	if cost < 4 || cost > 31 {
		return fmt.Errorf("bcrypt_rounds in %s: %d is outside bcrypt's range 4-31", cfgPath, cost)
	}
	if password == "" {
		var err error
		if password, err = newPrompter().newPassword(); err != nil {
			return err
		}
	}
	h, err := secret.HashPassword(password, cost)
	if err != nil {
		return err
	}
	fmt.Println(h)
	return nil
}
