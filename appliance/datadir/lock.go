// Package datadir guards a server's data directory: a running server holds
// an exclusive lock on hearth.lock next to its signing key, so a second
// server on the same data, or a restore over it, is refused instead of
// corrupting it.
package datadir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"hearth/config"
)

// LockName is the lock file's name, in the signing key's directory.
const LockName = "hearth.lock"

// ErrInUse is returned when another process holds the lock.
var ErrInUse = errors.New("the data directory is in use by a running Hearth")

// Lock is a held lock; Release lets it go (the kernel does too when the
// process exits, however it exits).
type Lock struct{ f *os.File }

// Path is where cfg's lock file lives.
func Path(cfg *config.Config) string {
	return filepath.Join(filepath.Dir(cfg.SigningKeyPath), LockName)
}

// Acquire takes the lock without waiting; ErrInUse (wrapped, naming the
// file) when another process has it.
func Acquire(cfg *config.Config) (*Lock, error) {
	p := Path(cfg)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data directory lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (%s is locked)", ErrInUse, p)
		}
		return nil, fmt.Errorf("data directory lock %s: %w", p, err)
	}
	// The holder's PID, for an operator looking at the file.
	_ = f.Truncate(0)
	_, _ = fmt.Fprintf(f, "%d\n", os.Getpid())
	return &Lock{f: f}, nil
}

// Release lets the lock go.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
