package server

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/mail"
	"net/url"
	"strings"
	"time"

	"hearth/server/mailer"
	"hearth/server/matrix"
	"hearth/server/secret"
	"hearth/server/storage"
	"hearth/templates"
)

// Email validation (spec: "Adding Account Administrative Contact
// Information", requestToken's submit_url; the Identity Service API's
// /validate/email/submitToken, which submit_url mirrors). A requestToken
// endpoint starts a session and emails a token, as a link to the submit
// page below and as a code for clients that ask for one; the session is
// validated when the token comes back, and is then spent by the request it
// was started for: /account/3pid/add, /register's m.login.email.identity
// stage, or /account/password's.

// Purposes of validation sessions: a session validated for one cannot be
// spent on another.
const (
	purposeRegister = "register"
	purposeAdd      = "add"
	purposePassword = "password"
)

// emailSubmitPath is the submit page, linked from the emails and given to
// clients as submit_url.
const emailSubmitPath = "/_hearth/client/email/submit_token"

// validatedSessionTTL is how long a validated session may be spent
// (Synapse: 24 hours).
const validatedSessionTTL = 24 * time.Hour

// sessionTTL bounds a session's whole life, after which it is swept.
const sessionTTL = 48 * time.Hour

// canonicalEmail checks an address and returns the form it is stored and
// compared in: trimmed and lower-cased, as Synapse does. A display name,
// comments or a group are refused.
func canonicalEmail(address string) (string, error) {
	address = strings.TrimSpace(address)
	a, err := mail.ParseAddress(address)
	if err != nil || a.Name != "" || a.Address != address || len(address) > 500 {
		return "", matrix.InvalidParam("%q is not an email address", address)
	}
	return strings.ToLower(address), nil
}

// submitURL is where clients send tokens and where the emails link.
func (s *Server) submitURL() string {
	return strings.TrimSuffix(s.cfg.PublicBaseURL, "/") + emailSubmitPath
}

// sendValidationEmail emails the session's token.
func (s *Server) sendValidationEmail(ctx context.Context, se *storage.ThreePIDSession, token string) error {
	if s.mailerErr != nil {
		return s.mailerErr
	}
	m := s.mailer
	q := url.Values{"sid": {se.ID}, "client_secret": {se.ClientSecret}, "token": {token}}
	link := s.submitURL() + "?" + q.Encode()
	subject := s.cfg.Email.Subjects.EmailValidation
	intro := "Someone asked to use this email address with " + s.cfg.ServerName + ". To confirm it is yours, follow the link:"
	switch se.Purpose {
	case purposeRegister:
		intro = "Someone asked to register an account on " + s.cfg.ServerName + " with this email address. To confirm it is yours, follow the link:"
	case purposeAdd:
		intro = "Someone asked to add this email address to an account on " + s.cfg.ServerName + ". To confirm it is yours, follow the link:"
	case purposePassword:
		subject = s.cfg.Email.Subjects.PasswordReset
		intro = "A password reset was requested for the account on " + s.cfg.ServerName + " with this email address. To confirm it, follow the link:"
	}
	expires := s.cfg.Email.ValidationTokenLifetime.Std().String()
	vm := templates.ValidationEmailVM{ServerName: s.cfg.ServerName, AppName: m.AppName(), Intro: intro, Link: link, Token: token, Expires: expires}
	var html bytes.Buffer
	if err := templates.ValidationEmail(vm).Render(ctx, &html); err != nil {
		return err
	}
	text := fmt.Sprintf("Hi,\n\n%s\n\n%s\n\nIf your app asks for a code, enter: %s\n\nThe link works for %s. If it was not you, ignore this email: nothing changes until the link is followed.\n\n%s · %s\n",
		intro, link, token, expires, m.AppName(), s.cfg.ServerName)
	return m.Send(ctx, mailer.Message{To: se.Address, Subject: m.Subject(subject, s.cfg.ServerName), Text: text, HTML: html.String()})
}

