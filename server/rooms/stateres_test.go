package rooms

import (
	"testing"
)

// at makes the builder stamp its next events with ts, ts+1, ...
func at(b *RoomBuilder, ts int64) *RoomBuilder {
	b.Now = func() int64 { ts++; return ts - 1 }
	return b
}

func stateOf(b *RoomBuilder) StateMap { return b.State.IDs() }

// v2Versions are the room versions using state resolution v2; v12 uses v2.1.
var stateResVersions = versionsFrom(2)

func TestStateResTopicConflict(t *testing.T) {
	t.Parallel()
	// Two concurrent topics citing the same power levels: same mainline
	// position, so the later origin_server_ts is applied last and wins.
	tests := []struct {
		name        string
		tsA, tsB    int64
		wantTopicOf string
	}{
		{"A later", 5000, 4000, "A"},
		{"B later", 4000, 5000, "B"},
	}
	for _, tt := range tests {
		for _, ver := range stateResVersions {
			t.Run(ver+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				events := EventMap{}
				base := baseRoomInto(t, ver, JoinRulePublic, events)
				a, b := at(base.Fork(), tt.tsA), at(base.Fork(), tt.tsB)
				ta := mustAppend(t, a, TypeTopic, strp(""), alice, map[string]any{"topic": "A"})
				tb := mustAppend(t, b, TypeTopic, strp(""), mod, map[string]any{"topic": "B"})
				got, err := ResolveState(t.Context(), base.Version, []StateMap{stateOf(a), stateOf(b)}, events)
				if err != nil {
					t.Fatal(err)
				}
				want := map[string]string{"A": ta.ID(), "B": tb.ID()}[tt.wantTopicOf]
				if got[StateKey{Type: TypeTopic, StateKey: ""}] != want {
					t.Errorf("topic = %s, want topic %s (%s)", got[StateKey{Type: TypeTopic, StateKey: ""}], tt.wantTopicOf, want)
				}
				// Everything else was unconflicted and must be kept.
				for k, id := range stateOf(base) {
					if got[k] != id {
						t.Errorf("unconflicted %v changed: %s, want %s", k, got[k], id)
					}
				}
			})
		}
	}
}

func TestStateResBanRacesJoin(t *testing.T) {
	t.Parallel()
	// The ban is a power event and is applied in step 1; the join is
	// then checked against a state where dave is banned, whatever the
	// timestamps say.
	for _, joinFirst := range []bool{true, false} {
		for _, ver := range stateResVersions {
			name := ver + "/join later"
			if joinFirst {
				name = ver + "/join earlier"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				events := EventMap{}
				base := baseRoomInto(t, ver, JoinRulePublic, events)
				tsBan, tsJoin := int64(5000), int64(6000)
				if joinFirst {
					tsBan, tsJoin = 6000, 5000
				}
				a, b := at(base.Fork(), tsBan), at(base.Fork(), tsJoin)
				ban := member(t, a, alice, dave, MembershipBan)
				member(t, b, dave, dave, MembershipJoin)
				got, err := ResolveState(t.Context(), base.Version, []StateMap{stateOf(a), stateOf(b)}, events)
				if err != nil {
					t.Fatal(err)
				}
				if got[StateKey{Type: TypeMember, StateKey: dave}] != ban.ID() {
					t.Errorf("dave's membership = %s, want the ban %s", got[StateKey{Type: TypeMember, StateKey: dave}], ban.ID())
				}
			})
		}
	}
}

