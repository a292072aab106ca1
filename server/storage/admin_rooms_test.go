package storage_test

import (
	"context"
	"errors"
	"testing"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

func TestRoomDeletesAndBlocks(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		for i, d := range []*storage.RoomDelete{
			{DeleteID: "a", RoomID: "!r:x", Status: storage.DeleteComplete, CreatedTS: 1},
			{DeleteID: "b", RoomID: "!r:x", Status: storage.DeletePurging, CreatedTS: 2},
			{DeleteID: "c", RoomID: "!s:x", Status: storage.DeleteShuttingDown, CreatedTS: 3},
			{DeleteID: "d", RoomID: "!s:x", Status: storage.DeleteFailed, CreatedTS: 4},
		} {
			d.Params = []byte(`{}`)
			if err := st.CreateRoomDelete(ctx, d); err != nil {
				t.Fatalf("%d: %v", i, err)
			}
		}
		if err := st.CreateRoomDelete(ctx, &storage.RoomDelete{DeleteID: "a", RoomID: "!r:x", Status: "x", Params: []byte(`{}`)}); !errors.Is(err, storage.ErrConflict) {
			t.Errorf("duplicate delete ID: %v", err)
		}
		ids := func(ds []*storage.RoomDelete) (out []string) {
			for _, d := range ds {
				out = append(out, d.DeleteID)
			}
			return out
		}
		if ds, err := st.RoomDeletes(ctx, "", true); err != nil || len(ds) != 2 || ids(ds)[0] != "b" || ids(ds)[1] != "c" {
			t.Errorf("unfinished: %v %v", ids(ds), err)
		}
		if ds, err := st.RoomDeletes(ctx, "!r:x", false); err != nil || len(ds) != 2 || ids(ds)[0] != "a" {
			t.Errorf("of a room: %v %v", ids(ds), err)
		}
		if err := st.UpdateRoomDelete(ctx, "b", storage.DeleteComplete, "", []byte(`{"kicked_users":[]}`)); err != nil {
			t.Fatal(err)
		}
		if err := st.UpdateRoomDelete(ctx, "c", storage.DeleteFailed, "boom", nil); err != nil {
			t.Fatal(err)
		}
		if d, err := st.RoomDeleteByID(ctx, "b"); err != nil || d.Status != storage.DeleteComplete || string(d.Result) != `{"kicked_users":[]}` {
			t.Errorf("b: %+v %v", d, err)
		}
		if d, err := st.RoomDeleteByID(ctx, "c"); err != nil || d.Error != "boom" || string(d.Result) != "{}" {
			t.Errorf("c keeps its result: %+v %v", d, err)
		}
		if _, err := st.RoomDeleteByID(ctx, "zz"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("unknown: %v", err)
		}

		// A room blocked before this server knows it, and one it knows.
		if err := st.SetRoomBlocked(ctx, "!unknown:x", "@admin:x", true); err != nil {
			t.Fatal(err)
		}
		if b, err := st.BlockedRoom(ctx, "!unknown:x"); err != nil || b.UserID != "@admin:x" {
			t.Errorf("blocked: %+v %v", b, err)
		}
		if err := st.CreateRoom(ctx, &storage.Room{RoomID: "!known:x", RoomVersion: "10", Creator: "@c:x"}); err != nil {
			t.Fatal(err)
		}
		if err := st.SetRoomBlocked(ctx, "!known:x", "@admin:x", true); err != nil {
			t.Fatal(err)
		}
		if r, _ := st.RoomByID(ctx, "!known:x"); !r.Blocked {
			t.Error("rooms.blocked not set")
		}
		if err := st.SetRoomBlocked(ctx, "!known:x", "@admin:x", false); err != nil {
			t.Fatal(err)
		}
		if r, _ := st.RoomByID(ctx, "!known:x"); r.Blocked {
			t.Error("rooms.blocked not cleared")
		}
		if _, err := st.BlockedRoom(ctx, "!known:x"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("unblocked: %v", err)
		}
	})
}

func TestEventReportsFilter(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		reason := "spam"
		score := int64(-50)
		for i, r := range []*storage.EventReport{
			{ReceivedTS: 10, RoomID: "!a:x", EventID: "$1", UserID: "@al_ice:x", Reason: &reason, Score: &score},
			{ReceivedTS: 20, RoomID: "!b:x", EventID: "$2", UserID: "@alXice:x"},
			{ReceivedTS: 30, RoomID: "!a:x", EventID: "$3", UserID: "@bob:x"},
		} {
			if err := st.AddEventReport(ctx, r); err != nil || r.ID == 0 {
				t.Fatalf("%d: %v", i, err)
			}
		}
		got := func(f storage.EventReportFilter) (ids []string, total int) {
			t.Helper()
			rs, total, err := st.EventReports(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs {
				ids = append(ids, r.EventID)
			}
			return ids, total
		}
		if ids, total := got(storage.EventReportFilter{Limit: 10, Desc: true}); total != 3 || len(ids) != 3 || ids[0] != "$3" {
			t.Errorf("newest first: %v %d", ids, total)
		}
		// "_" is a literal, not LIKE's wildcard.
		if ids, total := got(storage.EventReportFilter{Limit: 10, UserID: "al_i"}); total != 1 || ids[0] != "$1" {
			t.Errorf("user filter: %v %d", ids, total)
		}
		if ids, total := got(storage.EventReportFilter{Limit: 1, From: 1, RoomID: "!a"}); total != 2 || len(ids) != 1 || ids[0] != "$3" {
			t.Errorf("room filter, second page: %v %d", ids, total)
		}
		r, err := st.EventReportByID(ctx, 1)
		if err != nil || *r.Reason != "spam" || *r.Score != -50 {
			t.Errorf("by id: %+v %v", r, err)
		}
		if r, _ := st.EventReportByID(ctx, 2); r == nil || r.Reason != nil || r.Score != nil {
			t.Errorf("nulls: %+v", r)
		}
		if err := st.DeleteEventReport(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteEventReport(ctx, 1); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("delete twice: %v", err)
		}
	})
}
