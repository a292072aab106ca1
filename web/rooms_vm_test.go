package web

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"hearth/server"
	"hearth/server/storage"
	"hearth/templates"
)

func TestDeleteStatusVM(t *testing.T) {
	del := &storage.RoomDelete{DeleteID: "abc", RoomID: "!r:hearth.test", Status: storage.DeletePurging,
		Params: []byte(`{"block":true}`), Result: []byte(`{"kicked_users":["@a:hearth.test"],"failed_to_kick_users":[],"local_aliases":["#x:hearth.test"],"new_room_id":null}`)}
	vm := newDeleteStatusVM(chrome, del)
	if vm.Done || vm.Chrome.Refresh != 2 || len(vm.Steps) != 2 || vm.Steps[0].State != "done" || vm.Steps[1].State != "active" {
		t.Errorf("purging: %+v", vm)
	}
	if len(vm.Kicked) != 1 || vm.Aliases[0] != "#x:hearth.test" || vm.RoomURL != "/_hearth/admin/rooms/%21r:hearth.test" {
		t.Errorf("result: %+v", vm)
	}
	var b bytes.Buffer
	if err := templates.DeleteStatus(vm).Render(t.Context(), &b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `<meta http-equiv="refresh" content="2">`) || !strings.Contains(b.String(), "@a:hearth.test") {
		t.Errorf("page lacks the refresh or the removed member:\n%s", b.String())
	}

	del.Status = storage.DeleteComplete
	if vm := newDeleteStatusVM(chrome, del); !vm.Done || vm.Chrome.Refresh != 0 || vm.Steps[1].State != "done" {
		t.Errorf("complete: %+v", vm)
	}
	del.Status, del.Error = storage.DeleteFailed, "Users are still joined to this room"
	if vm := newDeleteStatusVM(chrome, del); !vm.Done || vm.Chrome.Refresh != 0 || vm.Steps[0].State != "failed" || vm.Error == "" {
		t.Errorf("failed: %+v", vm)
	}
	del.Status, del.Params = storage.DeleteShuttingDown, []byte(`{"purge":false}`)
	if vm := newDeleteStatusVM(chrome, del); len(vm.Steps) != 1 || vm.Steps[0].State != "active" {
		t.Errorf("without purge: %+v", vm.Steps)
	}
}

func TestRoomsVM(t *testing.T) {
	rows := make([]*server.AdminRoom, 50)
	for i := range rows {
		rows[i] = &server.AdminRoom{RoomID: "!r:hearth.test", JoinedMembers: 1234, Encryption: "m.megolm.v1.aes-sha2"}
	}
	q := parseRoomsQuery(map[string][]string{"q": {" tea "}, "sort": {"joined_members"}, "page": {"2"}})
	vm := newRoomsVM(chrome, q, rows, 120)
	if vm.Showing != "51–100 of 120 rooms" || vm.Rows[0].Members != "1,234" || !vm.Rows[0].Encrypted {
		t.Errorf("vm: %q %+v", vm.Showing, vm.Rows[0])
	}
	if vm.PrevURL != "/_hearth/admin/rooms?q=tea&sort=joined_members" || vm.NextURL != "/_hearth/admin/rooms?page=3&q=tea&sort=joined_members" {
		t.Errorf("pager: %q %q", vm.PrevURL, vm.NextURL)
	}
	for _, s := range vm.Sort {
		if s.Label == "Members" && (!s.Active || !strings.Contains(s.URL, "dir=desc")) {
			t.Errorf("active sort link: %+v", s)
		}
	}
	if q := parseRoomsQuery(map[string][]string{"sort": {"password"}}); q.Sort != "name" {
		t.Errorf("unknown sort kept: %q", q.Sort)
	}
	if vm := newRoomsVM(chrome, parseRoomsQuery(nil), nil, 0); vm.Showing != "No rooms" || vm.NextURL != "" {
		t.Errorf("empty: %+v", vm)
	}
}

func TestReportsVM(t *testing.T) {
	reason := "spam"
	long := strings.Repeat("x", 300)
	reps := []*server.EventReportView{
		{EventReport: storage.EventReport{ID: 7, RoomID: "!r:hearth.test", EventID: "$e", UserID: "@b:hearth.test", Reason: &reason},
			Sender: "@a:hearth.test", Event: &storage.Event{Type: "m.room.message", JSON: []byte(`{"content":{"body":"` + long + `"}}`)}},
		{EventReport: storage.EventReport{ID: 8, RoomID: "!r:hearth.test", EventID: "$gone", UserID: "@b:hearth.test"}},
	}
	vm := newReportsVM(chrome, reps, 50, 52, time.Now())
	if vm.Rows[0].ID != "7" || vm.Rows[0].Reason != "spam" || len([]rune(vm.Rows[0].Body)) != 198 || vm.Rows[1].Body != "(the event is no longer stored)" {
		t.Errorf("rows: %+v", vm.Rows)
	}
	if vm.Showing != "51–52 of 52 reports, newest first" || vm.PrevURL != "/_hearth/admin/reports?from=0" || vm.NextURL != "" {
		t.Errorf("paging: %q %q %q", vm.Showing, vm.PrevURL, vm.NextURL)
	}
}
