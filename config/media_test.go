package config

import (
	"net/netip"
	"strings"
	"testing"
)

func TestMediaConfig(t *testing.T) {
	c := &Config{ServerName: "example.org", SigningKeyPath: "k", Database: Database{Args: DatabaseArgs{Database: "db"}}}
	c.Defaults()
	if !c.AuthenticatedMediaOnly() || c.URLPreviewEnabled || c.MaxSpiderSize != 10<<20 {
		t.Fatalf("defaults: authenticated %v preview %v spider %d", c.AuthenticatedMediaOnly(), c.URLPreviewEnabled, c.MaxSpiderSize)
	}
	deny, allow := c.URLPreviewRanges()
	if len(allow) != 0 || len(deny) != len(DefaultURLPreviewBlacklist) {
		t.Fatalf("ranges: %d deny %d allow", len(deny), len(allow))
	}
	for _, ip := range []string{"10.1.2.3", "127.0.0.1", "169.254.169.254", "192.168.1.1", "::1", "fe80::1", "fd00::1", "224.0.0.1", "100.64.0.1"} {
		a := netip.MustParseAddr(ip)
		hit := false
		for _, p := range deny {
			hit = hit || p.Contains(a)
		}
		if !hit {
			t.Errorf("%s is not refused by default", ip)
		}
	}
	c.URLPreviewIPRangeBlacklist = []string{"8.8.8.0/24", "nonsense"}
	c.URLPreviewIPRangeWhitelist = []string{"127.0.0.1", "10.0.0.0/33"}
	c.MaxSpiderSize = -1
	err := c.Validate()
	for _, want := range []string{"url_preview_ip_range_blacklist[1]", "url_preview_ip_range_whitelist[1]", "max_spider_size"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want a message naming %s", err, want)
		}
	}
	if strings.Contains(err.Error(), "url_preview_ip_range_whitelist[0]") {
		t.Errorf("a single address is a valid whitelist entry: %v", err)
	}
}