// startEmailSession is the work of the requestToken endpoints once the
// request is checked: it finds or starts the client's session for the
// address and emails a token, unless send_attempt repeats one already
// made (the spec's idempotency: the same sid, no second email).
func (s *Server) startEmailSession(ctx context.Context, purpose, address, clientSecret, nextLink string, sendAttempt int64) (string, error) {
	now := s.now()
	if err := s.store.ExpireThreePIDSessions(ctx, now.Add(-sessionTTL).UnixMilli()); err != nil {
		return "", err
	}
	token := secret.FromAlphabet("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 32)
	expires := now.Add(s.cfg.Email.ValidationTokenLifetime.Std()).UnixMilli()
	se, err := s.store.ThreePIDSessionBySecret(ctx, purpose, "email", address, clientSecret)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		se = &storage.ThreePIDSession{ID: secret.Token(""), Purpose: purpose, Medium: "email", Address: address,
			ClientSecret: clientSecret, LastSendAttempt: sendAttempt, NextLink: nextLink,
			TokenHash: storage.HashToken(token), TokenExpires: expires, Created: now.UnixMilli()}
		if err := s.store.CreateThreePIDSession(ctx, se); errors.Is(err, storage.ErrConflict) {
			// A concurrent request with the same secret made it: that
			// one sends.
			se, err = s.store.ThreePIDSessionBySecret(ctx, purpose, "email", address, clientSecret)
			if err != nil {
				return "", err
			}
			return se.ID, nil
		} else if err != nil {
			return "", err
		}
	case err != nil:
		return "", err
	case sendAttempt <= se.LastSendAttempt:
		return se.ID, nil
	default:
		renewed, err := s.store.RenewThreePIDSessionToken(ctx, se.ID, sendAttempt, nextLink, storage.HashToken(token), expires)
		if err != nil || !renewed {
			return se.ID, err
		}
		se.NextLink = nextLink
	}
	if err := s.sendValidationEmail(ctx, se, token); err != nil {
		// The client's retry, with the same send_attempt, must send
		// again: forget the session.
		if _, derr := s.store.DeleteThreePIDSession(context.WithoutCancel(ctx), se.ID); derr != nil {
			err = errors.Join(err, derr)
		}
		return "", &matrix.Error{Code: "M_UNKNOWN", Status: http.StatusInternalServerError,
			Msg: "the server could not send the email; its administrator can see why in the log", Err: err}
	}
	return se.ID, nil
}

// submitToken validates a session with its emailed token; the errors are
// those of the Identity Service API's submitToken.
func (s *Server) submitToken(ctx context.Context, sid, clientSecret, token string) (*storage.ThreePIDSession, error) {
	if sid == "" || clientSecret == "" || token == "" {
		return nil, matrix.MissingParam("sid, client_secret and token are required")
	}
	se, err := s.store.ThreePIDSessionByID(ctx, sid)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && subtle.ConstantTimeCompare([]byte(se.ClientSecret), []byte(clientSecret)) != 1) {
		return nil, matrix.InvalidParam("no validation session has that sid and client_secret")
	}
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare([]byte(se.TokenHash), []byte(storage.HashToken(token))) != 1 {
		return nil, &matrix.Error{Code: "M_TOKEN_INCORRECT", Msg: "the token is incorrect"}
	}
	if se.ValidatedAt != 0 {
		return se, nil // following the link twice is no error
	}
	if s.now().UnixMilli() >= se.TokenExpires {
		return nil, &matrix.Error{Code: "M_SESSION_EXPIRED", Msg: "the token has expired: ask for a new email"}
	}
	if err := s.store.MarkThreePIDSessionValidated(ctx, se.ID, s.now().UnixMilli()); err != nil {
		return nil, err
	}
	return se, nil
}

// validatedSession returns the client's session for purpose once its token
// came back, for the request that spends it.
func (s *Server) validatedSession(ctx context.Context, purpose, sid, clientSecret string) (*storage.ThreePIDSession, *matrix.Error, error) {
	se, err := s.store.ThreePIDSessionByID(ctx, sid)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, &matrix.Error{Code: "M_THREEPID_AUTH_FAILED", Msg: "no validation session has that sid and client_secret"}, nil
	}
	if err != nil {
		return nil, nil, err
	}
	if subtle.ConstantTimeCompare([]byte(se.ClientSecret), []byte(clientSecret)) != 1 || se.Purpose != purpose {
		return nil, &matrix.Error{Code: "M_THREEPID_AUTH_FAILED", Msg: "no validation session has that sid and client_secret"}, nil
	}
	if se.ValidatedAt == 0 {
		return nil, &matrix.Error{Code: "M_THREEPID_AUTH_FAILED", Msg: "the email address has not been validated yet: follow the link in the email"}, nil
	}
	if s.now().Sub(time.UnixMilli(se.ValidatedAt)) > validatedSessionTTL {
		return nil, &matrix.Error{Code: "M_THREEPID_AUTH_FAILED", Msg: "the validation has expired: start again"}, nil
	}
	return se, nil, nil
}

