package oauth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"hearth/server"
	"hearth/server/htmlpage"
	"hearth/server/matrix"
	"hearth/server/secret"
	"hearth/server/storage"
	"hearth/templates"
)

// The pages: sign-in, registration, consent, account. They work without
// JavaScript. A browser signs in once (a session cookie, stored hashed);
// forms carry a CSRF token: before sign-in the double-submit value of a
// cookie of its own, after it a value derived from the session ID, which
// only this origin can read.

const (
	sessionCookie = "hearth_oauth_session"
	formCookie    = "hearth_oauth_form"
	maxForm       = 16 << 10
)

var errCSRF = &htmlpage.Error{Status: http.StatusForbidden,
	Msg: "This form was not accepted: it has expired or did not come from this server. Go back, reload the page and try again."}

var errRequestGone = &htmlpage.Error{Status: http.StatusBadRequest,
	Msg: "This sign-in request has expired or was already used. Go back to the app and start signing in again."}

// errorPage is the sign-in pages' error page (htmlpage.Pages.ErrorPage).
func (p *Provider) errorPage(w http.ResponseWriter, r *http.Request, status int, msg string) {
	vm := templates.OAuthMessageVM{OAuthChrome: p.chrome(r, http.StatusText(status), nil), Status: status,
		Heading: http.StatusText(status), Message: msg}
	p.pages.Render(w, r, status, templates.OAuthMessage(vm))
}

// signedIn is the browser's signed-in user.
type signedIn struct {
	UserID string
	IDHash string
	CSRF   string
}

func (p *Provider) chrome(r *http.Request, title string, u *signedIn) templates.OAuthChrome {
	c := templates.OAuthChrome{Title: title, Prefix: server.OAuthPath, ServerName: p.srv.ServerName(), Version: server.Version}
	if u != nil {
		c.User, c.CSRF = u.UserID, u.CSRF
	} else {
		c.CSRF = formToken(r)
	}
	return c
}

// csrfFor derives a session's form token from its ID (never stored, never
// readable by another origin).
func csrfFor(sessionID string) string {
	h := sha256.Sum256([]byte("hearth-oauth-csrf\x00" + sessionID))
	return hex.EncodeToString(h[:])
}

func equalTokens(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// cookie: HttpOnly, scoped to the OAuth pages, Secure over HTTPS.
// SameSite=Lax, not Strict: the browser arrives from the client's
// authorisation redirect, a cross-site navigation, and should still be
// recognised; every POST checks a CSRF token besides.
func (p *Provider) cookie(r *http.Request, name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: name, Value: value, Path: server.OAuthPath, MaxAge: maxAge, HttpOnly: true,
		Secure: p.srv.IsHTTPS(r), SameSite: http.SameSiteLaxMode}
}

type formTokenKey struct{}

// ensureFormCookie gives the browser a pre-sign-in form token if it has none.
func (p *Provider) ensureFormCookie(w http.ResponseWriter, r *http.Request) *http.Request {
	if c, err := r.Cookie(formCookie); err == nil && len(c.Value) >= 32 {
		return r
	}
	tok := secret.Token("")
	http.SetCookie(w, p.cookie(r, formCookie, tok, 0))
	return r.WithContext(context.WithValue(r.Context(), formTokenKey{}, tok))
}

func formToken(r *http.Request) string {
	if v, ok := r.Context().Value(formTokenKey{}).(string); ok {
		return v
	}
	if c, err := r.Cookie(formCookie); err == nil {
		return c.Value
	}
	return ""
}

// parseForm reads a bounded form body and checks its CSRF token against
// want.
func parseForm(w http.ResponseWriter, r *http.Request, want string) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		return &htmlpage.Error{Status: http.StatusBadRequest, Msg: "The form could not be read."}
	}
	if !equalTokens(r.PostFormValue("csrf"), want) {
		return errCSRF
	}
	return nil
}

// session resolves the session cookie: nil when signed out, expired, or
// the account can no longer sign in.
func (p *Provider) session(r *http.Request) (*signedIn, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return nil, nil
	}
	hash := storage.HashToken(c.Value)
	bs, err := p.store.OAuthBrowserSessionByHash(r.Context(), hash)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if bs.ExpiresTS <= p.srv.Now().UnixMilli() {
		return nil, nil
	}
	u, err := p.store.UserByID(r.Context(), bs.UserID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if u.Deactivated || u.Locked {
		return nil, nil
	}
	return &signedIn{UserID: u.UserID, IDHash: hash, CSRF: csrfFor(c.Value)}, nil
}

