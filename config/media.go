package config

import (
	"fmt"
	"net/netip"
	"strings"
)

// Media repository settings (Synapse's names). The fields live on Config
// beside media_store_path and max_upload_size; defaults and checks are here.

// AuthenticatedMediaOnly reports whether new uploads are served only by the
// authenticated /_matrix/client/v1/media endpoints (Synapse's
// enable_authenticated_media, default true). Media uploaded while it was
// false stays reachable through the legacy /_matrix/media/v3 endpoints.
func (c *Config) AuthenticatedMediaOnly() bool {
	return c.EnableAuthenticatedMedia == nil || *c.EnableAuthenticatedMedia
}

// URLPreviewRanges returns the ranges url_preview_ip_range_blacklist adds to
// the built-in deny list (every private, loopback, link-local, multicast
// and reserved range: netguard.DefaultDeny, which no setting can shrink)
// and the url_preview_ip_range_whitelist exceptions. Validate has already
// checked every entry.
func (c *Config) URLPreviewRanges() (deny, allow []netip.Prefix) {
	return parseCIDRs(c.URLPreviewIPRangeBlacklist), parseCIDRs(c.URLPreviewIPRangeWhitelist)
}

// parseCIDRs parses a list Validate has checked, skipping bad entries.
func parseCIDRs(list []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range list {
		if p, err := parseCIDR(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// parseCIDR accepts a CIDR range or a single address.
func parseCIDR(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	// An IPv4-mapped range (::ffff:10.0.0.0/104) is the IPv4 range it
	// maps: addresses are checked unmapped.
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

func (c *Config) mediaDefaults() {
	if c.MaxSpiderSize == 0 {
		c.MaxSpiderSize = 10 << 20
	}
	// Synapse's defaults: 87K a second, 500M at once.
	if c.RemoteMediaDownloadPerSecond == 0 {
		c.RemoteMediaDownloadPerSecond = 87 << 10
	}
	if c.RemoteMediaDownloadBurstCount == 0 {
		c.RemoteMediaDownloadBurstCount = 500 << 20
	}
}

func (c *Config) validateMedia(bad func(key, format string, args ...any)) {
	if c.MaxSpiderSize < 0 {
		bad("max_spider_size", "must not be negative")
	}
	if c.RemoteMediaDownloadPerSecond < 0 {
		bad("remote_media_download_per_second", "must not be negative")
	}
	if c.RemoteMediaDownloadBurstCount < 0 {
		bad("remote_media_download_burst_count", "must not be negative")
	}
	for key, list := range map[string][]string{"url_preview_ip_range_blacklist": c.URLPreviewIPRangeBlacklist,
		"url_preview_ip_range_whitelist": c.URLPreviewIPRangeWhitelist} {
		for i, s := range list {
			if _, err := parseCIDR(s); err != nil {
				bad(fmt.Sprintf("%s[%d]", key, i), "%q is not an IP address or CIDR range (e.g. 192.168.0.0/16)", s)
			}
		}
	}
}
