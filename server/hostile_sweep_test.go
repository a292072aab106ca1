package server_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/server"
	"hearth/server/federation"
	"hearth/server/oauth"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// Every route the server has, found by walking its router (so a route
// added later is swept too), is sent hostile input: bodies that are not
// JSON, not an object, nested too deep, with strings of invalid UTF-8,
// NUL characters or lone surrogates, and with the fields handlers read
// given the wrong types, integers past 32 and 64 bits; path parameters
// that are NUL, too long or not UTF-8; query parameters of the wrong
// kind, NUL, not UTF-8, too large or too long; then event content the
// server reads into columns of its own. No answer may be a 500: a client
// can cause none of them. Every error answer is a JSON object with an
// errcode; both engines answer every request alike (status and errcode);
// nothing is logged at error level, nor a PostgreSQL error.
func TestHostileInputSweep(t *testing.T) {
	if testing.Short() || raceDetector {
		t.Skip("the sweep sends thousands of requests; make test runs it without the race detector")
	}
	var mu sync.Mutex
	answers := map[string]map[string]string{} // engine → request → "status errcode"
	t.Cleanup(func() {
		sq, pg := answers["sqlite"], answers["postgres"]
		if sq == nil || pg == nil {
			return
		}
		var diffs []string
		for k, s := range sq {
			// A limit on guessing (delayed events' IDs) counts time too.
			p, ok := pg[k]
			limited := strings.HasPrefix(p, "429") || strings.HasPrefix(s, "429")
			if ok && p != s && !limited {
				diffs = append(diffs, fmt.Sprintf("%s: SQLite %s, PostgreSQL %s", k, s, p))
			}
		}
		slices.Sort(diffs)
		for _, d := range diffs {
			t.Errorf("the engines answer differently: %s", d)
		}
	})
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		errs := &servertest.ErrorLog{}
		b := servertest.StartWith(t, e, func(d *server.Deps) { d.Log = slog.New(errs) })
		got := sweep(t, b, everyRoute)
		// What a request started in the background (search indexing,
		// push evaluation, federation) failed on is only logged.
		time.Sleep(time.Second)
		for _, l := range errs.Lines() {
			t.Errorf("logged: %s", l)
		}
		mu.Lock()
		answers[e.Name] = got
		mu.Unlock()
	})
}

// sweepTarget is what path parameters name by default: real objects, so
// that the handlers get past their look-ups to the input they parse.
type sweepTarget struct {
	alice, bob   roomUser
	room, victim string // alice's room; the room admin routes act on
	event        string
	mediaID      string
	device       string
}

var routeParam = regexp.MustCompile(`\{([^}:]+)(:[^}]*)?\}`)

