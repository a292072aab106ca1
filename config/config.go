// Package config loads homeserver.yaml. Key names follow Synapse's where the
// concept is the same, so an operator's existing knowledge (and much of an
// existing file) carries over. Load applies defaults, then Validate reports
// every problem at once, each naming the key at fault.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"hearth/server/rooms"
)

// Config is the whole homeserver configuration.
type Config struct {
	ServerName    string `yaml:"server_name"`
	PublicBaseURL string `yaml:"public_baseurl"`
	ReportStats   bool   `yaml:"report_stats"`
	// LogLevel is one of debug, info, warn, error.
	LogLevel string `yaml:"log_level"`
	// EnableMetrics turns on the Prometheus metrics listeners (type:
	// metrics) and the metrics resource (Synapse's key; off by default).
	EnableMetrics bool `yaml:"enable_metrics"`

	Listeners []Listener `yaml:"listeners"`
	// TLS certificate and key (PEM) for listeners with tls: true.
	TLSCertificatePath string `yaml:"tls_certificate_path"`
	TLSPrivateKeyPath  string `yaml:"tls_private_key_path"`
	// ACME obtains certificates automatically instead (acme.go).
	ACME     ACME     `yaml:"acme"`
	Database Database `yaml:"database"`

	SigningKeyPath           string `yaml:"signing_key_path"`
	RegistrationSharedSecret string `yaml:"registration_shared_secret"`
	EnableRegistration       bool   `yaml:"enable_registration"`
	// EnableRegistrationWithoutVerification is Synapse's safety catch: open
	// registration without email/captcha/token must be acknowledged explicitly.
	EnableRegistrationWithoutVerification bool `yaml:"enable_registration_without_verification"`
	RegistrationRequiresToken             bool `yaml:"registration_requires_token"`
	AllowGuestAccess                      bool `yaml:"allow_guest_access"`

	// DefaultRoomVersion is the version of rooms created without one
	// (createRoom without room_version, server notices rooms, the room
	// users of a deleted room move to) and the default /capabilities
	// advertises. Synapse's key and default: "11", because servers that do
	// not know version 12 cannot join its rooms.
	DefaultRoomVersion string `yaml:"default_room_version"`

	MediaStorePath string `yaml:"media_store_path"`
	MaxUploadSize  Size   `yaml:"max_upload_size"`
	// Media serving and URL previews (media.go).
	EnableAuthenticatedMedia   *bool    `yaml:"enable_authenticated_media"`
	URLPreviewEnabled          bool     `yaml:"url_preview_enabled"`
	URLPreviewIPRangeBlacklist []string `yaml:"url_preview_ip_range_blacklist"`
	URLPreviewIPRangeWhitelist []string `yaml:"url_preview_ip_range_whitelist"`
	MaxSpiderSize              Size     `yaml:"max_spider_size"`
	// What clients may make this server download from other servers, in
	// bytes per client address (Synapse's remote media download limit).
	RemoteMediaDownloadPerSecond  Size `yaml:"remote_media_download_per_second"`
	RemoteMediaDownloadBurstCount Size `yaml:"remote_media_download_burst_count"`

	PasswordConfig PasswordConfig `yaml:"password_config"`
	// BcryptRounds is the bcrypt cost for new password hashes (Synapse's
	// bcrypt_rounds, default 12).
	BcryptRounds int `yaml:"bcrypt_rounds"`

	// Token lifetimes. Zero lifetimes mean "never expires" (Synapse's default
	// for non-refreshable tokens).
	RefreshableAccessTokenLifetime Duration `yaml:"refreshable_access_token_lifetime"`
	RefreshTokenLifetime           Duration `yaml:"refresh_token_lifetime"`
	// Signing in a new device from a signed-in one (clientapi.go).
	LoginViaExistingSession LoginViaExistingSession `yaml:"login_via_existing_session"`

	RCLogin        RCLogin   `yaml:"rc_login"`
	RCRegistration RateLimit `yaml:"rc_registration"`

	// ExtraWellKnownClientContent is merged into /.well-known/matrix/client.
	ExtraWellKnownClientContent map[string]any `yaml:"extra_well_known_client_content"`
	// WellKnownSupport is served at /.well-known/matrix/support (clientapi.go).
	WellKnownSupport WellKnownSupport `yaml:"well_known_support"`

	// Admin dashboard, cache sizes and Go memory tuning (dashboard.go).
	AdminDashboard AdminDashboard `yaml:"admin_dashboard"`
	Caches         Caches         `yaml:"caches"`
	Memory         Memory         `yaml:"memory"`

	// OAuth is the built-in OAuth 2.0 authorisation server (oauth.go).
	OAuth OAuth `yaml:"oauth"`

	// ServerNotices is the server-notices account (notices.go).
	ServerNotices ServerNotices `yaml:"server_notices"`

	// Email: validating the addresses users add, register with and reset
	// their password by, through SMTP (email.go). Nil: not configured.
	Email *Email `yaml:"email"`
	// RegistrationsRequire3PID lists the media /register demands ("email").
	RegistrationsRequire3PID []string `yaml:"registrations_require_3pid"`
	// Enable3PIDChanges nil means true: users may add and remove addresses.
	Enable3PIDChanges *bool `yaml:"enable_3pid_changes"`
	// RequestTokenInhibit3PIDErrors makes requestToken answer a made-up
	// session rather than say whether an address is in use.
	RequestTokenInhibit3PIDErrors bool               `yaml:"request_token_inhibit_3pid_errors"`
	AllowedLocal3PIDs             []AllowedLocal3PID `yaml:"allowed_local_3pids"`
	RC3PIDValidation              RateLimit          `yaml:"rc_3pid_validation"`

	// Push notifications (push.go).
	Push Push `yaml:"push"`

	// Federation: outbound TLS and address filtering, notaries, old keys
	// (federation.go). FederationVerifyCertificates nil means true.
	FederationVerifyCertificates *bool    `yaml:"federation_verify_certificates"`
	FederationCustomCAList       []string `yaml:"federation_custom_ca_list"`
	// FederationDomainWhitelist nil (unset) allows every server; an empty
	// list allows none.
	FederationDomainWhitelist      []string                 `yaml:"federation_domain_whitelist"`
	IPRangeBlacklist               []string                 `yaml:"ip_range_blacklist"`
	IPRangeWhitelist               []string                 `yaml:"ip_range_whitelist"`
	TrustedKeyServers              []TrustedKeyServer       `yaml:"trusted_key_servers"`
	SuppressKeyServerWarning       bool                     `yaml:"suppress_key_server_warning"`
	AllowPublicRoomsOverFederation bool                     `yaml:"allow_public_rooms_over_federation"`
	ServeServerWellKnown           bool                     `yaml:"serve_server_wellknown"`
	OldSigningKeys                 map[string]OldSigningKey `yaml:"old_signing_keys"`

	// AllowDeviceNameLookupOverFederation shows other servers the
	// display names of local users' devices (off, as in Synapse).
	AllowDeviceNameLookupOverFederation bool `yaml:"allow_device_name_lookup_over_federation"`

	// Delayed events, MSC4140 (delayed.go): off unless
	// max_event_delay_duration is set, as in Synapse.
	MaxEventDelayDuration Duration             `yaml:"max_event_delay_duration"`
	RCDelayedEventMgmt    RateLimit            `yaml:"rc_delayed_event_mgmt"`
	ExperimentalFeatures  ExperimentalFeatures `yaml:"experimental_features"`

	// path is where the file was read from; relative paths in the file are
	// resolved against its directory.
	path string
}

