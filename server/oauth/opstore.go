package oauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"hearth/server/secret"
	"hearth/server/storage"
)

// opStore is the provider library's storage (op.Storage) over Hearth's
// Store. The library runs the protocol — request validation, redirect URI
// matching, PKCE, the token endpoint, revocation — and calls these methods
// for state. Sessions it issues are ordinary Hearth devices and tokens.
type opStore struct {
	p *Provider

	keyMu sync.Mutex
	key   *signingKey
}

var _ op.Storage = (*opStore)(nil)

// authRequestTTL bounds how long a user may take between the client's
// authorisation request and the token request.
const authRequestTTL = 15 * time.Minute

// offlineAccess is added to every grant's scope: the library issues a
// refresh token only for it, and the spec requires one with every grant
// ("the homeserver MUST issue a refresh token").
const offlineAccess = oidc.ScopeOfflineAccess

// authRequest is an authorisation request, stored as JSON between the
// client's redirect to /authorize and the code exchange.
type authRequest struct {
	ID            string              `json:"id"`
	ClientID      string              `json:"client_id"`
	RedirectURI   string              `json:"redirect_uri"`
	State         string              `json:"state"`
	Nonce         string              `json:"nonce,omitempty"`
	Scopes        []string            `json:"scopes"`
	ResponseType  oidc.ResponseType   `json:"response_type"`
	ResponseMode  oidc.ResponseMode   `json:"response_mode,omitempty"`
	CodeChallenge *oidc.CodeChallenge `json:"code_challenge"`
	Prompt        []string            `json:"prompt,omitempty"`
	DeviceID      string              `json:"device_id"`

	// From the row: who approved it, and when.
	UserID   string    `json:"-"`
	AuthTime time.Time `json:"-"`
}

var _ op.AuthRequest = (*authRequest)(nil)

func (a *authRequest) GetID() string                         { return a.ID }
func (a *authRequest) GetACR() string                        { return "" }
func (a *authRequest) GetAMR() []string                      { return []string{"pwd"} }
func (a *authRequest) GetAudience() []string                 { return []string{a.ClientID} }
func (a *authRequest) GetAuthTime() time.Time                { return a.AuthTime }
func (a *authRequest) GetClientID() string                   { return a.ClientID }
func (a *authRequest) GetCodeChallenge() *oidc.CodeChallenge { return a.CodeChallenge }
func (a *authRequest) GetNonce() string                      { return a.Nonce }
func (a *authRequest) GetRedirectURI() string                { return a.RedirectURI }
func (a *authRequest) GetResponseType() oidc.ResponseType    { return a.ResponseType }
func (a *authRequest) GetResponseMode() oidc.ResponseMode    { return a.ResponseMode }
func (a *authRequest) GetScopes() []string                   { return a.Scopes }
func (a *authRequest) GetState() string                      { return a.State }
func (a *authRequest) GetSubject() string                    { return a.UserID }
func (a *authRequest) Done() bool                            { return a.UserID != "" }

// wantsRegistration reports prompt=create (spec: "User registration").
func (a *authRequest) wantsRegistration() bool { return slices.Contains(a.Prompt, "create") }

func (s *opStore) fromRow(row *storage.OAuthAuthRequest) (*authRequest, error) {
	if time.UnixMilli(row.Created).Add(authRequestTTL).Before(s.p.srv.Now()) {
		return nil, errAuthRequestExpired
	}
	a := &authRequest{}
	if err := json.Unmarshal([]byte(row.Data), a); err != nil {
		return nil, fmt.Errorf("oauth: stored auth request %s: %w", row.ID, err)
	}
	a.ID, a.UserID = row.ID, row.UserID
	if row.AuthTS != 0 {
		a.AuthTime = time.UnixMilli(row.AuthTS)
	}
	return a, nil
}

var errAuthRequestExpired = errors.New("oauth: authorisation request expired")

