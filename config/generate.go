package config

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
)

// GenerateOptions describes a new homeserver.yaml.
type GenerateOptions struct {
	ServerName string
	// ConfigPath is the file to create; it must not exist yet.
	ConfigPath string
	// DataDir holds the database, media store and signing key. Empty means
	// the config file's directory.
	DataDir     string
	ReportStats bool
	// Root, when set, is where the file system the server will run on is
	// mounted (hearth install --root): files are written under it, and the
	// absolute paths in the config have it stripped.
	Root string
}

// Generated lists the files Generate wrote.
type Generated struct {
	ConfigPath, SigningKeyPath, DataDir string
}

// Generate writes a commented homeserver.yaml that documents every key, with
// a fresh registration_shared_secret, and a new signing key in Synapse's
// format. It never overwrites: an existing config or key file is an error,
// because replacing either would lock out accounts or break federation.
// Both files are written with mode 0600: they hold secrets.
func Generate(o GenerateOptions) (Generated, error) {
	if o.ServerName == "" {
		return Generated{}, errors.New("server_name: --server-name is required (the domain in your users' IDs, e.g. example.org)")
	}
	if !serverNameRe.MatchString(o.ServerName) {
		return Generated{}, fmt.Errorf("server_name: %q is not a valid server name (hostname or IP with optional :port)", o.ServerName)
	}
	if o.ConfigPath == "" {
		return Generated{}, errors.New("--config-path is required")
	}
	cfgPath, err := filepath.Abs(o.ConfigPath)
	if err != nil {
		return Generated{}, err
	}
	cfgDir := filepath.Dir(cfgPath)
	dataDir := cfgDir
	if o.DataDir != "" {
		if dataDir, err = filepath.Abs(o.DataDir); err != nil {
			return Generated{}, err
		}
	}
	keyPath := filepath.Join(dataDir, o.ServerName+".signing.key")
	for _, p := range []string{cfgPath, keyPath} {
		if _, err := os.Stat(p); err == nil {
			return Generated{}, fmt.Errorf("%s already exists; not overwriting it (move it away first to generate a new one)", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return Generated{}, err
		}
	}

	key, err := NewSigningKey()
	if err != nil {
		return Generated{}, fmt.Errorf("signing key: %w", err)
	}
	text, err := renderConfig(o, cfgDir, dataDir, keyPath)
	if err != nil {
		return Generated{}, err
	}
	if err := os.MkdirAll(cfgDir, 0o755); err != nil {
		return Generated{}, fmt.Errorf("config directory: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return Generated{}, fmt.Errorf("data directory: %w", err)
	}
	// The key first: a config pointing at a missing key is worse than a
	// stray key with no config.
	if err := writeNew(keyPath, key.Encode()); err != nil {
		return Generated{}, fmt.Errorf("signing_key_path: %w", err)
	}
	if err := writeNew(cfgPath, text); err != nil {
		os.Remove(keyPath)
		return Generated{}, err
	}
	return Generated{ConfigPath: cfgPath, SigningKeyPath: keyPath, DataDir: dataDir}, nil
}

// writeNew creates path with mode 0600, failing if it exists (O_EXCL closes
// the race between the check above and the write).
func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// NewSharedSecret returns a random registration_shared_secret: 256 bits,
// URL-safe base64, so it needs no quoting care in YAML or shells.
func NewSharedSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// renderConfig fills the template. Paths inside the config's directory are
// written relative to it, so the whole directory can be moved; others are
// written absolute.
func renderConfig(o GenerateOptions, cfgDir, dataDir, keyPath string) ([]byte, error) {
	secret, err := NewSharedSecret()
	if err != nil {
		return nil, err
	}
	rel := func(p string) string {
		if r, err := filepath.Rel(cfgDir, p); err == nil && r != ".." && !strings.HasPrefix(r, ".."+string(filepath.Separator)) {
			return r
		}
		if o.Root != "" {
			if r, err := filepath.Rel(o.Root, p); err == nil && !strings.HasPrefix(r, "..") {
				return "/" + filepath.ToSlash(r)
			}
		}
		return p
	}
	var d Config
	d.Defaults()
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	data := map[string]any{
		"ServerName":   strconv.Quote(o.ServerName),
		"ReportStats":  o.ReportStats,
		"Secret":       strconv.Quote(secret),
		"Database":     strconv.Quote(rel(filepath.Join(dataDir, "homeserver.db"))),
		"SigningKey":   strconv.Quote(rel(keyPath)),
		"MediaStore":   strconv.Quote(rel(filepath.Join(dataDir, "media_store"))),
		"BcryptRounds": d.BcryptRounds,
		"LoginAddr":    [2]string{f(d.RCLogin.Address.PerSecond), f(d.RCLogin.Address.BurstCount)},
		"LoginAcct":    [2]string{f(d.RCLogin.Account.PerSecond), f(d.RCLogin.Account.BurstCount)},
		"LoginFailed":  [2]string{f(d.RCLogin.FailedAttempts.PerSecond), f(d.RCLogin.FailedAttempts.BurstCount)},
		"DelayedMgmt":  [2]string{f(d.RCDelayedEventMgmt.PerSecond), f(d.RCDelayedEventMgmt.BurstCount)},
		"Registration": [2]string{f(d.RCRegistration.PerSecond), f(d.RCRegistration.BurstCount)},
	}
	var b bytes.Buffer
	if err := configTemplate.Execute(&b, data); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// configTemplate is the generated homeserver.yaml. Every key of Config
// appears here, set or as a commented example; TestGenerateDocumentsEveryKey
// keeps it that way.
var configTemplate = template.Must(template.New("homeserver.yaml").Parse(`# Hearth homeserver configuration.
#
# Key names follow Synapse's where the meaning is the same, so Synapse's
# documentation mostly applies. Relative paths are resolved against the
# directory of this file. Sizes may be written as 50M, 1G, 512K or bytes;
# durations as 30s, 5m, 2h, 7d, 1w, 1y or milliseconds.
#
# This file holds secrets (registration_shared_secret, database passwords):
# keep it readable by the server's user only.

# The domain in your users' IDs (@alice:example.org). It cannot be changed
# once users exist.
server_name: {{.ServerName}}

# The URL clients use to reach this server, when it differs from
# https://<server_name>/ (for example behind a reverse proxy on another host).
#public_baseurl: https://matrix.example.org/

# Whether to report anonymous usage statistics. Hearth does not send any
# yet; the key is kept for Synapse compatibility.
report_stats: {{.ReportStats}}

# One of debug, info, warn, error.
log_level: info

# Where to accept HTTP connections. Each listener has a port, the addresses
# to bind, a type (http or metrics), whether it terminates TLS itself,
# whether to trust X-Forwarded-For from a reverse proxy, and the resources
# it serves (client, federation, media, metrics, ...).
listeners:
  - port: 8008
    bind_addresses: ['::1', '127.0.0.1']
    type: http
    tls: false
    x_forwarded: true
    resources:
      - names: [client, federation]
        compress: false

# Prometheus metrics (docs/metrics.md). With enable_metrics: true, a
# listener of type metrics serves them at /metrics and /_synapse/metrics,
# and an http listener with the metrics resource at /_synapse/metrics.
# Keep them off the internet: bind to loopback or a private address.
enable_metrics: false
# For example, add to listeners above:
#  - port: 9000
#    bind_addresses: ['127.0.0.1']
#    type: metrics

# PEM certificate and private key for listeners with tls: true (Hearth can
# also sit behind a TLS-terminating reverse proxy, which needs neither).
#tls_certificate_path: /etc/hearth/fullchain.pem
#tls_private_key_path: /etc/hearth/privkey.pem
# The files are read again when they change (a renewal by certbot, say):
# no restart needed.

# Or let Hearth get and renew certificates itself from Let's Encrypt (or
# any ACME CA). It answers HTTP-01 challenges on port 80 (redirecting every
# other request there to HTTPS) and TLS-ALPN-01 on the listeners with
# tls: true (give one port 443); the certificates are served on every TLS
# listener, 8448 included, and kept in the database. The server name must
# be a DNS name with a dot: CAs do not certify IP addresses or localhost.
#acme:
#  enabled: true
#  domains: []               # default: server_name's host and public_baseurl's host
#  email: admin@example.org  # the CA writes here about expiring certificates
#  url: https://acme-v02.api.letsencrypt.org/directory   # or any ACME CA
#  staging: false            # Let's Encrypt's staging CA, for trying things out
#  ca_root: null             # PEM of a private CA that serves the directory
#  port: 80                  # HTTP-01
#  bind_addresses: ['::', '0.0.0.0']
#  reprovision_threshold: 30d

# The database. sqlite3 needs nothing else and suits small servers; for
# PostgreSQL use Synapse's name psycopg2 with its args:
#
#database:
#  name: psycopg2
#  args:
#    user: hearth
#    password: secret
#    database: hearth
#    host: localhost
#    port: 5432
#    cp_min: 5
#    cp_max: 10
#    # dsn: postgres://hearth:secret@localhost:5432/hearth  (wins over the fields above)
database:
  name: sqlite3
  args:
    database: {{.Database}}

# The server's ed25519 signing key, in Synapse's file format (a key can be
# moved between Synapse and Hearth). Losing it breaks federation.
signing_key_path: {{.SigningKey}}

# Anyone who knows this secret can create accounts, admins included, with
# "hearth register-user" or Synapse's register_new_matrix_user. Treat it like
# a root password; remove the line to turn shared-secret registration off.
registration_shared_secret: {{.Secret}}

# Open registration through the client API. Turning it on without a token
# or other verification requires enable_registration_without_verification.
enable_registration: false
enable_registration_without_verification: false
# Require a registration token (created by an admin) to register.
registration_requires_token: false
# Whether guests may register and read rooms that allow guests.
allow_guest_access: false

# The room version of new rooms when the client names none (and of rooms
# the server makes itself), advertised as the default in /capabilities.
# 11, as in Synapse: servers that do not support version 12 yet cannot
# join rooms of that version. Clients may still ask for any version 1-12.
default_room_version: "11"

# Uploaded media, and the largest upload accepted.
media_store_path: {{.MediaStore}}
max_upload_size: 50M

# Media uploaded while enable_authenticated_media is true is served only to
# signed-in users (/_matrix/client/v1/media); the legacy unauthenticated
# /_matrix/media/v3 download and thumbnail endpoints answer 404 for it.
# Setting it to false serves new uploads on both, as older clients expect.
enable_authenticated_media: true

# Other servers' media is fetched when a user asks for it, at most
# max_upload_size per file, and kept in media_store_path until an admin
# purges it (purge_media_cache). A client address may make the server
# download this much from other servers (Synapse's limit):
#remote_media_download_per_second: 87K
#remote_media_download_burst_count: 500M

# URL previews fetch the pages users link to. They are off by default: the
# server would fetch any URL a user names. Private, loopback, link-local,
# multicast and reserved addresses are always refused (checked on the
# address actually dialled); url_preview_ip_range_blacklist adds ranges to
# that list and url_preview_ip_range_whitelist makes exceptions to it.
# max_spider_size bounds what is downloaded per preview.
url_preview_enabled: false
#url_preview_ip_range_blacklist: ['198.51.100.0/24']
#url_preview_ip_range_whitelist: ['192.168.1.10']
max_spider_size: 10M

# Password login. Set enabled: false when users sign in another way; the
# policy applies to new passwords.
password_config:
  enabled: true
  policy:
    enabled: false
    minimum_length: 0

# bcrypt cost for new password hashes (4-31; each step doubles the work).
bcrypt_rounds: {{.BcryptRounds}}

# Access tokens for clients that support refresh tokens expire after
# refreshable_access_token_lifetime; refresh tokens after
# refresh_token_lifetime. Unset means they do not expire.
#refreshable_access_token_lifetime: 5m
#refresh_token_lifetime: 30d

# Signing in a new device from one already signed in (MSC3882): the signed-
# in client asks for a one-time login token (POST /login/get_token) that
# the new device logs in with. Off by default, as in Synapse. The request
# needs the password again unless require_ui_auth is false; a token is
# valid for token_timeout and for one login.
login_via_existing_session:
  enabled: false
  require_ui_auth: true
  token_timeout: 5m

# Rate limits: a bucket of burst_count requests refilled at per_second.
rc_login:
  address:
    per_second: {{index .LoginAddr 0}}
    burst_count: {{index .LoginAddr 1}}
  account:
    per_second: {{index .LoginAcct 0}}
    burst_count: {{index .LoginAcct 1}}
  failed_attempts:
    per_second: {{index .LoginFailed 0}}
    burst_count: {{index .LoginFailed 1}}
rc_registration:
  per_second: {{index .Registration 0}}
  burst_count: {{index .Registration 1}}
# Listing, cancelling, restarting and sending delayed events, per user (or
# per address without an access token).
rc_delayed_event_mgmt:
  per_second: {{index .DelayedMgmt 0}}
  burst_count: {{index .DelayedMgmt 1}}

# Delayed events (MSC4140; Element Call uses them to end a call membership
# when a client vanishes): off unless a maximum delay is set, as in
# Synapse. Each user may have msc4140_max_delayed_events_per_user of them
# scheduled at once (default 100; 0 turns the feature off).
#max_event_delay_duration: 24h
#experimental_features:
#  msc4140_max_delayed_events_per_user: 100
#  # Thread subscriptions (MSC4306, MSC4308), as in Synapse: a message in a
#  # thread then notifies only users subscribed to it (clients subscribe
#  # when the user takes part); off by default.
#  msc4306_enabled: false
#  # Deleting account data (MSC3391), as in Synapse: DELETE on the unstable
#  # endpoints, or PUT {}; off by default.
#  msc3391_enabled: false

# Extra keys merged into /.well-known/matrix/client, for example:
#extra_well_known_client_content:
#  org.example.custom: {"url": "https://example.org/"}

# Whom users and other servers' admins can contact about this server,
# served at /.well-known/matrix/support (MSC1929) in the same shape. Each
# contact has a matrix_id, an email_address or both, and a role
# (m.role.admin, m.role.security). Unset, that URL answers 404. (Synapse
# has no such key and leaves the file to the web server in front.)
#well_known_support:
#  contacts:
#    - matrix_id: "@admin:example.org"
#      email_address: admin@example.org
#      role: m.role.admin
#    - email_address: security@example.org
#      role: m.role.security
#  support_page: https://example.org/support

# The built-in admin dashboard, for server admins. By default it is served
# at /_hearth/admin/ on the client listener. Give it a port to move it to a
# listener of its own (bound to localhost unless bind_addresses says
# otherwise); set x_forwarded when a TLS-terminating proxy sits in front.
admin_dashboard:
  enabled: true
  #port: 8009
  #bind_addresses: ['127.0.0.1', '::1']
  #x_forwarded: false
  session_lifetime: 12h

# The built-in OAuth 2.0 server (the spec's "OAuth 2.0 API"), which Element X
# and other next-generation clients use to sign in and register in the
# browser, at /_hearth/oauth/ on the client listener. Set public_baseurl to
# the URL clients reach this server at. Password login keeps working.
# Without this section OAuth is off. See docs/oauth.md.
oauth:
  enabled: true
  access_token_lifetime: 5m
  session_lifetime: 1d

# Cache sizes, as in Synapse: every cache's base size is multiplied by
# global_factor and by its own entry in per_cache_factors. Lower them on
# small machines; the dashboard's Caches page shows hit rates and can
# change these live (it writes them back here).
caches:
  global_factor: 1.0
  per_cache_factors: {}

# Go runtime memory tuning. limit is a soft memory limit (e.g. 400M on a
# 1 GB machine; 0: GOMEMLIMIT if set, else automatic: 100M, or half as much
# again as is live when that is more); gc_percent is the GC target (0:
# GOGC if set, else Go's default, 100; lower holds less garbage at more
# CPU). While little is live the heap may still grow to 32M before a
# collection (docs/memory.md).
memory:
  limit: 0
  gc_percent: 0

# Server notices (Synapse's server_notices): admins send them with the
# admin API's send_server_notice, from this account, into a room of the
# recipient's own tagged m.server_notice. Off until the localpart is set.
#server_notices:
#  system_mxid_localpart: notices
#  system_mxid_display_name: "Server Notices"
#  system_mxid_avatar_url: "mxc://example.org/abc"
#  room_name: "Server Notices"

# Push notifications (Synapse's push). include_content: false leaves the
# message out of what push gateways are sent (who wrote, and where, still
# go). legacy_mention_rules: true brings back the default rules spec v1.17
# removed, which notify on the user's name or "@room" in a message's body,
# for clients and bots that mention without m.mentions (Synapse still has
# them). Gateways are dialled under ip_range_blacklist/ip_range_whitelist.
#push:
#  include_content: true
#  legacy_mention_rules: false

# Email (Synapse's email section): with it, users can add email addresses
# to their account, register with one and reset their password by one,
# each validated by a link the server emails through this SMTP server. By
# default it connects in plain text and upgrades with STARTTLS when the
# server offers it; require_transport_security refuses to send without
# STARTTLS, force_tls speaks TLS from the start (port 465). public_baseurl
# must be set: the emails link to it. See docs/email.md.
#email:
#  smtp_host: mail.example.org
#  smtp_port: 587
#  smtp_user: hearth
#  smtp_pass: secret
#  force_tls: false
#  require_transport_security: true
#  enable_tls: true
#  tlsname: mail.example.org    # default: smtp_host
#  smtp_ca_file: null           # PEM CAs for a private mail server (Hearth extension)
#  notif_from: "Your %(app)s homeserver <noreply@example.org>"
#  app_name: Matrix
#  validation_token_lifetime: 1h
#  subjects:
#    password_reset: "[%(server_name)s] Password reset"
#    email_validation: "[%(server_name)s] Validate your email"
#
# Require an email address to register (needs the email section):
#registrations_require_3pid: [email]
# Whether users may add and remove addresses themselves (default true).
#enable_3pid_changes: true
# Answer requestToken as if all went well rather than say whether an
# address is in use (the email then goes unsent).
#request_token_inhibit_3pid_errors: false
# Only addresses matching one of these may be put on accounts.
#allowed_local_3pids:
#  - medium: email
#    pattern: '^[^@]+@example\.org$'
# How often one client address may ask for validation emails.
#rc_3pid_validation:
#  per_second: 0.003
#  burst_count: 5

## Federation ##

# Whether outbound federation checks other servers' TLS certificates (the
# spec requires valid ones). Turn it off only for a closed test federation.
federation_verify_certificates: true

# PEM files of the certificate authorities federation trusts. As in
# Synapse, this list REPLACES the operating system's roots: with it set,
# only these CAs are trusted for federation (and for .well-known lookups).
# Meant for private federations with their own CA.
#federation_custom_ca_list:
#  - /etc/hearth/federation-ca.pem

# Federate only with these servers (exact server names). Unset means every
# server; an empty list means none. Requests to other servers are refused
# before any network traffic.
#federation_domain_whitelist:
#  - lon.example.com
#  - nyc.example.com

# Outbound federation (requests, key fetches, remote media) never connects
# to private, loopback, link-local, unique-local, CGNAT, multicast or other
# reserved addresses: that built-in list is a superset of Synapse's default
# ip_range_blacklist and is checked on the address actually dialled, after
# DNS. ip_range_blacklist adds ranges to it (unlike Synapse, it cannot
# remove the built-in ones); ip_range_whitelist makes exceptions, e.g. for
# servers of a private federation on your LAN.
#ip_range_blacklist: ['198.51.100.0/24']
#ip_range_whitelist: ['192.168.1.0/24']

# Notaries asked for other servers' signing keys when those servers cannot
# be reached. With verify_keys, answers must be signed by one of the given
# keys. accept_keys_insecurely allows an entry without verify_keys while
# federation_verify_certificates is false. The default is matrix.org (as in
# Synapse); an empty list (trusted_key_servers: []) asks servers directly
# only. Trusting matrix.org without verify_keys logs a warning at start
# unless suppress_key_server_warning is true.
trusted_key_servers:
  - server_name: "matrix.org"
#  - server_name: "notary.example.org"
#    verify_keys:
#      "ed25519:auto": "abcdefghijklmnopqrstuvwxyzabcdefghijklmopqr"
#    accept_keys_insecurely: false
suppress_key_server_warning: false

# Whether other servers may read this server's public room directory.
allow_public_rooms_over_federation: false

# Whether other servers are shown the display names of this server's users'
# devices (with their keys, and in device list updates). Off, as in
# Synapse: a device's name often says more about its owner than they meant.
allow_device_name_lookup_over_federation: false

# Serve /.well-known/matrix/server pointing other servers at
# public_baseurl's host on port 443, for deployments where federation goes
# through the same HTTPS port as clients instead of 8448 (Synapse's key).
# The answer carries Cache-Control, so other servers keep it for a day.
serve_server_wellknown: false

# Keys this server signed with before, still published so that what they
# signed can be checked: key ID → base64 public key and when it was last
# used (ms since the Unix epoch). Synapse's export_signing_key output fits.
#old_signing_keys:
#  "ed25519:id": { key: "base64string", expired_ts: 123456789123 }
`))
