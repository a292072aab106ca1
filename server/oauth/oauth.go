// Package oauth is Hearth's built-in OAuth 2.0 authorisation server (spec:
// Client-Server API, "OAuth 2.0 API"): the endpoints Element X and other
// next-generation clients sign in through, and the server-rendered pages
// a user signs in, registers, consents and manages their account on.
//
// The protocol — authorisation and token endpoints, redirect URI matching,
// PKCE, refresh and revocation — is github.com/zitadel/oidc's op package;
// this package supplies its storage over Hearth's Store (opstore.go), the
// Matrix rules (scopes.go), dynamic client registration (clients.go), the
// device authorisation grant's page (device.go) and the pages (pages.go,
// including the SSO door for OAuth 2.0 aware legacy clients). Every session it grants is an ordinary Hearth
// device with ordinary access and refresh tokens, so /devices, the admin
// API, the dashboard, logout and deactivation all apply to it.
package oauth

import (
	"context"
	"crypto/rand"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"hearth/server"
	"hearth/server/htmlpage"
	"hearth/server/storage"
)

// Deps are the authorisation server's dependencies.
type Deps struct {
	Server *server.Server
}

// Provider is the authorisation server. It implements server.OAuthProvider.
type Provider struct {
	srv    *server.Server
	store  *storage.Store
	op     *op.Provider
	ops    *opStore
	router *chi.Mux
	pages  *htmlpage.Pages
}

var _ server.OAuthProvider = (*Provider)(nil)

// The endpoints' paths under server.OAuthPath. The library serves the
// first four (and pathDevice, device.go); registration and the pages are
// this package's.
const (
	pathAuthorize    = "oauth2/auth"
	pathToken        = "oauth2/token"
	pathRevoke       = "oauth2/revoke"
	pathKeys         = "oauth2/keys"
	pathRegistration = "/oauth2/registration"
	pathAccount      = "/account"
)

// New builds the authorisation server. The issuer is public_baseurl plus
// server.OAuthPath, or, without public_baseurl, the address each request
// came to (fine on one host; set public_baseurl behind a proxy).
func New(d Deps) (*Provider, error) {
	p := &Provider{srv: d.Server, store: d.Server.Store()}
	p.pages = &htmlpage.Pages{Name: "oauth", Log: d.Server.Log,
		Internal: "Something went wrong inside the server. The details are in its log.", ErrorPage: p.errorPage}
	p.ops = &opStore{p: p}
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return nil, err
	}
	// Authorisation codes are the library's AES-GCM sealing of a random
	// request ID, under a key that lives as long as the process (a code
	// lives minutes); access tokens are Hearth's own (tokenCrypto).
	crypto := &tokenCrypto{codes: op.NewAES256GCMCrypto(key, "hearth-code"), store: p.store}
	cfg := &op.Config{CodeMethodS256: true, GrantTypeRefreshToken: true, DeviceAuthorization: op.DeviceAuthorizationConfig{
		Lifetime: deviceLifetime, PollInterval: devicePoll, UserFormPath: server.OAuthPath + "/device", UserCode: op.UserCodeBase20}}
	// Without public_baseurl: the host the request came to, over https
	// when it came over TLS (or through a trusted proxy that says so).
	issuer := func(bool) (op.IssuerFromRequest, error) {
		return func(r *http.Request) string {
			scheme := "http"
			if d.Server.IsHTTPS(r) {
				scheme = "https"
			}
			return scheme + "://" + r.Host + server.OAuthPath
		}, nil
	}
	if base := d.Server.Config().PublicBaseURL; base != "" {
		issuer = op.StaticIssuer(strings.TrimSuffix(base, "/") + server.OAuthPath)
	}
	provider, err := op.NewProvider(cfg, p.ops, issuer,
		op.WithAllowInsecure(), // plain http for localhost and tests; public_baseurl decides in production
		op.WithCrypto(crypto),
		op.WithCustomAuthEndpoint(op.NewEndpoint(pathAuthorize)),
		op.WithCustomTokenEndpoint(op.NewEndpoint(pathToken)),
		op.WithCustomRevocationEndpoint(op.NewEndpoint(pathRevoke)),
		op.WithCustomKeysEndpoint(op.NewEndpoint(pathKeys)),
		op.WithCustomDeviceAuthorizationEndpoint(op.NewEndpoint(pathDevice)),
		op.WithLogger(d.Server.Log().With("component", "oauth")),
	)
	if err != nil {
		return nil, err
	}
	p.op = provider
	p.router = p.routes()
	return p, nil
}