// signIn starts a browser session for userID.
func (p *Provider) signIn(w http.ResponseWriter, r *http.Request, userID string) error {
	id := secret.Token("hos_")
	now := p.srv.Now()
	life := p.srv.Config().OAuth.SessionLifetime.Std()
	if life <= 0 {
		life = 24 * time.Hour
	}
	bs := &storage.OAuthBrowserSession{IDHash: storage.HashToken(id), UserID: userID, CreatedTS: now.UnixMilli(), ExpiresTS: now.Add(life).UnixMilli()}
	if err := p.store.CreateOAuthBrowserSession(r.Context(), bs); err != nil {
		return err
	}
	http.SetCookie(w, p.cookie(r, sessionCookie, id, int(life.Seconds())))
	http.SetCookie(w, p.cookie(r, formCookie, "", -1))
	return nil
}

// pendingRequest loads the authorisation request a page is answering
// (query id), with its client; errRequestGone when it has expired or was
// used.
func (p *Provider) pendingRequest(r *http.Request) (*authRequest, *client, error) {
	id := r.URL.Query().Get("id")
	if id == "" {
		return nil, nil, nil
	}
	a, err := p.ops.authRequest(r.Context(), id)
	if errors.Is(err, storage.ErrNotFound) || errors.Is(err, errAuthRequestExpired) {
		return nil, nil, errRequestGone
	}
	if err != nil {
		return nil, nil, err
	}
	if a.Done() {
		return nil, nil, errRequestGone
	}
	c, err := p.client(r.Context(), a.ClientID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil, errRequestGone
	}
	if err != nil {
		return nil, nil, err
	}
	return a, c, nil
}

// afterSignIn is where a signed-in browser goes: the consent page for an
// authorisation request, else the account page (or next, when it is one).
func afterSignIn(r *http.Request) string {
	if id := r.URL.Query().Get("id"); id != "" {
		return server.OAuthPath + "/consent?id=" + url.QueryEscape(id)
	}
	next := r.URL.Query().Get("next")
	for _, page := range []string{pathAccount, "/device", "/sso"} {
		if strings.HasPrefix(next, server.OAuthPath+page) && !strings.Contains(next, "\\") && !strings.Contains(next, "//") {
			return next
		}
	}
	return server.OAuthPath + pathAccount
}

// GET /_hearth/oauth/login
//
// The library sends the browser here (client.LoginURL) with the request ID;
// a browser already signed in goes straight to consent, and prompt=create
// goes to registration.
func (p *Provider) getLogin(w http.ResponseWriter, r *http.Request) error {
	a, c, err := p.pendingRequest(r)
	if err != nil {
		return err
	}
	if u, err := p.session(r); err != nil {
		return err
	} else if u != nil {
		http.Redirect(w, r, afterSignIn(r), http.StatusSeeOther)
		return nil
	}
	if a != nil && a.wantsRegistration() && p.srv.Registration().Enabled {
		http.Redirect(w, r, server.OAuthPath+"/register?id="+url.QueryEscape(a.ID), http.StatusSeeOther)
		return nil
	}
	r = p.ensureFormCookie(w, r)
	p.renderLogin(w, r, http.StatusOK, a, c, "", "")
	return nil
}

func (p *Provider) renderLogin(w http.ResponseWriter, r *http.Request, status int, a *authRequest, c *client, username, msg string) {
	vm := templates.OAuthLoginVM{OAuthChrome: p.chrome(r, "Sign in", nil), Username: username, Error: msg,
		Next: r.URL.Query().Get("next"), CanRegister: p.srv.Registration().Enabled}
	if a != nil {
		vm.RequestID, vm.ClientName = a.ID, c.displayName()
	}
	p.pages.Render(w, r, status, templates.OAuthLogin(vm))
}

