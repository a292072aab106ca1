package matrix

import (
	"regexp"
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

// ValidUserID reports whether userID is a compliant user ID (spec
// appendices: "Historical user IDs"): at most 255 bytes, a non-empty
// localpart of the characters U+0021 to U+007E, and a valid server name.
// Requests naming a user for a lookup use it; accounts already in rooms
// are not re-checked with it.
func ValidUserID(userID string) bool {
	if len(userID) > 255 {
		return false
	}
	localpart, server, ok := SplitUserID(userID)
	if !ok {
		return false
	}
	for i := 0; i < len(localpart); i++ {
		if localpart[i] < 0x21 || localpart[i] > 0x7e {
			return false
		}
	}
	return ValidServerName(server)
}

// serverNameRe is the spec's server name grammar (appendices: "Server
// Name"): a DNS name, an IPv4 address or a bracketed IPv6 address, with an
// optional port.
var serverNameRe = regexp.MustCompile(`^(\[[0-9A-Fa-f:.]{2,45}\]|[0-9]{1,3}(\.[0-9]{1,3}){3}|[A-Za-z0-9.-]{1,255})(:[0-9]{1,5})?$`)

// ValidServerName reports whether s follows the server name grammar.
func ValidServerName(s string) bool { return serverNameRe.MatchString(s) }
