package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"hearth/config"
	"hearth/server"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

const csV3 = "/_matrix/client/v3"

var (
	emailLinkRe  = regexp.MustCompile(`https://matrix\.hearth\.test(/_hearth/client/email/submit_token\?\S+)`)
	emailTokenRe = regexp.MustCompile(`enter: ([A-Za-z0-9]+)`)
)

// emailLink returns the path and query of the validation link in a
// message, and the token it carries.
func emailLink(t *testing.T, m servertest.Mail) (path, token string) {
	t.Helper()
	lm, tm := emailLinkRe.FindStringSubmatch(m.Text), emailTokenRe.FindStringSubmatch(m.Text)
	if lm == nil || tm == nil {
		t.Fatalf("no link or code in the email:\n%s", m.Text)
	}
	if !strings.Contains(m.HTML, tm[1]) || !strings.Contains(m.HTML, "submit_token") {
		t.Fatalf("the HTML part lacks the link or the code:\n%s", m.HTML)
	}
	u, err := url.Parse(lm[1])
	if err != nil || u.Query().Get("token") != tm[1] {
		t.Fatalf("link %q does not carry the code %q", lm[1], tm[1])
	}
	return lm[1], tm[1]
}

// asJSON renders v as JSON, for looking into nested answers.
func asJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// startEmailServer runs Hearth sending through mail, with a movable clock.
func startEmailServer(t *testing.T, e storagetest.Engine, mail *servertest.MailServer, opts ...servertest.Option) (*servertest.Bundle, *movableClock) {
	clk := &movableClock{}
	opts = append([]servertest.Option{func(c *config.Config) {
		c.PublicBaseURL = "https://matrix.hearth.test/"
		c.Email = mail.Config()
		c.Defaults()
	}}, opts...)
	b := servertest.StartWith(t, e, func(d *server.Deps) { d.Now = clk.now }, opts...)
	return b, clk
}

