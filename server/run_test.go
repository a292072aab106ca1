package server_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/synapseadmin"

	"hearth/server"
	"hearth/server/servertest"
	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// TestRunOwnsRoomDeletes checks that background work happens only while
// Server.Run runs: a deletion asked for before Run is recorded and carried
// out once Run starts, and one asked for after Run has returned is left for
// the next process's Run.
func TestRunOwnsRoomDeletes(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, e storagetest.Engine) {
		ctx := context.Background()
		cfg := servertest.Config(t, t.TempDir())
		key, err := cfg.LoadSigningKey()
		if err != nil {
			t.Fatal(err)
		}
		// start is one process: a store, a server, an HTTP listener.
		start := func() (*storage.Store, *server.Server, *httptest.Server) {
			st := storagetest.Open(t, e)
			srv, h := server.New(server.Deps{Cfg: cfg, Store: st, Key: key, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
			hs := httptest.NewServer(h)
			t.Cleanup(hs.Close) // before the store closes: cleanups run last first
			return st, srv, hs
		}
		st, srv, hs := start()
		url := hs.URL
		rootTok := seedUser(t, st, "root", "rootpw", true)
		aliceTok := seedUser(t, st, "alice", "alicepw", false)
		alice, err := mautrix.NewClient(url, "@alice:hearth.test", aliceTok)
		if err != nil {
			t.Fatal(err)
		}
		newRoom := func() id.RoomID {
			room := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			mustSend(t, alice, room, "hello")
			return room
		}
		deleteRoom := func(adm *synapseadmin.Client, room id.RoomID) string {
			t.Helper()
			resp, err := adm.DeleteRoom(ctx, room, synapseadmin.ReqDeleteRoom{})
			if err != nil || resp.DeleteID == "" {
				t.Fatalf("v2 delete: %+v %v", resp, err)
			}
			return resp.DeleteID
		}
		// notStarted checks, after giving a stray goroutine time to act,
		// that the deletion has not begun: alice is still in the room.
		notStarted := func(adm *synapseadmin.Client, deleteID string, room id.RoomID) {
			t.Helper()
			time.Sleep(300 * time.Millisecond)
			if s, err := adm.DeleteRoomStatus(ctx, deleteID); err != nil || s.Status != "shutting_down" {
				t.Errorf("deletion %s before Run: %+v %v", deleteID, s, err)
			}
			if m, err := st.Membership(ctx, string(room), "@alice:hearth.test"); err != nil || m != "join" {
				t.Errorf("alice's membership before Run: %q %v", m, err)
			}
		}

		adm := adminClient(t, url, rootTok)
		early := newRoom()
		earlyID := deleteRoom(adm, early)
		notStarted(adm, earlyID, early)

		runCtx, stop := context.WithCancel(ctx)
		ran := make(chan error, 1)
		go func() { ran <- srv.Run(runCtx) }()
		if s := waitDelete(t, adm, earlyID); s.Status != "complete" {
			t.Errorf("deletion asked for before Run: %+v", s)
		}
		if _, err := st.RoomByID(ctx, string(early)); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("room deleted before Run still there: %v", err)
		}
		if err := srv.Run(ctx); err == nil {
			t.Error("a second Run did not fail")
		}
		stop()
		select {
		case err := <-ran:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return after its context ended")
		}

		late := newRoom()
		lateID := deleteRoom(adm, late)
		notStarted(adm, lateID, late)
		// The next process finds it in the database.
		hs.Close()
		st.Close()
		st, next, nextHS := start()
		nextURL := nextHS.URL
		runCtx, stop = context.WithCancel(ctx)
		defer stop()
		go func() { ran <- next.Run(runCtx) }()
		if s := waitDelete(t, adminClient(t, nextURL, rootTok), lateID); s.Status != "complete" {
			t.Errorf("deletion asked for after Run: %+v", s)
		}
		stop()
		if err := <-ran; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}
