package config

import (
	"fmt"
	"strings"
	"testing"
)

func TestMediaConfig(t *testing.T) {
	c := &Config{ServerName: "example.org", SigningKeyPath: "k", Database: Database{Args: DatabaseArgs{Database: "db"}}}
	c.Defaults()
	if !c.AuthenticatedMediaOnly() || c.URLPreviewEnabled || c.MaxSpiderSize != 10<<20 {
		t.Fatalf("defaults: authenticated %v preview %v spider %d", c.AuthenticatedMediaOnly(), c.URLPreviewEnabled, c.MaxSpiderSize)
	}
	if c.RemoteMediaDownloadPerSecond != 87<<10 || c.RemoteMediaDownloadBurstCount != 500<<20 {
		t.Fatalf("remote media download defaults: %d/s, %d", c.RemoteMediaDownloadPerSecond, c.RemoteMediaDownloadBurstCount)
	}
	// The built-in private ranges are netguard's (netguard_test.go): the
	// settings only add to them and make exceptions.
	if deny, allow := c.URLPreviewRanges(); len(deny) != 0 || len(allow) != 0 {
		t.Fatalf("ranges: %v deny %v allow", deny, allow)
	}
	c.URLPreviewIPRangeBlacklist = []string{"8.8.8.0/24", "9.9.9.9"}
	c.URLPreviewIPRangeWhitelist = []string{"::ffff:10.1.2.3"}
	deny, allow := c.URLPreviewRanges()
	if fmt.Sprint(deny, allow) != "[8.8.8.0/24 9.9.9.9/32] [10.1.2.3/32]" {
		t.Fatalf("ranges: %v %v", deny, allow)
	}
	c.URLPreviewIPRangeBlacklist = []string{"8.8.8.0/24", "nonsense"}
	c.URLPreviewIPRangeWhitelist = []string{"127.0.0.1", "10.0.0.0/33"}
	c.MaxSpiderSize = -1
	c.RemoteMediaDownloadPerSecond, c.RemoteMediaDownloadBurstCount = -1, -1
	err := c.Validate()
	for _, want := range []string{"url_preview_ip_range_blacklist[1]", "url_preview_ip_range_whitelist[1]", "max_spider_size",
		"remote_media_download_per_second", "remote_media_download_burst_count"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want a message naming %s", err, want)
		}
	}
	if strings.Contains(err.Error(), "url_preview_ip_range_whitelist[0]") {
		t.Errorf("a single address is a valid whitelist entry: %v", err)
	}
}
