package federation

import (
	"fmt"
	"strings"
	"testing"
)

func TestParseServerName(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // Host|Port|IP, or "" for invalid
	}{
		{"example.org", "example.org|0|invalid IP"},
		{"example.org:8448", "example.org|8448|invalid IP"},
		{"matrix-1.example.org.", "matrix-1.example.org.|0|invalid IP"},
		{"1.2.3.4", "1.2.3.4|0|1.2.3.4"},
		{"1.2.3.4:1", "1.2.3.4|1|1.2.3.4"},
		{"[::1]", "::1|0|::1"},
		{"[2001:db8::1]:65535", "2001:db8::1|65535|2001:db8::1"},
		{"[::ffff:1.2.3.4]:80", "::ffff:1.2.3.4|80|::ffff:1.2.3.4"},
		{"", ""}, {":8448", ""}, {"example.org:", ""}, {"example.org:0", ""}, {"example.org:65536", ""},
		{"example.org:123456", ""}, {"example.org:-1", ""}, {"exa mple.org", ""}, {"ex_ample.org", ""},
		{"example.org/path", ""}, {"[::1", ""}, {"[::1]x", ""}, {"[1.2.3.4]", ""}, {"[fe80::1%eth0]", ""},
		{"::1", ""}, {"999.1.1.1", ""}, {"[::1]:", ""}, {strings.Repeat("a", 256), ""}, {"user@example.org", ""},
	} {
		sn, err := ParseServerName(tc.in)
		got := ""
		if err == nil {
			got = fmt.Sprintf("%s|%d|%v", sn.Host, sn.Port, sn.IP)
			if sn.String() != tc.in {
				t.Errorf("ParseServerName(%q).String() = %q", tc.in, sn.String())
			}
		}
		if got != tc.want {
			t.Errorf("ParseServerName(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
