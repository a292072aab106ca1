package config

import "time"

// OAuth configures Hearth's built-in OAuth 2.0 authorisation server (spec:
// Client-Server API, "OAuth 2.0 API"), which is how Element X and other
// next-generation clients sign in and register. Synapse delegates this to
// matrix-authentication-service; Hearth serves it in process, under
// /_hearth/oauth/ on the client listeners.
//
// A file without the section keeps OAuth off, so upgrading does not change
// how an existing server signs users in; generate-config writes
// enabled: true for new servers. Password login (m.login.password) keeps
// working either way.
type OAuth struct {
	// Enabled serves the OAuth 2.0 API (default false; true in new configs).
	Enabled bool `yaml:"enabled"`
	// AccessTokenLifetime is how long an access token lasts before the
	// client must use its refresh token (default 5m; the spec wants them
	// short-lived).
	AccessTokenLifetime Duration `yaml:"access_token_lifetime"`
	// SessionLifetime is how long a browser stays signed in to the OAuth
	// pages (login, consent, account), default 1d.
	SessionLifetime Duration `yaml:"session_lifetime"`
}

func (c *Config) oauthDefaults() {
	if c.OAuth.AccessTokenLifetime == 0 {
		c.OAuth.AccessTokenLifetime = Duration(5 * time.Minute)
	}
	if c.OAuth.SessionLifetime == 0 {
		c.OAuth.SessionLifetime = Duration(24 * time.Hour)
	}
}

func (c *Config) validateOAuth(bad func(key, format string, args ...any)) {
	if c.OAuth.AccessTokenLifetime < Duration(time.Minute) {
		bad("oauth.access_token_lifetime", "must be at least 1m")
	}
	if c.OAuth.SessionLifetime < Duration(time.Minute) {
		bad("oauth.session_lifetime", "must be at least 1m")
	}
}
