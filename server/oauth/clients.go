package oauth

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"hearth/server"
)

// clientMetadata is a registered client (spec: "Client metadata",
// RFC 7591). Only the fields the spec gives meaning to are kept; localized
// variants ("client_name#fr") are dropped, which the spec allows.
type clientMetadata struct {
	ClientID                string   `json:"client_id,omitempty"`
	ClientName              string   `json:"client_name,omitempty"`
	ClientURI               string   `json:"client_uri"`
	LogoURI                 string   `json:"logo_uri,omitempty"`
	TOSURI                  string   `json:"tos_uri,omitempty"`
	PolicyURI               string   `json:"policy_uri,omitempty"`
	RedirectURIs            []string `json:"redirect_uris"`
	ResponseTypes           []string `json:"response_types"`
	GrantTypes              []string `json:"grant_types"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	ApplicationType         string   `json:"application_type"`
}

// registrationError is an RFC 7591 section 3.2.2 error answer.
type registrationError struct {
	Code, Description string
}

func (e *registrationError) Error() string { return e.Code + ": " + e.Description }

func badMetadata(format string, args ...any) error {
	return &registrationError{Code: "invalid_client_metadata", Description: fmt.Sprintf(format, args...)}
}

func badRedirect(format string, args ...any) error {
	return &registrationError{Code: "invalid_redirect_uri", Description: fmt.Sprintf(format, args...)}
}

// validate applies the spec's client metadata rules and fills defaults:
// client_uri is an https URL without credentials, and the other URIs
// share its host (or a subdomain); redirect URIs follow "Redirect URI
// validation" for the application type; only the "none" token endpoint
// auth method is offered (Matrix clients are public clients). Unknown
// response and grant types are ignored, as the spec requires.
func (m *clientMetadata) validate() error {
	base, err := httpsURL("client_uri", m.ClientURI)
	if err != nil {
		return err
	}
	for _, f := range []struct{ key, v string }{{"logo_uri", m.LogoURI}, {"tos_uri", m.TOSURI}, {"policy_uri", m.PolicyURI}} {
		if f.v == "" {
			continue
		}
		u, err := httpsURL(f.key, f.v)
		if err != nil {
			return err
		}
		if !sameSite(u.Hostname(), base.Hostname()) {
			return badMetadata("%s must be on the host of client_uri (%s) or a subdomain of it", f.key, base.Hostname())
		}
	}
	switch m.ApplicationType {
	case "":
		m.ApplicationType = "web"
	case "web", "native":
	default:
		return badMetadata("application_type must be web or native")
	}
	switch m.TokenEndpointAuthMethod {
	case "", "none":
		m.TokenEndpointAuthMethod = "none"
	default:
		return badMetadata("token_endpoint_auth_method %q is not supported: this server registers public clients (none)", m.TokenEndpointAuthMethod)
	}
	if len(m.ResponseTypes) == 0 {
		m.ResponseTypes = []string{"code"}
	}
	m.ResponseTypes = known(m.ResponseTypes, "code")
	if len(m.GrantTypes) == 0 {
		m.GrantTypes = []string{"authorization_code"}
	}
	m.GrantTypes = known(m.GrantTypes, string(oidc.GrantTypeCode), string(oidc.GrantTypeRefreshToken), string(oidc.GrantTypeDeviceCode))
	if slices.Contains(m.GrantTypes, string(oidc.GrantTypeCode)) {
		if len(m.RedirectURIs) == 0 {
			return badRedirect("redirect_uris is required for the authorization_code grant")
		}
		if !slices.Contains(m.ResponseTypes, "code") {
			return badMetadata("response_types must include code for the authorization_code grant")
		}
	}
	for _, ru := range m.RedirectURIs {
		if err := validRedirect(ru, m.ApplicationType, base.Hostname()); err != nil {
			return err
		}
	}
	return nil
}

// known keeps the values the server understands, in the client's order.
func known(vals []string, supported ...string) []string {
	out := []string{}
	for _, v := range vals {
		if slices.Contains(supported, v) && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

func httpsURL(key, raw string) (*url.URL, error) {
	if raw == "" {
		return nil, badMetadata("%s is required", key)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, badMetadata("%s must be an https URL", key)
	}
	if u.User != nil {
		return nil, badMetadata("%s must not carry a user or password", key)
	}
	return u, nil
}

// sameSite reports whether host is base or a subdomain of it.
func sameSite(host, base string) bool {
	host, base = strings.ToLower(host), strings.ToLower(base)
	return host == base || strings.HasSuffix(host, "."+base)
}

// validRedirect applies the spec's "Redirect URI validation".
func validRedirect(raw, appType, baseHost string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return badRedirect("%q is not an absolute URI", raw)
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return badRedirect("%q must not have a fragment", raw)
	}
	webRule := func() error {
		if u.User != nil {
			return badRedirect("%q must not carry a user or password", raw)
		}
		if !sameSite(u.Hostname(), baseHost) {
			return badRedirect("%q must be on the host of client_uri (%s) or a subdomain of it", raw, baseHost)
		}
		return nil
	}
	switch {
	case u.Scheme == "https":
		return webRule()
	case appType == "web":
		return badRedirect("%q: a web client's redirect URIs must use https", raw)
	case u.Scheme == "http":
		// A loopback redirect for a native app: any port is accepted at
		// authorisation time, so none may be registered.
		if host := u.Hostname(); host != "localhost" && !isLoopbackIP(host) {
			return badRedirect("%q: a native client's http redirect URI must be on localhost, 127.0.0.1 or [::1]", raw)
		}
		if u.Port() != "" {
			return badRedirect("%q: a loopback redirect URI must not have a port (any port is accepted when signing in)", raw)
		}
		if u.User != nil {
			return badRedirect("%q must not carry a user or password", raw)
		}
		return nil
	default:
		// A private-use scheme: the client_uri's host in reverse-DNS
		// notation, and no authority.
		labels := strings.Split(strings.ToLower(baseHost), ".")
		slices.Reverse(labels)
		reversed := strings.Join(labels, ".")
		if s := strings.ToLower(u.Scheme); s != reversed && !strings.HasPrefix(s, reversed+".") {
			return badRedirect("%q: a private-use URI scheme must start with %s (client_uri's host reversed)", raw, reversed)
		}
		if u.Host != "" || u.User != nil || strings.HasPrefix(u.Opaque, "//") || strings.HasPrefix(raw[len(u.Scheme)+1:], "//") {
			return badRedirect("%q: a private-use URI must not have an authority (use %s:/path)", raw, u.Scheme)
		}
		return nil
	}
}

func isLoopbackIP(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && (ip.Equal(net.IPv4(127, 0, 0, 1)) || ip.Equal(net.IPv6loopback))
}

// clientID derives the client ID from the metadata, so identical
// registrations share one client (the spec's suggested de-duplication:
// every install of an app registers the same metadata at each sign-in).
func clientID(canonical []byte) string {
	h := sha256.Sum256(canonical)
	return strings.ToUpper(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(h[:16]))
}

// POST /_hearth/oauth/oauth2/registration
//
// Dynamic client registration (spec: "Dynamic client registration flow",
// RFC 7591): validate, store, answer 201 with the client ID and the
// registered metadata.
func (p *Provider) postClientRegistration(w http.ResponseWriter, r *http.Request) {
	if err := p.srv.TakeRegistrationAttempt(r); err != nil {
		writeOAuthJSON(w, http.StatusTooManyRequests, map[string]string{"error": "slow_down", "error_description": "too many client registrations"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		writeOAuthJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_client_metadata", "error_description": "the body could not be read"})
		return
	}
	var md clientMetadata
	if err := json.Unmarshal(body, &md); err != nil {
		writeOAuthJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_client_metadata", "error_description": "the body is not a JSON client metadata object"})
		return
	}
	md.ClientID = ""
	if err := md.validate(); err != nil {
		var re *registrationError
		if errors.As(err, &re) {
			writeOAuthJSON(w, http.StatusBadRequest, map[string]string{"error": re.Code, "error_description": re.Description})
			return
		}
		p.internalError(w, r, err)
		return
	}
	canonical, err := json.Marshal(md)
	if err != nil {
		p.internalError(w, r, err)
		return
	}
	md.ClientID = clientID(canonical)
	stored, err := json.Marshal(md)
	if err != nil {
		p.internalError(w, r, err)
		return
	}
	if err := p.store.CreateOAuthClient(r.Context(), md.ClientID, string(stored)); err != nil {
		// Identical metadata registered before: the same client.
		if _, lookupErr := p.store.OAuthClient(r.Context(), md.ClientID); lookupErr != nil {
			p.internalError(w, r, err)
			return
		}
	}
	writeOAuthJSON(w, http.StatusCreated, md)
}

func writeOAuthJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (p *Provider) internalError(w http.ResponseWriter, r *http.Request, err error) {
	p.srv.Log().Error("oauth: internal error", "method", r.Method, "path", r.URL.Path, "err", err)
	writeOAuthJSON(w, http.StatusInternalServerError, map[string]string{"error": "server_error"})
}

// client is a registered client as the provider library sees it.
type client struct {
	md clientMetadata
}

var _ op.Client = (*client)(nil)

func (c *client) GetID() string                    { return c.md.ClientID }
func (c *client) RedirectURIs() []string           { return c.md.RedirectURIs }
func (c *client) PostLogoutRedirectURIs() []string { return nil }
func (c *client) ApplicationType() op.ApplicationType {
	if c.md.ApplicationType == "native" {
		return op.ApplicationTypeNative
	}
	return op.ApplicationTypeWeb
}
func (c *client) AuthMethod() oidc.AuthMethod { return oidc.AuthMethodNone }
func (c *client) ResponseTypes() []oidc.ResponseType {
	out := make([]oidc.ResponseType, 0, len(c.md.ResponseTypes))
	for _, t := range c.md.ResponseTypes {
		out = append(out, oidc.ResponseType(t))
	}
	return out
}

// GrantTypes always include refresh_token: the spec requires a refresh
// token with every grant, whatever the client registered.
func (c *client) GrantTypes() []oidc.GrantType {
	out := []oidc.GrantType{oidc.GrantTypeRefreshToken}
	for _, t := range c.md.GrantTypes {
		if g := oidc.GrantType(t); g != oidc.GrantTypeRefreshToken {
			out = append(out, g)
		}
	}
	return out
}
func (c *client) LoginURL(id string) string {
	return server.OAuthPath + "/login?id=" + url.QueryEscape(id)
}
func (c *client) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeBearer }
func (c *client) IDTokenLifetime() time.Duration       { return 5 * time.Minute }
func (c *client) DevMode() bool                        { return false }
func (c *client) IsScopeAllowed(scope string) bool     { return scopeAllowed(scope) }
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return false }
func (c *client) ClockSkew() time.Duration             { return 0 }
func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

// displayName is how pages and device lists name the client.
func (c *client) displayName() string {
	if c.md.ClientName != "" {
		return c.md.ClientName
	}
	if u, err := url.Parse(c.md.ClientURI); err == nil {
		return u.Hostname()
	}
	return c.md.ClientID
}
