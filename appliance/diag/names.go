package diag

import (
	"crypto/ed25519"
	"crypto/tls"
	"encoding/base64"
	"fmt"
)

func versionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "1.0"
	case tls.VersionTLS11:
		return "1.1"
	case tls.VersionTLS12:
		return "1.2"
	case tls.VersionTLS13:
		return "1.3"
	}
	return fmt.Sprintf("0x%04x", v)
}

func tlsCipherName(id uint16) string { return tls.CipherSuiteName(id) }

func b64(pub any) string {
	if k, ok := pub.(ed25519.PublicKey); ok {
		return base64.RawStdEncoding.EncodeToString(k)
	}
	return ""
}
