package rooms

import "testing"

// TestEffectivePowerLevelsKept checks that a power levels event keeps what
// EffectivePowerLevels made of it, and that the answer kept is only given
// for the room version and create event it was made with: v12's creators
// come from the create event, and the version decides them too.
func TestEffectivePowerLevelsKept(t *testing.T) {
	rv12 := MustVersion("12")
	key := testKey(t, "example.org")
	room := func(creator string) (create, pl *Event) {
		events, b, err := CreateRoom(CreateRoomRequest{Version: rv12, Creator: creator, Preset: "private_chat"}, key, clock())
		if err != nil {
			t.Fatal(err)
		}
		return events[0], b.State.Get(TypePowerLevels, "")
	}
	createA, pl := room(alice)
	createB, _ := room(bob)

	first := EffectivePowerLevels(rv12, pl, createA)
	if again := EffectivePowerLevels(rv12, pl, createA); again != first {
		t.Error("the second call made the levels again instead of using those kept")
	}
	if first.UserLevel(alice) != PowerInfinite || first.UserLevel(bob) == PowerInfinite {
		t.Fatalf("room A: alice %d, bob %d", first.UserLevel(alice), first.UserLevel(bob))
	}
	// Another create event: bob is the creator, whatever was kept.
	other := EffectivePowerLevels(rv12, pl, createB)
	if other.UserLevel(bob) != PowerInfinite || other.UserLevel(alice) == PowerInfinite {
		t.Errorf("with room B's create event: alice %d, bob %d", other.UserLevel(alice), other.UserLevel(bob))
	}
	// Another room version: v11 has no privileged creators.
	v11 := EffectivePowerLevels(MustVersion("11"), pl, createB)
	if v11.UserLevel(bob) == PowerInfinite {
		t.Error("a v11 reading kept v12's creators")
	}
	if back := EffectivePowerLevels(rv12, pl, createA); back.UserLevel(alice) != PowerInfinite {
		t.Errorf("back to room A: alice %d", back.UserLevel(alice))
	}
}
