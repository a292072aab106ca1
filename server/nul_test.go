package server_test

import (
	"net/http"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"

	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// A NUL character is refused where the server reads a string (an ID, a
// name, a reason) and kept where it only carries content: event content
// may hold one (it is valid JSON, and other servers' events do), and it
// comes back as it was sent, on both engines. A lone surrogate is no
// character at all: refused everywhere.
func TestNULInContent(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice := newRoomUser(t, b, "alice")
		// createRoom's name is a field the server reads; the name event's
		// content is carried.
		acctDo(t, b, "POST", "/_matrix/client/v3/createRoom", alice.tok, `{"name":"a\u0000b"}`).want(t, http.StatusBadRequest, "M_BAD_JSON")
		room, err := alice.cli.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{})
		if err != nil {
			t.Fatal(err)
		}
		rid := url.PathEscape(string(room.RoomID))
		acctDo(t, b, "PUT", "/_matrix/client/v3/rooms/"+rid+"/state/m.room.name/", alice.tok, `{"name":"a\u0000b"}`).want(t, http.StatusOK, "")
		res := acctDo(t, b, "PUT", "/_matrix/client/v3/rooms/"+rid+"/send/m.room.message/t1", alice.tok, `{"msgtype":"m.text","body":"a\u0000b"}`)
		res.want(t, http.StatusOK, "")
		ev := acctDo(t, b, "GET", "/_matrix/client/v3/rooms/"+rid+"/event/"+url.PathEscape(res.body["event_id"].(string)), alice.tok, nil)
		ev.want(t, http.StatusOK, "")
		if body := ev.body["content"].(map[string]any)["body"]; body != "a\x00b" {
			t.Errorf("the message's body came back as %q", body)
		}
		name := acctDo(t, b, "GET", "/_matrix/client/v3/rooms/"+rid+"/state/m.room.name/", alice.tok, nil)
		if name.body["name"] != "a\x00b" {
			t.Errorf("the room's name came back as %q", name.body["name"])
		}

		acctDo(t, b, "PUT", "/_matrix/client/v3/profile/"+url.PathEscape(string(alice.id))+"/displayname", alice.tok, `{"displayname":"a\u0000b"}`).
			want(t, http.StatusBadRequest, "M_BAD_JSON")
		acctDo(t, b, "POST", "/_matrix/client/v3/rooms/"+rid+"/invite", alice.tok, `{"user_id":"@bob\u0000:hearth.test"}`).
			want(t, http.StatusBadRequest, "M_BAD_JSON")
		acctDo(t, b, "GET", "/_matrix/client/v3/devices/a%00b", alice.tok, nil).want(t, http.StatusBadRequest, "M_INVALID_PARAM")
		acctDo(t, b, "PUT", "/_matrix/client/v3/rooms/"+rid+"/send/m.room.message/t2", alice.tok, `{"msgtype":"m.text","body":"\ud800"}`).
			want(t, http.StatusBadRequest, "M_NOT_JSON")
		acctDo(t, b, "POST", "/_matrix/client/v3/rooms/"+rid+"/join", alice.tok, `{"org.example":"\udc00"}`).
			want(t, http.StatusBadRequest, "M_NOT_JSON")
		// An escaped backslash before "u0000" is no NUL: the text \u0000.
		acctDo(t, b, "PUT", "/_matrix/client/v3/profile/"+url.PathEscape(string(alice.id))+"/displayname", alice.tok, `{"displayname":"a\\u0000b"}`).
			want(t, http.StatusOK, "")
	})
}
