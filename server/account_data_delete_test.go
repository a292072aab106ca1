package server_test

import (
	"testing"

	"maunium.net/go/mautrix/event"

	"hearth/config"
	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// TestDeleteAccountData: MSC3391, with experimental_features.msc3391_enabled.
// A DELETE (or a PUT of {}) removes global and room account data: GET
// answers 404, an incremental /sync carries the type with empty content,
// and an initial /sync leaves it out. Without the key a PUT of {} stores
// {} and the DELETE endpoints are not served.
func TestDeleteAccountData(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e, func(c *config.Config) { c.ExperimentalFeatures.MSC3391Enabled = true })
		alice := newSyncUser(t, b, "alice")
		room := sharedRoom(t, alice)
		const typ = "org.example.test"
		global := "/_matrix/client/v3/user/" + esc(alice.id.String()) + "/account_data/" + typ
		inRoom := "/_matrix/client/v3/user/" + esc(alice.id.String()) + "/rooms/" + esc(string(room)) + "/account_data/" + typ
		unstable := "/_matrix/client/unstable/org.matrix.msc3391/user/" + esc(alice.id.String())
		for _, tc := range []struct {
			name, path, del string
			viaPut          bool
		}{
			{"global DELETE", global, unstable + "/account_data/" + typ, false},
			{"global PUT {}", global, "", true},
			{"room DELETE", inRoom, unstable + "/rooms/" + esc(string(room)) + "/account_data/" + typ, false},
			{"room PUT {}", inRoom, "", true},
		} {
			acctDo(t, b, "PUT", tc.path, alice.tok, map[string]any{"test_data": 1}).want(t, 200, "")
			acctDo(t, b, "GET", tc.path, alice.tok, nil).want(t, 200, "")
			since := doSync(t, alice, "", "", 0).NextBatch
			if tc.viaPut {
				acctDo(t, b, "PUT", tc.path, alice.tok, map[string]any{}).want(t, 200, "")
			} else {
				acctDo(t, b, "DELETE", tc.del, alice.tok, nil).want(t, 200, "")
			}
			acctDo(t, b, "GET", tc.path, alice.tok, nil).want(t, 404, "M_NOT_FOUND")
			inc := doSync(t, alice, since, "", 0)
			evs := inc.AccountData.Events
			if tc.path == inRoom {
				evs = inc.Rooms.Join[room].AccountData.Events
			}
			var seen *event.Event
			for _, ev := range evs {
				if ev.Type.Type == typ {
					seen = ev
				}
			}
			if seen == nil || len(seen.Content.Raw) != 0 {
				t.Fatalf("%s: incremental sync: %+v", tc.name, seen)
			}
			full := doSync(t, alice, "", "", 0)
			all := full.AccountData.Events
			if jr := full.Rooms.Join[room]; jr != nil {
				all = append(all, jr.AccountData.Events...)
			}
			if hasType(all, typ) != nil {
				t.Fatalf("%s: initial sync still has it", tc.name)
			}
		}
		acctDo(t, b, "DELETE", unstable+"/account_data/m.push_rules", alice.tok, nil).want(t, 400, "M_BAD_JSON")
		acctDo(t, b, "DELETE", "/_matrix/client/unstable/org.matrix.msc3391/user/"+esc("@bob:hearth.test")+"/account_data/"+typ, alice.tok, nil).want(t, 403, "M_FORBIDDEN")
	})
}

func TestDeleteAccountDataOff(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		alice := newSyncUser(t, b, "alice")
		path := "/_matrix/client/v3/user/" + esc(alice.id.String()) + "/account_data/org.example.test"
		acctDo(t, b, "PUT", path, alice.tok, map[string]any{}).want(t, 200, "")
		if r := acctDo(t, b, "GET", path, alice.tok, nil); r.status != 200 || len(r.body) != 0 {
			t.Fatalf("PUT {} without MSC3391: %d %v", r.status, r.body)
		}
		acctDo(t, b, "DELETE", "/_matrix/client/unstable/org.matrix.msc3391/user/"+esc(alice.id.String())+"/account_data/org.example.test",
			alice.tok, nil).want(t, 404, "M_UNRECOGNIZED")
	})
}
