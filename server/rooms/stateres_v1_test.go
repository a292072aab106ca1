package rooms

import (
	"crypto/sha1"
	"encoding/hex"
	"testing"
)

func sha1hex(s string) string {
	h := sha1.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestStateResV1(t *testing.T) {
	t.Parallel()
	type forks struct {
		base, a, b *RoomBuilder
		events     EventMap
	}
	mk := func(t *testing.T) forks {
		events := EventMap{}
		base := baseRoomInto(t, "1", JoinRulePublic, events)
		return forks{base, base.Fork(), base.Fork(), events}
	}
	tests := []struct {
		name string
		run  func(t *testing.T, f forks) (key StateKey, want string)
	}{
		{"other state: highest depth wins over a later timestamp", func(t *testing.T, f forks) (StateKey, string) {
			at(f.a, 9000)
			at(f.b, 1000)
			mustAppend(t, f.a, TypeTopic, strp(""), alice, map[string]any{"topic": "A"})
			mustAppend(t, f.b, TypeName, strp(""), mod, map[string]any{"name": "n"})
			deeper := mustAppend(t, f.b, TypeTopic, strp(""), mod, map[string]any{"topic": "B"})
			return StateKey{Type: TypeTopic, StateKey: ""}, deeper.ID()
		}},
		{"other state: equal depth, lowest sha1(event_id) wins", func(t *testing.T, f forks) (StateKey, string) {
			x := mustAppend(t, f.a, TypeTopic, strp(""), alice, map[string]any{"topic": "A"})
			y := mustAppend(t, f.b, TypeTopic, strp(""), mod, map[string]any{"topic": "B"})
			if sha1hex(x.ID()) < sha1hex(y.ID()) {
				return StateKey{Type: TypeTopic, StateKey: ""}, x.ID()
			}
			return StateKey{Type: TypeTopic, StateKey: ""}, y.ID()
		}},
		{"other state: the candidate must pass auth", func(t *testing.T, f forks) (StateKey, string) {
			// Deeper topic by mod, but alice demoted mod on the other fork.
			mustAppend(t, f.a, TypePowerLevels, strp(""), alice, basePL(f.a.Version, map[string]any{"users": usersWith(f.a.Version, mod, 0)}))
			x := mustAppend(t, f.a, TypeTopic, strp(""), alice, map[string]any{"topic": "A"})
			mustAppend(t, f.b, TypeName, strp(""), mod, map[string]any{"name": "n"})
			mustAppend(t, f.b, TypeName, strp(""), mod, map[string]any{"name": "m"})
			mustAppend(t, f.b, TypeTopic, strp(""), mod, map[string]any{"topic": "B"})
			return StateKey{Type: TypeTopic, StateKey: ""}, x.ID()
		}},
		{"power levels: all allowed, last in (depth asc, sha1 desc) order wins", func(t *testing.T, f forks) (StateKey, string) {
			x := mustAppend(t, f.a, TypePowerLevels, strp(""), alice, basePL(f.a.Version, map[string]any{"ban": 40}))
			y := mustAppend(t, f.b, TypePowerLevels, strp(""), mod, basePL(f.b.Version, map[string]any{"kick": 40}))
			if sha1hex(x.ID()) < sha1hex(y.ID()) {
				return StateKey{Type: TypePowerLevels, StateKey: ""}, x.ID()
			}
			return StateKey{Type: TypePowerLevels, StateKey: ""}, y.ID()
		}},
		{"membership: ban beats a racing join", func(t *testing.T, f forks) (StateKey, string) {
			ban := member(t, f.a, alice, dave, MembershipBan)
			member(t, f.b, dave, dave, MembershipJoin)
			return StateKey{Type: TypeMember, StateKey: dave}, ban.ID()
		}},
		{"a key in only one state is not a conflict", func(t *testing.T, f forks) (StateKey, string) {
			x := mustAppend(t, f.a, TypeTopic, strp(""), alice, map[string]any{"topic": "A"})
			return StateKey{Type: TypeTopic, StateKey: ""}, x.ID()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := mk(t)
			key, want := tt.run(t, f)
			got, err := ResolveState(t.Context(), f.base.Version, []StateMap{stateOf(f.a), stateOf(f.b)}, f.events)
			if err != nil {
				t.Fatal(err)
			}
			if got[key] != want {
				t.Errorf("%v = %s, want %s", key, got[key], want)
			}
			sa, sb := stateOf(f.a), stateOf(f.b)
			for k, id := range stateOf(f.base) {
				if sa[k] == id && sb[k] == id && got[k] != id {
					t.Errorf("unconflicted %v lost", k)
				}
			}
		})
	}
}
