package config

import (
	"fmt"
	"net"
	"time"
)

// AdminDashboard configures the built-in admin dashboard (a Hearth
// extension; Synapse has none). By default it is served at /_hearth/admin/
// on every listener that serves the client API; with a port it moves to a
// listener of its own, typically bound to localhost or a VPN address, and
// disappears from the client listeners.
type AdminDashboard struct {
	// Enabled turns the dashboard on (default true).
	Enabled *bool `yaml:"enabled"`
	// Port, when set, gives the dashboard its own listener.
	Port int `yaml:"port"`
	// BindAddresses of the dashboard's own listener (default 127.0.0.1 and ::1).
	BindAddresses []string `yaml:"bind_addresses"`
	// XForwarded trusts X-Forwarded-For/-Proto on the dashboard's own
	// listener (set it when a reverse proxy terminates TLS in front).
	XForwarded bool `yaml:"x_forwarded"`
	// SessionLifetime is how long a dashboard sign-in lasts (default 12h).
	SessionLifetime Duration `yaml:"session_lifetime"`
}

// DashboardEnabled reports whether the admin dashboard is served.
func (c *Config) DashboardEnabled() bool {
	return c.AdminDashboard.Enabled == nil || *c.AdminDashboard.Enabled
}

// DashboardOwnListener reports whether the dashboard has its own port
// instead of sharing the client listeners.
func (c *Config) DashboardOwnListener() bool {
	return c.DashboardEnabled() && c.AdminDashboard.Port != 0
}

// Caches mirrors Synapse's caches section: every cache's base size is
// multiplied by global_factor and by its entry in per_cache_factors.
type Caches struct {
	// GlobalFactor scales every cache (default 1).
	GlobalFactor float64 `yaml:"global_factor"`
	// PerCacheFactors scales one cache by name, on top of the global factor.
	PerCacheFactors map[string]float64 `yaml:"per_cache_factors"`
}

// Memory tunes the Go runtime's garbage collector (a Hearth extension).
type Memory struct {
	// Limit is the soft memory limit ("800M", "1G"), Go's GOMEMLIMIT; 0:
	// GOMEMLIMIT's, or without it the automatic one (cache.ApplyRuntime).
	Limit Size `yaml:"limit"`
	// GCPercent is the GC target, Go's GOGC (lower collects more often and
	// holds less garbage); 0: GOGC's, or without it Go's default, 100.
	// The heap goal never falls under cache.HeapGoalFloor either way.
	GCPercent int `yaml:"gc_percent"`
}

func (c *Config) dashboardDefaults() {
	if c.AdminDashboard.SessionLifetime == 0 {
		c.AdminDashboard.SessionLifetime = Duration(12 * time.Hour)
	}
	if c.AdminDashboard.Port != 0 && len(c.AdminDashboard.BindAddresses) == 0 {
		c.AdminDashboard.BindAddresses = []string{"127.0.0.1", "::1"}
	}
	if c.Caches.GlobalFactor == 0 {
		c.Caches.GlobalFactor = 1
	}
}

func (c *Config) validateDashboard(bad func(key, format string, args ...any)) {
	d := c.AdminDashboard
	if d.Port < 0 || d.Port > 65535 {
		bad("admin_dashboard.port", "%d is not a TCP port (1-65535), or 0 to serve the dashboard on the client listeners", d.Port)
	}
	if d.Port == 0 && len(d.BindAddresses) > 0 {
		bad("admin_dashboard.bind_addresses", "is only used with admin_dashboard.port (the dashboard's own listener)")
	}
	for j, a := range d.BindAddresses {
		if net.ParseIP(a) == nil && a != "localhost" {
			bad(fmt.Sprintf("admin_dashboard.bind_addresses[%d]", j), "%q is not an IP address", a)
		}
	}
	if d.Port != 0 {
		for i, l := range c.Listeners {
			if l.Port == d.Port {
				bad("admin_dashboard.port", "%d is already used by listeners[%d]; pick another port, or 0 to share the client listener", d.Port, i)
			}
		}
	}
	if d.SessionLifetime.Std() < time.Minute {
		bad("admin_dashboard.session_lifetime", "must be at least 1m")
	}
	if f := c.Caches.GlobalFactor; f <= 0 || f > 1000 {
		bad("caches.global_factor", "%v must be greater than 0 and at most 1000", f)
	}
	for name, f := range c.Caches.PerCacheFactors {
		if f <= 0 || f > 1000 {
			bad("caches.per_cache_factors."+name, "%v must be greater than 0 and at most 1000", f)
		}
	}
	if c.Memory.Limit < 0 {
		bad("memory.limit", "must not be negative")
	} else if c.Memory.Limit != 0 && c.Memory.Limit < 64<<20 {
		bad("memory.limit", "%d bytes is too small for a homeserver; use at least 64M, or 0 for the automatic limit", c.Memory.Limit)
	}
	if g := c.Memory.GCPercent; g != -1 && g != 0 && (g < 10 || g > 1000) {
		bad("memory.gc_percent", "%d must be between 10 and 1000 (or -1: collect only at memory.limit; 0: GOGC's, or 100)", g)
	} else if g == -1 && c.Memory.Limit == 0 {
		bad("memory.gc_percent", "-1 turns the garbage collector off until memory.limit is reached; set memory.limit too")
	}
}
