package config

// ExperimentalFeatures is Synapse's experimental_features section, with
// the keys Hearth reads.
type ExperimentalFeatures struct {
	// MSC4140MaxDelayedEventsPerUser is how many delayed events one user
	// may have scheduled at once (Synapse's default 100); 0 turns delayed
	// events off.
	MSC4140MaxDelayedEventsPerUser *int `yaml:"msc4140_max_delayed_events_per_user"`
	// MSC4306Enabled turns on thread subscriptions (MSC4306) and their
	// sliding sync extension (MSC4308), with the push rules that notify
	// for subscribed threads only, as Synapse's key of the same name does.
	MSC4306Enabled bool `yaml:"msc4306_enabled"`
	// MSC3391Enabled lets clients delete account data (MSC3391): the
	// unstable DELETE endpoints, and a PUT of {} deletes as well, as with
	// Synapse's key of the same name.
	MSC3391Enabled bool `yaml:"msc3391_enabled"`
}

// DelayedEventsEnabled reports whether users may schedule delayed events
// (MSC4140): as in Synapse, when max_event_delay_duration is set and the
// per-user maximum is not 0.
func (c *Config) DelayedEventsEnabled() bool {
	return c.MaxEventDelayDuration > 0 && c.MaxDelayedEventsPerUser() > 0
}

// MaxDelayedEventsPerUser is
// experimental_features.msc4140_max_delayed_events_per_user with its
// default.
func (c *Config) MaxDelayedEventsPerUser() int {
	if p := c.ExperimentalFeatures.MSC4140MaxDelayedEventsPerUser; p != nil {
		return *p
	}
	return 100
}

func (c *Config) delayedDefaults() {
	// Synapse's rc_delayed_event_mgmt: listing, cancelling, restarting and
	// sending delayed events.
	if c.RCDelayedEventMgmt == (RateLimit{}) {
		c.RCDelayedEventMgmt = RateLimit{PerSecond: 1, BurstCount: 5}
	}
}

func (c *Config) validateDelayed(bad func(key, format string, args ...any)) {
	if c.MaxEventDelayDuration < 0 {
		bad("max_event_delay_duration", "must be a positive value if set")
	}
	if p := c.ExperimentalFeatures.MSC4140MaxDelayedEventsPerUser; p != nil && *p < 0 {
		bad("experimental_features.msc4140_max_delayed_events_per_user", "must be a non-negative integer")
	}
	if rl := c.RCDelayedEventMgmt; rl.PerSecond < 0 || rl.BurstCount < 0 {
		bad("rc_delayed_event_mgmt", "per_second and burst_count must not be negative")
	}
}
