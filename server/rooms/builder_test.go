package rooms

import (
	"errors"
	"slices"
	"testing"

	"github.com/tidwall/gjson"
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

// A make_join round trip: the resident server's template for a remote
// user, completed and signed by the user's server, verifies and passes the
// auth rules on the room's state, in every room version.
func TestProtoRoundTrip(t *testing.T) {
	for _, v := range allVersions() {
		t.Run("v"+v, func(t *testing.T) {
			b := baseRoom(t, v, JoinRulePublic)
			rv := b.Version
			proto, err := b.Proto(TypeMember, strp(zed), zed, map[string]any{"membership": MembershipJoin})
			if err != nil {
				t.Fatal(err)
			}
			if gjson.GetBytes(proto, "signatures").Exists() || gjson.GetBytes(proto, "hashes").Exists() || gjson.GetBytes(proto, "event_id").Exists() {
				t.Fatalf("template carries signatures, hashes or an event ID: %s", proto)
			}
			remote := testKey(t, "other.org")
			e, err := CompleteProto(rv, proto, map[string]any{"membership": MembershipJoin, "displayname": "Zed"}, remote)
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifySignatures(e, keyring(1<<62, remote)); err != nil {
				t.Fatalf("signatures: %v", err)
			}
			if !e.VerifyContentHash() {
				t.Fatal("content hash does not verify")
			}
			if err := AuthorizeAgainstState(e, b.State, keyring(1<<62, remote)); err != nil {
				t.Fatalf("auth: %v", err)
			}
			if !slices.Equal(e.PrevEventIDs(), b.Extremities) {
				t.Errorf("prev_events %v, want %v", e.PrevEventIDs(), b.Extremities)
			}
			// A user who may not join gets no template.
			mustAppend(t, b, TypeJoinRules, strp(""), alice, map[string]any{"join_rule": JoinRuleInvite})
			if _, err := b.Proto(TypeMember, strp(zed), zed, map[string]any{"membership": MembershipJoin}); !errors.Is(err, ErrNotAuthorized) {
				t.Errorf("template for a join to an invite-only room: %v", err)
			}
		})
	}
}