// POST /_hearth/oauth/login
func (p *Provider) postLogin(w http.ResponseWriter, r *http.Request) error {
	if err := parseForm(w, r, formToken(r)); err != nil {
		return err
	}
	a, c, err := p.pendingRequest(r)
	if err != nil {
		return err
	}
	username := strings.TrimSpace(r.PostFormValue("username"))
	userID, err := p.srv.PasswordSignIn(r, username, r.PostFormValue("password"))
	var me *matrix.Error
	if errors.As(err, &me) {
		status := me.HTTPStatus()
		msg := "Wrong username or password."
		switch me.Code {
		case "M_USER_DEACTIVATED":
			msg = "This account has been deactivated."
		case "M_USER_LOCKED":
			msg = "This account has been locked by the server's admins."
		case "M_LIMIT_EXCEEDED":
			msg = "Too many attempts. Wait a minute and try again."
		}
		p.srv.Log().Info("oauth: sign-in failed", "username", username, "ip", p.srv.ClientIP(r), "errcode", me.Code)
		p.renderLogin(w, r, status, a, c, username, msg)
		return nil
	}
	if err != nil {
		return err
	}
	if err := p.signIn(w, r, userID); err != nil {
		return err
	}
	http.Redirect(w, r, afterSignIn(r), http.StatusSeeOther)
	return nil
}

// GET /_hearth/oauth/register
func (p *Provider) getRegister(w http.ResponseWriter, r *http.Request) error {
	a, c, err := p.pendingRequest(r)
	if err != nil {
		return err
	}
	if !p.srv.Registration().Enabled {
		return &htmlpage.Error{Status: http.StatusForbidden, Msg: "This server does not accept new accounts. Ask its admins for one."}
	}
	r = p.ensureFormCookie(w, r)
	p.renderRegister(w, r, http.StatusOK, a, c, "", "", "")
	return nil
}

func (p *Provider) renderRegister(w http.ResponseWriter, r *http.Request, status int, a *authRequest, c *client, username, token, msg string) {
	vm := templates.OAuthRegisterVM{OAuthChrome: p.chrome(r, "Create an account", nil), Username: username, Token: token,
		NeedsToken: p.srv.Registration().RequiresToken, Error: msg, Next: r.URL.Query().Get("next")}
	if a != nil {
		vm.RequestID, vm.ClientName = a.ID, c.displayName()
	}
	p.pages.Render(w, r, status, templates.OAuthRegister(vm))
}

