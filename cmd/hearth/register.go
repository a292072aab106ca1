package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// runRegisterUser creates an account through the shared-secret admin API,
// as Synapse's register_new_matrix_user does, against Hearth or Synapse.
func runRegisterUser(args []string) error {
	fs := flag.NewFlagSet("register-user", flag.ContinueOnError)
	var cfgPath, user, password, userType, sharedSecret string
	var admin, noAdmin bool
	fs.StringVar(&cfgPath, "c", "", "homeserver.yaml to read registration_shared_secret (and the URL) from")
	fs.StringVar(&cfgPath, "config-path", "", "same as -c")
	fs.StringVar(&cfgPath, "config", "", "same as -c (Synapse's spelling)")
	fs.StringVar(&user, "user", "", "localpart of the new user (prompted when missing)")
	fs.StringVar(&user, "u", "", "same as --user")
	fs.StringVar(&password, "password", "", "password of the new user (prompted when missing; visible to other local users in the process list)")
	fs.StringVar(&password, "p", "", "same as --password")
	fs.BoolVar(&admin, "admin", false, "make the user a server admin")
	fs.BoolVar(&admin, "a", false, "same as --admin")
	fs.BoolVar(&noAdmin, "no-admin", false, "make a regular user without asking")
	fs.StringVar(&userType, "user-type", "", "optional user_type: bot or support")
	fs.StringVar(&userType, "t", "", "same as --user-type")
	fs.StringVar(&sharedSecret, "shared-secret", "", "use this secret instead of the config's registration_shared_secret")
	fs.StringVar(&sharedSecret, "k", "", "same as --shared-secret")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: hearth register-user -c FILE [--user U] [--password P] [--admin|--no-admin] [URL]")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return fmt.Errorf("unexpected argument %q (only one server URL)", pos[1])
	}
	if admin && noAdmin {
		return errors.New("--admin and --no-admin contradict each other")
	}
	if cfgPath == "" && sharedSecret == "" {
		return errors.New("-c FILE is required (the config holding registration_shared_secret)")
	}

	url := ""
	if len(pos) == 1 {
		url = pos[0]
	}
	if cfgPath != "" {
		cfg, err := readCLIConfig(cfgPath)
		if err != nil {
			return err
		}
		if sharedSecret == "" {
			if sharedSecret, err = cfg.sharedSecret(cfgPath); err != nil {
				return err
			}
		}
		if url == "" {
			if url, err = cfg.clientURL(cfgPath); err != nil {
				return err
			}
		}
	}
	if url == "" {
		return errors.New("no server URL: give it as an argument, or -c FILE to read it from the listeners")
	}

	p := newPrompter()
	if user == "" {
		if user, err = p.line("New user localpart: "); err != nil {
			return err
		}
		user = strings.TrimSpace(user)
		if user == "" {
			return errors.New("a user localpart is required")
		}
	}
	if password == "" {
		if password, err = p.newPassword(); err != nil {
			return err
		}
	}
	if !admin && !noAdmin {
		if admin, err = p.yesNo("Make admin"); err != nil {
			return err
		}
	}

	res, err := registerWithSharedSecret(&http.Client{Timeout: 30 * time.Second}, url, sharedSecret, user, password, admin, userType)
	if err != nil {
		return err
	}
	fmt.Printf("Success! Registered %s (device %s) on %s.\n", res.UserID, res.DeviceID, url)
	return nil
}

// registered is the server's answer to a successful registration.
type registered struct {
	UserID      string `json:"user_id"`
	AccessToken string `json:"access_token"`
	DeviceID    string `json:"device_id"`
	HomeServer  string `json:"home_server"`
}

// registerWithSharedSecret runs Synapse's documented two-step protocol:
// fetch a nonce, then post the account with an HMAC-SHA1 over
// nonce\0user\0password\0admin|notadmin[\0user_type].
func registerWithSharedSecret(hc *http.Client, baseURL, sharedSecret, user, password string, admin bool, userType string) (*registered, error) {
	endpoint := strings.TrimRight(baseURL, "/") + "/_synapse/admin/v1/register"
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	if err := call(hc, http.MethodGet, endpoint, nil, &nonce); err != nil {
		return nil, err
	}
	if nonce.Nonce == "" {
		return nil, fmt.Errorf("GET %s returned no nonce", endpoint)
	}
	m := hmac.New(sha1.New, []byte(sharedSecret))
	kind := "notadmin"
	if admin {
		kind = "admin"
	}
	parts := []string{nonce.Nonce, user, password, kind}
	if userType != "" {
		parts = append(parts, userType)
	}
	m.Write([]byte(strings.Join(parts, "\x00")))
	body := map[string]any{"nonce": nonce.Nonce, "username": user, "password": password, "admin": admin,
		"mac": hex.EncodeToString(m.Sum(nil))}
	if userType != "" {
		body["user_type"] = userType
	}
	var res registered
	if err := call(hc, http.MethodPost, endpoint, body, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// call sends one JSON request and decodes the answer; a Matrix error answer
// becomes an error carrying the server's errcode and message.
func call(hc *http.Client, method, url string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the server (is it running?): %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading answer: %w", method, url, err)
	}
	if resp.StatusCode != http.StatusOK {
		var me struct {
			Code string `json:"errcode"`
			Msg  string `json:"error"`
		}
		if json.Unmarshal(raw, &me) == nil && me.Code != "" {
			return fmt.Errorf("server refused (%s): %s: %s", resp.Status, me.Code, me.Msg)
		}
		return fmt.Errorf("%s %s: server answered %s", method, url, resp.Status)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s %s: answer is not the expected JSON: %w", method, url, err)
	}
	return nil
}

// parseInterspersed parses flags that may come before or after positional
// arguments (the standard flag package stops at the first positional one).
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
