package config

import (
	"fmt"
	"net/netip"
	"strings"
)

// Media repository settings (Synapse's names). The fields live on Config
// beside media_store_path and max_upload_size; defaults and checks are here.

// DefaultURLPreviewBlacklist is every private, loopback, link-local,
// multicast and otherwise reserved range (IANA special-purpose registries):
// URL previews never fetch from them unless url_preview_ip_range_whitelist
// makes an explicit exception. url_preview_ip_range_blacklist adds to this
// list; it cannot shrink it.
var DefaultURLPreviewBlacklist = []string{
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
	"192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
	"198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
	"::/128", "::1/128", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/23",
	"2001:db8::/32", "2002::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
}

// AuthenticatedMediaOnly reports whether new uploads are served only by the
// authenticated /_matrix/client/v1/media endpoints (Synapse's
// enable_authenticated_media, default true). Media uploaded while it was
// false stays reachable through the legacy /_matrix/media/v3 endpoints.
func (c *Config) AuthenticatedMediaOnly() bool {
	return c.EnableAuthenticatedMedia == nil || *c.EnableAuthenticatedMedia
}

// URLPreviewRanges returns the parsed blacklist (the defaults plus
// url_preview_ip_range_blacklist) and whitelist. Validate has already
// checked every entry.
func (c *Config) URLPreviewRanges() (deny, allow []netip.Prefix) {
	for _, s := range append(append([]string{}, DefaultURLPreviewBlacklist...), c.URLPreviewIPRangeBlacklist...) {
		if p, err := parseCIDR(s); err == nil {
			deny = append(deny, p)
		}
	}
	for _, s := range c.URLPreviewIPRangeWhitelist {
		if p, err := parseCIDR(s); err == nil {
			allow = append(allow, p)
		}
	}
	return deny, allow
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
	return p.Masked(), nil
}

func (c *Config) mediaDefaults() {
	if c.MaxSpiderSize == 0 {
		c.MaxSpiderSize = 10 << 20
	}
}

func (c *Config) validateMedia(bad func(key, format string, args ...any)) {
	if c.MaxSpiderSize < 0 {
		bad("max_spider_size", "must not be negative")
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