// POST /_hearth/oauth/register
//
// Creates the account under POST /register's rules (server.RegisterWithPassword)
// and signs the browser in.
func (p *Provider) postRegister(w http.ResponseWriter, r *http.Request) error {
	if err := parseForm(w, r, formToken(r)); err != nil {
		return err
	}
	a, c, err := p.pendingRequest(r)
	if err != nil {
		return err
	}
	username, token := strings.TrimSpace(r.PostFormValue("username")), strings.TrimSpace(r.PostFormValue("token"))
	password := r.PostFormValue("password")
	if password != r.PostFormValue("password2") {
		p.renderRegister(w, r, http.StatusBadRequest, a, c, username, token, "The two passwords differ.")
		return nil
	}
	userID, err := p.srv.RegisterWithPassword(r, username, password, token)
	var me *matrix.Error
	if errors.As(err, &me) {
		msg := me.Msg
		switch me.Code {
		case "M_USER_IN_USE":
			msg = "That username is taken."
		case "M_INVALID_USERNAME":
			msg = "That username cannot be used: " + me.Msg + ". Use lower-case letters, digits and . _ = - /"
		case "M_LIMIT_EXCEEDED":
			msg = "Too many attempts. Wait a minute and try again."
		}
		p.renderRegister(w, r, me.HTTPStatus(), a, c, username, token, upperFirst(msg))
		return nil
	}
	if err != nil {
		return err
	}
	if err := p.signIn(w, r, userID); err != nil {
		return err
	}
	http.Redirect(w, r, afterSignIn(r), http.StatusSeeOther)
	return nil
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// requireSession returns the signed-in user, or sends the browser to sign
// in and returns nil.
func (p *Provider) requireSession(w http.ResponseWriter, r *http.Request) (*signedIn, error) {
	u, err := p.session(r)
	if err != nil || u != nil {
		return u, err
	}
	http.SetCookie(w, p.cookie(r, sessionCookie, "", -1))
	if r.Method != http.MethodGet {
		return nil, &htmlpage.Error{Status: http.StatusForbidden, Msg: "You are not signed in, or your session has ended. Sign in and try again."}
	}
	q := url.Values{}
	if id := r.URL.Query().Get("id"); id != "" {
		q.Set("id", id)
	} else {
		q.Set("next", r.URL.RequestURI())
	}
	http.Redirect(w, r, server.OAuthPath+"/login?"+q.Encode(), http.StatusSeeOther)
	return nil, nil
}

// GET /_hearth/oauth/consent
func (p *Provider) getConsent(w http.ResponseWriter, r *http.Request) error {
	u, err := p.requireSession(w, r)
	if err != nil || u == nil {
		return err
	}
	a, c, err := p.pendingRequest(r)
	if err != nil {
		return err
	}
	if a == nil {
		return errRequestGone
	}
	vm := templates.OAuthConsentVM{OAuthChrome: p.chrome(r, "Allow access", u), RequestID: a.ID, ClientName: c.displayName(),
		ClientURI: c.md.ClientURI, ClientHost: hostOf(c.md.ClientURI), RedirectHost: redirectTarget(a.RedirectURI),
		DeviceID: a.DeviceID, Grants: grantsInWords(a.Scopes), TOSURI: c.md.TOSURI, PolicyURI: c.md.PolicyURI}
	p.pages.Render(w, r, http.StatusOK, templates.OAuthConsent(vm))
	return nil
}

func hostOf(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.Host != "" {
		return u.Host
	}
	return raw
}

// redirectTarget names where the browser goes back to: a host, or an app's
// own scheme.
func redirectTarget(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	if u.Host != "" {
		return u.Host
	}
	return u.Scheme + ": (an app on this device)"
}

func grantsInWords(scopes []string) []string {
	var out []string
	for _, s := range scopes {
		switch {
		case s == scopeAPI || s == scopeAPIMSC:
			out = append(out, "read and send your messages, and act for you in every room (full access to your account)")
		case s == oidc.ScopeOpenID:
			out = append(out, "see your Matrix ID")
		}
	}
	return out
}

// POST /_hearth/oauth/consent
//
// Allow: the request is marked approved by the user and the browser goes
// to the library's callback, which issues the code and redirects to the
// client. Cancel: the client hears access_denied.
func (p *Provider) postConsent(w http.ResponseWriter, r *http.Request) error {
	u, err := p.requireSession(w, r)
	if err != nil {
		return err
	}
	if err := parseForm(w, r, u.CSRF); err != nil {
		return err
	}
	a, _, err := p.pendingRequest(r)
	if err != nil {
		return err
	}
	if a == nil {
		return errRequestGone
	}
	if r.PostFormValue("action") != "allow" {
		if err := p.store.DeleteOAuthAuthRequest(r.Context(), a.ID); err != nil {
			return err
		}
		op.AuthRequestError(w, r, a, oidc.ErrAccessDenied().WithDescription("the user did not allow access"), p.op)
		return nil
	}
	if err := p.store.ApproveOAuthAuthRequest(r.Context(), a.ID, u.UserID, p.srv.Now().UnixMilli()); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return errRequestGone
		}
		return err
	}
	ctx := op.ContextWithIssuer(r.Context(), p.op.IssuerFromRequest(r))
	http.Redirect(w, r, op.AuthCallbackURL(p.op)(ctx, a.ID), http.StatusSeeOther)
	return nil
}

// POST /_hearth/oauth/logout
func (p *Provider) postSignOut(w http.ResponseWriter, r *http.Request) error {
	u, err := p.requireSession(w, r)
	if err != nil {
		return err
	}
	if err := parseForm(w, r, u.CSRF); err != nil {
		return err
	}
	if err := p.store.DeleteOAuthBrowserSession(r.Context(), u.IDHash); err != nil {
		return err
	}
	http.SetCookie(w, p.cookie(r, sessionCookie, "", -1))
	http.Redirect(w, r, server.OAuthPath+"/login", http.StatusSeeOther)
	return nil
}

