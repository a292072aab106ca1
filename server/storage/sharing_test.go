package storage_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"hearth/server/storage"
	"hearth/server/storage/storagetest"
)

// The reads /sync uses to keep presence and device list changes to the
// users who share a room with the syncing user, without listing all of
// those: which of some users share a room, every change in a range, and
// the users gone quiet.
func TestSharingAndChangesInRange(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		memberRoom(t, st, "!a:hs", "@u:hs", "@v:hs")
		leave := memberRoom(t, st, "!b:hs", "@v:hs", "@w:hs", "@u:hs")
		memberRoom(t, st, "!c:hs", "@x:hs", "@y:other")

		sharing := func(user string, cands ...string) []string {
			t.Helper()
			got, err := st.UsersSharingRoomWith(ctx, user, cands)
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			return got
		}
		if got := sharing("@u:hs", "@v:hs", "@w:hs", "@x:hs", "@y:other", "@nobody:hs", "@u:hs"); !slices.Equal(got, []string{"@u:hs", "@v:hs", "@w:hs"}) {
			t.Fatalf("sharing with u: %v", got)
		}
		if got := sharing("@x:hs", "@u:hs", "@y:other"); !slices.Equal(got, []string{"@y:other"}) {
			t.Fatalf("sharing with x: %v", got)
		}
		if got := sharing("@nobody:hs", "@u:hs", "@nobody:hs"); len(got) != 0 {
			t.Fatalf("sharing with a user in no room: %v", got)
		}
		if got := sharing("@u:hs"); len(got) != 0 {
			t.Fatalf("sharing among no users: %v", got)
		}
		// Once u leaves room b, w no longer shares a room with u.
		leave("@u:hs", "leave")
		if got := sharing("@u:hs", "@v:hs", "@w:hs"); !slices.Equal(got, []string{"@v:hs"}) {
			t.Fatalf("sharing after a leave: %v", got)
		}
		all, err := st.UsersSharingRooms(ctx, "@u:hs")
		if slices.Sort(all); err != nil || !slices.Equal(all, []string{"@u:hs", "@v:hs"}) {
			t.Fatalf("everyone sharing with u: %v %v", all, err)
		}

		// Device list changes in a range: every user, once, at their
		// newest change.
		before, _ := st.MaxAuxPos(ctx)
		for _, u := range []string{"@v:hs", "@x:hs", "@v:hs"} {
			if err := st.MarkDeviceListChange(ctx, u); err != nil {
				t.Fatal(err)
			}
		}
		mid, _ := st.MaxAuxPos(ctx)
		if err := st.MarkDeviceListChange(ctx, "@w:hs"); err != nil {
			t.Fatal(err)
		}
		end, _ := st.MaxAuxPos(ctx)
		users := func(after, upTo int64) []string {
			t.Helper()
			got, err := st.DeviceListChangedUsers(ctx, after, upTo)
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			return got
		}
		if got := users(before, mid); !slices.Equal(got, []string{"@v:hs", "@x:hs"}) {
			t.Fatalf("device list changes up to mid: %v", got)
		}
		if got := users(mid, end); !slices.Equal(got, []string{"@w:hs"}) {
			t.Fatalf("device list changes after mid: %v", got)
		}
		if got := users(end, end); len(got) != 0 {
			t.Fatalf("device list changes in an empty range: %v", got)
		}

		// Presence changes in a range, in stream order; and who is quiet.
		now := time.Now()
		set := func(user, state string, ago time.Duration) {
			t.Helper()
			if _, err := st.SetPresence(ctx, &storage.Presence{UserID: user, State: state, LastActiveTS: now.Add(-ago).UnixMilli()}, false); err != nil {
				t.Fatal(err)
			}
		}
		p0, _ := st.MaxAuxPos(ctx)
		set("@v:hs", "online", 10*time.Minute)
		set("@w:hs", "unavailable", time.Minute)
		set("@y:other", "online", 10*time.Minute)
		set("@z:other", "online", time.Hour)
		set("@x:hs", "offline", time.Hour)
		p1, _ := st.MaxAuxPos(ctx)
		set("@v:hs", "unavailable", 10*time.Minute)
		p2, _ := st.MaxAuxPos(ctx)
		changes := func(after, upTo int64) []string {
			t.Helper()
			ps, err := st.PresenceChanges(ctx, after, upTo)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, p := range ps {
				out = append(out, p.UserID+"="+p.State)
			}
			return out
		}
		if got := changes(p0, p1); !slices.Equal(got, []string{"@w:hs=unavailable", "@y:other=online", "@z:other=online", "@x:hs=offline"}) {
			t.Fatalf("presence changes up to p1: %v", got)
		}
		if got := changes(p0, p2); !slices.Equal(got, []string{"@w:hs=unavailable", "@y:other=online", "@z:other=online", "@x:hs=offline", "@v:hs=unavailable"}) {
			t.Fatalf("presence changes up to p2: %v", got)
		}
		if got := changes(p2, p2); len(got) != 0 {
			t.Fatalf("presence changes in an empty range: %v", got)
		}
		stale := func(ago time.Duration, server string) []string {
			t.Helper()
			ps, err := st.StalePresence(ctx, now.Add(-ago).UnixMilli(), server)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, p := range ps {
				out = append(out, p.UserID)
			}
			slices.Sort(out)
			return out
		}
		if got := stale(5*time.Minute, ""); !slices.Equal(got, []string{"@v:hs", "@y:other", "@z:other"}) {
			t.Fatalf("quiet for 5 minutes: %v", got)
		}
		if got := stale(5*time.Minute, "hs"); !slices.Equal(got, []string{"@v:hs"}) {
			t.Fatalf("quiet for 5 minutes on hs: %v", got)
		}
		if got := stale(30*time.Minute, ""); !slices.Equal(got, []string{"@z:other"}) {
			t.Fatalf("quiet for 30 minutes: %v", got)
		}
	})
}

// JoinedServers, read for every receipt and typing notice a room's
// members send, is cached per room and follows each membership change.
func TestJoinedServersFollowMembership(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		set := memberRoom(t, st, "!a:hs", "@u:hs", "@v:other")
		servers := func() []string {
			t.Helper()
			got, err := st.JoinedServers(ctx, "!a:hs")
			if err != nil {
				t.Fatal(err)
			}
			return slices.Sorted(slices.Values(got))
		}
		for range 2 { // read, then cached
			if got := servers(); !slices.Equal(got, []string{"hs", "other"}) {
				t.Fatalf("servers: %v", got)
			}
		}
		set("@v:other", "leave")
		if got := servers(); !slices.Equal(got, []string{"hs"}) {
			t.Fatalf("after the other server's member left: %v", got)
		}
		set("@w:third", "join")
		if got := servers(); !slices.Equal(got, []string{"hs", "third"}) {
			t.Fatalf("after a third server's member joined: %v", got)
		}
	})
}
