package oauth

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/pkg/op"

	"hearth/server/htmlpage"
	"hearth/server/storage"
	"hearth/templates"
)

// The device authorisation grant (RFC 8628; spec "Device authorisation
// flow", v1.18): a client that cannot open a browser, or one showing a QR
// code, asks for a user code, and polls the token endpoint while the user
// approves it on another device at /_hearth/oauth/device.

const (
	pathDevice     = "oauth2/device"
	deviceLifetime = 10 * time.Minute
	devicePoll     = 5 * time.Second
)

var _ op.DeviceAuthorizationStorage = (*opStore)(nil)

// StoreDeviceAuthorization records a new device authorisation. Its scope
// was checked by checkDeviceScope before the library got the request.
func (s *opStore) StoreDeviceAuthorization(ctx context.Context, clientID, deviceCode, userCode string, expires time.Time, scopes []string) error {
	scopes = slices.Clone(scopes)
	if !slices.Contains(scopes, offlineAccess) {
		scopes = append(scopes, offlineAccess)
	}
	err := s.p.store.CreateOAuthDeviceCode(ctx, deviceCode, &storage.OAuthDeviceCode{UserCode: userCode, ClientID: clientID,
		Scope: strings.Join(scopes, " "), ExpiresTS: expires.UnixMilli()})
	if errors.Is(err, storage.ErrConflict) {
		return op.ErrDuplicateUserCode
	}
	return err
}

// GetDeviceAuthorizatonState answers the polling client. A decision is
// handed out once (Store.TakeOAuthDeviceCode): polling again after the
// tokens were issued finds nothing.
func (s *opStore) GetDeviceAuthorizatonState(ctx context.Context, clientID, deviceCode string) (*op.DeviceAuthorizationState, error) {
	d, err := s.p.store.TakeOAuthDeviceCode(ctx, clientID, deviceCode)
	if err != nil {
		return nil, err
	}
	st := &op.DeviceAuthorizationState{ClientID: d.ClientID, Scopes: strings.Fields(d.Scope), Expires: time.UnixMilli(d.ExpiresTS),
		Denied: d.Denied, Done: d.UserID != "", Subject: d.UserID, AMR: []string{"pwd"}}
	if d.AuthTS != 0 {
		st.AuthTime = time.UnixMilli(d.AuthTS)
	}
	return st, nil
}

// checkDeviceScope applies the Matrix scope rules to a device
// authorisation request before the library stores it (the library hands
// the scope to storage unchecked, and would answer a storage error 500).
func (p *Provider) checkDeviceScope(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		if err := r.ParseForm(); err != nil {
			writeOAuthJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "the form could not be read"})
			return
		}
		if _, oerr := matrixScope(strings.Fields(r.PostForm.Get("scope"))); oerr != nil {
			writeOAuthJSON(w, http.StatusBadRequest, map[string]string{"error": string(oerr.ErrorType), "error_description": oerr.Description})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// normalUserCode accepts a user code as people type it: any case, with or
// without the dash.
func normalUserCode(s string) string {
	var b strings.Builder
	for _, c := range strings.ToUpper(s) {
		if c >= 'A' && c <= 'Z' {
			b.WriteRune(c)
		}
	}
	code := b.String()
	if len(code) == 8 {
		code = code[:4] + "-" + code[4:]
	}
	return code
}

// GET /_hearth/oauth/device
//
// The verification URI: with a user code (typed, or from
// verification_uri_complete), the consent page for that device; without,
// a form to type it. The user signs in first.
func (p *Provider) getDevice(w http.ResponseWriter, r *http.Request) error {
	u, err := p.requireSession(w, r)
	if err != nil || u == nil {
		return err
	}
	code := normalUserCode(r.URL.Query().Get("user_code"))
	if code == "" {
		p.pages.Render(w, r, http.StatusOK, templates.OAuthDeviceCode(templates.OAuthDeviceCodeVM{OAuthChrome: p.chrome(r, "Sign in a device", u)}))
		return nil
	}
	d, c, err := p.pendingDevice(r, code)
	if err != nil {
		var pe *htmlpage.Error
		if errors.As(err, &pe) && pe.Status == http.StatusNotFound {
			vm := templates.OAuthDeviceCodeVM{OAuthChrome: p.chrome(r, "Sign in a device", u), UserCode: code, Error: pe.Msg}
			p.pages.Render(w, r, http.StatusNotFound, templates.OAuthDeviceCode(vm))
			return nil
		}
		return err
	}
	device, _ := matrixScope(strings.Fields(d.Scope))
	vm := templates.OAuthConsentVM{OAuthChrome: p.chrome(r, "Allow access", u), FormPath: "/device", UserCode: code,
		ClientName: c.displayName(), ClientURI: c.md.ClientURI, ClientHost: hostOf(c.md.ClientURI),
		RedirectHost: "the device showing code " + code, DeviceID: device, Grants: grantsInWords(strings.Fields(d.Scope)),
		TOSURI: c.md.TOSURI, PolicyURI: c.md.PolicyURI}
	p.pages.Render(w, r, http.StatusOK, templates.OAuthConsent(vm))
	return nil
}

var errNoSuchCode = &htmlpage.Error{Status: http.StatusNotFound, Msg: "There is no sign-in waiting for that code, or it has expired. Check the code on the other device."}

func (p *Provider) pendingDevice(r *http.Request, code string) (*storage.OAuthDeviceCode, *client, error) {
	d, err := p.store.OAuthDeviceCodeByUserCode(r.Context(), code)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil, errNoSuchCode
	}
	if err != nil {
		return nil, nil, err
	}
	if d.Decided() || d.ExpiresTS <= p.srv.Now().UnixMilli() {
		return nil, nil, errNoSuchCode
	}
	c, err := p.client(r.Context(), d.ClientID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil, errNoSuchCode
	}
	return d, c, err
}

// POST /_hearth/oauth/device
func (p *Provider) postDevice(w http.ResponseWriter, r *http.Request) error {
	u, err := p.requireSession(w, r)
	if err != nil {
		return err
	}
	if err := parseForm(w, r, u.CSRF); err != nil {
		return err
	}
	code := normalUserCode(r.PostFormValue("user_code"))
	if _, _, err := p.pendingDevice(r, code); err != nil {
		return err
	}
	allow := r.PostFormValue("action") == "allow"
	userID := ""
	if allow {
		userID = u.UserID
	}
	if err := p.store.DecideOAuthDeviceCode(r.Context(), code, userID, !allow, p.srv.Now().UnixMilli()); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return errNoSuchCode
		}
		return err
	}
	heading, msg := "Device signed in", "You can go back to the other device: it is signing in now."
	if !allow {
		heading, msg = "Sign-in cancelled", "The other device was not let in."
	}
	p.pages.Render(w, r, http.StatusOK, templates.OAuthMessage(templates.OAuthMessageVM{OAuthChrome: p.chrome(r, heading, u),
		Status: http.StatusOK, Heading: heading, Message: msg}))
	return nil
}
