package templates

import "net/url"

// The OAuth 2.0 pages (package oauth): sign-in, registration, consent and
// account management, for every user of the server, not only admins.

// OAuthChrome is the frame of the OAuth pages.
type OAuthChrome struct {
	Title      string
	Prefix     string // e.g. "/_hearth/oauth"
	ServerName string
	Version    string
	CSRF       string
	// User is the signed-in user ID ("" before sign-in).
	User string
}

// URL joins the OAuth prefix and a path.
func (c OAuthChrome) URL(path string) string { return c.Prefix + path }

// OAuthLoginVM is the sign-in page. RequestID is the authorisation request
// being answered ("" when signing in to the account page).
type OAuthLoginVM struct {
	OAuthChrome
	RequestID   string
	Next        string
	ClientName  string
	Username    string
	Error       string
	CanRegister bool
}

// OAuthRegisterVM is the registration page.
type OAuthRegisterVM struct {
	OAuthChrome
	RequestID  string
	Next       string
	ClientName string
	Username   string
	Token      string
	NeedsToken bool
	Error      string
}

// OAuthConsentVM is the page where the user lets a client in.
type OAuthConsentVM struct {
	OAuthChrome
	// FormPath is where the answer goes: /consent?id=… for the code grant
	// (the default), /device for the device grant (with UserCode).
	FormPath     string
	UserCode     string
	RequestID    string
	ClientName   string
	ClientURI    string
	ClientHost   string
	RedirectHost string
	DeviceID     string
	Grants       []string // what the client gets, in words
	TOSURI       string
	PolicyURI    string
}

// OAuthDeviceCodeVM is the page where the user types the code another
// device shows (device authorisation grant).
type OAuthDeviceCodeVM struct {
	OAuthChrome
	UserCode string
	Error    string
}

// ConsentAction is the consent form's target.
func (vm OAuthConsentVM) ConsentAction() string {
	if vm.FormPath != "" {
		return vm.URL(vm.FormPath)
	}
	return vm.URL("/consent?id=" + url.QueryEscape(vm.RequestID))
}

// OAuthSessionVM is one of the user's sessions (devices).
type OAuthSessionVM struct {
	DeviceID string
	Name     string
	LastSeen string
	IP       string
	Client   string // the OAuth client, for sessions granted through it
	Focused  bool
	Current  bool
}

// OAuthAccountVM is the account management page.
type OAuthAccountVM struct {
	OAuthChrome
	UserID      string
	DisplayName string
	Sessions    []OAuthSessionVM
	Flash       string
	FlashError  bool
	// Deactivate opens the deactivation form (action
	// org.matrix.account_deactivate).
	Deactivate bool
	// CrossSigningReset shows the identity reset approval (action
	// org.matrix.cross_signing_reset).
	CrossSigningReset bool
}

// OAuthSSOVM confirms sending a login token back to a legacy client (the
// SSO redirect of OAuth 2.0 aware clients).
type OAuthSSOVM struct {
	OAuthChrome
	RedirectURL  string
	RedirectHost string
}

// OAuthMessageVM is a page that only says something: an error, or that
// the user may close the window.
type OAuthMessageVM struct {
	OAuthChrome
	Status  int
	Heading string
	Message string
}

// loginQuery is the query string that carries an authorisation request
// (id) or a page to return to (next) between the sign-in pages.
func loginQuery(requestID, next string) string {
	switch {
	case requestID != "":
		return "id=" + url.QueryEscape(requestID)
	case next != "":
		return "next=" + url.QueryEscape(next)
	}
	return ""
}