func TestStateResConcurrentPowerLevels(t *testing.T) {
	t.Parallel()
	// Alice (100) and mod (50) change the power levels concurrently on two
	// forks. Mod's events carry the earlier timestamps, so ordering by
	// time alone would apply them first; the reverse topological power
	// ordering applies alice's first because her power is greater.
	tests := []struct {
		name      string
		aliceOver func(rv *RoomVersion) map[string]any
		modOver   func(rv *RoomVersion) map[string]any
		modTopic  bool
		wantAlice bool // else mod's power levels win
	}{
		{
			// Mod's change and topic then fail against alice's.
			name:      "alice demotes mod while mod promotes bob",
			aliceOver: func(rv *RoomVersion) map[string]any { return map[string]any{"users": usersWith(rv, mod, 0)} },
			modOver:   func(rv *RoomVersion) map[string]any { return map[string]any{"users": usersWith(rv, bob, 50)} },
			modTopic:  true,
			wantAlice: true,
		},
		{
			// Both pass in either order, so the one applied last wins:
			// mod's, as it sorts after alice's.
			name:      "independent changes",
			aliceOver: func(*RoomVersion) map[string]any { return map[string]any{"ban": 40} },
			modOver:   func(*RoomVersion) map[string]any { return map[string]any{"kick": 40} },
		},
	}
	for _, tt := range tests {
		for _, ver := range stateResVersions {
			t.Run(ver+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				events := EventMap{}
				base := baseRoomInto(t, ver, JoinRulePublic, events)
				a, b := at(base.Fork(), 9000), at(base.Fork(), 1000)
				alicePL := mustAppend(t, a, TypePowerLevels, strp(""), alice, basePL(a.Version, tt.aliceOver(a.Version)))
				modPL := mustAppend(t, b, TypePowerLevels, strp(""), mod, basePL(b.Version, tt.modOver(b.Version)))
				if tt.modTopic {
					mustAppend(t, b, TypeTopic, strp(""), mod, map[string]any{"topic": "mod's"})
				}
				got, err := ResolveState(t.Context(), base.Version, []StateMap{stateOf(a), stateOf(b)}, events)
				if err != nil {
					t.Fatal(err)
				}
				want := modPL.ID()
				if tt.wantAlice {
					want = alicePL.ID()
				}
				if got[StateKey{Type: TypePowerLevels, StateKey: ""}] != want {
					t.Errorf("power levels = %s, want %s (alice %s, mod %s)", got[StateKey{Type: TypePowerLevels, StateKey: ""}], want, alicePL.ID(), modPL.ID())
				}
				if id, ok := got[StateKey{Type: TypeTopic, StateKey: ""}]; ok && tt.modTopic {
					t.Errorf("mod's topic %s survived although mod was demoted", id)
				}
			})
		}
	}
}

func TestStateResMainlineBeatsTimestamp(t *testing.T) {
	t.Parallel()
	// Fork A: topic T1 citing the base power levels P0, late timestamp.
	// Fork B: new power levels P1, then topic T2 citing P1, early
	// timestamp. P1 is resolved; T1's mainline position (P0, 1) is greater
	// than T2's (P1, 0), so T1 is applied first and T2 wins.
	for _, ver := range stateResVersions {
		t.Run(ver, func(t *testing.T) {
			t.Parallel()
			events := EventMap{}
			base := baseRoomInto(t, ver, JoinRulePublic, events)
			a, b := at(base.Fork(), 9000), at(base.Fork(), 1000)
			mustAppend(t, a, TypeTopic, strp(""), mod, map[string]any{"topic": "T1"})
			p1 := mustAppend(t, b, TypePowerLevels, strp(""), alice, basePL(b.Version, map[string]any{"ban": 40}))
			t2 := mustAppend(t, b, TypeTopic, strp(""), mod, map[string]any{"topic": "T2"})
			got, err := ResolveState(t.Context(), base.Version, []StateMap{stateOf(a), stateOf(b)}, events)
			if err != nil {
				t.Fatal(err)
			}
			if got[StateKey{Type: TypePowerLevels, StateKey: ""}] != p1.ID() {
				t.Errorf("power levels = %s, want %s", got[StateKey{Type: TypePowerLevels, StateKey: ""}], p1.ID())
			}
			if got[StateKey{Type: TypeTopic, StateKey: ""}] != t2.ID() {
				t.Errorf("topic = %s, want T2 %s", got[StateKey{Type: TypeTopic, StateKey: ""}], t2.ID())
			}
		})
	}
}

func TestStateResV2VersusV21(t *testing.T) {
	t.Parallel()
	// base → J1 (mod: join_rules invite) → P2 (alice demotes mod to 0) →
	// fork: A stays; B: J2 (alice: join_rules public). J1 and J2 conflict;
	// P2 is unconflicted. Both orders put J2 (alice, 100) before J1 (mod).
	// v2 starts the iterative auth checks from the unconflicted state, in
	// which mod is 0, so J1 fails and J2 stays. v2.1 starts from an empty
	// state: J1 is checked against its own auth events (mod 50), passes,
	// and replaces J2.
	tests := []struct {
		ver      string
		wantJ1   bool
		stateRes StateResAlgorithm
	}{
		{"11", false, StateResV2},
		{"12", true, StateResV21},
	}
	for _, tt := range tests {
		t.Run(tt.ver, func(t *testing.T) {
			t.Parallel()
			events := EventMap{}
			base := baseRoomInto(t, tt.ver, JoinRulePublic, events)
			if base.Version.StateRes != tt.stateRes {
				t.Fatalf("room version %s uses %s", tt.ver, base.Version.StateRes)
			}
			at(base, 1000)
			j1 := mustAppend(t, base, TypeJoinRules, strp(""), mod, map[string]any{"join_rule": JoinRuleInvite})
			mustAppend(t, base, TypePowerLevels, strp(""), alice, basePL(base.Version, map[string]any{"users": usersWith(base.Version, mod, 0)}))
			a, b := base.Fork(), at(base.Fork(), 2000)
			j2 := mustAppend(t, b, TypeJoinRules, strp(""), alice, map[string]any{"join_rule": JoinRulePublic})
			got, err := ResolveState(t.Context(), base.Version, []StateMap{stateOf(a), stateOf(b)}, events)
			if err != nil {
				t.Fatal(err)
			}
			want := j2.ID()
			if tt.wantJ1 {
				want = j1.ID()
			}
			if got[StateKey{Type: TypeJoinRules, StateKey: ""}] != want {
				t.Errorf("join_rules = %s, want %s (j1 %s, j2 %s)", got[StateKey{Type: TypeJoinRules, StateKey: ""}], want, j1.ID(), j2.ID())
			}
		})
	}
}