// GET /_hearth/oauth/account
//
// The account management URL (spec: "Account management"): the profile,
// the sessions (with the one named by device_id highlighted for
// org.matrix.device_view and org.matrix.device_delete), and
// deactivation (org.matrix.account_deactivate).
func (p *Provider) getAccount(w http.ResponseWriter, r *http.Request) error {
	u, err := p.requireSession(w, r)
	if err != nil || u == nil {
		return err
	}
	q := r.URL.Query()
	vm, err := p.accountVM(r, u, q.Get("device_id"))
	if err != nil {
		return err
	}
	vm.Deactivate = q.Get("action") == "org.matrix.account_deactivate"
	vm.CrossSigningReset = q.Get("action") == "org.matrix.cross_signing_reset"
	vm.Flash, vm.FlashError = q.Get("done"), q.Get("failed") != ""
	if vm.FlashError {
		vm.Flash = q.Get("failed")
	}
	p.pages.Render(w, r, http.StatusOK, templates.OAuthAccount(vm))
	return nil
}

func (p *Provider) accountVM(r *http.Request, u *signedIn, focus string) (templates.OAuthAccountVM, error) {
	ctx := r.Context()
	vm := templates.OAuthAccountVM{OAuthChrome: p.chrome(r, "Your account", u), UserID: u.UserID}
	usr, err := p.store.UserByID(ctx, u.UserID)
	if err != nil {
		return vm, err
	}
	vm.DisplayName = usr.DisplayName
	devices, err := p.store.Devices(ctx, u.UserID)
	if err != nil {
		return vm, err
	}
	grants, err := p.store.OAuthGrants(ctx, u.UserID)
	if err != nil {
		return vm, err
	}
	for _, d := range devices {
		s := templates.OAuthSessionVM{DeviceID: d.DeviceID, Name: d.DisplayName, IP: d.LastSeenIP, Focused: d.DeviceID == focus,
			LastSeen: "never", Client: "signed in with a password"}
		if d.LastSeenTS > 0 {
			s.LastSeen = time.UnixMilli(d.LastSeenTS).UTC().Format("2006-01-02 15:04 UTC")
		}
		if g, ok := grants[d.DeviceID]; ok {
			s.Client = g.ClientID
			if c, err := p.client(ctx, g.ClientID); err == nil {
				s.Client = c.displayName()
			}
		}
		vm.Sessions = append(vm.Sessions, s)
	}
	return vm, nil
}

func accountURL(param, msg string) string {
	return server.OAuthPath + pathAccount + "?" + url.Values{param: {msg}}.Encode()
}

// POST /_hearth/oauth/account/profile
func (p *Provider) postProfile(w http.ResponseWriter, r *http.Request) error {
	u, err := p.requireSession(w, r)
	if err != nil {
		return err
	}
	if err := parseForm(w, r, u.CSRF); err != nil {
		return err
	}
	err = p.srv.SetOwnDisplayName(r.Context(), u.UserID, strings.TrimSpace(r.PostFormValue("displayname")))
	var me *matrix.Error
	if errors.As(err, &me) && me.HTTPStatus() < 500 {
		http.Redirect(w, r, accountURL("failed", upperFirst(me.Msg)+"."), http.StatusSeeOther)
		return nil
	}
	if err != nil {
		return err
	}
	http.Redirect(w, r, accountURL("done", "Your display name has been changed."), http.StatusSeeOther)
	return nil
}

// POST /_hearth/oauth/account/cross_signing_reset
//
// Approves replacing the user's cross-signing keys: the client's next
// attempt completes its m.oauth UIA stage (server.AllowCrossSigningReset).
func (p *Provider) postCrossSigningReset(w http.ResponseWriter, r *http.Request) error {
	u, err := p.requireSession(w, r)
	if err != nil {
		return err
	}
	if err := parseForm(w, r, u.CSRF); err != nil {
		return err
	}
	window := p.srv.AllowCrossSigningReset(u.UserID)
	http.Redirect(w, r, accountURL("done", fmt.Sprintf("Reset allowed: go back to your app and finish it within %d minutes.", int(window.Minutes()))), http.StatusSeeOther)
	return nil
}

// POST /_hearth/oauth/account/sessions/end
func (p *Provider) postEndSession(w http.ResponseWriter, r *http.Request) error {
	u, err := p.requireSession(w, r)
	if err != nil {
		return err
	}
	if err := parseForm(w, r, u.CSRF); err != nil {
		return err
	}
	device := r.PostFormValue("device_id")
	if _, err := p.store.Device(r.Context(), u.UserID, device); errors.Is(err, storage.ErrNotFound) {
		http.Redirect(w, r, accountURL("failed", "That session does not exist (any more)."), http.StatusSeeOther)
		return nil
	} else if err != nil {
		return err
	}
	if err := p.srv.EndSession(r.Context(), u.UserID, device); err != nil {
		return err
	}
	http.Redirect(w, r, accountURL("done", "Session "+device+" has been signed out."), http.StatusSeeOther)
	return nil
}