// CreateAuthRequest stores a validated authorisation request. The library
// has checked the client, the redirect URI and the response type; this
// adds the Matrix rules: PKCE with S256 (the spec's only method), and a
// scope with API access and exactly one device.
func (s *opStore) CreateAuthRequest(ctx context.Context, req *oidc.AuthRequest, _ string) (op.AuthRequest, error) {
	if req.CodeChallenge == "" || req.CodeChallengeMethod != oidc.CodeChallengeMethodS256 {
		return nil, oidc.ErrInvalidRequest().WithDescription("PKCE with code_challenge_method S256 is required")
	}
	device, oerr := matrixScope(req.Scopes)
	if oerr != nil {
		return nil, oerr
	}
	scopes := slices.Clone(req.Scopes)
	if !slices.Contains(scopes, offlineAccess) {
		scopes = append(scopes, offlineAccess)
	}
	a := &authRequest{ID: secret.Token(""), ClientID: req.ClientID, RedirectURI: req.RedirectURI, State: req.State,
		Nonce: req.Nonce, Scopes: scopes, ResponseType: req.ResponseType, ResponseMode: req.ResponseMode,
		CodeChallenge: &oidc.CodeChallenge{Challenge: req.CodeChallenge, Method: req.CodeChallengeMethod},
		Prompt:        req.Prompt, DeviceID: device}
	data, err := json.Marshal(a)
	if err != nil {
		return nil, err
	}
	if err := s.p.store.CreateOAuthAuthRequest(ctx, a.ID, a.ClientID, string(data), s.p.srv.Now().UnixMilli()); err != nil {
		return nil, err
	}
	return a, nil
}

func (s *opStore) AuthRequestByID(ctx context.Context, id string) (op.AuthRequest, error) {
	return s.authRequest(ctx, id)
}

func (s *opStore) authRequest(ctx context.Context, id string) (*authRequest, error) {
	row, err := s.p.store.OAuthAuthRequestByID(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.fromRow(row)
}

// AuthRequestByCode finds the request a code was issued for. The code is
// forgotten on the way (ClaimOAuthAuthCode), so a code works once, even
// when the exchange then fails (a wrong PKCE verifier).
func (s *opStore) AuthRequestByCode(ctx context.Context, code string) (op.AuthRequest, error) {
	row, err := s.p.store.ClaimOAuthAuthCode(ctx, code)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, oidc.ErrInvalidGrant().WithDescription("the authorisation code is invalid, expired or already used")
	}
	if err != nil {
		return nil, err
	}
	a, err := s.fromRow(row)
	if errors.Is(err, errAuthRequestExpired) {
		return nil, oidc.ErrInvalidGrant().WithDescription("the authorisation code has expired")
	}
	return a, err
}

func (s *opStore) SaveAuthCode(ctx context.Context, id, code string) error {
	return s.p.store.SetOAuthAuthCode(ctx, id, code)
}

func (s *opStore) DeleteAuthRequest(ctx context.Context, id string) error {
	return s.p.store.DeleteOAuthAuthRequest(ctx, id)
}

// CreateAccessToken would issue an access token without a refresh token;
// every grant here carries offline_access, so the library never asks.
func (s *opStore) CreateAccessToken(context.Context, op.TokenRequest) (string, time.Time, error) {
	return "", time.Time{}, oidc.ErrServerError().WithDescription("access tokens are always issued with a refresh token")
}

// refreshRequest is a refresh token's grant, as the library sees it.
type refreshRequest struct {
	g      *storage.OAuthGrant
	scopes []string
}

func (r *refreshRequest) GetAMR() []string             { return []string{"pwd"} }
func (r *refreshRequest) GetAudience() []string        { return []string{r.g.ClientID} }
func (r *refreshRequest) GetAuthTime() time.Time       { return time.UnixMilli(r.g.AuthTS) }
func (r *refreshRequest) GetClientID() string          { return r.g.ClientID }
func (r *refreshRequest) GetScopes() []string          { return r.scopes }
func (r *refreshRequest) GetSubject() string           { return r.g.UserID }
func (r *refreshRequest) SetCurrentScopes(sc []string) { r.scopes = sc }