// fetchPage fetches an HTML page of the server without following redirects.
func fetchPage(t *testing.T, b *servertest.Bundle, method, path string, form url.Values) (int, http.Header, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(t.Context(), method, b.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	cli := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := cli.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, string(raw)
}

// TestEmailAddAndLogin: adding an address through STARTTLS with SMTP
// authentication, the link's confirmation page and redirect, send_attempt
// idempotency, the address then used to log in, seen by the admin API,
// refused to others, and removed.
func TestEmailAddAndLogin(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		mail := servertest.StartMailServer(t, servertest.MailOptions{STARTTLS: true, User: "hearth", Pass: "mail-secret"})
		b, _ := startEmailServer(t, e, mail)
		alice, bob := newRoomUser(t, b, "alice"), newRoomUser(t, b, "bob")
		makeAdmin(t, b, bob)

		caps := acctDo(t, b, "GET", csV3+"/capabilities", alice.tok, nil).body["capabilities"].(map[string]any)
		if c, _ := caps["m.3pid_changes"].(map[string]any); c["enabled"] != true {
			t.Fatalf("m.3pid_changes: %v", caps)
		}

		req := map[string]any{"client_secret": "alice-secret", "email": "Alice@Example.org", "send_attempt": 1, "next_link": "https://app.example/done"}
		r := acctDo(t, b, "POST", csV3+"/account/3pid/email/requestToken", alice.tok, req)
		r.want(t, 200, "")
		sid, _ := r.body["sid"].(string)
		if sid == "" || r.body["submit_url"] != "https://matrix.hearth.test/_hearth/client/email/submit_token" {
			t.Fatalf("requestToken: %v", r.body)
		}
		m := mail.Next(t)
		if !m.TLS || m.User != "hearth" || len(m.To) != 1 || m.To[0] != "alice@example.org" || m.From != "noreply@hearth.test" {
			t.Fatalf("mail: tls %v user %q from %q to %v", m.TLS, m.User, m.From, m.To)
		}
		if m.Subject != "[hearth.test] Validate your email" || !strings.Contains(string(m.Data), "From: \"Hearth Test\" <noreply@hearth.test>") {
			t.Fatalf("subject %q, headers:\n%s", m.Subject, m.Data)
		}
		link, token := emailLink(t, m)

		// The same send_attempt: the same session, no second email.
		r = acctDo(t, b, "POST", csV3+"/account/3pid/email/requestToken", alice.tok, req)
		if r.status != 200 || r.body["sid"] != sid {
			t.Fatalf("repeated requestToken: %d %v (sid %s)", r.status, r.body, sid)
		}
		mail.None(t)

		add := map[string]any{"sid": sid, "client_secret": "alice-secret"}
		pwAuth := func(s string) map[string]any { return acctPasswordAuth("alice", acctPW, s) }
		// Not validated yet.
		acctUIA(t, b, "POST", csV3+"/account/3pid/add", alice.tok, add, pwAuth).want(t, 400, "M_THREEPID_AUTH_FAILED")

		// The link shows a page to confirm on; it validates nothing itself.
		status, hdr, body := fetchPage(t, b, "GET", link, nil)
		if status != 200 || !strings.Contains(body, `<form method="post"`) || !strings.Contains(body, "alice@example.org") ||
			!strings.HasPrefix(hdr.Get("Content-Type"), "text/html") {
			t.Fatalf("link page: %d %s", status, body)
		}
		acctUIA(t, b, "POST", csV3+"/account/3pid/add", alice.tok, add, pwAuth).want(t, 400, "M_THREEPID_AUTH_FAILED")
		// A wrong token in the form: a page saying so.
		status, _, body = fetchPage(t, b, "POST", "/_hearth/client/email/submit_token",
			url.Values{"sid": {sid}, "client_secret": {"alice-secret"}, "token": {"wrong" + token}})
		if status != 400 || !strings.Contains(body, "not valid") {
			t.Fatalf("wrong token page: %d %s", status, body)
		}
		// Confirming redirects to next_link.
		status, hdr, _ = fetchPage(t, b, "POST", "/_hearth/client/email/submit_token",
			url.Values{"sid": {sid}, "client_secret": {"alice-secret"}, "token": {token}})
		if status != http.StatusSeeOther || hdr.Get("Location") != "https://app.example/done" {
			t.Fatalf("confirm: %d %v", status, hdr)
		}

		// Another user cannot spend alice's session.
		acctUIA(t, b, "POST", csV3+"/account/3pid/add", bob.tok, map[string]any{"sid": sid, "client_secret": "wrong-secret"},
			func(s string) map[string]any { return acctPasswordAuth("bob", acctPW, s) }).want(t, 400, "M_THREEPID_AUTH_FAILED")
		acctUIA(t, b, "POST", csV3+"/account/3pid/add", alice.tok, add, pwAuth).want(t, 200, "")
		// Spent.
		acctUIA(t, b, "POST", csV3+"/account/3pid/add", alice.tok, add, pwAuth).want(t, 400, "M_THREEPID_AUTH_FAILED")

		list := acctDo(t, b, "GET", csV3+"/account/3pid", alice.tok, nil).body["threepids"].([]any)
		if len(list) != 1 || list[0].(map[string]any)["address"] != "alice@example.org" || list[0].(map[string]any)["medium"] != "email" ||
			list[0].(map[string]any)["validated_at"].(float64) <= 0 {
			t.Fatalf("3pids: %v", list)
		}

		// Taken: bob cannot start adding it, nor register with it; a
		// reset needs an address that is on an account.
		acctDo(t, b, "POST", csV3+"/account/3pid/email/requestToken", bob.tok,
			map[string]any{"client_secret": "bob", "email": "alice@EXAMPLE.org", "send_attempt": 1}).want(t, 400, "M_THREEPID_IN_USE")
		acctDo(t, b, "POST", csV3+"/register/email/requestToken", "",
			map[string]any{"client_secret": "x", "email": "alice@example.org", "send_attempt": 1}).want(t, 400, "M_THREEPID_IN_USE")
		acctDo(t, b, "POST", csV3+"/account/password/email/requestToken", "",
			map[string]any{"client_secret": "x", "email": "nobody@example.org", "send_attempt": 1}).want(t, 400, "M_THREEPID_NOT_FOUND")
		// Bad input.
		acctDo(t, b, "POST", csV3+"/account/3pid/email/requestToken", alice.tok,
			map[string]any{"client_secret": "x", "email": "not an address", "send_attempt": 1}).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "POST", csV3+"/account/3pid/email/requestToken", alice.tok,
			map[string]any{"client_secret": "x", "email": "a@example.org"}).want(t, 400, "M_MISSING_PARAM")
		acctDo(t, b, "POST", csV3+"/account/3pid/email/requestToken", alice.tok,
			map[string]any{"client_secret": "x", "email": "a@example.org", "send_attempt": 1, "next_link": "javascript:alert(1)"}).want(t, 400, "M_INVALID_PARAM")
		mail.None(t)

		// Login by address, any case.
		cli := acctClient(t, b, "")
		login := func(address, password string) (*mautrix.RespLogin, error) {
			return cli.Login(t.Context(), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Password: password,
				Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeThirdParty, Medium: "email", Address: address}})
		}
		resp, err := login("ALICE@example.org", acctPW)
		if err != nil || resp.UserID != alice.id {
			t.Fatalf("login by email: %v %v", resp, err)
		}
		_, err = login("alice@example.org", "wrong")
		acctWantErr(t, err, 403, "M_FORBIDDEN")
		_, err = login("nobody@example.org", acctPW)
		acctWantErr(t, err, 403, "M_FORBIDDEN")

		// The admin API sees it and finds the user by it.
		au := acctDo(t, b, "GET", "/_synapse/admin/v2/users/"+esc(alice.id.String()), bob.tok, nil)
		if tp, _ := au.body["threepids"].([]any); len(tp) != 1 || tp[0].(map[string]any)["address"] != "alice@example.org" {
			t.Fatalf("admin user: %v", au.body)
		}
		if r := acctDo(t, b, "GET", "/_synapse/admin/v1/threepid/email/users/alice%40example.org", bob.tok, nil); r.status != 200 || r.body["user_id"] != alice.id.String() {
			t.Fatalf("admin threepid lookup: %d %v", r.status, r.body)
		}
		acctDo(t, b, "GET", "/_synapse/admin/v1/threepid/email/users/nobody%40example.org", bob.tok, nil).want(t, 404, "M_NOT_FOUND")
		// The admin may give bob an address, not alice's.
		acctDo(t, b, "PUT", "/_synapse/admin/v2/users/"+esc(bob.id.String()), bob.tok,
			map[string]any{"threepids": []any{map[string]any{"medium": "email", "address": "alice@example.org"}}}).want(t, 409, "M_THREEPID_IN_USE")
		pu := acctDo(t, b, "PUT", "/_synapse/admin/v2/users/"+esc(bob.id.String()), bob.tok,
			map[string]any{"threepids": []any{map[string]any{"medium": "email", "address": "Bob@Example.org"}}})
		if tp, _ := pu.body["threepids"].([]any); pu.status != 200 || len(tp) != 1 || tp[0].(map[string]any)["address"] != "bob@example.org" {
			t.Fatalf("admin put threepids: %d %v", pu.status, pu.body)
		}

		// An email pusher needs an address on the account (as Synapse).
		emailPusher := func(address string) map[string]any {
			return map[string]any{"kind": "email", "app_id": "m.email", "pushkey": address, "app_display_name": "Email",
				"device_display_name": address, "lang": "en", "data": map[string]any{}}
		}
		acctDo(t, b, "POST", csV3+"/pushers/set", bob.tok, emailPusher("alice@example.org")).want(t, 400, "M_THREEPID_NOT_FOUND")
		acctDo(t, b, "POST", csV3+"/pushers/set", alice.tok, emailPusher("alice@example.org")).want(t, 200, "")
		if ps := acctDo(t, b, "GET", csV3+"/pushers", alice.tok, nil).body["pushers"].([]any); len(ps) != 1 || ps[0].(map[string]any)["kind"] != "email" {
			t.Fatalf("pushers: %v", ps)
		}

		// Removed: gone from the list, from logins, and its pusher too.
		r = acctDo(t, b, "POST", csV3+"/account/3pid/delete", alice.tok, map[string]any{"medium": "email", "address": "alice@example.org"})
		if r.status != 200 || r.body["id_server_unbind_result"] != "no-support" {
			t.Fatalf("delete: %d %v", r.status, r.body)
		}
		if list := acctDo(t, b, "GET", csV3+"/account/3pid", alice.tok, nil).body["threepids"].([]any); len(list) != 0 {
			t.Fatalf("3pids after delete: %v", list)
		}
		_, err = login("alice@example.org", acctPW)
		acctWantErr(t, err, 403, "M_FORBIDDEN")
		if ps := acctDo(t, b, "GET", csV3+"/pushers", alice.tok, nil).body["pushers"].([]any); len(ps) != 0 {
			t.Fatalf("pushers after delete: %v", ps)
		}
	})
}

