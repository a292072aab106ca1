package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"

	"hearth/server/servertest"
	"hearth/server/storage/storagetest"
)

// What another server may ask about local users' keys, and the to-device
// EDUs it may send, checked with signed requests from origin.test (whose
// key the server under test knows) against one server.

// fedCall sends a signed request from origin.test to b.
func fedCall(t *testing.T, b *servertest.Bundle, method, target string, body any) (int, map[string]any) {
	t.Helper()
	var raw []byte
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			t.Fatal(err)
		}
	}
	return fedRequest{key: originKey(t), origin: "origin.test", destination: "hearth.test", signMethod: method, signTarget: target,
		signBody: raw, method: method, target: target, body: raw}.send(t, b.URL)
}

func TestFederationServesKeys(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		knowKey(t, b.Store, originKey(t))
		alice := newE2EEUser(t, b, "alice")
		devicesPath := "/_matrix/federation/v1/user/devices/" + url.PathEscape(string(alice.id))

		// Before any keys: no devices, position 0.
		status, body := fedCall(t, b, http.MethodGet, devicesPath, nil)
		if status != http.StatusOK || body["user_id"] != string(alice.id) || len(body["devices"].([]any)) != 0 {
			t.Fatalf("devices before keys: %d %v", status, body)
		}
		if err := alice.cli.SetDeviceInfo(t.Context(), alice.device, &mautrix.ReqDeviceInfo{DisplayName: "Alice's laptop"}); err != nil {
			t.Fatal(err)
		}
		alice.upload(t, b, map[string]any{"device_keys": alice.deviceKeys(t),
			"fallback_keys": map[string]any{"signed_curve25519:FB": alice.otk(t, true)}}).want(t, http.StatusOK, "")
		otks := alice.uploadOTKs(t, b, 2)
		cs := newCSKeys(t, alice.id)
		acctDo(t, b, http.MethodPost, csPath, alice.tok, cs.body()).want(t, http.StatusOK, "")

		status, body = fedCall(t, b, http.MethodGet, devicesPath, nil)
		devs, _ := body["devices"].([]any)
		if status != http.StatusOK || len(devs) != 1 {
			t.Fatalf("devices: %d %v", status, body)
		}
		first, _ := body["stream_id"].(float64)
		dev := devs[0].(map[string]any)
		keys, _ := dev["keys"].(map[string]any)
		if dev["device_id"] != string(alice.device) || !verifySig(t, keys, string(alice.id), "ed25519:"+string(alice.device), alice.pub) || first == 0 {
			t.Fatalf("device entry %v, stream_id %v", dev, body["stream_id"])
		}
		// Device names stay on this server, as Synapse's default has it.
		if dev["device_display_name"] != nil || dig(keys, "unsigned", "device_display_name") != nil {
			t.Fatalf("device name shown to another server: %v", dev)
		}
		if body["master_key"] == nil || body["self_signing_key"] == nil || body["user_signing_key"] != nil {
			t.Fatalf("cross-signing keys: %v", body)
		}
		// A new upload moves the position on.
		alice.upload(t, b, map[string]any{"device_keys": alice.deviceKeys(t)}).want(t, http.StatusOK, "")
		if _, again := fedCall(t, b, http.MethodGet, devicesPath, nil); again["stream_id"].(float64) <= first {
			t.Fatalf("stream_id %v after a change, was %v", again["stream_id"], first)
		}
		if status, body := fedCall(t, b, http.MethodGet, "/_matrix/federation/v1/user/devices/%40bob%3Aelsewhere.test", nil); status != http.StatusBadRequest || body["errcode"] != "M_INVALID_PARAM" {
			t.Fatalf("another server's user: %d %v", status, body)
		}

		status, body = fedCall(t, b, http.MethodPost, "/_matrix/federation/v1/user/keys/query",
			map[string]any{"device_keys": map[string]any{string(alice.id): []string{}, "@bob:elsewhere.test": []string{}}})
		if status != http.StatusOK || dig(body, "device_keys", string(alice.id), string(alice.device)) == nil ||
			dig(body, "master_keys", string(alice.id)) == nil || dig(body, "self_signing_keys", string(alice.id)) == nil {
			t.Fatalf("keys query: %d %v", status, body)
		}
		if body["user_signing_keys"] != nil || dig(body, "device_keys", "@bob:elsewhere.test") != nil {
			t.Fatalf("keys query answers too much: %v", body)
		}

		// Each one-time key is claimed once; then the fallback key.
		claimed := map[string]int{}
		for range 3 {
			status, body := fedCall(t, b, http.MethodPost, "/_matrix/federation/v1/user/keys/claim",
				map[string]any{"one_time_keys": map[string]any{string(alice.id): map[string]any{string(alice.device): "signed_curve25519"}}})
			got, _ := dig(body, "one_time_keys", string(alice.id), string(alice.device)).(map[string]any)
			if status != http.StatusOK || len(got) != 1 {
				t.Fatalf("claim: %d %v", status, body)
			}
			for k := range got {
				claimed[k]++
			}
		}
		if len(claimed) != 3 || claimed["signed_curve25519:FB"] != 1 {
			t.Fatalf("claimed %v", claimed)
		}
		for k := range otks {
			if claimed[k] != 1 {
				t.Fatalf("one-time key %s claimed %d times", k, claimed[k])
			}
		}
	})
}

