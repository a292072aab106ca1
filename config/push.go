package config

// Push is Synapse's push section: how notifications reach push gateways,
// plus what Hearth's default push rules hold.
type Push struct {
	// IncludeContent sends the event's content in pushes of the full
	// format (Synapse's push.include_content; nil means true). Off, a
	// gateway learns who wrote and where, not what.
	IncludeContent *bool `yaml:"include_content"`
	// LegacyMentionRules adds the default rules spec v1.17 removed, which
	// notify on the user's name or "@room" in a message's body
	// (.m.rule.contains_display_name, .m.rule.contains_user_name,
	// .m.rule.roomnotif): Synapse still has them unless
	// experimental_features.msc4210_enabled. For clients and bots that
	// mention without m.mentions. Default off, as in the spec.
	LegacyMentionRules bool `yaml:"legacy_mention_rules"`
}

// PushIncludeContent is push.include_content with its default.
func (c *Config) PushIncludeContent() bool {
	return c.Push.IncludeContent == nil || *c.Push.IncludeContent
}
