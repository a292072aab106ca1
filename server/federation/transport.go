package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"hearth/config"
	"hearth/server/netguard"
)

// Transport is the http.RoundTripper for matrix-federation://<server
// name>/<path> URLs. For each request it:
//
//   - refuses a destination not on federation_domain_whitelist (when set),
//     before any network I/O;
//   - resolves the server name (Resolver, spec "Resolving server names");
//   - dials the resolved targets in order through a netguard.Dialer
//     (built-in deny list plus ip_range_blacklist, ip_range_whitelist
//     exceptions), checking each address after DNS;
//   - speaks TLS with the SNI and certificate name the resolution step
//     requires, verified against the system roots, or the
//     federation_custom_ca_list CAs instead, or not at all with
//     federation_verify_certificates: false;
//   - sends the Host header the step requires.
//
// Connections are kept per destination and reused. Proxies from the
// environment are never used: a proxy would dial for us, past the checks.
type Transport struct {
	resolver  *Resolver
	dialer    *netguard.Dialer
	tlsConfig *tls.Config
	whitelist map[string]bool // nil: every destination
	timeouts  Timeouts
	now       func() time.Time

	mu        sync.Mutex
	dests     map[string]*destination
	lastSweep time.Time
}

// destination is the connection pool of one server name.
type destination struct {
	tr       *http.Transport
	lastUsed time.Time
}

// Timeouts bound the stages of a federation request. Zero fields take the
// defaults.
type Timeouts struct {
	// Dial bounds one TCP connection attempt to one address (10 s).
	Dial time.Duration
	// TLSHandshake bounds the handshake with one target (10 s).
	TLSHandshake time.Duration
	// ResponseHeader bounds the time from the start of a request (after
	// resolution) to its response headers (60 s), for requests whose
	// context has no deadline; a deadline on the request's context takes
	// its place, so a caller expecting a slow answer (send_join of a large
	// room) sets one.
	ResponseHeader time.Duration
	// Idle is how long an unused connection is kept for reuse (90 s).
	Idle time.Duration
}

func (t Timeouts) withDefaults() Timeouts {
	if t.Dial == 0 {
		t.Dial = netguard.DefaultTimeout
	}
	if t.TLSHandshake == 0 {
		t.TLSHandshake = 10 * time.Second
	}
	if t.ResponseHeader == 0 {
		t.ResponseHeader = 60 * time.Second
	}
	if t.Idle == 0 {
		t.Idle = 90 * time.Second
	}
	return t
}