// sweepBodies are sent to every route that takes a body.
var sweepBodies = map[string]string{
	"empty":     "",
	"truncated": `{"a":`,
	"array":     `[]`,
	"null":      `null`,
	"string":    `"s"`,
	"object":    `{}`,
	"deep":      strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
	"invalid":   "{\"body\":\"\xff\xfe\",\"displayname\":\"\xc0\"}",
	"surrogate": `{"body":"\ud800","displayname":"\udfff","msgtype":"m.text","name":"\ud800","topic":"\ud800"}`,
	"nul":       `{"body":"a\u0000b","msgtype":"m.text","displayname":"a\u0000b","name":"a\u0000b","topic":"\u0000","room_alias_name":"a\u0000","reason":"\u0000","avatar_url":"mxc://a\u0000/b","content":{"k\u0000":"\u0000"},"device_id":"\u0000","user_id":"@a\u0000:hearth.test","password":"\u0000","new_password":"\u0000","username":"a\u0000","txn_id":"\u0000","type":"a\u0000","state_key":"\u0000","filter":"\u0000","ts":1,"keys":{"a\u0000":"b\u0000"}}`,
	"numbers":   `{"limit":1e400,"timeout":-1,"ts":99999999999999999999999,"origin_server_ts":-1e30,"depth":1.5,"power":1e20,"expires_in_ms":-5,"delay":-1,"score":-1e99}`,
	// Integers a 64-bit field holds but a 32-bit column (PostgreSQL's
	// integer) does not, and the largest a 64-bit one does (time limits
	// added to now overflow).
	"bigints":    `{"limit":2147483648,"timeout":2147483648,"uses_allowed":2147483648,"length":2147483648,"delay":2147483648,"score":2147483648,"size":2147483648,"expiry_time":9223372036854775807,"ts":9223372036854775807,"origin_server_ts":9223372036854775807,"expires_in_ms":9223372036854775807,"valid_until_ms":9223372036854775807,"delay_ms":9223372036854775807,"duration_ms":9223372036854775807,"before_ts":9223372036854775807,"timeout_ms":9223372036854775807}`,
	"wrongtypes": `{"body":1,"msgtype":[],"membership":{},"user_id":5,"room_id":true,"device_id":null,"content":"x","type":7,"auth":"x","password":1,"new_password":[],"displayname":[],"avatar_url":{},"visibility":3,"filter":"x","ts":"x","reason":5,"keys":"x","one_time_keys":[],"device_keys":1,"fallback_keys":"x","state_key":1,"timeout":"x","limit":"x","invite":"x","initial_state":{},"preset":1,"creation_content":[],"power_level_content_override":"x","room_version":1,"messages":[],"event_ids":{},"receipts":"x","typing":"x","presence":1,"status_msg":{},"m.fully_read":1,"m.read":[],"threepid_creds":"x","sid":1,"client_secret":2,"identifier":"x","initial_device_display_name":1,"refresh_token":1,"search_categories":"x","rules":1,"actions":"x","conditions":"x","pattern":1,"pushkey":1,"kind":1,"app_id":[],"data":"x","algorithm":1,"rooms":"x","version":{},"auth_data":"x","event_id":1,"score":"x","deactivated":"yes","admin":"yes","admin_users":1,"erase":"x","purge":"x","block":"x","new_room_user_id":1}`,
	"hugestring": `{"body":"` + strings.Repeat("a", 70000) + `","displayname":"` + strings.Repeat("b", 70000) + `","password":"` + strings.Repeat("c", 600) + `","new_password":"` + strings.Repeat("d", 100) + `"}`,
}

// sweepFormValues are what every OAuth form field is set to, in turn.
var sweepFormValues = map[string]string{"nul": "a\x00b", "notutf8": "a\xff\xfeb", "long": strings.Repeat("x", 5000), "wrongkind": "x"}

// sweepForm is every field the OAuth 2.0 API reads set to v.
func sweepForm(v string) url.Values {
	f := url.Values{}
	for _, k := range []string{"client_id", "client_secret", "redirect_uri", "grant_type", "code", "code_verifier", "refresh_token",
		"scope", "state", "response_type", "response_mode", "code_challenge", "code_challenge_method", "token", "token_type_hint",
		"device_code", "prompt", "nonce", "login_hint", "id_token_hint", "username", "password", "csrf", "authRequestID", "id", "consent"} {
		f.Set(k, v)
	}
	return f
}

// sweepPaths are what path parameters are replaced by, in turn.
var sweepPaths = map[string]string{
	"nul":     "%00",
	"long":    strings.Repeat("x", 5000),
	"notutf8": "%FF%FE",
	"dots":    "..%2F..",
}

// sweepQuery gives the query parameters handlers read values of the
// wrong kind (those that are not UTF-8 or hold a NUL character are
// refused before any handler: sweepQueryAll).
const sweepQuery = "limit=-1&from=zz&since=zz&to=x&dir=q&filter=%7B&timeout=-1&ts=x&at=z&full_state=maybe&set_presence=nope&order_by=x&direction=q&user_id=x&server_name=%C3%A9&via=..&allow_remote=x&width=-1&height=99999999999&method=x&url=x&animated=x&keyword=x&search_term=%E2%80%A8&type=x&include=x&only=x&membership=x&not_membership=x&max_depth=-1&size_gt=x&before_ts=x&minimum_valid_until_ts=x&valid=x&guests=x&deactivated=x&admins=x&suggested_only=x&recurse=x&page=-1&pos=x&next_batch=x&use_state_after=x&omit_members=x&keep_profiles=x&timeout_ms=-1&name=%2F&room_id=!x&event_id=$x&ver=x&v=x"