// CreateAccessAndRefreshTokens issues a session: for a code exchange, the
// device the scope allocated, with its tokens and the grant; for a refresh,
// a new pair for the same device, the old pair revoked in the same
// transaction (Store.RefreshSession). The access token's ID is the token
// itself (see tokenCrypto).
func (s *opStore) CreateAccessAndRefreshTokens(ctx context.Context, request op.TokenRequest, currentRefresh string) (string, string, time.Time, error) {
	now := s.p.srv.Now()
	exp := now.Add(s.p.accessLifetime())
	l := storage.NewLogin{AccessToken: secret.Token("syt_"), AccessExpiresTS: exp.UnixMilli(), RefreshToken: secret.Token("syr_")}
	if rl := s.p.srv.Config().RefreshTokenLifetime.Std(); rl > 0 {
		l.RefreshExpiresTS = now.Add(rl).UnixMilli()
	}
	info := requestInfoFrom(ctx)
	l.IP, l.UserAgent = info.ip, info.userAgent
	switch req := request.(type) {
	case *authRequest:
		u, err := s.p.store.UserByID(ctx, req.UserID)
		if err != nil {
			return "", "", time.Time{}, err
		}
		if u.Deactivated || u.Locked {
			return "", "", time.Time{}, oidc.ErrInvalidGrant().WithDescription("the account is deactivated or locked")
		}
		name := req.ClientID
		if c, err := s.p.client(ctx, req.ClientID); err == nil {
			name = c.displayName()
		}
		l.UserID, l.DeviceID, l.DeviceDisplayName, l.ReplaceDevice = req.UserID, req.DeviceID, name, true
		l.Grant = &storage.OAuthGrant{ClientID: req.ClientID, Scope: strings.Join(req.Scopes, " "), AuthTS: req.AuthTime.UnixMilli()}
		if err := s.p.store.CreateLogin(ctx, l); err != nil {
			return "", "", time.Time{}, err
		}
	case *op.DeviceAuthorizationState:
		device, oerr := matrixScope(req.Scopes)
		if oerr != nil {
			return "", "", time.Time{}, oerr
		}
		u, err := s.p.store.UserByID(ctx, req.Subject)
		if err != nil {
			return "", "", time.Time{}, err
		}
		if u.Deactivated || u.Locked {
			return "", "", time.Time{}, oidc.ErrInvalidGrant().WithDescription("the account is deactivated or locked")
		}
		name := req.ClientID
		if c, err := s.p.client(ctx, req.ClientID); err == nil {
			name = c.displayName()
		}
		l.UserID, l.DeviceID, l.DeviceDisplayName, l.ReplaceDevice = req.Subject, device, name, true
		l.Grant = &storage.OAuthGrant{ClientID: req.ClientID, Scope: strings.Join(req.Scopes, " "), AuthTS: req.AuthTime.UnixMilli()}
		if err := s.p.store.CreateLogin(ctx, l); err != nil {
			return "", "", time.Time{}, err
		}
	case *refreshRequest:
		_, _, err := s.p.store.RefreshSession(ctx, currentRefresh, l)
		if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrRefreshExpired) {
			return "", "", time.Time{}, oidc.ErrInvalidGrant().WithDescription("the refresh token is invalid, expired or already used")
		}
		if err != nil {
			return "", "", time.Time{}, err
		}
	default:
		return "", "", time.Time{}, oidc.ErrUnsupportedGrantType()
	}
	return l.AccessToken, l.RefreshToken, exp, nil
}

// TokenRequestByRefreshToken finds the grant behind an unused refresh
// token of an OAuth session.
func (s *opStore) TokenRequestByRefreshToken(ctx context.Context, refresh string) (op.RefreshTokenRequest, error) {
	g, err := s.p.store.OAuthGrantByRefreshToken(ctx, refresh)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, oidc.ErrInvalidGrant().WithDescription("the refresh token is invalid, expired or already used")
	}
	if err != nil {
		return nil, err
	}
	return &refreshRequest{g: g, scopes: strings.Fields(g.Scope)}, nil
}

// TerminateSession is OpenID Connect's end_session, which the Matrix
// OAuth 2.0 API does not use (clients revoke their tokens instead).
func (s *opStore) TerminateSession(context.Context, string, string) error {
	return oidc.ErrInvalidRequest().WithDescription("end_session is not supported; revoke the token instead")
}

// revokeDevicePrefix marks a refresh token resolved to its device by
// GetRefreshTokenInfo.
const revokeDevicePrefix = "device:"

// GetRefreshTokenInfo resolves a refresh token (of any session, OAuth or
// legacy) to its user and device.
func (s *opStore) GetRefreshTokenInfo(ctx context.Context, _ string, token string) (string, string, error) {
	userID, deviceID, err := s.p.store.RefreshTokenOwner(ctx, token)
	if errors.Is(err, storage.ErrNotFound) {
		return "", "", op.ErrInvalidRefreshToken
	}
	if err != nil {
		return "", "", err
	}
	return userID, revokeDevicePrefix + deviceID, nil
}