// transportOptions collects TransportOptions.
type transportOptions struct {
	resolver     *Resolver
	resolverOpts []ResolverOption
	policy       netguard.Policy
	rootCAs      *x509.CertPool
	insecure     bool
	whitelist    []string
	timeouts     Timeouts
	// dial replaces the dialer's connect (tests record it).
	dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// TransportOption configures a Transport.
type TransportOption func(*transportOptions)

// WithResolver shares an existing Resolver (and its caches). Its
// .well-known client is then the one it was made with. Without this
// option the Transport makes its own Resolver whose .well-known fetches use
// the Transport's address policy and TLS settings.
func WithResolver(r *Resolver) TransportOption {
	return func(o *transportOptions) { o.resolver = r }
}

// WithResolverOptions passes options (WithDNSServers, WithClock) to the
// Resolver the Transport makes.
func WithResolverOptions(opts ...ResolverOption) TransportOption {
	return func(o *transportOptions) { o.resolverOpts = append(o.resolverOpts, opts...) }
}

// WithAddressPolicy sets which addresses may be dialled: the built-in
// private ranges are always refused unless p.Allow names them (see
// netguard.Policy). The default is the zero Policy, named
// "ip_range_blacklist".
func WithAddressPolicy(p netguard.Policy) TransportOption {
	return func(o *transportOptions) { o.policy = p }
}

// WithRootCAs makes the Transport trust these CAs instead of the system
// roots (federation_custom_ca_list).
func WithRootCAs(pool *x509.CertPool) TransportOption {
	return func(o *transportOptions) { o.rootCAs = pool }
}

// WithoutCertificateVerification accepts any certificate
// (federation_verify_certificates: false). SNI is still sent.
func WithoutCertificateVerification() TransportOption {
	return func(o *transportOptions) { o.insecure = true }
}

// WithDomainWhitelist allows only these destinations (exact server names,
// compared without regard to case). nil allows every destination; an
// empty non-nil list allows none (federation_domain_whitelist).
func WithDomainWhitelist(names []string) TransportOption {
	return func(o *transportOptions) {
		o.whitelist = names
		if names != nil && len(names) == 0 {
			o.whitelist = []string{}
		}
	}
}

// WithTimeouts sets the stage timeouts; zero fields keep the defaults.
func WithTimeouts(t Timeouts) TransportOption {
	return func(o *transportOptions) { o.timeouts = t }
}

// TransportOptionsFromConfig turns the federation keys of cfg into
// options: ip_range_blacklist/whitelist, federation_custom_ca_list
// (loaded now; an error names the key and file),
// federation_verify_certificates and federation_domain_whitelist.
func TransportOptionsFromConfig(cfg *config.Config) ([]TransportOption, error) {
	deny, allow := cfg.FederationRanges()
	opts := []TransportOption{
		WithAddressPolicy(netguard.Policy{Deny: deny, Allow: allow, Name: "ip_range_blacklist"}),
		WithDomainWhitelist(cfg.FederationDomainWhitelist),
	}
	pool, err := cfg.FederationRootCAs()
	if err != nil {
		return nil, err
	}
	if pool != nil {
		opts = append(opts, WithRootCAs(pool))
	}
	if !cfg.VerifyFederationCertificates() {
		opts = append(opts, WithoutCertificateVerification())
	}
	return opts, nil
}

// NewTransport makes a Transport. Use it as an http.Client's Transport and
// request matrix-federation://<server name>/<path> URLs.
func NewTransport(opts ...TransportOption) (*Transport, error) {
	var o transportOptions
	o.policy.Name = "ip_range_blacklist"
	for _, f := range opts {
		f(&o)
	}
	t := &Transport{
		timeouts: o.timeouts.withDefaults(),
		now:      time.Now,
		dests:    map[string]*destination{},
		tlsConfig: &tls.Config{
			MinVersion:         tls.VersionTLS12,
			RootCAs:            o.rootCAs,
			InsecureSkipVerify: o.insecure, // federation_verify_certificates: false
			NextProtos:         []string{"http/1.1"},
		},
	}
	if o.whitelist != nil {
		t.whitelist = make(map[string]bool, len(o.whitelist))
		for _, n := range o.whitelist {
			t.whitelist[strings.ToLower(n)] = true
		}
	}
	t.dialer = &netguard.Dialer{Policy: o.policy, Timeout: t.timeouts.Dial, Dial: o.dial}
	t.resolver = o.resolver
	if t.resolver == nil {
		// The resolver's .well-known fetches dial through the same guard
		// and trust the same CAs as federation requests (as in Synapse).
		wk := newWellKnownClient(t.dialer, t.tlsConfig.Clone())
		wk.Transport.(*http.Transport).TLSClientConfig.NextProtos = nil
		r, err := NewResolver(append([]ResolverOption{WithWellKnownClient(wk)}, o.resolverOpts...)...)
		if err != nil {
			return nil, err
		}
		t.resolver = r
	}
	// Targets' hostnames are resolved as the resolver resolves them.
	t.dialer.Lookup = t.resolver.LookupIP
	return t, nil
}

// NewTransportFromConfig is NewTransport with the options of
// TransportOptionsFromConfig, then opts.
func NewTransportFromConfig(cfg *config.Config, opts ...TransportOption) (*Transport, error) {
	base, err := TransportOptionsFromConfig(cfg)
	if err != nil {
		return nil, err
	}
	return NewTransport(append(base, opts...)...)
}

// Resolver is the Transport's resolver (for diagnostics, or to share).
func (t *Transport) Resolver() *Resolver { return t.resolver }

// WebClient returns a client for ordinary http and https URLs that dials
// through the Transport's address policy and trusts the same CAs: for the
// URL another server may send in place of media (a Location part). It
// follows at most 5 redirects, to http(s) URLs only. These URLs are not
// server names, so federation_domain_whitelist does not apply to them.
func (t *Transport) WebClient() *http.Client {
	tc := t.tlsConfig.Clone()
	tc.NextProtos = nil
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                  nil,
			DialContext:            t.dialer.DialContext,
			TLSClientConfig:        tc,
			TLSHandshakeTimeout:    t.timeouts.TLSHandshake,
			ResponseHeaderTimeout:  t.timeouts.ResponseHeader,
			MaxIdleConns:           8,
			IdleConnTimeout:        t.timeouts.Idle,
			MaxResponseHeaderBytes: 64 << 10,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("federation: too many redirects")
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return errors.New("federation: redirect to a non-HTTP URL")
			}
			return nil
		},
	}
}

// ErrNotWhitelisted is the refusal of a destination that is not on
// federation_domain_whitelist.
var ErrNotWhitelisted = errors.New("not on federation_domain_whitelist")

// Error is a failed request to another server. It names the destination
// and, once resolution got that far, the resolution step and targets.
type Error struct {
	Destination string
	// Resolution is nil when the request failed before or during
	// resolution.
	Resolution *Resolution
	// Op is the stage that failed: "whitelist", "resolve", "connect" or
	// "request".
	Op  string
	Err error
}