// sweepQueryNames are the query parameters handlers read (grep
// Query().Get and its kind), each sent NUL and then not UTF-8.
var sweepQueryNames = []string{"access_token", "action", "admins", "after", "allow_remote", "at", "before", "before_ts",
	"client_secret", "deactivated", "delay_id", "destination", "dir", "event_id", "field", "filename", "filter", "format",
	"from", "full_state", "guests", "include", "keep_profiles", "kind", "limit", "max_depth", "membership", "method",
	"minimum_valid_until_ts", "name", "next", "next_batch", "not_membership", "omit_members", "only", "order_by", "page",
	"pos", "recurse", "redirectUrl", "room_alias", "room_id", "search_term", "server", "server_name", "set_presence", "sid",
	"since", "size_gt", "suggested_only", "timeout", "timeout_ms", "to", "token", "ts", "url", "use_state_after", "user_id",
	"username", "v", "valid", "ver", "version", "via", "id_server", "medium", "address", "reason", "type", "keyword"}

// sweepQueryAll is every name of sweepQueryNames set to v.
func sweepQueryAll(v string) string {
	q := make([]string, 0, len(sweepQueryNames))
	for _, n := range sweepQueryNames {
		if n != "access_token" { // that one replaces the header's token
			q = append(q, n+"="+v)
		}
	}
	return strings.Join(q, "&")
}

// sweepScope is what a sweep covers: the routes want accepts, and extra
// ones ("METHOD /path") a library serves behind one mounted route. Its
// errors are the Matrix API's (a JSON object with an errcode) when
// matrixErrors is set; OAuth 2.0's have their own shape.
type sweepScope struct {
	want         func(route string) bool
	extra        []string
	matrixErrors bool
}

// everyRoute is the whole Matrix surface.
var everyRoute = sweepScope{want: func(string) bool { return true }, matrixErrors: true}