// TestEmailRegisterAndReset: registrations_require_3pid with implicit
// TLS, the submit_url JSON form and its errors, an expired token, then a
// password reset by email.
func TestEmailRegisterAndReset(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		mail := servertest.StartMailServer(t, servertest.MailOptions{ImplicitTLS: true})
		b, clk := startEmailServer(t, e, mail, func(c *config.Config) {
			c.RegistrationsRequire3PID = []string{"email"}
			c.EnableRegistrationWithoutVerification = false
		})
		reg := map[string]any{"username": "carol", "password": acctPW}
		first := acctDo(t, b, "POST", csV3+"/register", "", reg)
		flows, _ := first.body["flows"].([]any)
		if first.status != 401 || len(flows) != 1 || len(flows[0].(map[string]any)["stages"].([]any)) != 1 ||
			flows[0].(map[string]any)["stages"].([]any)[0] != "m.login.email.identity" {
			t.Fatalf("register flows: %d %v", first.status, first.body)
		}
		session := first.body["session"].(string)
		// The dummy stage is not enough.
		r := acctDo(t, b, "POST", csV3+"/register", "", map[string]any{"auth": map[string]any{"type": "m.login.dummy", "session": session}})
		if r.status != 401 || r.errcode() != "M_FORBIDDEN" {
			t.Fatalf("dummy stage: %d %v", r.status, r.body)
		}

		r = acctDo(t, b, "POST", csV3+"/register/email/requestToken", "", map[string]any{"client_secret": "carol-secret", "email": "carol@example.org", "send_attempt": 1})
		r.want(t, 200, "")
		sid := r.body["sid"].(string)
		m := mail.Next(t)
		if !m.TLS || m.To[0] != "carol@example.org" || !strings.Contains(m.Text, "register") {
			t.Fatalf("mail: tls %v to %v:\n%s", m.TLS, m.To, m.Text)
		}
		_, token := emailLink(t, m)
		emailAuth := map[string]any{"type": "m.login.email.identity", "session": session,
			"threepid_creds": map[string]any{"sid": sid, "client_secret": "carol-secret"}}
		// Not validated yet: the stage fails, the client may poll.
		r = acctDo(t, b, "POST", csV3+"/register", "", map[string]any{"auth": emailAuth})
		if r.status != 401 || r.errcode() != "M_THREEPID_AUTH_FAILED" {
			t.Fatalf("unvalidated stage: %d %v", r.status, r.body)
		}
		// submit_url, JSON: wrong token, wrong secret, then right.
		sub := "/_hearth/client/email/submit_token"
		acctDo(t, b, "POST", sub, "", map[string]any{"sid": sid, "client_secret": "carol-secret", "token": "nope"}).want(t, 400, "M_TOKEN_INCORRECT")
		acctDo(t, b, "POST", sub, "", map[string]any{"sid": sid, "client_secret": "other", "token": token}).want(t, 400, "M_INVALID_PARAM")
		acctDo(t, b, "POST", sub, "", map[string]any{"sid": sid}).want(t, 400, "M_MISSING_PARAM")
		if r := acctDo(t, b, "POST", sub, "", map[string]any{"sid": sid, "client_secret": "carol-secret", "token": token}); r.status != 200 || r.body["success"] != true {
			t.Fatalf("submit: %d %v", r.status, r.body)
		}
		r = acctDo(t, b, "POST", csV3+"/register", "", map[string]any{"auth": emailAuth})
		if r.status != 200 || r.body["user_id"] != "@carol:hearth.test" {
			t.Fatalf("register: %d %v", r.status, r.body)
		}
		carolTok := r.body["access_token"].(string)
		if list := acctDo(t, b, "GET", csV3+"/account/3pid", carolTok, nil).body["threepids"].([]any); len(list) != 1 ||
			list[0].(map[string]any)["address"] != "carol@example.org" {
			t.Fatalf("3pids: %v", list)
		}

		// An expired token.
		r = acctDo(t, b, "POST", csV3+"/account/password/email/requestToken", "", map[string]any{"client_secret": "reset-1", "email": "carol@example.org", "send_attempt": 1})
		r.want(t, 200, "")
		oldSID := r.body["sid"].(string)
		m = mail.Next(t)
		if m.Subject != "[hearth.test] Password reset" {
			t.Fatalf("reset subject %q", m.Subject)
		}
		oldLink, oldToken := emailLink(t, m)
		clk.advance(2 * time.Hour)
		acctDo(t, b, "POST", sub, "", map[string]any{"sid": oldSID, "client_secret": "reset-1", "token": oldToken}).want(t, 400, "M_SESSION_EXPIRED")
		if status, _, body := fetchPage(t, b, "GET", oldLink, nil); status != 400 || !strings.Contains(body, "expired") {
			t.Fatalf("expired link page: %d %s", status, body)
		}

		// A new send attempt mails a new token, which works.
		r = acctDo(t, b, "POST", csV3+"/account/password/email/requestToken", "", map[string]any{"client_secret": "reset-1", "email": "carol@example.org", "send_attempt": 2})
		if r.status != 200 || r.body["sid"] != oldSID {
			t.Fatalf("second attempt: %d %v", r.status, r.body)
		}
		link, token := emailLink(t, mail.Next(t))
		if token == oldToken {
			t.Fatal("the second email repeats the first token")
		}
		if status, _, body := fetchPage(t, b, "GET", link, nil); status != 200 || !strings.Contains(body, "Reset your password") {
			t.Fatalf("reset link page: %d %s", status, body)
		}
		if status, _, body := fetchPage(t, b, "POST", sub, url.Values{"sid": {oldSID}, "client_secret": {"reset-1"}, "token": {token}}); status != 200 || !strings.Contains(body, "confirmed") {
			t.Fatalf("confirm page: %d %s", status, body)
		}
		// The reset: no access token, the email stage names the account.
		pw := acctDo(t, b, "POST", csV3+"/account/password", "", map[string]any{"new_password": "a brand new password"})
		if pw.status != 401 || !strings.Contains(asJSON(pw.body["flows"]), "m.login.email.identity") {
			t.Fatalf("password flows: %d %v", pw.status, pw.body)
		}
		r = acctDo(t, b, "POST", csV3+"/account/password", "", map[string]any{"auth": map[string]any{"type": "m.login.email.identity",
			"session": pw.body["session"], "threepid_creds": map[string]any{"sid": oldSID, "client_secret": "reset-1"}}})
		r.want(t, 200, "")
		// Devices are logged out; the old password is gone, the new one
		// works by address.
		acctDo(t, b, "GET", csV3+"/account/whoami", carolTok, nil).want(t, 401, "M_UNKNOWN_TOKEN")
		cli := acctClient(t, b, "")
		_, err := cli.Login(t.Context(), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Password: acctPW,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "carol"}})
		acctWantErr(t, err, 403, "M_FORBIDDEN")
		resp, err := cli.Login(t.Context(), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Password: "a brand new password",
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeThirdParty, Medium: "email", Address: "carol@example.org"}})
		if err != nil || resp.UserID != "@carol:hearth.test" {
			t.Fatalf("login with the new password: %v %v", resp, err)
		}
		// The session is spent: it cannot reset again.
		pw = acctDo(t, b, "POST", csV3+"/account/password", "", map[string]any{"new_password": "yet another password"})
		r = acctDo(t, b, "POST", csV3+"/account/password", "", map[string]any{"auth": map[string]any{"type": "m.login.email.identity",
			"session": pw.body["session"], "threepid_creds": map[string]any{"sid": oldSID, "client_secret": "reset-1"}}})
		if r.status != 401 || r.errcode() != "M_THREEPID_AUTH_FAILED" {
			t.Fatalf("spent session: %d %v", r.status, r.body)
		}
		// Deactivation frees the address.
		acctUIA(t, b, "POST", csV3+"/account/deactivate", resp.AccessToken, nil,
			func(s string) map[string]any { return acctPasswordAuth("carol", "a brand new password", s) }).want(t, 200, "")
		acctDo(t, b, "POST", csV3+"/register/email/requestToken", "", map[string]any{"client_secret": "again", "email": "carol@example.org", "send_attempt": 1}).want(t, 200, "")
		mail.Next(t)
	})
}