// Listener is one HTTP listener (Synapse's listeners[] entries).
type Listener struct {
	Port          int        `yaml:"port"`
	BindAddresses []string   `yaml:"bind_addresses"`
	Type          string     `yaml:"type"`
	TLS           bool       `yaml:"tls"`
	XForwarded    bool       `yaml:"x_forwarded"`
	Resources     []Resource `yaml:"resources"`
}

// Resource names what a listener serves: client, federation, ...
type Resource struct {
	Names    []string `yaml:"names"`
	Compress bool     `yaml:"compress"`
}

// Database selects the storage engine. name is "sqlite3" (the default) or
// "psycopg2" (Synapse's name for PostgreSQL; "postgres" is accepted too).
type Database struct {
	Name string       `yaml:"name"`
	Args DatabaseArgs `yaml:"args"`
}

// DatabaseArgs are the engine's connection arguments, with Synapse's names.
type DatabaseArgs struct {
	// Database is the SQLite file, or the PostgreSQL database name.
	Database string `yaml:"database"`
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	Host     string `yaml:"host"`
	Port     int    `yaml:"port"`
	// DSN, when set, is a full PostgreSQL connection URL and wins over the
	// individual fields (Hearth extension).
	DSN   string `yaml:"dsn"`
	CPMin int    `yaml:"cp_min"`
	CPMax int    `yaml:"cp_max"`
}