func (e *Error) Error() string {
	if e.Resolution != nil {
		return fmt.Sprintf("federation request to %s: %s: %v [%s]", e.Destination, e.Op, e.Err, e.Resolution)
	}
	return fmt.Sprintf("federation request to %s: %s: %v", e.Destination, e.Op, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Allowed reports whether federation_domain_whitelist lets requests go to
// serverName.
func (t *Transport) Allowed(serverName string) bool {
	return t.whitelist == nil || t.whitelist[strings.ToLower(serverName)]
}

// errHeaderTimeout is the cause of a request cancelled for taking longer
// than Timeouts.ResponseHeader.
var errHeaderTimeout = errors.New("no response headers in time")

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	fail := func(e *Error) (*http.Response, error) {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, e
	}
	if req.URL == nil {
		return fail(&Error{Op: "request", Err: errors.New("no URL")})
	}
	if req.URL.Scheme != Scheme {
		return fail(&Error{Destination: req.URL.Host, Op: "request", Err: fmt.Errorf("URL scheme is %q, not %s", req.URL.Scheme, Scheme)})
	}
	name := req.URL.Host
	if !t.Allowed(name) {
		return fail(&Error{Destination: name, Op: "whitelist", Err: ErrNotWhitelisted})
	}
	res, err := t.resolver.Resolve(req.Context(), name)
	if err != nil {
		return fail(&Error{Destination: name, Op: "resolve", Err: err})
	}

	ctx, cancel := req.Context(), context.CancelCauseFunc(func(error) {})
	var timer *time.Timer
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancel = context.WithCancelCause(ctx)
		timer = time.AfterFunc(t.timeouts.ResponseHeader, func() { cancel(errHeaderTimeout) })
	}
	out := req.Clone(ctx)
	out.URL.Scheme = "https"
	out.Host = res.Host
	resp, err := t.destination(name).RoundTrip(out)
	if timer != nil {
		timer.Stop()
	}
	if err != nil {
		cancel(nil)
		if errors.Is(context.Cause(ctx), errHeaderTimeout) {
			err = fmt.Errorf("%w (%s)", errHeaderTimeout, t.timeouts.ResponseHeader)
		}
		op := "request"
		var de *dialError
		if errors.As(err, &de) {
			op = "connect"
		}
		return nil, &Error{Destination: name, Resolution: res, Op: op, Err: err}
	}
	// The body is read under ctx: cancel it only once the body is closed.
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: func() { cancel(nil) }}
	// Redirects and errors are relative to the caller's URL, not ours.
	resp.Request = req
	return resp, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel func()
}

func (b *cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// idleDestination is how long a destination's pool is kept unused; the
// pools are swept at most every sweepEvery.
const (
	idleDestination = 10 * time.Minute
	sweepEvery      = time.Minute
)

// destination returns the connection pool of name, making it if needed.
func (t *Transport) destination(name string) *http.Transport {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Sub(t.lastSweep) > sweepEvery {
		t.lastSweep = now
		for n, d := range t.dests {
			if now.Sub(d.lastUsed) > idleDestination {
				d.tr.CloseIdleConnections()
				delete(t.dests, n)
			}
		}
	}
	d := t.dests[name]
	if d == nil {
		d = &destination{tr: &http.Transport{
			Proxy: nil,
			DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return t.dialTLS(ctx, name)
			},
			MaxIdleConnsPerHost:    8,
			IdleConnTimeout:        t.timeouts.Idle,
			MaxResponseHeaderBytes: 64 << 10,
			ExpectContinueTimeout:  time.Second,
		}}
		t.dests[name] = d
	}
	d.lastUsed = now
	return d.tr
}

// CloseIdleConnections closes every idle connection, to every destination.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for n, d := range t.dests {
		d.tr.CloseIdleConnections()
		delete(t.dests, n)
	}
}

// dialError is the failure to connect to any target of a resolution.
type dialError struct {
	errs []error
}

func (e *dialError) Error() string {
	s := make([]string, len(e.errs))
	for i, err := range e.errs {
		s[i] = err.Error()
	}
	return strings.Join(s, "; ")
}

func (e *dialError) Unwrap() []error { return e.errs }

// dialTLS connects to the first target of name's resolution that answers
// and completes a TLS handshake for the step's certificate name.
func (t *Transport) dialTLS(ctx context.Context, name string) (net.Conn, error) {
	res, err := t.resolver.Resolve(ctx, name)
	if err != nil {
		return nil, err
	}
	cfg := t.tlsConfig.Clone()
	cfg.ServerName = res.TLSName
	var errs []error
	for _, target := range res.Targets {
		raw, err := t.dialer.DialContext(ctx, "tcp", target.Addr())
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", target.Addr(), err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		conn := tls.Client(raw, cfg)
		hctx, cancel := context.WithTimeout(ctx, t.timeouts.TLSHandshake)
		err = conn.HandshakeContext(hctx)
		cancel()
		if err != nil {
			raw.Close()
			errs = append(errs, fmt.Errorf("%s: TLS handshake (certificate for %s): %w", target.Addr(), res.TLSName, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		return conn, nil
	}
	// Nothing answered: the next attempt asks DNS again, in case the
	// records changed (the .well-known answer stays cached).
	t.resolver.forget(name)
	return nil, &dialError{errs: errs}
}