// TestEmailSMTPFailure: a mail server that refuses the recipient makes
// requestToken fail with 500, and the client's retry with the same
// send_attempt tries again instead of answering a session no email went
// out for. request_token_inhibit_3pid_errors hides whether an address is
// taken.
func TestEmailSMTPFailure(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		mail := servertest.StartMailServer(t, servertest.MailOptions{RejectRcpt: true})
		b, _ := startEmailServer(t, e, mail, func(c *config.Config) { c.RequestTokenInhibit3PIDErrors = true })
		req := map[string]any{"client_secret": "s", "email": "dave@example.org", "send_attempt": 1}
		acctDo(t, b, "POST", csV3+"/register/email/requestToken", "", req).want(t, 500, "M_UNKNOWN")
		acctDo(t, b, "POST", csV3+"/register/email/requestToken", "", req).want(t, 500, "M_UNKNOWN")

		// Inhibited: a reset for an address on no account looks like any
		// other, and sends nothing.
		r := acctDo(t, b, "POST", csV3+"/account/password/email/requestToken", "", req)
		if r.status != 200 || r.body["sid"] == "" {
			t.Fatalf("inhibited: %d %v", r.status, r.body)
		}
	})
}

// TestEmailDisabledByConfig: enable_3pid_changes false keeps the email
// section for registration while users cannot change their addresses.
func TestEmailDisabledByConfig(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		mail := servertest.StartMailServer(t, servertest.MailOptions{})
		off := false
		b, _ := startEmailServer(t, e, mail, func(c *config.Config) { c.Enable3PIDChanges = &off })
		alice := newRoomUser(t, b, "alice")
		acctDo(t, b, "POST", csV3+"/account/3pid/email/requestToken", alice.tok,
			map[string]any{"client_secret": "s", "email": "a@example.org", "send_attempt": 1}).want(t, 403, "M_FORBIDDEN")
		caps := acctDo(t, b, "GET", csV3+"/capabilities", alice.tok, nil).body["capabilities"].(map[string]any)
		if c, _ := caps["m.3pid_changes"].(map[string]any); c["enabled"] != false {
			t.Fatalf("m.3pid_changes: %v", caps)
		}
		// Registration still offers email next to the dummy stage.
		first := acctDo(t, b, "POST", csV3+"/register", "", map[string]any{"username": "x", "password": acctPW})
		if !strings.Contains(asJSON(first.body["flows"]), "m.login.email.identity") || !strings.Contains(asJSON(first.body["flows"]), "m.login.dummy") {
			t.Fatalf("flows: %v", first.body)
		}
		mail.None(t)
	})
}