// PasswordConfig mirrors Synapse's password_config.
type PasswordConfig struct {
	Enabled *bool          `yaml:"enabled"`
	Policy  PasswordPolicy `yaml:"policy"`
}

// PasswordPolicy mirrors Synapse's password_config.policy.
type PasswordPolicy struct {
	Enabled       bool `yaml:"enabled"`
	MinimumLength int  `yaml:"minimum_length"`
}

// RCLogin mirrors Synapse's rc_login.
type RCLogin struct {
	Address        RateLimit `yaml:"address"`
	Account        RateLimit `yaml:"account"`
	FailedAttempts RateLimit `yaml:"failed_attempts"`
}

// RateLimit is a token bucket: per_second refill, burst_count capacity.
type RateLimit struct {
	PerSecond  float64 `yaml:"per_second"`
	BurstCount float64 `yaml:"burst_count"`
}

// Size is a byte count that may be written as "50M", "1G", "512K" or bytes.
type Size int64

// UnmarshalYAML accepts integers and Synapse-style size strings.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseSize(n.Value)
	if err != nil {
		return err
	}
	*s = Size(v)
	return nil
}

// ParseSize parses "50M", "1G", "100K", "1024".
func ParseSize(v string) (int64, error) {
	v = strings.TrimSpace(v)
	mult := int64(1)
	if v == "" {
		return 0, nil
	}
	switch strings.ToUpper(v[len(v)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	}
	if mult != 1 {
		v = v[:len(v)-1]
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (use bytes or a number with K, M or G)", v)
	}
	return n * mult, nil
}

// Duration accepts Synapse-style durations: "5m", "1h", "7d", "1w", "1y" or
// milliseconds as a bare integer.
type Duration time.Duration

// UnmarshalYAML parses Synapse duration strings.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

var durRe = regexp.MustCompile(`^(\d+)(ms|s|m|h|d|w|y)?$`)

// ParseDuration parses "30s", "5m", "2h", "7d", "1w", "1y", or milliseconds.
func ParseDuration(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if v == "" || v == "null" {
		return 0, nil
	}
	m := durRe.FindStringSubmatch(v)
	if m == nil {
		return 0, fmt.Errorf("%q is not a duration (e.g. 30s, 5m, 2h, 7d, 1w, or milliseconds)", v)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	unit := map[string]time.Duration{"": time.Millisecond, "ms": time.Millisecond, "s": time.Second,
		"m": time.Minute, "h": time.Hour, "d": 24 * time.Hour, "w": 7 * 24 * time.Hour, "y": 365 * 24 * time.Hour}[m[2]]
	return time.Duration(n) * unit, nil
}

// Std returns the value as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// Defaults fills every unset field with its default. dataDir anchors the
// default file locations.
func (c *Config) Defaults() {
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if len(c.Listeners) == 0 {
		c.Listeners = []Listener{{Port: 8008, BindAddresses: []string{"::1", "127.0.0.1"}, Type: "http",
			Resources: []Resource{{Names: []string{"client", "federation"}}}}}
	}
	for i := range c.Listeners {
		if c.Listeners[i].Type == "" {
			c.Listeners[i].Type = "http"
		}
		if len(c.Listeners[i].BindAddresses) == 0 {
			c.Listeners[i].BindAddresses = []string{"::", "0.0.0.0"}
		}
	}
	if c.Database.Name == "" {
		c.Database.Name = "sqlite3"
	}
	if c.BcryptRounds == 0 {
		c.BcryptRounds = 12
	}
	if c.DefaultRoomVersion == "" {
		c.DefaultRoomVersion = rooms.DefaultRoomVersion
	}
	if c.MaxUploadSize == 0 {
		c.MaxUploadSize = 50 << 20
	}
	if c.RCLogin.Address == (RateLimit{}) {
		c.RCLogin.Address = RateLimit{PerSecond: 0.003, BurstCount: 5}
	}
	if c.RCLogin.Account == (RateLimit{}) {
		c.RCLogin.Account = RateLimit{PerSecond: 0.003, BurstCount: 5}
	}
	if c.RCLogin.FailedAttempts == (RateLimit{}) {
		c.RCLogin.FailedAttempts = RateLimit{PerSecond: 0.17, BurstCount: 3}
	}
	if c.RCRegistration == (RateLimit{}) {
		c.RCRegistration = RateLimit{PerSecond: 0.17, BurstCount: 3}
	}
	c.dashboardDefaults()
	c.mediaDefaults()
	c.federationDefaults()
	c.clientAPIDefaults()
	c.acmeDefaults()
	c.delayedDefaults()
	c.oauthDefaults()
	c.emailDefaults()
}

// PasswordLoginEnabled reports whether m.login.password is offered.
func (c *Config) PasswordLoginEnabled() bool {
	return c.PasswordConfig.Enabled == nil || *c.PasswordConfig.Enabled
}

// IsPostgres reports whether the database section selects PostgreSQL.
func (c *Config) IsPostgres() bool {
	switch c.Database.Name {
	case "psycopg2", "postgres", "postgresql", "pgx":
		return true
	}
	return false
}

// PostgresDSN builds the connection URL from the database args.
func (c *Config) PostgresDSN() string {
	a := c.Database.Args
	if a.DSN != "" {
		return a.DSN
	}
	parts := []string{}
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"='"+strings.ReplaceAll(strings.ReplaceAll(v, `\`, `\\`), `'`, `\'`)+"'")
		}
	}
	add("host", a.Host)
	if a.Port != 0 {
		add("port", strconv.Itoa(a.Port))
	}
	add("user", a.User)
	add("password", a.Password)
	add("dbname", a.Database)
	return strings.Join(parts, " ")
}

// Resolve makes a path from the file absolute, relative to the config file.
func (c *Config) Resolve(p string) string {
	if p == "" || filepath.IsAbs(p) || c.path == "" {
		return p
	}
	return filepath.Join(filepath.Dir(c.path), p)
}

// Path is the file the config was loaded from.
func (c *Config) Path() string { return c.path }

var serverNameRe = regexp.MustCompile(`^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,255})(:[0-9]{1,5})?$`)

// Validate reports every problem, each naming its key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.ServerName == "" {
		bad("server_name", "is required (the domain in your users' IDs, e.g. example.org)")
	} else if !serverNameRe.MatchString(c.ServerName) {
		bad("server_name", "%q is not a valid server name (hostname or IP with optional :port)", c.ServerName)
	}
	if c.PublicBaseURL != "" && !strings.HasPrefix(c.PublicBaseURL, "http://") && !strings.HasPrefix(c.PublicBaseURL, "https://") {
		bad("public_baseurl", "%q must start with http:// or https://", c.PublicBaseURL)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "warning", "error":
	default:
		bad("log_level", "%q is not one of debug, info, warn, error", c.LogLevel)
	}
	for i, l := range c.Listeners {
		key := fmt.Sprintf("listeners[%d]", i)
		if l.TLS && !c.ACME.Enabled && (c.TLSCertificatePath == "" || c.TLSPrivateKeyPath == "") {
			bad(key+".tls", "is true, so tls_certificate_path and tls_private_key_path must name a PEM certificate and key (or set acme.enabled: true)")
		}
		if l.Port < 1 || l.Port > 65535 {
			bad(key+".port", "%d is not a TCP port (1-65535)", l.Port)
		}
		if l.Type != "http" && l.Type != "metrics" {
			bad(key+".type", "%q is not supported (http or metrics)", l.Type)
		}
		for j, a := range l.BindAddresses {
			if net.ParseIP(a) == nil && a != "localhost" {
				bad(fmt.Sprintf("%s.bind_addresses[%d]", key, j), "%q is not an IP address", a)
			}
		}
		for _, r := range l.Resources {
			for _, n := range r.Names {
				switch n {
				case "client", "federation", "keys", "media", "metrics", "openid", "replication", "health", "static":
				default:
					bad(key+".resources.names", "%q is not a known resource (client, federation, media, metrics, ...)", n)
				}
			}
		}
	}
	switch {
	case c.Database.Name == "sqlite3" || c.Database.Name == "sqlite":
		if c.Database.Args.Database == "" {
			bad("database.args.database", "is required for sqlite3 (the database file path)")
		}
	case c.IsPostgres():
		if c.Database.Args.DSN == "" && c.Database.Args.Database == "" {
			bad("database.args", "PostgreSQL needs database (the database name) or dsn")
		}
	default:
		bad("database.name", "%q is not supported (sqlite3 or psycopg2)", c.Database.Name)
	}
	if c.SigningKeyPath == "" {
		bad("signing_key_path", "is required (generate-config writes one)")
	}
	if c.EnableRegistration && !c.EnableRegistrationWithoutVerification && !c.RegistrationRequiresToken && !c.RegistrationRequiresEmail() {
		bad("enable_registration", "open registration without verification lets anyone create accounts: also set "+
			"enable_registration_without_verification: true, registration_requires_token: true or registrations_require_3pid: [email]")
	}
	if _, ok := rooms.LookupVersion(c.DefaultRoomVersion); !ok {
		bad("default_room_version", "%q is not a room version this server supports (%s)", c.DefaultRoomVersion,
			strings.Join(rooms.KnownVersions(), ", "))
	}
	if c.BcryptRounds < 4 || c.BcryptRounds > 31 {
		bad("bcrypt_rounds", "%d is outside bcrypt's range 4-31", c.BcryptRounds)
	}
	if c.MaxUploadSize < 0 {
		bad("max_upload_size", "must not be negative")
	}
	for name, rl := range map[string]RateLimit{"rc_login.address": c.RCLogin.Address, "rc_login.account": c.RCLogin.Account,
		"rc_login.failed_attempts": c.RCLogin.FailedAttempts, "rc_registration": c.RCRegistration} {
		if rl.PerSecond < 0 || rl.BurstCount < 0 {
			bad(name, "per_second and burst_count must not be negative")
		}
	}
	c.validateDashboard(bad)
	c.validateMedia(bad)
	c.validateFederation(bad)
	c.validateClientAPI(bad)
	c.validateACME(bad)
	c.validateDelayed(bad)
	c.validateOAuth(bad)
	c.validateEmail(bad)
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errors.Join(errs...)
}