// POST /_hearth/oauth/account/deactivate
func (p *Provider) postDeactivate(w http.ResponseWriter, r *http.Request) error {
	u, err := p.requireSession(w, r)
	if err != nil {
		return err
	}
	if err := parseForm(w, r, u.CSRF); err != nil {
		return err
	}
	if _, err := p.srv.PasswordSignIn(r, u.UserID, r.PostFormValue("password")); err != nil {
		var me *matrix.Error
		if errors.As(err, &me) {
			http.Redirect(w, r, accountURL("failed", "The account was not deactivated: wrong password."), http.StatusSeeOther)
			return nil
		}
		return err
	}
	if err := p.srv.DeactivateOwnAccount(r.Context(), u.UserID, r.PostFormValue("erase") != ""); err != nil {
		return err
	}
	if err := p.store.DeleteOAuthBrowserSession(r.Context(), u.IDHash); err != nil {
		return err
	}
	http.SetCookie(w, p.cookie(r, sessionCookie, "", -1))
	vm := templates.OAuthMessageVM{OAuthChrome: p.chrome(r, "Account deactivated", nil), Status: http.StatusOK,
		Heading: "Account deactivated", Message: u.UserID + " has been deactivated and signed out everywhere."}
	p.pages.Render(w, r, http.StatusOK, templates.OAuthMessage(vm))
	return nil
}

// pageCSP is the sign-in pages' Content Security Policy: no script at
// all, and no form-action, since a consent form's answer redirects to the
// client's own redirect URI.
const pageCSP = "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'"

func jsonUnmarshal(raw string, v any) error { return json.Unmarshal([]byte(raw), v) }

// GET /_hearth/oauth/sso
//
// Where GET /login/sso/redirect sends a legacy client's browser (spec:
// "OAuth 2.0 aware clients"): sign in (or register, for action=register),
// then confirm sending the app a login token.
func (p *Provider) getSSO(w http.ResponseWriter, r *http.Request) error {
	target, host, err := ssoTarget(r.URL.Query().Get("redirectUrl"))
	if err != nil {
		return err
	}
	u, err := p.session(r)
	if err != nil {
		return err
	}
	if u == nil {
		page := "/login"
		if r.URL.Query().Get("action") == "register" && p.srv.Registration().Enabled {
			page = "/register"
		}
		http.Redirect(w, r, server.OAuthPath+page+"?"+url.Values{"next": {r.URL.RequestURI()}}.Encode(), http.StatusSeeOther)
		return nil
	}
	vm := templates.OAuthSSOVM{OAuthChrome: p.chrome(r, "Continue to your app", u), RedirectURL: target, RedirectHost: host}
	p.pages.Render(w, r, http.StatusOK, templates.OAuthSSO(vm))
	return nil
}

// POST /_hearth/oauth/sso
func (p *Provider) postSSO(w http.ResponseWriter, r *http.Request) error {
	u, err := p.requireSession(w, r)
	if err != nil {
		return err
	}
	if err := parseForm(w, r, u.CSRF); err != nil {
		return err
	}
	target, _, err := ssoTarget(r.PostFormValue("redirectUrl"))
	if err != nil {
		return err
	}
	tok, err := p.srv.IssueSSOLoginToken(r.Context(), u.UserID)
	if err != nil {
		return err
	}
	dest, _ := url.Parse(target)
	q := dest.Query()
	q.Set("loginToken", tok)
	dest.RawQuery = q.Encode()
	http.Redirect(w, r, dest.String(), http.StatusSeeOther)
	return nil
}

// ssoTarget checks an SSO redirectUrl and names where it goes.
func ssoTarget(raw string) (string, string, error) {
	u, err := url.Parse(raw)
	if raw == "" || err != nil || u.Scheme == "" || strings.EqualFold(u.Scheme, "javascript") || strings.EqualFold(u.Scheme, "data") {
		return "", "", &htmlpage.Error{Status: http.StatusBadRequest, Msg: "The app did not say where to return to."}
	}
	return raw, redirectTarget(raw), nil
}