// RevokeToken ends the session an access or refresh token belongs to, as
// POST /logout does: "The server MUST revoke both the access token and
// refresh token associated with the token provided". The spec asks to
// revoke whichever client presents it (a secret scanner may), and to
// answer 200 for a token that is already invalid.
func (s *opStore) RevokeToken(ctx context.Context, tokenOrID, userID, _ string) *oidc.Error {
	deviceID, ok := strings.CutPrefix(tokenOrID, revokeDevicePrefix)
	if !ok {
		se, err := s.p.store.SessionByToken(ctx, tokenOrID)
		if errors.Is(err, storage.ErrNotFound) {
			return nil
		}
		if err != nil {
			return oidc.ErrServerError().WithParent(err)
		}
		userID, deviceID = se.UserID, se.DeviceID
		if se.PuppetBy != "" {
			// An admin's token for the user: revoked alone, as /logout does.
			if err := s.p.store.DeleteAccessToken(ctx, se.TokenID); err != nil {
				return oidc.ErrServerError().WithParent(err)
			}
			return nil
		}
	}
	if err := s.p.srv.EndSession(ctx, userID, deviceID); err != nil {
		return oidc.ErrServerError().WithParent(err)
	}
	return nil
}

// signingKey signs ID tokens (issued only for the openid scope).
type signingKey struct {
	id  string
	key *ecdsa.PrivateKey
}

func (k *signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.ES256 }
func (k *signingKey) Key() any                                    { return k.key }
func (k *signingKey) ID() string                                  { return k.id }

type publicKey struct{ k *signingKey }

func (p publicKey) ID() string                         { return p.k.id }
func (p publicKey) Algorithm() jose.SignatureAlgorithm { return jose.ES256 }
func (p publicKey) Use() string                        { return "sig" }
func (p publicKey) Key() any                           { return &p.k.key.PublicKey }

// signing returns the ID-token key, made and stored on first use.
func (s *opStore) signing(ctx context.Context) (*signingKey, error) {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	if s.key != nil {
		return s.key, nil
	}
	cand, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(cand)
	if err != nil {
		return nil, err
	}
	id, pemText, err := s.p.store.OAuthSigningKey(ctx, "es256-"+secret.FromAlphabet("abcdefghijklmnopqrstuvwxyz0123456789", 8),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		return nil, errors.New("oauth: stored signing key is not PEM")
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("oauth: stored signing key: %w", err)
	}
	ec, ok := parsed.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("oauth: stored signing key is not ECDSA")
	}
	s.key = &signingKey{id: id, key: ec}
	return s.key, nil
}

func (s *opStore) SigningKey(ctx context.Context) (op.SigningKey, error) { return s.signing(ctx) }

func (s *opStore) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.ES256}, nil
}

func (s *opStore) KeySet(ctx context.Context) ([]op.Key, error) {
	k, err := s.signing(ctx)
	if err != nil {
		return nil, err
	}
	return []op.Key{publicKey{k}}, nil
}

func (s *opStore) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	return s.p.client(ctx, id)
}

// AuthorizeClientIDSecret: clients are public (token_endpoint_auth_method
// none); none has a secret.
func (s *opStore) AuthorizeClientIDSecret(context.Context, string, string) error {
	return errors.New("oauth: clients have no secret")
}

func (s *opStore) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

func (s *opStore) SetUserinfoFromRequest(_ context.Context, ui *oidc.UserInfo, req op.IDTokenRequest, _ []string) error {
	ui.Subject = req.GetSubject()
	return nil
}

func (s *opStore) SetUserinfoFromToken(_ context.Context, ui *oidc.UserInfo, _, subject, _ string) error {
	ui.Subject = subject
	return nil
}

func (s *opStore) SetIntrospectionFromToken(_ context.Context, ir *oidc.IntrospectionResponse, _, subject, clientID string) error {
	ir.Active, ir.Subject, ir.ClientID = true, subject, clientID
	return nil
}

func (s *opStore) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}

func (s *opStore) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errors.New("oauth: JWT client authentication is not supported")
}

func (s *opStore) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errors.New("oauth: the JWT profile grant is not supported")
}

func (s *opStore) Health(ctx context.Context) error { return nil }