// sweep sends hostile input to the routes of scope.
func sweep(t *testing.T, b *servertest.Bundle, scope sweepScope) map[string]string {
	want := scope.want
	t.Helper()
	tg := sweepSetUp(t, b)
	answers := map[string]string{} // request → "status errcode"
	var routes []string
	err := chi.Walk(b.HTTP.Config.Handler.(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		// r0 is v3 again.
		if !strings.HasPrefix(route, "/_matrix/client/r0/") && want(route) {
			routes = append(routes, method+" "+strings.ReplaceAll(route, "/*/", "/"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	routes = append(routes, scope.extra...)
	slices.Sort(routes)
	routes = slices.Compact(routes)
	client := &http.Client{Timeout: 30 * time.Second}
	n := 0
	defer func() {
		byStatus := map[string]int{}
		for _, a := range answers {
			st, _, _ := strings.Cut(a, " ")
			byStatus[st]++
		}
		t.Logf("%d routes, %d requests; answers by status: %v", len(routes), n, byStatus)
	}()
	// exchange sends one request (with alice's token when auth) and keeps
	// its answer: the status and, for a Matrix error, its errcode.
	exchange := func(name, method, path, ctype, body string, auth, matrixErrors bool) {
		n++
		req, err := http.NewRequestWithContext(t.Context(), method, b.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if auth {
			req.Header.Set("Authorization", "Bearer "+tg.alice.tok)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		res, err := client.Do(req)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			return
		}
		raw, _ := io.ReadAll(res.Body)
		res.Body.Close()
		tg.settle(t, b, path)
		answers[name] = strconv.Itoa(res.StatusCode)
		if res.StatusCode >= 500 && res.StatusCode != http.StatusNotImplemented {
			t.Errorf("%s: %d %.300s", name, res.StatusCode, raw)
			return
		}
		if matrixErrors && res.StatusCode >= 400 && method != http.MethodHead && !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
			// An error is a JSON object with an errcode; a browser's page
			// (an e-mail link's) may be HTML; user-interactive auth's
			// first answer is its flows, without one.
			var e struct {
				Errcode string          `json:"errcode"`
				Flows   json.RawMessage `json:"flows"`
			}
			err := json.Unmarshal(raw, &e)
			if res.StatusCode == http.StatusUnauthorized && err == nil && e.Flows != nil {
				return
			}
			if err != nil || e.Errcode == "" {
				t.Errorf("%s: %d with no errcode: %.300q", name, res.StatusCode, raw)
			}
			answers[name] += " " + e.Errcode
		}
	}
	send := func(name, method, path, body string) {
		ctype := ""
		if body != "" {
			ctype = "application/json"
		}
		exchange(name, method, path, ctype, body, true, scope.matrixErrors)
	}
	sendForm := func(name, method, path string, form url.Values) {
		exchange(name, method, path, "application/x-www-form-urlencoded", form.Encode(), false, false)
	}
	for _, r := range routes {
		method, pattern, _ := strings.Cut(r, " ")
		if method == "CONNECT" || method == "TRACE" {
			continue
		}
		fill := func(v func(param string) string) string {
			p := routeParam.ReplaceAllStringFunc(pattern, func(m string) string {
				return v(routeParam.FindStringSubmatch(m)[1])
			})
			return strings.TrimSuffix(strings.ReplaceAll(p, "/*", "/x"), "*")
		}
		admin := strings.Contains(pattern, "admin")
		normal := fill(func(p string) string { return tg.value(p, admin, n) })
		hasBody := method == http.MethodPut || method == http.MethodPost || method == http.MethodDelete || method == http.MethodPatch
		if hasBody {
			for _, k := range slices.Sorted(maps.Keys(sweepBodies)) {
				send(r+" body "+k, method, normal, sweepBodies[k])
				tg.repair(t, b)
			}
			// The OAuth 2.0 API reads forms.
			if strings.HasPrefix(pattern, server.OAuthPath) {
				for _, k := range slices.Sorted(maps.Keys(sweepFormValues)) {
					sendForm(r+" form "+k, method, normal, sweepForm(sweepFormValues[k]))
				}
			}
		}
		send(r+" query", method, normal+"?"+sweepQuery, "")
		send(r+" query nul", method, normal+"?"+sweepQueryAll("a%00b"), "")
		send(r+" query notutf8", method, normal+"?"+sweepQueryAll("a%FFb"), "")
		send(r+" query overflow", method, normal+"?"+sweepQueryAll("99999999999999999999999"), "")
		send(r+" query long", method, normal+"?"+sweepQueryAll(strings.Repeat("x", 300)), "")
		if routeParam.MatchString(pattern) {
			for _, k := range slices.Sorted(maps.Keys(sweepPaths)) {
				send(r+" path "+k, method, fill(func(string) string { return sweepPaths[k] }), "{}")
			}
		}
		tg.repair(t, b)
	}
	if !want("/_matrix/client/v3/rooms/") {
		return answers
	}
	// Content the server reads from events into columns of their own
	// (the room's name and topic for the directory, members' names,
	// aliases, relations, the search index) with NUL characters and lone
	// surrogates in it.
	room := "/_matrix/client/v3/rooms/" + url.PathEscape(tg.room)
	nul := "a\u0000b"
	for _, ev := range []struct{ path, body string }{
		{"/state/m.room.name/", `{"name":"` + nul + `"}`},
		{"/state/m.room.topic/", `{"topic":"` + nul + `"}`},
		{"/state/m.room.avatar/", `{"url":"mxc://hearth.test/` + nul + `"}`},
		{"/state/m.room.canonical_alias/", `{"alias":"#` + nul + `:hearth.test","alt_aliases":["#` + nul + `:hearth.test"]}`},
		{"/state/m.room.member/" + url.PathEscape(string(tg.alice.id)), `{"membership":"join","displayname":"` + nul + `","avatar_url":"mxc://x/` + nul + `"}`},
		{"/state/m.room.join_rules/", `{"join_rule":"` + nul + `"}`},
		{"/state/m.room.history_visibility/", `{"history_visibility":"` + nul + `"}`},
		{"/state/m.room.guest_access/", `{"guest_access":"` + nul + `"}`},
		{"/state/m.room.encryption/", `{"algorithm":"` + nul + `"}`},
		{"/state/m.room.server_acl/", `{"allow":["` + nul + `"],"deny":["` + nul + `"]}`},
		{"/state/m.space.child/" + url.PathEscape("!"+nul+":hearth.test"), `{"via":["` + nul + `"]}`},
		{"/state/org.example." + url.PathEscape("a\x00") + "/", `{}`},
		{"/send/m.room.message/nul1", `{"msgtype":"m.text","body":"` + nul + `","m.relates_to":{"rel_type":"` + nul + `","event_id":"$` + nul + `"}}`},
		{"/send/m.room.message/nul2", `{"msgtype":"` + nul + `","body":"x","m.relates_to":{"m.in_reply_to":{"event_id":"` + tg.event + `"}},"format":"org.matrix.custom.html","formatted_body":"` + nul + `"}`},
		{"/send/m.reaction/nul3", `{"m.relates_to":{"rel_type":"m.annotation","event_id":"` + tg.event + `","key":"` + nul + `"}}`},
		{"/send/m.room.message/nul4", `{"msgtype":"m.text","body":"x","m.relates_to":{"rel_type":"m.thread","event_id":"` + tg.event + `"}, "m.mentions":{"user_ids":["` + nul + `"]}}`},
		{"/redact/" + url.PathEscape(tg.event) + "/nul5", `{"reason":"` + nul + `"}`},
	} {
		send("event "+ev.path, http.MethodPut, room+ev.path, ev.body)
		send("event "+ev.path+" surrogate", http.MethodPut, room+ev.path, strings.ReplaceAll(ev.body, "\\u0000", "\\ud800"))
		tg.repair(t, b)
	}
	for _, q := range []string{"/messages?dir=b&limit=50", "/state", "/members", "/context/" + url.PathEscape(tg.event)} {
		send("read "+q, http.MethodGet, room+q, "")
	}
	send("read directory", http.MethodGet, "/_matrix/client/v3/publicRooms", "")
	send("read search", http.MethodPost, "/_matrix/client/v3/search", `{"search_categories":{"room_events":{"search_term":"a"}}}`)
	send("read sync", http.MethodGet, "/_matrix/client/v3/sync", "")
	send("profile custom field", http.MethodPut, "/_matrix/client/v3/profile/"+url.PathEscape(string(tg.alice.id))+"/org.example.f", `{"org.example.f":"`+nul+`"}`)
	return answers
}

func sweepSetUp(t *testing.T, b *servertest.Bundle) *sweepTarget {
	t.Helper()
	ctx := t.Context()
	alice, bob := newRoomUser(t, b, "alice"), newRoomUser(t, b, "bob")
	if err := b.Store.SetAdmin(ctx, string(alice.id), true); err != nil {
		t.Fatal(err)
	}
	room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "sweep", RoomAliasName: "sweep"})
	if err != nil {
		t.Fatal(err)
	}
	victim, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.cli.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	sent, err := alice.cli.SendText(ctx, room.RoomID, "hello")
	if err != nil {
		t.Fatal(err)
	}
	up, err := alice.cli.UploadBytes(ctx, []byte("hello"), "text/plain")
	if err != nil {
		t.Fatal(err)
	}
	who, err := alice.cli.Whoami(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &sweepTarget{alice: alice, bob: bob, room: string(room.RoomID), victim: string(victim.RoomID),
		event: string(sent.EventID), mediaID: up.ContentURI.FileID, device: string(who.DeviceID)}
}

// value is a path parameter's ordinary value. Admin routes act on bob
// and on a room of their own, so that what they do (deactivate, purge)
// leaves alice and her room to the routes after them.
func (tg *sweepTarget) value(param string, admin bool, n int) string {
	switch param {
	case "roomId", "roomIdOrAlias", "room_id", "roomID":
		if admin {
			return url.PathEscape(tg.victim)
		}
		return url.PathEscape(tg.room)
	case "userId", "user_id", "userID":
		if admin {
			return url.PathEscape(string(tg.bob.id))
		}
		return url.PathEscape(string(tg.alice.id))
	case "eventId", "event_id":
		return url.PathEscape(tg.event)
	case "serverName", "server_name", "origin":
		return "hearth.test"
	case "mediaId", "media_id":
		return tg.mediaID
	case "deviceId", "device_id":
		return url.PathEscape(tg.device)
	case "txnId", "txn_id":
		return fmt.Sprintf("sweep%d", n)
	case "eventType", "type":
		return "m.room.message"
	case "roomAlias", "alias":
		return url.PathEscape("#sweep:hearth.test")
	}
	return "x"
}

// settle waits, after a request to path, for a room deletion it may have
// started in the background (the admin API's v2 deletion), so that the
// next request finds the same on both engines.
func (tg *sweepTarget) settle(t *testing.T, b *servertest.Bundle, path string) {
	if !strings.Contains(path, "/rooms/") {
		return
	}
	for _, room := range []string{tg.victim, tg.room} {
		for i := 0; i < 200; i++ {
			if dels, err := b.Store.RoomDeletes(t.Context(), room, true); err != nil || len(dels) == 0 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// repair undoes what a request may have done to alice: signed her out
// (she signs in again) or taken her out of her room (she joins again).
func (tg *sweepTarget) repair(t *testing.T, b *servertest.Bundle) {
	t.Helper()
	ctx := t.Context()
	if _, err := tg.alice.cli.Whoami(ctx); err != nil {
		login := acctLogin(t, b, "alice", acctPW, "")
		tg.alice.tok = login.AccessToken
		tg.alice.cli = acctClient(t, b, login.AccessToken)
		tg.device = string(login.DeviceID)
	}
	if _, err := tg.alice.cli.JoinRoomByID(ctx, id.RoomID(tg.room)); err != nil {
		t.Fatalf("alice cannot join her room again: %v", err)
	}
}

// The OAuth 2.0 API (package oauth, on when the config enables it) gets
// the same, and forms with every field it reads set to NUL, text that is
// not UTF-8 and long values.
func TestHostileOAuthSweep(t *testing.T) {
	if testing.Short() || raceDetector {
		t.Skip("the sweep sends hundreds of requests; make test runs it without the race detector")
	}
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		errs := &servertest.ErrorLog{}
		b := servertest.StartWith(t, e, func(d *server.Deps) { d.Log = slog.New(errs); d.OAuth = oauth.Hook(nil) },
			func(c *config.Config) { c.OAuth.Enabled = true })
		var extra []string
		for _, p := range []string{"oauth2/auth", "oauth2/token", "oauth2/revoke", "oauth2/keys", "oauth2/introspect", "oauth2/device",
			"userinfo", "end_session", ".well-known/openid-configuration"} {
			extra = append(extra, "GET "+server.OAuthPath+"/"+p, "POST "+server.OAuthPath+"/"+p)
		}
		sweep(t, b, sweepScope{want: func(route string) bool {
			return strings.HasPrefix(route, server.OAuthPath) && !strings.HasSuffix(route, "*")
		}, extra: extra})
		time.Sleep(200 * time.Millisecond)
		for _, l := range errs.Lines() {
			t.Errorf("logged: %s", l)
		}
	})
}

// The federation API gets the same from a real server with real keys
// (so that its requests pass the X-Matrix check and reach the
// handlers), in a room it is in, with bodies it can sign; and
// transactions whose EDUs carry NUL characters and the wrong types.
func TestHostileFederationSweep(t *testing.T) {
	if testing.Short() || raceDetector {
		t.Skip("the sweep sends thousands of requests; make test runs it without the race detector")
	}
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		errs := &servertest.ErrorLog{}
		a := fed.StartWith(t, e, func(d *server.Deps) { d.Log = slog.New(errs) })
		evil := fed.Start(t, e)
		ctx := t.Context()
		alice := newRoomUser(t, a, "alice")
		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "sweep"})
		if err != nil {
			t.Fatal(err)
		}
		sent, err := alice.cli.SendText(ctx, room.RoomID, "hello")
		if err != nil {
			t.Fatal(err)
		}
		mallory := newRoomUser(t, evil, "mallory")
		if _, err := mallory.cli.JoinRoom(ctx, string(room.RoomID), &mautrix.ReqJoinRoom{Via: []string{a.Cfg.ServerName}}); err != nil {
			t.Fatal(err)
		}
		up, err := alice.cli.UploadBytes(ctx, []byte("hello"), "text/plain")
		if err != nil {
			t.Fatal(err)
		}
		values := map[string]string{
			"roomId": string(room.RoomID), "roomID": string(room.RoomID), "eventId": string(sent.EventID), "eventID": string(sent.EventID),
			"userId": string(mallory.id), "userID": string(mallory.id), "serverName": a.Cfg.ServerName, "mediaId": up.ContentURI.FileID,
			"keyId": "ed25519:x", "roomAlias": "#sweep:" + a.Cfg.ServerName, "deviceId": "X", "medium": "email",
		}
		var routes []string
		err = chi.Walk(a.HTTP.Config.Handler.(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
			if strings.HasPrefix(route, "/_matrix/federation/") || strings.HasPrefix(route, "/_matrix/key/") {
				routes = append(routes, method+" "+strings.ReplaceAll(route, "/*/", "/"))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(routes)
		routes = slices.Compact(routes)
		cli := fed.Client(t, evil)
		n, byStatus := 0, map[int]int{}
		send := func(name, method, path string, query url.Values, body []byte) {
			var b any
			if body != nil {
				b = json.RawMessage(body)
			}
			err := cli.Do(ctx, a.Cfg.ServerName, method, path, query, b, nil)
			var re *federation.RemoteError
			switch {
			case err == nil:
				byStatus[200]++
			case errors.As(err, &re):
				byStatus[re.Status]++
				if re.Status >= 500 && re.Status != http.StatusNotImplemented {
					t.Errorf("%s: %d %s %s", name, re.Status, re.Code, re.Msg)
				} else if re.Code == "" {
					t.Errorf("%s: %d with no errcode: %s", name, re.Status, re.Msg)
				}
			case strings.Contains(err.Error(), "sign request"), strings.Contains(err.Error(), "encode request"):
				return // a body no server could sign: refused before any handler
			default:
				t.Errorf("%s: %v", name, err)
				return
			}
			n++
		}
		for _, r := range routes {
			method, pattern, _ := strings.Cut(r, " ")
			path := routeParam.ReplaceAllStringFunc(pattern, func(m string) string {
				p := routeParam.FindStringSubmatch(m)[1]
				if v, ok := values[p]; ok {
					return url.PathEscape(v)
				}
				if strings.Contains(strings.ToLower(p), "txn") {
					return fmt.Sprintf("sweep%d", n)
				}
				return "x"
			})
			path = strings.TrimSuffix(strings.ReplaceAll(path, "/*", "/x"), "*")
			if method == http.MethodPut || method == http.MethodPost {
				for _, k := range slices.Sorted(maps.Keys(sweepBodies)) {
					if json.Valid([]byte(sweepBodies[k])) {
						send(r+" body "+k, method, path, nil, []byte(sweepBodies[k]))
					}
				}
			}
			q, _ := url.ParseQuery(sweepQuery)
			send(r+" query", method, path, q, nil)
			q, _ = url.ParseQuery(sweepQueryAll("a%00b"))
			send(r+" query nul", method, path, q, nil)
			if routeParam.MatchString(pattern) {
				for _, k := range slices.Sorted(maps.Keys(sweepPaths)) {
					p, _ := url.PathUnescape(sweepPaths[k])
					hostile := routeParam.ReplaceAllStringFunc(pattern, func(string) string { return url.PathEscape(p) })
					send(r+" path "+k, method, hostile, nil, nil)
				}
			}
		}

		// EDUs carry what the sender says about its users, rooms and
		// devices: each kind with NUL characters and the wrong types.
		nul := "a\x00b"
		me, rid := string(mallory.id), string(room.RoomID)
		edus := []federation.EDU{}
		add := func(typ string, content any) {
			raw, err := json.Marshal(content)
			if err != nil {
				t.Fatal(err)
			}
			edus = append(edus, federation.EDU{Type: typ, Content: raw})
		}
		for _, c := range []any{
			map[string]any{"room_id": rid, "user_id": me, "typing": true},
			map[string]any{"room_id": nul, "user_id": me, "typing": true},
			map[string]any{"room_id": rid, "user_id": "@" + nul + ":" + evil.Cfg.ServerName, "typing": "yes"},
		} {
			add("m.typing", c)
		}
		for _, c := range []any{
			map[string]any{rid: map[string]any{"m.read": map[string]any{me: map[string]any{"event_ids": []string{nul}, "data": map[string]any{"ts": 1, "thread_id": nul}}}}},
			map[string]any{nul: map[string]any{"m.read": map[string]any{nul: map[string]any{"event_ids": []string{"$x"}, "data": map[string]any{"ts": "x"}}}}},
			map[string]any{rid: map[string]any{nul: map[string]any{me: 5}}},
			map[string]any{rid: "x"},
		} {
			add("m.receipt", c)
		}
		for _, c := range []any{
			map[string]any{"push": []any{map[string]any{"user_id": me, "presence": nul, "status_msg": nul, "last_active_ago": -1}}},
			map[string]any{"push": []any{map[string]any{"user_id": "@" + nul + ":" + evil.Cfg.ServerName, "presence": "online", "currently_active": "x"}}},
			map[string]any{"push": "x"},
		} {
			add("m.presence", c)
		}
		for _, c := range []any{
			map[string]any{"sender": me, "type": nul, "message_id": nul, "messages": map[string]any{string(alice.id): map[string]any{"*": map[string]any{"k": nul}}}},
			map[string]any{"sender": me, "type": "m.room_key_request", "message_id": "m1", "messages": map[string]any{string(alice.id): map[string]any{nul: map[string]any{"k": 1}}}},
			map[string]any{"sender": me, "type": "t", "message_id": "m2", "messages": map[string]any{"@" + nul + ":" + a.Cfg.ServerName: map[string]any{"D": map[string]any{}}}},
			map[string]any{"sender": me, "type": "t", "message_id": "m3", "messages": "x"},
		} {
			add("m.direct_to_device", c)
		}
		for _, c := range []any{
			map[string]any{"user_id": me, "device_id": nul, "stream_id": 1, "prev_id": []int{}, "device_display_name": nul, "keys": map[string]any{"user_id": me, "device_id": nul}},
			map[string]any{"user_id": me, "device_id": "D", "stream_id": "x", "deleted": "yes"},
			map[string]any{"user_id": "@" + nul + ":" + evil.Cfg.ServerName, "device_id": "D", "stream_id": 2},
		} {
			add("m.device_list_update", c)
		}
		for _, c := range []any{
			map[string]any{"user_id": me, "master_key": map[string]any{"user_id": me, "usage": []string{nul}, "keys": map[string]any{"ed25519:" + nul: nul}}},
			map[string]any{"user_id": me, "self_signing_key": "x"},
		} {
			add("m.signing_key_update", c)
		}
		add("org.example."+nul, map[string]any{nul: nul})
		for i, edu := range edus {
			txn := map[string]any{"origin": evil.Cfg.ServerName, "origin_server_ts": 1, "pdus": []any{}, "edus": []federation.EDU{edu}}
			body, err := json.Marshal(txn)
			if err != nil {
				t.Fatal(err)
			}
			send(fmt.Sprintf("EDU %d %s", i, edu.Type), http.MethodPut, fmt.Sprintf("/_matrix/federation/v1/send/edu%d", i), nil, body)
		}
		time.Sleep(time.Second)
		for _, l := range errs.Lines() {
			t.Errorf("logged: %s", l)
		}
		t.Logf("%d federation routes, %d requests; answers by status: %v", len(routes), n, byStatus)
	})
}
