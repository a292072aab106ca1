// Package certs provides the TLS certificates Hearth's listeners serve:
// files (tls_certificate_path, read again when they change) or ACME
// (golang.org/x/crypto/acme/autocert, with its state in the database), and
// what the dashboard shows about them.
package certs

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Files serves a certificate and key read from PEM files, and reads them
// again when either changes (a renewal by certbot, a new deployment), so
// no restart is needed. A pair that fails to load (half-written, or a
// key that does not match) is logged and the previous one kept.
type Files struct {
	certPath, keyPath string
	log               *slog.Logger
	// CheckEvery bounds how often the files are looked at (stat only);
	// handshakes in between use the loaded pair.
	CheckEvery time.Duration

	mu        sync.Mutex
	cert      *tls.Certificate
	stamp     [2]fileStamp
	checked   time.Time
	lastError error
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// LoadFiles loads the pair once; an error here stops the start.
func LoadFiles(certPath, keyPath string, log *slog.Logger) (*Files, error) {
	f := &Files{certPath: certPath, keyPath: keyPath, log: log, CheckEvery: 2 * time.Second}
	st, err := f.stamps()
	if err != nil {
		return nil, fmt.Errorf("tls_certificate_path / tls_private_key_path: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("tls_certificate_path / tls_private_key_path: %w", err)
	}
	f.cert, f.stamp, f.checked = &cert, st, time.Now()
	return f, nil
}

func (f *Files) stamps() ([2]fileStamp, error) {
	var out [2]fileStamp
	for i, p := range []string{f.certPath, f.keyPath} {
		fi, err := os.Stat(p)
		if err != nil {
			return out, err
		}
		out[i] = fileStamp{mod: fi.ModTime(), size: fi.Size()}
	}
	return out, nil
}

// GetCertificate is a tls.Config hook: the current pair, reloaded first
// when the files changed.
func (f *Files) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now := time.Now(); now.Sub(f.checked) >= f.CheckEvery {
		f.checked = now
		f.reload()
	}
	return f.cert, nil
}

// reload reads the pair again if the files changed; f.mu is held.
func (f *Files) reload() {
	st, err := f.stamps()
	if err != nil {
		f.fail(err)
		return
	}
	if st == f.stamp {
		return
	}
	cert, err := tls.LoadX509KeyPair(f.certPath, f.keyPath)
	if err != nil {
		// Often the certificate is written before the key: try again at
		// the next check, keeping the stamps so a change is seen.
		f.fail(err)
		return
	}
	f.cert, f.stamp, f.lastError = &cert, st, nil
	f.log.Info("TLS certificate reloaded", "file", f.certPath)
}

func (f *Files) fail(err error) {
	if f.lastError == nil || f.lastError.Error() != err.Error() {
		f.log.Warn("TLS certificate files changed but cannot be loaded; still serving the previous certificate", "err", err)
	}
	f.lastError = err
}

// current returns the pair in use and the last reload error.
func (f *Files) current() (*tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cert, f.lastError
}
