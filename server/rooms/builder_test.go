package rooms

import (
	"testing"
)

func TestResumeRoomBuilder(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		forks       int
		wantPrev    int
		wantDepthGt int64
	}{
		{"linear", 1, 1, 0},
		{"merge two forks", 2, 2, 0},
		{"more than 20 extremities are capped", 25, 20, 0},
	}
	for _, tt := range tests {
		for _, ver := range []string{"1", "4", "11", "12"} {
			t.Run(ver+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				events := EventMap{}
				base := baseRoomInto(t, ver, JoinRulePublic, events)
				var ext []*Event
				maxDepth := int64(0)
				for i := 0; i < tt.forks; i++ {
					f := base.Fork()
					e := mustAppend(t, f, "m.room.message", nil, bob, map[string]any{"body": "fork"})
					ext = append(ext, e)
					maxDepth = max(maxDepth, e.Depth())
				}
				r := ResumeRoomBuilder(base.Version, base.RoomID, base.Key, base.State, ext)
				r.Now = clock()
				e := mustAppend(t, r, "m.room.message", nil, mod, map[string]any{"body": "merge"})
				if len(e.PrevEventIDs()) != tt.wantPrev {
					t.Errorf("prev_events %d, want %d", len(e.PrevEventIDs()), tt.wantPrev)
				}
				if e.Depth() != maxDepth+1 {
					t.Errorf("depth %d, want %d", e.Depth(), maxDepth+1)
				}
				if e.RoomID() != base.RoomID {
					t.Errorf("room %s, want %s", e.RoomID(), base.RoomID)
				}
				// The resumed builder must not share state with the original.
				mustAppend(t, r, TypeTopic, strp(""), alice, map[string]any{"topic": "t"})
				if base.State.Get(TypeTopic, "") != nil {
					t.Error("resumed builder wrote into the original state")
				}
			})
		}
	}
}

func TestRoomBuilderRejectsLeaveBuilderUnchanged(t *testing.T) {
	t.Parallel()
	b := baseRoom(t, "11", JoinRuleInvite)
	before := b.Extremities[0]
	depth := b.Depth
	if _, err := b.Append(TypeMember, strp(dave), dave, map[string]any{"membership": MembershipJoin}); err == nil {
		t.Fatal("uninvited join accepted")
	}
	if b.Extremities[0] != before || b.Depth != depth || b.State.Get(TypeMember, dave) != nil {
		t.Error("a rejected event changed the builder")
	}
	if _, err := b.Append(TypeCreate, strp(""), alice, map[string]any{}); err == nil {
		t.Error("second m.room.create accepted")
	}
}
