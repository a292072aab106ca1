package main

import "errors"

// Placeholders replaced by the CLI work (generate-config, register-user,
// hash-password); this file must be gone before issue 2 closes.

func runGenerateConfig(args []string) error { return errors.New("not implemented yet") }
func runRegisterUser(args []string) error   { return errors.New("not implemented yet") }
func runHashPassword(args []string) error   { return errors.New("not implemented yet") }