// POST /_hearth/client/email/submit_token
//
// Clients post JSON here (submit_url); the page of the emailed link posts
// its form, and gets a page back, or a redirect to the next_link the
// client gave.
func (s *Server) postEmailSubmitToken(w http.ResponseWriter, r *http.Request) error {
	if err := s.limits.threePID.check("submit|" + clientIP(r, s.xForwarded(r))); err != nil {
		return withRetryAfter(w, err)
	}
	ct := r.Header.Get("Content-Type")
	if strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
		if err := r.ParseForm(); err != nil {
			return s.emailPage(w, r, http.StatusBadRequest, templates.EmailPageVM{Title: "Not confirmed", Message: "The form could not be read.", Failed: true})
		}
		se, err := s.submitToken(r.Context(), r.PostForm.Get("sid"), r.PostForm.Get("client_secret"), r.PostForm.Get("token"))
		if err != nil {
			var me *matrix.Error
			if !errors.As(err, &me) {
				return err
			}
			s.limits.threePID.charge("submit|" + clientIP(r, s.xForwarded(r)))
			return s.emailPage(w, r, http.StatusBadRequest, templates.EmailPageVM{Title: "Not confirmed", Message: submitFailure(me), Failed: true})
		}
		if se.NextLink != "" {
			http.Redirect(w, r, se.NextLink, http.StatusSeeOther)
			return nil
		}
		return s.emailPage(w, r, http.StatusOK, templates.EmailPageVM{Title: "Email address confirmed", Message: submitSuccess(se.Purpose)})
	}
	var req struct {
		SID          string `json:"sid"`
		ClientSecret string `json:"client_secret"`
		Token        string `json:"token"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if _, err := s.submitToken(r.Context(), req.SID, req.ClientSecret, req.Token); err != nil {
		var me *matrix.Error
		if errors.As(err, &me) {
			s.limits.threePID.charge("submit|" + clientIP(r, s.xForwarded(r)))
		}
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]bool{"success": true})
}

// GET /_hearth/client/email/submit_token
//
// The emailed link. It changes nothing: it shows a button that posts the
// token, so a mail scanner that follows links validates nothing.
func (s *Server) getEmailSubmitToken(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	sid, secret, token := q.Get("sid"), q.Get("client_secret"), q.Get("token")
	se, err := s.store.ThreePIDSessionByID(r.Context(), sid)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	if se == nil || token == "" || subtle.ConstantTimeCompare([]byte(se.ClientSecret), []byte(secret)) != 1 {
		return s.emailPage(w, r, http.StatusBadRequest, templates.EmailPageVM{Title: "Link not valid",
			Message: "This link is not valid: it may have been used already, or been copied incompletely.", Failed: true})
	}
	if se.ValidatedAt == 0 && s.now().UnixMilli() >= se.TokenExpires {
		return s.emailPage(w, r, http.StatusBadRequest, templates.EmailPageVM{Title: "Link expired",
			Message: "This link has expired. Ask your app to send a new email.", Failed: true})
	}
	title, msg, button := "Confirm your email address", "Confirm that "+se.Address+" is yours.", "Confirm"
	if se.Purpose == purposePassword {
		title, msg, button = "Reset your password", "Confirm that you asked to reset the password of the account with "+se.Address+".", "Confirm the reset"
	}
	return s.emailPage(w, r, http.StatusOK, templates.EmailPageVM{Title: title, Message: msg, Form: true,
		Action: emailSubmitPath, SID: sid, Secret: secret, Token: token, Button: button})
}

func (s *Server) emailPage(w http.ResponseWriter, r *http.Request, status int, vm templates.EmailPageVM) error {
	vm.ServerName = s.cfg.ServerName
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	return templates.EmailPage(vm).Render(r.Context(), w)
}

func submitSuccess(purpose string) string {
	switch purpose {
	case purposePassword:
		return "Your email address is confirmed. Return to your app to choose the new password."
	case purposeRegister:
		return "Your email address is confirmed. Return to your app to finish registering."
	}
	return "Your email address is confirmed. Return to your app to finish adding it."
}

func submitFailure(e *matrix.Error) string {
	switch e.Code {
	case "M_TOKEN_INCORRECT":
		return "The link is not valid: it may have been copied incompletely, or replaced by a newer email."
	case "M_SESSION_EXPIRED":
		return "The link has expired. Ask your app to send a new email."
	}
	return "This link is not valid: it may have been used already, or been copied incompletely."
}
