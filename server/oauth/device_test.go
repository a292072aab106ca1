package oauth_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"hearth/server/secret"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// pollDevice makes one device_code token request and returns the status
// and body.
func pollDevice(t *testing.T, tokenURL, clientID, deviceCode string) (int, map[string]any) {
	t.Helper()
	resp, err := http.PostForm(tokenURL, url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"},
		"device_code": {deviceCode}, "client_id": {clientID}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body := map[string]any{}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

// deviceApp registers a client for the device grant (a TV, or the new
// device of a QR-code login).
func deviceApp(t *testing.T, b *servertest.Bundle) *app {
	t.Helper()
	md := metadata(t, b.URL)
	status, reg := registerClient(t, md["registration_endpoint"].(string), map[string]any{
		"client_name": "Living Room TV", "client_uri": "https://tv.example.org/", "application_type": "native",
		"token_endpoint_auth_method": "none", "grant_types": []string{"urn:ietf:params:oauth:grant-type:device_code", "refresh_token"}})
	if status != http.StatusCreated {
		t.Fatalf("registration: %d %v", status, reg)
	}
	device := secret.FromAlphabet("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 10)
	return &app{md: md, revoke: md["revocation_endpoint"].(string), deviceID: device, conf: &oauth2.Config{
		ClientID: reg["client_id"].(string),
		Endpoint: oauth2.Endpoint{TokenURL: md["token_endpoint"].(string), DeviceAuthURL: md["device_authorization_endpoint"].(string),
			AuthStyle: oauth2.AuthStyleInParams},
		Scopes: []string{"urn:matrix:client:api:*", "urn:matrix:client:device:" + device},
	}}
}

// TestOAuthDeviceGrant: the device authorisation grant (spec v1.18). The
// device gets a user code and polls; the user approves it on the
// verification page (signing in first); the device's next poll gets a
// session for the device its scope allocated, and only once. A denied
// code gets access_denied; a bad scope is refused up front.
func TestOAuthDeviceGrant(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := start(t, e)
		alice := seedUser(t, b.Store, "alice")
		ctx := context.Background()
		a := deviceApp(t, b)
		// The device ID of matrix-rust-sdk's QR-code login: a Curve25519
		// key in standard base64, with '+' and '/'.
		a.deviceID = "QrLogin+Curve25519/" + secret.FromAlphabet("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 10)
		a.conf.Scopes = []string{"urn:matrix:client:api:*", "urn:matrix:client:device:" + a.deviceID}
		if !strings.Contains(strings.Join(toStrings(a.md["grant_types_supported"]), " "), "device_code") {
			t.Fatalf("metadata grant types %v lack the device code grant", a.md["grant_types_supported"])
		}

		// A scope without exactly one device is refused before any code.
		bad := *a.conf
		bad.Scopes = []string{"urn:matrix:client:api:*"}
		if _, err := bad.DeviceAuth(ctx); oauthErrorCode(err) != "invalid_scope" {
			t.Fatalf("device auth without a device scope: %v, want invalid_scope", err)
		}

		da, err := a.conf.DeviceAuth(ctx)
		if err != nil {
			t.Fatalf("device authorisation: %v", err)
		}
		if da.UserCode == "" || !strings.HasPrefix(da.VerificationURI, b.URL+"/_hearth/oauth/device") || !strings.Contains(da.VerificationURIComplete, "user_code=") {
			t.Fatalf("device authorisation response %+v", da)
		}
		tokenURL := a.conf.Endpoint.TokenURL
		if st, body := pollDevice(t, tokenURL, a.conf.ClientID, da.DeviceCode); st != 400 || body["error"] != "authorization_pending" {
			t.Fatalf("poll before approval: %d %v, want authorization_pending", st, body)
		}

		// The user opens the complete verification URI on their phone,
		// signs in, and allows.
		br := newBrowser(t, b.URL)
		status, _ := br.do("GET", da.VerificationURIComplete, nil)
		if status != 200 || !strings.Contains(br.last, "Sign in") {
			t.Fatalf("verification URI signed out: %d, want the sign-in page\n%s", status, br.last)
		}
		if status, _ = br.submit(url.Values{"username": {"alice"}, "password": {password}}); status != 200 || !strings.Contains(br.last, "Living Room TV") {
			t.Fatalf("after sign-in: %d, want the consent page for the device\n%s", status, br.last)
		}
		if !strings.Contains(br.last, a.deviceID) {
			t.Errorf("consent page does not show the device ID %s", a.deviceID)
		}
		if status, _ = br.submit(url.Values{"action": {"allow"}}); status != 200 || !strings.Contains(br.last, "Device signed in") {
			t.Fatalf("allow: %d\n%s", status, br.last)
		}
		// Approving again is refused: the code is decided.
		br.do("GET", da.VerificationURIComplete, nil)
		if !strings.Contains(br.last, "no sign-in waiting for that code") {
			t.Errorf("a decided code still shows its consent page:\n%s", br.last)
		}

		st, body := pollDevice(t, tokenURL, a.conf.ClientID, da.DeviceCode)
		if st != 200 || body["access_token"] == nil || body["refresh_token"] == nil {
			t.Fatalf("poll after approval: %d %v, want tokens", st, body)
		}
		if who, c := whoami(t, b, body["access_token"].(string)); c != "" || who.UserID.String() != alice || who.DeviceID.String() != a.deviceID {
			t.Fatalf("whoami %+v %q", who, c)
		}
		// The signed-in device of a QR-code login checks that the new device
		// exists: GET /devices/{deviceId}, escaped.
		req, _ := http.NewRequest("GET", b.URL+"/_matrix/client/v3/devices/"+url.PathEscape(a.deviceID), nil)
		req.Header.Set("Authorization", "Bearer "+body["access_token"].(string))
		if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET /devices/%s: %v %v", url.PathEscape(a.deviceID), resp, err)
		} else {
			resp.Body.Close()
		}
		if st, body := pollDevice(t, tokenURL, a.conf.ClientID, da.DeviceCode); st == 200 {
			t.Fatalf("second poll after the tokens were issued: %v, want an error", body)
		}
		// The device refreshes like any client.
		// (A token with only a refresh token is not valid, so the source
		// refreshes.)
		if _, err := a.conf.TokenSource(ctx, &oauth2.Token{RefreshToken: body["refresh_token"].(string)}).Token(); err != nil {
			t.Fatalf("refresh of a device-grant session: %v", err)
		}

		// Typed by hand, in lower case and without the dash; then denied.
		da2, err := a.conf.DeviceAuth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		typed := strings.ToLower(strings.ReplaceAll(da2.UserCode, "-", ""))
		if status, _ := br.do("GET", da2.VerificationURI, nil); status != 200 || !strings.Contains(br.last, "Enter the code") {
			t.Fatalf("verification URI without a code: %d, want the code form", status)
		}
		if status, _ := br.do("GET", da2.VerificationURI+"?user_code="+typed, nil); status != 200 || !strings.Contains(br.last, "Allow access?") {
			t.Fatalf("typed code %q: %d\n%s", typed, status, br.last)
		}
		if status, _ := br.submit(url.Values{"action": {"deny"}}); status != 200 || !strings.Contains(br.last, "cancelled") {
			t.Fatalf("deny: %d", status)
		}
		if st, body := pollDevice(t, tokenURL, a.conf.ClientID, da2.DeviceCode); st != 400 || body["error"] != "access_denied" {
			t.Fatalf("poll after denial: %d %v, want access_denied", st, body)
		}
		if status, _ := br.do("GET", da2.VerificationURI+"?user_code=BCDF-GHJK", nil); status != http.StatusNotFound {
			t.Fatalf("unknown code: %d, want 404", status)
		}
		// A device code is bound to its client.
		da3, err := a.conf.DeviceAuth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		other := newApp(t, b, "http://127.0.0.1:5000/callback")
		if st, _ := pollDevice(t, tokenURL, other.conf.ClientID, da3.DeviceCode); st == 200 {
			t.Fatal("another client polled a device code successfully")
		}
	})
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}