// Hook adapts New to server.Deps.OAuth; a failure is logged and leaves
// the OAuth 2.0 API off (auth_metadata answers 404).
func Hook(build func(*Provider)) func(*server.Server) server.OAuthProvider {
	return func(s *server.Server) server.OAuthProvider {
		p, err := New(Deps{Server: s})
		if err != nil {
			s.Log().Error("oauth: the OAuth 2.0 API is off: cannot start the provider", "err", err)
			return nil
		}
		if build != nil {
			build(p)
		}
		return p
	}
}

// routes: the pages and client registration are this package's; the rest
// is the library's router.
func (p *Provider) routes() *chi.Mux {
	r := chi.NewRouter()
	r.Use(p.withRequestInfo)
	r.Post(pathRegistration, p.postClientRegistration)
	r.With(p.checkDeviceScope).Post("/"+pathDevice, p.op.ServeHTTP)
	r.Group(func(r chi.Router) {
		r.Use(htmlpage.SecurityHeaders(pageCSP))
		r.Get("/login", p.pages.Handler(p.getLogin))
		r.Post("/login", p.pages.Handler(p.postLogin))
		r.Get("/register", p.pages.Handler(p.getRegister))
		r.Post("/register", p.pages.Handler(p.postRegister))
		r.Get("/consent", p.pages.Handler(p.getConsent))
		r.Post("/consent", p.pages.Handler(p.postConsent))
		r.Post("/logout", p.pages.Handler(p.postSignOut))
		r.Get("/sso", p.pages.Handler(p.getSSO))
		r.Post("/sso", p.pages.Handler(p.postSSO))
		r.Get("/device", p.pages.Handler(p.getDevice))
		r.Post("/device", p.pages.Handler(p.postDevice))
		r.Get(pathAccount, p.pages.Handler(p.getAccount))
		r.Post(pathAccount+"/profile", p.pages.Handler(p.postProfile))
		r.Post(pathAccount+"/cross_signing_reset", p.pages.Handler(p.postCrossSigningReset))
		r.Post(pathAccount+"/sessions/end", p.pages.Handler(p.postEndSession))
		r.Post(pathAccount+"/deactivate", p.pages.Handler(p.postDeactivate))
		r.Handle("/static/*", http.StripPrefix(server.OAuthPath+"/static/", htmlpage.Static()))
	})
	r.Mount("/", p.op)
	return r
}

// ServeHTTP serves everything under server.OAuthPath.
func (p *Provider) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.router.ServeHTTP(w, r) }

// The provider is a chi.Routes, so that the server's router, where it is
// mounted, lists its routes with the rest (chi.Walk), and names them in
// its logs.
var _ chi.Routes = (*Provider)(nil)

// Routes is the provider's routing tree.
func (p *Provider) Routes() []chi.Route { return p.router.Routes() }

// Middlewares are the provider's own.
func (p *Provider) Middlewares() chi.Middlewares { return p.router.Middlewares() }

// Match reports whether method and path have a handler here.
func (p *Provider) Match(rctx *chi.Context, method, path string) bool {
	return p.router.Match(rctx, method, path)
}

// Find is the pattern of the route method and path reach.
func (p *Provider) Find(rctx *chi.Context, method, path string) string {
	return p.router.Find(rctx, method, path)
}

// Run sweeps expired authorisation requests and browser sessions until ctx
// ends.
func (p *Provider) Run(ctx context.Context) {
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			now := p.srv.Now()
			if err := p.store.DeleteOAuthStateBefore(ctx, now.Add(-authRequestTTL).UnixMilli(), now.UnixMilli()); err != nil && ctx.Err() == nil {
				p.srv.Log().Warn("oauth: sweeping expired state failed", "err", err)
			}
		}
	}
}

