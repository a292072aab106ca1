package matrix

import (
	"strings"
)

// ValidateLocalpart checks a localpart for a new account against the
// spec's user ID grammar ("Historical user IDs" are not allowed for new
// accounts): a-z, 0-9, and . _ = - / +, non-empty, and the whole user ID at
// most 255 bytes.
func ValidateLocalpart(localpart, serverName string) *Error {
	if localpart == "" {
		return InvalidUsername("user ID cannot be empty")
	}
	for _, c := range localpart {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case strings.ContainsRune("._=-/+", c):
		default:
			return InvalidUsername("user ID may contain only a-z, 0-9 and . _ = - / +")
		}
	}
	if len("@"+localpart+":"+serverName) > 255 {
		return InvalidUsername("user ID is longer than 255 bytes")
	}
	return nil
}

// SplitUserID splits "@localpart:server" into its parts.
func SplitUserID(userID string) (localpart, server string, ok bool) {
	if !strings.HasPrefix(userID, "@") {
		return "", "", false
	}
	localpart, server, ok = strings.Cut(userID[1:], ":")
	if !ok || localpart == "" || server == "" {
		return "", "", false
	}
	return localpart, server, true
}

// UserID joins a localpart and a server name.
func UserID(localpart, serverName string) string { return "@" + localpart + ":" + serverName }
