package server_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"hearth/server"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// Another server's answers are as hostile as its requests: a remote
// server here answers profile, directory, device, key and media queries
// with NUL characters, text that is not UTF-8 and the wrong types. The
// server asking must answer its own client with no 500, log no error
// (nor a PostgreSQL one), and answer alike on both engines.
func TestHostileRemoteAnswers(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		fed := servertest.NewFederation(t)
		errs := &servertest.ErrorLog{}
		evil := fed.Start(t, e)
		b := fed.StartWith(t, e, func(d *server.Deps) { d.Log = slog.New(errs) })
		ctx := t.Context()
		alice := newRoomUser(t, b, "alice")
		mallory := newRoomUser(t, evil, "mallory")
		room, err := alice.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mallory.cli.JoinRoom(ctx, string(room.RoomID), &mautrix.ReqJoinRoom{Via: []string{b.Cfg.ServerName}}); err != nil {
			t.Fatal(err)
		}
		up, err := mallory.cli.UploadBytes(ctx, []byte("hello"), "text/plain")
		if err != nil {
			t.Fatal(err)
		}
		m := string(mallory.id)
		answers := map[string]string{
			"/_matrix/federation/v1/query/profile":   `{"displayname":"a\u0000b","avatar_url":"mxc://x/\u0000","m.tz":"\u0000"}`,
			"/_matrix/federation/v1/query/directory": `{"room_id":"!a\u0000b:x","servers":["\u0000","` + evil.Cfg.ServerName + `"]}`,
			"/_matrix/federation/v1/publicRooms":     `{"chunk":[{"room_id":"!a\u0000:x","name":"\u0000","topic":"\u0000","num_joined_members":-1,"world_readable":true,"guest_can_join":false,"canonical_alias":"#\u0000:x"}],"total_room_count_estimate":1}`,
			"/_matrix/federation/v1/user/devices/":   `{"user_id":"` + m + `","stream_id":7,"devices":[{"device_id":"a\u0000b","device_display_name":"\u0000","keys":{"user_id":"` + m + `","device_id":"a\u0000b","algorithms":["\u0000"],"keys":{"ed25519:a\u0000b":"\u0000"},"signatures":{}}}],"master_key":{"user_id":"\u0000","usage":["master"],"keys":{"ed25519:\u0000":"\u0000"}}}`,
			"/_matrix/federation/v1/user/keys/query": `{"device_keys":{"` + m + `":{"a\u0000b":{"user_id":"` + m + `","device_id":"a\u0000b","algorithms":[],"keys":{"ed25519:a\u0000b":"x"},"unsigned":{"device_display_name":"\u0000"}}}},"master_keys":{"` + m + `":{"user_id":"` + m + `","usage":["master"],"keys":{"ed25519:\u0000":"\u0000"}}}}`,
			"/_matrix/federation/v1/user/keys/claim": `{"one_time_keys":{"` + m + `":{"a\u0000b":{"signed_curve25519:\u0000":{"key":"\u0000"}}}}}`,
			"/_matrix/federation/v1/hierarchy/":      `{"room":{"room_id":"` + string(room.RoomID) + `","name":"\u0000","children_state":[{"type":"m.space.child","state_key":"!\u0000:x","content":{"via":["\u0000"]},"sender":"` + m + `","origin_server_ts":1}]},"children":[{"room_id":"!\u0000:x","name":"\u0000","num_joined_members":1,"world_readable":true,"guest_can_join":false}],"inaccessible_children":["\u0000"]}`,
		}
		evil.RewriteFederation(func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasPrefix(r.URL.Query().Get("room_alias"), "#good:") {
					// A room ID, listed with names that are no server names.
					w.Header().Set("Content-Type", "application/json")
					fmt.Fprintf(w, `{"room_id":"!good:%s","servers":["\u0000","not a server!","%s"]}`, evil.Cfg.ServerName, evil.Cfg.ServerName)
					return
				}
				for prefix, body := range answers {
					if strings.HasPrefix(r.URL.Path, prefix) {
						w.Header().Set("Content-Type", "application/json")
						fmt.Fprint(w, body)
						return
					}
				}
				if strings.HasPrefix(r.URL.Path, "/_matrix/federation/v1/media/download/") {
					w.Header().Set("Content-Type", "multipart/mixed; boundary=b0undary")
					_, _ = io.WriteString(w, "--b0undary\r\nContent-Type: application/json\r\n\r\n{}\r\n--b0undary\r\n"+
						"Content-Type: text/\xff\xfe\r\nContent-Disposition: attachment; filename*=utf-8''a%00%FFb\r\n\r\nhello\r\n--b0undary--\r\n")
					return
				}
				h.ServeHTTP(w, r)
			})
		})
		// want is the status each answer must have: the remote's strings
		// are passed on as they came (a profile, the directory's rooms,
		// device keys); a room ID with a NUL character is no room ID.
		q := func(want int, method, path string, body any) {
			t.Helper()
			if res := acctDo(t, b, method, path, alice.tok, body); res.status != want {
				t.Errorf("%s %s: %d %v, want %d", method, path, res.status, res.body, want)
			}
		}
		alias := esc("#x:" + evil.Cfg.ServerName)
		q(200, "GET", "/_matrix/client/v3/profile/"+esc(m), nil)
		q(200, "GET", "/_matrix/client/v3/profile/"+esc(m)+"/displayname", nil)
		q(502, "GET", "/_matrix/client/v3/directory/room/"+alias, nil)
		q(502, "POST", "/_matrix/client/v3/join/"+alias, map[string]any{})
		good := acctDo(t, b, "GET", "/_matrix/client/v3/directory/room/"+esc("#good:"+evil.Cfg.ServerName), alice.tok, nil)
		good.want(t, http.StatusOK, "")
		if servers, _ := good.body["servers"].([]any); len(servers) != 1 || servers[0] != evil.Cfg.ServerName {
			t.Errorf("the servers of a room found through another server's directory: %v, want only %s", good.body["servers"], evil.Cfg.ServerName)
		}
		q(200, "GET", "/_matrix/client/v3/publicRooms?server="+url.QueryEscape(evil.Cfg.ServerName), nil)
		// Twice: from the remote server, then from the cache it filled.
		q(200, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{m: []string{}}})
		q(200, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{m: []string{}}})
		q(200, "POST", "/_matrix/client/v3/keys/claim", map[string]any{"one_time_keys": map[string]any{m: map[string]any{"a": "signed_curve25519"}}})
		q(200, "GET", "/_matrix/client/v1/rooms/"+esc(string(room.RoomID))+"/hierarchy", nil)
		if res := mediaDo(t, b, "GET", "/_matrix/client/v1/media/download/"+up.ContentURI.Homeserver+"/"+up.ContentURI.FileID, alice.tok, "", nil); res.status != http.StatusOK || string(res.body) != "hello" {
			t.Errorf("remote media with a type and name that are not UTF-8: %d %q", res.status, res.body)
		}
		q(200, "GET", "/_matrix/client/v3/sync", nil)
		time.Sleep(time.Second)
		for _, l := range errs.Lines() {
			// A 502 (the remote's answer was no use) is logged as such:
			// what counts here is no fault of this server's own.
			if !strings.HasPrefix(l, "request failed") {
				t.Errorf("logged: %s", l)
			}
		}
	})
}