// accountActions are the account management actions the account page
// understands (spec: "Account management URL actions"), with the names
// MSC4191 used before v1.18, which clients released earlier send.
var accountActions = []string{
	"org.matrix.profile",
	"org.matrix.devices_list", "org.matrix.sessions_list",
	"org.matrix.device_view", "org.matrix.session_view",
	"org.matrix.device_delete", "org.matrix.session_end",
	"org.matrix.account_deactivate",
	"org.matrix.cross_signing_reset",
}

// Metadata is the authorisation server metadata (spec: "Server metadata
// discovery"; RFC 8414) for GET /_matrix/client/v1/auth_metadata.
func (p *Provider) Metadata(r *http.Request) (map[string]any, error) {
	issuer := p.op.IssuerFromRequest(r)
	abs := func(path string) string { return strings.TrimSuffix(issuer, "/") + "/" + strings.TrimPrefix(path, "/") }
	return map[string]any{
		"issuer":                                     issuer,
		"authorization_endpoint":                     abs(pathAuthorize),
		"token_endpoint":                             abs(pathToken),
		"revocation_endpoint":                        abs(pathRevoke),
		"registration_endpoint":                      abs(pathRegistration),
		"jwks_uri":                                   abs(pathKeys),
		"response_types_supported":                   []string{"code"},
		"response_modes_supported":                   []string{"query", "fragment"},
		"grant_types_supported":                      []string{"authorization_code", "refresh_token", string(oidc.GrantTypeDeviceCode)},
		"device_authorization_endpoint":              abs(pathDevice),
		"code_challenge_methods_supported":           []string{"S256"},
		"token_endpoint_auth_methods_supported":      []string{"none"},
		"revocation_endpoint_auth_methods_supported": []string{"none"},
		"scopes_supported":                           []string{"openid", scopeAPI, scopeDevicePrefix + "*"},
		"prompt_values_supported":                    []string{"create"},
		"account_management_uri":                     abs(pathAccount),
		"account_management_actions_supported":       accountActions,
	}, nil
}

// accessLifetime is how long an access token lives (oauth.access_token_lifetime).
func (p *Provider) accessLifetime() time.Duration {
	if d := p.srv.Config().OAuth.AccessTokenLifetime.Std(); d > 0 {
		return d
	}
	return 5 * time.Minute
}

// client loads a registered client.
func (p *Provider) client(ctx context.Context, id string) (*client, error) {
	raw, err := p.store.OAuthClient(ctx, id)
	if err != nil {
		return nil, err
	}
	c := &client{}
	if err := jsonUnmarshal(raw, &c.md); err != nil {
		return nil, err
	}
	return c, nil
}

// tokenCrypto is how the library turns token IDs into bearer tokens and
// back. The library's own scheme seals "tokenID:subject"; Hearth's access
// tokens are already opaque random strings looked up in the database, so
// for them the token ID is the token, and reading one back is a session
// lookup. Anything else (authorisation codes) is sealed with AES-GCM.
type tokenCrypto struct {
	codes op.Crypto
	store *storage.Store
}

const accessTokenPrefix = "syt_"

func (c *tokenCrypto) Encrypt(s string) (string, error) {
	if tok, _, ok := strings.Cut(s, ":"); ok && strings.HasPrefix(tok, accessTokenPrefix) {
		return tok, nil
	}
	return c.codes.Encrypt(s)
}

func (c *tokenCrypto) Decrypt(s string) (string, error) {
	if strings.HasPrefix(s, accessTokenPrefix) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		se, err := c.store.SessionByToken(ctx, s)
		if err != nil {
			return "", err
		}
		return s + ":" + se.UserID, nil
	}
	return c.codes.Decrypt(s)
}

// requestInfo is the browser or client behind a request, for the device
// a token request creates.
type requestInfo struct{ ip, userAgent string }

type requestInfoKey struct{}

func (p *Provider) withRequestInfo(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := requestInfo{ip: p.srv.ClientIP(r), userAgent: p.srv.UserAgent(r)}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, info)))
	})
}

func requestInfoFrom(ctx context.Context) requestInfo {
	info, _ := ctx.Value(requestInfoKey{}).(requestInfo)
	return info
}