// m.direct_to_device from another server reaches the named local devices
// once, however often its transaction is sent; one about a user of another
// server than the origin is refused.
func TestFederationReceivesToDevice(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		b := servertest.Start(t, e)
		knowKey(t, b.Store, originKey(t))
		bob := newE2EEUser(t, b, "bob")
		bob2tok := acctLogin(t, b, "bob", acctPW, "BOB2").AccessToken
		bob2 := roomUser{id: bob.id, tok: bob2tok, cli: acctClient(t, b, bob2tok)}
		since := doSync(t, bob.roomUser, "", "", 0).NextBatch
		since2 := doSync(t, bob2, "", "", 0).NextBatch

		edu := func(sender, msgID string, n int, device string) map[string]any {
			return map[string]any{"edu_type": "m.direct_to_device", "content": map[string]any{
				"sender": sender, "type": "m.test", "message_id": msgID,
				"messages": map[string]any{string(bob.id): map[string]any{device: map[string]any{"n": n}}},
			}}
		}
		send := func(txn string, edus ...map[string]any) {
			t.Helper()
			status, body := fedCall(t, b, http.MethodPut, "/_matrix/federation/v1/send/"+txn,
				map[string]any{"origin": "origin.test", "origin_server_ts": 1, "pdus": []any{}, "edus": edus})
			if status != http.StatusOK {
				t.Fatalf("send %s: %d %v", txn, status, body)
			}
		}
		send("t1", edu("@alice:origin.test", "m1", 1, string(bob.device)))
		send("t2", edu("@alice:origin.test", "m1", 1, string(bob.device)), // the same message again
			edu("@mallory:other.test", "m2", 2, string(bob.device)), // not the origin's user
			edu("@alice:origin.test", "m3", 3, "*"))

		var got []string
		for _, ev := range doSync(t, bob.roomUser, since, "", 0).ToDevice.Events {
			got = append(got, fmt.Sprintf("%s %s %v", ev.Sender, ev.Type.Type, ev.Content.Raw["n"]))
		}
		if want := []string{"@alice:origin.test m.test 1", "@alice:origin.test m.test 3"}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("bob's device got %q, want %q", got, want)
		}
		if r := doSync(t, bob2, since2, "", 0); len(r.ToDevice.Events) != 1 || r.ToDevice.Events[0].Content.Raw["n"] != float64(3) {
			t.Fatalf("bob's other device got %d messages", len(r.ToDevice.Events))
		}
	})
}
