package federation

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// ServerName is a parsed server name (spec: Appendices, "Server Name"):
//
//	server_name = hostname [ ":" port ]
//	hostname    = IPv4address / "[" IPv6address "]" / dns-name
//
// The m.server value of a .well-known/matrix/server answer has the same
// grammar.
type ServerName struct {
	// Host is the hostname, or the IP literal without brackets.
	Host string
	// Port is the explicit port, 0 when the name has none.
	Port int
	// IP is the address when Host is an IP literal, invalid otherwise.
	IP netip.Addr
}

// ParseServerName checks s against the server name grammar.
func ParseServerName(s string) (ServerName, error) {
	bad := func(why string) (ServerName, error) {
		return ServerName{}, fmt.Errorf("%q is not a server name: %s", s, why)
	}
	host, portStr := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return bad("unclosed [")
		}
		host = s[1:end]
		switch rest := s[end+1:]; {
		case rest == "":
		case rest[0] == ':':
			portStr = rest[1:]
			if portStr == "" {
				return bad("empty port")
			}
		default:
			return bad("junk after ]")
		}
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.Is6() || ip.Zone() != "" || strings.Trim(host, "0123456789abcdefABCDEF:.") != "" {
			return bad("not an IPv6 address in [ ]")
		}
		sn := ServerName{Host: host, IP: ip}
		return withPort(sn, portStr, bad)
	}
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, portStr = s[:i], s[i+1:]
		if portStr == "" {
			return bad("empty port")
		}
	}
	if host == "" || len(host) > 255 {
		return bad("the hostname must be 1 to 255 characters")
	}
	for _, c := range host {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return bad(fmt.Sprintf("%q is not allowed in a hostname (letters, digits, - and . only)", c))
		}
	}
	sn := ServerName{Host: host}
	if looksIPv4(host) {
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.Is4() {
			return bad("not an IPv4 address")
		}
		sn.IP = ip
	}
	return withPort(sn, portStr, bad)
}

// looksIPv4 reports whether h has the shape of the grammar's IPv4address:
// four dot-separated groups of 1 to 3 digits.
func looksIPv4(h string) bool {
	parts := strings.Split(h, ".")
	if len(parts) != 4 {
		return false
	}
	for _, p := range parts {
		if len(p) < 1 || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

func withPort(sn ServerName, portStr string, bad func(string) (ServerName, error)) (ServerName, error) {
	if portStr == "" {
		return sn, nil
	}
	if len(portStr) > 5 || strings.Trim(portStr, "0123456789") != "" {
		return bad("the port must be 1 to 5 digits")
	}
	p, _ := strconv.Atoi(portStr)
	if p < 1 || p > 65535 {
		return bad("the port must be between 1 and 65535")
	}
	sn.Port = p
	return sn, nil
}

// HostPort is Host and Port as a dialable "host:port", with defaultPort
// when the name has none.
func (sn ServerName) HostPort(defaultPort int) string {
	p := sn.Port
	if p == 0 {
		p = defaultPort
	}
	return net.JoinHostPort(sn.Host, strconv.Itoa(p))
}

// String writes the name back in the grammar's form.
func (sn ServerName) String() string {
	h := sn.Host
	if sn.IP.Is6() {
		h = "[" + h + "]"
	}
	if sn.Port != 0 {
		return h + ":" + strconv.Itoa(sn.Port)
	}
	return h
}