// Load reads, defaults and validates the file. Warnings (unknown keys) are
// returned separately: they do not stop the start.
func Load(path string) (*Config, []string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	return Parse(raw, path)
}

// Parse is Load on bytes already read; path anchors relative paths.
func Parse(raw []byte, path string) (*Config, []string, error) {
	c := &Config{}
	if abs, err := filepath.Abs(path); err == nil {
		c.path = abs
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, nil, fmt.Errorf("config %s: not valid YAML: %w", path, err)
	}
	if err := doc.Decode(c); err != nil {
		return nil, nil, fmt.Errorf("config %s: %s", path, describeDecodeError(err))
	}
	var warnings []string
	if len(doc.Content) > 0 {
		unknownKeys(doc.Content[0], reflect.TypeOf(*c), "", &warnings)
	}
	c.Defaults()
	if !c.IsPostgres() {
		c.Database.Args.Database = c.Resolve(c.Database.Args.Database)
	}
	c.SigningKeyPath = c.Resolve(c.SigningKeyPath)
	c.TLSCertificatePath = c.Resolve(c.TLSCertificatePath)
	c.TLSPrivateKeyPath = c.Resolve(c.TLSPrivateKeyPath)
	c.MediaStorePath = c.Resolve(c.MediaStorePath)
	if c.Email != nil {
		c.Email.SMTPCAFile = c.Resolve(c.Email.SMTPCAFile)
	}
	for i, p := range c.FederationCustomCAList {
		c.FederationCustomCAList[i] = c.Resolve(p)
	}
	if err := c.Validate(); err != nil {
		return nil, warnings, fmt.Errorf("config %s is not valid:\n%w", path, err)
	}
	return c, warnings, nil
}

// describeDecodeError rewrites yaml's "line N: cannot unmarshal" messages so
// the key is visible.
func describeDecodeError(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return strings.Join(te.Errors, "; ")
	}
	return err.Error()
}

// unknownKeys walks a mapping node against the struct it decodes into and
// records keys that no field takes, so typos are reported, not ignored.
func unknownKeys(n *yaml.Node, t reflect.Type, prefix string, out *[]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name != "" && name != "-" {
				fields[name] = f.Type
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			ft, ok := fields[key]
			if !ok {
				*out = append(*out, fmt.Sprintf("config: unknown key %s%s (line %d) is ignored", prefix, key, n.Content[i].Line))
				continue
			}
			unknownKeys(n.Content[i+1], ft, prefix+key+".", out)
		}
	case n.Kind == yaml.SequenceNode && t.Kind() == reflect.Slice:
		for i, item := range n.Content {
			unknownKeys(item, t.Elem(), fmt.Sprintf("%s[%d].", strings.TrimSuffix(prefix, "."), i), out)
		}
	}
}
