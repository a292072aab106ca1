package oauth_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"hearth/server/storage/storagetest"
)

// postJSON posts body with a bearer token and returns status and answer.
func postJSON(t *testing.T, u, tok string, body any) (int, map[string]any) {
	t.Helper()
	raw, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, u, bytes.NewReader(raw))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func masterKey(t *testing.T, user string) map[string]any {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := base64.RawStdEncoding.EncodeToString(pub)
	return map[string]any{"user_id": user, "usage": []string{"master"}, "keys": map[string]any{"ed25519:" + p: p}}
}

// TestOAuthCrossSigningReset: a client signed in through the OAuth 2.0
// API replaces its cross-signing keys with the m.oauth UIA stage (spec
// v1.18 "OAuth authentication"): the challenge points at the account
// page's org.matrix.cross_signing_reset action; the stage fails until the
// user allows the reset there, then succeeds once.
func TestOAuthCrossSigningReset(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := start(t, e)
		alice := seedUser(t, b.Store, "alice")
		br := newBrowser(t, b.URL)
		a, tok := login(t, b, br, "alice")
		upload := b.URL + "/_matrix/client/v3/keys/device_signing/upload"

		if st, body := postJSON(t, upload, tok.AccessToken, map[string]any{"master_key": masterKey(t, alice)}); st != 200 {
			t.Fatalf("first upload: %d %v", st, body)
		}
		replacement := map[string]any{"master_key": masterKey(t, alice)}
		st, chal := postJSON(t, upload, tok.AccessToken, replacement)
		if st != http.StatusUnauthorized {
			t.Fatalf("replacement without auth: %d %v", st, chal)
		}
		flows, _ := json.Marshal(chal["flows"])
		if !strings.Contains(string(flows), `"m.oauth"`) || !strings.Contains(string(flows), `"m.login.password"`) {
			t.Fatalf("flows %s: want m.oauth beside m.login.password", flows)
		}
		params, _ := chal["params"].(map[string]any)
		oauthParams, _ := params["m.oauth"].(map[string]any)
		resetURL, _ := oauthParams["url"].(string)
		account := a.md["account_management_uri"].(string)
		if !strings.HasPrefix(resetURL, account+"?") || !strings.Contains(resetURL, "action=org.matrix.cross_signing_reset") {
			t.Fatalf("m.oauth url %q, want the account page with the reset action", resetURL)
		}
		session := chal["session"].(string)
		auth := map[string]any{"type": "m.oauth", "session": session}

		// Not approved yet.
		if st, body := postJSON(t, upload, tok.AccessToken, map[string]any{"auth": auth}); st != http.StatusUnauthorized || body["errcode"] != "M_UNAUTHORIZED" {
			t.Fatalf("m.oauth before approval: %d %v", st, body)
		}
		// The user allows it on the account page.
		if status, _ := br.do("GET", resetURL, nil); status != 200 || !strings.Contains(br.last, "Reset your identity?") {
			t.Fatalf("reset page: %d\n%s", status, br.last)
		}
		br.submit(url.Values{})
		if !strings.Contains(br.last, "Reset allowed") {
			t.Fatalf("approval: %s", br.last)
		}
		if st, body := postJSON(t, upload, tok.AccessToken, map[string]any{"auth": auth}); st != 200 {
			t.Fatalf("m.oauth after approval: %d %v", st, body)
		}
		keys, err := b.Store.CrossSigningKeys(t.Context(), alice)
		if err != nil {
			t.Fatal(err)
		}
		want := replacement["master_key"].(map[string]any)["keys"].(map[string]any)
		var newPub string
		for _, v := range want {
			newPub = v.(string)
		}
		if raw, _ := json.Marshal(keys); !strings.Contains(string(raw), newPub) {
			t.Fatalf("master key not replaced: %s", raw)
		}
		// One approval, one reset.
		st, chal = postJSON(t, upload, tok.AccessToken, map[string]any{"master_key": masterKey(t, alice)})
		if st != http.StatusUnauthorized {
			t.Fatalf("second replacement: %d", st)
		}
		if st, body := postJSON(t, upload, tok.AccessToken, map[string]any{"auth": map[string]any{"type": "m.oauth", "session": chal["session"]}}); st != http.StatusUnauthorized {
			t.Fatalf("a used approval allowed another reset: %d %v", st, body)
		}
	})
}