func TestStateResTrivialCases(t *testing.T) {
	t.Parallel()
	events := EventMap{}
	base := baseRoomInto(t, "11", JoinRulePublic, events)
	s := stateOf(base)
	tests := []struct {
		name   string
		states []StateMap
		want   StateMap
	}{
		{"no states", nil, StateMap{}},
		{"one state", []StateMap{s}, s},
		{"identical states", []StateMap{s, s, s}, s},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ResolveState(t.Context(), base.Version, tt.states, events)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d entries, want %d", len(got), len(tt.want))
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%v = %s, want %s", k, got[k], v)
				}
			}
		})
	}
}

func TestFullConflictedSetSubgraph(t *testing.T) {
	t.Parallel()
	// base → PL1 (alice) → X (mod changes displayname, cites PL1) → fork:
	// A: C1 = mod kicks bob (cites X); B: PL2 (alice, cites PL1).
	// X is in both states (unconflicted) and in both auth chains, so it is
	// not in the auth difference; but it lies on the auth path C1 → X → PL1
	// between conflicted events, so v2.1 adds it as part of the conflicted
	// state subgraph.
	tests := []struct {
		ver   string
		wantX bool
	}{
		{"11", false},
		{"12", true},
	}
	for _, tt := range tests {
		t.Run(tt.ver, func(t *testing.T) {
			t.Parallel()
			events := EventMap{}
			base := baseRoomInto(t, tt.ver, JoinRulePublic, events)
			pl1 := mustAppend(t, base, TypePowerLevels, strp(""), alice, basePL(base.Version, map[string]any{"ban": 40}))
			x := member(t, base, mod, mod, MembershipJoin, "displayname", "Mod")
			a, b := base.Fork(), base.Fork()
			c1 := member(t, a, mod, bob, MembershipLeave)
			pl2 := mustAppend(t, b, TypePowerLevels, strp(""), alice, basePL(b.Version, map[string]any{"kick": 40}))
			r := &resolver{rv: base.Version, events: events, chains: map[string]map[string]bool{}}
			unconflicted, full, err := r.partition([]StateMap{stateOf(a), stateOf(b)})
			if err != nil {
				t.Fatal(err)
			}
			if unconflicted[StateKey{Type: TypeMember, StateKey: mod}] != x.ID() {
				t.Fatalf("X is not unconflicted")
			}
			for _, e := range []*Event{pl1, pl2, c1} {
				if !full[e.ID()] {
					t.Errorf("conflicted %s (%s) missing from the full conflicted set", e.ID(), e.Type())
				}
			}
			if full[x.ID()] != tt.wantX {
				t.Errorf("X in full conflicted set = %v, want %v", full[x.ID()], tt.wantX)
			}
			// The base join_rules are in every state and on no path between
			// conflicted events.
			if jr := base.State.Get(TypeJoinRules, ""); full[jr.ID()] {
				t.Errorf("unrelated unconflicted event %s in the full conflicted set", jr.ID())
			}
			got, err := ResolveState(t.Context(), base.Version, []StateMap{stateOf(a), stateOf(b)}, events)
			if err != nil {
				t.Fatal(err)
			}
			if got[StateKey{Type: TypeMember, StateKey: bob}] != c1.ID() || got[StateKey{Type: TypeMember, StateKey: mod}] != x.ID() {
				t.Errorf("resolved bob %s mod %s, want kick %s and X %s", got[StateKey{Type: TypeMember, StateKey: bob}], got[StateKey{Type: TypeMember, StateKey: mod}], c1.ID(), x.ID())
			}
		})
	}
}
